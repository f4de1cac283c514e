"""Image policies in the commands: `list policies`, `image --policy`, `dataset --policy`, `image --memory`.

Tokens and views are checked against the policies themselves (which tests/test_policies.py checks
against the transformers processors); FLOPs are recounted here with the engine, view by view."""

from __future__ import annotations

import json

import pytest

from uhd_profile.analyse.images import count_views, view_spec
from uhd_profile.count.conventions import CONVENTIONS
from uhd_profile.count.flops import count_flops
from uhd_profile.count.llm import count_llm
from uhd_profile.model.policies import DEFAULT_POLICY, POLICIES, get_policy
from uhd_profile.units import Size


def test_list_policies(cli):
    code, out, _ = cli("list", "policies")
    assert code == 0
    for p in POLICIES.values():
        assert p.name in out and p.encoder in out
    assert "max_pixels=1003520" in out and "672x336,336x672" in out


@pytest.mark.parametrize("name", list(POLICIES))
def test_image_3840x2160_json_works_for_every_policy(name, cli_json):
    (d,) = cli_json("image", "3840x2160", "--policy", name, "--json")
    pol = get_policy(name)
    views = pol.views(3840, 2160)
    pv = d["policy_views"]
    assert d["size"] == [3840, 2160] and d["policy"] == name and d["convention"] == "macs"
    assert [v["size"] for v in pv["views"]] == [list(s) for s in views.sizes]
    assert (pv["vit_tokens"], pv["view_llm_tokens"], pv["llm_tokens"]) == (
        views.vit_tokens,
        views.view_llm_tokens,
        views.llm_tokens,
    )
    assert pv["extra_tokens"] == views.extra_tokens and len(pv["extras"]) == len(views.extras)
    # FLOPs recounted: every call (equal views batched) through the engine, summed (minicpm-v-4.6:
    # compared with today's sliced encoding below instead)
    for plan in d["plans"] if name != DEFAULT_POLICY else ():
        total = {c.column: 0 for c in CONVENTIONS.values()}
        for call in pv["calls"]:
            fc = count_flops(view_spec(d["encoder"], plan, Size(*call["size"])), batch=call["views"])
            for c in CONVENTIONS.values():
                total[c.column] += fc.get(c.name)
            assert call["variant_ids"][plan] == view_spec(d["encoder"], plan, Size(*call["size"])).id
        assert pv["counts"][plan] == total
        assert pv["gflops"][plan] == pytest.approx(total["macs"] / 1e9)
        assert sum(v["gflops"][plan] for v in pv["views"]) == pytest.approx(total["macs"] / 1e9)
    if name == DEFAULT_POLICY:
        assert d["encoder"] == "siglip2-so400m-p14" and d["plans"] == ["baseline", "v4"]
        assert d["sliced"]["counts"] == pv["counts"]  # the policy's views are today's sliced encoding
        assert d["sliced"]["gflops"]["v4"] == pytest.approx(2178.168274944)  # README's 4K figure
        assert "global" in d
    else:
        assert d["encoder"] == pol.encoder and d["plans"] == ["vit"]
        assert "sliced" not in d and any("tower alone" in n for n in pv["notes"])


def test_image_default_is_unchanged_but_for_added_keys(cli_json):
    (d,) = cli_json("image", "896x672", "--json")
    (e,) = cli_json("image", "896x672", "--json", "--policy", DEFAULT_POLICY)
    assert d == e
    assert {"path", "size", "encoder", "plans", "convention", "convention_help", "sliced", "global"} <= set(d)
    assert d["sliced"]["llm_tokens"]["v4"] + d["policy_views"]["extra_tokens"] == d["policy_views"]["llm_tokens"]


def test_policy_params(cli_json):
    (d,) = cli_json("image", "1600x1200", "--policy", "qwen2.5-vl", "--policy-param", "max_pixels=2000000", "--json")
    big = get_policy("qwen2.5-vl").views(1600, 1200, max_pixels=2000000)
    assert (
        d["policy_views"]["view_llm_tokens"] == big.view_llm_tokens > get_policy("qwen2.5-vl").views(1600, 1200).view_llm_tokens
    )
    assert d["policy_params"]["max_pixels"] == 2000000
    (a,) = cli_json("image", "896x672", "--json", "--max-slices", "4")
    (b,) = cli_json("image", "896x672", "--json", "--policy-param", "max_slice_nums=4")
    assert a == b and a["policy_params"]["max_slice_nums"] == 4


@pytest.mark.parametrize(
    "args,match",
    [
        (("--policy", "qwen2.5-vl", "--encoder", "clip-vit-l14-336"), "conflicts with --policy qwen2.5-vl"),
        (("--policy", "nope"), "unknown image policy 'nope'"),
        (("--policy", "qwen2.5-vl", "--policy-param", "bogus=1"), "no given policy has a parameter 'bogus'"),
        (("--policy", "qwen2.5-vl", "--policy-param", "max_pixels"), "write NAME=VALUE"),
        (("--policy", "qwen2.5-vl", "--policy-param", "max_pixels=lots"), "must be an integer"),
        (("--policy", "internvl", "--max-slices", "4"), "--max-slices applies to the minicpm-v-4.6 policy"),
        (("--policy", "internvl", "--variant", "v4"), "--variant v4 applies to the minicpm-v-4.6 policy"),
        (("--max-slices", "4", "--policy-param", "max_slice_nums=5"), "disagree"),
        (("--dtype", "bf16"), "add --memory"),
        (("--memory", "--llm", "gpt-9"), "unknown LLM 'gpt-9'"),
        (("--memory", "--attn", "flash"), "attention path 'flash'"),
    ],
)
def test_bad_policy_options_are_one_line_errors(args, match, cli_error):
    assert match in cli_error("image", "1000x800", *args)


