"""The quality axis: benchmark scores next to cost.

Two sources of scores, one schema:

* **The paper's reported scores** (reference data, never computed here): every table of the
  LLaVA-UHD v4 paper (arXiv 2605.08985) with benchmark scores or FLOPs, shipped as
  ``uhd_profile/reference/llava_uhd_v4_scores.toml``. `paper_scores` gives one row per printed
  row with its source (table, page), its setting and its values; `paper_disagreements` lists where
  the paper disagrees with itself (the affected rows carry the note); `find_inconsistencies`
  recomputes such disagreements from the numbers themselves.
* **Your scores**: `read_quality` reads CSV files and the results JSON that ``lmms-eval`` writes;
  `join_quality` attaches them to the points of a run (``uhd_profile.load(run_dir)``).

Scores are on the paper's 0-100 scale. The eight benchmarks are `BENCHMARKS`; ``avg`` is their
mean, as the paper's "Avg." column. The pure functions for figures (`quality_front`,
`paper_design_table`) return DataFrames and write nothing.

**Keys.** A quality row is tied to run points by any of ``variant_id``, ``encoder``,
``compressor``, ``depth``, ``encoding`` (`KEY_COLUMNS`); a missing (NA) key matches anything, so a
row keyed ``compressor=avg-pool, depth=6`` scores that design at every resolution a run measured.
The post-ViT baseline is ``compressor="none"`` (runs store it as a null compressor and depth).

**CSV files** (``*.csv``): one header line, then one row per scored variant.

* key columns: ``variant_id`` and/or any of ``encoder``, ``compressor``, ``depth``, ``encoding``.
  Every cell of a key column is filled, except ``depth`` for ``compressor`` ``none``.
* score columns: the benchmarks, named as in the paper or as here, case and punctuation ignored
  (``MMMU``, ``MathVista``, ``MMBench-EN``/``MMBEN``, ``MMBench-CN``/``MMBCN``, ``MMStar``,
  ``HallusionBench``/``HallBench``, ``AI2D``, ``OCRBench``), ``avg`` (or ``Avg.``, ``average``),
  and any other numeric column (kept as an extra score, outside ``avg``).
* optional ``label`` and ``note`` columns. Empty score cells are missing scores.

**lmms-eval results** (``*.json``, the ``<date>_results.json`` lmms-eval writes): the scores are
read from ``results -> <task> -> "<metric>,<filter>"`` (see `LMMS_TASKS` for the task, metric and
scale of each benchmark). A results file does not say which uhd-profile variant was evaluated, so
each one is tied explicitly, by either

* ``PATH=TIE`` in the list given to `read_quality` (the CLI form ``--quality PATH=TIE``), or
* ``uhd_variant=TIE`` inside lmms-eval's ``--model_args`` (recorded as ``config.model_args``),

where TIE is a variant id (``siglip2-so400m-p14@980x980/window-attn-reused-mlp@6/post1``) or a
design: ``baseline``/``none``, ``v4``, or ``COMPRESSOR@DEPTH`` (``avg-pool@6``). Both given and
different is an error; neither is an error. Several files combine (lmms-eval is often run one task
at a time): rows with the same key merge, and the same score given twice with different values is
an error naming both files. ``avg`` is computed only when all eight benchmarks are present.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

from uhd_profile.errors import UhdProfileError

BENCHMARKS: tuple[str, ...] = ("mmmu", "mathvista", "mmbench_en", "mmbench_cn", "mmstar", "hallusionbench", "ai2d", "ocrbench")
"""The paper's eight benchmarks, as DataFrame column names (scores 0-100)."""

BENCHMARK_NAMES: dict[str, str] = {
    "mmmu": "MMMU",
    "mathvista": "MathVista",
    "mmbench_en": "MMBench-EN",
    "mmbench_cn": "MMBench-CN",
    "mmstar": "MMStar",
    "hallusionbench": "HallusionBench",
    "ai2d": "AI2D",
    "ocrbench": "OCRBench",
}
"""Column name -> the benchmark's usual spelling (for tables and figures)."""

KEY_COLUMNS: tuple[str, ...] = ("variant_id", "encoder", "compressor", "depth", "encoding")
"""What ties a score to run points (the identity columns of ``uhd_profile.load``)."""

SCORES_RESOURCE = ("reference", "llava_uhd_v4_scores.toml")
ROUNDING = 0.05 + 1e-9
"""A printed one-decimal average may differ from the mean of its printed scores by this much: the
paper's averages are the rounded means of its printed one-decimal scores (every printed row but
one satisfies this), so only the rounding of the average itself is allowed for."""

_ENCODINGS = ("view", "global", "sliced")
_PAPER_ENCODINGS = ("global", "sliced")
_CONNECTORS = ("mlp", "resampler")
_SLICES = ("default", "higher-res")
_DATA = ("in-house", "llava-onevision")
_SETTING_KEYS = (
    "tower",
    "encoder",
    "encoding",
    "slices",
    "compression",
    "connector",
    "compressor",
    "depth",
    "data",
    "samples",
    "llm",
)
_VALUE_COLUMNS = (*BENCHMARKS, "avg", "gflops")


