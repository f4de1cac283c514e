"""``uhd-profile flops``, ``reproduce`` and ``list``: counting, the paper's figures, the presets."""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from uhd_profile.cli.console import err, out, warn
from uhd_profile.cli.options import convention_option, resolve_spec, variant_options
from uhd_profile.count.conventions import CONVENTIONS, get_convention
from uhd_profile.count.flops import FlopCount, count_flops, count_module
from uhd_profile.count.paper import REL_TOL
from uhd_profile.count.paper import reproduce as run_reproduction
from uhd_profile.count.peers import run_peer
from uhd_profile.errors import UhdProfileError
from uhd_profile.measure.schema import METRICS, markdown_table
from uhd_profile.model.compressors import COMPRESSORS
from uhd_profile.model.encoders import ENCODERS
from uhd_profile.model.llms import DEFAULT_LLM, LLMS
from uhd_profile.model.policies import POLICIES
from uhd_profile.model.trunks import check_weights_dir
from uhd_profile.model.variants import VariantSpec, build_variant, example_input
from uhd_profile.run.recipe import load_recipe, shipped_recipes

COUNTERS = ("uhd", "fvcore", "thop")  # ours, then the peer libraries (uhd_profile.count.peers)


def flops_record(spec: VariantSpec, fc: FlopCount, convention: str, batch: int) -> dict[str, Any]:
    """What ``flops --json`` prints: the spec (``VariantSpec.describe``), the count in ``convention``
    and in every convention under the record schema's names, per module, what was not counted."""
    conv = get_convention(convention)
    d = spec.describe()
    d["variant_id"] = d.pop("id")
    total = fc.get(convention)
    d.update(
        batch=batch,
        convention=convention,
        unit=conv.unit,
        total=total,
        giga=total / 1e9,
        counts={c.column: fc.get(c.name) for c in CONVENTIONS.values()},
        by_module=fc.grouped(1, convention),
        by_category=fc.categories(convention),
        uncounted_ops=fc.uncounted_ops,
        count_s=fc.seconds,
    )
    return d


@click.command()
@variant_options
@convention_option
@click.option("--by-module", is_flag=True, help="also break the count down by module (per layer)")
@click.option(
    "--counter", default="uhd", show_default=True, help="uhd (ours) | fvcore | thop (peer libraries, run on the same variant)"
)
@click.option("--weights", default=None, help="local checkpoint directory (counts then run a real forward on CPU)")
@click.option("--batch", default=1, type=int, show_default=True, help="images per forward")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def flops(
    encoder: str,
    resolution: str | None,
    variant: str | None,
    compressor: str | None,
    depth: int | None,
    post_ratio: str | None,
    convention: str,
    by_module: bool,
    counter: str,
    weights: str | None,
    batch: int,
    as_json: bool,
) -> None:
    """Count a variant's FLOPs by executing its module graph (shapes only: no arithmetic)."""
    conv = get_convention(convention)
    if weights is not None:
        check_weights_dir(weights)
    if counter not in COUNTERS:
        raise UhdProfileError(f"--counter {counter!r} is not valid; valid: {', '.join(COUNTERS)}")
    if batch < 1:
        raise UhdProfileError(f"--batch {batch} is not valid; it must be at least 1")
    spec = resolve_spec(encoder, resolution, variant, compressor, depth, post_ratio)
    if counter != "uhd":
        return _peer(counter, spec, batch, as_json)
    if weights is not None:
        model = build_variant(spec, device="cpu", weights=weights)
        fc = count_module(model, example_input(spec, batch, "cpu"), shape_only=False)
        fc.variant_id, fc.encoder, fc.tokens_in, fc.tokens_llm = spec.id, spec.encoder, spec.tokens_in, spec.tokens_llm
    else:
        fc = count_flops(spec, batch=batch)
    if fc.uncounted_ops:
        warn(f"ops with no formula, NOT in the totals: {fc.uncounted_ops}")
    if as_json:
        click.echo(json.dumps(flops_record(spec, fc, convention, batch)))
        return
    total = fc.get(convention)
    t = Table(title=f"{spec.id}  ({convention}: {conv.meaning})", title_justify="left")
    t.add_column("quantity")
    t.add_column("value", justify="right")
    t.add_row("tokens into the ViT", f"{spec.tokens_in:,}")
    t.add_row("tokens to the LLM", f"{spec.tokens_llm:,}")
    for c in CONVENTIONS.values():
        bold = "[b]" if c.name == convention else ""
        t.add_row(f"{bold}total, {c.name} convention ({c.giga})", f"{fc.get(c.name) / 1e9:,.3f}")
    out.print(t)
    if by_module:
        bm = Table(title=f"by module ({convention}, {conv.giga})", title_justify="left")
        bm.add_column("module")
        bm.add_column(conv.giga, justify="right")
        bm.add_column("share", justify="right")
        for name, v in fc.grouped(1, convention).items():
            bm.add_row(name, f"{v / 1e9:,.3f}", f"{(v / total if total else 0):.1%}")
        out.print(bm)


