"""LLaVA-NeXT (LLaVA-1.6) any-resolution: a base view plus 336 px tiles of the best canvas.

1. The canvas is one of the grid pinpoints (width, height), each side a multiple of 336 px: the one
   that keeps the most of the image's pixels once the image is fitted inside it (aspect ratio
   kept, never counting more pixels than the image has), then the one with the least blank area;
   the earlier pinpoint wins a full tie.
2. The image is scaled to fit the canvas (one side touching, the other rounded up), centred and
   zero-padded to the canvas, and cut into 336 px tiles, row-major.
3. The base view is the whole image squashed to 336 x 336 (aspect ratio not kept); it goes first.
4. Each view is a CLIP ViT-L/14-336 input: 24 x 24 patches plus the class token; the class token is
   dropped, and the projector maps the remaining 576 tokens 1:1 to the LLM.
5. The tiles' 24 x 24 feature maps are laid side by side into one map, and the rows (or columns)
   that cover the padding are removed: the kept extent along the padded axis is the image's side
   scaled to the map, rounded to 7 decimals and truncated, and half the rest (floored) is cut from
   each end. One learned newline vector closes every kept row.

LLM tokens per image = 576 (base) + kept rows x kept columns + kept rows (newlines), as the
LLaVA-NeXT processor in ``transformers`` counts them (and its model's unpadding keeps them). The
per-tile ``llm_tokens`` attribute the kept feature map to the tile each position came from; the
LLM reads them row by row across tiles, not tile by tile.
"""

from __future__ import annotations

import math

from uhd_profile.errors import UhdProfileError
from uhd_profile.model.encoders import get_encoder
from uhd_profile.model.policies.base import Extra, ImageViews, Param, Policy, Size, make_view, parse_sizes, tower

NAME = "llava-next"
ENCODER = "clip-vit-l14-336"
TILE = get_encoder(ENCODER).image_size  # 336: the tower's input side is the tile side
MERGE = 1  # the projector is a per-token MLP
#: (width, height) px; the processor lists the same canvases as [height, width] in this order
GRID_PINPOINTS: tuple[Size, ...] = tuple(Size(w, h) for w, h in ((672, 336), (336, 672), (672, 672), (336, 1008), (1008, 336)))


def best_canvas(width: int, height: int, pinpoints: tuple[Size, ...]) -> Size:
    """The pinpoint (width, height) the image is tiled on (rule 1 of the module docstring)."""
    best, best_kept, best_blank = None, -1, math.inf
    for cw, ch in pinpoints:
        s = min(cw / width, ch / height)
        kept = min(int(width * s) * int(height * s), width * height)
        blank = cw * ch - kept
        if kept > best_kept or (kept == best_kept and blank < best_blank):
            best, best_kept, best_blank = Size(cw, ch), kept, blank
    assert best is not None  # the pinpoints are never empty (checked when the policy is parsed)
    return best


def fit_inside(width: int, height: int, canvas: Size) -> Size:
    """The image's (width, height) once scaled to fit ``canvas``: the tighter side fills it,
    the other side is rounded up (and never exceeds the canvas)."""
    cw, ch = canvas
    sx, sy = cw / width, ch / height
    if sx < sy:
        return Size(cw, min(math.ceil(height * sx), ch))
    return Size(min(math.ceil(width * sy), cw), ch)