def _alias(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


_BENCH_ALIASES: dict[str, str] = {
    **{_alias(k): k for k in BENCHMARKS},
    **{_alias(v): k for k, v in BENCHMARK_NAMES.items()},
    "mmmuval": "mmmu",
    "mathvistatestmini": "mathvista",
    "mmben": "mmbench_en",
    "mmbenchendev": "mmbench_en",
    "mmbcn": "mmbench_cn",
    "mmbenchcndev": "mmbench_cn",
    "hallbench": "hallusionbench",
    "hallusion": "hallusionbench",
    "avg": "avg",
    "average": "avg",
    "avgscore": "avg",
}
_META_ALIASES = {"label": "label", "note": "note", "notes": "note"}


# =============================================================================================
# The paper's reported scores
# =============================================================================================


@dataclass(frozen=True)
class Disagreement:
    """A place where the paper disagrees with itself: an id, what disagrees (``note``, as
    transcribed) and the ids of the rows it touches (see `paper_scores`)."""

    id: str
    note: str
    rows: tuple[str, ...]


def _scores_path(path: str | os.PathLike | None) -> Path:
    if path is not None:
        return Path(path)
    return Path(str(resources.files("uhd_profile").joinpath(*SCORES_RESOURCE)))


def _load_toml(path: Path) -> dict:
    import tomllib

    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UhdProfileError(
            f"{path}: no such file; the paper's scores ship as uhd_profile/{'/'.join(SCORES_RESOURCE)} (reinstall uhd-profile)"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise UhdProfileError(f"{path}: not valid TOML ({exc})") from None


def _samples_n(samples: str) -> int | None:
    """ "8M" -> 8_000_000 training samples; "" (not stated) -> None."""
    return int(samples[:-1]) * 1_000_000 if samples else None


def _check_setting(where: str, s: dict) -> None:
    from uhd_profile.model.compressors import COMPRESSORS
    from uhd_profile.model.encoders import ENCODERS

    def bad(key: str, valid: str) -> UhdProfileError:
        return UhdProfileError(f"{where}: {key} = {s.get(key)!r} is not valid; valid: {valid}")

    unknown = set(s) - set(_SETTING_KEYS)
    if unknown:
        raise UhdProfileError(f"{where}: unknown setting(s) {', '.join(sorted(unknown))}; valid: {', '.join(_SETTING_KEYS)}")
    if s["encoder"] not in ("", *ENCODERS):
        raise bad("encoder", f'an encoder preset ({", ".join(ENCODERS)}) or ""')
    if s["encoding"] not in _PAPER_ENCODINGS:
        raise bad("encoding", ", ".join(_PAPER_ENCODINGS))
    if s["slices"] not in _SLICES:
        raise bad("slices", ", ".join(_SLICES))
    if s["compression"] not in (4, 16):
        raise bad("compression", "4, 16")
    if s["connector"] not in _CONNECTORS:
        raise bad("connector", ", ".join(_CONNECTORS))
    if s["data"] not in _DATA:
        raise bad("data", ", ".join(_DATA))
    if not re.fullmatch(r"(\d+M)?", str(s["samples"])):
        raise bad("samples", 'a count like "8M", or "" when not stated')
    if s["compressor"] == "none":
        if s.get("depth") is not None:
            raise UhdProfileError(f"{where}: depth {s['depth']!r} given for compressor none (the post-ViT baseline has none)")
    elif s["compressor"] in COMPRESSORS:
        if not isinstance(s.get("depth"), int) or isinstance(s.get("depth"), bool) or s["depth"] < 0:
            raise UhdProfileError(f"{where}: compressor {s['compressor']} needs an integer depth >= 0, not {s.get('depth')!r}")
    else:
        raise bad("compressor", f"none, {', '.join(COMPRESSORS)}")


def _flops_variant_id(s: dict) -> str | None:
    """The uhd-profile variant whose ``paper`` count is the paper's per-slice FLOPs figure for this
    setting: one 980 px view, the ViT alone (post-ratio 1). None where uhd-profile has no such
    variant (another tower, the higher-resolution slice schedule)."""
    if not s["encoder"] or s["slices"] != "default":
        return None
    from uhd_profile.model.variants import VariantSpec

    comp = None if s["compressor"] == "none" else s["compressor"]
    return VariantSpec(
        encoder=s["encoder"], resolution=980, compressor=comp, depth=s.get("depth") if comp else None, post_ratio=1
    ).id


def _parse_paper(path: Path) -> tuple[list[dict], list[Disagreement]]:
    data = _load_toml(path)
    base = dict(data.get("defaults", {}))
    rows: list[dict] = []
    seen: dict[str, str] = {}
    for t in data.get("table", []):
        tname = t.get("name", "?")
        cols = list(t.get("columns", []))
        bad_cols = [c for c in cols if c not in _VALUE_COLUMNS]
        if bad_cols or len(set(cols)) != len(cols) or not cols:
            raise UhdProfileError(
                f"{path}: {tname}: columns {cols!r} are not valid; each once, from: {', '.join(_VALUE_COLUMNS)}"
            )
        for r in t.get("rows", []):
            rid = r.get("id")
            where = f"{path}: {tname} row {rid!r}"
            if not rid or rid in seen:
                raise UhdProfileError(f"{where}: row ids must be unique and non-empty (also in {seen.get(rid)})")
            seen[rid] = tname
            values = r.get("values", [])
            if len(values) != len(cols) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values
            ):
                raise UhdProfileError(f"{where}: values {values!r} must be {len(cols)} finite numbers, one per column {cols}")
            setting = {k: v for k, v in {**base, **t.get("defaults", {}), **r}.items() if k not in ("id", "label", "values")}
            setting.setdefault("depth", None)
            _check_setting(where, setting)
            for c, v in zip(cols, values):
                if c != "gflops" and not 0 <= v <= 100:
                    raise UhdProfileError(f"{where}: {c} = {v} is outside the 0-100 score scale")
            rows.append(
                {
                    "id": rid,
                    "table": tname,
                    "page": int(t["page"]),
                    "label": r.get("label", rid),
                    "setting": setting,
                    "values": dict(zip(cols, values)),
                    "notes": [],
                }
            )
    if not rows:
        raise UhdProfileError(f"{path}: no [[table]] rows")
    by_id = {r["id"]: r for r in rows}
    dis: list[Disagreement] = []
    for d in data.get("disagreement", []):
        unknown = [x for x in d.get("rows", []) if x not in by_id]
        if unknown or not d.get("rows") or not d.get("note") or not d.get("id"):
            raise UhdProfileError(
                f"{path}: disagreement {d.get('id')!r} needs an id, a note and existing row ids "
                f"(unknown: {', '.join(unknown) or 'none'})"
            )
        dis.append(Disagreement(d["id"], " ".join(str(d["note"]).split()), tuple(d["rows"])))
        for x in d["rows"]:
            by_id[x]["notes"].append(dis[-1].note)
    return rows, dis


def paper_scores(path: str | os.PathLike | None = None) -> pd.DataFrame:
    """The paper's printed rows as a DataFrame, one row per printed row (a cell per row for the
    two-column average Tables 2 and 3, and for Figure 2).

    Columns: ``id`` (e.g. ``"A3/avg-pool"``), ``table`` (``"Table A3"``), ``page``, ``source``
    (``"Table A3, p. 16"``), ``label`` (the row as printed); the setting: ``tower``, ``encoder``
    (uhd-profile preset, NA for towers it has none of), ``encoding`` (``sliced``/``global``),
    ``slices``, ``compression`` (total, 4 or 16), ``connector``, ``compressor`` (``none`` for the
    post-ViT baseline), ``depth`` (k, 0-based layer index; NA for the baseline), ``data``,
    ``samples`` (as printed, ``"8M"``), ``training_samples`` (count), ``llm``; the values where
    printed (else NA): the eight `BENCHMARKS` and ``avg`` (0-100), ``reported_gflops`` (G, per
    980 px slice through the ViT, paper convention) and ``reported_flops`` (the same in FLOPs, an
    integer); ``flops_variant_id`` (the uhd-profile variant counted for that per-slice figure) and
    ``notes`` (the disagreements touching the row, ``"; "``-joined, NA when none).
    ``path``: another scores file of the same format (tests); default the shipped one.
    """
    rows, _ = _parse_paper(_scores_path(path))
    out = []
    for r in rows:
        s, v = r["setting"], r["values"]
        g = v.get("gflops")
        out.append(
            {
                "id": r["id"],
                "table": r["table"],
                "page": r["page"],
                "source": f"{r['table']}, p. {r['page']}",
                "label": r["label"],
                "tower": s["tower"],
                "encoder": s["encoder"] or None,
                "encoding": s["encoding"],
                "slices": s["slices"],
                "compression": s["compression"],
                "connector": s["connector"],
                "compressor": s["compressor"],
                "depth": s["depth"],
                "data": s["data"],
                "samples": s["samples"] or None,
                "training_samples": _samples_n(s["samples"]),
                "llm": s["llm"],
                **{b: v.get(b) for b in BENCHMARKS},
                "avg": v.get("avg"),
                "reported_gflops": g,
                "reported_flops": None if g is None else round(g * 1e9),
                "flops_variant_id": _flops_variant_id(s),
                "notes": "; ".join(r["notes"]) or None,
            }
        )
    df = pd.DataFrame(out)
    types = dict.fromkeys(
        (
            "id",
            "table",
            "source",
            "label",
            "tower",
            "encoder",
            "encoding",
            "slices",
            "connector",
            "compressor",
            "data",
            "samples",
            "llm",
            "flops_variant_id",
            "notes",
        ),
        "string",
    )
    types.update(dict.fromkeys((*BENCHMARKS, "avg", "reported_gflops"), "Float64"))
    types.update(dict.fromkeys(("page", "compression", "depth", "training_samples", "reported_flops"), "Int64"))
    return df.astype(types)


def paper_disagreements(path: str | os.PathLike | None = None) -> list[Disagreement]:
    """Where the paper disagrees with itself, as transcribed with the data (each names the rows
    of `paper_scores` it touches; those rows carry the note)."""
    return _parse_paper(_scores_path(path))[1]


def find_inconsistencies(scores: pd.DataFrame | None = None) -> pd.DataFrame:
    """Disagreements recomputed from the printed numbers of `paper_scores` (default: the shipped
    ones), independent of the transcribed notes. One row per finding: ``kind``, ``field``,
    ``rows`` (ids, ``", "``-joined), ``values`` (as printed, ``" vs "``-joined) and ``detail``.

    Kinds: ``avg-vs-mean`` (a printed average further than rounding, 0.05, from the mean of the
    row's eight printed scores); ``cross-table`` (rows of the same setting in different tables
    print different values for one field); ``copied-row`` (two rows of one table, different
    settings, identical in every printed value); ``flops`` (one tower, design and depth with
    different printed per-slice FLOPs).
    """
    df = paper_scores() if scores is None else scores
    found: list[dict] = []

    def add(kind, field, ids, values, detail):
        groups: dict[float, list[str]] = {}
        for i, v in zip(ids, values):
            groups.setdefault(v, []).append(i)
        text = (
            " vs ".join(f"{v:g} ({', '.join(g)})" for v, g in groups.items())
            if len(groups) > 1 or len(ids) > 1
            else " vs ".join(f"{v:g}" for v in values)
        )
        found.append({"kind": kind, "field": field, "rows": ", ".join(ids), "values": text, "detail": detail})

    for _, r in df.iterrows():
        vals = [r[b] for b in BENCHMARKS]
        if pd.isna(r["avg"]) or any(pd.isna(x) for x in vals):
            continue
        mean = sum(float(x) for x in vals) / len(vals)
        if abs(float(r["avg"]) - mean) > ROUNDING:
            found.append(
                {
                    "kind": "avg-vs-mean",
                    "field": "avg",
                    "rows": r["id"],
                    "values": f"{float(r['avg']):g} vs {mean:.4g}",
                    "detail": f"printed average {float(r['avg']):g}, mean of the eight printed scores {mean:.4g}",
                }
            )

    setting = [c for c in _SETTING_KEYS if c in df.columns]
    keyed = df.assign(_k=df[setting].astype("string").fillna("<NA>").agg("|".join, axis=1))
    for _, g in keyed.groupby("_k", sort=False):
        if g["table"].nunique() < 2:
            continue
        for field in (*BENCHMARKS, "avg"):
            have = g[g[field].notna()]
            if have[field].nunique() > 1:
                add(
                    "cross-table",
                    field,
                    list(have["id"]),
                    [float(x) for x in have[field]],
                    f"same setting, {BENCHMARK_NAMES.get(field, field)} differs between "
                    f"{', '.join(dict.fromkeys(have['source']))}",
                )

    value_cols = [*BENCHMARKS, "avg", "reported_gflops"]
    for _, g in df.groupby("table", sort=False):
        sig = g[value_cols].astype("string").fillna("<NA>").agg("|".join, axis=1)
        for _, same in g.groupby(sig, sort=False):
            if len(same) > 1 and same[value_cols].notna().any(axis=None):
                found.append(
                    {
                        "kind": "copied-row",
                        "field": "all",
                        "rows": ", ".join(same["id"]),
                        "values": "identical",
                        "detail": f"rows {', '.join(same['label'])} of "
                        f"{same['table'].iloc[0]} print identical numbers for different settings",
                    }
                )

    fl = df[df["reported_gflops"].notna()]
    for _, g in fl.groupby(["tower", "slices", "compressor", fl["depth"].astype("string").fillna("-")], sort=False):
        if g["reported_gflops"].nunique() > 1:
            add(
                "flops",
                "reported_gflops",
                list(g["id"]),
                [float(x) for x in g["reported_gflops"]],
                "one design and depth with different per-slice FLOPs",
            )
    return pd.DataFrame(found, columns=["kind", "field", "rows", "values", "detail"]).astype("string")


def _design_label(compressor: str, depth) -> str:
    return "baseline" if compressor == "none" else f"{compressor}@{int(depth)}"


def paper_quality() -> pd.DataFrame:
    """The paper's scores per design and depth, in `read_quality`'s schema, ready for
    `join_quality`: the post-ViT baseline and the seven in-ViT designs at k = 6 from Table A3
    (8M in-house samples, 16x, SigLIP-2), and v4 at k = 3, 9, 15 from Table 5 (average only).
    Keys: ``encoder``, ``compressor``, ``depth`` (``variant_id`` and ``encoding`` NA: a design's
    score holds for every resolution a run measured it at). Also ``reported_gflops`` and
    ``notes``; ``source`` names the table(s)."""
    ps = paper_scores()
    a3 = ps[ps["table"] == "Table A3"]
    t5 = ps[ps["table"] == "Table 5"]
    rows = []
    for _, r in a3.iterrows():
        rows.append(r)
    for _, r in t5.iterrows():
        same = a3[(a3["compressor"] == r["compressor"]) & (a3["depth"] == r["depth"])]
        if len(same):
            a = same.iloc[0]
            if a["avg"] != r["avg"] or a["reported_gflops"] != r["reported_gflops"]:
                raise UhdProfileError(
                    f"{a['id']} and {r['id']} print different numbers for one design; add a disagreement note to the scores file"
                )
            continue
        rows.append(r)
    out = []
    for r in rows:
        dup = t5[(t5["compressor"] == r["compressor"]) & (t5["depth"] == r["depth"])] if r["table"] == "Table A3" else t5[:0]
        source = r["source"] + (f"; also {dup.iloc[0]['source']}" if len(dup) else "")
        notes = "; ".join(dict.fromkeys(x for x in (r["notes"], *(dup["notes"] if len(dup) else [])) if pd.notna(x)))
        if r["table"] == "Table A3":
            label = r["label"]
        else:
            design = a3.loc[a3["compressor"] == r["compressor"], "label"]
            label = f"{design.iloc[0] if len(design) else r['compressor']}, k={int(r['depth'])}"
        out.append(
            {
                "variant_id": None,
                "encoder": r["encoder"],
                "compressor": r["compressor"],
                "depth": r["depth"],
                "encoding": None,
                **{b: r[b] for b in BENCHMARKS},
                "avg": r["avg"],
                "avg_from": "given",
                "label": label,
                "source": source,
                "reported_gflops": r["reported_gflops"],
                "flops_variant_id": r["flops_variant_id"],
                "notes": notes or None,
            }
        )
    return _typed(pd.DataFrame(out), extra=[])


def paper_design_table(run_df: pd.DataFrame, column: str) -> pd.DataFrame:
    """The paper's reported quality per design and depth (`paper_quality`) next to ``column`` of
    a run (e.g. the counted ``paper_flops`` or ``macs`` of ``uhd_profile.load(run_dir)``).

    Each paper row is matched to the run point whose ``variant_id`` is the design's 980 px,
    ViT-alone variant (``flops_variant_id``: the geometry of the paper's per-slice FLOPs). The
    result has ``design`` (``avg-pool@6``, ``baseline``), ``label``, ``compressor``, ``depth``,
    ``variant_id``, ``reported_gflops`` and ``reported_flops`` (as printed, G and FLOPs), ``avg``
    and the eight benchmarks (NA where the paper prints only the average), ``source``, ``notes``,
    and ``column`` (NA when the run has no such point). Several run points of one variant (say
    a counted and a measured one) must agree on ``column`` where they have it; different values
    are an error (filter the run first, e.g. by device).
    """
    if column not in run_df.columns:
        raise UhdProfileError(f"column {column!r} is not in the run's DataFrame; columns: {', '.join(map(str, run_df.columns))}")
    if "variant_id" not in run_df.columns:
        raise UhdProfileError("the run's DataFrame has no variant_id column; pass uhd_profile.load(run_dir)")
    pq = paper_quality()
    values = []
    for _, r in pq.iterrows():
        vid = r["flops_variant_id"]
        got = run_df.loc[run_df["variant_id"] == vid, column].dropna() if pd.notna(vid) else run_df[column][:0]
        distinct = list(dict.fromkeys(got.tolist()))
        if len(distinct) > 1:
            raise UhdProfileError(
                f"{vid}: the run has {len(distinct)} different values of {column} "
                f"({', '.join(map(str, distinct[:4]))}); filter the run to one device and dtype first"
            )
        values.append(distinct[0] if distinct else None)
    out = pd.DataFrame(
        {
            "design": [_design_label(c, d) for c, d in zip(pq["compressor"], pq["depth"])],
            "label": pq["label"],
            "compressor": pq["compressor"],
            "depth": pq["depth"],
            "variant_id": pq["flops_variant_id"],
            "reported_gflops": pq["reported_gflops"],
            "reported_flops": pq["reported_gflops"].map(lambda g: None if pd.isna(g) else round(float(g) * 1e9)).astype("Int64"),
            "avg": pq["avg"],
            **{b: pq[b] for b in BENCHMARKS},
            "source": pq["source"],
            "notes": pq["notes"],
        }
    )
    col = pd.Series(values, index=out.index)
    out[column] = col.astype(run_df[column].dtype) if len(col) else col
    return out


# =============================================================================================
# User scores: CSV and lmms-eval
# =============================================================================================

#: benchmark -> (lmms-eval task, accepted metric names, accepted filters in order of preference,
#: scale to 0-100). Metric keys in the results file are "<metric>,<filter>". HallusionBench is the
#: mean of lmms-eval's aAcc, fAcc and qAcc, the "Overall" that VLMEvalKit reports. Scales follow
#: lmms-eval's aggregation functions: accuracies returned as fractions are scaled by 100;
#: gpt_eval_score / llm_as_judge_eval (MathVista, MMBench) and HallusionBench's are percentages.
LMMS_TASKS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...], float]] = {
    "mmmu": ("mmmu_val", ("mmmu_acc",), ("none",), 100.0),
    "mathvista": ("mathvista_testmini", ("gpt_eval_score", "llm_as_judge_eval"), ("none",), 1.0),
    "mmbench_en": ("mmbench_en_dev", ("gpt_eval_score",), ("none",), 1.0),
    "mmbench_cn": ("mmbench_cn_dev", ("gpt_eval_score",), ("none",), 1.0),
    "mmstar": ("mmstar", ("average",), ("none",), 100.0),
    "hallusionbench": ("hallusion_bench_image", ("aAcc", "fAcc", "qAcc"), ("none",), 1.0),
    "ai2d": ("ai2d", ("exact_match",), ("flexible-extract", "none"), 100.0),
    "ocrbench": ("ocrbench", ("ocrbench_accuracy",), ("none",), 100.0),
}
_ALL_OF = {"hallusionbench"}  # benchmarks whose score is the mean of all their metrics


