"""The memory model: traces that follow what the code allocates, checked against what a forward
really takes on this CPU (and on CUDA where there is one).

The expected figures in the eager-attention tests are this file's own reading of ``transformers``'
eager attention (QK^T, scaling, softmax into float32, cast back), not the tracer's; the measured
ones come from running the forward in a fresh process (``measure.memory_check``)."""

from __future__ import annotations

import pytest
import torch

from uhd_profile.count.llm import count_llm
from uhd_profile.count.memory_model import (
    llm_stages,
    module_bytes,
    predict_memory,
    predict_pipeline_memory,
    sdpa_backend,
    trace_llm,
    trace_module,
)
from uhd_profile.errors import UhdProfileError
from uhd_profile.measure.memory import model_bytes
from uhd_profile.model.encoders import get_encoder
from uhd_profile.model.variants import VariantSpec, build_variant, example_input
from uhd_profile.units import torch_dtype

TOL = 0.15  # the bar for predicted vs measured peaks


def _trace(spec: VariantSpec, dtype: str = "fp32", attn: str = "sdpa", kind: str = "cpu", fast: bool = True, batch: int = 1):
    dt = torch_dtype(dtype)
    model = build_variant(spec, "meta", attn=attn).to(dt)
    return trace_module(model, example_input(spec, batch, "meta", dt), device_kind=kind, fast=fast)


# --------------------------------------------------------------------------------------------
# The trace follows the code
# --------------------------------------------------------------------------------------------

SLICED = VariantSpec.alias("v4", depth=0, encoder="siglip2-so400m-p14[:2]", resolution="1344x896", encoding="sliced")
FAST_CASES = [
    (VariantSpec(encoder="tiny", resolution=256, post_ratio=1), "eager", "fp32", "cpu"),
    (VariantSpec(encoder="tiny", resolution=256, post_ratio=1), "sdpa", "bf16", "cuda"),
    (VariantSpec(encoder="qwen2.5-vl-vit[:8]", resolution="448x336", post_ratio=1), "sdpa", "bf16", "cuda"),
    (VariantSpec(encoder="qwen2.5-vl-vit[:8]", resolution="224x224", post_ratio=1), "eager", "fp32", "cpu"),
    (VariantSpec(encoder="internvit-300m-448[:2]", resolution=448, post_ratio=1), "eager", "bf16", "cuda"),
    (VariantSpec(encoder="clip-vit-l14-336[:3]", resolution=336, post_ratio=1), "sdpa", "fp32", "cpu"),
    (
        VariantSpec.alias("v4", depth=0, encoder="siglip2-so400m-p14[:2]", resolution="1344x896", encoding="sliced"),
        "sdpa",
        "bf16",
        "cuda",
    ),
]


@pytest.mark.parametrize("spec,attn,dtype,kind", FAST_CASES, ids=lambda x: getattr(x, "id", str(x)))
def test_replayed_layers_and_remade_ops_change_nothing(spec, attn, dtype, kind):
    fast = _trace(spec, dtype, attn, kind, fast=True)
    plain = _trace(spec, dtype, attn, kind, fast=False)
    assert (fast.peak_bytes, fast.end_bytes, fast.score_bytes, fast.peak_module) == (
        plain.peak_bytes,
        plain.end_bytes,
        plain.score_bytes,
        plain.peak_module,
    )
    assert sum(a.nbytes for a in fast.live_at_peak) == fast.peak_bytes  # the peak's parts add up
    assert sum(a.nbytes for a in plain.live_at_peak) == plain.peak_bytes


