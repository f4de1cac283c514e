"""The LLM stage: counted == closed form for every preset, causal charging per convention, decode
with a real KV cache, KV-cache bytes, in-LLM dropping (FastV / PyramidDrop), the textbook formula
against hand arithmetic, timing helpers, one-line errors."""

from __future__ import annotations

import functools
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from uhd_profile.count.flops import attention_cost, causal_pairs, count_module
from uhd_profile.count.llm import Drop, DropStage, count_llm, fastv, kept_count, pyramid_drop
from uhd_profile.count.llm_formulas import TextbookOptions, closed_form, textbook
from uhd_profile.errors import UhdProfileError
from uhd_profile.measure.timing import TimingSettings
from uhd_profile.model.llms import LLMS, get_llm

TINY = ["tiny-llm", "tiny-hybrid-llm"]


@functools.cache
def _count(name: str, visual: int, prompt: int, decode: int = 0):
    """A plain (no drop) count, shared by the tests that read it (the full-size ones take seconds)."""
    return count_llm(name, visual, prompt, decode_tokens=decode)


# --------------------------------------------------------------------------------------------
# Counted == closed form
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("visual,prompt", [(20, 5), (1, 2), (150, 10)])
@pytest.mark.parametrize("lm_head", ["last", "all"])
def test_tiny_counted_equals_closed_form(name, visual, prompt, lm_head):
    c = count_llm(name, visual, prompt, decode_tokens=3, lm_head=lm_head)
    cf = closed_form(c.spec, visual, prompt, 3, lm_head)
    assert c.uncounted_ops == {}
    assert c.prefill_total("macs") == cf.prefill
    assert c.prefill_total("macs", causal="dense") == cf.prefill_dense
    assert [s.total.macs for s in c.decode_steps] == list(cf.decode)


# full size on meta; the minicpm hybrid runs its chunked delta rule op by op, so fewer tokens
# (264 = four full 64-token chunks and a padded one)
FULL_SIZE = [("qwen3-8b", 4900), ("llama-2-7b", 576), ("qwen2.5-7b", 1200), ("minicpm-v-4.6-llm", 200)]


@pytest.mark.parametrize("name,visual", FULL_SIZE)
def test_full_size_counted_equals_closed_form(name, visual):
    c = _count(name, visual, 64, 2)
    cf = closed_form(c.spec, visual, 64, 2)
    assert c.uncounted_ops == {}
    assert c.prefill_total("macs") == cf.prefill
    assert c.prefill_total("macs", "dense") == cf.prefill_dense
    assert [s.total.macs for s in c.decode_steps] == list(cf.decode)
    assert set(LLMS) - {n for n, _ in FULL_SIZE} == set(TINY)  # every preset is covered


def test_qwen3_8b_prefill_pinned():
    # 36 x [n d (32*128 + 2*8*128 + 32*128) + 3 n d m + 32 * n(n+1)/2 * 2 * 128] + d V, n = 4964:
    # 36 x [4964*4096*10240 + 3*4964*4096*12288 + 32*12323630*256] + 4096*151936
    # = 36 x [208,207,093,760 + 749,545,537,536 + 100,955,176,960] + 622,329,856 = 38,113,650,737,152
    assert _count("qwen3-8b", 4900, 64, 2).prefill_total("macs") == 38_113_650_737_152


# --------------------------------------------------------------------------------------------
# Causal attention in every convention
# --------------------------------------------------------------------------------------------


class _Sdpa(nn.Module):
    def forward(self, q, k, v, mask=None, is_causal=False):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)


def test_sdpa_is_causal_charges_the_lower_triangle():
    q = torch.randn(1, 2, 6, 8)
    dense = count_module(_Sdpa(), q, q, q, shape_only=False)
    causal = count_module(_Sdpa(), q, q, q, is_causal=True, shape_only=False)
    # 2 heads x 21 allowed pairs (6*7/2) x (8 + 8) MACs; dense is 2 x 36 x 16
    assert causal.get("macs") == 2 * 21 * 16 and dense.get("macs") == 2 * 36 * 16
    # flops: 2 per MAC + 4 per allowed score (scale 1, softmax 3); no mask tensor, so no mask add
    assert causal.get("flops") == 2 * causal.get("macs") + 4 * 2 * 21
    assert causal.get("paper") == dense.get("paper")  # paper charges the full square
    assert causal.causal_skipped.macs == 2 * 15 * 16 and causal.causal_skipped.paper == 0
    assert causal.dense == dense.total  # the dense figure is one addition away
    assert dense.causal_skipped.macs == 0