@dataclass
class _Partial:
    """Scores of one key from one place (a CSV line, a results file)."""

    key: dict
    scores: dict  # column -> float (0-100)
    given_avg: float | None
    where: str
    label: str | None = None
    note: str | None = None
    metrics: str | None = None


def _norm_key(where: str, key: dict) -> dict:
    """Validate and normalise key values; NA keys stay None."""
    from uhd_profile.model.compressors import COMPRESSORS
    from uhd_profile.model.encoders import ENCODERS

    out = dict.fromkeys(KEY_COLUMNS)
    for k, v in key.items():
        v = None if v is None else str(v).strip()
        if k == "variant_id":
            if not v:
                raise UhdProfileError(
                    f"{where}: variant_id is empty; give the run's variant id "
                    "(e.g. siglip2-so400m-p14@980x980/window-attn-reused-mlp@6/post1)"
                )
            out[k] = v
        elif k == "encoder":
            if v not in ENCODERS:
                raise UhdProfileError(f"{where}: encoder {v!r} is not valid; valid encoders: {', '.join(ENCODERS)}")
            out[k] = v
        elif k == "compressor":
            low = (v or "").lower()
            if low in ("none", "baseline"):
                out[k] = "none"
            elif v in COMPRESSORS:
                out[k] = v
            else:
                raise UhdProfileError(
                    f"{where}: compressor {v!r} is not valid; valid: none (the post-ViT baseline), {', '.join(COMPRESSORS)}"
                )
        elif k == "encoding":
            if v not in _ENCODINGS:
                raise UhdProfileError(f"{where}: encoding {v!r} is not valid; valid: {', '.join(_ENCODINGS)}")
            out[k] = v
        elif k == "depth":
            if v in (None, ""):
                out[k] = None
                continue
            if not re.fullmatch(r"\d+", v):
                raise UhdProfileError(
                    f"{where}: depth {v!r} is not valid; it must be an integer >= 0 (the encoder layer "
                    "index after which the compressor runs)"
                )
            out[k] = int(v)
    if out["compressor"] == "none" and out["depth"] is not None:
        raise UhdProfileError(
            f"{where}: depth {out['depth']} given for compressor none; the post-ViT baseline has no depth (leave the cell empty)"
        )
    if "depth" in key and out["depth"] is None and out["compressor"] not in (None, "none"):
        raise UhdProfileError(
            f"{where}: compressor {out['compressor']} has no depth; give the encoder layer index (e.g. 6) in the depth column"
        )
    return out


