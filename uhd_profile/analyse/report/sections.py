"""The report as a document: blocks (headings, paragraphs, tables, figures) built section by section.

``build_report(run_dir)`` reads the run and returns a :class:`Report`; nothing is written here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from uhd_profile.analyse.quality import join_quality, paper_quality, read_quality
from uhd_profile.analyse.report.e2e import e2e_blocks
from uhd_profile.analyse.report.figures import (
    breakdown_figure,
    depth_figure,
    encoding_figure,
    pareto_figure,
    quality_axes,
    quality_figure,
)
from uhd_profile.analyse.report.format import (
    CATEGORIES,
    FIGURE_CONVENTION,
    FLAG_MARK,
    PAPER_ENCODER,
    PAPER_SIZE,
    count_column,
    flag_text,
    fmt_count,
    fmt_pct,
    fmt_s,
    isna,
    resolution_label,
)
from uhd_profile.analyse.report.tables import (
    SLOW_OUTLIER_FACTOR,
    breakdown,
    breakdown_summary,
    counted_rows,
    depth_table,
    encoding_table,
    env_table,
    failures_table,
    headline,
    headline_pairs,
    measured_rows,
    measurement_table,
    ok_rows,
    pareto_table,
    prepare,
    quality_cost_table,
    reproduction_table,
)
from uhd_profile.count.conventions import CONVENTIONS
from uhd_profile.count.paper import PAPER_REDUCTION, REL_TOL
from uhd_profile.errors import UhdProfileError
from uhd_profile.measure.schema import Point
from uhd_profile.model.variants import V4_COMPRESSOR, V4_DEPTH, VariantSpec
from uhd_profile.run import store

FLAG_WHAT = "noisy, throttled, a slow outlier or too few samples"
"""What a flagged latency can be (defined in the Measurement quality section)."""


@dataclass
class Figure:
    name: str  # file stem
    fig: Any  # matplotlib Figure
    data: pd.DataFrame  # what is drawn
    caption: str


@dataclass
class Table:
    name: str  # file stem of the CSV (raw numbers)
    shown: pd.DataFrame  # formatted strings, as rendered
    data: pd.DataFrame  # raw numbers
    caption: str = ""


@dataclass
class Report:
    """The document: a title and blocks in order. Level-2 headings are the sections; the renderer
    numbers them and builds the table of contents, so a section is added without renumbering."""

    title: str
    blocks: list = field(default_factory=list)  # ("h", level, text) | ("p", text) | Table | Figure
    warnings: list[str] = field(default_factory=list)  # shown in a banner at the top of the report

    def h(self, level: int, text: str) -> None:
        self.blocks.append(("h", level, re.sub(r"^\d+\.\s*", "", text)))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    @property
    def figures(self) -> list[Figure]:
        return [b for b in self.blocks if isinstance(b, Figure)]

    @property
    def tables(self) -> list[Table]:
        return [b for b in self.blocks if isinstance(b, Table)]


def _spec_for(records: list[dict], variant_id: str) -> VariantSpec:
    for r in records:
        if r["variant_id"] == variant_id:
            return Point.from_dict(r["point"]).spec
    raise KeyError(variant_id)


def build_report(run_dir: str | os.PathLike, recount: bool = True, quality: Sequence[str | os.PathLike] = ()) -> Report:
    """Everything the report shows, as blocks (no files written). ``quality``: score files to join
    to the run (``analyse.quality.read_quality``: CSV, or lmms-eval results as ``PATH=TIE``)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UhdProfileError(f"run directory {str(run_dir)!r} does not exist; give a directory written by `uhd-profile sweep`")
    head = store.read_header(run_dir)
    recs = store.records(run_dir)
    df = prepare(store.load(run_dir))
    name = str(head.get("recipe_name"))
    rep = Report(title=f"uhd-profile report: {name}" + ("" if run_dir.name == name else f" ({run_dir.name})"))
    ok = ok_rows(df)
    n_meas = len(measured_rows(df))
    rep.p(
        f"Run directory `{run_dir.name}`: recipe `{head.get('recipe_name')}` (hash {head.get('recipe_hash')}), "
        f"{len(df)} points ({len(ok)} ok, {len(df) - len(ok)} failed), {len(counted_rows(df))} distinct counted "
        f"configurations, {n_meas} measured on a device. Every number below is taken from the run's records or "
        f"counted by running uhd-profile's FLOPs counter (on the meta device: shapes only); the paper's numbers "
        f"appear only as the reference. {FLAG_MARK} marks a flagged latency ({FLAG_WHAT}; see Measurement quality) wherever it appears. "
        f"FLOP counts are per view (one image of the stated size, batch 1) unless said otherwise; the counting "
        f"conventions and the terms used are defined once, in the last section."
    )
    _headline_section(rep, df)
    _reproduction_section(rep, df, recount)
    _quality_section(rep, df, recount, quality)
    _pareto_section(rep, df)
    _breakdown_section(rep, df, recs)
    _encoding_section(rep, df)
    _e2e_section(rep, df, recs, recount)
    _measurement_section(rep, df, recs)
    _glossary_section(rep)
    return rep


