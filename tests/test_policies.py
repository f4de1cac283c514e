"""Image policies per model family, checked size by size against the family's PIL image processor in
transformers (views, sizes, grids, ViT tokens, LLM tokens and the processor's placeholder count), plus
worked examples and bad input.

The references are the processors' own size helpers as their preprocess calls them, and the
processors' own placeholder/count methods called without a tokenizer (an instance made with
``__new__`` carrying only the attributes those methods read); a few small synthetic images then go
through each whole preprocess to show the helpers are what it uses.
"""

from __future__ import annotations

import doctest
import math
import random

import numpy as np
import pytest

from uhd_profile.errors import UhdProfileError
from uhd_profile.model import policies as policies_pkg
from uhd_profile.model.encoders import ENCODERS
from uhd_profile.model.policies import DEFAULT_POLICY, POLICIES, get_policy
from uhd_profile.model.policies.base import EXTRA_KINDS, EXTRA_SOURCES
from uhd_profile.model.slicing import slice_image


def _sizes(n_random: int = 300, seed: int = 0, subsample: int = 1) -> list[tuple[int, int]]:
    """(w, h): 1 px to 8K, aspect ratios up to 20 both ways (log-uniform area and ratio), plus edges:
    tiny, 8K both ways, 1:20 extremes, squares (tie-breaks of InternVL and MiniCPM grids), exact
    LLaVA-NeXT canvases and multiples of 28/336/448, Qwen's default min/max pixel boundaries and
    round-half cases (14 px = half a 28 px unit)."""
    sizes = [
        (1, 1),
        (1, 2),
        (2, 1),
        (1, 20),
        (20, 1),
        (14, 14),
        (42, 14),
        (14, 42),
        (27, 29),
        (56, 56),
        (3840, 2160),
        (2160, 3840),
        (1920, 1080),
        (7680, 4320),
        (4320, 7680),
        (7680, 384),
        (384, 7680),
        (8000, 400),
        (400, 8000),
        (336, 336),
        (672, 336),
        (336, 672),
        (672, 672),
        (1008, 336),
        (336, 1008),
        (1344, 336),
        (448, 448),
        (896, 448),
        (449, 448),
        (1344, 1344),
        (1345, 1344),
        (1120, 896),
        (1121, 896),
        (1148, 874),
        (1000, 1003),
        (800, 600),
        (640, 480),
        (1024, 768),
        (3000, 1000),
        (300, 200),
        # LLaVA-NeXT: the map-scaled side is 14.999999999999998 etc.: only rounding to 7 decimals gives 15
        (47, 47),
        (49, 147),
        (55, 44),
        (188, 47),
        (176, 55),
        (656, 205),
        (55, 88),
        (205, 984),
        # InternVL: area exactly 0.5 * 9 * 448^2 with 1:1 the nearest ratio (the strict '>' keeps 2x2);
        # ratio 5:4 / 13:12 (equal distance to 1:2 and 2:1 / 2:3 and 3:2: candidate order decides)
        (896, 1008),
        (1008, 896),
        (500, 400),
        (400, 500),
        (5000, 4000),
        (1300, 1200),
        (650, 600),
    ]
    sizes += [
        (s, s)
        for s in (
            100,
            300,
            317,
            450,
            500,
            600,
            620,
            633,
            634,
            700,
            896,
            1000,
            1050,
            1100,
            1200,
            1344,
            1500,
            1552,
            1553,
            2000,
            3000,
            4096,
        )
    ]
    edges = len(sizes)
    rng = random.Random(seed)
    for _ in range(n_random):
        area = math.exp(rng.uniform(math.log(1), math.log(7680 * 4320)))
        ratio = math.exp(rng.uniform(-math.log(20), math.log(20)))
        w = min(7680, max(1, round(math.sqrt(area * ratio))))
        h = min(7680, max(1, round(math.sqrt(area / ratio))))
        sizes.append((w, h))
    return sizes if subsample == 1 else sizes[:edges] + sizes[edges::subsample]


SIZES = _sizes()
SOME_SIZES = _sizes(subsample=3)  # every edge case, a third of the random ones: for non-default parameters


def _fake(cls, **attrs):
    """An instance of a processor class without running its __init__ (which needs a tokenizer):
    just the attributes its counting methods read."""
    obj = cls.__new__(cls)
    for k, v in attrs.items():
        setattr(obj, k, v)
    return obj


def _image(w: int, h: int, arr=None):
    """A small synthetic RGB PIL image (black unless ``arr`` (h, w, 3) uint8 is given): PIL images
    carry their channel layout, so even 1x1 px inputs are unambiguous to the processors."""
    from PIL import Image

    return Image.fromarray(np.zeros((h, w, 3), dtype=np.uint8) if arr is None else arr)


