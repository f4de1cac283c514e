"""Gemma 4 (``gemma-4``) against a REAL ``Gemma4Processor`` call, and its padded tower call.

The processor is built offline from its classes with the released values as ``transformers`` 5.x
ships them (the ``Gemma4ImageProcessorPil`` class defaults: patch 16, ``pooling_kernel_size=3``,
``max_soft_tokens=280``, bicubic, rescale to [0, 1]; ``Gemma4Processor`` with the ``<|image|>``,
``<|image>``, ``<image|>`` tokens of the released tokenizer), then called on real PIL images with
``<|image|>`` in the text. Compared with the policy: the ``<|image|>`` ids in ``input_ids``
(placeholder tokens), the ``<|image>``/``<image|>`` ids (special tokens), ``pixel_values``
(one image per view, padded to budget x 9 patches: the tower's sequence), the real patches (the
position ids that are not (-1, -1)) and the patch grid (the largest position + 1).
"""

from __future__ import annotations

import random

import pytest

from tests.processors import build_processor, count_ids, tiny_tokenizer
from uhd_profile.analyse.cost import call_size, cost_item, count_call, padded_input, view_calls
from uhd_profile.errors import UhdProfileError
from uhd_profile.model.encoders import get_encoder
from uhd_profile.model.llms import get_llm
from uhd_profile.model.policies import get_policy
from uhd_profile.model.policies.gemma4 import BUDGETS
from uhd_profile.units import Size

NAME = "gemma-4"
TOKENS = dict(
    image_token="<|image|>",
    boi_token="<|image>",
    eoi_token="<image|>",
    audio_token="<|audio|>",
    boa_token="<|audio>",
    eoa_token="<audio|>",
)
FIXED = [
    (1, 1),
    (5, 3),
    (3, 1),
    (1, 3),
    (30, 400),
    (400, 30),
    (1, 20),
    (20, 1),
    (48, 48),
    (768, 768),
    (1024, 768),
    (768, 1024),
    (1920, 1080),
    (3840, 2160),
    (8000, 6000),
    (8000, 10),
    (10, 8000),
    (2000, 40),
]


