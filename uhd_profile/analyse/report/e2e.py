"""The report's "End to end" section: what an image costs the whole model, stage by stage.

* ``e2e_table(records, recount)``: one row per pipeline (vision -> connector -> LLM prefill ->
  decode; ``uhd_profile.model.pipeline``): tokens, every stage in every convention, the compute
  before the first token, the ViT's share of it, the reduction against the baseline of the same
  image and encoding, and which position's compression tells it from the image's reference
  (``uhd_profile.count.pipeline.position_of``). Taken from the run's records when the run holds
  points with an LLM (``source`` ``run``, with the stage timings where measured); otherwise counted
  now on ``meta`` (``source`` ``recounted``) for the standard set ``standard_pipelines``: the
  post-ViT baseline and v4 on one 448 px slice and on 1344x896 and 3840x2160 images, sliced and
  global, with Qwen3-8B. ``recount=False`` counts nothing (the section then says so).
* ``e2e_figure(table)``: stacked per-stage cost, one bar per pipeline.
* ``e2e_blocks(df, records, recount)``: the section as blocks (``("h", level, text)``,
  ``("p", text)``, ``("table", name, shown, data, caption)``, ``("figure", name, fig, data,
  caption)``), which ``sections.build_report`` adds to the report.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from uhd_profile.analyse.report.figures import styled
from uhd_profile.analyse.report.format import FIGURE_CONVENTION, OKABE_ITO, PAPER_ENCODER, PAPER_SIZE, fmt_pct, isna
from uhd_profile.count.conventions import CONVENTIONS, get_convention
from uhd_profile.count.flops import count_flops
from uhd_profile.count.pipeline import PipelineCount, count_pipeline, position_of
from uhd_profile.measure.pipeline import count_metrics
from uhd_profile.measure.schema import Point
from uhd_profile.model.llms import DEFAULT_LLM
from uhd_profile.model.pipeline import STAGES, TTFT_STAGES, PipelineSpec, drop_text
from uhd_profile.model.variants import V4_COMPRESSOR, V4_DEPTH, VariantSpec
from uhd_profile.units import Size, format_bytes

#: the standard settings counted when the run holds no point with an LLM: (image W x H, encoding)
STANDARD_SETTINGS = (
    (Size(448, 448), "view"),
    (Size(1344, 896), "sliced"),
    (Size(1344, 896), "global"),
    (Size(3840, 2160), "sliced"),
    (Size(3840, 2160), "global"),
)
STANDARD_PROMPT_TOKENS = 64
STANDARD_DECODE_TOKENS = 1
STAGE_COLOURS = {
    "vision": OKABE_ITO["vermillion"],
    "connector": OKABE_ITO["purple"],
    "prefill": OKABE_ITO["blue"],
    "decode": OKABE_ITO["sky"],
}

TIMING_COLUMNS = ("ttft_vision_s", "ttft_connector_s", "ttft_prefill_s", "ttft_s", "decode_token_s", "llm_layers_timed")


def standard_pipelines(
    llm: str = DEFAULT_LLM, prompt_tokens: int = STANDARD_PROMPT_TOKENS, decode_tokens: int = STANDARD_DECODE_TOKENS
) -> list[PipelineSpec]:
    """The post-ViT baseline and v4 (16x in total) on ``STANDARD_SETTINGS`` with ``llm``, on the paper's tower."""
    out = []
    for size, encoding in STANDARD_SETTINGS:
        for alias in ("baseline", "v4"):
            v = VariantSpec.alias(alias, encoder=PAPER_ENCODER, resolution=size, encoding=encoding)
            out.append(PipelineSpec(v, llm=llm, prompt_tokens=prompt_tokens, decode_tokens=decode_tokens))
    return out


