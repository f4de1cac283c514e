"""Formatting and styling shared by the report's tables, figures and sections (pure)."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from uhd_profile.count.conventions import get_convention
from uhd_profile.model.encoders import DEFAULT_ENCODER
from uhd_profile.model.variants import V4_COMPRESSOR

#: the paper's figures' setting: its tower, one 980 px view (width x height)
PAPER_ENCODER, PAPER_SIZE = DEFAULT_ENCODER, (980, 980)

#: the convention figures are drawn in (the paper's, so the figures read next to its numbers)
FIGURE_CONVENTION = "paper"


#: Okabe & Ito (2008), the colour-blind-safe qualitative palette
OKABE_ITO = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky": "#56B4E9",
    "green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "purple": "#CC79A7",
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


#: display category -> colour (the engine's categories, grouped for the breakdown: see tables.breakdown)
CATEGORY_COLOURS = {
    "attention matmuls": OKABE_ITO["blue"],
    "linear layers": OKABE_ITO["sky"],
    "element-wise": OKABE_ITO["yellow"],
    "compressor": OKABE_ITO["vermillion"],
    "connector": OKABE_ITO["purple"],
}


CATEGORIES = tuple(CATEGORY_COLOURS)


FLAG_MARK = "⚠"


def isna(x: Any) -> bool:
    return x is None or x is pd.NA or (isinstance(x, float) and math.isnan(x))


def unit_of(convention: str) -> str:
    """``MACs`` or ``FLOPs``: what one unit of a count in ``convention`` is."""
    return get_convention(convention).unit


def count_column(convention: str) -> str:
    """The record column holding counts in ``convention`` (``paper`` -> ``paper_flops``)."""
    return get_convention(convention).column


def fmt_count(x: Any, convention: str = "paper", digits: int | None = None) -> str:
    """A FLOP/MAC count for a table: G (1e9) above 1e9, else M (1e6)."""
    if isna(x):
        return "n/a"
    x = float(x)
    if x == 0:
        return "0"
    unit = unit_of(convention)
    if abs(x) >= 1e9:
        return f"{x / 1e9:,.{2 if digits is None else digits}f} G{unit}"
    return f"{x / 1e6:,.{2 if digits is None else digits}f} M{unit}"


def fmt_s(x: Any) -> str:
    """Seconds as milliseconds for a table."""
    if isna(x):
        return "n/a"
    return f"{float(x) * 1e3:,.1f} ms"


def fmt_pct(x: Any, digits: int = 2, sign: bool = False) -> str:
    if isna(x):
        return "n/a"
    return f"{float(x):{'+' if sign else ''}.{digits}%}"


def variant_label(row: Any) -> str:
    """Short name of a row's variant: ``baseline`` or ``compressor@depth``, ``+post N`` if any."""
    comp = row["compressor"]
    s = "baseline" if isna(comp) or comp in ("none", None) else f"{comp}@{int(row['depth'])}"
    post = row["post_ratio"]
    if not isna(post) and int(post) > 1:
        s += f" +post{int(post)}"
    enc = row.get("encoding", "view") if hasattr(row, "get") else "view"
    if not isna(enc) and enc != "view":
        packing = row.get("packing", "batched")
        s += f" [{enc}" + ("" if isna(packing) or packing == "batched" else f", {packing}") + "]"
    return s


def resolution_label(row: Any) -> str:
    h, w = int(row["height_px"]), int(row["width_px"])
    return f"{h} px" if h == w else f"{w}x{h} px"


def style_of(comp: str) -> tuple[str, str]:
    return STYLE.get(comp, (OKABE_ITO["black"], "X"))


def flag_text(flagged: Any, text: str) -> str:
    return f"{text} {FLAG_MARK}" if bool(flagged) else text


def conv_note(convention: str) -> str:
    return f"{convention} convention: {get_convention(convention).meaning}"
