"""Tables of costed items (``image``, ``dataset``): views, LLM stages, memory, dataset summaries.

Rendering only: every figure comes from ``uhd_profile.analyse.cost.ItemCost`` or a dataset summary.
"""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from uhd_profile.analyse.cost import ItemCost, LlmSettings, MemorySettings
from uhd_profile.cli.console import note, out, say
from uhd_profile.count.conventions import get_convention
from uhd_profile.count.memory_model import MemoryPrediction
from uhd_profile.units import format_bytes


def g(v: float) -> str:
    return f"{v:,.1f}"


def _table(title: str, columns: list[str], left: int) -> Table:
    t = Table(title=title, title_justify="left")
    for i, name in enumerate(columns):
        t.add_column(name, justify="left" if i < left else "right")
    return t


def tokens_text(c: ItemCost) -> str:
    """One line: the extras and the token fields of an item."""
    v = c.views
    extras = (
        "extra tokens: " + ", ".join(f"{e.count} {e.name} ({e.kind}, {e.added_by})" for e in v.extras)
        if v.extras
        else "no extra tokens"
    )
    return (
        f"{extras}; LLM tokens in all: {v.llm_tokens:,} = {v.placeholder_tokens:,} placeholder + "
        f"{v.special_tokens:,} special + {v.text_tokens:,} text"
    )


def print_item(costs: list[ItemCost], convention: str) -> None:
    """One table for one image: every encoding's views, tokens and counts per variant, a total
    row per encoding; then per encoding its tokens and notes, and the sliced / global ratio."""
    conv = get_convention(convention)
    col, unit = conv.column, conv.giga
    first = costs[0]
    variants = first.variants
    several = len(costs) > 1
    title = (
        f"{first.path or '(size only)'}: {first.size} px (w x h), policy {first.policy}, {first.encoder}; "
        f"{unit} in the {convention} convention ({conv.meaning})"
    )
    columns = [
        "encoding",
        "view",
        "size (w x h)",
        "patches (w x h)",
        "ViT tokens",
        "LLM tokens",
        *(f"{unit} {p}" for p in variants),
    ]
    t = _table(title, columns, 2)
    for c in costs:
        for i, (v, vc) in enumerate(zip(c.views.views, c.view_counts)):
            label = v.role if v.position is None else f"{v.role} {v.position[0]},{v.position[1]}"
            t.add_row(
                c.encoding if i == 0 else "",
                label,
                str(v.size),
                f"{v.patches[0]}x{v.patches[1]}",
                f"{v.seq_len:,}",
                f"{v.llm_tokens:,}",
                *(g(vc[p][col] / 1e9) for p in variants),
            )
        n = len(c.views.views)
        what = (
            f"{n} view"
            + ("s" if n > 1 else "")
            + (f", grid {c.views.grid[0]}x{c.views.grid[1]} (cols x rows)" if c.views.grid else "")
        )
        t.add_row(
            f"[b]{c.encoding} total[/]",
            what,
            "",
            "",
            f"[b]{c.views.vit_tokens:,}[/]",
            f"[b]{c.views.view_llm_tokens:,}[/]",
            *(f"[b]{g(c.counts[p][col] / 1e9)}[/]" for p in variants),
            end_section=True,
        )
    out.print(t)
    by = {c.encoding: c for c in costs}
    if "sliced" in by and "global" in by:
        s, gl = by["sliced"], by["global"]
        for p in variants:
            out.print(
                f"{p}: sliced / global = {s.counts[p][col] / gl.counts[p][col]:.2f}x the {unit}, "
                f"{s.llm_tokens / gl.llm_tokens:.2f}x the LLM tokens"
            )
    for c in costs:
        say((f"{c.encoding}: " if several else "") + tokens_text(c))
    seen = set()
    for c in costs:
        for line in (*c.views.notes, *c.notes):
            if line not in seen:
                seen.add(line)
                note(line)


def print_llm(costs: list[ItemCost], llm: LlmSettings, convention: str) -> None:
    """One table: per (encoding, variant), the vision cost, the LLM prefill and decode, their sum
    and the vision share of the compute before the first token."""
    conv = get_convention(convention)
    col, unit = conv.column, conv.giga
    t = _table(
        f"end to end through {llm.llm} ({llm.prompt_tokens} prompt tokens, {llm.decode_tokens} decoded; "
        f"{unit}, {convention} convention)",
        [
            "encoding",
            "variant",
            "LLM tokens in",
            f"vision {unit}",
            f"prefill {unit}",
            f"decode {unit}",
            f"total {unit}",
            "vision share before 1st token",
        ],
        2,
    )
    for c in costs:
        st = c.llm
        assert st is not None
        for p in c.variants:
            vision = c.counts[p][col]
            first = vision + st.prefill[col]
            t.add_row(
                c.encoding,
                p,
                f"{st.input_tokens + st.prompt_tokens:,}",
                g(vision / 1e9),
                g(st.prefill[col] / 1e9),
                g(st.decode[col] / 1e9),
                g((first + st.decode[col]) / 1e9),
                f"{100 * vision / first:.1f}%" if first else "-",
            )
    out.print(t)