def _parse_tie(where: str, tie: str) -> dict:
    """A variant id or a design (``baseline``/``none``, ``v4``, ``COMPRESSOR@DEPTH``) -> key."""
    t = tie.strip()
    if "/" in t:
        return _norm_key(where, {"variant_id": t})
    if t.lower() in ("baseline", "none"):
        return _norm_key(where, {"compressor": "none"})
    if t.lower() == "v4":
        from uhd_profile.model.variants import V4_COMPRESSOR, V4_DEPTH

        return _norm_key(where, {"compressor": V4_COMPRESSOR, "depth": str(V4_DEPTH)})
    m = re.fullmatch(r"([a-z0-9-]+)@(\d+)", t)
    if not m:
        raise UhdProfileError(
            f"{where}: {tie!r} names no variant; give a variant id (ENCODER@HxW/PLAN/postR) or a design: "
            "baseline, v4, or COMPRESSOR@DEPTH such as avg-pool@6"
        )
    return _norm_key(where, {"compressor": m.group(1), "depth": m.group(2)})


def _number(where: str, col: str, raw: str) -> float | None:
    s = raw.strip()
    if not s:
        return None
    try:
        v = float(s)
    except ValueError:
        raise UhdProfileError(f"{where}: {col} = {raw!r} is not a number (scores are 0-100, empty when missing)") from None
    if not math.isfinite(v) or not 0 <= v <= 100:
        raise UhdProfileError(f"{where}: {col} = {raw!r} is outside 0-100; write scores on the paper's 0-100 scale")
    return v


