"""Reports: a run directory's records -> tables, Pareto fronts, figures, Markdown and self-contained HTML.

The functions below are pure (a DataFrame in, a DataFrame or a matplotlib Figure out) except
``write_report``, the one place that writes files. Every number in a report comes from the run's
records (``uhd_profile.run.store``) or from running the package's own code (the FLOPs counter, on the
``meta`` device: shapes only); the paper's printed numbers appear only as the reference column.

Layout of a report directory::

    report.md, report.html          the report (the HTML embeds every figure: no network needed)
    figures/NAME.png|svg|csv        each figure, and the data drawn in it
    tables/NAME.csv                 each table, raw SI numbers (FLOPs as integers, seconds, bytes)

Sections leave out what the run holds no data for, with a sentence saying so.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from uhd_profile.errors import UhdProfileError
from uhd_profile.count.flops import CONVENTION_HELP, CONVENTIONS
from uhd_profile.count.paper import PAPER_FIGURES, PAPER_REDUCTION, REL_TOL
from uhd_profile.model.variants import V4_COMPRESSOR, V4_DEPTH

FORMATS = ("md", "html")
REPORT_DIR = "report"  # default output, inside the run directory
#: the convention figures are drawn in (the paper's, so the figures read next to its numbers)
FIGURE_CONVENTION = "paper"
PAPER_ENCODER, PAPER_SIZE = "siglip2-so400m-p14", (980, 980)

#: Okabe & Ito (2008), the colour-blind-safe qualitative palette
OKABE_ITO = {
    "black": "#000000", "orange": "#E69F00", "sky": "#56B4E9", "green": "#009E73",
    "yellow": "#F0E442", "blue": "#0072B2", "vermillion": "#D55E00", "purple": "#CC79A7",
}
#: compressor -> (colour, marker): colour and shape both tell designs apart
STYLE = {
    "none": (OKABE_ITO["black"], "s"),
    "avg-pool": (OKABE_ITO["sky"], "v"),
    "pixel-unshuffle-mlp": (OKABE_ITO["green"], "^"),
    "reused-mlp": (OKABE_ITO["blue"], "<"),
    "cross-attn-topleft": (OKABE_ITO["orange"], ">"),
    "cross-attn-mean": (OKABE_ITO["purple"], "D"),
    "window-attn-mlp": ("#B8A800", "P"),  # Okabe-Ito yellow, darkened to read on white
    V4_COMPRESSOR: (OKABE_ITO["vermillion"], "o"),
}
CATEGORY_COLOURS = {
    "attention matmuls": OKABE_ITO["blue"], "linear layers": OKABE_ITO["sky"], "element-wise": OKABE_ITO["yellow"],
    "compressor": OKABE_ITO["vermillion"], "connector": OKABE_ITO["purple"],
}
CATEGORIES = tuple(CATEGORY_COLOURS)
FLAG_MARK = "⚠"
MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::convolution", "aten::_convolution")


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def _isna(x: Any) -> bool:
    return x is None or x is pd.NA or (isinstance(x, float) and math.isnan(x))


def _unit(convention: str) -> str:
    return "MACs" if convention == "macs" else "FLOPs"


def _col(convention: str) -> str:
    return "paper_flops" if convention == "paper" else convention


def fmt_count(x: Any, convention: str = "paper", digits: int | None = None) -> str:
    """A FLOP/MAC count for a table: G (1e9) above 1e9, else M (1e6)."""
    if _isna(x):
        return "n/a"
    x = float(x)
    if x == 0:
        return "0"
    unit = _unit(convention)
    if abs(x) >= 1e9:
        return f"{x / 1e9:,.{2 if digits is None else digits}f} G{unit}"
    return f"{x / 1e6:,.{2 if digits is None else digits}f} M{unit}"


def fmt_s(x: Any) -> str:
    """Seconds as milliseconds for a table."""
    if _isna(x):
        return "n/a"
    return f"{float(x) * 1e3:,.1f} ms"


def fmt_pct(x: Any, digits: int = 2, sign: bool = False) -> str:
    if _isna(x):
        return "n/a"
    return f"{float(x):{'+' if sign else ''}.{digits}%}"


def variant_label(row: Any) -> str:
    """Short name of a row's variant: ``baseline`` or ``compressor@depth``, ``+post N`` if any."""
    comp = row["compressor"]
    s = "baseline" if _isna(comp) or comp in ("none", None) else f"{comp}@{int(row['depth'])}"
    post = row["post_ratio"]
    if not _isna(post) and int(post) > 1:
        s += f" +post{int(post)}"
    enc = row.get("encoding", "view") if hasattr(row, "get") else "view"
    if not _isna(enc) and enc != "view":
        packing = row.get("packing", "batched")
        s += f" [{enc}" + ("" if _isna(packing) or packing == "batched" else f", {packing}") + "]"
    return s


def _res(row: Any) -> str:
    h, w = int(row["resolution_h_px"]), int(row["resolution_w_px"])
    return f"{h} px" if h == w else f"{w}x{h} px"


def _comp(row: Any) -> str:
    c = row["compressor"]
    return "none" if _isna(c) else str(c)


def _style(comp: str) -> tuple[str, str]:
    return STYLE.get(comp, (OKABE_ITO["black"], "X"))


# --------------------------------------------------------------------------------------------
# Pure table functions (DataFrame in, DataFrame out)
# --------------------------------------------------------------------------------------------


#: a measured point whose throughput (flops / median latency) is this many times below the median
#: of its peers (same device, dtype, encoder, batch; at least 3 points) is flagged a slow outlier:
#: a steady slowdown from outside the process (another job, a throttled or shared host) that the
#: sample spread cannot show, because it lasts the whole measurement
SLOW_OUTLIER_FACTOR = 3.0


def slow_outliers(df: pd.DataFrame) -> pd.Series:
    """Per row: the throughput of the row's peers' median over its own (> ``SLOW_OUTLIER_FACTOR``
    flags it), NaN where not measured or with fewer than 3 peers."""
    out = pd.Series(float("nan"), index=df.index, dtype="float64")
    m = df[(df["status"] == "ok") & df["latency_median_s"].notna() & df["flops"].notna()]
    if not len(m):
        return out
    tput = m["flops"].astype(float) / (m["latency_median_s"].astype(float) * m["batch"].astype(float).clip(lower=1))
    for _, g in m.groupby(["device", "dtype", "encoder", "batch"], sort=False):
        if len(g) >= 3:
            med = tput[g.index].median()
            out[g.index] = med / tput[g.index]
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
    d["flagged"] = (noisy | throttled | slow).astype(bool)
    reasons = []
    for n, t, sl, flag, frac, k in zip(noisy, throttled, slow, d["noise_flag"], d["throttled_fraction"], d["slowdown"]):
        r = []
        if n:
            r.append(str(flag))
        if t:
            r.append(f"throttled {float(frac):.0%} of the time")
        if sl:
            r.append(f"slow outlier: {float(k):.1f}x below its peers' median throughput")
        reasons.append(", ".join(r))
    d["flag_reason"] = pd.Series(reasons, index=d.index, dtype="string")
    return d


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


