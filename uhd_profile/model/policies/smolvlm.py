"""SmolVLM2 and Idefics3: rows x cols square crops of the image scaled to a longest edge, plus a global view.

One rule, two families (``transformers``' ``SmolVLMImageProcessor`` and ``Idefics3ImageProcessor``
share it; ``M`` is the crop side, ``max_image_size``):

1. The image is scaled so its longest edge is ``longest_edge`` px (the processor's ``size``; small
   images are scaled UP too), the other side ``int(long / aspect)`` rounded up to even (at least
   1 px), then capped at 4096 px.
2. It is scaled again so both sides are multiples of ``M``: the long side rounded up to a multiple
   of ``M``, the short side ``int(long' / aspect)`` rounded up to a multiple of ``M`` (aspect ratio
   kept only to within a crop).
3. When a side exceeds ``M`` it is cut into rows x cols crops of ``M`` px (row-major) and the whole
   image, squashed to ``M`` x ``M``, follows as the global view; otherwise the single ``M`` x ``M``
   image is the only view (rows = cols = 0). ``do_image_splitting`` off: one view, squashed to ``M``.
4. Each view is a SigLIP input of (M / patch)^2 patches (no class token); a pixel shuffle of
   ``scale_factor`` s folds s x s patches into one token: ``image_seq_len`` tokens per view.

The processor writes, per crop, ``<fake_token_around_image>`` ``<row_i_col_j>`` and image_seq_len
``<image>`` ids, a ``"\\n"`` after each row, then ``"\\n"`` ``<fake_token_around_image>`` ``<global-img>``
image_seq_len ``<image>`` ``<fake_token_around_image>`` (a single view: the last four only).
``<image>`` ids are the placeholders; ``<fake_token_around_image>``, ``<global-img>`` and the 36
``<row_i_col_j>`` markers are counted as specials (each one added token of the released
tokenizers), the newlines as text (one token each).

``smolvlm2``: SmolVLM2-256M/500M (HuggingFaceTB/SmolVLM2-*-Video-Instruct): 512 px crops,
``size`` 2048 (4 x 512), SigLIP base/16-512, scale_factor 4: 64 tokens per view.
``idefics3``: HuggingFaceM4/Idefics3-8B-Llama3 (the processor class defaults): 364 px crops,
``size`` 1456 (4 x 364), SigLIP so400m/14 at 364, scale_factor 2: 169 tokens per view.
"""

from __future__ import annotations

import math
from functools import partial

from uhd_profile.errors import UhdProfileError
from uhd_profile.model.encoders import get_encoder
from uhd_profile.model.policies.base import (
    Extra,
    ImageViews,
    Knob,
    Param,
    Policy,
    make_view,
    need_bool,
    need_int,
    parse_bool,
    parse_int,
    tower,
)

MAX_IMAGE_SIZE = 4096  #: the processors' absolute cap on the longest edge after rule 1


def resize_longest(width: int, height: int, longest: int) -> tuple[int, int]:
    """(width, height) after rule 1 (``_resize_output_size_rescale_to_max_len`` then the 4096 cap),
    with the processor's own float operations."""
    aspect = width / height
    if width >= height:
        w, h = longest, int(longest / aspect)
        h += h % 2
    else:
        h, w = longest, int(longest * aspect)
        w += w % 2
    w, h = max(w, 1), max(h, 1)
    aspect = w / h
    if w >= h and w > MAX_IMAGE_SIZE:
        w, h = MAX_IMAGE_SIZE, int(MAX_IMAGE_SIZE / aspect)
    elif h > w and h > MAX_IMAGE_SIZE:
        h, w = MAX_IMAGE_SIZE, int(MAX_IMAGE_SIZE * aspect)
    return max(w, 1), max(h, 1)


def resize_to_crops(width: int, height: int, side: int) -> tuple[int, int]:
    """(width, height) after rule 2 (``resize_for_vision_encoder``): both multiples of ``side``."""
    aspect = width / height
    if width >= height:
        w = math.ceil(width / side) * side
        h = math.ceil(int(w / aspect) / side) * side
    else:
        h = math.ceil(height / side) * side
        w = math.ceil(int(h * aspect) / side) * side
    return w, h


