"""llava-onevision against a real ``LlavaOnevisionProcessor`` (transformers), built offline.

Released values (llava-hf/llava-onevision-qwen2-*-ov-hf): the image processor's class defaults
(384 px, the 36 pinpoints 384..2304), processor ``num_image_tokens=729``,
``vision_feature_select_strategy="full"``, ``vision_aspect_ratio="anyres_max_9"``.
"""

from __future__ import annotations

import random

import pytest

from tests.processors import build_processor, count_ids, tiny_tokenizer
from uhd_profile.model.policies import get_policy

PIL = pytest.importorskip("PIL.Image")

SIZES = [
    (1, 1),
    (5, 3),
    (3, 5),
    (30, 400),
    (400, 30),
    (384, 384),
    (385, 384),
    (768, 384),
    (1920, 1080),
    (3840, 2160),
    (1080, 1920),
    (8000, 6000),
    (6000, 8000),
    (20, 400),
    (400, 20),
    (2000, 100),
    (100, 2000),
    (4000, 200),
    (640, 480),
    (1024, 768),
    (2304, 2304),
    (2305, 2303),
    (1152, 1153),
    (7680, 4320),
    (500, 10000),
    (10000, 500),
]
_rng = random.Random(7)
SIZES += [(_rng.randint(1, 4000), _rng.randint(1, 4000)) for _ in range(10)]


@pytest.fixture(scope="module")
def processor():
    from transformers import LlavaOnevisionImageProcessorPil, LlavaOnevisionProcessor

    tok = tiny_tokenizer(["<image>", "<video>"])
    return build_processor(
        LlavaOnevisionProcessor,
        image_processor=LlavaOnevisionImageProcessorPil(),
        tokenizer=tok,
        num_image_tokens=729,
        vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_9",
    )


def _run(processor, w, h):
    img = PIL.new("RGB", (w, h), (90, 120, 30))
    return processor(text=["describe <image>"], images=[img], return_tensors="np")


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_matches_processor(processor, size):
    w, h = size
    out = _run(processor, w, h)
    v = get_policy("llava-onevision").views(w, h)
    assert v.placeholder_tokens == count_ids(out, processor.tokenizer, "<image>")
    assert len(v.views) == out["pixel_values"].shape[1]  # (images, base + crops, 3, 384, 384)
    assert out["pixel_values"].shape[-2:] == (384, 384)
    cols, rows = v.grid
    assert (cols * 384, rows * 384) == tuple(v.canvas)
    assert v.llm_tokens == v.placeholder_tokens + v.special_tokens + v.text_tokens
    assert v.special_tokens == v.text_tokens == 0
    # the model's own count (helper) agrees too
    helper = processor._get_num_multimodal_tokens(image_sizes=[(h, w)])["num_image_tokens"][0]
    assert helper == v.placeholder_tokens


def test_max_crops_param():
    p = get_policy("llava-onevision")
    assert p.views(3840, 2160, max_crops=36).placeholder_tokens > p.views(3840, 2160).placeholder_tokens
    assert p.views(3840, 2160).extra("image_newline") == 61