_GEOM = ["encoder", "resolution_h_px", "resolution_w_px", "encoding", "packing", "max_slices", "scale_resolution_px",
         "post_ratio", "batch"]


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
    paper = b["encoder"] == PAPER_ENCODER and (int(b["resolution_h_px"]), int(b["resolution_w_px"])) == PAPER_SIZE
    return (not paper, b["encoding"] != "view", int(b["post_ratio"]) != 1, int(b["batch"]) != 1,
            -int(b["resolution_h_px"]) * int(b["resolution_w_px"]))


def is_paper_geometry(row: Any) -> bool:
    """The paper's figures' setting: so400m/14, one 980 px view, the ViT alone, batch 1."""
    return (row["encoder"] == PAPER_ENCODER and (int(row["resolution_h_px"]), int(row["resolution_w_px"])) == PAPER_SIZE
            and row["encoding"] == "view" and int(row["post_ratio"]) == 1 and int(row["batch"]) == 1)


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
        col = _col(conv)
        if _isna(b[col]) or _isna(v[col]):
            continue
        rows.append({"quantity": what + suffix, "convention": conv, "resolution": _res(b), "encoder": b["encoder"],
                     "device": "counted", "baseline": int(b[col]), "v4": int(v[col]),
                     "reduction": 1 - int(v[col]) / int(b[col]),
                     "paper_reduction": PAPER_REDUCTION if paper_ref and conv == "paper" else None, "flagged": False,
                     "note": f"{b['variant_id']} vs {v['variant_id']}"})
    return rows


def headline(df: pd.DataFrame) -> pd.DataFrame:
    """The headline table: baseline vs v4, one row per quantity, raw SI numbers.

    Columns: quantity, convention (paper / macs / seconds), resolution, encoder, device, baseline,
    v4, reduction (1 - v4/baseline), paper_reduction (the paper's 55.8%, on the paper-convention
    row of the counted pair), flagged (a noisy, throttled or slow-outlier latency), note."""
    d = prepare(df) if "label" not in df else df
    hp = headline_pairs(d)
    rows = []
    if hp["flops"] is not None:
        rows += _count_rows(*hp["flops"], "", paper_ref=is_paper_geometry(hp["flops"][0]))
    for b, v in hp["latency"]:
        if hp["flops"] is None or _res(b) != _res(hp["flops"][0]):
            rows += _count_rows(b, v, " (at the measured resolution)", paper_ref=False)
        bl, vl = float(b["latency_median_s"]), float(v["latency_median_s"])
        thr = None if _isna(b["threads"]) else int(b["threads"])
        rows.append({
            "quantity": "latency, median of forward passes", "convention": "seconds", "resolution": _res(b),
            "encoder": b["encoder"],
            "device": f"{b['device']} ({b['dtype']}, batch {int(b['batch'])}" + (f", {thr} threads" if thr else "") + ")",
            "baseline": bl, "v4": vl, "reduction": 1 - vl / bl, "paper_reduction": None,
            "flagged": bool(b["flagged"] or v["flagged"]),
            "note": "; ".join(f"{n}: {r}" for n, r in (("baseline", b["flag_reason"]), ("v4", v["flag_reason"])) if r)})
    cols = ["quantity", "convention", "resolution", "encoder", "device", "baseline", "v4", "reduction",
            "paper_reduction", "flagged", "note"]
    return pd.DataFrame(rows, columns=cols)


_COUNT_CACHE: dict[str, Any] = {}


def _count(spec):
    """``count_flops`` of a spec, memoised per process (a count is a pure function of the spec)."""
    from uhd_profile.count.flops import count_flops

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
            counted, executed, source = int(rec["paper_flops"]), (None if _isna(rec["macs"]) else int(rec["macs"])), "run"
        elif recount:
            total = _count(spec).total
            counted, executed, source = total.paper, total.macs, "recounted"
        else:
            counted, executed, source = None, None, "not in run"
        paper = fig.paper_gflops * 1e9
        rel = None if counted is None else (counted - paper) / paper
        rows.append({"figure": fig.figure, "variant_id": spec.id, "paper_flops": paper, "counted_paper_flops": counted,
                     "rel_err": rel, "ok": None if rel is None else abs(rel) <= REL_TOL,
                     "executed_macs": executed, "source": source})
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
    s = f"{row['encoder']} {_res(row)}"
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
    d = prepare(df) if "label" not in df else df
    col = _col(convention)
    if y == "latency_median_s":
        d = measured_rows(d)
        with_device = True
    else:
        d = counted_rows(d)
        with_device = False
    d = d[d[col].notna() & d[y].notna() & (d["encoding"] == "view")]
    cols = ["panel", "setting", "label", "variant_id", "compressor", "depth", "post_ratio", "resolution_h_px",
            "resolution_w_px", col, y, "flagged", "flag_reason", "on_front"]
    if not len(d):
        return pd.DataFrame(columns=cols)
    d = d.assign(setting=[_setting(r, with_device) for _, r in d.iterrows()])
    if d["setting"].nunique() <= MAX_PANELS:
        d["panel"] = d["setting"]
    else:
        d["panel"] = [_setting(r, with_device).replace(f" {_res(r)}", "") for _, r in d.iterrows()]
        d["label"] = [f"{lab} {_res(r)}" for lab, (_, r) in zip(d["label"], d.iterrows())]
    d["on_front"] = False
    for _, g in d.groupby("setting", sort=False):
        d.loc[g.index, "on_front"] = pareto_front(g[col], g[y])
    return d[cols].reset_index(drop=True)


def depth_table(df: pd.DataFrame, convention: str = FIGURE_CONVENTION) -> pd.DataFrame:
    """Rows of every (setting, compressor) series the run holds at two depths or more, plus the
    baselines (``compressor`` none, depth empty) of the same settings: depth, FLOPs, latency."""
    d = prepare(df) if "label" not in df else df
    d = ok_rows(d)
    col = _col(convention)
    cols = ["series", "setting", "compressor", "depth", col, "latency_median_s", "device", "dtype", "flagged",
            "flag_reason", "variant_id"]
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
    d = prepare(df) if "label" not in df else df
    d = ok_rows(d)
    d = d[d["encoding"].isin(["global", "sliced"])]
    col = _col(convention)
    cols = ["encoding", "packing", "label", "compressor", "encoder", "resolution_h_px", "resolution_w_px", "aspect",
            "megapixels", col, "macs",
            "tokens_in", "tokens_llm", "latency_median_s", "device", "dtype", "flagged", "flag_reason", "variant_id"]
    if not len(d):
        return pd.DataFrame(columns=cols)
    d = d.assign(megapixels=d["resolution_h_px"].astype(float) * d["resolution_w_px"].astype(float) / 1e6,
                 aspect=[_aspect(int(w), int(h)) for h, w in zip(d["resolution_h_px"], d["resolution_w_px"])])
    return d.sort_values(["encoding", "label", "aspect", "megapixels"])[cols].reset_index(drop=True)


def _aspect(w: int, h: int) -> str:
    """W:H in lowest terms when they are small (16:9), else W/H to 2 decimals."""
    g = math.gcd(w, h)
    a, b = w // g, h // g
    return f"{a}:{b}" if max(a, b) <= 32 else f"{w / h:.2f}:1"