def kept_box(width: int, height: int, map_w: int, map_h: int) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the feature positions kept after unpadding a map_w x map_h map
    (rule 5 of the module docstring); right/bottom are exclusive."""
    if width / height > map_w / map_h:  # the image is wider than the map: blank rows above and below
        real = int(round(height * (map_w / width), 7))
        cut = (map_h - real) // 2
        return 0, cut, map_w, map_h - cut
    real = int(round(width * (map_h / height), 7))
    cut = (map_w - real) // 2
    return cut, 0, map_w - cut, map_h


def _overlap(a0: int, a1: int, b0: int, b1: int) -> int:
    return max(0, min(a1, b1) - max(a0, b0))


def padding_text(canvas: tuple[int, int], content: tuple[int, int]) -> str:
    """How the scaled image sits on its canvas: it fills it, or the zero padding either side."""
    pad_x, pad_y = canvas[0] - content[0], canvas[1] - content[1]
    if pad_x:
        return f"{pad_x} px of zero padding left+right"
    return f"{pad_y} px of zero padding top+bottom" if pad_y else "it fills the canvas"


def check_pinpoints(pinpoints, name: str = NAME, tile: int = TILE) -> tuple[Size, ...]:
    """``grid_pinpoints`` as a tuple of (width, height) ``Size``: non-empty, every side a positive
    multiple of ``tile`` px, else a one-line error naming the policy ``name``."""
    error = UhdProfileError(
        f"{name} parameter grid_pinpoints {pinpoints!r} is not valid; it must be a non-empty list of "
        f"(width, height) canvases whose sides are positive multiples of {tile} px, "
        f"e.g. {2 * tile}x{tile},{tile}x{2 * tile},{2 * tile}x{2 * tile}"
    )
    if isinstance(pinpoints, (str, bytes)) or not hasattr(pinpoints, "__iter__"):
        raise error
    pts = []
    for point in pinpoints:
        try:
            w, h = point
        except (TypeError, ValueError):
            raise error from None
        if any(isinstance(v, bool) or not isinstance(v, int) or v < tile or v % tile for v in (w, h)):
            raise error
        pts.append(Size(w, h))
    if not pts:
        raise error
    return tuple(pts)


def _rule(width: int, height: int, *, grid_pinpoints) -> ImageViews:
    pinpoints = check_pinpoints(grid_pinpoints)
    patch, prefix = tower(ENCODER)
    side = TILE // patch  # feature positions per tile side (24)
    canvas = best_canvas(width, height, pinpoints)
    content = fit_inside(width, height, canvas)
    cols, rows = canvas[0] // TILE, canvas[1] // TILE
    left, top, right, bottom = kept_box(width, height, cols * side, rows * side)

    views = [make_view("base", (TILE, TILE), patch, prefix, side * side)]
    for r in range(rows):
        for c in range(cols):
            kept = _overlap(c * side, (c + 1) * side, left, right) * _overlap(r * side, (r + 1) * side, top, bottom)
            views.append(make_view("tile", (TILE, TILE), patch, prefix, kept, position=(c, r)))
    kept_rows = bottom - top
    extras = (
        Extra(
            "image_newline",
            kept_rows,
            "embedding",
            "processor",
            "the model's learned newline vector after each kept row of the tiles' feature map",
        ),
    )
    padding = padding_text(canvas, content)
    notes = (
        f"base view: whole image squashed to {TILE}x{TILE} (aspect ratio not kept)",
        f"tiles: image scaled to {content[0]}x{content[1]} (aspect kept) and centred on the "
        f"{canvas[0]}x{canvas[1]} canvas, {padding}; unpadding keeps {right - left}x{kept_rows} of "
        f"{cols * side}x{rows * side} feature positions",
    )
    return ImageViews.tiled(
        NAME, (width, height), views, (cols, rows), canvas, content, extras, {"grid_pinpoints": pinpoints}, notes
    )


POLICY = Policy(
    name=NAME,
    description="LLaVA-NeXT any-resolution: base view + 336 px tiles of the best pinpoint canvas, "
    "padding unpadded, a newline per row",
    encoder=ENCODER,
    merge=MERGE,
    llm="llama-2-7b",  # Vicuna-7B (Llama-2-7B geometry), LLaVA-NeXT-7B's LLM
    params=(
        Param(
            "grid_pinpoints",
            GRID_PINPOINTS,
            "candidate canvases (width, height) px, sides multiples of 336; earlier wins ties",
            parse_sizes("grid_pinpoints"),
        ),
    ),
    rule=_rule,
)
