"""smolvlm2 and idefics3 against real ``SmolVLMProcessor`` / ``Idefics3Processor`` (transformers), offline.

Released values followed: SmolVLM2-256M/500M-Video-Instruct (``max_image_size`` 512,
``size`` longest_edge 2048, ``image_seq_len`` 64) and Idefics3-8B-Llama3 (the Idefics3 class
defaults: 364, 1456, 169). ``num2words`` (needed by SmolVLMProcessor only for video prompts) is
not installed: a stub stands in for it. The tiny tokenizer holds ``<row_i_col_j>`` and
``<global-img>`` as one added token each, as the released tokenizers do.
"""

from __future__ import annotations

import random

import pytest

from tests.processors import build_processor, count_ids, tiny_tokenizer
from uhd_profile.errors import UhdProfileError
from uhd_profile.model.policies import get_policy

PIL = pytest.importorskip("PIL.Image")

MARKERS = [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]
SPECIALS = ["<image>", "<fake_token_around_image>", "<global-img>", "<end_of_utterance>", "<video>", *MARKERS]

SIZES = [
    (1, 1),
    (5, 3),
    (3, 5),
    (30, 400),
    (400, 30),
    (364, 364),
    (365, 364),
    (512, 512),
    (513, 100),
    (1920, 1080),
    (3840, 2160),
    (1080, 1920),
    (8000, 6000),
    (1, 3000),
    (3000, 1),
    (20, 400),
    (400, 20),
    (2000, 100),
    (100, 2000),
    (4000, 200),
    (640, 480),
    (1024, 768),
    (1456, 1456),
    (2048, 2047),
    (500, 10000),
    (10000, 500),
]
_rng = random.Random(11)
SIZES += [(_rng.randint(1, 4000), _rng.randint(1, 4000)) for _ in range(10)]


@pytest.fixture(scope="module")
def processors():
    import transformers.models.smolvlm.processing_smolvlm as ps
    from transformers import Idefics3ImageProcessorPil, Idefics3Processor, SmolVLMImageProcessorPil, SmolVLMProcessor

    if ps.num2words is None:
        ps.num2words = lambda n: str(n)  # only video prompts use it
    smol = build_processor(
        SmolVLMProcessor,
        image_processor=SmolVLMImageProcessorPil(size={"longest_edge": 2048}, max_image_size={"longest_edge": 512}),
        tokenizer=tiny_tokenizer(SPECIALS),
        video_processor=None,
        image_seq_len=64,
    )
    idefics = build_processor(
        Idefics3Processor, image_processor=Idefics3ImageProcessorPil(), tokenizer=tiny_tokenizer(SPECIALS), image_seq_len=169
    )
    return {"smolvlm2": smol, "idefics3": idefics}


def _check(processor, name, w, h):
    policy = get_policy(name)
    img = PIL.new("RGB", (w, h), (90, 120, 30))
    try:
        out = processor(text=["describe <image>"], images=[[img]], return_tensors="np")
    except Exception:
        with pytest.raises(UhdProfileError):
            policy.views(w, h)
        return
    v = policy.views(w, h)
    tok = processor.tokenizer
    assert v.placeholder_tokens == count_ids(out, tok, "<image>")
    assert len(v.views) == out["pixel_values"].shape[1]  # (images, crops + global, 3, M, M)
    side = get_policy(name).views(1, 1).views[0].size[0]
    assert out["pixel_values"].shape[-2:] == (side, side)
    assert v.extra("fake_token_around_image") == count_ids(out, tok, "<fake_token_around_image>")
    assert v.extra("global_img") == count_ids(out, tok, "<global-img>")
    assert v.extra("row_col_markers") == sum(count_ids(out, tok, m) for m in MARKERS)
    assert v.special_tokens == sum(count_ids(out, tok, t) for t in ("<fake_token_around_image>", "<global-img>", *MARKERS))
    if v.grid is not None:
        cols, rows = v.grid
        assert len(v.views) == cols * rows + 1
        assert count_ids(out, tok, f"<row_{rows}_col_{cols}>") == 1 if rows <= 6 and cols <= 6 else True
    else:
        assert len(v.views) == 1
    assert v.llm_tokens == v.placeholder_tokens + v.special_tokens + v.text_tokens
    helper = processor._get_num_multimodal_tokens(image_sizes=[(h, w)])["num_image_tokens"][0]
    assert helper == v.placeholder_tokens


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
@pytest.mark.parametrize("name", ["smolvlm2", "idefics3"])
def test_matches_processor(processors, name, size):
    _check(processors[name], name, *size)


@pytest.mark.slow
@pytest.mark.parametrize("size", [(6000, 8000), (7680, 4320)], ids=["6000x8000", "7680x4320"])
@pytest.mark.parametrize("name", ["smolvlm2", "idefics3"])
def test_matches_processor_huge(processors, name, size):
    _check(processors[name], name, *size)


def test_no_splitting(processors):
    p = processors["idefics3"]
    img = PIL.new("RGB", (1920, 1080))
    out = p(text=["describe <image>"], images=[[img]], do_image_splitting=False, return_tensors="np")
    v = get_policy("idefics3").views(1920, 1080, do_image_splitting=False)
    assert v.placeholder_tokens == count_ids(out, p.tokenizer, "<image>") == 169
    assert len(v.views) == out["pixel_values"].shape[1] == 1