def test_sdpa_causal_mask_with_a_kv_past_is_bottom_right():
    # 3 new queries over 7 keys (4 cached): query i sees 4 + i + 1 keys -> 5 + 6 + 7 = 18 pairs
    q, k = torch.randn(1, 1, 3, 8), torch.randn(1, 1, 7, 8)
    mask = torch.ones(3, 7, dtype=torch.bool).tril(4)
    fc = count_module(_Sdpa(), q, k, k, mask, shape_only=False)
    assert causal_pairs(3, 7) == 18
    assert fc.get("macs") == 18 * 16
    assert fc.get("flops") == 2 * 18 * 16 + 5 * 18  # an explicit mask costs one add per score
    assert fc.dense == count_module(_Sdpa(), q, k, k, torch.ones(3, 7, dtype=torch.bool), shape_only=False).total


def test_non_causal_masks_and_meta_masks_stay_dense():
    q = torch.randn(1, 1, 4, 8)
    padding = torch.tensor([[True, True, False, True]]).expand(4, 4)
    fc = count_module(_Sdpa(), q, q, q, padding, shape_only=False)
    assert fc.total == attention_cost(1, 1, 4, 4, 8, 8, masked=True) and fc.causal_skipped.macs == 0
    qm = torch.empty(1, 1, 4, 8, device="meta")
    meta_mask = torch.empty(4, 4, dtype=torch.bool, device="meta")  # no values: cannot know it is causal
    assert count_module(_Sdpa(), qm, qm, qm, meta_mask).total == attention_cost(1, 1, 4, 4, 8, 8, masked=True)


@pytest.mark.parametrize("name", TINY)
def test_eager_causal_attention_matches_sdpa(name):
    """Eager attention (matmul, scale, mask add, softmax, matmul) on a causal mask is charged like
    SDPA's causal kernel: equal macs and paper; flops one more per allowed pair (the mask add)."""
    spec = get_llm(name)
    sdpa = count_llm(name, 20, 5, decode_tokens=2, attn="sdpa")
    eager = count_llm(name, 20, 5, decode_tokens=2, attn="eager")
    assert eager.prefill.total.macs == sdpa.prefill.total.macs
    assert eager.prefill.total.paper == sdpa.prefill.total.paper
    pairs = len(spec.attention_layers) * spec.heads * 25 * 26 // 2
    assert eager.prefill.total.flops - sdpa.prefill.total.flops == pairs
    assert [s.total.macs for s in eager.decode_steps] == [s.total.macs for s in sdpa.decode_steps]
    assert "aten::bmm" in eager.prefill.by_op  # eager really ran as matmuls


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_meta_count_equals_real_execution(name, attn):
    for drop in (None, fastv(get_llm(name).attention_layers[0], 0.5)):
        meta = count_llm(name, 20, 5, decode_tokens=2, attn=attn, drop=drop)
        real = count_llm(name, 20, 5, decode_tokens=2, attn=attn, drop=drop, shape_only=False)
        assert meta.prefill.total == real.prefill.total
        assert meta.prefill.causal_skipped == real.prefill.causal_skipped
        assert [s.total for s in meta.decode_steps] == [s.total for s in real.decode_steps]
        assert real.uncounted_ops == {}