def _label(p: PipelineSpec) -> str:
    v = p.variant
    s = "baseline" if v.compressor is None else ("v4" if (v.compressor, v.depth) == (V4_COMPRESSOR, V4_DEPTH) else v.id_plan())
    if v.ratio != 16 // v.in_vit_ratio:
        s += f" post{v.ratio}"
    if v.encoding != "view" and (v.max_slices, v.scale_resolution, v.packing) != (9, 448, "batched"):
        s += f" [{v.id_encoding()}]"
    if p.drop is not None:
        s += f" + {drop_text(p.drop)}"
    return s


def _setting(p: PipelineSpec) -> str:
    v = p.variant
    return f"{v.size} {v.encoding}" + ("" if v.encoder == PAPER_ENCODER else f" ({v.encoder})")


def _row(p: PipelineSpec, metrics: dict[str, Any], source: str) -> dict[str, Any]:
    v = p.variant
    row: dict[str, Any] = {
        "setting": _setting(p),
        "variant": _label(p),
        "compressor": v.compressor,
        "depth": v.depth,
        "post_ratio": v.ratio,
        "design_ratio": v.ratio == 16 // v.in_vit_ratio,
        "pipeline_id": p.id,
        "encoder": p.variant.encoder,
        "width_px": p.variant.size.width,
        "height_px": p.variant.size.height,
        "encoding": p.variant.encoding,
        "llm": p.llm,
        "prompt_tokens": p.prompt_tokens,
        "decode_tokens": p.decode_tokens,
        "drop": None if p.drop is None else drop_text(p.drop),
        "views": len(p.variant.view_sizes),
        "vit_tokens": p.tokens["vision"],
        "visual_tokens": p.tokens["visual"],
    }
    for s in STAGES:
        for c in CONVENTIONS.values():
            row[f"{s}_{c.column}"] = metrics.get(f"{s}_{c.column}")
    for c in CONVENTIONS.values():
        ttft = sum(int(metrics[f"{s}_{c.column}"]) for s in TTFT_STAGES)
        row[f"ttft_{c.column}"] = ttft
        row[f"vit_share_{c.column}"] = int(metrics[f"vision_{c.column}"]) / ttft if ttft else None
    row["decode_macs_per_token"] = metrics.get("decode_macs_per_token")
    row["kv_cache_bytes"] = metrics.get("kv_cache_bytes")
    for k in TIMING_COLUMNS:
        row[k] = metrics.get(k)
    row["source"] = source
    return row


def _pipelines_of(records: list[dict]) -> dict[str, tuple[PipelineSpec, dict[str, Any]]]:
    """Pipeline id -> (spec, metrics) of the run's ok points with an LLM; a measured point of the
    same pipeline adds its timings to the counts (counts are the same in every record of it)."""
    found: dict[str, tuple[PipelineSpec, dict[str, Any]]] = {}
    for r in records:
        if r.get("status") != "ok" or not (r.get("point") or {}).get("pipeline") or not r.get("metrics"):
            continue
        p = Point.from_dict(r["point"]).pipeline
        assert p is not None  # the point has a pipeline (checked above)
        m = dict(r["metrics"])
        if p.id in found:
            merged = dict(found[p.id][1])
            merged.update({k: v for k, v in m.items() if v is not None})
            m = merged
        found[p.id] = (p, m)
    return found