def _scores(spec: VariantSpec, batch: int = 1) -> int:
    """Elements of one layer's attention score matrix: B x heads x n x n."""
    enc = get_encoder(spec.encoder)
    n = (spec.size.height // enc.patch) * (spec.size.width // enc.patch) + enc.prefix_tokens
    return batch * enc.heads * n * n


TINY = VariantSpec(encoder="tiny", resolution=512, post_ratio=1)


def test_eager_fp32_peak_holds_the_product_and_the_scaled_scores():
    t = _trace(TINY, "fp32", "eager")
    # matmul(q, k^T) * scaling: the product is alive while its scaled copy is made
    assert t.score_bytes == 2 * 4 * _scores(TINY)
    assert t.peak_op == "aten::mul" and t.peak_module.endswith("self_attn")
    assert t.peak_bytes > t.score_bytes  # plus the hidden states, q, k, v


def test_eager_bf16_adds_the_float32_softmax_copy():
    t = _trace(TINY, "bf16", "eager")
    # bf16 scaled scores + their float32 copy (softmax's dtype argument) + the float32 softmax
    assert t.score_bytes == (2 + 4 + 4) * _scores(TINY)


def test_eager_fp16_on_cuda_softmaxes_into_float32_in_one_kernel():
    t = _trace(TINY, "fp16", "eager", kind="cuda")
    # no cast copy before the softmax; the peak is the cast back: fp16 scores, fp32 softmax, fp16 copy
    assert t.score_bytes == (2 + 4 + 2) * _scores(TINY)
    assert all(a.nbytes % 512 == 0 for a in t.live_at_peak)  # the caching allocator's rounding


def test_sdpa_materialises_no_scores():
    t = _trace(TINY, "fp32", "sdpa")
    assert t.score_bytes == 0 and t.sdpa_backends == {"flash": get_encoder("tiny").layers}
    assert t.peak_bytes < _scores(TINY)  # far below one score matrix


def test_sdpa_backend_choice():
    q = torch.empty(1, 4, 64, 16, device="meta")
    assert sdpa_backend("cpu", q, q, q) == 1
    if torch.cuda.is_available():
        return
    half = q.to(torch.bfloat16)
    assert sdpa_backend("cuda", half, half, half) == 1  # flash
    assert sdpa_backend("cuda", q, q, q) == 2  # fp32: memory-efficient
    mask = torch.zeros(64, 64, device="meta", dtype=torch.bfloat16)
    assert sdpa_backend("cuda", half, half, half, attn_mask=mask) == 2
    kv = torch.empty(1, 2, 64, 16, device="meta")
    assert sdpa_backend("cuda", q, kv, kv, enable_gqa=True) == 0  # math


def test_weights_are_the_built_models():
    spec = VariantSpec.alias("v4", depth=1, encoder="tiny", resolution=128)
    meta = build_variant(spec, "meta").to(torch.bfloat16)
    real = build_variant(spec, "cpu").to(torch.bfloat16)
    assert module_bytes(meta) == model_bytes(real)
    assert predict_memory(spec, "bf16").weights_bytes == model_bytes(real)


@pytest.mark.parametrize("llm", ["tiny-llm", "tiny-hybrid-llm"])
def test_llm_cache_is_count_llms(llm):
    t = trace_llm(llm, 100, 8, 3, "fp32", "sdpa", "cpu")
    counted = count_llm(llm, 100, 8, decode_tokens=3)
    assert t.cache_after_prefill == counted.cache_after_prefill
    assert t.cache_after_decode == counted.cache_after_decode
    assert t.prefill.end_bytes >= t.cache_after_prefill.bytes("fp32", "fp32")  # the cache is in the prefill's trace
    prefill, decode = llm_stages(llm, 100, 8, 3, "fp32", "sdpa", "cpu")
    assert prefill.kv_cache_bytes == counted.cache_after_prefill.bytes("fp32")
    assert decode.kv_cache_bytes == counted.cache_after_decode.bytes("fp32")
    assert decode.held_bytes == t.cache_before_decode.bytes("fp32")


def test_decode_grows_the_cache_by_copying_each_layer():
    t = trace_llm("tiny-llm", 200, 0, 1, "fp32", "sdpa", "cpu")
    per_layer = t.cache_before_decode.bytes("fp32") // 3 // 2  # tiny-llm: 3 layers, keys and values
    # torch.cat makes the one-token-longer copy while the old tensor is still alive
    assert t.decode.peak_bytes >= per_layer
    growth = t.cache_after_decode.bytes("fp32") - t.cache_before_decode.bytes("fp32")
    assert t.decode.end_bytes == growth + 512 * 4  # and the step's logits: one position x 512 (vocabulary), fp32


def test_predictions_add_up():
    spec = VariantSpec.alias("v4", depth=1, encoder="tiny", resolution="256x192", encoding="sliced", scale_resolution=64)
    p = predict_memory(spec, "bf16", attn="eager")
    assert [s.stage for s in p.stages] == ["vision"] and len(p.views) == len(spec.groups)
    vision = p.stages[0]
    assert p.peak_bytes == vision.weights_bytes + vision.held_bytes + vision.activation_bytes
    parts = p.parts()
    assert parts["weights"] + parts["held"] + parts["activations"] == p.peak_bytes
    assert 0 < parts["attention_scores"] <= parts["activations"]
    assert max(v.activation_bytes for v in p.views) <= vision.activation_bytes
    pipe = predict_pipeline_memory(spec, "tiny-llm", prompt_tokens=8, decode_tokens=2, dtype="bf16")
    assert [s.stage for s in pipe.stages] == ["vision", "llm_prefill", "llm_decode"]
    assert pipe.weights_bytes == vision.weights_bytes + pipe.stage("llm_prefill").weights_bytes
    peak = pipe.peak_stage
    assert pipe.peak_bytes == pipe.weights_bytes + peak.held_bytes + peak.activation_bytes
    assert pipe.as_dict()["peak_bytes"] == pipe.peak_bytes


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"attn": "flash"}, "attention path 'flash'"),
        ({"device_kind": "tpu"}, "device kind 'tpu'"),
        ({"dtype": "int8"}, "dtype 'int8'"),
        ({"batch": 0}, "batch 0"),
    ],
)
def test_bad_settings_are_one_line_errors(kw, match):
    with pytest.raises(UhdProfileError, match=match) as exc:
        predict_memory(VariantSpec(encoder="tiny"), **kw)
    assert "\n" not in str(exc.value)


