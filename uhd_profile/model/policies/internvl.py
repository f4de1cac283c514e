"""InternVL (2.5 / 3 in ``transformers``): dynamic tiling into 448 px tiles plus a thumbnail.

1. Candidate grids are every (cols, rows) with min_tiles <= cols x rows <= max_tiles, ordered by
   tile count (for equal counts: fewer columns first).
2. The grid whose cols/rows is nearest the image's width/height wins. On an exact tie the later
   candidate replaces the earlier one only when the image's area exceeds half the candidate's
   area (cols x rows x 448^2): more tiles for an image big enough to fill them.
3. The image is squashed to (cols x 448, rows x 448) (aspect ratio only as close as the grid) and
   cut into 448 px tiles, row-major; when there is more than one tile, a thumbnail (the whole image
   squashed to 448 x 448) follows them.
4. Each view is an InternViT-300M input: 32 x 32 patches plus the class token; the class token is
   dropped and a 0.5 pixel shuffle folds 2x2 patches into one token: 256 LLM tokens per view.

Reproduces ``GotOcr2ImageProcessorPil`` with ``crop_to_patches`` (as ``InternVLProcessor`` calls
it) at 448 px, and the processor's ``<img>`` + 256 x views + ``</img>`` expansion.

Two names share this rule: ``internvl`` (InternVL 2.5 / 3: both tile the same way, 1-12 tiles plus a
thumbnail) and ``internvl3`` (InternVL3, the version ``transformers``' InternVL classes are written
for: OpenGVLab/InternVL3-*-hf, ``min_patches=1``, ``max_patches=12``, 448 px, ``image_seq_length=256``,
checked against a real ``InternVLProcessor`` in tests/test_policy_internvl3.py).
"""

from __future__ import annotations

from functools import partial

from uhd_profile.errors import UhdProfileError
from uhd_profile.model.encoders import get_encoder
from uhd_profile.model.policies.base import Extra, Grid, ImageViews, Knob, Param, Policy, make_view, need_int, parse_int, tower

NAME = "internvl"
NAME_V3 = "internvl3"
ENCODER = "internvit-300m-448"
TILE = get_encoder(ENCODER).image_size  # 448
MERGE = 4  # pixel shuffle 0.5: 2x2 patches per LLM token
MIN_TILES = 1  #: processor default (``min_patches``)
MAX_TILES = 12  #: processor default (``max_patches``)
TILES_LIMIT = 1024  #: the most tiles costed (1024 x 448^2 px is ~205 M pixels); more is refused in one line


def candidate_grids(min_tiles: int, max_tiles: int) -> list[Grid]:
    """(cols, rows) with min_tiles <= cols*rows <= max_tiles, by tile count, fewer columns first.
    Only the grids in range are made (about max_tiles x ln(max_tiles) of them, not max_tiles^2)."""
    grids = [(c, r) for c in range(1, max_tiles + 1) for r in range(max(1, -(-min_tiles // c)), max_tiles // c + 1)]
    return sorted(grids, key=lambda g: g[0] * g[1])  # stable: keeps fewer columns first within a count


def best_grid(width: int, height: int, min_tiles: int, max_tiles: int, tile: int = TILE) -> Grid:
    """The tile grid (cols, rows) of a width x height image (rules 1-2 of the module docstring)."""
    ratio = width / height
    best, best_diff = (1, 1), float("inf")
    for cols, rows in candidate_grids(min_tiles, max_tiles):
        diff = abs(ratio - cols / rows)
        if diff < best_diff:
            best, best_diff = (cols, rows), diff
        elif diff == best_diff and width * height > 0.5 * tile * tile * cols * rows:
            best = (cols, rows)
    return best


def _rule(width: int, height: int, *, min_tiles: int, max_tiles: int, name: str = NAME) -> ImageViews:
    need_int(name, "min_tiles", min_tiles, 1)
    need_int(name, "max_tiles", max_tiles, min_tiles, f"it must be an integer >= min_tiles ({min_tiles})")
    if max_tiles > TILES_LIMIT:
        raise UhdProfileError(
            f"{name} parameter max_tiles {max_tiles} is not valid; at most {TILES_LIMIT} tiles are costed "
            f"(the processor's default is {MAX_TILES})"
        )
    patch, prefix = tower(ENCODER)
    per_view = (TILE // patch) ** 2 // MERGE  # 256
    cols, rows = best_grid(width, height, min_tiles, max_tiles)
    views = [make_view("tile", (TILE, TILE), patch, prefix, per_view, position=(i % cols, i // cols)) for i in range(cols * rows)]
    if len(views) > 1:
        views.append(make_view("thumbnail", (TILE, TILE), patch, prefix, per_view))
    extras = (
        Extra("image_start", 1, "special", "processor", "<img> before the image's tokens"),
        Extra("image_end", 1, "special", "processor", "</img> after the image's tokens"),
    )
    canvas = (cols * TILE, rows * TILE)
    sx, sy = canvas[0] / width, canvas[1] / height
    note = (
        f"aspect ratio not kept: squashed to {canvas[0]}x{canvas[1]} (x{sx:.3g} wide, x{sy:.3g} high)"
        if abs(sx / sy - 1) > 1e-9
        else f"aspect ratio kept: scaled x{sx:.3g} to {canvas[0]}x{canvas[1]}"
    )
    notes: tuple[str, ...] = (note + "; nothing is cropped or padded",)
    if len(views) > 1:
        notes += (f"thumbnail: whole image squashed to {TILE}x{TILE}",)
    return ImageViews.tiled(
        name, (width, height), views, (cols, rows), canvas, None, extras, {"min_tiles": min_tiles, "max_tiles": max_tiles}, notes
    )


_PARAMS = (
    Param("min_tiles", MIN_TILES, "fewest 448 px tiles (count; the processor's min_patches)", parse_int("min_tiles")),
    Param(
        "max_tiles",
        MAX_TILES,
        "most 448 px tiles, thumbnail not counted (count; the processor's max_patches)",
        parse_int("max_tiles"),
    ),
)
_KNOB = Knob("max_tiles", 1, 64, 1, "most 448 px tiles per image")

POLICY = Policy(
    name=NAME,
    description="InternVL: 1-12 tiles of 448 px chosen by aspect ratio + a thumbnail, pixel shuffle 0.5 "
    "(256 LLM tokens per view)",
    encoder=ENCODER,
    merge=MERGE,
    llm="qwen2.5-7b",  # InternVL3-8B's LLM (InternVL2.5-8B's InternLM2.5-7B is close in size)
    knob=_KNOB,
    params=_PARAMS,
    rule=_rule,
)

#: InternVL3 (OpenGVLab/InternVL3-*-hf): the same preprocessing as ``internvl`` (its released
#: preprocessor values are the GotOcr2 class defaults: 1-12 tiles of 448 px, thumbnail on), so the
#: same rule; the InternViT-300M tower of InternVL3-1B..14B (InternVL3-38B/78B use InternViT-6B,
#: preset ``internvit-6b-448``, with the same views and tokens).
POLICY_V3 = Policy(
    name=NAME_V3,
    description="InternVL3: 1-12 tiles of 448 px chosen by aspect ratio + a thumbnail, pixel shuffle 0.5 "
    "(256 LLM tokens per view)",
    encoder=ENCODER,
    merge=MERGE,
    llm="qwen2.5-7b",  # InternVL3-8B's LLM is Qwen2.5-7B
    knob=_KNOB,
    params=_PARAMS,
    rule=partial(_rule, name=NAME_V3),
)