def _e2e_section(rep: Report, df: pd.DataFrame, recs: list[dict], recount: bool) -> None:
    """The "End to end" section (``uhd_profile.analyse.report.e2e``): its blocks as this report's."""
    for b in e2e_blocks(df, recs, recount):
        if b[0] == "table":
            rep.blocks.append(Table(*b[1:]))
        elif b[0] == "figure":
            rep.blocks.append(Figure(*b[1:]))
        elif b[0] == "h":
            rep.h(b[1], b[2])  # numbered by the renderer
        else:
            rep.blocks.append(b)


def _headline_section(rep: Report, df: pd.DataFrame) -> None:
    hl = headline(df)
    hp = headline_pairs(df)
    empty = (
        f"Not available: the run holds no pair of the post-ViT baseline (compressor none) and v4's compressor "
        f"({V4_COMPRESSOR}) at the same encoder, resolution and post-ViT ratio."
    )
    if not _opened(rep, "1. Headline: LLaVA-UHD v4 vs the post-ViT baseline", hl, empty):
        return
    depth = hp["depth"]
    intro = (
        f"v4 = {V4_COMPRESSOR} at depth {depth}"
        + ("" if depth == V4_DEPTH else f" (the run holds no depth-{V4_DEPTH} point; the paper's v4 uses depth {V4_DEPTH})")
        + "; baseline = no in-ViT compression, the same post-ViT ratio. Reduction = 1 - v4 / baseline."
    )
    rep.p(intro)
    shown = pd.DataFrame(
        {
            "quantity": hl["quantity"],
            "resolution": hl["resolution"],
            "source": hl["device"],
            "baseline": [fmt_s(v) if c == "seconds" else fmt_count(v, c) for v, c in zip(hl["baseline"], hl["convention"])],
            "v4": [fmt_s(v) if c == "seconds" else fmt_count(v, c) for v, c in zip(hl["v4"], hl["convention"])],
            "reduction": [flag_text(f, fmt_pct(r)) for r, f in zip(hl["reduction"], hl["flagged"])],
            "paper's reduction": [fmt_pct(p, 1) if not isna(p) else "—" for p in hl["paper_reduction"]],
        }
    )
    rep.blocks.append(
        Table(
            "headline",
            shown,
            hl,
            f"paper's reduction: what the paper prints for {PAPER_ENCODER} at "
            f"{PAPER_SIZE[0]} px, the ViT alone (55.8%; text 55.75%).",
        )
    )
    flops_rows = hl[hl["convention"] == "paper"]
    lat_rows = hl[hl["convention"] == "seconds"]
    sent = []
    if len(flops_rows):
        r = flops_rows.iloc[0]
        ref = (
            f"paper: {PAPER_REDUCTION:.1%}"
            if not isna(r["paper_reduction"])
            else f"the paper's {PAPER_REDUCTION:.1%} is for {PAPER_ENCODER} at {PAPER_SIZE[0]} px, the ViT alone: not this setting"
        )
        sent.append(
            f"Counted at {r['resolution']} ({r['encoder']}), v4 cuts visual-encoding compute by "
            f"{fmt_pct(r['reduction'])} in the paper's convention ({ref})"
        )
        m = hl[(hl["convention"] == "macs") & (hl["resolution"] == r["resolution"])]
        if len(m):
            sent[-1] += f" and by {fmt_pct(m.iloc[0]['reduction'])} in MACs as executed (window attention counted as windowed)"
    for _, r in lat_rows.iterrows():
        word = "lower" if r["reduction"] >= 0 else "higher"
        sent.append(
            f"measured at {r['resolution']} on {r['device']}, its median latency is "
            f"{fmt_pct(abs(r['reduction']))} {word} ({fmt_s(r['baseline'])} -> {fmt_s(r['v4'])})"
            + (f" {FLAG_MARK} ({r['note']})" if r["flagged"] else "")
        )
    if not len(lat_rows):
        sent.append("the run measured no latency of a baseline/v4 pair at the same resolution and post-ViT ratio")
    rep.p("; ".join(sent) + ".")


