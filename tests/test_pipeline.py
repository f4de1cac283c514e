"""End to end: a pipeline's stages counted chained equal the parts counted alone, one chained forward
equals the stage sum, closed forms pin the full-size stages, R = 0 equals no drop, the connector's
width comes from the LLM, merges that do not divide the grid are refused as the released code does,
compression positions, points and recipes with an LLM, stage timing."""

from __future__ import annotations

import functools

import pytest
import torch

from uhd_profile.count.analytic import analytic_cost, connector_cost
from uhd_profile.count.conventions import CONVENTIONS
from uhd_profile.count.flops import count_flops, count_module
from uhd_profile.count.llm import count_llm
from uhd_profile.count.llm_formulas import closed_form
from uhd_profile.count.pipeline import POSITIONS, count_pipeline, position_of, position_options
from uhd_profile.errors import UhdProfileError
from uhd_profile.measure.pipeline import count_metrics, cpu_llm_layers, point_metrics
from uhd_profile.measure.schema import METRICS, Point
from uhd_profile.model.llms import get_llm
from uhd_profile.model.pipeline import (
    PipelineSpec,
    build_pipeline,
    design_variant,
    drop_text,
    parse_drop,
    pipeline_inputs,
)
from uhd_profile.model.variants import VariantSpec
from uhd_profile.run.recipe import load_recipe
from uhd_profile.units import Size

CONVS = list(CONVENTIONS)


def _tiny(alias: str = "baseline", **kw) -> VariantSpec:
    kw.setdefault("resolution", 128)
    return VariantSpec.alias(alias, encoder="tiny", depth=1 if alias == "v4" else None, **kw)


TINY_PIPELINES = {
    "baseline post16": PipelineSpec(_tiny(), llm="tiny-llm", prompt_tokens=8, decode_tokens=2),
    "v4 post4": PipelineSpec(_tiny("v4"), llm="tiny-llm", prompt_tokens=8, decode_tokens=2),
    "projector post1": PipelineSpec(_tiny(post_ratio=1), llm="tiny-llm", prompt_tokens=8, decode_tokens=1),
    "sliced image": PipelineSpec(
        _tiny("v4", resolution="400x272", encoding="sliced"), llm="tiny-hybrid-llm", prompt_tokens=5, decode_tokens=1
    ),
    "packed global": PipelineSpec(
        _tiny(resolution="512x256", encoding="global", packing="packed"), llm="tiny-llm", prompt_tokens=0, decode_tokens=0
    ),
}


@functools.cache
def _count(p: PipelineSpec):
    return count_pipeline(p, memo=False)


# --------------------------------------------------------------------------------------------
# Stages == the parts counted alone


@pytest.mark.parametrize("name", list(TINY_PIPELINES))
def test_stage_counts_equal_the_parts_counted_alone(name):
    p = TINY_PIPELINES[name]
    pc = _count(p)
    vision = count_flops(p.vision_spec)
    llm = count_llm(p.llm, p.visual_tokens, p.prompt_tokens, p.decode_tokens)
    for c in CONVS:
        assert pc.stage("vision", c) == vision.get(c)
        assert pc.stage("prefill", c) == llm.prefill_total(c) and pc.stage("decode", c) == llm.decode_total(c)
        assert pc.llm.prefill_total(c, "dense") == llm.prefill_total(c, "dense")
        assert pc.total(c) == sum(pc.stages(c).values()) and pc.ttft(c) == pc.total(c) - pc.stage("decode", c)
        if p.ratio > 1:  # the variant itself runs this connector: ViT + connector == the whole variant
            assert pc.stage("vision", c) + pc.stage("connector", c) == count_flops(p.variant).get(c)
    assert [s.total for s in pc.llm.decode_steps] == [s.total for s in llm.decode_steps]
    assert pc.uncounted_ops == {}
    assert pc.stage("connector", "macs") > 0 and pc.stage("connector", "paper") == 0  # outside the paper's scope
    assert pc.llm.visual_tokens == p.visual_tokens == p.tokens["visual"]


def test_projector_at_ratio_1_merges_nothing_and_is_a_two_layer_mlp():
    p = TINY_PIPELINES["projector post1"]
    pc = _count(p)
    d, h = p.variant.enc.hidden, get_llm("tiny-llm").hidden
    n = 16 * 16  # 128 px / patch 8: every patch token reaches the LLM
    assert p.visual_tokens == p.tokens["connector"] == n
    assert pc.stage("connector", "macs") == n * (d * h + h * h)
    # a variant at post-ratio 1 is the ViT alone: the projector is a pipeline's, variant counts are unchanged
    assert count_flops(p.variant).get("macs") == pc.stage("vision", "macs")


