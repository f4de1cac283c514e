"""MiniCPM-V 4.7 (``minicpm-v-4.7``) against a REAL ``MiniCPMV4_7Processor`` call.

``transformers`` maps minicpmv4_7 to 4.6's image processor (``MiniCPMV4_6ImageProcessorPil``,
image_processing_auto), built here at its class defaults (9 slices, scale_resolution 448, patch 14,
16x, slice mode and image ids on; the openbmb/MiniCPM-V-4.7-1B preprocessor config is not available
offline, so the class defaults are what this follows). The processor's video processor needs
torchvision, absent here: a stand-in carrying the two attributes ``__init__`` reads is passed (no
video is processed). Each size goes through ``processor(text=[...<image>-placeholder...],
images=[[img]])``; the placeholder ids, the wrapper specials and the ``\\n`` between slice rows in
``input_ids``, the views in ``pixel_values``/``target_sizes`` and the grid are compared with the
policy, and 4.7's views are checked equal to 4.6's (its behaviour unchanged).
"""

from __future__ import annotations

import types

import pytest

from tests.processors import EDGE_SIZES_448, build_processor, count_ids, sampled_sizes, tiny_tokenizer
from uhd_profile.model.policies import get_policy

NAME = "minicpm-v-4.7"
SPECIALS = ["<unk>", "<image>", "</image>", "<slice>", "</slice>", "<image_id>", "</image_id>", "<video>"]
FIXED = EDGE_SIZES_448


SIZES = FIXED + sampled_sizes(20, seed=7)


@pytest.fixture(scope="module")
def proc():
    from transformers.models.minicpmv4_6.image_processing_pil_minicpmv4_6 import MiniCPMV4_6ImageProcessorPil
    from transformers.models.minicpmv4_7.processing_minicpmv4_7 import MiniCPMV4_7Processor

    ip = MiniCPMV4_6ImageProcessorPil()
    assert (ip.max_slice_nums, ip.scale_resolution, ip.patch_size, ip.downsample_mode) == (9, 448, 14, "16x")
    assert (ip.use_image_id, ip.slice_mode) == (True, True)
    tok = tiny_tokenizer(
        SPECIALS,
        keep_newlines=True,  # the processor's "\n" between slice rows stays a token to count
        image_token="<unk>",
        video_token="<video>",
        image_start_token="<image>",
        image_end_token="</image>",
        slice_start_token="<slice>",
        slice_end_token="</slice>",
        image_id_start_token="<image_id>",
        image_id_end_token="</image_id>",
    )
    tok.image_token_id = tok.convert_tokens_to_ids("<unk>")
    tok.video_token_id = tok.convert_tokens_to_ids("<video>")
    video = types.SimpleNamespace(slice_mode=True, downsample_mode="16x")  # never called: images only
    return build_processor(MiniCPMV4_7Processor, image_processor=ip, video_processor=video, tokenizer=tok)


def _check(proc, w, h, **params):
    from PIL import Image

    tok = proc.tokenizer
    out = proc(text=["describe <unk>"], images=[[Image.new("RGB", (w, h))]], **params)
    v = get_policy(NAME).views(w, h, **params)
    n = len(v.views)
    assert v.placeholder_tokens == count_ids(out, tok, "<unk>"), (w, h, params)
    specials = {t: count_ids(out, tok, t) for t in SPECIALS[1:7]}
    assert v.special_tokens == sum(specials.values()), (w, h, specials)
    assert specials["<image>"] == specials["</image>"] == 1 and specials["<slice>"] == n - 1
    use_id = params.get("use_image_id", True)
    assert specials["<image_id>"] == int(use_id) and v.extra("image_id_tags") == 2 * use_id
    assert v.extra("row_separators") == count_ids(out, tok, "\n"), (w, h)
    assert v.extra("image_id_number") == count_ids(out, tok, "[UNK]")  # the id "0": the only unknown word
    assert v.llm_tokens == v.placeholder_tokens + v.special_tokens + v.text_tokens
    # views: the thumbnail then the slices, each a [patch rows, patch cols] target size; pixel_values
    # packs every view's patches side by side: (1, 3, 14, 14 x all patches)
    sizes = out["target_sizes"].tolist()
    assert len(sizes) == n and [[s[1] // 14, s[0] // 14] for s in v.sizes] == sizes, (w, h)
    patches = sum(x.patches[0] * x.patches[1] for x in v.views)
    assert tuple(out["pixel_values"].shape) == (1, 3, 14, 14 * patches), (w, h)
    grid = out["grids"][0].tolist() if "grids" in out else None
    if grid is not None:
        assert (v.grid or (0, 0)) == (grid[1], grid[0])
    assert v.views == get_policy("minicpm-v-4.6").views(w, h, **params).views  # 4.6 unchanged, same views


def test_real_processor_default_values(proc):
    assert len(SIZES) >= 30
    for w, h in SIZES:
        _check(proc, w, h)


def test_real_processor_other_values(proc):
    for (w, h), params in zip(
        [(3840, 2160), (1000, 300), (300, 1000), (1920, 1080)],
        [{"max_slice_nums": 4}, {"max_slice_nums": 16}, {"use_image_id": False}, {"scale_resolution": 560}],
    ):
        _check(proc, w, h, **params)


@pytest.mark.slow
def test_real_processor_sweep(proc):
    for w, h in sampled_sizes(200, seed=17):
        _check(proc, w, h)


def test_policy_shape():
    p = get_policy(NAME)
    assert "encoding" not in p.defaults and p.variants == ("vit",) and p.llm == "minicpm-v-4.6-llm"
    v = p.views(3840, 2160)
    assert v.policy == NAME and (v.grid, v.vit_tokens, v.llm_tokens) == ((4, 2), 9248, 600)
