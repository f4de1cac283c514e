"""Gemma 4: one view per image at (about) its aspect ratio, sized to a soft-token budget.

The image is scaled, aspect ratio kept, to the largest size whose sides are multiples of 48 px
(patch 16 x the 3x3 pooling) and whose 16 px patch grid holds at most ``budget x 9`` patches
(``max_soft_tokens``, one of 70 / 140 / 280 / 560 / 1120; 280 by default). When the short side
would round to 0 it is set to 48 px and the long side to ``floor(long / short) x 48`` px, capped at
``budget x 48``. The tower then runs on the patch sequence **padded to budget x 9 patches**
whatever the image (the padding is masked in attention and in the pooling, but computed), and a
3x3 average pooling sends one token per 9 real patches to the LLM, wrapped in ``<|image>`` ...
``<image|>``. Reproduces ``Gemma4ImageProcessorPil`` / ``Gemma4Processor`` in ``transformers``
(``get_aspect_ratio_preserving_size``; ``pixel_values`` is (images, budget x 9, 768), the
padding marked by position ids (-1, -1)).

Only the default mode is modelled; videos (``Gemma4VideoProcessor``, its own budget and
timestamps) and audio are not.
"""

from __future__ import annotations

import math

from uhd_profile.errors import UhdProfileError
from uhd_profile.model.policies.base import Extra, ImageViews, Param, Policy, make_view, parse_int, tower

NAME = "gemma-4"
ENCODER = "gemma4-vision"
POOL = 3  #: the pooling kernel side: 3x3 patches per soft token
MERGE = POOL * POOL
BUDGETS = (70, 140, 280, 560, 1120)  #: the soft-token budgets the processor accepts
DEFAULT_BUDGET = 280  #: ``Gemma4ImageProcessorPil.max_soft_tokens``


def budget_size(width: int, height: int, patch: int, budget: int) -> tuple[int, int]:
    """(width, height) px the processor resizes a ``width`` x ``height`` image to: the float steps of
    ``get_aspect_ratio_preserving_size`` exactly (it works in (height, width))."""
    return _resize(width, height, patch, budget)[0]


def _resize(width: int, height: int, patch: int, budget: int) -> tuple[tuple[int, int], bool]:
    """``budget_size`` and whether a side rounded to 0 and was set to one 48 px unit (the long side
    then follows ``floor(long / short)``, not the aspect ratio)."""
    max_patches = budget * MERGE
    target_px = max_patches * patch**2
    factor = math.sqrt(target_px / (height * width))
    unit = POOL * patch
    h = int(math.floor(factor * height / unit)) * unit
    w = int(math.floor(factor * width / unit)) * unit
    if h == 0 and w == 0:  # cannot happen (factor^2 x area = budget x 9 patches); the processor raises
        raise UhdProfileError(
            f"image size {width}x{height} is not valid for {NAME}: it resizes to 0x0, which the processor refuses"
        )
    longest = (max_patches // MERGE) * unit
    if h == 0:
        return (min(int(math.floor(width / height)) * unit, longest), unit), True
    if w == 0:
        return (unit, min(int(math.floor(height / width)) * unit, longest)), True
    return (w, h), False


def _rule(width: int, height: int, *, max_soft_tokens: int) -> ImageViews:
    if isinstance(max_soft_tokens, bool) or max_soft_tokens not in BUDGETS:
        raise UhdProfileError(
            f"{NAME} parameter max_soft_tokens {max_soft_tokens!r} is not valid; it must be one of "
            f"{', '.join(map(str, BUDGETS))} (the processor's soft-token budgets)"
        )
    patch, prefix = tower(ENCODER)
    size, clamped = _resize(width, height, patch, max_soft_tokens)
    cols, rows = size[0] // patch, size[1] // patch
    real = cols * rows
    seq = max_soft_tokens * MERGE
    view = make_view("image", size, patch, prefix, real // MERGE, padding=seq - real)
    extras = (
        Extra("image_start", 1, "special", "processor", "<|image> (boi) before the image's soft tokens"),
        Extra("image_end", 1, "special", "processor", "<image|> (eoi) after the image's soft tokens"),
    )
    sx, sy = size[0] / width, size[1] / height
    notes = [
        (
            f"aspect ratio not kept: the short side is set to {POOL * patch} px and the long side to "
            f"{max(size)} px (x{sx:.3g} wide, x{sy:.3g} high)"
            if clamped
            else f"aspect ratio kept approximately: scaled x{sx:.3g} wide, x{sy:.3g} high to multiples of {POOL * patch} px; "
            "nothing is cropped"
        ),
        (
            f"{cols}x{rows} = {real} real patches, padded to the {max_soft_tokens}-token budget's {seq} patches: "
            f"{seq - real} padding patches ({(seq - real) / seq:.1%} of the sequence) run through the tower, masked"
            if seq > real
            else f"{cols}x{rows} = {real} real patches fill the {max_soft_tokens}-token budget's {seq} patches: no padding"
        ),
        f"{MERGE}:1 from the 3x3 average pooling: {real // MERGE} soft tokens reach the LLM "
        f"(the tower's FLOPs are counted on all {seq} patches)",
    ]
    return ImageViews(
        policy=NAME,
        image=(width, height),
        views=(view,),
        grid=None,
        canvas=None,
        content=None,
        extras=extras,
        params={"max_soft_tokens": max_soft_tokens},
        notes=tuple(notes),
    )


POLICY = Policy(
    name=NAME,
    description="Gemma 4: one aspect-preserving view sized to a soft-token budget (x9 patches, the tower runs "
    "the padded budget), 3x3 pooling to the LLM",
    encoder=ENCODER,
    merge=MERGE,
    # Gemma 4's text models (E2B: 30-35 layers, d 2304..; 31B dense; 26B-A4B MoE) have no preset; Qwen3-8B is
    # the closest existing one in kind (GQA, qk-norm, gated MLP), larger than E2B/E4B and smaller than 31B.
    llm="qwen3-8b",
    # the budget is a list of allowed values (70 x 2^k), not a linear step: no planner knob
    knob=None,
    params=(
        Param(
            "max_soft_tokens",
            DEFAULT_BUDGET,
            "soft-token budget per image, one of 70, 140, 280, 560, 1120 (the tower runs budget x 9 patches)",
            parse_int("max_soft_tokens"),
        ),
    ),
    rule=_rule,
)
