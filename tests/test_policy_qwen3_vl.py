"""qwen3-vl (and qwen3.5) against a real ``Qwen3VLProcessor`` (transformers), built offline.

Released values (Qwen/Qwen3-VL-*-Instruct preprocessor_config.json, and Qwen3.5's, which are the
same): ``image_processor_type`` Qwen2VLImageProcessorFast, ``size`` {shortest_edge: 65536,
longest_edge: 16777216}, patch_size 16, temporal_patch_size 2, merge_size 2, image_mean/std 0.5.
The installed transformers has no copy of them (its Qwen2-VL class defaults are patch 14 and
56*56..28*28*1280, Qwen2-VL's), so the image processor is built from its class with these values;
``Qwen2VLImageProcessorPil`` is used (the Fast class needs torchvision; the resize rule is shared).
"""

from __future__ import annotations

import random

import pytest

from tests.processors import build_processor, count_ids, tiny_tokenizer
from uhd_profile.errors import UhdProfileError
from uhd_profile.model.policies import get_policy

PIL = pytest.importorskip("PIL.Image")

RELEASED = dict(
    size={"shortest_edge": 65536, "longest_edge": 16777216},
    patch_size=16,
    temporal_patch_size=2,
    merge_size=2,
    image_mean=[0.5, 0.5, 0.5],
    image_std=[0.5, 0.5, 0.5],
)
SPECIALS = ["<|vision_start|>", "<|image_pad|>", "<|vision_end|>", "<|video_pad|>"]
PROMPT = "describe <|vision_start|><|image_pad|><|vision_end|>"

SIZES = [
    (1, 1),
    (5, 3),
    (3, 5),
    (30, 400),
    (400, 30),
    (1, 200),
    (200, 1),
    (20, 400),
    (400, 20),
    (2000, 100),
    (100, 2000),
    (32, 32),
    (33, 31),
    (256, 256),
    (255, 257),
    (640, 480),
    (1024, 768),
    (1920, 1080),
    (1080, 1920),
    (8000, 6000),
]
_rng = random.Random(3)
for _ in range(16):  # random sizes, aspect ratios from 1:20 to 20:1
    ratio = 20 ** _rng.uniform(-1, 1)
    area = 10 ** _rng.uniform(2, 6.3)
    SIZES.append((max(1, round((area * ratio) ** 0.5)), max(1, round((area / ratio) ** 0.5))))
HUGE = [(6000, 8000), (7680, 4320), (3840, 2160), (4096, 4096), (4097, 4095), (12000, 600), (600, 12000), (500, 10000)]


@pytest.fixture(scope="module")
def processor():
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
    from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor

    ip = Qwen2VLImageProcessorPil(**RELEASED)
    assert (ip.size.shortest_edge, ip.size.longest_edge, ip.patch_size, ip.merge_size) == (65536, 16777216, 16, 2)
    proc = build_processor(Qwen3VLProcessor, image_processor=ip, tokenizer=tiny_tokenizer(SPECIALS))
    assert (proc.vision_start_token, proc.image_token, proc.vision_end_token) == tuple(SPECIALS[:3])
    return proc


def _run(processor, sizes, **kwargs):
    images = [PIL.new("RGB", (w, h), (90, 120, 30)) for w, h in sizes]
    return processor(text=[" ".join([PROMPT] * len(sizes))], images=images, return_tensors="np", **kwargs)


def _check(processor, w, h, policy="qwen3-vl", **params):
    out = _run(
        processor,
        [(w, h)],
        **({"size": {"shortest_edge": params["min_pixels"], "longest_edge": params["max_pixels"]}} if params else {}),
    )
    v = get_policy(policy).views(w, h, **params)
    tok = processor.tokenizer
    assert v.placeholder_tokens == count_ids(out, tok, "<|image_pad|>"), (w, h)
    assert v.special_tokens == count_ids(out, tok, "<|vision_start|>") + count_ids(out, tok, "<|vision_end|>") == 2
    assert v.text_tokens == 0 and v.llm_tokens == v.placeholder_tokens + v.special_tokens + v.text_tokens
    # pixel_values: (patches of all images, 3 * 2 * 16 * 16), one image_grid_thw row per view
    assert len(v.views) == len(out["image_grid_thw"]) == 1
    assert out["pixel_values"].shape == (v.vit_tokens, 1536)
    t, gh, gw = out["image_grid_thw"][0].tolist()
    assert (t, (gw, gh)) == (1, v.views[0].patches)
    assert tuple(v.sizes[0]) == (gw * 16, gh * 16)
    # the helper vLLM uses agrees too
    n = processor._get_num_multimodal_tokens(
        image_sizes=[(h, w)],
        **(
            {"images_kwargs": {"size": {"shortest_edge": params["min_pixels"], "longest_edge": params["max_pixels"]}}}
            if params
            else {}
        ),
    )
    assert n["num_image_tokens"] == [v.placeholder_tokens] and n["num_image_patches"] == [v.vit_tokens]


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_matches_processor(processor, size):
    _check(processor, *size)