def e2e_table(records: list[dict], recount: bool = True) -> pd.DataFrame:
    """One row per pipeline (see module docstring); empty without points with an LLM and with
    ``recount`` off. Counts are raw integers in the unit of their convention, times in seconds."""
    found = _pipelines_of(records)
    rows = []
    if found:
        rows = [_row(p, m, "run") for p, m in found.values()]
        specs = [p for p, _ in found.values()]
    elif recount:
        specs = standard_pipelines()
        for p in specs:
            pc: PipelineCount = count_pipeline(p)
            rows.append(_row(p, count_metrics(pc, "bf16"), "recounted"))
    if not rows:
        return pd.DataFrame()
    t = pd.DataFrame(rows)
    # position: against the image's reference (baseline, the design's connector, no drop; sliced first)
    order = {"sliced": 0, "view": 1, "global": 2}
    refs: dict[tuple, PipelineSpec] = {}
    for p in sorted(specs, key=lambda q: order.get(q.variant.encoding, 3)):
        v = p.variant
        key = (v.encoder, v.size, p.llm, p.prompt_tokens, p.decode_tokens)
        if key not in refs and v.compressor is None and p.drop is None and v.ratio == 16 and v.packing == "batched":
            refs[key] = p
    keys = [(p.variant.encoder, p.variant.size, p.llm, p.prompt_tokens, p.decode_tokens) for p in specs]
    t["position"] = [position_of(p, refs[k]) if k in refs else None for p, k in zip(specs, keys)]
    # reduction against the baseline of the same setting (same image, encoding, LLM side; no drop)
    for c in CONVENTIONS.values():
        col = f"ttft_{c.column}"
        base = {}
        for _, r in t.iterrows():
            if r["variant"] == "baseline":
                base[(r["setting"], r["llm"], r["prompt_tokens"], r["decode_tokens"])] = r[col]
        t[f"ttft_reduction_{c.column}"] = [
            (1 - r[col] / b) if (b := base.get((r["setting"], r["llm"], r["prompt_tokens"], r["decode_tokens"]))) else None
            for _, r in t.iterrows()
        ]
    return t


def _fmt_g(x: Any, convention: str) -> str:
    if isna(x):
        return "n/a"
    unit = get_convention(convention).unit
    x = float(x)
    if abs(x) >= 1e12:
        return f"{x / 1e12:,.2f} T{unit}"
    return f"{x / 1e9:,.1f} G{unit}" if abs(x) >= 1e9 else f"{x / 1e6:,.2f} M{unit}"


def e2e_shown(t: pd.DataFrame, convention: str = FIGURE_CONVENTION) -> pd.DataFrame:
    """The table as rendered: counts in ``convention``, the compute before the first token also in macs."""
    col = get_convention(convention).column
    shown = pd.DataFrame(
        {
            "image": t["setting"],
            "variant": t["variant"],
            "position": t["position"].fillna(""),
            "ViT / LLM tokens": [f"{int(a):,} / {int(b):,}" for a, b in zip(t["vit_tokens"], t["visual_tokens"])],
            "vision": [_fmt_g(x, convention) for x in t[f"vision_{col}"]],
            "connector": [_fmt_g(x, convention) for x in t[f"connector_{col}"]],
            "prefill": [_fmt_g(x, convention) for x in t[f"prefill_{col}"]],
            "before 1st token": [_fmt_g(x, convention) for x in t[f"ttft_{col}"]],
            "ViT share": [fmt_pct(x, 1) for x in t[f"vit_share_{col}"]],
            "vs baseline": [
                "" if isna(x) or v == "baseline" else fmt_pct(-x, 1, sign=True)
                for x, v in zip(t[f"ttft_reduction_{col}"], t["variant"])
            ],
            "macs before 1st token": [_fmt_g(x, "macs") for x in t["ttft_macs"]],
            "decode / token": [_fmt_g(x, "macs") for x in t["decode_macs_per_token"]],
            "KV cache": [format_bytes(x) if not isna(x) else "n/a" for x in t["kv_cache_bytes"]],
        }
    )
    if t["ttft_s"].notna().any():
        shown["time to 1st token"] = [
            "" if isna(s) else f"{float(s) * 1e3:,.1f} ms" + ("" if isna(n) else f" (LLM on {int(n)} layers, scaled)")
            for s, n in zip(t["ttft_s"], t["llm_layers_timed"])
        ]
    shown["source"] = t["source"]
    return shown


