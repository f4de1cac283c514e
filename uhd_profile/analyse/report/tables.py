"""The report's tables: pure functions, a run's DataFrame (``uhd_profile.load``) in, a DataFrame out.

Every number comes from the run's records or from running the FLOPs counter (on ``meta``: shapes
only); the paper's printed numbers appear only as the reference column.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from uhd_profile.analyse.quality import BENCHMARKS, quality_front
from uhd_profile.analyse.report.format import (
    CATEGORIES,
    FIGURE_CONVENTION,
    PAPER_ENCODER,
    PAPER_SIZE,
    count_column,
    isna,
    resolution_label,
    variant_label,
)
from uhd_profile.count.flops import ZERO, Cost, FlopCount, count_flops
from uhd_profile.count.paper import PAPER_FIGURES, PAPER_REDUCTION, REL_TOL
from uhd_profile.measure.env import fingerprint_key
from uhd_profile.model.variants import V4_COMPRESSOR, V4_DEPTH, VariantSpec

#: a measured point whose throughput (flops / median latency) is this many times below the median
#: of its peers (same device, dtype, encoder, batch; at least 3 points; of a pair, the other point)
#: is flagged a slow outlier: a steady slowdown from outside the process (another job, a throttled
#: or shared host) that the sample spread cannot show, because it lasts the whole measurement
SLOW_OUTLIER_FACTOR = 3.0


def slow_outliers(df: pd.DataFrame) -> pd.Series:
    """Per row: the throughput of the row's peers' median over its own (> ``SLOW_OUTLIER_FACTOR``
    flags it), NaN where not measured or alone. Of two points (the headline pair a CPU run
    measures), each is compared with the other: the median of two would hide a 3x gap."""
    out = pd.Series(float("nan"), index=df.index, dtype="float64")
    m = df[(df["status"] == "ok") & df["latency_median_s"].notna() & df["flops"].notna()]
    if not len(m):
        return out
    tput = m["flops"].astype(float) / (m["latency_median_s"].astype(float) * m["batch"].astype(float).clip(lower=1))
    for _, g in m.groupby(["device", "dtype", "encoder", "batch"], sort=False):
        if len(g) >= 3:
            med = tput[g.index].median()
            out[g.index] = med / tput[g.index]
        elif len(g) == 2:
            a, b = g.index
            out[a], out[b] = tput[b] / tput[a], tput[a] / tput[b]
    return out


def prepare(df: pd.DataFrame) -> pd.DataFrame:
    """The store's DataFrame plus ``label`` (short variant name), ``compressor`` with ``none`` for
    the post-ViT baseline, ``slowdown`` (``slow_outliers``), and ``flagged``/``flag_reason``: a
    latency that is noisy (the timing probe's ``noise_flag`` is not ``ok``), throttled
    (``throttled_fraction`` > 0) or a slow outlier (``slowdown`` > ``SLOW_OUTLIER_FACTOR``)."""
    d = df.copy()
    d["compressor"] = d["compressor"].fillna("none")
    d["label"] = [variant_label(r) for _, r in d.iterrows()] if len(d) else pd.Series(dtype="string")
    d["slowdown"] = slow_outliers(d)
    noisy = d["noise_flag"].notna() & (d["noise_flag"].fillna("ok") != "ok")
    throttled = d["throttled_fraction"].fillna(0).astype(float) > 0
    slow = d["slowdown"].fillna(0) > SLOW_OUTLIER_FACTOR
    # the time limit stopped it before the stop rule's minimum sample count: its spread says little
    few = d["latency_unmet"].fillna("").astype(str).str.contains("min_samples", regex=False)
    d["flagged"] = (noisy | throttled | slow | few).astype(bool)
    reasons = []
    for n, t, sl, fw, flag, frac, k, count in zip(
        noisy, throttled, slow, few, d["noise_flag"], d["throttled_fraction"], d["slowdown"], d["latency_n"]
    ):
        r = []
        if fw:
            r.append(f"too few samples ({int(count) if not pd.isna(count) else 0}: the time limit came first)")
        if n:
            r.append(str(flag))
        if t:
            r.append(f"throttled {float(frac):.0%} of the time")
        if sl:
            r.append(f"slow outlier: {float(k):.1f}x below its peers' median throughput")
        reasons.append(", ".join(r))
    d["flag_reason"] = pd.Series(reasons, index=d.index, dtype="string")
    return d


def _prepared(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` as ``prepare`` makes it (unchanged when it already is)."""
    return df if "label" in df else prepare(df)


def _table(d: pd.DataFrame, cols: list[str], sort: list[str] | None = None, **new: Any) -> pd.DataFrame:
    """The columns ``cols`` of ``d`` after ``d.assign(**new)`` (callables of the rows) and, with
    ``sort``, ``sort_values(sort)``, renumbered; an empty table of ``cols`` when ``d`` has no rows."""
    if not len(d):
        return pd.DataFrame(columns=cols)
    d = d.assign(**new)
    if sort is not None:
        d = d.sort_values(sort)
    return d[cols].reset_index(drop=True)


def ok_rows(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["status"] == "ok"]


def counted_rows(df: pd.DataFrame) -> pd.DataFrame:
    """One row per distinct counted configuration (counts do not depend on device or dtype)."""
    d = ok_rows(df)
    d = d[d["paper_flops"].notna()]
    return d.drop_duplicates(subset=["variant_id", "encoding", "batch"], keep="first")


def measured_rows(df: pd.DataFrame) -> pd.DataFrame:
    d = ok_rows(df)
    return d[d["latency_median_s"].notna()]


_GEOM = ["encoder", "height_px", "width_px", "encoding", "packing", "max_slices", "scale_resolution_px", "post_ratio", "batch"]


def _v4_depth(df: pd.DataFrame) -> int | None:
    depths = sorted({int(x) for x in df.loc[df["compressor"] == V4_COMPRESSOR, "depth"].dropna()})
    if not depths:
        return None
    return V4_DEPTH if V4_DEPTH in depths else min(depths, key=lambda k: (abs(k - V4_DEPTH), k))


def _pairs(d: pd.DataFrame, keys: list[str], depth: int) -> list[tuple[pd.Series, pd.Series]]:
    keys = [k for k in keys if k in d.columns]  # slicing columns are absent from older stores
    base = d[d["compressor"] == "none"]
    v4 = d[(d["compressor"] == V4_COMPRESSOR) & (d["depth"] == depth)]
    out = []
    for _, b in base.iterrows():
        m = v4
        for k in keys:
            m = m[m[k] == b[k]]
        if len(m):
            out.append((b, m.iloc[0]))
    return out


def _paper_geometry_first(pair: tuple[pd.Series, pd.Series]) -> tuple:
    b = pair[0]
    paper = b["encoder"] == PAPER_ENCODER and (int(b["height_px"]), int(b["width_px"])) == PAPER_SIZE
    return (
        not paper,
        b["encoding"] != "view",
        int(b["post_ratio"]) != 1,
        int(b["batch"]) != 1,
        -int(b["height_px"]) * int(b["width_px"]),
    )


def is_paper_geometry(row: Any) -> bool:
    """The paper's figures' setting: so400m/14, one 980 px view, the ViT alone, batch 1."""
    return (
        row["encoder"] == PAPER_ENCODER
        and (int(row["height_px"]), int(row["width_px"])) == PAPER_SIZE
        and row["encoding"] == "view"
        and int(row["post_ratio"]) == 1
        and int(row["batch"]) == 1
    )


def headline_pairs(df: pd.DataFrame) -> dict:
    """The baseline/v4 pairs the headline compares (rows of ``prepare(df)``): ``flops`` at the same
    encoder/resolution/encoding/post-ratio/batch, preferring the paper's geometry (so400m/14, 980 px,
    the ViT alone), else the largest resolution; ``latency``: one pair per device and dtype, at
    the largest measured resolution; ``depth``: v4's compressor depth used (6 unless the run holds
    another depth only)."""
    d = ok_rows(df)
    depth = _v4_depth(d)
    res: dict = {"depth": depth, "flops": None, "flops_at_latency": [], "latency": []}
    if depth is None:
        return res
    counted = d[d["paper_flops"].notna()]
    pairs = sorted(_pairs(counted, _GEOM, depth), key=_paper_geometry_first)
    if pairs:
        res["flops"] = pairs[0]
    lat_pairs = _pairs(d[d["latency_median_s"].notna()], _GEOM + ["device", "dtype"], depth)
    best: dict = {}
    for b, v in lat_pairs:
        key = (b["device"], b["dtype"])
        if key not in best or _paper_geometry_first((b, v))[1:] < _paper_geometry_first(best[key])[1:]:
            best[key] = (b, v)
    res["latency"] = list(best.values())
    return res


def _count_rows(b: pd.Series, v: pd.Series, suffix: str, paper_ref: bool) -> list[dict]:
    rows = []
    for conv, what in (("paper", "visual-encoding FLOPs per view"), ("macs", "visual-encoding MACs per view, as executed")):
        col = count_column(conv)
        if isna(b[col]) or isna(v[col]):
            continue
        rows.append(
            {
                "quantity": what + suffix,
                "convention": conv,
                "resolution": resolution_label(b),
                "encoder": b["encoder"],
                "device": "counted",
                "baseline": int(b[col]),
                "v4": int(v[col]),
                "reduction": 1 - int(v[col]) / int(b[col]),
                "paper_reduction": PAPER_REDUCTION if paper_ref and conv == "paper" else None,
                "flagged": False,
                "note": f"{b['variant_id']} vs {v['variant_id']}",
            }
        )
    return rows


def headline(df: pd.DataFrame) -> pd.DataFrame:
    """The headline table: baseline vs v4, one row per quantity, raw SI numbers.

    Columns: quantity, convention (paper / macs / seconds), resolution, encoder, device, baseline,
    v4, reduction (1 - v4/baseline), paper_reduction (the paper's 55.8%, on the paper-convention
    row of the counted pair), flagged (a noisy, throttled or slow-outlier latency), note."""
    d = _prepared(df)
    hp = headline_pairs(d)
    rows = []
    if hp["flops"] is not None:
        fb, fv = hp["flops"]
        rows += _count_rows(fb, fv, "", paper_ref=is_paper_geometry(fb))
    for b, v in hp["latency"]:
        if hp["flops"] is None or resolution_label(b) != resolution_label(hp["flops"][0]):
            rows += _count_rows(b, v, " (at the measured resolution)", paper_ref=False)
        bl, vl = float(b["latency_median_s"]), float(v["latency_median_s"])
        thr = None if isna(b["threads"]) else int(b["threads"])
        rows.append(
            {
                "quantity": "latency, median of forward passes",
                "convention": "seconds",
                "resolution": resolution_label(b),
                "encoder": b["encoder"],
                "device": f"{b['device']} ({b['dtype']}, batch {int(b['batch'])}" + (f", {thr} threads" if thr else "") + ")",
                "baseline": bl,
                "v4": vl,
                "reduction": 1 - vl / bl,
                "paper_reduction": None,
                "flagged": bool(b["flagged"] or v["flagged"]),
                "note": "; ".join(f"{n}: {r}" for n, r in (("baseline", b["flag_reason"]), ("v4", v["flag_reason"])) if r),
            }
        )
    cols = [
        "quantity",
        "convention",
        "resolution",
        "encoder",
        "device",
        "baseline",
        "v4",
        "reduction",
        "paper_reduction",
        "flagged",
        "note",
    ]
    return pd.DataFrame(rows, columns=cols)


_COUNT_CACHE: dict[str, FlopCount] = {}


def _count(spec: VariantSpec) -> FlopCount:
    """``count_flops`` of a spec, memoised per process (a count is a pure function of the spec)."""
    if spec.id not in _COUNT_CACHE:
        _COUNT_CACHE[spec.id] = count_flops(spec)
    return _COUNT_CACHE[spec.id]


def reproduction_table(df: pd.DataFrame, recount: bool = True) -> pd.DataFrame:
    """Every figure the paper prints (``PAPER_FIGURES``) next to the count: from the run's record of
    that configuration (batch 1) when it holds one, else recounted with ``count_flops`` (``recount``)
    or left empty. ``rel_err`` = (counted - paper) / paper; ``ok`` when |rel_err| <= 0.1%."""
    d = ok_rows(df)
    d = d[d["paper_flops"].notna() & (d["batch"] == 1)]
    by_id = {r["variant_id"]: r for _, r in d.iterrows()}
    rows = []
    for fig in PAPER_FIGURES:
        spec = fig.spec()
        rec = by_id.get(spec.id)
        if rec is not None:
            counted, executed, source = int(rec["paper_flops"]), (None if isna(rec["macs"]) else int(rec["macs"])), "run"
        elif recount:
            total = _count(spec).total
            counted, executed, source = total.paper, total.macs, "recounted"
        else:
            counted, executed, source = None, None, "not in run"
        paper = fig.paper_gflops * 1e9
        rel = None if counted is None else (counted - paper) / paper
        rows.append(
            {
                "figure": fig.figure,
                "variant_id": spec.id,
                "paper_flops": paper,
                "counted_paper_flops": counted,
                "rel_err": rel,
                "ok": None if rel is None else abs(rel) <= REL_TOL,
                "executed_macs": executed,
                "source": source,
            }
        )
    return pd.DataFrame(rows)


def pareto_front(x, y) -> list[bool]:
    """Which points no other point beats on both ``x`` and ``y`` (lower is better on both)."""
    pts = list(zip(map(float, x), map(float, y)))
    out = []
    for i, (xi, yi) in enumerate(pts):
        dominated = any((xj <= xi and yj <= yi) and (xj < xi or yj < yi) for j, (xj, yj) in enumerate(pts) if j != i)
        out.append(not dominated)
    return out


def _setting(row: Any, with_device: bool) -> str:
    s = f"{row['encoder']} {resolution_label(row)}"
    if row["encoding"] != "view":
        s += f" {row['encoding']}"
    if int(row["batch"]) != 1:
        s += f" batch {int(row['batch'])}"
    if with_device:
        s += f" | {row['device']} {row['dtype']}"
    return s


MAX_PANELS = 4  # above this many settings, a Pareto figure gets one panel per encoder instead


def pareto_table(df: pd.DataFrame, y: str, convention: str = FIGURE_CONVENTION) -> pd.DataFrame:
    """Points for a FLOPs-vs-``y`` Pareto plot (``y`` = ``latency_median_s`` or ``tokens_llm``):
    single-view points only (global/sliced encodings have their own section), one row each, with its
    ``setting`` (encoder, resolution, encoding, batch, and device/dtype for latency: each setting has
    its own front), the ``panel`` it is drawn in and ``on_front``."""
    d = _prepared(df)
    col = count_column(convention)
    if y == "latency_median_s":
        d = measured_rows(d)
        with_device = True
    else:
        d = counted_rows(d)
        with_device = False
    d = d[d[col].notna() & d[y].notna() & (d["encoding"] == "view")]
    cols = [
        "panel",
        "setting",
        "label",
        "variant_id",
        "compressor",
        "depth",
        "post_ratio",
        "height_px",
        "width_px",
        col,
        y,
        "flagged",
        "flag_reason",
        "on_front",
    ]
    if not len(d):
        return pd.DataFrame(columns=cols)
    d = d.assign(setting=[_setting(r, with_device) for _, r in d.iterrows()])
    if d["setting"].nunique() <= MAX_PANELS:
        d["panel"] = d["setting"]
    else:
        d["panel"] = [_setting(r, with_device).replace(f" {resolution_label(r)}", "") for _, r in d.iterrows()]
        d["label"] = [f"{lab} {resolution_label(r)}" for lab, (_, r) in zip(d["label"], d.iterrows())]
    d["on_front"] = False
    for _, g in d.groupby("setting", sort=False):
        d.loc[g.index, "on_front"] = pareto_front(g[col], g[y])
    return d[cols].reset_index(drop=True)


_LATENCY_COLUMNS = ["latency_median_s", "device", "dtype", "flagged", "flag_reason", "variant_id"]
"""The last columns of the depth and encoding tables: a point's latency, where it ran, its flag, its id."""


def depth_table(df: pd.DataFrame, convention: str = FIGURE_CONVENTION) -> pd.DataFrame:
    """Rows of every (setting, compressor) series the run holds at two depths or more, plus the
    baselines (``compressor`` none, depth empty) of the same settings: depth, FLOPs, latency."""
    d = _prepared(df)
    d = ok_rows(d)
    col = count_column(convention)
    cols = [
        "series",
        "setting",
        "compressor",
        "depth",
        col,
        *_LATENCY_COLUMNS,
    ]
    d = d[d[col].notna()]
    if not len(d):
        return pd.DataFrame(columns=cols)
    d = d.assign(setting=[_setting(r, False) + f" post{int(r['post_ratio'])}" for _, r in d.iterrows()])
    keep = []
    for _, g in d[d["compressor"] != "none"].groupby(["setting", "compressor"], sort=False):
        if g["depth"].nunique() >= 2:
            keep.append(g)
    if not keep:
        return pd.DataFrame(columns=cols)
    series = pd.concat(keep)
    base = d[(d["compressor"] == "none") & d["setting"].isin(series["setting"].unique())]
    out = pd.concat([series, base])
    out = out.assign(series=[f"{r['compressor']} | {r['setting']}" for _, r in out.iterrows()])
    return out.sort_values(["setting", "compressor", "depth"], na_position="first")[cols].reset_index(drop=True)


def encoding_table(df: pd.DataFrame, convention: str = FIGURE_CONVENTION) -> pd.DataFrame:
    """Global vs sliced encoding rows (column ``encoding``): cost vs the input image size."""
    d = _prepared(df)
    d = ok_rows(d)
    d = d[d["encoding"].isin(["global", "sliced"])]
    col = count_column(convention)
    cols = [
        "encoding",
        "packing",
        "label",
        "compressor",
        "encoder",
        "height_px",
        "width_px",
        "aspect",
        "megapixels",
        col,
        "macs",
        "tokens_in",
        "tokens_llm",
        *_LATENCY_COLUMNS,
    ]
    return _table(
        d,
        cols,
        ["encoding", "label", "aspect", "megapixels"],
        megapixels=lambda t: t["height_px"].astype(float) * t["width_px"].astype(float) / 1e6,
        aspect=lambda t: [_aspect(int(w), int(h)) for h, w in zip(t["height_px"], t["width_px"])],
    )


def _aspect(w: int, h: int) -> str:
    """W:H in lowest terms when they are small (16:9), else W/H to 2 decimals."""
    g = math.gcd(w, h)
    a, b = w // g, h // g
    return f"{a}:{b}" if max(a, b) <= 32 else f"{w / h:.2f}:1"


def measurement_table(df: pd.DataFrame) -> pd.DataFrame:
    """Every measured point: latency spread, noise flag, stop rule, throttling, environment key."""
    d = _prepared(df)
    d = measured_rows(d)
    cols = [
        "label",
        "resolution",
        "device",
        "dtype",
        "latency_median_s",
        "latency_p10_s",
        "latency_p90_s",
        "latency_iqr_over_median",
        "latency_n",
        "stop_reason",
        "noise_flag",
        "throttled_fraction",
        "throughput_flops_per_s",
        "slowdown",
        "flagged",
        "flag_reason",
        "env_key",
        "variant_id",
    ]
    return _table(
        d,
        cols,
        resolution=lambda t: [resolution_label(r) for _, r in t.iterrows()],
        throughput_flops_per_s=lambda t: (
            t["flops"].astype(float) / (t["latency_median_s"].astype(float) * t["batch"].astype(float).clip(lower=1))
        ),
    )


ENV_FIELDS = (
    "device",
    "cpu_model",
    "cpu_cores_physical",
    "cpu_cores_logical",
    "cpu_affinity",
    "torch_threads",
    "gpu_name",
    "gpu_count",
    "gpu_driver",
    "cuda_runtime",
    "cudnn",
    "ecc_mode",
    "mig_mode",
    "persistence_mode",
    "float32_matmul_precision",
    "tf32_matmul",
    "tf32_cudnn",
    "cudnn_benchmark",
    "torch",
    "transformers",
    "python",
    "platform",
    "uhd_profile_version",
    "git_commit",
    "git_dirty",
    "nvml_error",
)


def env_table(records: list[dict]) -> pd.DataFrame:
    """The environment fingerprints of a run's measured points: one column per distinct fingerprint
    key, one row per field (hostname and timestamps left out)."""
    envs: dict[str, dict] = {}
    counts: dict[str, int] = {}
    for r in records:
        if r.get("status") != "ok" or not r.get("env") or "latency_median_s" not in (r.get("metrics") or {}):
            continue
        key = (r.get("metrics") or {}).get("env_key") or fingerprint_key(r["env"])
        envs.setdefault(key, r["env"])
        counts[key] = counts.get(key, 0) + 1
    if not envs:
        return pd.DataFrame(columns=["field"])
    data = {"field": ["points measured", "fingerprint key"] + list(ENV_FIELDS)}
    for key, env in envs.items():
        data[key] = [str(counts[key]), key] + ["" if env.get(f) is None else str(env.get(f)) for f in ENV_FIELDS]
    return pd.DataFrame(data)


def failures_table(df: pd.DataFrame) -> pd.DataFrame:
    d = df[df["status"] != "ok"]
    return d[["variant_id", "device", "dtype", "status", "error"]].reset_index(drop=True)


#: the FLOPs engine's categories (``uhd_profile.count.flops.CATEGORIES``) as the breakdown groups them
DISPLAY_CATEGORY = {
    "linear": "linear layers",
    "matmul": "attention matmuls",
    "attention": "attention matmuls",
    "attention_scores": "element-wise",
    "elementwise": "element-wise",
}
_BLOCK_NAMES = {"embed": "embedding", "post_norm": "post-norm", "": "other"}


def block_of(path: str) -> str:
    """The breakdown block of a module path: ``layers.3.mlp.fc1`` -> ``layer 3``, ``embed...`` ->
    ``embedding``, ``compressor...`` -> ``compressor``, ``post_norm`` -> ``post-norm``."""
    parts = path.split(".")
    if parts[0] == "layers" and len(parts) > 1 and parts[1].isdigit():
        return f"layer {parts[1]}"
    return _BLOCK_NAMES.get(parts[0], parts[0])


def breakdown(spec: VariantSpec) -> pd.DataFrame:
    """Recount ``spec`` (on ``meta``: shapes only) and attribute every priced op to a block
    (embedding, encoder layer i, compressor, post-norm, connector: ``block_of`` its module path) and
    a category (``CATEGORIES``: the engine's own per-module categories, ``FlopCount.by_category``;
    everything inside the compressor or the connector counts as that block's own category).
    Columns: order (execution), block, category, macs, flops, paper."""
    fc = _count(spec)
    acc: dict[tuple[str, str], Cost] = {}
    order: dict[str, int] = {}
    for (path, cat), cost in fc.by_category.items():
        block = block_of(path)
        order.setdefault(block, len(order))
        key = (block, block if block in ("compressor", "connector") else DISPLAY_CATEGORY[cat])
        acc[key] = acc.get(key, ZERO) + cost
    rows = [
        {"order": order[b], "block": b, "category": cat, "macs": c.macs, "flops": c.flops, "paper": c.paper}
        for (b, cat), c in acc.items()
    ]
    out = pd.DataFrame(rows, columns=["order", "block", "category", "macs", "flops", "paper"])
    return out.sort_values(["order", "category"]).reset_index(drop=True)


def breakdown_summary(parts: dict[str, pd.DataFrame], convention: str = FIGURE_CONVENTION) -> pd.DataFrame:
    """Totals per category for each variant (``{label: breakdown(spec)}``), with each one's share."""
    rows = []
    for label, bd in parts.items():
        tot = bd[convention].sum()
        for cat in CATEGORIES:
            v = int(bd.loc[bd["category"] == cat, convention].sum())
            rows.append({"variant": label, "category": cat, convention: v, "share": v / tot if tot else 0.0})
        rows.append({"variant": label, "category": "total", convention: int(tot), "share": 1.0})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# Quality against cost
# --------------------------------------------------------------------------------------------

QUALITY_COSTS = ("paper_flops", "macs", "latency_median_s")
"""The cost axes quality is drawn against: FLOPs in the paper's convention, MACs as executed, the
measured median latency."""


def _design_spec(compressor: str, depth: Any) -> VariantSpec:
    """The paper's per-slice geometry of a design: so400m/14, one 980 px view, the ViT alone."""
    if compressor in ("none", None) or isna(compressor):
        return VariantSpec(post_ratio=1)
    return VariantSpec(compressor=str(compressor), depth=int(depth), post_ratio=1)


def _latency_by_design(df: pd.DataFrame) -> tuple[str | None, dict[tuple[str, int | None], pd.Series]]:
    """The measured setting (encoder, view size, device, dtype, batch 1, single view) holding the
    most designs, and each design's measured row there; (None, {}) when nothing was measured."""
    m = measured_rows(df)
    m = m[(m["encoding"] == "view") & (m["batch"] == 1)]
    if not len(m):
        return None, {}
    keys = ["encoder", "width_px", "height_px", "device", "dtype", "post_ratio"]
    groups: list[tuple[Any, pd.DataFrame]] = list(m.groupby(keys, sort=False))
    (enc, w, h, dev, dt, _), g = max(groups, key=lambda kv: (len(kv[1]), int(kv[0][1]) * int(kv[0][2])))
    out: dict[tuple[str, int | None], pd.Series] = {}
    for _, r in g.iterrows():
        depth = None if r["compressor"] == "none" or isna(r["depth"]) else int(r["depth"])
        out.setdefault((str(r["compressor"]), depth), r)
    return f"{enc} {resolution_label(g.iloc[0])}, {dev} {dt}", out


def quality_cost_table(df: pd.DataFrame, scores: pd.DataFrame, recount: bool = True) -> pd.DataFrame:
    """Scores per design next to what the design costs, one row per scored design.

    ``scores``: ``analyse.quality.paper_quality()`` (the paper's reported scores) or user scores
    from ``read_quality`` keyed by design (``compressor``/``depth``). Costs: ``paper_flops`` and
    ``macs`` of the design's 980 px, ViT-alone variant (the geometry of the paper's per-slice
    figures) from the run's record, else recounted on meta (``cost_source``), and
    ``latency_median_s`` of the design in the measured setting holding the most designs
    (``latency_setting``; flagged latencies keep their flag). Plus ``design``, ``label``,
    ``avg`` and the benchmarks, ``source`` and ``notes`` of the scores, and ``pareto_*`` /
    ``dominated_*`` per cost axis (``quality_front``: most quality for the least cost)."""
    d = counted_rows(ok_rows(df)) if len(df) else df
    setting, lat = _latency_by_design(df) if len(df) else (None, {})
    rows = []
    for _, s in scores.iterrows():
        comp = "none" if isna(s.get("compressor")) else str(s["compressor"])
        depth = None if comp == "none" or isna(s.get("depth")) else int(s["depth"])
        spec = _design_spec(comp, depth)
        rec = d[d["variant_id"] == spec.id] if len(d) else d
        if len(rec):
            pf, mc, src = int(rec.iloc[0]["paper_flops"]), int(rec.iloc[0]["macs"]), "run"
        elif recount:
            total = _count(spec).total
            pf, mc, src = total.paper, total.macs, "recounted"
        else:
            pf, mc, src = None, None, "not in run"
        lrow = lat.get((comp, depth))
        rows.append(
            {
                "design": "baseline" if comp == "none" else f"{comp}@{depth}",
                "label": s.get("label") if not isna(s.get("label")) else ("post-ViT baseline" if comp == "none" else comp),
                "compressor": comp,
                "depth": depth,
                "variant_id": spec.id,
                "avg": None if isna(s.get("avg")) else float(s["avg"]),
                **{b: (None if isna(s.get(b)) else float(s[b])) for b in BENCHMARKS},
                "reported_gflops": None if isna(s.get("reported_gflops")) else float(s["reported_gflops"]),
                "paper_flops": pf,
                "macs": mc,
                "cost_source": src,
                "latency_median_s": None if lrow is None else float(lrow["latency_median_s"]),
                "latency_setting": setting if lrow is not None else None,
                "flagged": bool(lrow["flagged"]) if lrow is not None else False,
                "source": s.get("source"),
                "notes": None if isna(s.get("notes")) else s.get("notes"),
            }
        )
    cols = [
        "design",
        "label",
        "compressor",
        "depth",
        "variant_id",
        "avg",
        *BENCHMARKS,
        "reported_gflops",
        "paper_flops",
        "macs",
        "cost_source",
        "latency_median_s",
        "latency_setting",
        "flagged",
        "source",
        "notes",
    ]
    out = pd.DataFrame(rows, columns=cols).astype(
        {"depth": "Int64", "paper_flops": "Int64", "macs": "Int64", "avg": "Float64", "latency_median_s": "Float64"}
    )
    for cost in QUALITY_COSTS:
        if out.empty or out[cost].isna().all() or out["avg"].isna().all():
            out[f"pareto_{cost}"] = pd.array([pd.NA] * len(out), dtype="boolean")
            continue
        front = quality_front(out, cost, "avg")
        out[f"pareto_{cost}"] = front["pareto"]
    return out
