"""LLaVA-OneVision (single image, ``anyres_max_9``): a base view plus 384 px crops of the best canvas.

1. The canvas is one of the grid pinpoints: every (cols x 384, rows x 384) with 1 <= cols, rows <= 6
   (36 canvases up to 2304 x 2304), chosen as LLaVA-NeXT chooses (the most of the image's pixels
   kept once it is fitted inside, then the least blank area, the earlier pinpoint on a full tie).
2. The image is scaled to fit the canvas (aspect ratio kept), centred and zero-padded, and cut into
   384 px crops, row-major; the base view (the whole image squashed to 384 x 384) goes first.
3. Each view is a SigLIP so400m/14-384 input: 27 x 27 = 729 patches, no class token, every one kept
   (``vision_feature_select_strategy="full"``); the projector maps them 1:1 to the LLM.
4. The crops' 27 x 27 maps are laid side by side and the rows (or columns) covering the padding
   removed, as LLaVA-NeXT does. When the kept map holds more than 1.1 x the features of
   ``max_crops`` (9) crops, ``ratio = sqrt(rows x cols / (9 x 729))``, it is scaled down (bilinear)
   to ``int(rows // ratio) x int(cols // ratio)``.
5. One learned newline vector closes every row of that map.

LLM tokens per image = 729 (base) + rows' x cols' + rows' (newlines), all ``<image>`` ids, as
``LlavaOnevisionProcessor._get_number_of_features`` counts them (and the model's
``pack_image_features`` builds them). The crops' ``llm_tokens`` attribute each position of the final
map to the crop its sample point (the centre of the position, mapped back into the kept map) falls
in; the LLM reads the map row by row across crops. Only single images are modelled: the processor
gives an image of a multi-image prompt 729 + 1 tokens and no crops.
"""

from __future__ import annotations

import math

from uhd_profile.model.encoders import get_encoder
from uhd_profile.model.policies.base import (
    Extra,
    ImageViews,
    Knob,
    Param,
    Policy,
    Size,
    make_view,
    need_int,
    parse_int,
    parse_sizes,
    tower,
)
from uhd_profile.model.policies.llava_next import best_canvas, check_pinpoints, fit_inside, kept_box, padding_text

NAME = "llava-onevision"
ENCODER = "siglip-so400m-p14-384"
TILE = get_encoder(ENCODER).image_size  # 384
MERGE = 1  # a per-token MLP projector
MAX_CROPS = 9  #: the processor's vision_aspect_ratio "anyres_max_9"
SCALE_SLACK = 1.1  #: the map is scaled down only past 1.1 x the max_crops features
#: (width, height) px, in the image processor's order (it lists them as [height, width]: the
#: default ``image_grid_pinpoints`` of LlavaOnevisionImageProcessor, rows-major over 384..2304)
GRID_PINPOINTS: tuple[Size, ...] = tuple(Size(w * TILE, h * TILE) for h in range(1, 7) for w in range(1, 7))


def _check_pinpoints(pinpoints) -> tuple[Size, ...]:
    return check_pinpoints(pinpoints, NAME, TILE)


def final_map(kept_rows: int, kept_cols: int, side: int, max_crops: int) -> tuple[int, int, float]:
    """(rows, cols, ratio) of the feature map the LLM reads (rule 4); ratio 1.0 when not scaled."""
    ratio = math.sqrt(kept_rows * kept_cols / (max_crops * side**2))
    if ratio > SCALE_SLACK:
        return int(kept_rows // ratio), int(kept_cols // ratio), ratio
    return kept_rows, kept_cols, 1.0


def _rule(width: int, height: int, *, grid_pinpoints, max_crops: int) -> ImageViews:
    pinpoints = _check_pinpoints(grid_pinpoints)
    need_int(NAME, "max_crops", max_crops, 1)
    patch, prefix = tower(ENCODER)
    side = TILE // patch  # 27 feature positions per crop side
    canvas = best_canvas(width, height, pinpoints)
    content = fit_inside(width, height, canvas)
    cols, rows = canvas[0] // TILE, canvas[1] // TILE
    left, top, right, bottom = kept_box(width, height, cols * side, rows * side)
    kept_w, kept_h = right - left, bottom - top
    out_h, out_w, ratio = final_map(kept_h, kept_w, side, max_crops)

    # attribute each final position to the crop its centre samples from (exact sum, see docstring)
    per_crop = [[0] * cols for _ in range(rows)]
    col_of = [min(cols - 1, int((left + (j + 0.5) * kept_w / out_w) // side)) for j in range(out_w)]
    row_of = [min(rows - 1, int((top + (i + 0.5) * kept_h / out_h) // side)) for i in range(out_h)]
    for r in row_of:
        for c in col_of:
            per_crop[r][c] += 1

    views = [make_view("base", (TILE, TILE), patch, prefix, side * side)]
    views += [
        make_view("tile", (TILE, TILE), patch, prefix, per_crop[r][c], position=(c, r)) for r in range(rows) for c in range(cols)
    ]
    extras = (
        Extra(
            "image_newline",
            out_h,
            "embedding",
            "processor",
            "the model's learned newline vector after each row of the crops' (unpadded, scaled) feature map",
        ),
    )
    padding = padding_text(canvas, content)
    notes = [
        f"base view: whole image squashed to {TILE}x{TILE} (aspect ratio not kept)",
        f"crops: image scaled to {content[0]}x{content[1]} (aspect kept) and centred on the "
        f"{canvas[0]}x{canvas[1]} canvas, {padding}; unpadding keeps {kept_w}x{kept_h} of "
        f"{cols * side}x{rows * side} feature positions",
    ]
    if ratio > 1.0:
        notes.append(
            f"more than {SCALE_SLACK} x {max_crops} crops' features: the kept map is scaled down /{ratio:.3g} "
            f"to {out_w}x{out_h} (bilinear)"
        )
    return ImageViews.tiled(
        NAME,
        (width, height),
        views,
        (cols, rows),
        canvas,
        content,
        extras,
        {"grid_pinpoints": pinpoints, "max_crops": max_crops},
        tuple(notes),
    )


POLICY = Policy(
    name=NAME,
    description="LLaVA-OneVision anyres_max_9: base view + up to 6x6 crops of 384 px, unpadded, scaled down "
    "past 9 crops' features, a newline per row",
    encoder=ENCODER,
    merge=MERGE,
    llm="qwen2.5-7b",  # LLaVA-OneVision-7B's Qwen2-7B has the Qwen2.5-7B geometry
    knob=Knob("max_crops", 1, 36, 1, "crops' worth of features kept before the map is scaled down (anyres_max_N)"),
    params=(
        Param(
            "grid_pinpoints",
            GRID_PINPOINTS,
            "candidate canvases (width, height) px, sides multiples of 384; earlier wins ties",
            parse_sizes("grid_pinpoints"),
        ),
        Param(
            "max_crops",
            MAX_CROPS,
            "crops' worth of features kept before the map is scaled down (count; the processor's anyres_max_N)",
            parse_int("max_crops"),
        ),
    ),
    rule=_rule,
)
