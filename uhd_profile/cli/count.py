"""``uhd-profile flops`` and ``reproduce``: counting, the paper's figures (``list``: cli/listing.py)."""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from rich.table import Table

from uhd_profile.cli.console import err, out, warn
from uhd_profile.cli.options import VariantFlags, convention_option, variant_options
from uhd_profile.count.conventions import CONVENTIONS, get_convention
from uhd_profile.count.flops import FlopCount, count_flops, count_module
from uhd_profile.count.paper import REL_TOL
from uhd_profile.count.paper import reproduce as run_reproduction
from uhd_profile.count.peers import run_peer
from uhd_profile.errors import UhdProfileError
from uhd_profile.model.trunks import check_weights_dir
from uhd_profile.model.variants import VariantSpec, build_variant, example_input

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
    flags: VariantFlags,
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
    spec = flags.spec()
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