def _reproduction_section(rep: Report, df: pd.DataFrame, recount: bool) -> None:
    rep.h(2, "2. Reproduction of the paper's FLOPs figures")
    t = reproduction_table(df, recount=recount)
    n_run, n_re = int((t["source"] == "run").sum()), int((t["source"] == "recounted").sum())
    shown = pd.DataFrame(
        {
            "figure": t["figure"],
            "paper (GFLOPs)": [f"{v / 1e9:,.1f}" for v in t["paper_flops"]],
            "counted, paper conv. (GFLOPs)": [f"{v / 1e9:,.2f}" if not isna(v) else "n/a" for v in t["counted_paper_flops"]],
            "rel. err": [fmt_pct(v, 4, sign=True) for v in t["rel_err"]],
            "0.1%": ["n/a" if isna(o) else ("pass" if o else "FAIL") for o in t["ok"]],
            "as executed (GMACs)": [f"{v / 1e9:,.2f}" if not isna(v) else "n/a" for v in t["executed_macs"]],
            "source": t["source"],
        }
    )
    rep.blocks.append(Table("reproduction", shown, t))
    judged = t[t["ok"].notna()]
    verdict = (
        f"{int(judged['ok'].astype(bool).sum())} of {len(t)} figures within {REL_TOL:.1%}" if len(judged) else "no figure judged"
    )
    rep.p(
        f"Per 980 px view (70x70 patches), SigLIP2-so400m/14, the ViT alone. {verdict}. Source: `run` = the run's "
        f"record of that configuration ({n_run} figures); `recounted` = not in this run, counted now with "
        f"`count_flops` ({n_re} figures)"
        + ("" if recount else "; `not in run` = not in this run and not recounted")
        + ". Counted column: the paper convention; as executed: macs (window attention counted as windowed)."
    )


def _pareto_section(rep: Report, df: pd.DataFrame) -> None:
    rep.h(2, "3. Pareto fronts")
    conv = FIGURE_CONVENTION
    for y, name, what in (
        ("latency_median_s", "pareto_latency", "latency"),
        ("tokens_llm", "pareto_tokens", "tokens reaching the LLM"),
    ):
        t = pareto_table(df, y)
        if t.empty:
            why = (
                "no latency was measured (a counts-only run)"
                if y == "latency_median_s" and measured_rows(df).empty
                else "no single-view point has both (global/sliced points are compared in their own section)"
            )
            rep.p(f"FLOPs vs {what}: left out, {why}.")
            continue
        flat = [s for s, g in t.groupby("setting", sort=False) if g[y].nunique() < 2]
        if len(flat) == t["setting"].nunique():
            rep.p(
                f"FLOPs vs {what}: left out: in every setting all variants send the same number of tokens to the "
                f"LLM ({', '.join(f'{int(v):,}' for v in t[y].unique())}), so the panel would be a flat line."
            )
            continue
        t = t[~t["setting"].isin(flat)]
        fig = pareto_figure(t, y)
        lower = "lower latency" if y == "latency_median_s" else "fewer tokens"
        rep.blocks.append(
            Figure(
                name,
                fig,
                t,
                (
                    f"Visual-encoding compute vs {what}, every variant of the run ({conv} convention). "
                    f"Single-view points; one panel per setting (encoder, resolution{', device, dtype' if y == 'latency_median_s' else ''}). "
                    f"The dashed line is each setting's Pareto front, the boundary of the region its outlined points dominate: "
                    f"no other point of that setting has both fewer FLOPs and {lower}. Quality against cost: see the section above."
                    + (f" Points ringed {FLAG_MARK} had a flagged latency ({FLAG_WHAT})." if t["flagged"].any() else "")
                ),
            )
        )
    rep.h(3, "Depth sweep")
    t = depth_table(df)
    if t.empty:
        rep.p("Left out: the run holds no compressor at two or more depths of one setting.")
        return
    rep.blocks.append(
        Figure(
            "depth_sweep",
            depth_figure(t),
            t,
            (
                f"Insertion depth k of the in-ViT compressor vs compute ({conv} convention) and, where measured, median latency; "
                f"horizontal lines: the post-ViT baseline of the same setting. Deeper insertion keeps more layers at full "
                f"token count."
                + (f" Points ringed {FLAG_MARK} had a flagged latency ({FLAG_WHAT})." if t["flagged"].any() else "")
            ),
        )
    )