def quality_table(df: pd.DataFrame) -> pd.DataFrame:
    """Every measured point: latency spread, noise flag, stop rule, throttling, environment key."""
    d = prepare(df) if "label" not in df else df
    d = measured_rows(d)
    cols = ["label", "resolution", "device", "dtype", "latency_median_s", "latency_p10_s", "latency_p90_s",
            "latency_iqr_over_median", "latency_n", "stop_reason", "noise_flag", "throttled_fraction",
            "throughput_flops_per_s", "slowdown", "flagged", "flag_reason", "env_key", "variant_id"]
    if not len(d):
        return pd.DataFrame(columns=cols)
    d = d.assign(resolution=[_res(r) for _, r in d.iterrows()],
                 throughput_flops_per_s=d["flops"].astype(float) / (d["latency_median_s"].astype(float)
                                                                    * d["batch"].astype(float).clip(lower=1)))
    return d[cols].reset_index(drop=True)


ENV_FIELDS = ("device", "cpu_model", "cpu_cores_physical", "cpu_cores_logical", "cpu_affinity", "torch_threads",
              "gpu_name", "gpu_count", "gpu_driver", "cuda_runtime", "cudnn", "ecc_mode", "mig_mode",
              "persistence_mode", "float32_matmul_precision", "tf32_matmul", "tf32_cudnn", "cudnn_benchmark",
              "torch", "transformers", "python", "platform", "uhd_profile_version", "git_commit", "git_dirty",
              "nvml_error")


def env_table(records: list[dict]) -> pd.DataFrame:
    """The environment fingerprints of a run's measured points: one column per distinct fingerprint
    key, one row per field (hostname and timestamps left out)."""
    from uhd_profile.measure.env import fingerprint_key

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


# --------------------------------------------------------------------------------------------
# Where the compute goes: a per-layer, per-category recount
# --------------------------------------------------------------------------------------------


def _op_split(op: str, cost, innermost) -> list[tuple[str, Any]]:
    """Split one priced op into categories: attention's multiply-accumulates vs its scaling and
    softmax; a matmul in a Linear/Conv module is a linear layer, elsewhere (eager attention) an
    attention matmul; everything else is element-wise."""
    from torch import nn

    from uhd_profile.count.flops import Cost

    if "attention" in op or "attn" in op:
        mm = Cost(macs=cost.macs, flops=min(cost.flops, 2 * cost.macs), paper=min(cost.paper, cost.macs))
        rest = Cost(0, cost.flops - mm.flops, cost.paper - mm.paper)
        return [("attention matmuls", mm), ("element-wise", rest)]
    if op in MATMUL_OPS:
        linear = isinstance(innermost, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))
        return [("linear layers" if linear else "attention matmuls", cost)]
    return [("element-wise", cost)]


def breakdown(spec) -> pd.DataFrame:
    """Recount ``spec`` (a ``VariantSpec``, built on ``meta``: shapes only) and attribute every priced
    op to a block (embedding, encoder layer i, compressor, post-norm, connector; by the outermost
    such module running it, so modules the compressor shares with layer k count as compressor) and
    a category (``CATEGORIES``). Columns: order, block, category, macs, flops, paper."""
    from uhd_profile.count.flops import ZERO, counting
    from uhd_profile.model.variants import build_variant, example_input

    model = build_variant(spec, device="meta")
    tops = {id(m): n for n, m in model.named_children()}
    layer_of = {id(m): i for i, m in enumerate(getattr(model, "layers", []))}
    names = {"embed": "embedding", "post_norm": "post-norm"}
    acc: dict[tuple[str, str], Any] = {}
    order: dict[str, int] = {}
    with counting(model, shape_only=True) as state:
        price = state.add

        def add(cost, op):
            block = "other"
            for m in state.stack:
                if id(m) in layer_of:
                    block = f"layer {layer_of[id(m)]}"
                    break
                if id(m) in tops and tops[id(m)] != "layers":
                    block = names.get(tops[id(m)], tops[id(m)])
                    break
            order.setdefault(block, len(order))
            innermost = state.stack[-1] if state.stack else None
            parts = [(block, cost)] if block in ("compressor", "connector") else _op_split(op, cost, innermost)
            for cat, c in parts:
                key = (block, cat)
                acc[key] = acc.get(key, ZERO) + c
            price(cost, op)

        state.add = add
        model(example_input(spec, 1, "meta"))
    rows = [{"order": order[b], "block": b, "category": cat, "macs": c.macs, "flops": c.flops, "paper": c.paper}
            for (b, cat), c in acc.items()]
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
# Figures (pure: DataFrame in, Figure out)
# --------------------------------------------------------------------------------------------


#: matplotlib settings of every report figure (applied per figure, never to the global rcParams)
RC = {"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8, "svg.fonttype": "none",
      "svg.hashsalt": "uhd-profile", "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False,
      "axes.spines.right": False}


def _styled(fn):
    """Run a figure function under ``RC`` (no pyplot state: figures are plain ``Figure`` objects)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import matplotlib

        with matplotlib.rc_context(RC):
            return fn(*args, **kwargs)

    return wrapper


def _subplots(nrows: int, ncols: int, figsize: tuple[float, float], **kw):
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=figsize, layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=False, **kw)


def _scaled(values, convention: str) -> tuple[list[float], str]:
    vals = [float(v) for v in values]
    big = max(vals, default=0) >= 1e9
    f = 1e9 if big else 1e6
    return [v / f for v in vals], f"{'G' if big else 'M'}{_unit(convention)}"


def _log_if_wide(ax, axis: str, values) -> None:
    vals = [float(v) for v in values if float(v) > 0]
    if vals and max(vals) / min(vals) > 20:
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")


def _label_points(ax, xs, ys, labels, fontsize=7, lines: list | None = None) -> None:
    """Label points without overlaps: labels of coincident points are merged, then each label takes
    the first free spot among candidates around its point (right, left, then further up/down with
    a leader line). Call after the axes' scales and limits are final."""
    fig = ax.figure  # positions are taken before layout: approximate, but offsets are in points
    groups: dict[tuple[float, float], list[str]] = {}
    for x, y, lab in zip(xs, ys, labels):
        groups.setdefault((float(x), float(y)), []).append(lab)
    k = fig.dpi / 72.0  # display pixels per point
    box = ax.get_window_extent()
    pts = {xy: tuple(ax.transData.transform(xy)) for xy in groups}
    taken = [(px - 6 * k, py - 6 * k, px + 6 * k, py + 6 * k) for px, py in pts.values()]  # the markers
    for line_x, line_y in lines or []:  # axis-parallel polylines (Pareto fronts) labels must not cover
        for a, b in zip(zip(line_x, line_y), list(zip(line_x, line_y))[1:]):
            (ax_, ay), (bx, by) = ax.transData.transform(a), ax.transData.transform(b)
            taken.append((min(ax_, bx) - 2 * k, min(ay, by) - 2 * k, max(ax_, bx) + 2 * k, max(ay, by) + 2 * k))

    def free(r):
        inside = r[0] >= box.x0 and r[2] <= box.x1 and r[1] >= box.y0 and r[3] <= box.y1
        return inside and not any(r[0] < t[2] and r[2] > t[0] and r[1] < t[3] and r[3] > t[1] for t in taken)

    for xy, labs in sorted(groups.items(), key=lambda kv: (pts[kv[0]][0], pts[kv[0]][1])):
        text = ", ".join(dict.fromkeys(labs))
        w, h = len(text) * fontsize * 0.62 * k, fontsize * 1.3 * k
        px, py = pts[xy]
        choice = None
        for dy in [0] + [s * j * h for j in range(1, 12) for s in (1, -1)]:
            for side in (1, -1):
                x0 = px + 6 * k if side == 1 else px - 6 * k - w
                r = (x0, py + dy - h / 2, x0 + w, py + dy + h / 2)
                if free(r):
                    choice = (side, dy, r)
                    break
            if choice:
                break
        if choice is None:  # nowhere free: put it to the right and accept the overlap
            choice = (1, 0.0, (px + 6 * k, py - h / 2, px + 6 * k + w, py + h / 2))
        side, dy, r = choice
        taken.append(r)
        ax.annotate(text, xy, xytext=(6 * side, dy / k), textcoords="offset points", fontsize=fontsize,
                    color="#333333", ha="left" if side == 1 else "right", va="center",
                    arrowprops=dict(arrowstyle="-", lw=0.5, color="#888888", shrinkA=0, shrinkB=3) if abs(dy) > 0 else None)