def _read_csv(path: Path, problems: list[str]) -> list[_Partial]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            lines = list(csv.reader(fh))
    except UnicodeDecodeError:
        raise UhdProfileError(f"{path}: not a UTF-8 text file; expected a CSV with a header line") from None
    numbered = [(i + 1, ln) for i, ln in enumerate(lines) if any(c.strip() for c in ln)]
    if not numbered:
        raise UhdProfileError(f"{path}: empty; expected a header line (key and score columns) and one row per variant")
    header_line, header = numbered[0]
    roles: dict[int, tuple[str, str]] = {}  # column index -> (role, name)
    taken: dict[str, str] = {}
    extras: list[str] = []
    for j, name in enumerate(header):
        h = name.strip()
        if not h:
            raise UhdProfileError(f"{path}: header column {j + 1} is empty; name every column")
        low = h.lower()
        role: tuple[str, str]
        if low in KEY_COLUMNS:
            role = ("key", low)
        elif low in _META_ALIASES:
            role = ("meta", _META_ALIASES[low])
        elif _alias(h) in _BENCH_ALIASES:
            role = ("score", _BENCH_ALIASES[_alias(h)])
        else:
            role = ("extra", h)
            extras.append(h)
        if role[1] in taken:
            raise UhdProfileError(f"{path}: columns {taken[role[1]]!r} and {h!r} both name {role[1]}; keep one")
        taken[role[1]] = h
        roles[j] = role
    keys = [n for r, n in roles.values() if r == "key"]
    if not keys:
        raise UhdProfileError(
            f"{path}: no key column; name the variant with variant_id, or with some of encoder, compressor, depth, encoding"
        )
    if not any(r in ("score", "extra") for r, _ in roles.values()):
        raise UhdProfileError(f"{path}: no score column; add benchmark columns ({', '.join(BENCHMARK_NAMES.values())}) or avg")
    if extras:
        problems.append(
            f"{path}: column(s) {', '.join(extras)} are not among the eight benchmarks: kept as extra scores, left out of avg"
        )
    out: list[_Partial] = []
    for lineno, cells in numbered[1:]:
        where = f"{path}:{lineno}"
        if len(cells) != len(header):
            raise UhdProfileError(f"{where}: {len(cells)} cells where the header has {len(header)} columns")
        key, scores, given, meta = {}, {}, None, {}
        for j, raw in enumerate(cells):
            kind, name = roles[j]
            if kind == "key":
                if not raw.strip() and name != "depth":
                    raise UhdProfileError(
                        f"{where}: key column {name} is empty; every row needs its key "
                        "(write none for the post-ViT baseline's compressor)"
                    )
                key[name] = raw
            elif kind == "meta":
                meta[name] = raw.strip() or None
            else:
                v = _number(where, header[j].strip(), raw)
                if name == "avg":
                    given = v
                elif v is not None:
                    scores[name] = v
        if not scores and given is None:
            raise UhdProfileError(f"{where}: no score in this row; leave the row out or fill a score")
        out.append(_Partial(_norm_key(where, key), scores, given, where, meta.get("label"), meta.get("note")))
    if not out:
        raise UhdProfileError(f"{path}: a header but no rows")
    allv = [v for p in out for v in (*p.scores.values(), p.given_avg) if v is not None]
    if allv and max(allv) <= 1.0:
        raise UhdProfileError(
            f"{path}: every score is <= 1: these look like fractions; write scores on the 0-100 scale (0.452 -> 45.2)"
        )
    seen: dict[tuple, str] = {}
    for p in out:
        k = tuple(p.key[c] for c in KEY_COLUMNS)
        if k in seen:
            raise UhdProfileError(f"{p.where}: same key as {seen[k]} ({_key_text(p.key)}); one row per variant")
        seen[k] = p.where
    return out