def _breakdown_section(rep: Report, df: pd.DataFrame, recs: list[dict]) -> None:
    rep.h(2, "4. Where the compute goes")
    hp = headline_pairs(df)
    if hp["flops"] is None:
        rep.p("Left out: the run holds no baseline/v4 pair to break down.")
        return
    b, v = hp["flops"]
    if b["encoding"] != "view":
        rep.p("Left out: the headline pair is not a single-view configuration.")
        return
    parts = {}
    checks = []
    for name, row in (("baseline", b), (f"v4 ({V4_COMPRESSOR}@{int(v['depth'])})", v)):
        spec = _spec_for(recs, row["variant_id"])
        bd = breakdown(spec)
        parts[name] = bd
        total = int(bd["paper"].sum())
        checks.append(
            f"{name}: {fmt_count(total)} recounted, {fmt_count(row['paper_flops'])} in the run"
            + ("" if total == int(row["paper_flops"]) else " (MISMATCH: the counter or model code changed since the run?)")
        )
    data = pd.concat([bd.assign(variant=name) for name, bd in parts.items()], ignore_index=True)
    conv = FIGURE_CONVENTION
    rep.blocks.append(
        Figure(
            "breakdown",
            breakdown_figure(parts),
            data,
            (
                f"{resolution_label(b)}, {b['encoder']}, post-ViT ratio {int(b['post_ratio'])}: compute per block, stacked by category "
                f"({conv} convention). Recounted now with count_flops on the meta device (the store "
                f"keeps totals only). Linear layers include the patch-embedding convolution; attention matmuls are QK^T and AV; "
                f"element-wise: norms, activations, residual adds, softmax and score scaling; compressor: everything inside "
                f"the in-ViT compressor (its window attention charged densely in this convention). Totals: "
                + "; ".join(checks)
                + "."
            ),
        )
    )
    s = breakdown_summary(parts, conv)
    shown = s.pivot(index="category", columns="variant", values=conv).reindex(list(CATEGORIES) + ["total"])
    shares = s.pivot(index="category", columns="variant", values="share").reindex(list(CATEGORIES) + ["total"])
    table = pd.DataFrame({"category": shown.index})
    for name in parts:
        table[name] = [f"{fmt_count(x, conv)} ({sh:.1%})" for x, sh in zip(shown[name], shares[name])]
    rep.blocks.append(Table("breakdown_by_category", table, s, f"{conv} convention; share of the variant's total."))


def _opened(rep: Report, heading: str, table: pd.DataFrame, if_empty: str) -> bool:
    """Open the section ``heading``; when its ``table`` is empty, say ``if_empty`` and return False."""
    rep.h(2, heading)
    if table.empty:
        rep.p(if_empty)
        return False
    return True