def _legend_outside(ax) -> None:
    """Legend right of the axes; compressor markers drawn plain (not with a front point's outline)."""
    from matplotlib.collections import PathCollection
    from matplotlib.lines import Line2D

    handles, labels = ax.get_legend_handles_labels()
    out = {}
    for hd, lb in zip(handles, labels):
        if isinstance(hd, PathCollection) and lb in STYLE:
            colour, marker = _style(lb)
            hd = Line2D([], [], ls="none", marker=marker, color=colour, mec="white", ms=7)
        out.setdefault(lb, hd)
    ax.legend(out.values(), out.keys(), loc="upper left", bbox_to_anchor=(1.01, 1.0), framealpha=0.9, borderaxespad=0)


def _mark_flagged(ax, xs, ys) -> None:
    if len(xs):
        ax.scatter(xs, ys, s=230, facecolors="none", edgecolors=OKABE_ITO["vermillion"], linewidths=1.5,
                   linestyles="--", zorder=4, label=f"{FLAG_MARK} flagged latency (noisy, throttled or slow outlier)")


@_styled
def pareto_figure(table: pd.DataFrame, y: str, convention: str = FIGURE_CONVENTION):
    """Scatter of FLOPs (x) vs ``y``, one panel per ``panel`` of ``pareto_table``, each setting's
    Pareto front drawn as the boundary of the region it dominates and its points outlined; points
    labelled by variant, coloured and shaped by compressor; flagged points ringed."""
    col = _col(convention)
    panels = list(dict.fromkeys(table["panel"]))
    fig, axes = _subplots(len(panels), 1, (9.0, 4.4 * len(panels)))
    ylab = {"latency_median_s": "latency, median per forward (ms)", "tokens_llm": "tokens reaching the LLM per view"}[y]
    yscale = 1e3 if y == "latency_median_s" else 1.0
    xs, xunit = _scaled(table[col], convention)
    table = table.assign(_x=xs, _y=[float(v) * yscale for v in table[y]])
    dashes = ["--", ":", "-.", (0, (5, 1, 1, 1))]
    for ax, panel in zip(axes[:, 0], panels):
        g = table[table["panel"] == panel]
        for comp, gc in g.groupby("compressor", sort=False):
            colour, marker = _style(comp)
            ax.scatter(gc["_x"], gc["_y"], color=colour, marker=marker, s=46, zorder=3,
                       edgecolors=["black" if f else "white" for f in gc["on_front"]],
                       linewidths=[1.4 if f else 0.5 for f in gc["on_front"]], label=comp)
        flagged = g[g["flagged"].astype(bool)]
        _mark_flagged(ax, flagged["_x"], flagged["_y"])
        _log_if_wide(ax, "x", g["_x"])
        _log_if_wide(ax, "y", g["_y"])
        ax.margins(x=0.12, y=0.15)
        ax.autoscale_view()
        x0, x1 = ax.get_xlim()
        y0, y1 = ax.get_ylim()
        settings = list(dict.fromkeys(g["setting"]))
        front_lines = []
        for si, setting in enumerate(settings):
            front = g[(g["setting"] == setting) & g["on_front"]].sort_values(["_x", "_y"])
            fx, fy = list(front["_x"]), list(front["_y"])
            px, py = [fx[0]], [y1]
            for i in range(len(fx)):
                px += [fx[i], fx[i + 1] if i + 1 < len(fx) else x1]
                py += [fy[i], fy[i]]
            name = "Pareto front (outlined points)" + (f": {setting}" if len(settings) > 1 else "")
            ax.plot(px, py, color="#444444", ls=dashes[si % len(dashes)], lw=1.1, zorder=2, label=name)
            front_lines.append((px, py))
        ax.set_xlim(x0, x1)
        ax.set_ylim(y0, y1)
        ax.set_xlabel(f"visual-encoding compute per view ({xunit}, {convention} convention)")
        ax.set_ylabel(ylab)
        ax.set_title(panel, loc="left")
        _label_points(ax, list(g["_x"]), list(g["_y"]), list(g["label"]), lines=front_lines)
        _legend_outside(ax)
    return fig


@_styled
def depth_figure(table: pd.DataFrame, convention: str = FIGURE_CONVENTION):
    """Depth (x) vs FLOPs and vs latency (two panels); one line per compressor and setting, the
    setting's baseline as a horizontal line."""
    col = _col(convention)
    has_lat = table["latency_median_s"].notna().any()
    fig, axes = _subplots(1, 2 if has_lat else 1, (11.0 if has_lat else 7.5, 5.6))
    settings = list(dict.fromkeys(table["setting"]))
    dashes = ["-", "--", ":", "-."]
    _, unit = _scaled(table[col], convention)
    f = 1e9 if unit.startswith("G") else 1e6
    panels = [(axes[0][0], col, f, f"visual-encoding compute per view ({unit}, {convention} convention)")]
    if has_lat:
        panels.append((axes[0][1], "latency_median_s", 1e-3, "latency, median per forward (ms)"))
    for ax, ycol, scale, ylabel in panels:
        d = table[table[ycol].notna()]
        if ycol == "latency_median_s":
            d = d.assign(setting=[f"{s} | {dev} {dt}" for s, dev, dt in zip(d["setting"], d["device"], d["dtype"])])
        else:
            d = d.drop_duplicates(subset=["variant_id"])
        for si, setting in enumerate(dict.fromkeys(d["setting"])):
            g = d[d["setting"] == setting]
            for comp, gc in g[g["compressor"] != "none"].groupby("compressor", sort=False):
                gc = gc.sort_values("depth")
                colour, marker = _style(comp)
                ax.plot(gc["depth"].astype(int), gc[ycol].astype(float) / scale, color=colour, marker=marker, ms=4,
                        ls=dashes[si % 4], lw=1.3, label=f"{comp} | {setting}" if len(settings) > 1 or ycol != col else comp)
                fl = gc[gc["flagged"].astype(bool)]
                _mark_flagged(ax, fl["depth"].astype(int), fl[ycol].astype(float) / scale)
            for _, b in g[g["compressor"] == "none"].iterrows():
                ax.axhline(float(b[ycol]) / scale, color=OKABE_ITO["black"], ls=dashes[si % 4], lw=1.0, alpha=0.7,
                           label=f"post-ViT baseline | {setting}" if len(settings) > 1 or ycol != col else "post-ViT baseline")
        ax.set_xlabel("compressor depth k (0-based encoder layer after which it runs)")
        ax.set_ylabel(ylabel)
        _log_if_wide(ax, "y", d[ycol].astype(float))
        handles, labels = ax.get_legend_handles_labels()
        uniq = dict(zip(labels, handles))
        ax.legend(uniq.values(), uniq.keys(), fontsize=7, framealpha=0.9, loc="upper center",
                  bbox_to_anchor=(0.5, -0.14), ncol=1)
    return fig