@pytest.mark.parametrize("name", ["baseline post16", "sliced image"])
def test_one_chained_forward_equals_the_stage_sum(name):
    """The whole model in one forward (vision -> connector -> LLM prefill) costs what the stages do."""
    p = TINY_PIPELINES[name]
    model = build_pipeline(p, "meta")
    pixels, prompt = pipeline_inputs(p, "meta")
    fc = count_module(model, pixels, prompt, use_cache=True, logits_to_keep=1)
    pc = _count(p)
    for c in CONVS:
        assert fc.get(c) == pc.ttft(c)
    assert fc.causal_skipped == pc.llm.prefill.causal_skipped


def test_meta_count_equals_a_real_cpu_forward():
    p = TINY_PIPELINES["v4 post4"]
    torch.manual_seed(0)
    model = build_pipeline(p, "cpu")
    pixels, prompt = pipeline_inputs(p, "cpu")
    out = model(pixels, prompt, use_cache=False, logits_to_keep=1)
    assert out.logits.shape == (1, 1, get_llm("tiny-llm").vocab) and torch.isfinite(out.logits).all()
    fc = count_module(model, pixels, prompt, use_cache=True, logits_to_keep=1, shape_only=False)
    assert {c: fc.get(c) for c in CONVS} == {c: _count(p).ttft(c) for c in CONVS}


@pytest.mark.slow  # tests/test_e2e_cli.py pins the same 448 px stages (no decode) in the default run
def test_full_size_stages_equal_the_closed_forms():
    """so400m/14 at 448 px, v4, into Qwen3-8B: every stage against a formula from the geometry alone."""
    p = PipelineSpec(VariantSpec.alias("v4", resolution=448), prompt_tokens=64, decode_tokens=1)
    pc = count_pipeline(p)
    vision = analytic_cost(p.vision_spec)
    conn = connector_cost(1, 16 * 16, 1152, 4096, 4)
    cf = closed_form(get_llm("qwen3-8b"), 64, 64, 1)
    for c in CONVS:
        assert pc.stage("vision", c) == vision.get(c)
        assert pc.stage("connector", c) == conn.get(c)
    assert pc.stage("prefill", "macs") == cf.prefill and pc.llm.prefill_total("macs", "dense") == cf.prefill_dense
    assert pc.stage("decode", "macs") == cf.decode[0]
    assert p.tokens == {"vision": 1024, "connector": 256, "prefill": 128, "decode": 1, "visual": 64}
    # K and V of 36 layers x 8 heads x 128, for 128 prefill tokens and the one decoded, bf16
    assert pc.kv_cache_bytes("bf16") == 36 * 2 * 8 * 128 * 129 * 2
    assert pc.kv_cache_bytes("fp32", "prefill") == 36 * 2 * 8 * 128 * 128 * 4


# --------------------------------------------------------------------------------------------
# Drops


def test_a_drop_of_nothing_counts_like_no_drop():
    base = TINY_PIPELINES["baseline post16"]
    zero = base.with_(drop="fastv:1:0")
    assert zero.id != base.id and drop_text(zero.drop) == "fastv:1:0.0"
    a, b = _count(base), count_pipeline(zero, memo=False)
    for c in CONVS:
        assert a.stages(c) == b.stages(c) and a.llm.prefill_total(c, "dense") == b.llm.prefill_total(c, "dense")
    assert a.kv_cache_bytes() == b.kv_cache_bytes()


@pytest.mark.slow
def test_a_drop_of_nothing_counts_like_no_drop_full_size():
    p = PipelineSpec(VariantSpec.alias("v4", resolution=448))
    a, b = count_pipeline(p, memo=False), count_pipeline(p.with_(drop="fastv:2:0"), memo=False)
    assert all(a.stages(c) == b.stages(c) for c in CONVS)


def test_a_drop_changes_the_llm_stages_only():
    base = TINY_PIPELINES["baseline post16"]
    p = base.with_(drop="fastv:1:0.5")
    a, b = _count(base), count_pipeline(p, memo=False)
    for c in CONVS:
        assert a.stage("vision", c) == b.stage("vision", c) and a.stage("connector", c) == b.stage("connector", c)
        assert b.stage("prefill", c) < a.stage("prefill", c) and b.stage("decode", c) < a.stage("decode", c)
    cf = closed_form(get_llm("tiny-llm"), p.visual_tokens, 8, 2, drop=p.drop)
    assert b.stage("prefill", "macs") == cf.prefill and b.kv_cache_bytes() < a.kv_cache_bytes()


