"""InternVL3 (``internvl3``) and InternVL (``internvl``) against a REAL ``InternVLProcessor`` call.

The processor is built offline from its classes with InternVL3's released values
(OpenGVLab/InternVL3-*-hf: ``GotOcr2ImageProcessorPil`` at 448 px, ``min_patches=1``,
``max_patches=12`` (the class defaults), ``crop_to_patches`` switched on by the processor,
``image_seq_length=256``), then called on real PIL images with ``<IMG_CONTEXT>`` in the text; the
placeholder ids in ``input_ids``, the ``<img>``/``</img>`` ids and the tiles in ``pixel_values``
are compared with each policy. The grid is not in the processor's output: it is checked against
``get_optimal_tiled_canvas``, the helper the preprocess cuts with, and implied by the tile count.
"""

from __future__ import annotations

import pytest

from tests.processors import EDGE_SIZES_448, build_processor, count_ids, sampled_sizes, tiny_tokenizer
from uhd_profile.model.policies import get_policy

NAMES = ("internvl3", "internvl")
FIXED = EDGE_SIZES_448


SIZES = FIXED + sampled_sizes(20, seed=3)


@pytest.fixture(scope="module")
def proc():
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil
    from transformers.models.internvl.processing_internvl import InternVLProcessor

    ip = GotOcr2ImageProcessorPil(size={"height": 448, "width": 448})
    assert (ip.min_patches, ip.max_patches, ip.size.height, ip.size.width) == (1, 12, 448, 448)
    specials = ["<img>", "</img>", "<IMG_CONTEXT>", "<video>"]
    tok = tiny_tokenizer(
        specials, start_image_token="<img>", end_image_token="</img>", context_image_token="<IMG_CONTEXT>", video_token="<video>"
    )
    tok.start_image_token_id = tok.convert_tokens_to_ids("<img>")
    tok.end_image_token_id = tok.convert_tokens_to_ids("</img>")
    tok.context_image_token_id = tok.convert_tokens_to_ids("<IMG_CONTEXT>")
    p = build_processor(InternVLProcessor, image_processor=ip, tokenizer=tok, image_seq_length=256)
    assert p.images_kwargs == {"crop_to_patches": True}
    return p


def _check(proc, w, h, **params):
    from PIL import Image
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import get_optimal_tiled_canvas

    tok = proc.tokenizer
    kwargs = {"min_patches": params["min_tiles"], "max_patches": params["max_tiles"]} if params else {}
    out = proc(text=["describe the image <IMG_CONTEXT>"], images=[Image.new("RGB", (w, h))], return_tensors="np", **kwargs)
    lo, hi = params.get("min_tiles", 1), params.get("max_tiles", 12)
    grid = get_optimal_tiled_canvas((h, w), (448, 448), lo, hi) if hi > 1 else (1, 1)
    for name in NAMES:
        v = get_policy(name).views(w, h, **params)
        assert v.policy == name
        assert v.placeholder_tokens == count_ids(out, tok, "<IMG_CONTEXT>"), (name, w, h)
        assert v.special_tokens == count_ids(out, tok, "<img>") + count_ids(out, tok, "</img>") == 2
        assert v.text_tokens == 0 and v.llm_tokens == v.placeholder_tokens + v.special_tokens + v.text_tokens
        assert tuple(out["pixel_values"].shape) == (len(v.views), 3, 448, 448), (name, w, h)
        assert v.grid == grid and len(v.views) == grid[0] * grid[1] + (grid != (1, 1)), (name, w, h)
        assert all(x.size == (448, 448) and x.vit_tokens == 1025 and x.llm_tokens == 256 for x in v.views)


def test_real_processor_default_values(proc):
    assert len(SIZES) >= 30
    for w, h in SIZES:
        _check(proc, w, h)


def test_real_processor_other_tile_limits(proc):
    for (w, h), (lo, hi) in zip(
        [(300, 200), (1000, 120), (120, 900), (700, 700), (3840, 2160), (1, 1)],
        [(1, 6), (2, 4), (1, 1), (4, 9), (1, 24), (2, 2)],
    ):
        _check(proc, w, h, min_tiles=lo, max_tiles=hi)


@pytest.mark.slow
def test_real_processor_sweep(proc):
    for w, h in sampled_sizes(200, seed=11):
        _check(proc, w, h)


def test_same_rule_under_both_names():
    a, b = get_policy("internvl3"), get_policy("internvl")
    assert a.defaults == b.defaults == {"min_tiles": 1, "max_tiles": 12}
    assert (a.encoder, a.patch, a.merge, a.llm) == (b.encoder, b.patch, b.merge, b.llm)
    v = a.views(3840, 2160)
    assert (v.grid, v.view_llm_tokens, v.llm_tokens, v.vit_tokens) == ((4, 2), 2304, 2306, 9225)


def test_internvit_6b_preset_builds_the_6b_layer():
    """``internvit-6b-448`` at its released geometry, and (at a small width, so it runs on a CPU)
    ``InternVitTrunk`` builds InternViT-6B's layer: RMSNorm, qk-norm, no qkv bias; the adapter's
    path reproduces the ``transformers`` forward and meta counting matches a real run."""
    from dataclasses import replace

    import torch

    from uhd_profile import VariantSpec, count_flops
    from uhd_profile.model.encoders import ENCODERS, get_encoder

    spec = get_encoder("internvit-6b-448")
    assert (spec.layers, spec.hidden, spec.mlp, spec.heads, spec.patch, spec.image_size) == (45, 3200, 12800, 25, 14, 448)
    assert (spec.prefix_tokens, spec.default_post_ratio, spec.norm) == (1, 4, "rmsnorm")
    small = replace(spec, name="test-small-internvit-6b", layers=3, hidden=64, mlp=128, heads=4, image_size=112)
    ENCODERS[small.name] = small
    try:
        torch.manual_seed(0)
        trunk = small.build()
        cfg = trunk.hf.config
        assert (cfg.norm_type, cfg.use_qk_norm, cfg.attention_bias) == ("rms_norm", True, False)
        assert trunk.layer_parts(0).eps == 1e-6
        pixels = torch.randn(1, 3, 112, 168)
        with torch.no_grad():
            x = trunk.embed_pixels(pixels)
            for i in range(small.layers):
                x = trunk.run_layer(i, x, (8, 12))
            theirs = trunk.hf.eval()(pixels).last_hidden_state
        torch.testing.assert_close(x, theirs, rtol=1e-4, atol=1e-4)
        v = VariantSpec(encoder=small.name, post_ratio=1)
        assert count_flops(v).total == count_flops(v, shape_only=False).total
    finally:
        del ENCODERS[small.name]
