"""The planner (`uhd-profile plan`): its answers re-counted by the engine, its searches, its errors.

Every planned point is checked independently of the planner: views and tokens by the policy,
FLOPs by ``cost_item`` (the engine, its per-geometry cache cleared first), memory by
``views_memory`` (the memory model, its caches cleared first). A planned point must be within the
budget and the next step up must not be. The exact "Done when" commands of issue 13 are here too;
the Qwen2.5-VL memory one takes about a minute on the 2-core CPU and is marked slow.
"""

from __future__ import annotations

import json
import random

import pytest

from uhd_profile.analyse.cost import MemorySettings, cost_item, count_call, views_memory
from uhd_profile.analyse.planner import (
    CEILING_PX,
    FAMILY_LLMS,
    KNOBS,
    RATIOS,
    Budget,
    Planner,
    find_limit,
    parse_budget,
    ratio_size,
    search,
)
from uhd_profile.count.conventions import get_convention
from uhd_profile.count.flops import count_flops
from uhd_profile.count.memory_model import trace_llm, vision_stage
from uhd_profile.errors import UhdProfileError
from uhd_profile.model.compressors import COMPRESSORS
from uhd_profile.model.policies import DEFAULT_POLICY, POLICIES, get_policy
from uhd_profile.model.variants import VariantSpec
from uhd_profile.units import Size

SETTINGS_KEYS = {"policy", "params", "encoder", "variant", "convention", "memory"}
PLAN_KEYS = SETTINGS_KEYS | {"budget", "ceiling_px", "ratios", "setting", "fits_anything", "probes", "lookups", "seconds"}
RATIO_KEYS = {"ratio", "status", "largest", "largest_pixels", "value", "next", "next_value"}
SETTING_KEYS = {
    "name",
    "description",
    "default",
    "low",
    "high",
    "step",
    "status",
    "largest",
    "binding_ratio",
    "values",
    "next",
    "next_value",
}
DESIGN_KEYS = {"design", "status", "depth", "value", "next_depth", "next_value"}
IMAGE_KEYS = SETTINGS_KEYS | {"image", "views", "vit_tokens", "llm_tokens", "gflops", "memory_bytes", "fits", "setting"}


def _json(cli, *args) -> dict:
    code, out, err = cli(*args)
    assert code == 0, err
    return json.loads(out)


def _error(cli, *args) -> str:
    code, out, err = cli(*args)
    assert code == 2, (code, out, err)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def _clear_engine_caches() -> None:
    """Recounts below must not read what the planner's run left in the engine's caches."""
    count_call.cache_clear()
    vision_stage.cache_clear()
    trace_llm.cache_clear()


def _recount(policy: str, size: Size, params: dict, kind: str, plan: str, memory: MemorySettings | None = None) -> float:
    """The budget's metric of one image, counted afresh by the policy, the engine or the memory model."""
    if kind == "llm_tokens":
        return get_policy(policy).views(size.width, size.height, **params).llm_tokens
    cost = cost_item(size.width, size.height, policy, params, (plan,))
    if kind == "gflops":
        return cost.counts[plan][get_convention("macs").column] / 1e9
    assert memory is not None
    return views_memory(cost.views, cost.encoder, plan, memory).peak_bytes


def _check_setting(d: dict, kind: str, limit: float, memory: MemorySettings | None = None) -> None:
    """The planned setting fits at every ratio and the next step up does not at the binding ratio."""
    s, policy, plan = d["setting"], d["policy"], d["variant"]
    assert s["status"] == "limit", s
    _clear_engine_caches()
    ratios = {r["ratio"]: tuple(int(x) for x in r["ratio"].split(":")) for r in d["ratios"]}
    for name, ratio in ratios.items():
        got = _recount(policy, ratio_size(ratio, CEILING_PX), {s["name"]: s["largest"]}, kind, plan, memory)
        assert got == pytest.approx(s["values"][name], rel=1e-12) and got <= limit, (name, got)
    binding = ratio_size(ratios[s["binding_ratio"]], CEILING_PX)
    over = _recount(policy, binding, {s["name"]: s["next"]}, kind, plan, memory)
    assert s["next"] == s["largest"] + s["step"]
    assert over == pytest.approx(s["next_value"], rel=1e-12) and over > limit


# --------------------------------------------------------------------------------------------
# The searches, against brute force
# --------------------------------------------------------------------------------------------


