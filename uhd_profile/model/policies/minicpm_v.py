"""MiniCPM-V 4.6 (LLaVA-UHD v4): a thumbnail plus the best grid of slices, or one global view.

The view geometry is ``uhd_profile.model.slicing`` (``slice_image``, checked against the MiniCPM-V
4.6 processor in ``tests/test_slicing.py``; ``global_resize`` for the paper's global encoding);
this module only turns it into views, tokens and extras. Every view side is a multiple of 4
patches (56 px with the 14 px patch), so each view's patch grid divides by 4 both ways: 16 ViT
patches become one LLM token (a 2x2 merge inside the ViT, another 2x2 in the connector).

This is the policy of the paper, so it is costed under the paper's designs (``baseline``, ``v4``
at any depth, or the tower alone, ``vit``), on the paper's SigLIP-2 so400m/14 by default or any
other tower preset (the views then align to that tower's patch x 4).

MiniCPM-V 4.7 (``minicpm-v-4.7``) is a second policy on the same rule: ``transformers`` gives it
the same image processor class (``MiniCPMV4_6ImageProcessorPil``: 9 slices, 448 px, patch 14,
16x, image ids on) and a processor (``MiniCPMV4_7Processor``) whose image placeholder expansion is
4.6's; what 4.7 changes is in the model (canvas M-RoPE positions for the markers, no
``drop_vision_last_layer``) and in video prompts (no image-id tags), none of which moves a count
here. It is costed on its tower alone (``vit``), processor encoding only.
"""

from __future__ import annotations

import dataclasses

from uhd_profile.errors import UhdProfileError
from uhd_profile.model import slicing
from uhd_profile.model.encoders import DEFAULT_ENCODER
from uhd_profile.model.policies.base import (
    Extra,
    ImageViews,
    Knob,
    Param,
    Policy,
    make_view,
    need_bool,
    parse_bool,
    parse_int,
    tower,
)

NAME = "minicpm-v-4.6"
ENCODER = DEFAULT_ENCODER  # the paper's SigLIP-2 so400m/14 (the released tower has the same geometry)
MERGE = 16  # ViT patches per LLM token
ENCODINGS = ("sliced", "global")


def _rule(
    width: int,
    height: int,
    *,
    encoder: str,
    encoding: str,
    max_slice_nums: int,
    scale_resolution: int,
    use_image_id: bool,
    name: str = NAME,
) -> ImageViews:
    need_bool(name, "use_image_id", use_image_id)
    if encoding not in ENCODINGS:
        raise UhdProfileError(f"{name} parameter encoding {encoding!r} is not valid; valid: {', '.join(ENCODINGS)}")
    patch, prefix = tower(encoder)
    align = patch * 4
    slicing.check_params(max_slice_nums, scale_resolution, align)

    def llm(size):
        return (size[0] // patch) * (size[1] // patch) // MERGE  # exact: sides are multiples of patch x 4

    params = {
        "encoding": encoding,
        "max_slice_nums": max_slice_nums,
        "scale_resolution": scale_resolution,
        "use_image_id": use_image_id,
    }
    id_extras = _image_id_extras() if use_image_id else []
    image_markers = Extra("image_markers", 2, "special", "processor", "image start/end tokens around the image's tokens")
    if encoding == "global":
        g = slicing.global_resize(width, height, max_slice_nums, scale_resolution, align)
        return ImageViews(
            policy=name,
            image=(width, height),
            views=(make_view("global", g.size, patch, prefix, llm(g.size)),),
            grid=None,
            canvas=None,
            content=None,
            extras=(image_markers, *id_extras),
            params=params,
            notes=(
                "global encoding (the paper's comparison, not the processor's): the whole image in one view of about "
                "M x S^2 px, sides rounded to multiples of patch x 4, wrapped like an image",
            ),
            warnings=(g.note,) if g.note else (),
        )
    s = slicing.slice_image(width, height, max_slice_nums, scale_resolution, align)
    views = [make_view("thumbnail", s.thumbnail, patch, prefix, llm(s.thumbnail))]
    if s.grid is not None:
        cols, rows = s.grid
        views += [
            make_view("slice", size, patch, prefix, llm(size), position=(i % cols, i // cols)) for i, size in enumerate(s.slices)
        ]
    n_slices = len(s.slices)
    rows = s.grid[1] if s.grid else 0
    extras = [image_markers]
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
    extras += id_extras
    return ImageViews(
        policy=name,
        image=(width, height),
        views=tuple(views),
        grid=s.grid,
        canvas=s.refine_size,
        content=None,
        extras=tuple(extras),
        params=params,
        notes=(
            "aspect ratio kept approximately: each view is scaled to about S^2 px and its sides rounded to "
            f"multiples of {align} px; nothing is cropped or padded",
        ),
    )


def _image_id_extras() -> list[Extra]:
    return [
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


def parse_encoding(text: str) -> str:
    if text not in ENCODINGS:
        raise UhdProfileError(f"parameter encoding {text!r} is not valid; valid: {', '.join(ENCODINGS)}")
    return text


POLICY = Policy(
    name=NAME,
    description="MiniCPM-V 4.6 / LLaVA-UHD v4: thumbnail + best grid of up to 9 slices of ~448^2 px, 16x to the LLM",
    encoder=ENCODER,
    merge=MERGE,
    llm="qwen3-8b",  # the LLaVA-UHD v4 paper's Qwen3-8B (the released checkpoint's LLM is smaller)
    knob=Knob("max_slice_nums", 1, 64, 1, "most slices per image"),
    variants=("baseline", "v4", "vit"),
    default_variants=("baseline", "v4"),
    swappable_encoder=True,
    encodings=ENCODINGS,
    params=(
        Param(
            "encoding",
            "sliced",
            "sliced (the processor's: thumbnail + slices) or global (the paper's comparison: one view of ~M x S^2 px)",
            parse_encoding,
        ),
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


NAME_V47 = "minicpm-v-4.7"


def _rule_v47(width: int, height: int, **params) -> ImageViews:
    """4.6's sliced rule under 4.7's name; ``encoding`` is not one of its parameters."""
    v = _rule(width, height, encoder=ENCODER, encoding="sliced", name=NAME_V47, **params)
    return dataclasses.replace(v, params={k: x for k, x in v.params.items() if k != "encoding"})


#: MiniCPM-V 4.7: the 4.6 rule at the same processor defaults, sliced encoding only, costed on the
#: tower alone. The tower preset is 4.6's (MiniCPMV4_7VisionConfig is MiniCPMV4_6VisionConfig).
POLICY_V47 = Policy(
    name=NAME_V47,
    description="MiniCPM-V 4.7: thumbnail + best grid of up to 9 slices of ~448^2 px, 16x to the LLM (4.6's image rule)",
    encoder=ENCODER,
    merge=MERGE,
    # MiniCPMV4_7Config ships the same default text model (qwen3_5_text) as MiniCPMV4_6Config
    llm="minicpm-v-4.6-llm",
    knob=Knob("max_slice_nums", 1, 64, 1, "most slices per image"),
    params=tuple(p for p in POLICY.params if p.name != "encoding"),
    rule=_rule_v47,
)