def test_causal_prefill_in_each_convention_qwen3_8b():
    c = _count("qwen3-8b", 4900, 64, 2)
    n, h, e, layers = 4964, 32, 128, 36
    masked = layers * h * (n * n - n * (n + 1) // 2)
    assert c.prefill.causal_skipped.macs == masked * 2 * e
    assert c.prefill.causal_skipped.flops == masked * (2 * 2 * e + 4)
    assert c.prefill_total("paper", "dense") == c.prefill_total("paper")  # paper is dense already
    assert c.prefill_total("macs", "dense") - c.prefill_total("macs") == masked * 2 * e


# --------------------------------------------------------------------------------------------
# Decode, LM head, KV cache
# --------------------------------------------------------------------------------------------


def test_decode_grows_with_context_and_lm_head_choice():
    spec = get_llm("tiny-llm")
    c = count_llm("tiny-llm", 20, 5, decode_tokens=4)
    per = c.decode_per_token("macs")
    step = [s.total.macs for s in c.decode_steps]
    # each step attends to one more key in each of 3 layers: 3 x 4 heads x 2 x 16 MACs more
    assert [b - a for a, b in zip(step, step[1:])] == [3 * 4 * 2 * 16] * 3
    assert (per["first"], per["last"], per["mean"]) == (step[0], step[-1], sum(step) / 4)
    assert c.decode_context == (26, 27, 28, 29)
    assert c.total("macs") == c.prefill_total("macs") + sum(step)
    all_pos = count_llm("tiny-llm", 20, 5, lm_head="all")
    assert all_pos.prefill_total("macs") - c.prefill_total("macs") == 24 * spec.hidden * spec.vocab
    assert count_llm("tiny-llm", 20, 5).decode_per_token()["first"] is None


def test_kv_cache_bytes():
    spec = get_llm("tiny-llm")
    c = count_llm("tiny-llm", 20, 5, decode_tokens=3)
    # 3 layers x 2 (K, V) x 2 kv heads x 16 = 192 elements per token
    assert c.cache_after_prefill.kv_tokens == (25, 25, 25)
    assert c.cache_after_prefill.kv_elems == 25 * 192 and c.cache_after_decode.kv_elems == 28 * 192
    assert c.cache_after_prefill.bytes("fp32") == 25 * 192 * 4
    assert c.cache_after_prefill.bytes("bf16") == c.cache_after_prefill.bytes("fp16") == 25 * 192 * 2
    assert spec.kv_width * len(spec.attention_layers) == 192
    with pytest.raises(UhdProfileError, match="valid: fp32, bf16, fp16"):
        c.cache_after_prefill.bytes("int4")


def test_kv_cache_bytes_qwen3_8b_and_hybrid_state():
    # qwen3-8b at 4964 tokens: 36 layers x 2 (K, V) x 8 heads x 128 = 73,728 elements per token;
    # x 4964 tokens = 365,985,792 elements; x 2 bytes = 731,971,584 B in bf16
    assert _count("qwen3-8b", 4900, 64, 2).cache_after_prefill.bytes("bf16") == 731_971_584
    h = get_llm("tiny-hybrid-llm")
    c = count_llm(h, 20, 5, decode_tokens=2)
    conv = 2 * h.linear_k_heads * h.linear_k_dim + h.linear_v_heads * h.linear_v_dim  # 2*2*16 + 4*16 = 128
    recurrent = h.linear_v_heads * h.linear_k_dim * h.linear_v_dim  # 4 * 16 * 16 = 1024
    cache = c.cache_after_prefill
    assert (cache.conv_elems, cache.recurrent_elems) == (2 * conv * h.conv_kernel, 2 * recurrent)
    assert c.cache_after_decode.state_elems == cache.state_elems  # fixed size
    assert c.cache_after_decode.kv_tokens == (27, 27)
    # bf16: keys, values and conv windows at 2 bytes, the recurrent state at 4 (kept in float32)
    assert cache.bytes("bf16") == (cache.kv_elems + 2 * conv * 4) * 2 + 2 * recurrent * 4
    assert cache.bytes("bf16", recurrent_dtype="bf16") == (cache.kv_elems + cache.state_elems) * 2


def test_recurrent_state_really_is_float32_in_a_bf16_run():
    from transformers import DynamicCache

    spec = get_llm("tiny-hybrid-llm")
    model = spec.build("cpu", dtype=torch.bfloat16)
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        model(inputs_embeds=torch.randn(1, 9, spec.hidden, dtype=torch.bfloat16), cache=cache, use_cache=True)
    linear = [layer for layer in cache.layers if getattr(layer, "recurrent_states", None)]
    assert linear and all(t.dtype == torch.float32 for layer in linear for t in layer.recurrent_states.values())
    assert all(t.dtype == torch.bfloat16 for layer in linear for t in layer.conv_states.values())


# --------------------------------------------------------------------------------------------
# Dropping
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TINY)
def test_drop_nothing_counts_exactly_like_no_drop(name):
    k = get_llm(name).attention_layers[0]
    base = count_llm(name, 20, 5, decode_tokens=2)
    for drop in (fastv(k, 0.0), Drop(()), pyramid_drop([k], 1.0)):
        c = count_llm(name, 20, 5, decode_tokens=2, drop=drop)
        assert c.prefill.total == base.prefill.total  # integer-exact, every convention
        assert [s.total for s in c.decode_steps] == [s.total for s in base.decode_steps]
        assert c.cache_after_decode == base.cache_after_decode