def _brute(values: list[float], limit: float) -> int:
    """Index of the last value within limit before the first that is not."""
    i = 0
    while i + 1 < len(values) and values[i + 1] <= limit:
        i += 1
    return i


@pytest.mark.parametrize("seed", range(40))
def test_search_and_find_limit_agree_with_brute_force(seed):
    rng = random.Random(seed)
    n = rng.randint(2, 5000)
    # monotone costs with plateaus (as policies make them) and curvature of either sign
    power = rng.choice([0.5, 1.0, 1.5, 2.0])
    plateau = rng.randint(1, 50)
    values = [float((i // plateau) ** power) + 3.0 for i in range(n)]
    limit = rng.uniform(values[0], values[-1] * 1.1)
    calls: list[int] = []

    def value(i: int) -> float:
        assert 0 <= i < n, i
        calls.append(i)
        return values[i]

    want = _brute(values, limit)
    status, lo, hi = find_limit(value, limit, 0, n - 1, rng.randint(0, n - 1))
    if want == n - 1:
        assert (status, lo, hi) == ("ceiling", n - 1, None)
    else:
        assert (status, lo, hi) == ("limit", want, want + 1)
        assert values[lo] <= limit < values[hi]
        assert search(value, limit, 0, n - 1, values[0], values[n - 1]) == (want, want + 1)
    assert len(set(calls)) <= 4 * n.bit_length() + 8  # never a scan


def test_find_limit_says_none_when_the_bottom_does_not_fit():
    assert find_limit(lambda i: 10.0 + i, 5.0, 0, 100) == ("none", None, 0)


# --------------------------------------------------------------------------------------------
# Done when: plan --policy minicpm-v-4.6 --max-llm-tokens 1024 --json, confirmed by the engine
# --------------------------------------------------------------------------------------------


def test_minicpm_llm_token_plan_is_confirmed(cli):
    d = _json(cli, "plan", "--policy", "minicpm-v-4.6", "--max-llm-tokens", "1024", "--json")
    assert set(d) >= PLAN_KEYS | {"design_image", "designs"}
    assert d["budget"] == {"kind": "llm_tokens", "limit": 1024, "unit": "tokens"}
    assert [r["ratio"] for r in d["ratios"]] == [f"{a}:{b}" for a, b in RATIOS]
    for r in d["ratios"]:
        assert set(r) == RATIO_KEYS
        # the default 9 slices cap the image: every size fits, and the 8K image is re-counted
        assert r["status"] == "any" and max(r["largest"]) == CEILING_PX
        w, h = r["largest"]
        assert r["value"] == get_policy(DEFAULT_POLICY).views(w, h).llm_tokens <= 1024
    s = d["setting"]
    assert set(s) == SETTING_KEYS and s["name"] == "max_slice_nums" and s["default"] == 9
    _check_setting(d, "llm_tokens", 1024)
    assert [row["design"] for row in d["designs"]] == ["baseline", *COMPRESSORS]
    for row in d["designs"]:  # no compressor or depth changes the 16x in total
        assert set(row) == DESIGN_KEYS and row["value"] == d["designs"][0]["value"] <= 1024


def test_qwen_llm_token_plan_finds_the_largest_image_per_ratio(cli):
    # 1000 tokens is under the default max_pixels' 1280: images stop fitting at some size
    d = _json(cli, "plan", "--policy", "qwen2.5-vl", "--max-llm-tokens", "1000", "--ratios", "1:1,16:9,9:16,21:9", "--json")
    pol = get_policy("qwen2.5-vl")
    for r in d["ratios"]:
        assert r["status"] == "limit", r
        (w, h), (nw, nh) = r["largest"], r["next"]
        assert max(nw, nh) == max(w, h) + 1  # the next step is one pixel longer
        assert r["value"] == pol.views(w, h).llm_tokens <= 1000 < pol.views(nw, nh).llm_tokens == r["next_value"]
        assert r["largest_pixels"] == w * h
    _check_setting(d, "llm_tokens", 1000)
    assert d["setting"]["largest"] < pol.defaults["max_pixels"]


# --------------------------------------------------------------------------------------------
# Memory and GFLOPs budgets, confirmed by the memory model and the engine
# --------------------------------------------------------------------------------------------


def test_memory_plan_is_confirmed_by_the_memory_model(cli):
    # the tower alone (no LLM) and a budget the 8K image reaches at some tile count: quick to trace
    limit = 1200 * 2**20
    d = _json(cli, "plan", "--policy", "internvl", "--max-memory", "1200MiB", "--llm", "none", "--ratios", "1:1,16:9", "--json")
    assert d["memory"]["llm"] is None and d["budget"]["limit"] == limit
    assert d["setting"]["name"] == "max_tiles"
    _check_setting(d, "memory", limit, MemorySettings(llm=None))
    for r in d["ratios"]:  # the default 12 tiles cap the image
        assert r["status"] == "any" and r["value"] <= limit


def test_gflops_plan_is_confirmed_by_the_engine(cli):
    d = _json(cli, "plan", "--policy", "internvl", "--max-gflops", "2000", "--ratios", "1:1,4:3", "--json")
    assert d["budget"] == {"kind": "gflops", "limit": 2000.0, "unit": "G (count / 1e9 in the convention)"}
    assert d["setting"]["name"] == "max_tiles"
    _check_setting(d, "gflops", 2000.0)
    # and with count_flops directly: one batched call of the planned number of 448 px views
    s = d["setting"]
    w, h = ratio_size((1, 1), CEILING_PX)
    views = get_policy("internvl").views(w, h, max_tiles=s["largest"])
    sizes = {v.size for v in views.views}
    assert len(sizes) == 1
    spec = VariantSpec(encoder=get_policy("internvl").encoder, resolution=Size(*sizes.pop()), post_ratio=1)
    total = count_flops(spec, batch=len(views.views)).get("macs") / 1e9
    assert total == pytest.approx(s["values"]["1:1"], rel=1e-12)


def test_design_table_is_the_deepest_layer_that_fits():
    # the 4-layer test tower and a small image, so that every probe is quick; the limit lies
    # between one compressor's counts at its shallowest and deepest insertion layer
    tower, image = "tiny", Size(128, 128)
    spec = {"encoder": tower, "resolution": image, "encoding": "sliced", "max_slices": 9, "scale_resolution": 448}

    def gmacs(**kw) -> float:
        return count_flops(VariantSpec(**spec, **kw)).get("macs") / 1e9

    shallow, deep = gmacs(compressor="avg-pool", depth=0), gmacs(compressor="avg-pool", depth=3)
    assert shallow < deep
    limit = (shallow + deep) / 2
    chosen = ("avg-pool", "window-attn-mlp", "reused-mlp")  # the table's every row is in the CLI test above
    rows = Planner(DEFAULT_POLICY, Budget("gflops", limit), encoder=tower).designs(image, chosen)
    by = {r.design: r for r in rows}
    assert [r.design for r in rows] == ["baseline", *chosen]
    for row in rows[1:]:
        assert row.design in COMPRESSORS and row.status in ("limit", "all", "none")
        if row.status == "limit":
            assert row.depth is not None and row.next_depth == row.depth + 1
            assert row.value is not None and row.next_value is not None and row.value <= limit < row.next_value
    for name in ("avg-pool", "window-attn-mlp"):  # re-counted
        row = by[name]
        if row.status == "limit":
            fits, over = gmacs(compressor=name, depth=row.depth), gmacs(compressor=name, depth=row.next_depth)
            assert fits == pytest.approx(row.value) and fits <= limit < over == pytest.approx(row.next_value)
    assert by["avg-pool"].status == "limit"
    baseline = gmacs()
    assert by["baseline"].status == ("fits" if baseline <= limit else "none") and by["baseline"].value == baseline


# --------------------------------------------------------------------------------------------
# The inverse: plan --image WxH
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(POLICIES))
def test_image_plan_for_every_policy(cli, name):
    # the tower's memory alone here (quick); with each family's LLM in the slow test below
    d = _json(cli, "plan", "--image", "3840x2160", "--policy", name, "--llm", "none", "--json")
    assert d["image"] == [3840, 2160] and d["budget"] is None
    (p,) = d["policies"]
    assert set(p) == IMAGE_KEYS and p["policy"] == name and p["fits"] is None and p["setting"] is None
    views = get_policy(name).views(3840, 2160)
    assert (p["views"], p["vit_tokens"], p["llm_tokens"]) == (len(views.views), views.vit_tokens, views.llm_tokens)
    _clear_engine_caches()
    cost = cost_item(3840, 2160, name, None, (p["variant"],))
    assert p["gflops"] == pytest.approx(cost.counts[p["variant"]]["macs"] / 1e9, rel=1e-12)
    assert p["memory"]["llm"] is None
    assert p["memory_bytes"] == views_memory(cost.views, cost.encoder, p["variant"], MemorySettings(llm=None)).peak_bytes


@pytest.mark.slow
def test_image_plan_for_every_policy_with_its_llm(cli):
    d = _json(cli, "plan", "--image", "3840x2160", "--json")  # every policy by default
    assert [p["policy"] for p in d["policies"]] == list(POLICIES)
    _clear_engine_caches()
    for p in d["policies"]:
        name = p["policy"]
        assert p["memory"]["llm"] == FAMILY_LLMS[name]
        cost = cost_item(3840, 2160, name, None, (p["variant"],))
        assert p["gflops"] == pytest.approx(cost.counts[p["variant"]]["macs"] / 1e9, rel=1e-12)
        assert (
            p["memory_bytes"]
            == views_memory(cost.views, cost.encoder, p["variant"], MemorySettings(llm=FAMILY_LLMS[name])).peak_bytes
        )


def test_image_plan_with_a_budget_finds_the_setting(cli):
    args = ("--image", "3840x2160", "--policy", "qwen2.5-vl", "--max-llm-tokens", "500", "--llm", "none", "--json")
    d = _json(cli, "plan", *args)
    (p,) = d["policies"]
    s = p["setting"]
    assert p["fits"] is False and s["status"] == "limit" and s["name"] == "max_pixels"
    pol = get_policy("qwen2.5-vl")
    assert pol.views(3840, 2160, max_pixels=s["largest"]).llm_tokens == s["value"] <= 500
    assert pol.views(3840, 2160, max_pixels=s["next"]).llm_tokens == s["next_value"] > 500


def test_image_plan_memory_is_the_memory_models(cli):
    d = _json(cli, "plan", "--image", "1920x1080", "--policy", "llava-1.5", "--max-memory", "24GiB", "--json")
    (p,) = d["policies"]
    _clear_engine_caches()
    cost = cost_item(1920, 1080, "llava-1.5")
    want = views_memory(cost.views, cost.encoder, "vit", MemorySettings(llm="llama-2-7b")).peak_bytes
    assert p["memory_bytes"] == want and p["fits"] is (want <= 24 * 2**30)
    assert p["setting"] is None  # llava-1.5 has no size setting


# --------------------------------------------------------------------------------------------
# Nothing fits, and bad input
# --------------------------------------------------------------------------------------------


def test_a_budget_nothing_fits_says_so(cli):
    # qwen2.5-7b's weights alone are over 1 GiB
    code, out, err = cli("plan", "--policy", "qwen2.5-vl", "--max-memory", "1GiB", "--ratios", "1:1")
    assert code == 0, err
    assert "nothing fits within 1.00 GiB" in " ".join(out.split() + err.split())
    d = _json(cli, "plan", "--policy", "qwen2.5-vl", "--max-memory", "1GiB", "--ratios", "1:1", "--json")
    assert d["fits_anything"] is False
    assert [r["status"] for r in d["ratios"]] == ["none"] and d["setting"]["status"] == "none"
    assert d["ratios"][0]["next_value"] > 2**30


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ((), "plan needs a budget"),
        (("--max-memory", "24GiB", "--max-gflops", "10"), "give one budget, not --max-memory and --max-gflops"),
        (("--max-memory", "24XB"), "--max-memory '24XB' is not valid; give a positive byte size"),
        (("--max-memory", "-1GiB"), "--max-memory '-1GiB' is not valid"),
        (("--max-memory=0",), "--max-memory '0' is not valid"),
        (("--max-gflops=-5",), "--max-gflops '-5' is not valid; it must be a positive finite number"),
        (("--max-gflops", "nan"), "--max-gflops 'nan' is not valid"),
        (("--max-gflops", "lots"), "--max-gflops 'lots' is not valid; give a positive number of GFLOPs"),
        (("--max-llm-tokens=-3",), "--max-llm-tokens '-3' is not valid"),
        (("--max-llm-tokens", "1.5"), "--max-llm-tokens '1.5' is not valid; give a positive whole number of tokens"),
        (("--policy", "gpt-9", "--max-llm-tokens", "10"), "unknown image policy 'gpt-9'; valid policies: minicpm-v-4.6"),
        (("--policy", "qwen2.5-vl", "--policy", "internvl", "--max-llm-tokens", "10"), "give one --policy"),
        (("--image", "0x5"), "--image"),
        (("--image", "big"), "--image"),
        (("--max-llm-tokens", "10", "--ratios", "1:0"), "--ratios '1:0' is not valid; give W:H pairs"),
        (("--policy", "qwen2.5-vl", "--max-llm-tokens", "10", "--variant", "v4"), "--variant 'v4' is not valid for policy"),
        (("--policy", "qwen2.5-vl", "--max-llm-tokens", "10", "--depth", "3"), "--depth 3 moves the v4 variant's compressor"),
        (("--max-llm-tokens", "1000", "--depth", "99"), "depth 99 is out of range"),
        (("--max-llm-tokens", "1000", "--depth", "-1"), "depth -1 is out of range"),
        (("--max-llm-tokens", "10", "--dtype", "fp8"), "fp8"),
        (("--max-llm-tokens", "10", "--attn", "flash"), "flash"),
        (("--policy", "qwen2.5-vl", "--max-llm-tokens", "10", "--policy-param", "max_pixels=-4"), "max_pixels"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(cli, args, needle):
    line = _error(cli, "plan", *args)
    assert needle in line, line


def test_parse_budget():
    assert parse_budget() is None
    assert parse_budget(max_memory="24GiB") == Budget("memory", 24 * 2**30)
    assert parse_budget(max_gflops="2_000") == Budget("gflops", 2000.0)
    assert parse_budget(max_llm_tokens="1_024") == Budget("llm_tokens", 1024)
    for bad in (0, -1, float("inf"), float("nan"), True):
        with pytest.raises(UhdProfileError, match="positive finite number"):
            Budget("gflops", bad)
    with pytest.raises(UhdProfileError, match="budget 'watts' is not valid"):
        Budget("watts", 1)
    with pytest.raises(UhdProfileError, match="no budget given"):
        Planner("qwen2.5-vl", None).largest_image((1, 1))


def test_knobs_are_policy_parameters():
    for name, knob in KNOBS.items():
        pol = get_policy(name)
        assert knob.name in pol.defaults and knob.low <= pol.defaults[knob.name] <= knob.high
        pol.views(640, 480, **{knob.name: knob.low})
        pol.views(640, 480, **{knob.name: knob.high})


# --------------------------------------------------------------------------------------------
# Done when, as the issue states it (slow: about a minute of tracing on the 2-core CPU)
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_qwen_24gib_plan_is_confirmed(cli):
    d = _json(cli, "plan", "--policy", "qwen2.5-vl", "--max-memory", "24GiB", "--json")
    assert set(d) == PLAN_KEYS
    assert d["memory"] == {
        "dtype": "bf16",
        "attn": "sdpa",
        "device_kind": "cuda",
        "llm": "qwen2.5-7b",
        "prompt_tokens": 64,
        "decode_tokens": 0,
    }
    limit = 24 * 2**30
    memory = MemorySettings(llm="qwen2.5-7b")
    # the default max_pixels caps every image: each ratio's 8K image fits, re-traced here
    _clear_engine_caches()
    for r in d["ratios"]:
        assert r["status"] == "any"
        got = _recount("qwen2.5-vl", Size(*r["largest"]), {}, "memory", "vit", memory)
        assert got == r["value"] <= limit
    s = d["setting"]
    assert s["name"] == "max_pixels" and s["largest"] > s["default"]
    # policy_memory from a cost without FLOPs: cost_policy_image would count ~40k-token towers
    _clear_engine_caches()
    pol = get_policy("qwen2.5-vl")
    for name, value in s["values"].items():
        size = ratio_size(tuple(int(x) for x in name.split(":")), CEILING_PX)
        views = pol.views(*size, max_pixels=s["largest"])
        got = views_memory(views, pol.encoder, "vit", memory).peak_bytes
        assert got == value <= limit, name
    size = ratio_size(tuple(int(x) for x in s["binding_ratio"].split(":")), CEILING_PX)
    views = pol.views(*size, max_pixels=s["next"])
    assert views_memory(views, pol.encoder, "vit", memory).peak_bytes == s["next_value"] > limit