def _peer(counter: str, spec: VariantSpec, batch: int, as_json: bool) -> None:
    pc = run_peer(counter, spec, batch=batch)
    record = {
        "encoder": spec.encoder,
        "variant_id": spec.id,
        "counter": pc.counter,
        "unit": pc.unit,
        "total": pc.total,
        "giga": pc.total / 1e9,
        "by_module": pc.by_module,
        "uncounted_ops": pc.unsupported_ops,
        "notes": pc.notes,
        "count_s": pc.seconds,
    }
    if as_json:
        click.echo(json.dumps(record))
        return
    t = Table(title=f"{spec.id}  (peer counter: {pc.counter})", title_justify="left")
    t.add_column("quantity")
    t.add_column("value", justify="right")
    t.add_row(f"total as {pc.counter} reports it ({pc.unit})", f"{pc.total / 1e9:,.3f} G")
    out.print(t)
    for n in pc.notes:
        err.print(f"note: {n}", markup=False)
    if pc.unsupported_ops:
        err.print(f"{pc.counter} skipped: {pc.unsupported_ops}", markup=False)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def reproduce(as_json: bool) -> None:
    """Every FLOPs figure the paper prints next to what uhd-profile counts (exit 1 if any is off by >0.1%)."""
    r = run_reproduction()
    if as_json:
        click.echo(json.dumps(r.to_json()))
    else:
        t = Table(title="LLaVA-UHD v4 visual-encoding FLOPs per 980 px slice (so400m/14, ViT alone)", title_justify="left")
        for col in ("figure", "paper (G)", "counted, paper conv. (G)", "rel. err", "", "as executed (GMACs)"):
            t.add_column(col, justify="left" if col == "figure" else "right")
        for row in r.rows:
            mark = "[green]pass[/]" if row.ok else "[red]FAIL[/]"
            t.add_row(
                row.figure,
                f"{row.paper_gflops:,.1f}",
                f"{row.counted_gflops:,.2f}",
                f"{row.rel_err:+.4%}",
                mark,
                f"{row.executed_gflops:,.2f}",
            )
        out.print(t)
        red = r.reduction
        out.print(
            f"v4 vs post-ViT baseline: paper {red['paper']:.2%} | counted (paper convention) {red['counted']:.2%} | "
            f"as executed (macs) {red['executed']:.2%}"
        )
        out.print(f"counted from executed modules in {r.count_seconds:.1f} s; tolerance {REL_TOL:.1%}")
    if not r.ok:
        sys.exit(1)


def _param_text(value: Any) -> str:
    """A policy parameter as it is typed on the command line (sizes as WxH, comma-separated)."""
    if isinstance(value, tuple) and value and all(isinstance(v, tuple) for v in value):
        return ",".join(f"{w}x{h}" for w, h in value)
    return str(value).lower() if isinstance(value, bool) else str(value)