@_styled
def breakdown_figure(parts: dict[str, pd.DataFrame], convention: str = FIGURE_CONVENTION):
    """Side-by-side stacked bars per block (embedding, layers, compressor, post-norm, connector),
    stacked by category, one panel per variant, shared y axis."""
    n = len(parts)
    widths = [max(1, parts[k]["block"].nunique()) for k in parts]
    fig, axes = _subplots(1, n, (12.0, 4.8), sharey=True, gridspec_kw={"width_ratios": widths})
    allvals = pd.concat([p.groupby("block")[convention].sum() for p in parts.values()])
    _, unit = _scaled(allvals, convention)
    f = 1e9 if unit.startswith("G") else 1e6
    for ax, (label, bd) in zip(axes[0], parts.items()):
        blocks = list(bd.sort_values("order")["block"].drop_duplicates())
        bottom = [0.0] * len(blocks)
        for cat in CATEGORIES:
            vals = [float(bd.loc[(bd["block"] == b) & (bd["category"] == cat), convention].sum()) / f for b in blocks]
            if not any(vals):
                continue
            ax.bar(range(len(blocks)), vals, bottom=bottom, color=CATEGORY_COLOURS[cat], label=cat, width=0.8,
                   edgecolor="#333333", linewidth=0.3)
            bottom = [b + v for b, v in zip(bottom, vals)]
        ticks = [b.replace("layer ", "") .replace("embedding", "emb").replace("compressor", "comp")
                 .replace("post-norm", "norm").replace("connector", "conn") for b in blocks]
        ax.set_xticks(range(len(blocks)), ticks, fontsize=7, rotation=90)
        ax.set_xlim(-0.7, len(blocks) - 0.3)
        ax.set_title(f"{label}: {sum(bottom):,.1f} {unit} in total", loc="left")
        ax.set_xlabel("block, in execution order (emb, encoder layer index, comp = in-ViT compressor)")
    axes[0][0].set_ylabel(f"compute per view ({unit}, {convention} convention)")
    handles = {}
    for ax in axes[0]:
        for hd, lb in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lb, hd)
    axes[0][-1].legend(handles.values(), handles.keys(), loc="upper right", framealpha=0.9)
    return fig


@_styled
def encoding_figure(table: pd.DataFrame, convention: str = FIGURE_CONVENTION):
    """Global vs sliced encoding: compute (and, in a second row, latency where measured) vs the
    image size, one column of panels per aspect ratio (so each line is one image shape scaled up)."""
    col = _col(convention)
    has_lat = table["latency_median_s"].notna().any()
    aspects = list(dict.fromkeys(table.sort_values("megapixels")["aspect"]))
    if len(aspects) > 4:
        table, aspects = table.assign(aspect="all"), ["all"]
    rows = 2 if has_lat else 1
    fig, axes = _subplots(rows, len(aspects), (max(7.5, 4.6 * len(aspects)), 4.4 * rows))
    _, unit = _scaled(table[col], convention)
    f = 1e9 if unit.startswith("G") else 1e6
    metrics = [(col, f, f"compute per image ({unit}, {convention} conv.)")]
    if has_lat:
        metrics.append(("latency_median_s", 1e-3, "latency, median per image (ms)"))
    for r, (ycol, scale, ylabel) in enumerate(metrics):
        for c, aspect in enumerate(aspects):
            ax = axes[r][c]
            d = table[(table["aspect"] == aspect) & table[ycol].notna()]
            if ycol == col:
                d = d.drop_duplicates(subset=["variant_id"])
            for (enc, label, comp), g in d.groupby(["encoding", "label", "compressor"], sort=False):
                g = g.sort_values("megapixels")
                colour, marker = _style(comp)
                how = label.split(" [")[1].rstrip("]") if " [" in label else enc  # "sliced" or "sliced, packed"
                ax.plot(g["megapixels"], g[ycol].astype(float) / scale, color=colour, marker=marker, ms=5,
                        ls="-" if enc == "global" else "--", label=f"{how}: {label.split(' [')[0]}")
                fl = g[g["flagged"].astype(bool)]
                _mark_flagged(ax, fl["megapixels"], fl[ycol].astype(float) / scale)
            ax.set_title(f"aspect {aspect} (W:H)" if aspect != "all" else "all aspect ratios", loc="left")
            ax.set_xlabel("input image size (megapixels, W x H)")
            ax.set_ylabel(ylabel)
    uniq: dict = {}
    for ax in axes.flat:
        for hd, lb in zip(*ax.get_legend_handles_labels()):
            uniq.setdefault(lb, hd)
    fig.legend(uniq.values(), uniq.keys(), loc="outside lower center", ncol=min(3, len(uniq)), framealpha=0.9)
    return fig


# --------------------------------------------------------------------------------------------
# The document: blocks rendered to Markdown and HTML
# --------------------------------------------------------------------------------------------


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
    title: str
    blocks: list = field(default_factory=list)  # ("h", level, text) | ("p", text) | Table | Figure

    def h(self, level: int, text: str) -> None:
        self.blocks.append(("h", level, text))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    @property
    def figures(self) -> list[Figure]:
        return [b for b in self.blocks if isinstance(b, Figure)]

    @property
    def tables(self) -> list[Table]:
        return [b for b in self.blocks if isinstance(b, Table)]


def _conv_note(convention: str) -> str:
    return f"{convention} convention: {CONVENTION_HELP[convention]}"


def _mark(flagged: Any, text: str) -> str:
    return f"{text} {FLAG_MARK}" if bool(flagged) else text


def _spec_for(records: list[dict], variant_id: str):
    from uhd_profile.run.recipe import Point

    for r in records:
        if r["variant_id"] == variant_id:
            return Point.from_dict(r["point"]).spec
    raise KeyError(variant_id)