@pytest.mark.slow
@pytest.mark.parametrize("size", HUGE, ids=[f"{w}x{h}" for w, h in HUGE])
def test_matches_processor_huge(processor, size):
    _check(processor, *size)


@pytest.mark.parametrize(
    "params", [{"min_pixels": 4 * 1024, "max_pixels": 1280 * 1024}, {"min_pixels": 100_000, "max_pixels": 200_000}]
)
@pytest.mark.parametrize("size", [(1, 1), (30, 400), (1920, 1080), (1000, 57)])
def test_matches_processor_with_other_bounds(processor, size, params):
    _check(processor, *size, **params)


def test_several_images_in_one_prompt(processor):
    sizes = [(640, 480), (30, 400), (1, 1)]
    out = _run(processor, sizes)
    views = [get_policy("qwen3-vl").views(w, h) for w, h in sizes]
    assert count_ids(out, processor.tokenizer, "<|image_pad|>") == sum(v.placeholder_tokens for v in views)
    assert out["pixel_values"].shape[0] == sum(v.vit_tokens for v in views)


@pytest.mark.parametrize("size", [(201, 1), (1, 201), (4020, 20), (10000, 49)])
def test_refuses_what_the_processor_refuses(processor, size):
    with pytest.raises(ValueError, match="aspect ratio"):
        _run(processor, [size])
    for name in ("qwen3-vl", "qwen3.5"):
        with pytest.raises(UhdProfileError, match="exceeds 200:1") as e:
            get_policy(name).views(*size)
        assert "\n" not in str(e.value) and name in str(e.value)


def test_qwen3_5_is_the_same_processor_and_rule():
    from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING_NAMES
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

    assert PROCESSOR_MAPPING_NAMES["qwen3_5"] == PROCESSOR_MAPPING_NAMES["qwen3_vl"] == "Qwen3VLProcessor"
    assert IMAGE_PROCESSOR_MAPPING_NAMES["qwen3_5"] == IMAGE_PROCESSOR_MAPPING_NAMES["qwen3_vl"]
    a, b = get_policy("qwen3-vl"), get_policy("qwen3.5")
    assert (a.encoder, a.patch, a.merge, a.defaults, a.knob) == (b.encoder, b.patch, b.merge, b.defaults, b.knob)
    for w, h in SIZES:
        va, vb = a.views(w, h), b.views(w, h)
        assert (va.sizes, va.token_fields) == (vb.sizes, vb.token_fields) and vb.policy == "qwen3.5"


def test_tower_preset_is_the_config_default():
    from transformers.models.qwen3_5.configuration_qwen3_5 import Qwen3_5VisionConfig
    from transformers.models.qwen3_vl.configuration_qwen3_vl import Qwen3VLVisionConfig

    from uhd_profile.model.encoders import get_encoder

    e = get_encoder("qwen3-vl-vit")
    for c in (Qwen3VLVisionConfig(), Qwen3_5VisionConfig()):
        assert (e.layers, e.hidden, e.mlp, e.heads, e.patch) == (
            c.depth,
            c.hidden_size,
            c.intermediate_size,
            c.num_heads,
            c.patch_size,
        )
        assert (e.image_size // e.patch) ** 2 == c.num_position_embeddings and c.spatial_merge_size**2 == e.default_post_ratio
    assert tuple(Qwen3VLVisionConfig().deepstack_visual_indexes) == (8, 16, 24)
    assert "DeepStack" in e.description


def test_worked_example():
    v = get_policy("qwen3-vl").views(3840, 2160)
    assert tuple(v.sizes[0]) == (3840, 2176) and v.views[0].patches == (240, 136)
    assert (v.vit_tokens, v.placeholder_tokens, v.llm_tokens) == (32640, 8160, 8162)
    with pytest.raises(UhdProfileError, match="max_pixels 1000"):
        get_policy("qwen3-vl").views(100, 100, max_pixels=1000)
