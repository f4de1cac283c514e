"""Phi-4-multimodal: dynamic HD crops of 448 px (up to 36) plus a global view, 2x2 average pooling.

1. Crop grid: (ceil(w / 448), ceil(h / 448)) when that is at most ``dynamic_hd`` (36) crops;
   otherwise the (cols, rows) with 1 <= cols x rows <= dynamic_hd whose cols/rows is nearest w/h
   (ties as InternVL's: a later candidate with the same distance wins when the image's area exceeds
   half of cols x rows x 448^2).
2. The image is scaled, aspect ratio kept, to fill the canvas (cols x 448, rows x 448) on one side
   (the other side ``int(side x scale)``) and padded with white on the right or bottom; it is cut
   into cols x rows crops of 448 px, row-major, and a global view (the padded canvas resized to
   448 x 448) goes first: 1 + cols x rows views, all run by the tower (padded patches included; the
   tower masks them in attention).
3. Each view is a SigLIP so400m/14 input at 448 px: 32 x 32 patches, no class token; the model
   pools 2x2 patches into one token (16 x 16 per view). Padded crop area is then dropped: a patch
   column/row is padding when it lies in the last ``floor(pad / 14)`` patch columns/rows, and a
   pooled token is kept when its top-left patch is real.
4. The LLM sees, per image: the crops' kept tokens as one map with a learned newline after each
   kept row, a learned separator, then the global view's 256 tokens with a newline after each of
   its 16 rows: 256 + 16 + 1 + kept + kept rows placeholder ids (the processor's count).
5. An image whose scaled side would be under 10 px is refused (the processor raises "the aspect
   ratio is very extreme").

Reproduces ``Phi4MultimodalImageProcessor`` (``_get_crop_layout``, ``_get_crop_attention_mask``,
``_get_num_image_tokens``) at its class defaults (microsoft/Phi-4-multimodal-instruct: 448 px,
patch 14, ``dynamic_hd=36``) and ``Phi4MultimodalProcessor``'s ``<|image|>`` x count expansion.
"""

from __future__ import annotations

import math
from functools import lru_cache

from uhd_profile.errors import UhdProfileError
from uhd_profile.model.encoders import get_encoder
from uhd_profile.model.policies.base import Extra, Grid, ImageViews, Knob, Param, Policy, make_view, need_int, parse_int, tower

NAME = "phi-4-multimodal"
ENCODER = "phi4-mm-siglip-448"
CROP = get_encoder(ENCODER).image_size  # 448
MERGE = 4  # AvgPool2d(2): 2x2 patches per LLM token
DYNAMIC_HD = 36  #: processor default: most crops per image
CROPS_LIMIT = 256  #: the most crops costed; more is refused in one line
MIN_SIDE = 10  #: the processor refuses a scaled side under this (px)


@lru_cache(maxsize=16)
def _target_ratios(max_num: int, min_num: int = 1) -> tuple[Grid, ...]:
    """The processor's candidate grids, in its order (a set sorted by crop count)."""
    ratios = {
        (i, j)
        for n in range(min_num, max_num + 1)
        for i in range(1, n + 1)
        for j in range(1, n + 1)
        if min_num <= i * j <= max_num
    }
    return tuple(sorted(ratios, key=lambda x: x[0] * x[1]))


def crop_layout(width: int, height: int, max_num: int, crop: int = CROP) -> tuple[Grid, tuple[int, int], tuple[int, int]]:
    """((cols, rows), scaled (w, h), padding (w, h)) of a width x height image (rules 1-2)."""
    cols, rows = math.ceil(width / float(crop)), math.ceil(height / float(crop))
    if cols * rows > max_num:
        aspect, area = width / height, width * height
        best, best_diff = (1, 1), float("inf")
        for c, r in _target_ratios(max_num):
            diff = abs(aspect - c / r)
            if diff < best_diff:
                best, best_diff = (c, r), diff
            elif diff == best_diff and area > 0.5 * crop * crop * c * r:
                best = (c, r)
        cols, rows = best
    tw, th = crop * cols, crop * rows
    rw, rh = tw / width, th / height
    if rw < rh:
        new, pad = (tw, int(height * rw)), (0, th - int(height * rw))
    else:
        new, pad = (int(width * rh), th), (tw - int(width * rh), 0)
    return (cols, rows), new, pad