def _encoding_section(rep: Report, df: pd.DataFrame) -> None:
    t = encoding_table(df)
    empty = (
        "Left out: the run holds no global- or sliced-encoding points (every point encodes one view, "
        'encoding `view`); run a recipe with `encodings = ["global", "sliced"]` to fill this section.'
    )
    if not _opened(rep, "5. Global vs sliced encoding", t, empty):
        return
    conv = FIGURE_CONVENTION
    rep.blocks.append(
        Figure(
            "global_vs_sliced",
            encoding_figure(t),
            t,
            (
                f"Cost of encoding a whole image vs its size: `global` resizes it to one view, `sliced` encodes the "
                f"slices (and thumbnail) the slicing rule picks. Compute per image ({conv} convention)"
                + (", median latency per image where measured" if t["latency_median_s"].notna().any() else "")
                + "."
                + (f" Points ringed {FLAG_MARK} had a flagged latency ({FLAG_WHAT})." if t["flagged"].any() else "")
            ),
        )
    )
    shown = pd.DataFrame(
        {
            "encoding": t["encoding"],
            "variant": [lab.split(" [")[0] for lab in t["label"]],
            "packing": t["packing"],
            "image": [f"{int(w)}x{int(h)}" for h, w in zip(t["height_px"], t["width_px"])],
            "compute": [fmt_count(x, conv) for x in t[count_column(conv)]],
            "tokens to LLM": [("n/a" if isna(x) else f"{int(x):,}") for x in t["tokens_llm"]],
            "latency": [flag_text(f, fmt_s(x)) if not isna(x) else "n/a" for x, f in zip(t["latency_median_s"], t["flagged"])],
        }
    )
    if t["latency_median_s"].isna().all():
        shown = shown.drop(columns=["latency"])
    rep.blocks.append(Table("global_vs_sliced", shown, t))


def _measurement_section(rep: Report, df: pd.DataFrame, recs: list[dict]) -> None:
    q = measurement_table(df)
    empty = (
        "No latency was measured in this run (FLOP counts only), so there is no timing noise or throttling to "
        "report. Counts are exact functions of the executed module graph."
    )
    if _opened(rep, "6. Measurement quality", q, empty):
        n_flag = int(q["flagged"].sum())
        reasons = {str(m["telemetry_reason"]) for r in recs if (m := r.get("metrics") or {}).get("telemetry_reason")}
        thr = "throttling: " + (
            "not observable (" + "; ".join(sorted(reasons)) + ")"
            if q["throttled_fraction"].isna().all()
            else f"fraction of samples with clocks slowed, max {q['throttled_fraction'].max():.1%}"
        )
        rep.p(
            f"{len(q)} measured points, {n_flag} flagged {FLAG_MARK}: noise flag `noisy` (IQR/median >= 10%) or "
            f"`unreliable` (>= 25%); throttled_fraction > 0; or a slow outlier, whose throughput (flops convention "
            f"/ median latency) is more than {SLOW_OUTLIER_FACTOR:g}x below the median of its peers (of a pair: "
            f"the other point; same device, dtype, encoder, batch): a steady slowdown from outside the process (another job on the machine, a "
            f"throttled or shared host) that lasts the whole measurement, so the sample spread cannot show it; "
            f"or too few samples, when the time limit stopped the measurement before the stop rule's minimum count. "
            f"{thr}."
        )
        why = measured_rows(df)[["dtype", "dtype_reason"]].dropna().drop_duplicates()
        if len(why):
            rep.p(
                "Measured dtype: "
                + "; ".join(f"{dt} ({reason})" for dt, reason in zip(why["dtype"], why["dtype_reason"]))
                + ". FLOP counts do not depend on it."
            )
        shown = pd.DataFrame(
            {
                "variant": q["label"],
                "res.": q["resolution"],
                "device": q["device"] + " " + q["dtype"],
                "median": [fmt_s(x) for x in q["latency_median_s"]],
                "p10 / p90": [f"{fmt_s(a)} / {fmt_s(b)}" for a, b in zip(q["latency_p10_s"], q["latency_p90_s"])],
                "IQR/median": [fmt_pct(x, 1) for x in q["latency_iqr_over_median"]],
                "n": [str(int(x)) if not isna(x) else "n/a" for x in q["latency_n"]],
                "stop rule": q["stop_reason"].fillna("n/a"),
                "noise": [str(x) if not isna(x) else "n/a" for x in q["noise_flag"]],
                "throttled": [fmt_pct(x, 1) for x in q["throttled_fraction"]],
                "GFLOP/s": [f"{x / 1e9:,.0f}" if not isna(x) else "n/a" for x in q["throughput_flops_per_s"]],
                "flag": [f"{FLAG_MARK} {r}" if f else "" for f, r in zip(q["flagged"], q["flag_reason"])],
                "env": q["env_key"].fillna("n/a"),
            }
        )
        rep.blocks.append(Table("measurement_quality", shown, q))
        e = env_table(recs)
        if len(e.columns) > 1:
            rep.h(3, "Environment fingerprint")
            rep.p(
                "Fields of the fingerprint recorded with each measured point (one column per distinct fingerprint "
                "key; equal keys mean comparable timings). Hostname and timestamps are left out."
            )
            rep.blocks.append(Table("environment", e, e))
    fails = failures_table(df)
    if len(fails):
        rep.h(3, "Points that did not run")
        rep.blocks.append(Table("failures", fails.fillna(""), fails))