def build_report(run_dir: str | os.PathLike, recount: bool = True) -> Report:
    """Everything the report shows, as blocks (no files written)."""
    from uhd_profile.run import store

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
    rep.p(f"Run directory `{run_dir.name}`: recipe `{head.get('recipe_name')}` (hash {head.get('recipe_hash')}), "
          f"{len(df)} points ({len(ok)} ok, {len(df) - len(ok)} failed), {len(counted_rows(df))} distinct counted "
          f"configurations, {n_meas} measured on a device. Every number below is taken from the run's records or "
          f"counted by running uhd-profile's FLOPs counter (on the meta device: shapes only); the paper's numbers "
          f"appear only as the reference. {FLAG_MARK} marks a flagged latency (noisy, throttled or a slow outlier; see section 6) wherever it appears. "
          f"FLOP counts are per view (one image of the stated size, batch 1) unless said otherwise.")
    _headline_section(rep, df)
    _reproduction_section(rep, df, recount)
    _pareto_section(rep, df)
    _breakdown_section(rep, df, recs)
    _encoding_section(rep, df)
    _quality_section(rep, df, recs)
    return rep


def _headline_section(rep: Report, df: pd.DataFrame) -> None:
    rep.h(2, "1. Headline: LLaVA-UHD v4 vs the post-ViT baseline")
    hl = headline(df)
    hp = headline_pairs(df)
    if hl.empty:
        rep.p(f"Not available: the run holds no pair of the post-ViT baseline (compressor none) and v4's compressor "
              f"({V4_COMPRESSOR}) at the same encoder, resolution and post-ViT ratio.")
        return
    depth = hp["depth"]
    intro = (f"v4 = {V4_COMPRESSOR} at depth {depth}" + ("" if depth == V4_DEPTH else
             f" (the run holds no depth-{V4_DEPTH} point; the paper's v4 uses depth {V4_DEPTH})")
             + "; baseline = no in-ViT compression, the same post-ViT ratio. Reduction = 1 - v4 / baseline.")
    rep.p(intro)
    shown = pd.DataFrame({
        "quantity": hl["quantity"], "resolution": hl["resolution"], "source": hl["device"],
        "baseline": [fmt_s(v) if c == "seconds" else fmt_count(v, c) for v, c in zip(hl["baseline"], hl["convention"])],
        "v4": [fmt_s(v) if c == "seconds" else fmt_count(v, c) for v, c in zip(hl["v4"], hl["convention"])],
        "reduction": [_mark(f, fmt_pct(r)) for r, f in zip(hl["reduction"], hl["flagged"])],
        "paper's reduction": [fmt_pct(p, 1) if not _isna(p) else "—" for p in hl["paper_reduction"]],
    })
    rep.blocks.append(Table("headline", shown, hl, f"paper's reduction: what the paper prints for {PAPER_ENCODER} at "
                                                    f"{PAPER_SIZE[0]} px, the ViT alone (55.8%; text 55.75%)."))
    flops_rows = hl[hl["convention"] == "paper"]
    lat_rows = hl[hl["convention"] == "seconds"]
    sent = []
    if len(flops_rows):
        r = flops_rows.iloc[0]
        ref = (f"paper: {PAPER_REDUCTION:.1%}" if not _isna(r["paper_reduction"]) else
               f"the paper's {PAPER_REDUCTION:.1%} is for {PAPER_ENCODER} at {PAPER_SIZE[0]} px, the ViT alone: not this setting")
        sent.append(f"Counted at {r['resolution']} ({r['encoder']}), v4 cuts visual-encoding compute by "
                    f"{fmt_pct(r['reduction'])} in the paper's convention ({ref})")
        m = hl[(hl["convention"] == "macs") & (hl["resolution"] == r["resolution"])]
        if len(m):
            sent[-1] += f" and by {fmt_pct(m.iloc[0]['reduction'])} in MACs as executed (window attention counted as windowed)"
    for _, r in lat_rows.iterrows():
        word = "lower" if r["reduction"] >= 0 else "higher"
        sent.append(f"measured at {r['resolution']} on {r['device']}, its median latency is "
                    f"{fmt_pct(abs(r['reduction']))} {word} ({fmt_s(r['baseline'])} -> {fmt_s(r['v4'])})"
                    + (f" {FLAG_MARK} ({r['note']})" if r["flagged"] else ""))
    if not len(lat_rows):
        sent.append("the run measured no latency of a baseline/v4 pair at the same resolution and post-ViT ratio")
    rep.p("; ".join(sent) + ".")
    rep.p(f"Conventions: {_conv_note('paper')}. macs: {CONVENTION_HELP['macs']}.")


def _reproduction_section(rep: Report, df: pd.DataFrame, recount: bool) -> None:
    rep.h(2, "2. Reproduction of the paper's FLOPs figures")
    t = reproduction_table(df, recount=recount)
    n_run, n_re = int((t["source"] == "run").sum()), int((t["source"] == "recounted").sum())
    shown = pd.DataFrame({
        "figure": t["figure"],
        "paper (GFLOPs)": [f"{v / 1e9:,.1f}" for v in t["paper_flops"]],
        "counted, paper conv. (GFLOPs)": [f"{v / 1e9:,.2f}" if not _isna(v) else "n/a" for v in t["counted_paper_flops"]],
        "rel. err": [fmt_pct(v, 4, sign=True) for v in t["rel_err"]],
        "0.1%": ["n/a" if _isna(o) else ("pass" if o else "FAIL") for o in t["ok"]],
        "as executed (GMACs)": [f"{v / 1e9:,.2f}" if not _isna(v) else "n/a" for v in t["executed_macs"]],
        "source": t["source"],
    })
    rep.blocks.append(Table("reproduction", shown, t))
    judged = t[t["ok"].notna()]
    verdict = (f"{int(judged['ok'].astype(bool).sum())} of {len(t)} figures within {REL_TOL:.1%}" if len(judged) else "no figure judged")
    rep.p(f"Per 980 px view (70x70 patches), SigLIP2-so400m/14, the ViT alone. {verdict}. Source: `run` = the run's "
          f"record of that configuration ({n_run} figures); `recounted` = not in this run, counted now with "
          f"`count_flops` ({n_re} figures)" + ("" if recount else "; `not in run` = not in this run and not recounted")
          + f". Counted column: {_conv_note('paper')}. As executed: macs, window attention counted as windowed.")