def memory_entries(costs: list[ItemCost]) -> list[tuple[str, str, MemoryPrediction]]:
    """(encoding, variant, prediction) of every costed item's memory."""
    return [(c.encoding, p, pred) for c in costs for p, pred in c.memory.items()]


def memory_json(entries, settings: MemorySettings) -> list[dict]:
    """``--memory`` in ``--json`` (``e2e``): one object per (encoding, variant)."""
    return [
        {"encoding": enc, "variant": v, "llm": settings.llm, "prompt_tokens": settings.prompt_tokens, **pred.as_dict()}
        for enc, v, pred in entries
    ]


def print_memory(entries, settings: MemorySettings) -> None:
    """One table: every stage (and vision call) of every (encoding, variant, prediction) entry,
    and its peak."""
    m = settings
    llm = f", LLM {m.llm} with {m.prompt_tokens} prompt tokens" if m.llm else ", vision stage only"
    if m.llm and m.decode_tokens:
        llm += f" and {m.decode_tokens} decoded"
    t = _table(
        f"predicted memory (the memory model; {m.dtype}, {m.attn} attention, for {m.device_kind}{llm})",
        ["encoding", "variant", "stage", "what", "weights", "held", "activations", "of which scores", "KV cache", "peak"],
        4,
    )
    for enc, p, pred in entries:
        for v in pred.views:
            t.add_row(
                enc, p, "vision call", v.label, "", *map(format_bytes, (v.held_bytes, v.activation_bytes, v.score_bytes)), "", ""
            )
        for s in pred.stages:
            t.add_row(
                enc,
                p,
                s.stage,
                escape(s.label),
                *map(format_bytes, (s.weights_bytes, s.held_bytes, s.activation_bytes, s.score_bytes)),
                format_bytes(s.kv_cache_bytes) if s.stage != "vision" else "",
                "",
            )
        t.add_row(
            enc,
            p,
            "[b]peak[/]",
            f"in {pred.peak_stage.stage}, all weights resident",
            f"[b]{format_bytes(pred.weights_bytes)}[/]",
            "",
            "",
            "",
            "",
            f"[b]{format_bytes(pred.peak_bytes)}[/]",
            end_section=True,
        )
    out.print(t)


def summary_table(summary, title: str, convention: str) -> Table:
    """The dataset summary as printed: per policy, encoding and variant, LLM tokens and cost
    (mean, median, p90, total) in ``convention``."""
    conv = get_convention(convention)
    col, unit = conv.column, conv.giga
    keys = ("policy", "encoding", "variant")
    t = _table(title, [*keys, "LLM tokens mean", "median", "p90", f"{unit} mean", "median", "p90", f"{unit} total"], 3)
    if not summary.empty:
        for key, grp in summary.groupby(list(keys), sort=False):
            tok = grp[grp.metric == "llm_tokens"].iloc[0]
            fl = grp[grp.metric == col].iloc[0]
            t.add_row(
                *(str(k) for k in key),
                *(f"{tok[s]:,.0f}" for s in ("mean", "median", "p90")),
                *(g(fl[s] / 1e9) for s in ("mean", "median", "p90", "total")),
            )
    return t


def print_dataset_llm(summary, llm: LlmSettings, convention: str) -> None:
    """The dataset's end-to-end table: per policy, encoding and variant, mean vision, prefill and total."""
    conv = get_convention(convention)
    col, unit = conv.column, conv.giga
    keys = ["policy", "encoding", "variant"]
    t = _table(
        f"end to end through {llm.llm} ({llm.prompt_tokens} prompt tokens, {llm.decode_tokens} decoded; "
        f"mean per image, {unit}, {convention} convention)",
        [*keys, "LLM tokens in", f"vision {unit}", f"prefill {unit}", f"decode {unit}", f"total {unit}", "total p90"],
        3,
    )
    for key, grp in summary.groupby(keys, sort=False):
        mean = dict(zip(grp.metric, grp["mean"]))
        p90 = dict(zip(grp.metric, grp["p90"]))
        t.add_row(
            *(str(k) for k in key),
            f"{mean['llm_tokens'] + llm.prompt_tokens:,.0f}",
            g(mean[col] / 1e9),
            g(mean[f"llm_prefill_{col}"] / 1e9),
            g(mean[f"llm_decode_{col}"] / 1e9),
            g(mean[f"total_{col}"] / 1e9),
            g(p90[f"total_{col}"] / 1e9),
        )
    out.print(t)
