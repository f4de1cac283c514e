"""Image size -> views: LLaVA-UHD / MiniCPM-V slicing and the global-encoding resize (docs/paper.md §5, §6).

Pure functions of an image's (width, height) in pixels; no pixels are touched. Sizes in this
module are always ``(width, height)``, like image sizes; grids are ``(cols, rows)``.

* ``slice_image(w, h)``: the thumbnail plus an aspect-ratio-aware grid of slices (docs/paper.md §5;
  the same logic as ``slice_image_new`` in the LLaVA-UHD v4 code and the MiniCPM-V 4.6 image
  processor in ``transformers``, which the tests check size by size).
* ``global_resize(w, h)``: the whole image resized to at most ``max_slice_nums * S^2`` pixels,
  aspect ratio kept, sides aligned (docs/paper.md §6; the paper does not release this code, so this is
  the natural reading: ``best_resize`` with S replaced by S * sqrt(max_slice_nums), downscale only).

Every view side is a multiple of ``align`` (56 px = patch 14 x 4 by default: two 2x2 merges, so each
view's token grid survives an in-ViT compressor plus a 4x connector, or a 16x connector).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from uhd_profile.errors import UhdProfileError
from uhd_profile.units import Size

SCALE_RESOLUTION = 448  #: S, the area target of one slice is S^2 px
MAX_SLICE_NUMS = 9  #: M, the most slices (and the global-encoding budget, M * S^2 px)
SLICES_LIMIT = 1024  #: the most slices costed (the grid search and the views grow with it)
ALIGN = 56  #: u, every view side is a multiple of this (patch 14 x 4)


@dataclass(frozen=True)
class Slicing:
    """Views of one image under the slicing policy. All sizes are (width, height) in pixels.

    ``thumbnail`` is the whole image scaled to about S^2 px (upscaled when the image is smaller);
    ``grid`` is (cols, rows), or None when the image gets the thumbnail only; ``refine_size`` the size
    the image is resized to before it is cut (None without a grid); ``slices`` the tiles, row-major
    (top row left to right), all of size ``slice_size``.
    """

    image: Size
    thumbnail: Size
    grid: tuple[int, int] | None
    slice_size: Size | None
    refine_size: Size | None
    slices: tuple[Size, ...]

    @property
    def views(self) -> tuple[Size, ...]:
        """Every view in encoding order: the thumbnail, then the slices row-major."""
        return (self.thumbnail, *self.slices)


@dataclass(frozen=True)
class GlobalView:
    """The one view of global encoding: ``size`` (width, height) px, from the image's ``image``.
    ``note`` says when the view had to be cut to keep the M x S^2 px cap (extreme aspect ratios)."""

    image: Size
    size: Size
    note: str | None = None

    @property
    def views(self) -> tuple[Size, ...]:
        return (self.size,)


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UhdProfileError(f"{name} {value!r} is not valid; it must be a positive integer")
    return value


def check_image_size(w, h) -> Size:
    """``Size(w, h)`` of positive ints, or a one-line UhdProfileError naming the bad side."""
    if isinstance(w, bool) or isinstance(h, bool) or not isinstance(w, int) or not isinstance(h, int) or w < 1 or h < 1:
        raise UhdProfileError(
            f"image size {w!r}x{h!r} (width x height) is not valid; both sides must be positive integers (pixels)"
        )
    return Size(w, h)


def check_params(max_slice_nums, scale_resolution, align) -> None:
    """Validate the policy parameters (one-line UhdProfileError naming the value and the rule)."""
    if isinstance(max_slice_nums, bool) or not isinstance(max_slice_nums, int) or not 1 <= max_slice_nums <= SLICES_LIMIT:
        raise UhdProfileError(
            f"max slices {max_slice_nums!r} is not valid; it must be an integer from 1 to {SLICES_LIMIT} "
            f"(default {MAX_SLICE_NUMS})"
        )
    _positive_int("alignment", align)
    if (
        isinstance(scale_resolution, bool)
        or not isinstance(scale_resolution, int)
        or scale_resolution < 1
        or scale_resolution % align
    ):
        raise UhdProfileError(
            f"scale resolution {scale_resolution!r} is not valid; it must be a positive multiple of the alignment "
            f"{align} px (e.g. {8 * align} or {6 * align}; default {SCALE_RESOLUTION})"
        )


# --------------------------------------------------------------------------------------------
# Helpers (docs/paper.md §5)
# --------------------------------------------------------------------------------------------


def round_to(x: float, u: int) -> int:
    """Nearest multiple of ``u`` (Python round: halves to even), at least ``u``."""
    return max(round(x / u) * u, u)


def best_resize(w: float, h: float, scale_resolution: float, align: int, upscale: bool) -> Size:
    """About ``scale_resolution``^2 px at the aspect ratio of (w, h) when the area exceeds it or
    ``upscale``; else (w, h) unchanged. Both sides then rounded to multiples of ``align``.

    The float arithmetic follows the reference code step by step (height first, both floored),
    so that every size matches it exactly.
    """
    if w * h > scale_resolution * scale_resolution or upscale:
        r = w / h
        h = int(scale_resolution / math.sqrt(r))
        w = int(h * r)
    return Size(round_to(w, align), round_to(h, align))


def best_grid(
    w: int, h: int, max_slice_nums: int = MAX_SLICE_NUMS, scale_resolution: int = SCALE_RESOLUTION
) -> tuple[int, int] | None:
    """(cols, rows) of the slice grid, or None when one view (the thumbnail) is enough.

    Slice counts n in {cnt-1, cnt, cnt+1} (cnt = ceil(area / S^2) capped at M; n = 1 and n > M
    skipped); for each n, cols ascending over the divisors of n; the first grid with a strictly
    smaller |ln(w/h) - ln(cols/rows)| wins (docs/paper.md §5).
    """
    ratio = w * h / (scale_resolution * scale_resolution)
    cnt = min(math.ceil(ratio), max_slice_nums)
    if cnt <= 1:
        return None
    log_ratio = math.log(w / h)
    best, best_err = None, float("inf")
    for n in (cnt - 1, cnt, cnt + 1):
        if n == 1 or n > max_slice_nums:
            continue
        for cols in range(1, n + 1):
            if n % cols:
                continue
            rows = n // cols
            err = abs(log_ratio - math.log(cols / rows))
            if err < best_err:
                best, best_err = (cols, rows), err
    return best


# --------------------------------------------------------------------------------------------
# The two policies
# --------------------------------------------------------------------------------------------


def slice_image(
    w: int, h: int, max_slice_nums: int = MAX_SLICE_NUMS, scale_resolution: int = SCALE_RESOLUTION, align: int = ALIGN
) -> Slicing:
    """The thumbnail and slices of a w x h image (docs/paper.md §5). Sizes are (width, height) px.

    >>> s = slice_image(1920, 1080)
    >>> s.thumbnail, s.grid, s.slice_size
    ((616, 336), (4, 2), (448, 448))
    """
    check_image_size(w, h)
    check_params(max_slice_nums, scale_resolution, align)
    grid = best_grid(w, h, max_slice_nums, scale_resolution)
    thumbnail = best_resize(w, h, scale_resolution, align, upscale=grid is None)
    if grid is None:
        return Slicing(image=Size(w, h), thumbnail=thumbnail, grid=None, slice_size=None, refine_size=None, slices=())
    cols, rows = grid
    refine_w, refine_h = round_to(w, cols), round_to(h, rows)
    cell = best_resize(refine_w / cols, refine_h / rows, scale_resolution, align, upscale=True)
    return Slicing(
        image=Size(w, h),
        thumbnail=thumbnail,
        grid=grid,
        slice_size=cell,
        refine_size=Size(cell.width * cols, cell.height * rows),
        slices=(cell,) * (cols * rows),
    )


def global_resize(
    w: int,
    h: int,
    max_slice_nums: int = MAX_SLICE_NUMS,
    scale_resolution: int = SCALE_RESOLUTION,
    align: int = ALIGN,
    upscale: bool = False,
) -> GlobalView:
    """The whole image in one view of at most about ``max_slice_nums * scale_resolution^2`` px
    (docs/paper.md §6): ``best_resize`` with S replaced by S * sqrt(M). Smaller images keep their size
    (only aligned) unless ``upscale``. Rounding to ``align`` may move the area a little either way,
    never more than rounding each side by align/2 can: at extreme aspect ratios, where the short side
    is lifted to ``align`` from under align/2, the long side is cut to keep the cap (``note`` says so).
    """
    check_image_size(w, h)
    check_params(max_slice_nums, scale_resolution, align)
    target = scale_resolution * math.sqrt(max_slice_nums)
    size = best_resize(w, h, target, align, upscale)
    cap = max_slice_nums * scale_resolution * scale_resolution
    # Rounding a side to the nearest multiple of ``align`` moves it by at most align/2, except where
    # round_to's floor lifts a side that rounds to 0 (under align/2 px: a 1 px strip) up to ``align``.
    # Then the area can grow without bound (1 x 100000 -> 56 x 100016 px, 3.1x the cap): cut the long
    # side back to the cap.
    if w * h > target * target or upscale:
        sh = int(target / math.sqrt(w / h))
        scaled = (int(sh * (w / h)), sh)
    else:
        scaled = (w, h)
    lifted = any(round(side / align) == 0 for side in scaled)
    if lifted and size.area > cap:
        short, long_ = sorted(size)
        cut = max(align, cap // short // align * align)
        capped = Size(short, cut) if size.height >= size.width else Size(cut, short)
        note = (
            f"the {w}x{h} image is too thin for {align} px-aligned views: its short side was raised to {short} px, "
            f"and its long side cut from {long_} to {cut} px to keep the global view within M x S^2 = {cap:,} px "
            f"({capped}, aspect ratio not kept)"
        )
        return GlobalView(image=Size(w, h), size=capped, note=note)
    return GlobalView(image=Size(w, h), size=size)


def views_of(
    w: int,
    h: int,
    encoding: str,
    max_slice_nums: int = MAX_SLICE_NUMS,
    scale_resolution: int = SCALE_RESOLUTION,
    align: int = ALIGN,
) -> tuple[Size, ...]:
    """The view sizes (width, height) of a w x h image under ``encoding`` ("sliced" or "global")."""
    if encoding == "sliced":
        return slice_image(w, h, max_slice_nums, scale_resolution, align).views
    if encoding == "global":
        return global_resize(w, h, max_slice_nums, scale_resolution, align).views
    raise UhdProfileError(f"encoding {encoding!r} does not slice images; valid: sliced, global")