def test_reduced_depth_presets():
    assert get_encoder("tiny[:2]").layers == 2 and get_encoder("tiny[:4]") is get_encoder("tiny")
    assert VariantSpec(encoder="clip-vit-l14-336[:2]").id.startswith("clip-vit-l14-336[:2]@")
    for bad, match in (("tiny[:0]", "reduced depth 0"), ("tiny[:9]", "reduced depth 9"), ("minicpm-v-4.6[:2]", "run whole")):
        with pytest.raises(UhdProfileError, match=match):
            get_encoder(bad)


def test_bench_records_the_prediction_next_to_the_measurement():
    from uhd_profile.measure.bench import BenchSettings, bench
    from uhd_profile.measure.timing import TimingSettings

    fast = TimingSettings(warmup_iters=1, warmup_time_s=0.0, min_samples=3, min_time_s=0.05, max_time_s=0.5)
    r = bench(VariantSpec(encoder="tiny", resolution=128, post_ratio=1), BenchSettings(device="cpu", timing=fast))
    m = r.metrics
    assert m["memory_model_device"] == "cpu"
    assert m["predicted_peak_mem_bytes"] == m["weights_bytes"] + 4 * 3 * 128 * 128 + m["predicted_activation_mem_bytes"]
    assert m["predicted_attention_score_bytes"] == 0


# --------------------------------------------------------------------------------------------
# Against measured peaks
# --------------------------------------------------------------------------------------------


def _measured(cases) -> list[int]:
    """Activation growth of each (spec, dtype, attn), measured one after another in one fresh process."""
    from uhd_profile.measure.memory_check import measure_in_fresh_process

    jobs = [{"kind": "vision", "spec": spec.to_dict(), "dtype": dtype, "attn": attn, "batch": 1} for spec, dtype, attn in cases]
    return [m["activation_mem_bytes"] for m in measure_in_fresh_process({"kind": "many", "jobs": jobs, "threads": 2})]