def _quality_section(rep: Report, df: pd.DataFrame, recount: bool, quality: Sequence[str | os.PathLike]) -> None:
    rep.h(2, "Quality against cost")
    paper = quality_cost_table(df, paper_quality(), recount=recount)
    user_scores, problems = read_quality(quality) if quality else (None, [])
    user = None
    if user_scores is not None and len(user_scores):
        joined, missing = join_quality(df, user_scores)
        by_design = user_scores[user_scores["compressor"].notna()] if "compressor" in user_scores else user_scores[:0]
        user = quality_cost_table(df, by_design, recount=recount) if len(by_design) else None
    intro = (
        "The trade-off people come for: benchmark quality against what it costs. Hollow markers are the scores the "
        "paper reports for each compressor design and depth (Table A3, Table 5: SigLIP-2, Qwen3-8B, 8M training "
        "samples, 16x compression; reference data shipped with uhd-profile), drawn against the cost uhd-profile "
        "counts for the same configuration (980 px view, the ViT alone) in the paper's convention and as executed, "
        "and against the latency this run measured for the same design where it did. Quality is never measured here."
    )
    if quality:
        intro += " Filled markers are your scores (" + ", ".join(str(q) for q in quality) + ")."
    else:
        intro += (
            " Add your own scores with `uhd-profile report RUN --quality scores.csv` (or lmms-eval results "
            "as `--quality results.json=VARIANT`)."
        )
    rep.p(intro)
    if not quality_axes(paper, user):
        rep.p("Left out: no scored design has a cost here (the run holds none of them and recounting is off).")
        return
    rep.blocks.append(
        Figure(
            "quality_fronts",
            quality_figure(paper, user),
            pd.concat(
                [paper.assign(scores="paper-reported")] + ([user.assign(scores="yours")] if user is not None else []),
                ignore_index=True,
            ),
            (
                "Average of the eight benchmark scores against the cost of each design; the dashed line is the Pareto "
                "front (the most quality for the least cost), dominated points are faded. A score far below the rest is "
                "drawn at the bottom edge with its value."
            ),
        )
    )
    shown = pd.DataFrame(
        {
            "design": paper["design"],
            "reported avg": [f"{v:.1f}" if not isna(v) else "n/a" for v in paper["avg"]],
            "reported (GFLOPs)": [f"{v:,.1f}" if not isna(v) else "n/a" for v in paper["reported_gflops"]],
            "counted (GFLOPs, paper)": [f"{v / 1e9:,.1f}" if not isna(v) else "n/a" for v in paper["paper_flops"]],
            "as executed (GMACs)": [f"{v / 1e9:,.1f}" if not isna(v) else "n/a" for v in paper["macs"]],
            "latency": [
                flag_text(f, fmt_s(v)) if not isna(v) else "n/a" for v, f in zip(paper["latency_median_s"], paper["flagged"])
            ],
            "front (paper / macs)": [
                ("yes" if a else "no") + " / " + ("yes" if b else "no")
                for a, b in zip(paper["pareto_paper_flops"].fillna(False), paper["pareto_macs"].fillna(False))
            ],
            "source": paper["source"],
            "note": paper["notes"].fillna(""),
        }
    )
    rep.blocks.append(
        Table(
            "quality_paper",
            shown,
            paper,
            "Scores and GFLOPs as the paper prints them (the reference); counted costs by uhd-profile "
            "(`run`: the run's record; `recounted`: counted now on the meta device).",
        )
    )
    notes = list(paper["notes"].dropna().unique())
    if notes:
        rep.p(
            "Where the paper disagrees with itself (kept visible, not resolved): "
            + " ".join(f"{n}." if not n.endswith(".") else n for n in notes)
        )
    if quality:
        if user is None:
            rep.p("None of your scores is keyed by design (compressor and depth): see the table of joins below.")
        else:
            ushown = pd.DataFrame(
                {
                    "design": user["design"],
                    "your avg": [f"{v:.1f}" if not isna(v) else "n/a" for v in user["avg"]],
                    "counted (GFLOPs, paper)": [f"{v / 1e9:,.1f}" if not isna(v) else "n/a" for v in user["paper_flops"]],
                    "latency": [fmt_s(v) if not isna(v) else "n/a" for v in user["latency_median_s"]],
                    "source": user["source"],
                }
            )
            rep.blocks.append(Table("quality_yours", ushown, user))
        if len(missing):
            rep.h(3, "Scores and points that did not join")
            rep.blocks.append(
                Table(
                    "quality_missing",
                    missing.fillna(""),
                    missing,
                    "`quality-without-run`: a score that matched no point of this run; "
                    "`run-without-quality`: a point of this run with no score.",
                )
            )
        for msg in problems:
            rep.warnings.append(msg)