def _model_args_tie(model_args) -> str | None:
    if isinstance(model_args, dict):
        v = model_args.get("uhd_variant")
        return None if v is None else str(v)
    if isinstance(model_args, str):
        for part in model_args.split(","):
            k, sep, v = part.partition("=")
            if sep and k.strip() == "uhd_variant":
                return v.strip()
    return None


def _read_lmms(path: Path, tie: str | None, problems: list[str]) -> list[_Partial]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UhdProfileError(f"{path}: not a UTF-8 text file; expected the results JSON lmms-eval writes") from None
    except json.JSONDecodeError as exc:
        raise UhdProfileError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
        raise UhdProfileError(
            f'{path}: no "results" object; expected the <date>_results.json that lmms-eval writes '
            '(results -> task -> "metric,filter": value)'
        )
    results = data["results"]
    config: dict = data["config"] if isinstance(data.get("config"), dict) else {}
    inside = _model_args_tie(config.get("model_args"))
    if tie is not None and inside is not None and tie.strip() != inside:
        raise UhdProfileError(f"{path}: tied to {tie!r} on the command line but model_args says uhd_variant={inside}; give one")
    chosen = tie if tie is not None else inside
    if chosen is None:
        raise UhdProfileError(
            f"{path}: lmms-eval results name no uhd-profile variant; give {path}=VARIANT_ID "
            "(or a design: v4, baseline, avg-pool@6), or add uhd_variant=... to lmms-eval's --model_args"
        )
    key = _parse_tie(str(path), chosen)
    scores: dict[str, float] = {}
    used: list[str] = []
    tasks = {t for t in results if isinstance(results[t], dict)}
    for bench, (task, metrics, filters, scale) in LMMS_TASKS.items():
        if task not in results:
            continue
        entry = results[task]
        if not isinstance(entry, dict):
            raise UhdProfileError(f'{path}: results.{task} is not an object of "metric,filter": value')
        picked: list[tuple[str, float]] = []
        for metric in metrics:
            for flt in filters:
                k = f"{metric},{flt}"
                if k in entry:
                    picked.append((k, entry[k]))
                    break
        need = len(metrics) if bench in _ALL_OF else 1
        if len(picked) < need:
            want = (
                " + ".join(f"{m},{filters[0]}" for m in metrics)
                if bench in _ALL_OF
                else " or ".join(f"{m},{filters[0]}" for m in metrics)
            )
            have = ", ".join(k for k in entry if "," in k and "_stderr" not in k) or "none"
            problems.append(f"{path}: results.{task} lacks {want} (has: {have}); {BENCHMARK_NAMES[bench]} left empty")
            continue
        picked = picked[:need]
        vals = []
        for k, raw in picked:
            if not isinstance(raw, (int, float)) or isinstance(raw, bool) or not math.isfinite(raw):
                raise UhdProfileError(f"{path}: results.{task}[{k!r}] = {raw!r} is not a number")
            v = float(raw) * scale
            if scale == 100.0 and not 0 <= raw <= 1:
                raise UhdProfileError(
                    f"{path}: results.{task}[{k!r}] = {raw!r} is not a fraction 0-1, which is how "
                    f"lmms-eval reports {k.split(',')[0]}"
                )
            if scale == 1.0 and not (1 < raw <= 100 or raw == 0):
                raise UhdProfileError(
                    f"{path}: results.{task}[{k!r}] = {raw!r} is not a percentage 0-100, which is how "
                    f"lmms-eval reports {k.split(',')[0]} (a fraction here means another lmms-eval "
                    "version: convert the file to a CSV on the 0-100 scale)"
                )
            vals.append(v)
        scores[bench] = sum(vals) / len(vals)
        used.append(f"{bench}={task}:{'+'.join(k for k, _ in picked)}" + ("x100" if scale == 100.0 else ""))
        tasks.discard(task)
    if tasks:
        problems.append(f"{path}: task(s) {', '.join(sorted(tasks))} are not among the eight benchmarks; ignored")
    if not scores:
        raise UhdProfileError(
            f"{path}: none of the eight benchmarks' tasks ({', '.join(t for t, *_ in LMMS_TASKS.values())}) has a score here"
        )
    return [_Partial(key, scores, None, str(path), metrics="; ".join(used))]