def _pareto_section(rep: Report, df: pd.DataFrame) -> None:
    rep.h(2, "3. Pareto fronts")
    conv = FIGURE_CONVENTION
    for y, name, what in (("latency_median_s", "pareto_latency", "latency"),
                          ("tokens_llm", "pareto_tokens", "tokens reaching the LLM")):
        t = pareto_table(df, y)
        if t.empty:
            why = ("no latency was measured (a counts-only run)" if y == "latency_median_s" and measured_rows(df).empty
                   else "no single-view point has both (global/sliced points are compared in section 5)")
            rep.p(f"FLOPs vs {what}: left out, {why}.")
            continue
        fig = pareto_figure(t, y)
        lower = "lower latency" if y == "latency_median_s" else "fewer tokens"
        rep.blocks.append(Figure(name, fig, t, (
            f"Visual-encoding compute vs {what}, every variant of the run ({conv} convention: {CONVENTION_HELP[conv]}). "
            f"Single-view points; one panel per setting (encoder, resolution{', device, dtype' if y == 'latency_median_s' else ''}). "
            f"The dashed line is each setting's Pareto front, the boundary of the region its outlined points dominate: "
            f"no other point of that setting has both fewer FLOPs and {lower}. Task accuracy is not measured here." + (
                f" Points ringed {FLAG_MARK} had a flagged latency (noisy, throttled or a slow outlier)." if t["flagged"].any() else ""))))
    rep.h(3, "Depth sweep")
    t = depth_table(df)
    if t.empty:
        rep.p("Left out: the run holds no compressor at two or more depths of one setting.")
        return
    rep.blocks.append(Figure("depth_sweep", depth_figure(t), t, (
        f"Insertion depth k of the in-ViT compressor vs compute ({conv} convention) and, where measured, median latency; "
        f"horizontal lines: the post-ViT baseline of the same setting. Deeper insertion keeps more layers at full "
        f"token count." + (f" Points ringed {FLAG_MARK} had a flagged latency (noisy, throttled or a slow outlier)." if t["flagged"].any() else ""))))


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
        checks.append(f"{name}: {fmt_count(total)} recounted, {fmt_count(row['paper_flops'])} in the run"
                      + ("" if total == int(row["paper_flops"]) else " (MISMATCH: the counter or model code changed since the run?)"))
    data = pd.concat([bd.assign(variant=name) for name, bd in parts.items()], ignore_index=True)
    conv = FIGURE_CONVENTION
    rep.blocks.append(Figure("breakdown", breakdown_figure(parts), data, (
        f"{_res(b)}, {b['encoder']}, post-ViT ratio {int(b['post_ratio'])}: compute per block, stacked by category "
        f"({conv} convention: {CONVENTION_HELP[conv]}). Recounted now with count_flops on the meta device (the store "
        f"keeps totals only). Linear layers include the patch-embedding convolution; attention matmuls are QK^T and AV; "
        f"element-wise: norms, activations, residual adds, softmax and score scaling; compressor: everything inside "
        f"the in-ViT compressor (its window attention charged densely in this convention). Totals: "
        + "; ".join(checks) + ".")))
    s = breakdown_summary(parts, conv)
    shown = s.pivot(index="category", columns="variant", values=conv).reindex(list(CATEGORIES) + ["total"])
    shares = s.pivot(index="category", columns="variant", values="share").reindex(list(CATEGORIES) + ["total"])
    table = pd.DataFrame({"category": shown.index})
    for name in parts:
        table[name] = [f"{fmt_count(x, conv)} ({sh:.1%})" for x, sh in zip(shown[name], shares[name])]
    rep.blocks.append(Table("breakdown_by_category", table, s, f"{conv} convention; share of the variant's total."))


def _encoding_section(rep: Report, df: pd.DataFrame) -> None:
    rep.h(2, "5. Global vs sliced encoding")
    t = encoding_table(df)
    if t.empty:
        rep.p("Left out: the run holds no global- or sliced-encoding points (every point encodes one view, "
              "encoding `view`); run a recipe with `encodings = [\"global\", \"sliced\"]` to fill this section.")
        return
    conv = FIGURE_CONVENTION
    rep.blocks.append(Figure("global_vs_sliced", encoding_figure(t), t, (
        f"Cost of encoding a whole image vs its size: `global` resizes it to one view, `sliced` encodes the "
        f"slices (and thumbnail) the slicing rule picks. Compute per image ({conv} convention: "
        f"{CONVENTION_HELP[conv]})" + (", median latency per image where measured" if t["latency_median_s"].notna().any()
                                       else "") + "." + (f" Points ringed {FLAG_MARK} had a flagged latency (noisy, throttled or a slow outlier)."
                                                          if t["flagged"].any() else ""))))
    shown = pd.DataFrame({
        "encoding": t["encoding"], "variant": [lab.split(" [")[0] for lab in t["label"]],
        "packing": t["packing"],
        "image": [f"{int(w)}x{int(h)}" for h, w in zip(t["resolution_h_px"], t["resolution_w_px"])],
        "compute": [fmt_count(x, conv) for x in t[_col(conv)]],
        "tokens to LLM": [("n/a" if _isna(x) else f"{int(x):,}") for x in t["tokens_llm"]],
        "latency": [_mark(f, fmt_s(x)) if not _isna(x) else "n/a" for x, f in zip(t["latency_median_s"], t["flagged"])],
    })
    if t["latency_median_s"].isna().all():
        shown = shown.drop(columns=["latency"])
    rep.blocks.append(Table("global_vs_sliced", shown, t))


def _quality_section(rep: Report, df: pd.DataFrame, recs: list[dict]) -> None:
    rep.h(2, "6. Measurement quality")
    q = quality_table(df)
    if q.empty:
        rep.p("No latency was measured in this run (FLOP counts only), so there is no timing noise or throttling to "
              "report. Counts are exact functions of the executed module graph.")
    else:
        n_flag = int(q["flagged"].sum())
        reasons = {(r.get("metrics") or {}).get("telemetry_reason") for r in recs if r.get("metrics")} - {None}
        thr = ("throttling: " + ("not observable (" + "; ".join(sorted(reasons)) + ")" if q["throttled_fraction"].isna().all()
                                 else f"fraction of samples with clocks slowed, max {q['throttled_fraction'].max():.1%}"))
        rep.p(f"{len(q)} measured points, {n_flag} flagged {FLAG_MARK}: noise flag `noisy` (IQR/median >= 10%) or "
              f"`unreliable` (>= 25%); throttled_fraction > 0; or a slow outlier, whose throughput (flops convention "
              f"/ median latency) is more than {SLOW_OUTLIER_FACTOR:g}x below the median of its peers (same device, "
              f"dtype, encoder, batch): a steady slowdown from outside the process (another job on the machine, a "
              f"throttled or shared host) that lasts the whole measurement, so the sample spread cannot show it. "
              f"{thr}.")
        shown = pd.DataFrame({
            "variant": q["label"], "res.": q["resolution"], "device": q["device"] + " " + q["dtype"],
            "median": [fmt_s(x) for x in q["latency_median_s"]],
            "p10 / p90": [f"{fmt_s(a)} / {fmt_s(b)}" for a, b in zip(q["latency_p10_s"], q["latency_p90_s"])],
            "IQR/median": [fmt_pct(x, 1) for x in q["latency_iqr_over_median"]],
            "n": [str(int(x)) if not _isna(x) else "n/a" for x in q["latency_n"]],
            "stop rule": q["stop_reason"].fillna("n/a"),
            "noise": [str(x) if not _isna(x) else "n/a" for x in q["noise_flag"]],
            "throttled": [fmt_pct(x, 1) for x in q["throttled_fraction"]],
            "GFLOP/s": [f"{x / 1e9:,.0f}" if not _isna(x) else "n/a" for x in q["throughput_flops_per_s"]],
            "flag": [f"{FLAG_MARK} {r}" if f else "" for f, r in zip(q["flagged"], q["flag_reason"])],
            "env": q["env_key"].fillna("n/a"),
        })
        rep.blocks.append(Table("measurement_quality", shown, q))
        e = env_table(recs)
        if len(e.columns) > 1:
            rep.h(3, "Environment fingerprint")
            rep.p("Fields of the fingerprint recorded with each measured point (one column per distinct fingerprint "
                  "key; equal keys mean comparable timings). Hostname and timestamps are left out.")
            rep.blocks.append(Table("environment", e, e))
    fails = failures_table(df)
    if len(fails):
        rep.h(3, "Points that did not run")
        rep.blocks.append(Table("failures", fails.fillna(""), fails))
    rep.h(3, "Conventions")
    conv_t = pd.DataFrame({"convention": list(CONVENTIONS), "meaning": [CONVENTION_HELP[c] for c in CONVENTIONS],
                           "column": [_col(c) for c in CONVENTIONS]})
    rep.blocks.append(Table("conventions", conv_t, conv_t))
    rep.p(f"Figures are drawn in the {FIGURE_CONVENTION} convention; G = 1e9, M = 1e6. Latency is the median of the "
          f"recorded forward passes (one batch per pass); resolutions are H x W pixels of the view (of the image, "
          f"for global/sliced encoding).")


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