GLOSSARY = (
    ("baseline", "the post-ViT baseline: no compression inside the ViT, a 16x connector after it"),
    ("v4", "LLaVA-UHD v4's compressor (window-attn-reused-mlp) after encoder layer 6, then a 4x connector: 16x in total"),
    ("depth k", "the 0-based encoder layer after which an in-ViT compressor runs: k = 6 means 7 layers at full token count"),
    ("post-ratio", "the post-ViT connector's ratio: 1 is the ViT alone (the scope of the paper's per-slice figures)"),
    ("per view", "one image of the stated size (W x H pixels), batch 1; whole images: all their views"),
    ("recounted", "a configuration the run does not hold, counted now on the meta device (shapes only, seconds)"),
    ("Pareto front", "the points no other point beats on both axes at once; the line bounds the region they dominate"),
    ("paper-reported", "a number the paper prints, shipped as reference data with its table and page; never computed here"),
    (
        f"{FLAG_MARK} flagged latency",
        "noisy (IQR/median >= 10%), unreliable (>= 25%), throttled, a slow outlier "
        f"(throughput more than {SLOW_OUTLIER_FACTOR:g}x below its peers' median), or too few samples "
        "(the time limit came before the stop rule's minimum)",
    ),
    ("G, M", "1e9 and 1e6; GMACs in the macs convention, GFLOPs in the others"),
)


def _glossary_section(rep: Report) -> None:
    rep.h(2, "Conventions and terms")
    rep.p(
        "Every count in this report names its convention; this is where they are defined (in full in "
        "uhd-profile's docs/conventions.md). Figures are drawn in the "
        f"{FIGURE_CONVENTION} convention unless their axis says otherwise. Latency is the median of the recorded "
        "forward passes (one batch per pass)."
    )
    conv_t = pd.DataFrame(
        {
            "convention": list(CONVENTIONS),
            "record column": [c.column for c in CONVENTIONS.values()],
            "unit": [c.unit for c in CONVENTIONS.values()],
            "meaning": [c.meaning for c in CONVENTIONS.values()],
        }
    )
    rep.blocks.append(Table("conventions", conv_t, conv_t))
    terms = pd.DataFrame(GLOSSARY, columns=["term", "meaning"])
    rep.blocks.append(Table("terms", terms, terms))