def _check_against_measured(cases) -> None:
    for (spec, dtype, attn), got in zip(cases, _measured(cases)):
        predicted = predict_memory(spec, dtype, attn=attn, device_kind="cpu").activation_bytes
        assert abs(predicted / got - 1) <= TOL, (spec.id, attn, dtype, predicted, got)


def test_predicted_activation_peaks_are_within_15_percent_of_the_measured_ones():
    """Eager and SDPA, two towers, two sizes, measured on this CPU (see measure.memory_check)."""
    _check_against_measured(
        [
            (VariantSpec(encoder="tiny", resolution=320, post_ratio=1), "fp32", "eager"),
            (VariantSpec(encoder="tiny", resolution=448, post_ratio=1), "fp32", "sdpa"),
            (VariantSpec(encoder="clip-vit-l14-336[:1]", resolution=336, post_ratio=1), "fp32", "eager"),
            (VariantSpec(encoder="clip-vit-l14-336[:1]", resolution=448, post_ratio=1), "fp32", "sdpa"),
        ]
    )


@pytest.mark.slow
def test_predicted_activation_peaks_are_within_15_percent_more_towers():
    tower = VariantSpec(encoder="siglip2-so400m-p14[:2]", resolution=448, post_ratio=1)
    _check_against_measured(
        [
            (tower, "bf16", "eager"),
            (tower, "bf16", "sdpa"),
            (VariantSpec(encoder="qwen2.5-vl-vit[:2]", resolution=448, post_ratio=1), "fp32", "sdpa"),
            (VariantSpec(encoder="internvit-300m-448[:2]", resolution=448, post_ratio=1), "fp32", "eager"),
            (SLICED, "fp32", "sdpa"),
        ]
    )


@pytest.mark.slow
def test_llm_prefill_peak_and_cache_against_measured():
    from uhd_profile.measure.memory_check import measure_in_fresh_process
    from uhd_profile.model.llms import get_llm

    job = {
        "kind": "llm",
        "llm": "llama-2-7b",
        "layers": 1,
        "visual_tokens": 600,
        "prompt_tokens": 64,
        "dtype": "fp32",
        "attn": "sdpa",
    }
    m = measure_in_fresh_process(job)
    t = trace_llm(get_llm("llama-2-7b").reduced(1), 600, 64, 0, "fp32", "sdpa", "cpu")
    assert m["kv_cache_bytes"] == t.cache_after_prefill.bytes("fp32")
    assert abs(t.prefill.peak_bytes / m["activation_mem_bytes"] - 1) <= TOL


@pytest.mark.gpu
@pytest.mark.parametrize(
    "spec,dtype,attn",
    [
        (VariantSpec(encoder="tiny", resolution=512, post_ratio=1), "fp16", "eager"),
        (VariantSpec(encoder="siglip2-so400m-p14[:2]", resolution=980, post_ratio=1), "bf16", "eager"),
        (VariantSpec(encoder="siglip2-so400m-p14[:2]", resolution=980, post_ratio=1), "bf16", "sdpa"),
        (VariantSpec(encoder="qwen2.5-vl-vit[:8]", resolution=896, post_ratio=1), "bf16", "sdpa"),
    ],
    ids=lambda x: getattr(x, "id", str(x)),
)
def test_cuda_allocator_peak_matches_the_prediction(spec, dtype, attn):
    from uhd_profile.measure.memory import measure_memory

    dt = torch_dtype(dtype)
    model = build_variant(spec, "cuda", attn=attn).to(dt)
    x = example_input(spec, 1, "cuda", dt)

    def forward():
        with torch.inference_mode():
            return model(x)

    forward()
    measured = measure_memory(forward, model, "cuda").activation_mem_bytes
    predicted = predict_memory(spec, dtype, attn=attn, device_kind="cuda").activation_bytes
    assert abs(predicted / measured - 1) <= TOL, (predicted, measured)