@styled
def e2e_figure(t: pd.DataFrame, convention: str = FIGURE_CONVENTION) -> Any:
    """Stacked horizontal bars: each pipeline's vision, connector, prefill and decode cost in
    ``convention``, grouped by image setting (top to bottom in table order)."""
    from matplotlib.figure import Figure as MplFigure

    col = get_convention(convention).column
    n = len(t)
    fig = MplFigure(figsize=(9.0, 1.2 + 0.38 * n), layout="constrained")
    ax = fig.subplots()
    labels = [f"{s} | {v}" for s, v in zip(t["setting"], t["variant"])]
    y = list(range(n))[::-1]
    top = max(float(x) for x in t[f"ttft_{col}"])
    scale, unit = (1e12, "T") if top >= 1e12 else (1e9, "G") if top >= 1e9 else (1e6, "M")
    left = [0.0] * n
    for s in STAGES:
        vals = [0.0 if isna(x) else float(x) / scale for x in t[f"{s}_{col}"]]
        decode = sorted({int(d) for d in t["decode_tokens"]})
        name = s if s != "decode" else f"decode ({'/'.join(map(str, decode))} tokens)"
        ax.barh(y, vals, left=left, color=STAGE_COLOURS[s], label=name, edgecolor="white", linewidth=0.5)
        left = [a + b for a, b in zip(left, vals)]
    ax.set_yticks(y, labels, fontsize=7)
    ax.set_xlabel(f"{unit}{get_convention(convention).unit} per image ({convention} convention)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, borderaxespad=0)
    ax.grid(axis="y", visible=False)
    return fig


def _vit_only_980(df: pd.DataFrame, recount: bool) -> tuple[float | None, str]:
    """v4's ViT-only reduction at the paper's geometry (980 px, ViT alone, paper convention):
    from the run's records of that pair, else counted now (``recount``), else None."""
    ids = [VariantSpec.alias(a, resolution=Size(*PAPER_SIZE), post_ratio=1).id for a in ("baseline", "v4")]
    vals = {}
    if len(df) and "paper_flops" in df:
        ok = df[(df["status"] == "ok") & df["paper_flops"].notna() & (df["batch"] == 1) & df["llm"].isna()]
        for i in ids:
            hit = ok[ok["variant_id"] == i]
            if len(hit):
                vals[i] = int(hit.iloc[0]["paper_flops"])
    if len(vals) == 2:
        return 1 - vals[ids[1]] / vals[ids[0]], "the run"
    if not recount:
        return None, "not in this run"
    b, v = (
        count_flops(VariantSpec(resolution=Size(*PAPER_SIZE), post_ratio=1)),
        count_flops(VariantSpec.alias("v4", resolution=Size(*PAPER_SIZE), post_ratio=1)),
    )
    return 1 - v.get("paper") / b.get("paper"), "counted now"


def headline_sentence(t: pd.DataFrame, vit_only: float | None, vit_only_source: str, convention: str = FIGURE_CONVENTION) -> str:
    """What share of the compute before the first token the ViT takes (baseline), and v4's
    end-to-end reduction next to its ViT-only reduction, per setting holding both."""
    col = get_convention(convention).column
    parts = []
    for setting, g in t.groupby("setting", sort=False):
        b = g[g["variant"] == "baseline"]
        v = g[(g["compressor"] == V4_COMPRESSOR) & g["design_ratio"] & g["drop"].isna()]
        if not len(b) or not len(v):
            continue
        depths = sorted(int(d) for d in v["depth"])
        k = V4_DEPTH if V4_DEPTH in depths else depths[0]
        brow: Any = b.iloc[0]
        vrow: Any = v[v["depth"] == k].iloc[0]
        b, v = brow, vrow
        name = "v4" if k == V4_DEPTH else f"v4's design at depth {k} ({V4_COMPRESSOR}@{k})"
        vit_red = 1 - int(v[f"vision_{col}"]) / int(b[f"vision_{col}"])
        views = f", {int(b['views'])} views" if int(b["views"]) > 1 else ""
        share, red = fmt_pct(b[f"vit_share_{col}"], 1), fmt_pct(v[f"ttft_reduction_{col}"], 1)
        parts.append(
            f"{setting}{views} ({int(b['visual_tokens']):,} visual tokens): the ViT takes {share} of the compute before the "
            f"first token, and {name} cuts that compute by {red} end to end ({fmt_pct(v['ttft_reduction_macs'], 1)} in macs), "
            f"against {fmt_pct(vit_red, 1)} for the ViT alone at this size"
        )
    if not parts:
        return (
            "The run holds no baseline/v4 pair of pipelines on the same image, LLM and prompt, so there is no "
            "end-to-end reduction to state."
        )
    first = t.iloc[0]
    ref = (
        f"v4's ViT-only reduction at the paper's geometry ({PAPER_SIZE[0]} px, the ViT alone) is "
        f"{fmt_pct(vit_only, 2)} ({vit_only_source})"
        if vit_only is not None
        else "v4's ViT-only reduction at the paper's geometry is not in this run (recount off; the paper prints 55.8 %)"
    )
    return (
        f"With {first['llm']}, {int(first['prompt_tokens'])} prompt tokens, {convention} convention, per image: "
        + "; ".join(parts)
        + f". For comparison, {ref}."
    )


def e2e_blocks(df: pd.DataFrame, records: list[dict], recount: bool = True) -> list[tuple]:
    """The "End to end" section as blocks (see module docstring)."""
    blocks: list[tuple] = [("h", 2, "7. End to end: what an image costs the whole model")]
    t = e2e_table(records, recount)
    if t.empty:
        blocks.append(
            (
                "p",
                "Left out: the run holds no points with an LLM (recipe key `llms`), and recounting is off; "
                "`uhd-profile report RUN_DIR` (without --no-recount) counts the standard pipelines, and "
                "`uhd-profile e2e` counts any one.",
            )
        )
        return blocks
    source = (
        "the run's records of its points with an LLM"
        if (t["source"] == "run").all()
        else f"counted now on the meta device (the run holds no point with an LLM): the post-ViT baseline and v4 on "
        f"{PAPER_ENCODER} with {DEFAULT_LLM}, {STANDARD_PROMPT_TOKENS} prompt tokens and {STANDARD_DECODE_TOKENS} decoded token"
    )
    blocks.append(
        (
            "p",
            "Each image runs the whole model: the vision tower (in-ViT compressor included), the post-ViT connector "
            "(pixel-unshuffle MLP at 4x/16x, a projector that merges nothing at 1x), the LLM's prefill over the visual "
            "tokens plus the prompt, then decoding through the KV cache. Every stage is counted by running its real modules, "
            f"chained (uhd_profile.count.pipeline). Source: {source}. The compute before the first token is vision + "
            "connector + prefill. Causal attention in the prefill: macs and flops charge the allowed (query, key) pairs as "
            "efficient kernels execute them; paper charges the full square, as printed formulas do, and does not charge the "
            "connector (the paper's scope). Position: which place of compression tells a pipeline from its image's reference "
            "(the baseline with its 16x connector, sliced where the run has it).",
        )
    )
    blocks.append(("p", headline_sentence(t, *_vit_only_980(df, recount))))
    conv = FIGURE_CONVENTION
    blocks.append(
        (
            "figure",
            "e2e_stages",
            e2e_figure(t, conv),
            t,
            f"Cost of one image per stage ({conv} convention), one bar per pipeline, "
            "grouped by image and encoding. Vision includes any in-ViT compressor; the connector is not charged in this "
            "convention; prefill is the LLM over the visual tokens and the prompt; decode is every generated token after "
            "the first.",
        )
    )
    timed = t["ttft_s"].notna().any()
    blocks.append(
        (
            "table",
            "e2e",
            e2e_shown(t, conv),
            t,
            f"Counts per image in the {conv} convention (before 1st token also in macs, as executed); vs baseline: the "
            "change of the compute before the first token against the baseline of the same image and encoding; decode / "
            "token: the mean decode forward in macs; KV cache after prefill and decode, in bf16 for recounted rows, the "
            "point's dtype for the run's."
            + (
                " Time to first token: the stages timed on the run's device, each on its own (random weights); the LLM "
                "timed on the stated number of its layers and scaled by layers / N where fewer than all."
                if timed
                else ""
            ),
        )
    )
    return blocks