def _rule(
    width: int,
    height: int,
    *,
    longest_edge: int,
    do_image_splitting: bool,
    name: str,
    encoder: str,
    side: int,
    scale_factor: int,
) -> ImageViews:
    need_int(name, "longest_edge", longest_edge, 1)
    need_bool(name, "do_image_splitting", do_image_splitting)
    patch, prefix = tower(encoder)
    per_view = (side // patch) ** 2 // scale_factor**2
    scaled = resize_longest(width, height, longest_edge)
    if not do_image_splitting:
        canvas, cols, rows = scaled, 0, 0
    else:
        canvas = resize_to_crops(*scaled, side)
        if 0 in canvas:
            raise UhdProfileError(
                f"{name} cannot encode a {width}x{height} image: scaled to {scaled[0]}x{scaled[1]} its short side "
                f"rounds to 0 px (the processor fails on it too)"
            )
        cols, rows = (canvas[0] // side, canvas[1] // side) if max(canvas) > side else (0, 0)
    views = [make_view("tile", (side, side), patch, prefix, per_view, position=(i % cols, i // cols)) for i in range(rows * cols)]
    split = bool(views)
    views.append(make_view("thumbnail" if split else "image", (side, side), patch, prefix, per_view))
    n = rows * cols
    extras = [
        Extra(
            "fake_token_around_image",
            n + 2,
            "special",
            "processor",
            "<fake_token_around_image> before each crop and around the global view",
        ),
    ]
    if split:
        extras.append(
            Extra("row_col_markers", n, "special", "processor", "<row_i_col_j> before each crop (one added token each)")
        )
    extras.append(Extra("global_img", 1, "special", "processor", "<global-img> before the global view's tokens"))
    if split:
        extras.append(
            Extra(
                "newlines",
                rows + 1,
                "text",
                "processor",
                '"\\n" after each row of crops and before the global view (1 token each)',
            )
        )
    notes: tuple[str, ...]
    if split:
        notes = (
            f"scaled to {scaled[0]}x{scaled[1]} (longest edge {longest_edge}), then to {canvas[0]}x{canvas[1]} "
            f"(multiples of {side}; aspect ratio kept to within a crop) and cut into {cols}x{rows} crops of {side} px",
            f"global view: whole image squashed to {side}x{side}",
        )
        grid, canvas_out = (cols, rows), canvas
    else:
        notes = (f"one view: image squashed to {side}x{side} (aspect ratio not kept)",)
        grid, canvas_out = None, None
    return ImageViews.tiled(
        name,
        (width, height),
        views,
        grid,
        canvas_out,
        None,
        tuple(extras),
        {"longest_edge": longest_edge, "do_image_splitting": do_image_splitting},
        notes,
    )


def _policy(name: str, description: str, encoder: str, scale_factor: int, llm: str) -> Policy:
    side = get_encoder(encoder).image_size
    return Policy(
        name=name,
        description=description,
        encoder=encoder,
        merge=scale_factor**2,
        llm=llm,
        knob=Knob(
            "longest_edge",
            side,
            MAX_IMAGE_SIZE // side * side,
            side,
            f"longest edge the image is scaled to before {side} px crops",
        ),
        params=(
            Param(
                "longest_edge",
                4 * side,
                f"longest edge px the image is scaled to (up or down) before it is cut into {side} px crops "
                "(the processor's size)",
                parse_int("longest_edge"),
            ),
            Param(
                "do_image_splitting",
                True,
                f"cut into {side} px crops plus a global view (off: one {side} px view)",
                parse_bool("do_image_splitting"),
            ),
        ),
        rule=partial(_rule, name=name, encoder=encoder, side=side, scale_factor=scale_factor),
    )


POLICY_SMOLVLM2 = _policy(
    "smolvlm2",
    "SmolVLM2-256M/500M: longest edge to 2048 px, 512 px crops + a global view, pixel shuffle 4 (64 LLM tokens per view)",
    "siglip-b16-512",
    4,
    # SmolLM2-135M/360M (Llama architecture): no small preset exists; llama-2-7b is the closest architecture
    "llama-2-7b",
)
POLICY_IDEFICS3 = _policy(
    "idefics3",
    "Idefics3: longest edge to 1456 px, 364 px crops + a global view, pixel shuffle 2 (169 LLM tokens per view)",
    "siglip-so400m-p14-364",
    2,
    # Llama-3.1-8B (GQA 32/8, hidden 4096): qwen3-8b is the closest preset in size and KV layout
    "qwen3-8b",
)