@pytest.mark.parametrize(
    "text,canonical",
    [
        ("fastv:2:0.5", "fastv:2:0.5"),
        (" fastv:2:0.75:first ", "fastv:2:0.75:first"),
        ("pyramid-drop:7,15,23:0.5", "pyramid-drop:7,15,23:0.5"),
        ("drop:3@0.5,9@0.2", "drop:3@0.5,9@0.2"),
        ("drop:2@0.5", "fastv:2:0.5"),  # one drop, one text
        ("none", "none"),
    ],
)
def test_drop_text_round_trips(text, canonical):
    drop = parse_drop(text)
    assert drop_text(drop) == canonical
    assert drop_text(parse_drop(canonical)) == canonical
    if drop is not None:
        spec = get_llm("qwen3-8b")
        assert parse_drop(canonical).schedule(spec, 1000) == drop.schedule(spec, 1000)


@pytest.mark.parametrize(
    "text", ["fastv:2", "fastv:x:0.5", "fastv:2:1.5", "pyramid-drop:7:nan", "drop:3-0.5", "random:1:2", "fastv:-1:0.5"]
)
def test_bad_drop_text_is_one_line(text):
    with pytest.raises(UhdProfileError) as e:
        parse_drop(text)
    assert "\n" not in str(e.value)


def test_drop_checked_against_the_llm():
    with pytest.raises(UhdProfileError, match=r"after layer 2 on tiny-llm: must be 0..1"):
        PipelineSpec(_tiny(), llm="tiny-llm", drop="fastv:2:0.5")
    with pytest.raises(UhdProfileError, match="at least one prompt token"):
        PipelineSpec(_tiny(), llm="tiny-llm", prompt_tokens=0, drop="fastv:1:0.5")


# --------------------------------------------------------------------------------------------
# The spec


def test_the_connector_width_is_the_llms():
    p = PipelineSpec(VariantSpec.alias("baseline", resolution=448), llm="qwen2.5-7b")
    assert p.variant.llm_hidden == 3584 and p.id.startswith(p.variant.id) and "/llm3584/" in p.id
    assert _count(PipelineSpec(_tiny(), llm="tiny-llm")).llm.spec.hidden == 64
    with pytest.raises(UhdProfileError, match="leave llm_hidden at its default"):
        PipelineSpec(VariantSpec.alias("baseline", resolution=448, llm_hidden=2048), llm="qwen3-8b")


def test_a_merge_that_does_not_divide_the_grid_is_refused_like_the_released_code():
    from transformers import MiniCPMV4_6Config
    from transformers.models.minicpmv4_6.image_processing_minicpmv4_6 import ensure_divide
    from transformers.models.minicpmv4_6.modeling_minicpmv4_6 import MiniCPMV4_6Merger

    # the released merger cannot merge a 35x35 grid (980 px after its in-ViT 2x2 merge) ...
    cfg = MiniCPMV4_6Config()
    cfg.vision_config.hidden_size, cfg.text_config.hidden_size = 8, 16
    with pytest.raises(RuntimeError):
        MiniCPMV4_6Merger(cfg)(torch.zeros(1, 35 * 35, 8), torch.tensor([[35, 35]]))
    # ... and its processor rounds a 980 px side to 1008 (multiples of patch 14 x 4)
    assert ensure_divide(980, 56) == 1008
    for alias in ("baseline", "v4"):
        with pytest.raises(UhdProfileError) as e:
            design_variant(VariantSpec.alias(alias, resolution=980, post_ratio=1))
        msg = str(e.value)
        assert "\n" not in msg and "70x70" in msg and "1008x1008" in msg and "released MiniCPM-V 4.6" in msg
    assert design_variant(VariantSpec.alias("v4", resolution=1008, post_ratio=1)).ratio == 4
    assert design_variant(VariantSpec.alias("v4", resolution=980, post_ratio=1), 1).ratio == 1  # no merge: fits