def random_sizes(n: int, seed: int) -> list[tuple[int, int]]:
    """``n`` sizes with aspect ratios from 1:20 to 20:1 and long sides from 16 to 4000 px."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        ratio = 20 ** rng.uniform(-1, 1)
        long = rng.randint(16, 4000)
        w, h = (long, max(1, round(long / ratio))) if ratio >= 1 else (max(1, round(long * ratio)), long)
        out.append((w, h))
    return out


@pytest.fixture(scope="module")
def gemma4():
    from transformers.models.gemma4.feature_extraction_gemma4 import Gemma4AudioFeatureExtractor
    from transformers.models.gemma4.image_processing_pil_gemma4 import Gemma4ImageProcessorPil
    from transformers.models.gemma4.processing_gemma4 import Gemma4Processor

    ip = Gemma4ImageProcessorPil()
    assert (ip.patch_size, ip.pooling_kernel_size, ip.max_soft_tokens) == (16, 3, 280)
    tok = tiny_tokenizer(list(TOKENS.values()), **TOKENS)
    tok.image_token_id = tok.convert_tokens_to_ids("<|image|>")
    tok.audio_token_id = tok.convert_tokens_to_ids("<|audio|>")
    proc = build_processor(
        Gemma4Processor, image_processor=ip, tokenizer=tok, feature_extractor=Gemma4AudioFeatureExtractor(), video_processor=None
    )
    return proc, tok


def _check(gemma4, w: int, h: int, budget: int | None = None) -> None:
    from PIL import Image

    proc, tok = gemma4
    kw = {} if budget is None else {"max_soft_tokens": budget}
    v = get_policy(NAME).views(w, h, **kw)
    batch = proc(text=["describe <|image|>"], images=[[Image.new("RGB", (w, h), (90, 140, 30))]], return_tensors="np", **kw)
    pv, pos = batch["pixel_values"], batch["image_position_ids"]
    seq = (budget or 280) * 9
    real = int((pos[0] != -1).any(-1).sum())
    grid = (int(pos[0, :real, 0].max()) + 1, int(pos[0, :real, 1].max()) + 1)
    (view,) = v.views
    assert v.placeholder_tokens == count_ids(batch, tok, "<|image|>"), (w, h, budget)
    assert v.special_tokens == count_ids(batch, tok, "<|image>") + count_ids(batch, tok, "<image|>") == 2
    assert v.extra("image_start") == count_ids(batch, tok, "<|image>") == 1
    assert v.llm_tokens == v.placeholder_tokens + v.special_tokens + v.text_tokens == v.processor_tokens
    assert pv.shape == (len(v.views), seq, 3 * 16 * 16), (w, h, budget)  # one image, padded to the budget
    assert (view.vit_tokens, view.padding, view.seq_len) == (real, seq - real, seq), (w, h, budget)
    assert view.patches == grid and tuple(view.size) == (grid[0] * 16, grid[1] * 16), (w, h, budget)
    assert (v.vit_tokens, v.vit_padding_tokens) == (seq, seq - real)
    assert bool((pos[0, real:] == -1).all())  # the padding is the tail, every position (-1, -1)


@pytest.mark.parametrize("size", FIXED + random_sizes(24, seed=4), ids=lambda s: f"{s[0]}x{s[1]}")
def test_gemma4_matches_processor(gemma4, size):
    _check(gemma4, *size)


@pytest.mark.parametrize("budget", BUDGETS)
def test_gemma4_budgets_match_processor(gemma4, budget):
    for w, h in [(1, 1), (1024, 768), (300, 4000), (8000, 10), (777, 333)]:
        _check(gemma4, w, h, budget)


@pytest.mark.slow
def test_gemma4_sweep_matches_processor(gemma4):
    for budget in BUDGETS:
        for w, h in random_sizes(60, seed=budget):
            _check(gemma4, w, h, budget)


def test_gemma4_required_result(cli_json):
    (d,) = cli_json("image", "1024x768", "--policy", NAME, "--json")
    assert (d["placeholder_tokens"], d["vit_tokens"], d["vit_padding_tokens"]) == (266, 2520, 126)
    assert d["views"][0]["vit_tokens"] == 2394 and d["views"][0]["seq_len"] == 2520
    assert any("126 padding patches" in n for n in d["notes"])


def test_gemma4_padded_call_counts_the_padded_sequence():
    """The tower's FLOPs follow the padded sequence: the call equals the tower counted on any input
    of seq_len tokens, and is more than the real patches alone would cost."""
    v = get_policy(NAME).views(1024, 768)
    (view,) = v.views
    calls = view_calls(v)
    assert calls == [(1, padded_input(2520, 16))] == [(1, call_size(v, view))] and padded_input(2520, 16) == Size(896, 720)
    padded = count_call("gemma4-vision", "vit", Size(896, 720), 1)
    assert padded == count_call("gemma4-vision", "vit", Size(63 * 16, 40 * 16), 1)  # layout does not matter
    real = count_call("gemma4-vision", "vit", Size(*view.size), 1)
    assert padded["macs"] > real["macs"]
    cost = cost_item(1024, 768, NAME)
    assert cost.counts["vit"] == padded
    # an image with no padding (its grid fills the budget) is counted on its own size
    full = get_policy(NAME).views(8000, 10)
    assert full.vit_padding_tokens == 0 and view_calls(full) == [(1, Size(13440, 48))]


def test_gemma4_refusals_and_settings():
    pol = get_policy(NAME)
    for bad in (0, 300, 281, True, "280"):
        with pytest.raises(UhdProfileError, match="one of 70, 140, 280, 560, 1120"):
            pol.views(100, 100, max_soft_tokens=bad)
    assert pol.parse_params({"max_soft_tokens": "560"}) == {"max_soft_tokens": 560}
    assert pol.knob is None and pol.merge == 9 and pol.variants == ("vit",)
    get_llm(pol.llm)
    spec = get_encoder(pol.encoder)
    assert (spec.layers, spec.hidden, spec.heads, spec.patch, spec.prefix_tokens) == (16, 768, 12, 16, 0)
    assert spec.mlp * 2 == 3 * 3072  # the gated MLP's MACs and weights in a two-matrix MLP