def _key_text(key: dict) -> str:
    return ", ".join(f"{k}={key[k]}" for k in KEY_COLUMNS if key.get(k) is not None) or "any"


def _split_tie(item: str | os.PathLike) -> tuple[Path, str | None]:
    s = os.fspath(item)
    if os.path.exists(s) or "=" not in s:
        return Path(s), None
    path, _, tie = s.rpartition("=")
    return Path(path), tie


def _typed(df: pd.DataFrame, extra: Sequence[str]) -> pd.DataFrame:
    cols = [*KEY_COLUMNS, *BENCHMARKS, "avg", "avg_from", *extra, "label", "source"]
    for c in cols:
        if c not in df.columns:
            df[c] = None
    rest = [c for c in df.columns if c not in cols]
    df = df[cols + rest]
    types = dict.fromkeys((*KEY_COLUMNS, "avg_from", "label", "source"), "string")
    types["depth"] = "Int64"
    types.update(dict.fromkeys((*BENCHMARKS, "avg", *extra), "Float64"))
    for c in rest:
        types[c] = "Float64" if c == "reported_gflops" else "string"
    return df.astype(types)


def read_quality(paths: Iterable[str | os.PathLike]) -> tuple[pd.DataFrame, list[str]]:
    """Read score files (CSV, or lmms-eval results JSON tied to a variant; see the module
    docstring) into one DataFrame, and the list of problems that did not stop the reading.

    ``paths``: file paths; a results JSON may be given as ``"PATH=TIE"``. Returns
    ``(scores, problems)``: ``scores`` has the `KEY_COLUMNS` (NA = matches anything), the eight
    `BENCHMARKS` and ``avg`` (0-100, NA where missing), ``avg_from`` (``given``, ``computed`` from
    all eight, or NA), any extra CSV score columns, ``label``, ``source`` (``file:line`` or file,
    ``"; "``-joined when rows merged) and ``lmms_metrics`` (which lmms-eval metric gave each
    score). ``problems``: one line each, naming the file (ignored tasks, missing metrics, an
    average that disagrees with its scores, an average not computed). A bad file, a conflicting
    duplicate or a results file tied to nothing raises `UhdProfileError` (one line).
    """
    items = list(paths)
    if not items:
        raise UhdProfileError("no quality files given; pass CSV files or lmms-eval results JSON (PATH=VARIANT_ID)")
    problems: list[str] = []
    parts: list[_Partial] = []
    for item in items:
        path, tie = _split_tie(item)
        if not path.is_file():
            raise UhdProfileError(
                f"{path}: no such file (quality files are CSV, or lmms-eval results JSON given as PATH=VARIANT_ID)"
            )
        suffix = path.suffix.lower()
        if suffix == ".csv":
            if tie is not None:
                raise UhdProfileError(
                    f"{item}: =TIE applies to lmms-eval results JSON; a CSV names its variants in its key columns"
                )
            parts.extend(_read_csv(path, problems))
        elif suffix == ".json":
            parts.extend(_read_lmms(path, tie, problems))
        else:
            raise UhdProfileError(
                f"{path}: unknown kind of quality file {suffix or '(no extension)'!r}; valid: .csv, .json (lmms-eval results)"
            )
    merged: dict[tuple, dict] = {}
    extras: list[str] = []
    for p in parts:
        k = tuple(p.key[c] for c in KEY_COLUMNS)
        row = merged.setdefault(
            k,
            {
                **p.key,
                "_scores": {},
                "_where": {},
                "_avg": None,
                "_avg_where": None,
                "label": None,
                "note": None,
                "_sources": [],
                "_metrics": [],
            },
        )
        for col, v in p.scores.items():
            if col not in BENCHMARKS and col not in extras:
                extras.append(col)
            if col in row["_scores"] and not math.isclose(row["_scores"][col], v, abs_tol=1e-9):
                raise UhdProfileError(
                    f"{_key_text(p.key)}: {BENCHMARK_NAMES.get(col, col)} is {row['_scores'][col]:g} in "
                    f"{row['_where'][col]} but {v:g} in {p.where}; keep one"
                )
            row["_scores"][col] = v
            row["_where"].setdefault(col, p.where)
        if p.given_avg is not None:
            if row["_avg"] is not None and not math.isclose(row["_avg"], p.given_avg, abs_tol=1e-9):
                raise UhdProfileError(
                    f"{_key_text(p.key)}: avg is {row['_avg']:g} in {row['_avg_where']} but "
                    f"{p.given_avg:g} in {p.where}; keep one"
                )
            row["_avg"], row["_avg_where"] = p.given_avg, p.where
        row["label"] = row["label"] or p.label
        row["_sources"].append(p.where)
        if p.metrics:
            row["_metrics"].append(p.metrics)
    out = []
    for row in merged.values():
        sc = row["_scores"]
        all8 = all(b in sc for b in BENCHMARKS)
        mean = sum(sc[b] for b in BENCHMARKS) / len(BENCHMARKS) if all8 else None
        if row["_avg"] is not None:
            avg, avg_from = row["_avg"], "given"
            if mean is not None and abs(mean - avg) > ROUNDING:
                problems.append(
                    f"{row['_avg_where']}: avg {avg:g} differs from the mean of the eight scores ({mean:.2f}); kept as given"
                )
        elif mean is not None:
            avg, avg_from = mean, "computed"
        else:
            avg, avg_from = None, None
            if any(b in sc for b in BENCHMARKS):
                missing = [BENCHMARK_NAMES[b] for b in BENCHMARKS if b not in sc]
                problems.append(
                    f"{'; '.join(dict.fromkeys(row['_sources']))}: {_key_text(row)}: avg not computed, "
                    f"{len(missing)} of the eight benchmarks missing ({', '.join(missing)})"
                )
        out.append(
            {
                **{c: row[c] for c in KEY_COLUMNS},
                **{c: sc.get(c) for c in (*BENCHMARKS, *extras)},
                "avg": avg,
                "avg_from": avg_from,
                "label": row["label"],
                "source": "; ".join(dict.fromkeys(row["_sources"])),
                "lmms_metrics": " | ".join(row["_metrics"]) or None,
            }
        )
    return _typed(pd.DataFrame(out), extras), problems