def test_tokens_and_id():
    p = TINY_PIPELINES["sliced image"]
    v = p.variant
    assert p.tokens["vision"] == v.tokens_in and p.tokens["prefill"] == p.visual_tokens + 5
    assert p.visual_tokens == v.tokens_llm  # the tiny tower has no class token
    assert p.id == f"{v.id}/tiny-hybrid-llm/p5/d1"
    assert PipelineSpec.from_parts(v, p.llm_dict()).id == p.id
    with pytest.raises(UhdProfileError, match="unknown fields"):
        PipelineSpec.from_parts(v, {"llm": "tiny-llm", "prompt": 3})
    with pytest.raises(UhdProfileError, match="unknown LLM"):
        PipelineSpec(v, llm="gpt-5")


# --------------------------------------------------------------------------------------------
# Compression at every position


def test_position_options_cover_every_position_on_one_axis():
    opts = position_options("512x384", encoder="tiny", llm="tiny-llm", prompt_tokens=8)
    assert [o.position for o in opts][0] == "reference" and {o.position for o in opts} == set(POSITIONS)
    ref = opts[0].pipeline
    for o in opts:
        assert o.pipeline is not None, o.error
        assert position_of(o.pipeline, ref) == o.position, o.option
    # each position changes what it says it does (the first option of each, and both after the ViT)
    chosen = [o for i, o in enumerate(opts) if o.position == "after the ViT" or o.position not in {q.position for q in opts[:i]}]
    counts = {o.option: count_pipeline(o.pipeline) for o in chosen}
    r = counts[opts[0].option]
    for o in chosen[1:]:
        c = counts[o.option]
        if o.position == "inside the LLM":
            assert c.stage("vision", "macs") == r.stage("vision", "macs") and c.stage("prefill", "macs") < r.stage(
                "prefill", "macs"
            )
        if o.position == "after the ViT":
            assert c.stage("vision", "macs") == r.stage("vision", "macs") and c.tokens["visual"] > r.tokens["visual"]
    assert position_of(ref.with_(prompt_tokens=9), ref) is None


# --------------------------------------------------------------------------------------------
# Points, metrics, recipes


def test_a_point_with_an_llm_keeps_its_variants_metrics_and_adds_its_stages():
    for name in ("baseline post16", "projector post1"):
        p = TINY_PIPELINES[name]
        point = Point(p.variant, pipeline=p, dtype="bf16")
        m = point_metrics(point)
        assert set(m) <= set(METRICS)
        alone = count_flops(p.variant)
        assert m["macs"] == alone.get("macs") and m["paper_flops"] == alone.get("paper") and m["params"] == alone.params
        assert m["tokens_llm"] == p.variant.tokens_llm and m["prefill_tokens"] == p.tokens["prefill"]
        pc = _count(p)
        assert m["kv_cache_bytes"] == pc.kv_cache_bytes("bf16") and m["llm_weights_bytes"] == pc.params["llm"] * 2
        assert m["vision_macs"] + m["connector_macs"] + m["prefill_macs"] + m["decode_macs"] == pc.total("macs")
        assert m["decode_macs_per_token"] == m["decode_macs"] / p.decode_tokens
    # the identity of a point without an LLM has no pipeline field: its id is what it was
    plain = Point(TINY_PIPELINES["v4 post4"].variant)
    assert "pipeline" not in plain._identity() and plain.variant_id == plain.spec.id
    q = Point(TINY_PIPELINES["v4 post4"].variant, pipeline=TINY_PIPELINES["v4 post4"])
    assert q.point_id != plain.point_id and Point.from_dict(q.to_dict()).point_id == q.point_id
    assert q.to_dict()["variant_id"] == TINY_PIPELINES["v4 post4"].id
    with pytest.raises(ValueError, match="not the pipeline's variant"):
        Point(_tiny(resolution=64), pipeline=TINY_PIPELINES["v4 post4"])


RECIPE = """
[defaults]
encoders = ["tiny"]
resolutions = [128]
{extra}
[[grid]]
compressors = ["none", "window-attn-reused-mlp"]
depths = [1]
{grid}
"""


def _recipe(tmp_path, extra="", grid=""):
    path = tmp_path / "r.toml"
    path.write_text(RECIPE.format(extra=extra, grid=grid))
    return load_recipe(str(path), device="cpu")


def test_recipe_keys_for_the_llm(tmp_path):
    plain = _recipe(tmp_path)
    same = _recipe(tmp_path, extra='llms = ["none"]\nprompt_tokens = [3, 4]')
    assert [p.point_id for p in plain.points] == [p.point_id for p in same.points] and plain.hash == same.hash
    r = _recipe(tmp_path, grid='llms = ["none", "tiny-llm"]\nprompt_tokens = [8, 16]\nllm_drops = ["none", "fastv:1:0.5"]')
    piped = [p for p in r.points if p.pipeline is not None]
    assert len(r.points) == 2 + 2 * 2 * 2 and len(piped) == 8
    assert {p.pipeline.prompt_tokens for p in piped} == {8, 16} and {p.spec.llm_hidden for p in piped} == {64}
    assert {drop_text(p.pipeline.drop) for p in piped} == {"none", "fastv:1:0.5"}