@pytest.mark.parametrize(
    "name,drop",
    [
        ("tiny-llm", fastv(0, 0.5)),
        ("tiny-llm", fastv(1, 0.9)),
        ("tiny-llm", pyramid_drop([0, 1], 0.5)),
        ("tiny-hybrid-llm", fastv(1, 0.75)),
        ("tiny-llm", fastv(0, 0.5, select="first")),
        ("qwen3-8b", fastv(2, 0.5)),
        pytest.param("qwen3-8b", pyramid_drop([7, 15, 23], 0.5), marks=pytest.mark.slow),
    ],
)
def test_dropping_changes_the_count_by_the_closed_form_difference(name, drop):
    visual = 4900 if name == "qwen3-8b" else 20
    base = _count(name, visual, 64, 2)
    dropped = count_llm(name, visual, 64, decode_tokens=2, drop=drop)
    cf0 = closed_form(base.spec, visual, 64, 2)
    cf1 = closed_form(base.spec, visual, 64, 2, drop=drop)
    assert base.prefill_total() - dropped.prefill_total() == cf0.prefill - cf1.prefill > 0
    assert [a.total.macs - b.total.macs for a, b in zip(base.decode_steps, dropped.decode_steps)] == [
        x - y for x, y in zip(cf0.decode, cf1.decode)
    ]
    assert dropped.tokens_per_layer == cf1.tokens_per_layer
    assert dropped.cache_after_prefill.kv_tokens == tuple(dropped.tokens_per_layer[i] for i in base.spec.attention_layers)


def test_ranking_cost_is_counted_only_when_ranking():
    # attention ranking at layer 0 of tiny-llm: the last query against 25 keys, 4 heads x 16 MACs
    ranked = count_llm("tiny-llm", 20, 5, drop=fastv(0, 0.5))
    fixed = count_llm("tiny-llm", 20, 5, drop=fastv(0, 0.5, select="first"))
    assert ranked.prefill_total() - fixed.prefill_total() == 4 * 25 * 16


def test_fastv_tokens_per_layer_and_kept_prefix_on_meta():
    c = count_llm("tiny-llm", 20, 5, drop=fastv(0, 0.5))
    assert c.tokens_per_layer == (25, 15, 15)  # layer 0 sees all, layers 1-2 keep 10 of 20 visual
    assert c.kept == (tuple(range(10)),)  # shapes only: the first ones
    p = count_llm("tiny-llm", 20, 5, drop=pyramid_drop([0, 1], 0.5))
    assert p.tokens_per_layer == (25, 15, 10) and p.kept == (tuple(range(10)), tuple(range(5)))