def _kept(n_crops: int, pad: int, patch: int, per_side: int) -> list[int]:
    """Pooled tokens kept per crop along one axis: those whose first patch is not padding."""
    valid = per_side * n_crops - (pad // patch if pad >= patch else 0)  # real patch columns (rows)
    return [min(max(math.ceil((valid - per_side * k) / 2), 0), per_side // 2) for k in range(n_crops)]


def _rule(width: int, height: int, *, dynamic_hd: int) -> ImageViews:
    need_int(NAME, "dynamic_hd", dynamic_hd, 1)
    if dynamic_hd > CROPS_LIMIT:
        raise UhdProfileError(
            f"{NAME} parameter dynamic_hd {dynamic_hd} is not valid; at most {CROPS_LIMIT} crops are costed "
            f"(the processor's default is {DYNAMIC_HD})"
        )
    patch, prefix = tower(ENCODER)
    side = CROP // patch  # 32 patches per crop side
    (cols, rows), new, pad = crop_layout(width, height, dynamic_hd)
    if min(new[1], rows * CROP) < MIN_SIDE or min(new[0], cols * CROP) < MIN_SIDE:
        raise UhdProfileError(
            f"image size {width}x{height} is too extreme for {NAME}: it scales to {new[0]}x{new[1]} px, under "
            f"{MIN_SIDE} px on a side (the processor refuses it: 'the aspect ratio is very extreme')"
        )
    kc, kr = _kept(cols, pad[0], patch, side), _kept(rows, pad[1], patch, side)
    per_view = (side // 2) ** 2  # 256
    views = [make_view("global", (CROP, CROP), patch, prefix, per_view)]
    views += [
        make_view("crop", (CROP, CROP), patch, prefix, kc[i % cols] * kr[i // cols], position=(i % cols, i // cols))
        for i in range(cols * rows)
    ]
    kept_rows = sum(kr)
    extras = (
        Extra(
            "crop_newlines",
            kept_rows,
            "embedding",
            "processor",
            "a learned newline after each kept row of the crops' pooled map",
        ),
        Extra("global_separator", 1, "embedding", "processor", "a learned separator between the crops and the global view"),
        Extra("global_newlines", side // 2, "embedding", "processor", "a learned newline after each of the global view's rows"),
    )
    canvas = (cols * CROP, rows * CROP)
    padded = pad != (0, 0)
    notes = (
        f"aspect ratio kept: scaled x{max(new[0] / width, new[1] / height):.3g} to {new[0]}x{new[1]}"
        + (
            f", padded with white to {canvas[0]}x{canvas[1]} (padded patches run in the tower, dropped before the LLM)"
            if padded
            else ""
        )
        + "; nothing is cropped",
        f"global view: the {canvas[0]}x{canvas[1]} canvas squashed to {CROP}x{CROP}",
    )
    return ImageViews.tiled(
        NAME, (width, height), views, (cols, rows), canvas, new if padded else None, extras, {"dynamic_hd": dynamic_hd}, notes
    )


POLICY = Policy(
    name=NAME,
    description="Phi-4-multimodal: a global view + up to 36 HD crops of 448 px, 2x2 pooling, padding dropped, "
    "learned newlines and separator",
    encoder=ENCODER,
    merge=MERGE,
    # Phi-4-mini (32 layers, d 3072, MLP 8192, GQA 24/8 x 128, ~3.8B) has no preset; qwen3-8b is the
    # closest in attention layout (8 KV heads x 128, 36 layers) but about twice its FLOPs per token
    llm="qwen3-8b",
    knob=Knob("dynamic_hd", 1, 64, 1, "most 448 px crops per image"),
    params=(
        Param(
            "dynamic_hd",
            DYNAMIC_HD,
            "most 448 px crops, global view not counted (count; the processor's dynamic_hd)",
            parse_int("dynamic_hd"),
        ),
    ),
    rule=_rule,
)