LISTABLE = ("encoders", "compressors", "conventions", "metrics", "recipes", "llms", "policies")


@click.command(name="list")
@click.argument("what", type=str)
@click.option("--markdown", is_flag=True, help="print a Markdown table (metrics)")
def list_(what: str, markdown: bool) -> None:
    """List presets: `encoders`, `compressors`, `conventions`, `metrics` (the record schema), `recipes`, `llms` or `policies`."""
    if what == "metrics":
        if markdown:
            click.echo(markdown_table())
            return
        t = Table(title="metrics of the record schema (records, uhd_profile.load columns, baselines)", title_justify="left")
        for col in ("metric", "dtype", "kind", "gate", "meaning"):
            t.add_column(col)
        for m in METRICS.values():
            t.add_row(m.name, m.dtype, m.kind, m.gate or "", m.doc)
        out.print(t)
    elif what == "encoders":
        t = Table(title="encoder presets", title_justify="left")
        for col in ("name", "layers", "hidden", "mlp", "heads", "patch", "native px", "description"):
            t.add_column(col)
        for e in ENCODERS.values():
            t.add_row(
                e.name, str(e.layers), str(e.hidden), str(e.mlp), str(e.heads), str(e.patch), str(e.image_size), e.description
            )
        out.print(t)
    elif what == "compressors":
        t = Table(title="in-ViT compressors (each followed by a 4x connector: 16x in total)", title_justify="left")
        for col in ("name", "paper", "reuses layer k", "structure"):
            t.add_column(col)
        for c in COMPRESSORS.values():
            t.add_row(c.name, c.paper_label, "yes" if c.reuse else "no", c.description)
        out.print(t)
    elif what == "conventions":
        t = Table(title="counting conventions (--convention; docs/conventions.md)", title_justify="left")
        for col in ("name", "record column", "unit", "meaning"):
            t.add_column(col)
        for conv in CONVENTIONS.values():
            t.add_row(conv.name, conv.column, conv.unit, conv.meaning)
        out.print(t)
    elif what == "recipes":
        t = Table(title="shipped recipes (uhd-profile sweep NAME; on this machine's device)", title_justify="left")
        for col in ("name", "points", "measured", "description"):
            t.add_column(col)
        for name in shipped_recipes():
            r = load_recipe(name)
            t.add_row(name, str(len(r.points)), str(sum(p.measured for p in r.points)), r.description)
        out.print(t)
    elif what == "llms":
        t = Table(title=f"LLM presets (uhd-profile e2e --llm NAME; default {DEFAULT_LLM})", title_justify="left")
        for col in ("name", "class", "layers", "hidden", "mlp", "heads / kv x dim", "vocab", "description"):
            t.add_column(col)
        for s in LLMS.values():
            kinds = f" ({len(s.attention_layers)} full attention)" if s.hybrid else ""
            t.add_row(
                s.name,
                s.family,
                f"{s.layers}{kinds}",
                str(s.hidden),
                str(s.mlp),
                f"{s.heads} / {s.kv_heads} x {s.head_dim}",
                str(s.vocab),
                s.description,
            )
        out.print(t)
    elif what == "policies":
        t = Table(title="image policies (--policy NAME, --policy-param NAME=VALUE; docs/policies.md)", title_justify="left")
        for col in ("name", "tower", "patch", "ViT tokens per LLM token", "parameters (processor defaults)", "description"):
            t.add_column(col)
        for p in POLICIES.values():
            params = ", ".join(f"{q.name}={_param_text(q.default)}" for q in p.params)
            t.add_row(p.name, p.encoder, str(p.patch), str(p.merge), escape(params), escape(p.description))
        out.print(t)
    else:
        raise UhdProfileError(f"cannot list {what!r}; valid: {', '.join(LISTABLE)}")