def test_real_run_keeps_the_most_attended_visual_tokens():
    """The ranking equals transformers' own eager attention weights: the last token's row at
    layer K, averaged over heads, top half of the 20 visual tokens."""
    spec = get_llm("tiny-llm")
    torch.manual_seed(0)
    model = spec.build("cpu")
    x = torch.randn(1, 25, spec.hidden)
    c = count_llm(spec, 20, 5, drop=fastv(1, 0.5), shape_only=False, model=model, inputs_embeds=x)
    eager = spec.build("cpu", attn="eager")
    eager.load_state_dict(model.state_dict())
    with torch.no_grad():
        weights = eager(inputs_embeds=x, output_attentions=True).attentions[1]
    expected = tuple(sorted(weights[0, :, -1, :20].mean(0).topk(10).indices.tolist()))
    assert c.kept == (expected,)
    assert expected != tuple(range(10))  # random weights: not trivially the prefix


def test_kept_count_rounding():
    assert kept_count(576, 0.5) == 288 and kept_count(576, 1 - 0.7) == 173  # 172.8 -> 173
    assert kept_count(5, 0.5) == 3  # half up
    assert kept_count(4900, 1.0) == 4900


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: fastv(2, 1.0), "0 <= R < 1"),
        (lambda: fastv(2, -0.1), "0 <= R < 1"),
        (lambda: DropStage(-1, 0.5), "integer >= 0"),
        (lambda: DropStage(2, 0.0), r"\(0, 1\]"),
        (lambda: Drop((DropStage(5, 0.5), DropStage(3, 0.25))), "strictly increase"),
        (lambda: Drop((DropStage(3, 0.25), DropStage(5, 0.5))), "cannot keep more"),
        (lambda: Drop((DropStage(3, 0.5),), select="random"), "attention, first"),
        (lambda: pyramid_drop([8, 16], 0.0), "0 < ratio <= 1"),
        (lambda: count_llm("tiny-llm", 20, 5, drop=fastv(2, 0.5)), "must be 0..1"),
        (lambda: count_llm("minicpm-v-4.6-llm", 20, 5, drop=fastv(2, 0.5)), "valid layers: 3, 7, 11"),
        (lambda: count_llm("tiny-llm", 20, 0, drop=fastv(0, 0.5)), "at least one prompt token"),
        (lambda: count_llm("tiny-llm", -1, 5), "visual_tokens = -1"),
        (lambda: count_llm("tiny-llm", 0, 0), "at least one token"),
        (lambda: count_llm("tiny-llm", 20, 5, decode_tokens=1.5), "decode_tokens"),
        (lambda: count_llm("tiny-llm", 20, 5, lm_head="first"), "valid: last"),
        (lambda: count_llm("tiny-llm", 20, 5, drop=0.5), "must be a Drop"),
        (lambda: count_llm("tiny-llm", 20, 5).prefill_total("macs", "half"), "valid: executed, dense"),
        (lambda: count_llm("tiny-llm", 20, 5).prefill_total("gflops"), "unknown convention"),
        (lambda: count_llm("nope", 20, 5), "valid LLMs"),
        (lambda: TextbookOptions(mlp_matrices=4), "2 \\(2ndm\\) or 3"),
        (lambda: TextbookOptions(scope="image"), "valid: sequence, visual"),
        (lambda: TextbookOptions(lm_head="first"), "valid: none, last, all"),
        (lambda: TextbookOptions(flops_per_mac=3), "1 \\(MACs\\) or 2"),
    ],
)
def test_bad_input_is_one_line_error(make, match):
    with pytest.raises(UhdProfileError, match=match) as exc:
        make()
    assert "\n" not in str(exc.value)


# --------------------------------------------------------------------------------------------
# The textbook formula
# --------------------------------------------------------------------------------------------