def _blank(w: int, h: int):
    """A zero-memory (3, h, w) array: the size helpers only read its shape."""
    return np.broadcast_to(np.zeros((1, 1, 1), dtype=np.uint8), (3, h, w))


# ---------------------------------------------------------------------------------------------
# Registry and the common shape
# ---------------------------------------------------------------------------------------------


def test_registry():
    assert set(POLICIES) == {
        "minicpm-v-4.6",
        "qwen2.5-vl",
        "llava-next",
        "internvl",
        "llava-1.5",
        "gemma-4",
        "llava-onevision",
        "smolvlm2",
        "idefics3",
        "qwen3-vl",
        "qwen3.5",
        "internvl3",
        "phi-4-multimodal",
        "minicpm-v-4.7",
    }
    assert DEFAULT_POLICY == "minicpm-v-4.6" and get_policy(DEFAULT_POLICY) is POLICIES[DEFAULT_POLICY]
    for name, p in POLICIES.items():
        assert p.name == name and p.description and "\n" not in p.description
        enc = ENCODERS[p.encoder]  # a real preset, and the policy's patch is that tower's
        assert p.patch == enc.patch and p.merge >= 1
        assert all(param.description for param in p.params)


@pytest.mark.parametrize("name", list(POLICIES))
def test_views_are_consistent(name):
    """Internal bookkeeping on a spread of sizes: tokens follow from sizes, totals add up."""
    p = get_policy(name)
    enc = ENCODERS[p.encoder]
    for w, h in SIZES[::7]:
        v = p.views(w, h)
        assert v.image == (w, h) and v.policy == name and v.views
        for view in v.views:
            cols, rows = view.patches
            if enc.floors_input:  # a stride-patch convolution floors the grid (LLaVA-OneVision: 384 px at patch 14 is 27x27)
                assert (view.size[0] // p.patch, view.size[1] // p.patch) == (cols, rows)
            else:
                assert view.size == (cols * p.patch, rows * p.patch)
            assert view.vit_tokens == cols * rows + enc.prefix_tokens
            assert 0 <= view.llm_tokens <= cols * rows // p.merge
        if v.grid is not None:
            placed = [view.position for view in v.views if view.position is not None]
            assert placed == [(c, r) for r in range(v.grid[1]) for c in range(v.grid[0])]
        assert v.llm_tokens == v.view_llm_tokens + v.extra_tokens
        assert all(e.kind in EXTRA_KINDS and e.added_by in EXTRA_SOURCES and e.count >= 0 for e in v.extras)
        assert v.notes and all("\n" not in n for n in v.notes)
        d = v.to_dict()
        assert d["llm_tokens"] == v.llm_tokens and d["image"] == [w, h] and len(d["views"]) == len(v.views)


@pytest.mark.parametrize("name", list(POLICIES))
def test_token_fields_add_up(name):
    """The documented sum (docs/schema.md): llm_tokens = placeholder + special + text, for every
    encoding of every policy, and each field is what its extras say."""
    p = get_policy(name)
    for enc in p.encodings or (None,):
        for w, h in SIZES[::5]:
            v = p.views(w, h, **({"encoding": enc} if enc else {}))
            f = v.token_fields
            assert f["llm_tokens"] == f["placeholder_tokens"] + f["special_tokens"] + f["text_tokens"] > 0
            assert f["placeholder_tokens"] == v.view_llm_tokens + sum(e.count for e in v.extras if e.kind == "embedding")
            assert f["special_tokens"] == sum(e.count for e in v.extras if e.kind == "special")
            assert f["vit_tokens"] == sum(x.seq_len for x in v.views)
            assert (
                f["vit_padding_tokens"] == sum(x.padding for x in v.views) == f["vit_tokens"] - sum(x.vit_tokens for x in v.views)
            )
            assert v.to_dict()["placeholder_tokens"] == f["placeholder_tokens"]


def test_doctests():
    assert doctest.testmod(policies_pkg, raise_on_error=False).failed == 0


# ---------------------------------------------------------------------------------------------
# Worked examples: 3840x2160 under every policy, with the arithmetic
# ---------------------------------------------------------------------------------------------


def test_3840x2160_minicpm():
    v = get_policy("minicpm-v-4.6").views(3840, 2160)
    # area / 448^2 = 41.3 -> 9 slices at most; n in {8, 9}: log(16/9) = 0.575 is nearest log(4/2) = 0.693
    # -> 4x2. Thumbnail: h = int(448 / sqrt(16/9)) = 336, w = int(336 * 16/9) = 597 -> 616 (11 x 56) x 336.
    # Slices: 960x1080 each -> h = int(448 / sqrt(960/1080)) = 475, w = int(475 * 0.889) = 422 -> 448x448.
    assert v.grid == (4, 2) and v.sizes == ((616, 336),) + ((448, 448),) * 8
    assert v.canvas == (1792, 896)
    # ViT: 44*24 + 8 * 32*32 = 1056 + 8192 = 9248; LLM at 16x: 11*6 + 8 * 8*8 = 66 + 512 = 578
    assert (v.vit_tokens, v.view_llm_tokens) == (9248, 578)
    # extras: <image></image> 2 + <slice></slice> 2*8 + '\n' between 2 rows 1 + <image_id>0</image_id> 3 = 22
    assert v.extra_tokens == 22 and v.llm_tokens == 600


def test_3840x2160_qwen():
    v = get_policy("qwen2.5-vl").views(3840, 2160)
    # rounded to 28: 3836 x 2156 = 8.3 Mpx > 1003520 -> shrink by sqrt(3840*2160 / 1003520) = 2.8749:
    # w = floor(3840 / 2.8749 / 28) * 28 = floor(47.70) * 28 = 1316, h = floor(26.83) * 28 = 728
    assert v.sizes == ((1316, 728),) and v.grid is None
    # ViT 94 x 52 = 4888 patches; 2x2 merge -> 1222; + <|vision_start|><|vision_end|> from the chat template
    assert (v.vit_tokens, v.view_llm_tokens, v.processor_tokens, v.llm_tokens) == (4888, 1222, 1222, 1224)
    # a larger bound, 16384 x 28^2 px (what Qwen2.5-VL checkpoint configs are commonly published with): fits as is
    big = get_policy("qwen2.5-vl").views(3840, 2160, max_pixels=12845056)
    # 3840/28 = 137.1 -> 137 * 28 = 3836; 2160/28 = 77.1 -> 77 * 28 = 2156; 274 * 154 = 42196 patches -> 10549
    assert big.sizes == ((3836, 2156),) and big.view_llm_tokens == 10549


def test_3840x2160_llava_next():
    v = get_policy("llava-next").views(3840, 2160)
    # kept pixels per canvas: 672x336 and 1008x336 -> 597x336 = 200592; 672x672 -> 672x378 = 254016 (most)
    assert v.canvas == (672, 672) and v.grid == (2, 2) and v.content == (672, 378)
    assert v.sizes == ((336, 336),) * 5
    # feature map 48 x 48; real height = int(round(2160 * 48/3840, 7)) = 27; cut (48 - 27) // 2 = 10 rows
    # at top and bottom -> 48 x 28 kept = 1344 (top tiles 24*14 = 336 each, bottom 24*14 = 336 each)
    assert [t.llm_tokens for t in v.views[1:]] == [336, 336, 336, 336]
    # base 576 + 1344 + 28 newlines = 1948; ViT: 5 views x (576 + CLS) = 2885
    assert (v.view_llm_tokens, v.extra("image_newline"), v.llm_tokens, v.vit_tokens) == (1920, 28, 1948, 2885)


def test_3840x2160_internvl():
    v = get_policy("internvl").views(3840, 2160)
    # ratio 1.778: nearest grid ratio among <= 12 tiles is 2 (2x1, 4x2 tie; 8.3 Mpx > 0.5 * 8 * 448^2 -> 4x2)
    assert v.grid == (4, 2) and v.canvas == (1792, 896)
    assert v.sizes == ((448, 448),) * 9 and v.views[-1].role == "thumbnail"
    # 9 views x 256 = 2304, + <img></img> = 2306; ViT 9 x (1024 + CLS) = 9225
    assert (v.view_llm_tokens, v.llm_tokens, v.processor_tokens, v.vit_tokens) == (2304, 2306, 2306, 9225)


def test_3840x2160_llava_1_5():
    v = get_policy("llava-1.5").views(3840, 2160)
    # short side 2160 -> 336, long int(336 * 3840 / 2160) = 597; centre 336 of 597 px kept
    assert v.canvas == (597, 336) and v.sizes == ((336, 336),)
    assert (v.vit_tokens, v.llm_tokens) == (577, 576)
    padded = get_policy("llava-1.5").views(3840, 2160, pad_to_square=True)
    assert padded.canvas == (3840, 3840) and padded.content == (3840, 2160) and padded.llm_tokens == 576


def test_small_worked_examples():
    # Qwen: 300x200 -> 308x196 (11 x 7 units of 28; 300/28 = 10.7 -> 11, 200/28 = 7.14 -> 7): 22*14 / 4 = 77
    q = get_policy("qwen2.5-vl").views(300, 200)
    assert q.sizes == ((308, 196),) and q.view_llm_tokens == 77
    # Qwen 1x1: rounds to 0x0 < 3136 px -> grown by sqrt(3136) = 56: ceil(56 / 28) * 28 = 56 -> 56x56, 4 tokens
    assert get_policy("qwen2.5-vl").views(1, 1).sizes == ((56, 56),)
    # InternVL 448x448: 1x1 first; 2x2 ties (ratio 1) but 448^2 < 0.5 * 4 * 448^2 -> one tile, no thumbnail
    i = get_policy("internvl").views(448, 448)
    assert i.grid == (1, 1) and len(i.views) == 1 and i.llm_tokens == 258
    # 1000x1000 = 1e6 px > 0.5 * 4 * 448^2 = 401408 -> 2x2; > 0.5 * 9 * 448^2 = 903168 -> 3x3 (+ thumbnail)
    assert get_policy("internvl").views(1000, 1000).grid == (3, 3)
    # LLaVA-NeXT 1000x500: 672x336 keeps 672x336 (all of its area), 1008x336 only 672x336 -> first wins;
    # map 48 x 24 has the image's aspect exactly: nothing unpadded: 576 + 1152 + 24 = 1752
    n = get_policy("llava-next").views(1000, 500)
    assert n.canvas == (672, 336) and n.llm_tokens == 576 + 48 * 24 + 24


# ---------------------------------------------------------------------------------------------
# Cross-checks with the transformers processors
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def qwen():
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    p = Qwen2VLImageProcessorPil()
    assert (p.size["shortest_edge"], p.size["longest_edge"], p.patch_size, p.merge_size) == (3136, 1003520, 14, 2)
    return p


QWEN_PARAMS = [
    {},
    {"max_pixels": 12845056},
    {"min_pixels": 256 * 28 * 28, "max_pixels": 1280 * 28 * 28},
    {"min_pixels": 100_000, "max_pixels": 200_000},
]


def test_qwen_matches_processor(qwen):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    policy = get_policy("qwen2.5-vl")
    checked = 0
    for params in QWEN_PARAMS:
        lo = params.get("min_pixels", 3136)
        hi = params.get("max_pixels", 1003520)
        for w, h in SIZES if not params else SOME_SIZES:
            v = policy.views(w, h, **params)
            rh, rw = smart_resize(h, w, factor=28, min_pixels=lo, max_pixels=hi)
            patches = qwen.get_number_of_image_patches(h, w, {"min_pixels": lo, "max_pixels": hi})
            assert v.sizes == ((rw, rh),), (w, h, params)
            assert v.vit_tokens == patches == (rh // 14) * (rw // 14)
            # Qwen2_5_VLProcessor expands the placeholder into patches // merge_size**2 tokens
            assert v.processor_tokens == v.view_llm_tokens == patches // 4
            checked += 1
    assert checked > 600


def test_qwen_refuses_what_the_processor_refuses(qwen):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    for w, h in ((201, 1), (1, 201), (4020, 20), (10000, 49)):
        with pytest.raises(ValueError):
            smart_resize(h, w)
        with pytest.raises(UhdProfileError, match="aspect ratio"):
            get_policy("qwen2.5-vl").views(w, h)
    assert get_policy("qwen2.5-vl").views(200, 1).sizes == ((smart_resize(1, 200)[1], smart_resize(1, 200)[0]),)


def test_qwen_whole_preprocess(qwen):
    for w, h in ((300, 200), (30, 500), (1, 1), (700, 33), (1200, 1000)):
        out = qwen(images=[_image(w, h)])
        t, gh, gw = out["image_grid_thw"][0].tolist()
        v = get_policy("qwen2.5-vl").views(w, h)
        assert (t, gw, gh) == (1, *v.views[0].patches) and out["pixel_values"].shape[0] == v.vit_tokens


@pytest.fixture(scope="module")
def llava_next():
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil
    from transformers.models.llava_next.processing_llava_next import LlavaNextProcessor

    # The class defaults say 224 px; LLaVA-NeXT's CLIP-336 tower (and its released processor
    # configs) use 336 px tiles, so the size and crop are set to 336. Pinpoints stay the defaults.
    ip = LlavaNextImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    assert ip.image_grid_pinpoints == [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
    # the released processors drop the CLS feature ("default" strategy) after counting it as +1
    proc = _fake(
        LlavaNextProcessor,
        image_processor=ip,
        patch_size=14,
        num_additional_image_tokens=1,
        vision_feature_select_strategy="default",
        image_token="<image>",
    )
    return ip, proc


def _llava_next_reference(ip, proc, w, h, pinpoints_hw):
    """The processor's own helpers: (canvas (w, h), content (w, h), views, LLM placeholder tokens)."""
    from transformers.image_processing_utils import get_patch_output_size, select_best_resolution
    from transformers.image_utils import ChannelDimension

    ch, cw = select_best_resolution((h, w), pinpoints_hw)
    nh, nw = get_patch_output_size(_blank(w, h), (ch, cw), input_data_format=ChannelDimension.FIRST)
    n_views = 1 + len(range(0, ch, 336)) * len(range(0, cw, 336))
    proc.image_processor.image_grid_pinpoints = pinpoints_hw
    tokens = proc._get_number_of_features(h, w, 336, 336) - 1
    return (cw, ch), (nw, nh), n_views, tokens


LLAVA_NEXT_PINPOINTS = [None, ((1344, 336), (336, 1344), (672, 1008), (1008, 672), (1008, 1008))]


def test_llava_next_matches_processor(llava_next):
    ip, proc = llava_next
    policy = get_policy("llava-next")
    default = [list(p) for p in ip.image_grid_pinpoints]
    checked = 0
    try:
        for pins in LLAVA_NEXT_PINPOINTS:
            pinpoints_hw = default if pins is None else [[h, w] for w, h in pins]
            for w, h in SIZES if pins is None else SOME_SIZES:
                v = policy.views(w, h) if pins is None else policy.views(w, h, grid_pinpoints=pins)
                canvas, content, n_views, tokens = _llava_next_reference(ip, proc, w, h, pinpoints_hw)
                assert (v.canvas, v.content or v.canvas, len(v.views)) == (canvas, content, n_views), (w, h, pins)
                assert all(view.size == (336, 336) and view.vit_tokens == 577 for view in v.views)
                assert v.processor_tokens == v.llm_tokens == tokens, (w, h, pins)
                checked += 1
    finally:
        ip.image_grid_pinpoints = default
    assert checked > 500


def test_llava_next_model_unpadding_agrees(llava_next):
    """The model's own unpad_image keeps exactly the feature positions the policy counts, tile by tile."""
    import torch
    from transformers.models.llava_next.modeling_llava_next import unpad_image

    policy = get_policy("llava-next")
    for w, h in SIZES[::3]:
        v = policy.views(w, h)
        cols, rows = v.grid
        fmap = torch.arange(rows * 24 * cols * 24).reshape(1, rows * 24, cols * 24)
        kept = unpad_image(fmap, (h, w))
        assert kept.shape[1] == v.extra("image_newline")  # one newline per kept row
        ids = kept.flatten()
        for tile in v.views[1:]:
            c, r = tile.position
            in_tile = ((ids // (cols * 24)) // 24 == r) & ((ids % (cols * 24)) // 24 == c)
            assert int(in_tile.sum()) == tile.llm_tokens, (w, h, tile.position)


def test_llava_next_whole_preprocess(llava_next):
    ip, proc = llava_next
    for w, h in ((300, 200), (384, 216), (120, 700), (900, 100), (1, 40)):
        out = ip(images=[_image(w, h)])
        pv = out["pixel_values"][0]
        v = get_policy("llava-next").views(w, h)
        assert pv.shape == (len(v.views), 3, 336, 336), (w, h)
        assert proc.replace_image_token(out, 0).count("<image>") == v.llm_tokens


@pytest.fixture(scope="module")
def internvl():
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil
    from transformers.models.internvl.processing_internvl import InternVLProcessor

    ip = GotOcr2ImageProcessorPil(size={"height": 448, "width": 448}, crop_to_patches=True)
    assert (ip.min_patches, ip.max_patches) == (1, 12)
    assert InternVLProcessor.images_kwargs == {"crop_to_patches": True}
    proc = _fake(
        InternVLProcessor, image_seq_length=256, start_image_token="<img>", end_image_token="</img>", image_token="<IMG_CONTEXT>"
    )
    return ip, proc


INTERNVL_PARAMS = [(1, 12), (1, 6), (2, 4), (1, 1), (4, 40), (1, 24), (2, 2), (6, 6)]


def test_internvl_matches_processor(internvl):
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import get_optimal_tiled_canvas

    ip, proc = internvl
    policy = get_policy("internvl")
    checked = 0
    for lo, hi in INTERNVL_PARAMS:
        for w, h in SIZES if (lo, hi) == (1, 12) else SOME_SIZES:
            v = policy.views(w, h, min_tiles=lo, max_tiles=hi)
            n = ip.get_number_of_image_patches(h, w, {"min_patches": lo, "max_patches": hi})
            grid = get_optimal_tiled_canvas((h, w), (448, 448), lo, hi) if hi > 1 else (1, 1)
            assert v.grid == grid and len(v.views) == n, (w, h, lo, hi)
            text = proc.replace_image_token({"num_patches": [n]}, 0)
            assert v.processor_tokens == v.llm_tokens == text.count("<IMG_CONTEXT>") + 2
            assert text.startswith("<img>") and text.endswith("</img>") and v.extra("image_start") == 1
            assert all(view.vit_tokens == 1025 for view in v.views)
            checked += 1
    assert checked > 600


def test_internvl_whole_preprocess(internvl):
    ip, _ = internvl
    for (w, h), (lo, hi) in (
        ((300, 200), (1, 12)),
        ((1000, 120), (1, 12)),
        ((120, 900), (1, 6)),
        ((448, 448), (1, 12)),
        ((700, 700), (2, 4)),
        ((500, 300), (1, 1)),
    ):
        out = ip(images=[_image(w, h)], min_patches=lo, max_patches=hi)
        v = get_policy("internvl").views(w, h, min_tiles=lo, max_tiles=hi)
        assert out["num_patches"] == [len(v.views)]
        assert [tuple(x.shape) for x in out["pixel_values"]] == [(3, 448, 448)] * len(v.views)


@pytest.fixture(scope="module")
def llava():
    from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil
    from transformers.models.llava.processing_llava import LlavaProcessor

    crop = LlavaImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    pad = LlavaImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}, do_pad=True)
    assert crop.do_pad is False  # the class default: centre crop
    proc = _fake(
        LlavaProcessor,
        patch_size=14,
        num_additional_image_tokens=1,
        vision_feature_select_strategy="default",
        image_token="<image>",
    )
    return crop, pad, proc


def test_llava_1_5_matches_processor(llava):
    from transformers.image_transforms import get_resize_output_image_size
    from transformers.image_utils import ChannelDimension

    crop, pad, proc = llava
    policy = get_policy("llava-1.5")
    for w, h in SIZES:
        rh, rw = get_resize_output_image_size(
            _blank(w, h), 336, default_to_square=False, input_data_format=ChannelDimension.FIRST
        )
        v = policy.views(w, h)
        assert v.canvas == (rw, rh) and v.sizes == ((336, 336),), (w, h)
        text = proc.replace_image_token({"pixel_values": [np.zeros((3, 336, 336))]}, 0)
        assert v.llm_tokens == v.processor_tokens == text.count("<image>") == 576
        p = policy.views(w, h, pad_to_square=True)
        assert p.canvas == (max(w, h),) * 2 and p.sizes == ((336, 336),) and p.llm_tokens == 576


def test_llava_1_5_whole_preprocess(llava):
    crop, pad, _ = llava
    for w, h in ((300, 200), (40, 700), (336, 336), (1000, 10)):
        img = np.zeros((h, w, 3), dtype=np.uint8)
        img[:, : max(1, w // 10)] = 255  # a bright left edge: kept by padding, cut by the centre crop when wide
        a, b = crop(images=[_image(w, h, img)])["pixel_values"][0], pad(images=[_image(w, h, img)])["pixel_values"][0]
        assert a.shape == b.shape == (3, 336, 336)
        if w / h > 1.3:
            assert a[0, :, 0].max() < b[0, :, :4].max()  # the crop lost the left edge, the padded view kept it


@pytest.fixture(scope="module")
def minicpm():
    from transformers.models.minicpmv4_6.image_processing_pil_minicpmv4_6 import MiniCPMV4_6ImageProcessorPil
    from transformers.models.minicpmv4_6.processing_minicpmv4_6 import MiniCPMV4_6Processor

    ip = MiniCPMV4_6ImageProcessorPil()
    assert (ip.max_slice_nums, ip.scale_resolution, ip.use_image_id, ip.slice_mode) == (9, 448, True, True)
    proc = _fake(
        MiniCPMV4_6Processor,
        slice_mode=True,
        image_token="<unk>",
        image_start_token="<image>",
        image_end_token="</image>",
        slice_start_token="<slice>",
        slice_end_token="</slice>",
        image_id_start_token="<image_id>",
        image_id_end_token="</image_id>",
    )
    return ip, proc


def _minicpm_inputs(ip, w, h, m, s):
    """The processor's size helpers as its preprocess calls them -> the dict its placeholder code reads."""
    grid = ip.get_sliced_grid((h, w), m, s)
    th, tw = ip.find_best_resize((h, w), s, 14, "16x", allow_upscale=grid is None)
    sizes = [[th // 14, tw // 14]]
    if grid is not None:
        rows, cols = grid
        rh, rw = ip.get_refine_size((h, w), grid, s, 14, "16x", allow_upscale=True)
        sizes += [[rh // rows // 14, rw // cols // 14]] * (rows * cols)
    return {"grids": [grid or [0, 0]], "num_patches_per_image": [len(sizes)], "target_sizes": np.array(sizes)}


def _minicpm_text(proc, inputs, use_image_id):
    text = proc.replace_image_token(inputs, 0, image_token_divisor=16)
    if use_image_id:
        text = proc._prepend_local_ids(["<unk>"], [text], "<unk>")[0]
    return text


def test_minicpm_matches_processor(minicpm):
    ip, proc = minicpm
    policy = get_policy("minicpm-v-4.6")
    checked = 0
    for m, s, use_id in ((9, 448, True), (4, 448, False), (9, 336, True)):
        for w, h in SIZES if m == 9 and s == 448 else SOME_SIZES:
            v = policy.views(w, h, max_slice_nums=m, scale_resolution=s, use_image_id=use_id)
            inputs = _minicpm_inputs(ip, w, h, m, s)
            ts = [tuple(t) for t in inputs["target_sizes"].tolist()]
            assert [(vh // 14, vw // 14) for vw, vh in v.sizes] == ts, (w, h, m, s)
            assert v.vit_tokens == sum(a * b for a, b in ts)
            text = _minicpm_text(proc, inputs, use_id)
            assert v.view_llm_tokens == text.count("<unk>"), (w, h)
            for name, marker in (
                ("image_markers", "image>"),
                ("slice_markers", "slice>"),
                ("image_id_tags", "image_id>"),
                ("row_separators", "\n"),
            ):
                assert v.extra(name) == text.count(marker), (w, h, name)
            assert v.extra("image_id_number") == (1 if use_id else 0)
            assert not use_id or text.startswith("<image_id>0</image_id><image>")
            checked += 1
    assert checked > 500
    assert slice_image(3840, 2160).views == policy.views(3840, 2160).sizes  # the policy wraps slicing


def test_minicpm_whole_preprocess(minicpm):
    ip, proc = minicpm
    for w, h in ((300, 200), (700, 500), (1000, 120)):
        out = ip(images=[_image(w, h)])
        v = get_policy("minicpm-v-4.6").views(w, h)
        assert [tuple(t) for t in out["target_sizes"].tolist()] == [(vh // 14, vw // 14) for vw, vh in v.sizes]
        assert _minicpm_text(proc, out, True).count("<unk>") == v.view_llm_tokens


@pytest.mark.slow
def test_large_sweep_all_processors(qwen, llava_next, internvl, minicpm):
    """Thousands of random sizes, default parameters, every policy against its processor's helpers."""
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import get_optimal_tiled_canvas
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    ip_next, proc_next = llava_next
    ip_ivl, _ = internvl
    ip_mini, proc_mini = minicpm
    pins = [list(p) for p in ip_next.image_grid_pinpoints]
    for w, h in _sizes(15000, seed=7):
        rh, rw = smart_resize(h, w)
        assert get_policy("qwen2.5-vl").views(w, h).sizes == ((rw, rh),)
        canvas, content, n_views, tokens = _llava_next_reference(ip_next, proc_next, w, h, pins)
        v = get_policy("llava-next").views(w, h)
        assert (v.canvas, v.content or v.canvas, len(v.views), v.llm_tokens) == (canvas, content, n_views, tokens)
        assert get_policy("internvl").views(w, h).grid == get_optimal_tiled_canvas((h, w), (448, 448), 1, 12)
        inputs = _minicpm_inputs(ip_mini, w, h, 9, 448)
        m = get_policy("minicpm-v-4.6").views(w, h)
        assert m.view_llm_tokens == _minicpm_text(proc_mini, inputs, True).count("<unk>")


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call,fragment",
    [
        (lambda: get_policy("llava-2"), "unknown image policy 'llava-2'; valid policies: minicpm-v-4.6, qwen2.5-vl"),
        (lambda: get_policy("qwen2.5-vl").views(0, 100), "image size 0x100"),
        (lambda: get_policy("internvl").views(100, -1), "image size 100x-1"),
        (lambda: get_policy("llava-next").views(10.5, 100), "image size 10.5x100"),
        (lambda: get_policy("llava-1.5").views(True, 100), "image size True"),
        (
            lambda: get_policy("qwen2.5-vl").views(100, 100, max_pixel=5),
            "has no parameter 'max_pixel'; valid parameters: min_pixels, max_pixels",
        ),
        (lambda: get_policy("qwen2.5-vl").views(100, 100, min_pixels=0), "min_pixels 0"),
        (lambda: get_policy("qwen2.5-vl").views(100, 100, min_pixels=5000, max_pixels=4000), "max_pixels 4000"),
        (lambda: get_policy("qwen2.5-vl").views(100, 100, max_pixels=700, min_pixels=1), "max_pixels 700"),
        (lambda: get_policy("qwen2.5-vl").views(100, 100, max_pixels=1e6), "max_pixels 1000000.0"),
        (lambda: get_policy("qwen2.5-vl").views(5000, 20), "aspect ratio 250:1 exceeds 200:1"),
        (lambda: get_policy("internvl").views(100, 100, min_tiles=0), "min_tiles 0"),
        (lambda: get_policy("internvl").views(100, 100, min_tiles=6, max_tiles=4), "max_tiles 4"),
        (lambda: get_policy("internvl").views(100, 100, max_tiles=True), "max_tiles True"),
        (lambda: get_policy("llava-next").views(100, 100, grid_pinpoints=()), "grid_pinpoints ()"),
        (lambda: get_policy("llava-next").views(100, 100, grid_pinpoints=((672, 300),)), "multiples of 336"),
        (lambda: get_policy("llava-next").views(100, 100, grid_pinpoints=((672,),)), "grid_pinpoints"),
        (lambda: get_policy("llava-next").views(100, 100, grid_pinpoints="672x336"), "grid_pinpoints '672x336'"),
        (lambda: get_policy("llava-1.5").views(100, 100, pad_to_square="yes"), "pad_to_square 'yes'"),
        (lambda: get_policy("minicpm-v-4.6").views(100, 100, max_slice_nums=0), "max slices 0"),
        (lambda: get_policy("minicpm-v-4.6").views(100, 100, scale_resolution=450), "scale resolution 450"),
        (lambda: get_policy("minicpm-v-4.6").views(100, 100, use_image_id=1), "use_image_id 1"),
        (lambda: get_policy("internvl").parse_params({"max_tiles": "many"}), "max_tiles 'many'"),
        (lambda: get_policy("llava-next").parse_params({"grid_pinpoints": "672,336"}), "WxH"),
        (lambda: get_policy("llava-1.5").parse_params({"pad": "true"}), "has no parameter 'pad'"),
    ],
)
def test_bad_input(call, fragment):
    with pytest.raises(UhdProfileError) as exc:
        call()
    msg = str(exc.value)
    assert fragment in msg and "\n" not in msg


def test_parse_params():
    assert get_policy("llava-next").parse_params({"grid_pinpoints": "672x336, 336x672"}) == {
        "grid_pinpoints": ((672, 336), (336, 672))
    }
    assert get_policy("qwen2.5-vl").parse_params({"max_pixels": "12_845_056"}) == {"max_pixels": 12845056}
    assert get_policy("llava-1.5").parse_params({"pad_to_square": "true"}) == {"pad_to_square": True}
    # parsed text is then checked like any value
    params = get_policy("llava-next").parse_params({"grid_pinpoints": "1344x336"})
    assert get_policy("llava-next").views(2000, 500, **params).grid == (4, 1)


# ---------------------------------------------------------------------------------------------
# docs/policies.md stays true
# ---------------------------------------------------------------------------------------------


def test_docs_table_and_sample_match_the_code():
    from pathlib import Path

    doc = (Path(__file__).resolve().parent.parent / "docs" / "policies.md").read_text()
    rows = {}
    for line in doc.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[0].startswith("`") and cells[0].strip("`") in POLICIES:
            rows[cells[0].strip("`")] = cells
    assert set(rows) == set(POLICIES)
    for name, cells in rows.items():
        v = get_policy(name).views(3840, 2160)
        numbers = [int(c.replace(",", "")) for c in (cells[2], cells[3], cells[5])]
        assert numbers == [v.vit_tokens, v.view_llm_tokens, v.llm_tokens], name
        assert cells[4] == "none" if not v.extras else cells[4].startswith(str(v.extra_tokens) + " ")
    v = get_policy("internvl").views(3840, 2160)
    assert f"# {(v.grid, tuple(tuple(s) for s in v.sizes[:2]), v.vit_tokens, v.llm_tokens)}" in doc
    assert (
        f"max_pixels=12845056).llm_tokens   # {get_policy('qwen2.5-vl').views(3840, 2160, max_pixels=12845056).llm_tokens}" in doc
    )