def test_own_encoder_may_be_named(cli_json):
    (d,) = cli_json("image", "672x672", "--policy", "llava-1.5", "--encoder", "clip-vit-l14-336", "--json")
    assert d["encoder"] == "clip-vit-l14-336"


def test_memory_json_adds_up_and_uses_count_llms_cache(cli_json):
    (d,) = cli_json("image", "700x500", "--policy", "llava-1.5", "--memory", "--llm", "tiny-llm", "--json")
    (m,) = d["memory"]
    assert [s["stage"] for s in m["stages"]] == ["vision", "llm_prefill"] and m["llm"] == "tiny-llm"
    peak = next(s for s in m["stages"] if s["stage"] == m["peak_stage"])
    assert m["peak_bytes"] == m["weights_bytes"] + peak["held_bytes"] + peak["activation_bytes"]
    tokens = d["policy_views"]["llm_tokens"]
    cache = count_llm("tiny-llm", tokens, 64).cache_after_prefill.bytes("bf16")
    assert m["stages"][1]["kv_cache_bytes"] == cache and m["parts"]["kv_cache"] == cache
    assert m["stages"][0]["attention_score_bytes"] == 0 and m["device_kind"] == "cuda" and m["dtype"] == "bf16"
    (e,) = cli_json("image", "700x500", "--policy", "llava-1.5", "--memory", "--llm", "none", "--attn", "eager", "--json")
    (me,) = e["memory"]
    assert [s["stage"] for s in me["stages"]] == ["vision"]
    clip = get_policy("llava-1.5")
    heads, n = 16, 577  # CLIP-L: 16 heads, 24 x 24 patches + the class token
    assert me["stages"][0]["attention_score_bytes"] >= heads * n * n * (2 + 4 + 4)  # bf16 scores, float32 copy, softmax
    assert clip.encoder == me["stages"][0]["model"]


def test_minicpm_memory_per_encoding_and_plan(cli_json):
    (d,) = cli_json("image", "1344x896", "--memory", "--llm", "none", "--variant", "v4", "--json")
    got = {(m["encoding"], m["plan"]) for m in d["memory"]}
    assert got == {("global", "v4"), ("sliced", "v4")}
    sliced = next(m for m in d["memory"] if m["encoding"] == "sliced")
    assert len(sliced["views"]) == 2  # thumbnail, then the slices as one batch


def test_memory_table(cli):
    code, out, err = cli("image", "448x448", "--policy", "llava-1.5", "--memory", "--llm", "none")
    assert code == 0, err
    assert "predicted memory" in out and "vision" in out and "peak" in out


def _images(tmp_path):
    from PIL import Image

    d = tmp_path / "imgs"
    d.mkdir()
    Image.new("RGB", (600, 400)).save(d / "a.png")
    Image.new("RGB", (300, 500)).save(d / "b.jpg")
    (d / "notes.txt").write_text("not an image")
    return d


def test_dataset_puts_policies_side_by_side(cli, tmp_path):
    import pandas as pd

    d = _images(tmp_path)
    out_dir = tmp_path / "out"
    code, out, err = cli("dataset", str(d), "--out", str(out_dir), "--policy", DEFAULT_POLICY, "--policy", "internvl")
    assert code == 0, err
    rows = pd.read_csv(out_dir / "per_image.csv")
    assert set(rows["policy"]) == {DEFAULT_POLICY, "internvl"}
    iv = rows[rows.policy == "internvl"]
    assert set(iv["encoding"]) == {"policy"} and set(iv["plan"]) == {"vit"} and len(iv) == 2
    a = iv[iv.path.str.endswith("a.png")].iloc[0]
    views = get_policy("internvl").views(600, 400)
    assert (a["vit_tokens"], a["llm_tokens"], a["extra_tokens"]) == (views.vit_tokens, views.view_llm_tokens, views.extra_tokens)
    assert a["macs"] == count_views("internvit-300m-448", "vit", Size(448, 448), len(views.views))["macs"]
    summary = pd.read_csv(out_dir / "summary.csv")
    assert set(summary["policy"]) == {DEFAULT_POLICY, "internvl"}
    meta = json.loads((out_dir / "summary.json").read_text())
    assert [p["name"] for p in meta["policies"]] == [DEFAULT_POLICY, "internvl"] and meta["images"] == 2
    assert len(meta["skipped"]) == 1 and (out_dir / "histogram.png").exists()
    assert "internvl" in out and "skipped" in err


def test_dataset_policy_errors(tmp_path, cli_error):
    d = _images(tmp_path)
    assert "--max-slices applies" in cli_error("dataset", str(d), "--policy", "qwen2.5-vl", "--max-slices", "4")
    assert "names policy 'internvl'" in cli_error(
        "dataset", str(d), "--policy", "qwen2.5-vl", "--policy-param", "internvl:max_tiles=4"
    )