# =============================================================================================
# Joins and fronts
# =============================================================================================


def _score_columns(q: pd.DataFrame) -> list[str]:
    skip = {*KEY_COLUMNS, "avg_from", "label", "source", "lmms_metrics", "notes", "flops_variant_id", "reported_gflops"}
    return [c for c in q.columns if c not in skip]


def join_quality(run_df: pd.DataFrame, quality_df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Attach scores to run points.

    ``run_df``: ``uhd_profile.load(run_dir)`` (only ``variant_id``, ``encoder``, ``compressor``,
    ``depth``, ``encoding`` are read; a null compressor is the post-ViT baseline).
    ``quality_df``: `read_quality`'s or `paper_quality`'s DataFrame. A quality row matches a run
    point when every key it sets equals the point's. Returns ``(joined, missing)``:

    * ``joined``: the matched run points (all their columns, original order and index) plus the
      score columns and ``quality_source``. A point matched by several quality rows takes the
      scores of all of them; the same score with different values is an error naming both sources.
    * ``missing``: one row per quality row that matched no run point (``kind`` =
      ``"quality-without-run"``, its key and ``source``) and per run point without any score
      (``kind`` = ``"run-without-quality"``, its key).
    """
    need = [c for c in KEY_COLUMNS if quality_df[c].notna().any()] + ["variant_id"]
    absent = [c for c in dict.fromkeys(need) if c not in run_df.columns]
    if absent:
        raise UhdProfileError(
            f"the run's DataFrame lacks {', '.join(absent)}; join_quality keys on "
            f"{', '.join(KEY_COLUMNS)} (pass uhd_profile.load(run_dir))"
        )
    run_keys = pd.DataFrame(index=run_df.index)
    for c in KEY_COLUMNS:
        if c in run_df.columns:
            run_keys[c] = run_df[c].astype("string") if c != "depth" else run_df[c].astype("Int64")
    if "compressor" in run_keys:
        run_keys["compressor"] = run_keys["compressor"].fillna("none")
    scores = _score_columns(quality_df)
    matched_by: dict = {i: [] for i in run_df.index}
    missing_rows = []
    for qi, q in quality_df.iterrows():
        mask = pd.Series(True, index=run_df.index)
        for c in KEY_COLUMNS:
            if pd.notna(q[c]):
                mask &= (run_keys[c] == q[c]).fillna(False)
        hits = list(run_df.index[mask])
        if not hits:
            missing_rows.append({"kind": "quality-without-run", **{c: q[c] for c in KEY_COLUMNS}, "source": q["source"]})
        for i in hits:
            matched_by[i].append(qi)
    joined_rows, joined_index = [], []
    for i, qis in matched_by.items():
        if not qis:
            r = run_df.loc[i]
            missing_rows.append(
                {
                    "kind": "run-without-quality",
                    **{c: (r[c] if c in run_df.columns else None) for c in KEY_COLUMNS},
                    "source": None,
                }
            )
            continue
        got: dict = {}
        where: dict = {}
        for qi in qis:
            q = quality_df.loc[qi]
            for c in scores:
                v = q[c]
                if pd.isna(v):
                    continue
                if c in got and not math.isclose(float(got[c]), float(v), abs_tol=1e-9):
                    raise UhdProfileError(
                        f"{run_df.loc[i, 'variant_id']}: {BENCHMARK_NAMES.get(c, c)} is {got[c]:g} "
                        f"from {where[c]} but {float(v):g} from {q['source']}; keep one"
                    )
                got[c], where[c] = float(v), q["source"]
        joined_rows.append({**got, "quality_source": "; ".join(dict.fromkeys(quality_df.loc[qi, "source"] for qi in qis))})
        joined_index.append(i)
    add = pd.DataFrame(joined_rows, index=joined_index, columns=[*scores, "quality_source"])
    for c in scores:
        add[c] = add[c].astype("Float64")
    add["quality_source"] = add["quality_source"].astype("string")
    joined = pd.concat([run_df.loc[joined_index], add], axis=1)
    missing = pd.DataFrame(missing_rows, columns=["kind", *KEY_COLUMNS, "source"]).astype(
        {
            "kind": "string",
            "variant_id": "string",
            "encoder": "string",
            "compressor": "string",
            "depth": "Int64",
            "encoding": "string",
            "source": "string",
        }
    )
    return joined, missing


def quality_front(df: pd.DataFrame, cost_col: str, score_col: str) -> pd.DataFrame:
    """Mark the Pareto-optimal points of quality (``score_col``, higher is better) against cost
    (``cost_col``, lower is better).

    Returns a copy of ``df`` with ``pareto`` (boolean: no other point is at least as good on both
    axes and strictly better on one; NA where the cost or the score is missing) and
    ``dominated_by`` (for a dominated point, the index label of the cheapest point on the front
    that dominates it, ties to the higher score; NA otherwise). Equal points do not dominate each
    other: both are on the front.
    """
    for c in (cost_col, score_col):
        if c not in df.columns:
            raise UhdProfileError(f"column {c!r} is not in the DataFrame; columns: {', '.join(map(str, df.columns))}")
    try:
        cost = pd.to_numeric(df[cost_col], errors="raise").astype("Float64")
        score = pd.to_numeric(df[score_col], errors="raise").astype("Float64")
    except (ValueError, TypeError):
        raise UhdProfileError(f"columns {cost_col!r} and {score_col!r} must be numeric") from None
    ok = [i for i in df.index if pd.notna(cost[i]) and pd.notna(score[i])]
    valid = set(ok)

    def dominates(a, b) -> bool:
        return (cost[a] <= cost[b] and score[a] >= score[b]) and (cost[a] < cost[b] or score[a] > score[b])

    front = {i for i in ok if not any(dominates(j, i) for j in ok if j != i)}
    out = df.copy()
    out["pareto"] = pd.array([(i in front) if i in valid else pd.NA for i in df.index], dtype="boolean")
    dom: list[Any] = []
    for i in df.index:
        if i in front or i not in valid:
            dom.append(None)
            continue
        # sorted() is stable: among equally good dominators the first in df's order wins
        best = sorted((j for j in ok if j in front and dominates(j, i)), key=lambda j: (float(cost[j]), -float(score[j])))
        dom.append(best[0])
    out["dominated_by"] = pd.Series(dom, index=df.index, dtype="object")
    return out
