"""The slicing policy (paper-spec 5) and the global-encoding resize (paper-spec 6), checked against
the worked examples and, size by size, against the MiniCPM-V 4.6 image processor in transformers."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from uhd_profile.errors import UhdProfileError
from uhd_profile.model.slicing import best_grid, global_resize, round_to, slice_image, views_of


def llm_tokens_16x(views) -> int:
    return sum((w // 56) * (h // 56) for w, h in views)


# paper-spec 5.6: input (w, h) -> thumbnail (w, h), grid (cols, rows), slice (w, h), LLM tokens at 16x
WORKED = [
    ((1920, 1080), (616, 336), (4, 2), (448, 448), 578),  # 11*6 + 8 * 8*8 = 66 + 512
    ((800, 600), (504, 392), (2, 2), (504, 392), 315),  # 9*7 + 4 * 9*7 = 63 + 252
    ((3000, 1000), (784, 280), (4, 2), (560, 392), 630),  # 14*5 + 8 * 10*7 = 70 + 560
    ((300, 200), (560, 392), None, None, 70),  # upscaled thumbnail only: 10*7
]


@pytest.mark.parametrize("size,thumb,grid,cell,tokens", WORKED)
def test_worked_examples(size, thumb, grid, cell, tokens):
    s = slice_image(*size)
    assert s.thumbnail == thumb
    assert s.grid == grid
    assert s.slice_size == cell
    if grid is None:
        assert s.slices == () and s.refine_size is None
    else:
        assert len(s.slices) == grid[0] * grid[1] and set(s.slices) == {cell}
        assert s.refine_size == (cell[0] * grid[0], cell[1] * grid[1])
    assert s.views[0] == thumb
    assert llm_tokens_16x(s.views) == tokens


def test_helpers():
    assert round_to(84, 56) == 112 and round_to(83.9, 56) == 56  # 1.5 rounds to 2 (even); 1.498 to 1
    assert round_to(140, 56) == 112  # 2.5 rounds half to even: 2
    assert round_to(3, 56) == 56  # never below one unit
    assert best_grid(448, 448) is None  # exactly S^2: one view
    # 500x500: cnt = ceil(1.25) = 2, n in {2, 3}; 1x2 and 2x1 are equally far from a square: the first
    # (cols ascending), i.e. more rows, wins; one pixel wider tips it to 2 columns
    assert best_grid(500, 500) == (1, 2)
    assert best_grid(501, 500) == (2, 1)
    assert best_grid(1000, 100, max_slice_nums=1) is None


def test_views_are_aligned_and_bounded():
    rng = random.Random(1)
    for _ in range(300):
        w, h = rng.randint(1, 6000), rng.randint(1, 6000)
        for m in (1, 4, 9):
            s = slice_image(w, h, max_slice_nums=m)
            assert all(a % 56 == 0 and b % 56 == 0 and a > 0 and b > 0 for a, b in s.views)
            assert len(s.slices) <= m + 0 and (s.grid is None or s.grid[0] * s.grid[1] == len(s.slices))
            g = global_resize(w, h, max_slice_nums=m)
            gw, gh = g.size
            assert gw % 56 == 0 and gh % 56 == 0
            # at most M * S^2 before rounding each side to 56 (rounding moves each side by < 28 px)
            assert (gw - 28) * (gh - 28) <= m * 448 * 448


def test_global_resize():
    # 1920x1080 > 9 * 448^2 px: h' = floor(1344 / sqrt(16/9)) = 1008, w' = floor(1008 * 16/9) = 1792
    assert global_resize(1920, 1080).size == (1792, 1008)
    assert global_resize(3840, 2160).size == (1792, 1008)
    # within budget: kept, only aligned (1344 = 24*56, 896 = 16*56; 1000 -> 1008, 700 -> 672)
    assert global_resize(1344, 896).size == (1344, 896)
    assert global_resize(1000, 700).size == (1008, 672)
    assert global_resize(300, 200).size == (280, 224)  # no upscale by default
    # upscaled to ~9 * 448^2: h' = int(1344 / sqrt(1.5)) = 1097 -> 1120, w' = int(1097 * 1.5) = 1645 -> 1624
    assert global_resize(300, 200, upscale=True).size == (1624, 1120)
    assert global_resize(3000, 3000, max_slice_nums=1).size == (448, 448)
    assert views_of(1344, 896, "global") == ((1344, 896),)
    assert views_of(1344, 896, "sliced") == ((560, 392),) + ((448, 448),) * 6


@pytest.mark.parametrize(
    "call,fragment",
    [
        (lambda: slice_image(0, 100), "image size 0x100"),
        (lambda: slice_image(100, -5), "image size 100x-5"),
        (lambda: global_resize(1.5, 100), "image size 1.5x100"),
        (lambda: slice_image(100, 100, max_slice_nums=0), "max slices 0"),
        (lambda: global_resize(100, 100, max_slice_nums=-1), "max slices -1"),
        (lambda: slice_image(100, 100, scale_resolution=450), "scale resolution 450"),
        (lambda: slice_image(100, 100, scale_resolution=0), "scale resolution 0"),
        (lambda: views_of(100, 100, "tiles"), "encoding 'tiles'"),
    ],
)
def test_bad_input(call, fragment):
    with pytest.raises(UhdProfileError) as exc:
        call()
    msg = str(exc.value)
    assert fragment in msg and "\n" not in msg


# ---------------------------------------------------------------------------------------------
# Cross-check with the processor that ships in transformers (constructed from its defaults)
# ---------------------------------------------------------------------------------------------


def _sizes() -> list[tuple[int, int]]:
    """A few hundred (w, h): tiny to 8K, aspect ratios up to 10 both ways, the worked examples,
    exact multiples of 448 and the boundaries around S^2 and M * S^2."""
    rng = random.Random(0)
    sizes = [s for s, *_ in WORKED]
    sizes += [
        (448, 448),
        (449, 448),
        (448, 449),
        (896, 448),
        (1344, 1344),
        (1345, 1344),
        (7680, 4320),
        (4320, 7680),
        (1, 1),
        (1, 10),
        (10, 1),
        (14, 14),
        (56, 56),
        (8192, 8192),
        (8000, 800),
        (800, 8000),
    ]
    # squares whose candidate grids tie (1x2 / 2x1, 2x3 / 3x2, 2x4 / 4x2): the tie rule must match too
    sizes += [(s, s) for s in (450, 500, 600, 620, 1000, 1050, 1100, 1200)]
    for _ in range(320):
        area = math.exp(rng.uniform(math.log(16), math.log(7680 * 4320)))
        ratio = math.exp(rng.uniform(-math.log(10), math.log(10)))
        w = max(1, round(math.sqrt(area * ratio)))
        h = max(1, round(math.sqrt(area / ratio)))
        sizes.append((w, h))
    return sizes


@pytest.fixture(scope="module")
def processor():
    from transformers.models.minicpmv4_6.image_processing_pil_minicpmv4_6 import MiniCPMV4_6ImageProcessorPil

    p = MiniCPMV4_6ImageProcessorPil()  # defaults: max_slice_nums 9, scale_resolution 448, patch 14, 16x
    assert (p.max_slice_nums, p.scale_resolution, p.patch_size, p.downsample_mode) == (9, 448, 14, "16x")
    return p


def _reference(p, w: int, h: int, m: int, s: int):
    """The processor's own size helpers, as its _preprocess calls them: (thumbnail, grid, slices)."""
    grid = p.get_sliced_grid((h, w), m, s)  # [rows, cols] or None
    th, tw = p.find_best_resize((h, w), s, p.patch_size, "16x", allow_upscale=grid is None)
    if grid is None:
        return (tw, th), None, []
    rows, cols = grid
    rh, rw = p.get_refine_size((h, w), grid, s, p.patch_size, "16x", allow_upscale=True)
    return (tw, th), (cols, rows), [(rw // cols, rh // rows)] * (rows * cols)


def test_matches_transformers_processor(processor):
    sizes = _sizes()
    assert len(sizes) >= 300
    checked = 0
    for m, s in ((9, 448), (4, 448), (1, 448), (9, 336)):
        for w, h in sizes if m == 9 and s == 448 else sizes[::3]:
            mine = slice_image(w, h, max_slice_nums=m, scale_resolution=s)
            thumb, grid, slices = _reference(processor, w, h, m, s)
            assert (mine.thumbnail, mine.grid, list(mine.slices)) == (thumb, grid, slices), (w, h, m, s)
            checked += 1
    assert checked > 600


def test_matches_processor_output_on_images(processor):
    """The helpers above are what the processor's preprocess uses: run it on small synthetic
    images (sliced, thumbnail-only and upscaled cases) and compare its per-view target sizes."""
    for w, h in ((300, 200), (700, 500), (1000, 120), (120, 900)):
        img = np.zeros((h, w, 3), dtype=np.uint8)
        out = processor(images=[img])
        target = [tuple(t) for t in out["target_sizes"].tolist()]  # (rows, cols) patches per view
        s = slice_image(w, h)
        assert target == [(vh // 14, vw // 14) for vw, vh in s.views], (w, h)
        grid = out["grids"][0]
        assert (None if grid == [0, 0] else (grid[1], grid[0])) == s.grid
