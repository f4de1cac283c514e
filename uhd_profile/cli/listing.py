"""``uhd-profile list``: the presets, conventions, metrics, recipes, LLMs and image policies.

A light command: each table imports what it lists when it is asked for, so ``list``, ``list
encoders`` and ``list policies`` import neither torch nor transformers (tests/test_light_cli.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from uhd_profile.cli.console import out
from uhd_profile.errors import UhdProfileError


def _param_text(value: Any) -> str:
    """A policy parameter as it is typed on the command line (sizes as WxH, comma-separated)."""
    if isinstance(value, tuple) and value and all(isinstance(v, tuple) for v in value):
        return ",".join(f"{w}x{h}" for w, h in value)
    return str(value).lower() if isinstance(value, bool) else str(value)


def _table(title: str, columns: tuple[str, ...], rows: Any) -> Table:
    t = Table(title=title, title_justify="left")
    for col in columns:
        t.add_column(col)
    for row in rows:
        t.add_row(*row)
    return t


def _metrics() -> Table:
    from uhd_profile.measure.schema import METRICS

    return _table(
        "metrics of the record schema (records, uhd_profile.load columns, baselines)",
        ("metric", "dtype", "kind", "gate", "meaning"),
        ((m.name, m.dtype, m.kind, m.gate or "", m.doc) for m in METRICS.values()),
    )


def _encoders() -> Table:
    from uhd_profile.model.encoders import ENCODERS

    return _table(
        "encoder presets (uhd-profile flops --encoder NAME)",
        ("name", "layers", "hidden", "mlp", "heads", "patch", "native px", "post-ViT ratio", "description"),
        (
            (e.name, str(e.layers), str(e.hidden), str(e.mlp), str(e.heads), str(e.patch), str(e.image_size))
            + (f"{e.default_post_ratio}x", e.description)
            for e in ENCODERS.values()
        ),
    )


def _compressors() -> Table:
    from uhd_profile.model.compressors import COMPRESSORS

    return _table(
        "in-ViT compressors (4x in the ViT, then the tower's connector)",
        ("name", "paper", "reuses layer k", "structure"),
        ((c.name, c.paper_label, "yes" if c.reuse else "no", c.description) for c in COMPRESSORS.values()),
    )


def _conventions() -> Table:
    from uhd_profile.count.conventions import CONVENTIONS

    return _table(
        "counting conventions (--convention; docs/conventions.md)",
        ("name", "record column", "unit", "meaning"),
        ((c.name, c.column, c.unit, c.meaning) for c in CONVENTIONS.values()),
    )


def _recipes() -> Table:
    from uhd_profile.run.recipe import load_recipe, shipped_recipes

    def row(name: str) -> tuple[str, ...]:
        r = load_recipe(name)
        return (name, str(len(r.points)), str(sum(p.measured for p in r.points)), r.description)

    return _table(
        "shipped recipes (uhd-profile sweep NAME; on this machine's device)",
        ("name", "points", "measured", "description"),
        (row(name) for name in shipped_recipes()),
    )


def _llms() -> Table:
    from uhd_profile.model.llms import DEFAULT_LLM, LLMS

    return _table(
        f"LLM presets (uhd-profile e2e --llm NAME; default {DEFAULT_LLM})",
        ("name", "class", "layers", "hidden", "mlp", "heads / kv x dim", "vocab", "description"),
        (
            (s.name, s.family, f"{s.layers}" + (f" ({len(s.attention_layers)} full attention)" if s.hybrid else ""))
            + (str(s.hidden), str(s.mlp), f"{s.heads} / {s.kv_heads} x {s.head_dim}", str(s.vocab), s.description)
            for s in LLMS.values()
        ),
    )


def _policies() -> Table:
    from uhd_profile.model.policies import POLICIES

    return _table(
        "image policies (--policy NAME, --policy-param NAME=VALUE; docs/policies.md)",
        ("name", "tower", "patch", "ViT tokens per LLM token", "parameters (processor defaults)", "description"),
        (
            (p.name, p.encoder, str(p.patch), str(p.merge))
            + (escape(", ".join(f"{q.name}={_param_text(q.default)}" for q in p.params)), escape(p.description))
            for p in POLICIES.values()
        ),
    )


LISTS: dict[str, tuple[str, Callable[[], Table]]] = {
    "encoders": ("vision towers: geometry, native size, their family's post-ViT ratio", _encoders),
    "compressors": ("in-ViT token compressors (--compressor NAME --depth K)", _compressors),
    "conventions": ("how FLOPs are counted (--convention NAME)", _conventions),
    "metrics": ("the record schema: every metric a run records (--markdown for a table)", _metrics),
    "recipes": ("shipped sweep recipes (uhd-profile sweep NAME)", _recipes),
    "llms": ("LLM presets (uhd-profile e2e --llm NAME)", _llms),
    "policies": ("image policies: how each model family turns an image into views", _policies),
}
"""What ``uhd-profile list`` can list: kind -> (one line, the table)."""
LISTABLE = tuple(LISTS)


@click.command(name="list")
@click.argument("what", type=str, required=False)
@click.option("--markdown", is_flag=True, help="print a Markdown table (metrics)")
def list_(what: str | None, markdown: bool) -> None:
    """List presets: `encoders`, `compressors`, `conventions`, `metrics` (the record schema), `recipes`,
    `llms` or `policies`; with no argument, what can be listed."""
    if what is None:
        out.print(_table("what uhd-profile can list", ("uhd-profile list ...", "what"), ((k, d) for k, (d, _) in LISTS.items())))
        out.print("show one with `uhd-profile list KIND`, e.g. `uhd-profile list encoders`", markup=False, highlight=False)
        return
    if what not in LISTS:
        raise UhdProfileError(f"cannot list {what!r}; valid: {', '.join(LISTABLE)} (or nothing: what can be listed)")
    if markdown and what != "metrics":
        raise UhdProfileError(f"--markdown applies to `list metrics`, not `list {what}`")
    if markdown:
        from uhd_profile.measure.schema import markdown_table

        click.echo(markdown_table())
        return
    out.print(LISTS[what][1]())
