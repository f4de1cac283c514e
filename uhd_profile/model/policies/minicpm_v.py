"""MiniCPM-V 4.6 (LLaVA-UHD v4): a thumbnail plus the best grid of slices.

The view geometry is ``uhd_profile.model.slicing.slice_image`` (checked against the MiniCPM-V 4.6
processor in ``tests/test_slicing.py``); this module only turns it into views, tokens and extras.
Every view side is a multiple of 56 px, so each view's 14 px patch grid divides by 4 both ways:
16 ViT patches become one LLM token (a 2x2 merge inside the ViT, another 2x2 in the connector).
"""

from __future__ import annotations

from uhd_profile.model import slicing
from uhd_profile.model.policies.base import (
    Extra,
    ImageViews,
    Param,
    Policy,
    make_view,
    need_bool,
    parse_bool,
    parse_int,
    tower,
)

NAME = "minicpm-v-4.6"
ENCODER = "minicpm-v-4.6"
MERGE = 16  # ViT patches per LLM token


def _rule(width: int, height: int, *, max_slice_nums: int, scale_resolution: int, use_image_id: bool) -> ImageViews:
    need_bool(NAME, "use_image_id", use_image_id)
    s = slicing.slice_image(width, height, max_slice_nums=max_slice_nums, scale_resolution=scale_resolution)
    patch, prefix = tower(ENCODER)

    def llm(size):
        return (size[0] // patch) * (size[1] // patch) // MERGE  # exact: sides are multiples of 56

    views = [make_view("thumbnail", s.thumbnail, patch, prefix, llm(s.thumbnail))]
    if s.grid is not None:
        cols, rows = s.grid
        views += [
            make_view("slice", size, patch, prefix, llm(size), position=(i % cols, i // cols)) for i, size in enumerate(s.slices)
        ]
    n_slices = len(s.slices)
    rows = s.grid[1] if s.grid else 0
    extras = [Extra("image_markers", 2, "special", "processor", "image start/end tokens around the thumbnail's tokens")]
    if n_slices:
        extras += [
            Extra("slice_markers", 2 * n_slices, "special", "processor", "slice start/end tokens around each slice's tokens"),
            Extra(
                "row_separators",
                rows - 1,
                "text",
                "processor",
                "a '\\n' between rows of slices (counted as one token each, as a Qwen-family "
                "tokenizer splits it; no tokenizer is loaded here)",
            ),
        ]
    if use_image_id:
        extras += [
            Extra("image_id_tags", 2, "special", "processor", "image-id start/end tokens before the image"),
            Extra(
                "image_id_number",
                1,
                "text",
                "processor",
                "the image's index in its prompt between the id tags, as text ('0' for the first image: "
                "one token; later images may take more)",
            ),
        ]
    return ImageViews(
        policy=NAME,
        image=(width, height),
        views=tuple(views),
        grid=s.grid,
        canvas=s.refine_size,
        content=None,
        extras=tuple(extras),
        params={"max_slice_nums": max_slice_nums, "scale_resolution": scale_resolution, "use_image_id": use_image_id},
        notes=(
            "aspect ratio kept approximately: each view is scaled to about S^2 px and its sides rounded to "
            "multiples of 56 px; nothing is cropped or padded",
        ),
    )


POLICY = Policy(
    name=NAME,
    description="MiniCPM-V 4.6 / LLaVA-UHD v4: thumbnail + best grid of up to 9 slices of ~448^2 px, 16x to the LLM",
    encoder=ENCODER,
    patch=tower(ENCODER)[0],
    merge=MERGE,
    params=(
        Param("max_slice_nums", slicing.MAX_SLICE_NUMS, "most slices per image (count)", parse_int("max_slice_nums")),
        Param(
            "scale_resolution",
            slicing.SCALE_RESOLUTION,
            "S: side of the square whose area each slice and the thumbnail aim at (px, multiple of 56)",
            parse_int("scale_resolution"),
        ),
        Param(
            "use_image_id",
            True,
            "write the <image_id>N</image_id> tag before the image (processor default: on)",
            parse_bool("use_image_id"),
        ),
    ),
    rule=_rule,
)