def test_textbook_options_against_hand_arithmetic():
    s = get_llm("tiny-llm")  # d 64, m 128, 4 heads x 16, 2 kv heads, V 512, 3 layers
    # printed form, n = 25: 4*25*64^2 + 2*25^2*64 + 2*25*64*128 = 409,600 + 80,000 + 409,600 = 899,200
    assert textbook(s, 20, 5).total == 3 * 899_200
    # visual only, n = 20: 327,680 + 51,200 + 327,680 = 706,560 per layer
    assert textbook(s, 20, 5, options=TextbookOptions(scope="visual")).total == 3 * 706_560
    # three MLP matrices: + 25*64*128 = 204,800 per layer
    assert textbook(s, 20, 5, options=TextbookOptions(mlp_matrices=3)).total == 3 * 1_104_000
    # GQA-aware projections: 2*25*64*64 + 2*25*64*32 = 307,200 instead of 409,600
    assert textbook(s, 20, 5, options=TextbookOptions(gqa=True)).total == 3 * 796_800
    # LM head: last position 64*512 = 32,768; all 25 positions 819,200
    assert textbook(s, 20, 5, options=TextbookOptions(lm_head="last")).total == 3 * 899_200 + 32_768
    assert textbook(s, 20, 5, options=TextbookOptions(lm_head="all")).total == 3 * 899_200 + 819_200
    assert textbook(s, 20, 5, options=TextbookOptions(flops_per_mac=2)).total == 2 * 3 * 899_200
    # FastV K=0, R=0.5: layer 0 at n = 25, layers 1-2 at n = 15:
    # 4*15*4096 + 2*225*64 + 2*15*64*128 = 245,760 + 28,800 + 245,760 = 520,320
    assert textbook(s, 20, 5, drop=fastv(0, 0.5)).per_layer == (899_200, 520_320, 520_320)


@pytest.mark.parametrize("name", ["tiny-llm", "qwen3-8b", "llama-2-7b"])
def test_textbook_with_the_real_geometry_is_the_dense_count(name):
    """With every option set to what the model does (whole sequence, three matrices, GQA widths,
    last-position LM head) the formula equals the counted figure with causal attention dense:
    the printed form's gap to the count is exactly those choices plus the causal triangle."""
    visual = 576
    c = count_llm(name, visual, 64)
    real = c.textbook(mlp_matrices=3, gqa=True, lm_head="last")
    assert real.total == c.prefill_total("macs", "dense")
    assert c.textbook().total != c.prefill_total("macs")
    assert json.loads(json.dumps(c.as_dict()))["textbook"]["unit"] == "MACs"


# --------------------------------------------------------------------------------------------
# Timing helpers (tiny, a few samples; the numbers are not checked, only the bookkeeping)
# --------------------------------------------------------------------------------------------

QUICK = TimingSettings(warmup_iters=1, warmup_time_s=0, min_samples=3, min_time_s=0, max_time_s=1, target_iqr=float("inf"))


def test_time_llm_reduced_depth_is_scaled():
    from uhd_profile.measure.llm import time_llm

    full = time_llm("tiny-llm", 20, 5, dtype="fp32", settings=QUICK, threads=1)
    assert not full.scaled and full.layers_timed == 3 and "all layers" in full.note
    part = time_llm("tiny-llm", 20, 5, dtype="fp32", layers=1, settings=QUICK, threads=1)
    assert part.scaled and part.scale == 3 and "measured on 1 of 3 layers and scaled x3" in part.note
    assert part.prefill_s == pytest.approx(part.prefill_stack.latency_median_s * 3 + part.lm_head.latency_median_s)
    assert part.decode_token_s == pytest.approx(part.decode_stack.latency_median_s * 3 + part.lm_head.latency_median_s)
    assert part.per_layer_prefill_s == part.prefill_stack.latency_median_s
    assert part.context == 25 and part.decode_stack.latency_n >= 3
    assert json.loads(json.dumps(part.as_dict()))["scaled"] is True


def test_time_llm_hybrid_and_errors():
    from uhd_profile.measure.llm import time_llm

    t = time_llm("tiny-hybrid-llm", 20, 5, dtype="fp32", layers=2, context=30, settings=QUICK, threads=1)
    assert t.mix_matches and t.context == 30
    with pytest.raises(UhdProfileError, match="all linear attention"):
        time_llm("tiny-hybrid-llm", 20, 5, layers=1, settings=QUICK)
    with pytest.raises(UhdProfileError, match="valid: fp32, bf16, fp16"):
        time_llm("tiny-llm", 20, 5, dtype="int8", settings=QUICK)
    with pytest.raises(UhdProfileError, match="1 to 3"):
        time_llm("tiny-llm", 20, 5, layers=5, settings=QUICK)