@pytest.mark.parametrize(
    "grid,match",
    [
        ('llms = ["gpt-5"]', r"llms: unknown LLM 'gpt-5'; valid: none, qwen3-8b"),
        ('llms = ["tiny-llm"]\nprompt_tokens = [-1]', r"prompt_tokens: -1 is not valid"),
        ('llms = ["tiny-llm"]\nllm_drops = ["fastv:9"]', r"llm_drops: drop 'fastv:9' is not valid"),
        ('llms = ["tiny-llm"]\nllm_drops = ["fastv:5:0.5"]', r"after layer 5 on tiny-llm"),
        ('llms = ["tiny-llm"]\nllm_plans = ["fastv:1:0.5"]', r"llm_plans: was renamed; write llm_drops = \[\.\.\.\] instead$"),
        ('llms = ["tiny-llm"]\nbatches = [2]', r"batch 2; points with an LLM run one image"),
        ('llms = ["tiny-llm"]\nllm_drops = ["fastv:1:0.5"]\nmeasure = ["latency"]', r"timing an in-LLM drop"),
        ('llms = ["tiny-llm"]\nmeasure = ["energy"]', r"energy is not measured for points with an LLM"),
    ],
)
def test_recipe_mistakes_with_an_llm_are_one_line(tmp_path, grid, match):
    with pytest.raises(UhdProfileError, match=match) as e:
        _recipe(tmp_path, grid=grid)
    assert "\n" not in str(e.value) and "r.toml" in str(e.value)


def test_shipped_recipes_hold_the_end_to_end_points():
    paper = [p for p in load_recipe("paper", device="cpu").points if p.pipeline is not None]
    assert len(paper) == 10 and not any(p.measured for p in paper)
    assert {(p.spec.size, p.spec.encoding) for p in paper} == {
        (Size(448, 448), "view"),
        (Size(1344, 896), "sliced"),
        (Size(1344, 896), "global"),
        (Size(3840, 2160), "sliced"),
        (Size(3840, 2160), "global"),
    }
    assert {p.pipeline.llm for p in paper} == {"qwen3-8b"} and {p.spec.ratio * p.spec.in_vit_ratio for p in paper} == {16}
    smoke = [p for p in load_recipe("smoke", device="cpu").points if p.pipeline is not None]
    assert len(smoke) == 5 and sum(p.measured for p in smoke) == 1


# --------------------------------------------------------------------------------------------
# Timing


def test_cpu_timing_layers():
    assert cpu_llm_layers(get_llm("qwen3-8b")) == 2
    assert cpu_llm_layers(get_llm("minicpm-v-4.6-llm")) == 4  # one whole 3 linear + 1 full period
    assert cpu_llm_layers(get_llm("tiny-hybrid-llm")) == 2


def test_a_measured_pipeline_point_times_every_stage():
    p = TINY_PIPELINES["baseline post16"]
    timing = dict(warmup_iters=0, warmup_time_s=0.0, min_samples=2, min_time_s=0.0, max_time_s=0.5, target_iqr=0.9)
    point = Point(p.variant, measure=("flops", "latency", "memory"), device="cpu", timing=timing, pipeline=p)
    m = point_metrics(point)
    assert set(m) <= set(METRICS)
    for k in ("ttft_vision_s", "ttft_connector_s", "ttft_prefill_s", "decode_token_s"):
        assert m[k] > 0, k
    assert m["ttft_s"] == pytest.approx(m["ttft_vision_s"] + m["ttft_connector_s"] + m["ttft_prefill_s"])
    assert m["llm_layers_timed"] == 2 < get_llm("tiny-llm").layers  # measured on 2 of 3 layers and scaled
    assert m["macs"] == count_metrics(_count(p), "fp32")["macs"] and "latency_median_s" not in m
    assert "vision_activation_mem_bytes" in m and "prefill_activation_mem_bytes" in m
    with pytest.raises(UhdProfileError, match="timing an in-LLM drop"):
        point_metrics(
            Point(p.variant, measure=("flops", "latency"), device="cpu", timing=timing, pipeline=p.with_(drop="fastv:1:0.5"))
        )
