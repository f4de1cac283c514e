"""A folder of images: what each costs under one or more policies, and the summary over them.

* ``list_files(directory)`` the files a dataset reads (the tool's own outputs are never read back).
* ``cost_dataset(paths, items)`` -> (rows, skipped): every readable image costed with ``cost_item``
  under each ``PolicyChoice`` (``uhd_profile.analyse.cost``: a policy with its parameters), one row per variant
  (``ItemCost.rows``: the same columns for every policy).
* ``summarize(rows)`` n, mean, median, p90 and total per policy, encoding, variant and metric;
  ``histogram(rows)`` a matplotlib Figure; ``summary_json(...)`` the one ``summary.json`` shape.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from uhd_profile.analyse.cost import COUNT_COLUMNS, LLM_COLUMNS, LlmSettings, PolicyChoice
from uhd_profile.analyse.images import image_size
from uhd_profile.count.conventions import CONVENTIONS, get_convention
from uhd_profile.errors import UhdProfileError
from uhd_profile.model.policies.base import TOKEN_FIELDS

OUTPUT_FILES = ("per_image.csv", "summary.csv", "summary.json", "histogram.png")
"""The files ``dataset`` writes; a folder's files of these names are the tool's, not images."""
TOKEN_METRICS = tuple(f for f in TOKEN_FIELDS if f != "vit_padding_tokens")
METRICS = (*TOKEN_METRICS, *COUNT_COLUMNS)
GROUP_KEYS = ("policy", "encoding", "variant")
UNITS = {
    "vit_tokens": "tokens the tower runs on (padding included)",
    "placeholder_tokens": "image placeholder ids the processor writes",
    "special_tokens": "wrapper special tokens",
    "text_tokens": "text tokens the processor or chat template adds (counted estimate)",
    "llm_tokens": "everything the LLM sees for the image (placeholder + special + text)",
}


def list_files(directory: str | os.PathLike) -> list[Path]:
    """Regular files directly in ``directory`` (hidden files and the tool's own output files
    skipped), sorted by name."""
    d = Path(directory)
    if not d.is_dir():
        raise UhdProfileError(f"{d}: not a directory; give a folder of images")
    return sorted(p for p in d.iterdir() if p.is_file() and not p.name.startswith(".") and p.name not in OUTPUT_FILES)


def cost_dataset(
    paths: Iterable[Path],
    items: list[PolicyChoice],
    exif_transpose: bool = False,
    llm: LlmSettings | None = None,
    progress: Callable[[Any], None] | None = None,
) -> tuple[list[dict], list[dict]]:
    """Rows (``ItemCost.rows``) for every readable image in ``paths`` under each of ``items``, side by
    side, and the skipped files as ``{"path", "reason"}``. ``progress(path)`` is called after each
    file. Files but no readable image among them is a one-line ``UhdProfileError``."""
    for item in items:
        item.check()
    rows: list[dict] = []
    skipped: list[dict] = []
    for p in paths:
        try:
            w, h = image_size(p, exif_transpose)
        except UhdProfileError as exc:
            skipped.append({"path": str(p), "reason": str(exc)})
        else:
            for it in items:
                rows.extend(it.cost(w, h, str(p), llm).rows())
        if progress is not None:
            progress(p)
    if skipped and not rows:
        which = "the one file is not" if len(skipped) == 1 else f"none of the {len(skipped)} files is"
        raise UhdProfileError(f"{which} a readable image (first: {skipped[0]['reason']})")
    return rows, skipped


def frame(rows: list[dict]):
    """Per-image rows as a DataFrame (integer columns stay integers, a missing grid is <NA>)."""
    import pandas as pd

    df = pd.DataFrame(rows)
    for col in ("grid_cols", "grid_rows"):
        if col in df:
            df[col] = df[col].astype("Int64")
    return df


def _p90(values) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(values, dtype=float), 90)) if len(values) else math.nan


def summarize(rows: list[dict]):
    """DataFrame: per policy, encoding, variant and metric (tokens, FLOPs in each convention, and
    with an LLM its stages and the totals) over images: n, mean, median, p90 (linear
    interpolation) and total."""
    import pandas as pd

    columns = [*GROUP_KEYS, "metric", "n", "mean", "median", "p90", "total"]
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=columns)
    extra = [m for m in (*LLM_COLUMNS, *(f"total_{c}" for c in COUNT_COLUMNS)) if m in df]
    out = []
    for key, g in df.groupby(list(GROUP_KEYS), sort=False):
        for m in (*METRICS, *extra):
            v = g[m].astype(float)
            out.append(
                {
                    **dict(zip(GROUP_KEYS, key)),
                    "metric": m,
                    "n": int(len(v)),
                    "mean": float(v.mean()),
                    "median": float(v.median()),
                    "p90": _p90(v.tolist()),
                    "total": int(g[m].sum()),
                }
            )
    return pd.DataFrame(out, columns=columns)


def summary_json(
    directory: str, items: list[PolicyChoice], rows: list[dict], skipped: list[dict], summary, llm: LlmSettings | None
) -> dict[str, Any]:
    """``summary.json``: one shape whatever the policies (docs/schema.md)."""
    return {
        "directory": str(directory),
        "images": len({r["path"] for r in rows}),
        "policies": [it.to_dict() for it in items],
        "llm": llm.to_dict() if llm else None,
        "skipped": skipped,
        "units": {
            **UNITS,
            **{c.column: f"{c.unit} ({c.name} convention)" for c in CONVENTIONS.values()},
            **(
                {
                    "llm_prefill_<count>": "the LLM prefill over llm_tokens plus the prompt",
                    "llm_decode_<count>": "the LLM decode",
                    "total_<count>": "vision plus both LLM stages",
                }
                if llm
                else {}
            ),
        },
        "conventions": {c.name: c.meaning for c in CONVENTIONS.values()},
        "summary": summary.to_dict(orient="records"),
    }


def histogram(rows: list[dict], convention: str = "macs"):
    """Figure: per-image cost (G, in ``convention``) per policy, encoding and variant, and tokens
    to the LLM per policy and encoding. Built without pyplot (no backend is switched)."""
    import numpy as np
    import pandas as pd
    from matplotlib.figure import Figure

    conv = get_convention(convention)
    df = pd.DataFrame(rows)
    fig = Figure(figsize=(12, 4.5))
    axes = fig.subplots(1, 2)
    if not df.empty:
        bins = np.linspace(0, max(float(df[conv.column].max()) / 1e9, 1e-9) * 1.02, 31)
        for (pol, enc, variant), g in df.groupby(list(GROUP_KEYS), sort=False):
            axes[0].hist(g[conv.column] / 1e9, bins=bins, alpha=0.5, label=f"{pol} {enc}, {variant}")
        bins = np.linspace(0, max(float(df["llm_tokens"].max()), 1.0) * 1.02, 31)
        for (pol, enc), g in df.groupby(["policy", "encoding"], sort=False):
            first = g[g["variant"] == g["variant"].iloc[0]]
            axes[1].hist(first["llm_tokens"], bins=bins, alpha=0.5, label=f"{pol} {enc}")
    axes[0].set(
        xlabel=f"visual encoding per image, {conv.giga} ({convention} convention)", ylabel="images", title="cost per image"
    )
    axes[1].set(xlabel="tokens the LLM sees per image", ylabel="images", title="LLM tokens per image")
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    n = df["path"].nunique() if not df.empty else 0
    fig.suptitle(f"{n} images under {', '.join(dict.fromkeys(df['policy'])) if not df.empty else 'no policy'}")
    fig.tight_layout()
    return fig


__all__ = [
    "GROUP_KEYS",
    "METRICS",
    "OUTPUT_FILES",
    "cost_dataset",
    "frame",
    "histogram",
    "list_files",
    "summarize",
    "summary_json",
]
