"""Qwen2.5-VL: native resolution, one view per image.

The image keeps (about) its own size: each side is moved to a multiple of 28 px (patch 14 x the
2x2 merge), then the whole image is scaled, aspect ratio kept, when its area falls outside
[min_pixels, max_pixels]. The ViT sees (w/14)(h/14) patches (each patch is the image repeated over
the temporal patch of 2, which does not change the count); a 2x2 merger sends a quarter of them to
the LLM. Reproduces ``Qwen2VLImageProcessorPil`` (the processor Qwen2.5-VL uses in ``transformers``).
"""

from __future__ import annotations

import math

from uhd_profile.errors import UhdProfileError
from uhd_profile.model.policies.base import Extra, ImageViews, Knob, Param, Policy, make_view, need_int, parse_int, tower

NAME = "qwen2.5-vl"
ENCODER = "qwen2.5-vl-vit"
MERGE_SIDE = 2  # the merger joins 2x2 neighbouring patches
MERGE = MERGE_SIDE * MERGE_SIDE
MIN_PIXELS = 56 * 56  #: processor default lower bound on the resized area (px)
MAX_PIXELS = 28 * 28 * 1280  #: processor default upper bound on the resized area (px): 1280 LLM tokens
MAX_ASPECT = 200  #: the processor refuses images whose long side exceeds this many short sides


def native_size(width: int, height: int, unit: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """(width, height) px the image is resized to: sides multiples of ``unit``, area brought inside
    [min_pixels, max_pixels] by one uniform scale when the plain rounding falls outside.

    Float steps follow the processor exactly (Python's round-half-even first; when scaling, each side
    divided by the scale and then by the unit before floor/ceil), since the size must match it pixel
    for pixel.
    """
    w = round(width / unit) * unit
    h = round(height / unit) * unit
    if w * h > max_pixels:
        shrink = math.sqrt(width * height / max_pixels)
        # floor keeps the area under the bound; one unit is the least a side can be
        w = max(unit, math.floor(width / shrink / unit) * unit)
        h = max(unit, math.floor(height / shrink / unit) * unit)
    elif w * h < min_pixels:
        grow = math.sqrt(min_pixels / (width * height))
        w = math.ceil(width * grow / unit) * unit
        h = math.ceil(height * grow / unit) * unit
    return w, h


def native_policy(
    name: str,
    encoder: str,
    description: str,
    llm: str,
    min_pixels: int,
    max_pixels: int,
    knob_low: int,
) -> Policy:
    """The Policy of a Qwen-VL-style family: one view of the image at about its own size, sides
    multiples of patch x 2 (``native_size``), area within [min_pixels, max_pixels] (the processor's
    defaults), a 2x2 merge to the LLM, vision start/end specials from the chat template, images
    past ``MAX_ASPECT``:1 refused as the processor refuses them. Qwen2.5-VL and Qwen3-VL differ
    only in the tower (its patch), the pixel bounds and the LLM."""
    patch, prefix = tower(encoder)
    unit = patch * MERGE_SIDE

    def rule(width: int, height: int, *, min_pixels: int, max_pixels: int) -> ImageViews:
        need_int(name, "min_pixels", min_pixels, 1, "it must be a positive integer (pixels)")
        need_int(
            name,
            "max_pixels",
            max_pixels,
            max(min_pixels, unit * unit),
            f"it must be an integer >= min_pixels ({min_pixels}) and >= {unit * unit} (one {unit}x{unit} merge unit)",
        )
        if max(width, height) / min(width, height) > MAX_ASPECT:
            raise UhdProfileError(
                f"image size {width}x{height} is not valid for {name}: its aspect ratio "
                f"{max(width, height) / min(width, height):.4g}:1 exceeds {MAX_ASPECT}:1, which the processor refuses"
            )
        size = native_size(width, height, unit, min_pixels, max_pixels)
        patches = (size[0] // patch) * (size[1] // patch)
        sx, sy = size[0] / width, size[1] / height
        return ImageViews(
            policy=name,
            image=(width, height),
            views=(make_view("image", size, patch, prefix, patches // MERGE),),
            grid=None,
            canvas=None,
            content=None,
            extras=(
                Extra("vision_start", 1, "special", "chat template", "<|vision_start|> before the image's tokens"),
                Extra("vision_end", 1, "special", "chat template", "<|vision_end|> after the image's tokens"),
            ),
            params={"min_pixels": min_pixels, "max_pixels": max_pixels},
            notes=(
                f"aspect ratio kept approximately: scaled x{sx:.3g} wide, x{sy:.3g} high to multiples of {unit} px; "
                f"nothing is cropped or padded",
            ),
        )

    per_token = unit * unit
    return Policy(
        name=name,
        description=description,
        encoder=encoder,
        merge=MERGE,
        llm=llm,
        knob=Knob(
            "max_pixels", knob_low, 8192 * 8192, per_token, f"most pixels of the resized image ({unit}x{unit} merge units)"
        ),
        params=(
            Param("min_pixels", min_pixels, "smallest area the image is scaled up to (px)", parse_int("min_pixels")),
            Param(
                "max_pixels",
                max_pixels,
                f"largest area the image is scaled down to (px; {per_token} px per LLM token)",
                parse_int("max_pixels"),
            ),
        ),
        rule=rule,
    )


POLICY = native_policy(
    NAME,
    ENCODER,
    "Qwen2.5-VL: native resolution, sides to multiples of 28 px within [min_pixels, max_pixels], 2x2 merge to the LLM",
    "qwen2.5-7b",  # Qwen2.5-VL-7B's own text model
    MIN_PIXELS,
    MAX_PIXELS,
    3136,
)