def _md_cell(x: Any) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")


def table_markdown(t: pd.DataFrame) -> str:
    cols = [str(c) for c in t.columns]
    lines = ["| " + " | ".join(_md_cell(c) for c in cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in t.itertuples(index=False):
        lines.append("| " + " | ".join(_md_cell("" if _isna(v) else v) for v in row) + " |")
    return "\n".join(lines)


def render_markdown(rep: Report) -> str:
    out = [f"# {rep.title}", ""]
    for b in rep.blocks:
        if isinstance(b, Table):
            out += [table_markdown(b.shown), "", (f"*{b.caption}* " if b.caption else "")
                    + f"Data: [tables/{b.name}.csv](tables/{b.name}.csv)", ""]
        elif isinstance(b, Figure):
            out += [f"![{b.name}](figures/{b.name}.png)", "",
                    f"*{b.caption}* Data: [figures/{b.name}.csv](figures/{b.name}.csv), vector: "
                    f"[figures/{b.name}.svg](figures/{b.name}.svg)", ""]
        elif b[0] == "h":
            out += ["#" * b[1] + " " + b[2], ""]
        else:
            out += [b[1], ""]
    return "\n".join(out).rstrip() + "\n"


def _inline(text: str) -> str:
    """Markdown-ish inline code (`x`) and emphasis-free text to HTML."""
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


CSS = """body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;max-width:1200px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}table{border-collapse:collapse;margin:.6em 0;font-size:.86em}
th,td{border:1px solid #ccc;padding:.25em .55em;text-align:left;vertical-align:top}th{background:#f3f3f3}
tr:nth-child(even) td{background:#fafafa}figure{margin:1.2em 0}figure img{max-width:100%;height:auto;
border:1px solid #eee}figcaption,.caption{font-size:.88em;color:#444}code{background:#f3f3f3;padding:0 .2em}
.flag{color:#D55E00;font-weight:600}"""


def render_html(rep: Report, images: dict[str, bytes]) -> str:
    """A self-contained page: every figure embedded as a base64 SVG data URI."""
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{html.escape(rep.title)}</title><style>{CSS}</style></head><body>",
           f"<h1>{html.escape(rep.title)}</h1>"]
    for b in rep.blocks:
        if isinstance(b, Table):
            rows = ["<table><thead><tr>" + "".join(f"<th>{html.escape(str(c))}</th>" for c in b.shown.columns)
                    + "</tr></thead><tbody>"]
            for row in b.shown.itertuples(index=False):
                cells = []
                for v in row:
                    s = html.escape("" if _isna(v) else str(v))
                    cells.append(f"<td>{s.replace(FLAG_MARK, f'<span class=flag>{FLAG_MARK}</span>')}</td>")
                rows.append("<tr>" + "".join(cells) + "</tr>")
            rows.append("</tbody></table>")
            out.append(f'<div class="table" id="table-{b.name}">' + "".join(rows)
                       + (f'<p class="caption">{_inline(b.caption)}</p>' if b.caption else "") + "</div>")
        elif isinstance(b, Figure):
            data = base64.b64encode(images[b.name]).decode()
            out.append(f'<figure id="fig-{b.name}"><img alt="{html.escape(b.name)}" src="data:image/svg+xml;base64,{data}">'
                       f"<figcaption>{_inline(b.caption)}</figcaption></figure>")
        elif b[0] == "h":
            out.append(f"<h{b[1]}>{html.escape(b[2])}</h{b[1]}>")
        else:
            out.append(f"<p>{_inline(b[1])}</p>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def parse_formats(formats: Any) -> tuple[str, ...]:
    """``"md,html"`` or a sequence -> a tuple of formats; a one-line error names a bad one."""
    items = [f.strip() for f in formats.split(",")] if isinstance(formats, str) else [str(f).strip() for f in formats]
    items = [f for f in items if f]
    if not items:
        raise UhdProfileError(f"--format {formats!r} is empty; valid: {', '.join(FORMATS)} (comma-separated)")
    for f in items:
        if f not in FORMATS:
            raise UhdProfileError(f"--format {f!r} is not valid; valid: {', '.join(FORMATS)} (comma-separated, e.g. md,html)")
    return tuple(dict.fromkeys(items))


@_styled
def _save_figure(fig, fmt: str) -> bytes:
    buf = io.BytesIO()
    meta = {"Date": None} if fmt == "svg" else {"Software": None}
    fig.savefig(buf, format=fmt, dpi=110 if fmt == "png" else None, metadata=meta)
    return buf.getvalue()


def write_report(run_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                 formats: Any = FORMATS, recount: bool = True) -> dict[str, str]:
    """Build the report of ``run_dir`` and write it to ``out_dir`` (default ``RUN_DIR/report``):
    report.md / report.html (``formats``), figures as PNG + SVG + CSV, tables as CSV.

    ``recount``: count paper figures the run does not hold (seconds each on the CPU). Returns
    ``{name: path}`` of every file written: ``md``, ``html``, ``figures/NAME.png|svg|csv``,
    ``tables/NAME.csv``."""
    fmts = parse_formats(formats)
    rep = build_report(run_dir, recount=recount)
    out = Path(out_dir) if out_dir is not None else Path(run_dir) / REPORT_DIR
    (out / "figures").mkdir(parents=True, exist_ok=True)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}
    svgs: dict[str, bytes] = {}
    for f in rep.figures:
        for fmt in ("png", "svg"):
            blob = _save_figure(f.fig, fmt)
            p = out / "figures" / f"{f.name}.{fmt}"
            p.write_bytes(blob)
            written[f"figures/{f.name}.{fmt}"] = str(p)
            if fmt == "svg":
                svgs[f.name] = blob
        p = out / "figures" / f"{f.name}.csv"
        f.data.to_csv(p, index=False)
        written[f"figures/{f.name}.csv"] = str(p)
    for t in rep.tables:
        p = out / "tables" / f"{t.name}.csv"
        t.data.to_csv(p, index=False)
        written[f"tables/{t.name}.csv"] = str(p)
    if "md" in fmts:
        p = out / "report.md"
        p.write_text(render_markdown(rep), encoding="utf-8")
        written["md"] = str(p)
    if "html" in fmts:
        p = out / "report.html"
        p.write_text(render_html(rep, svgs), encoding="utf-8")
        written["html"] = str(p)
    return written
