"""Image policies in the commands: `list policies`, `image --policy`, `dataset --policy`, `image --memory`.

Tokens and views are checked against the policies themselves (which tests/test_policies.py checks
against the transformers processors); FLOPs are recounted here with the engine, view by view."""

from __future__ import annotations

import json

import pytest

from uhd_profile.analyse.cost import count_call, variant_spec
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
    objs = cli_json("image", "3840x2160", "--policy", name, "--json")
    pol = get_policy(name)
    assert [d["encoding"] for d in objs] == (["sliced", "global"] if pol.encodings else ["native"])
    for d in objs:
        views = pol.views(3840, 2160, **({"encoding": d["encoding"]} if pol.encodings else {}))
        assert d["size"] == [3840, 2160] and d["policy"] == name and d["convention"] == "macs"
        assert [v["size"] for v in d["views"]] == [list(s) for s in views.sizes]
        assert (d["vit_tokens"], d["view_llm_tokens"], d["llm_tokens"]) == (
            views.vit_tokens,
            views.view_llm_tokens,
            views.llm_tokens,
        )
        assert d["llm_tokens"] == d["placeholder_tokens"] + d["special_tokens"] + d["text_tokens"]
        assert len(d["extras"]) == len(views.extras)
        # FLOPs recounted: every call (equal views batched) through the engine, summed
        for plan in d["variants"]:
            total = {c.column: 0 for c in CONVENTIONS.values()}
            for call in d["calls"]:
                fc = count_flops(variant_spec(d["encoder"], plan, Size(*call["size"])), batch=call["views"])
                for c in CONVENTIONS.values():
                    total[c.column] += fc.get(c.name)
                assert call["variant_ids"][plan] == variant_spec(d["encoder"], plan, Size(*call["size"])).id
            assert d["counts"][plan] == total
            assert d["gflops"][plan] == pytest.approx(total["macs"] / 1e9)
            assert sum(v["gflops"][plan] for v in d["views"]) == pytest.approx(total["macs"] / 1e9)
    if name == DEFAULT_POLICY:
        assert objs[0]["encoder"] == "siglip2-so400m-p14" and objs[0]["variants"] == ["baseline", "v4"]
        assert objs[0]["gflops"]["v4"] == pytest.approx(2178.168274944)  # README's 4K figure
    else:
        (d,) = objs
        assert d["encoder"] == pol.encoder and d["variants"] == ["vit"]
        assert any("tower alone" in n for n in d["notes"])


def test_image_default_is_the_default_policy(cli_json):
    assert cli_json("image", "896x672", "--json") == cli_json("image", "896x672", "--json", "--policy", DEFAULT_POLICY)


def test_policy_params(cli_json):
    (d,) = cli_json("image", "1600x1200", "--policy", "qwen2.5-vl", "--policy-param", "max_pixels=2000000", "--json")
    big = get_policy("qwen2.5-vl").views(1600, 1200, max_pixels=2000000)
    assert d["view_llm_tokens"] == big.view_llm_tokens > get_policy("qwen2.5-vl").views(1600, 1200).view_llm_tokens
    assert d["policy_params"]["max_pixels"] == 2000000
    a = cli_json("image", "896x672", "--json", "--max-slices", "4")
    b = cli_json("image", "896x672", "--json", "--policy-param", "max_slice_nums=4")
    assert a == b and a[0]["policy_params"]["max_slice_nums"] == 4


@pytest.mark.parametrize(
    "args,match",
    [
        (("--policy", "qwen2.5-vl", "--encoder", "clip-vit-l14-336"), "conflicts with --policy qwen2.5-vl"),
        (("--policy", "nope"), "unknown image policy 'nope'"),
        (("--policy", "qwen2.5-vl", "--policy-param", "bogus=1"), "no given policy has a parameter 'bogus'"),
        (("--policy", "qwen2.5-vl", "--policy-param", "max_pixels"), "write NAME=VALUE"),
        (("--policy", "qwen2.5-vl", "--policy-param", "max_pixels=lots"), "must be an integer"),
        (("--policy", "internvl", "--max-slices", "4"), "--max-slices sets the policy parameter max_slice_nums"),
        (("--policy", "internvl", "--variant", "v4"), "--variant 'v4' is not valid for policy internvl"),
        (("--policy", "internvl", "--encoding", "global"), "--encoding applies to a policy with several encodings"),
        (("--policy", "internvl", "--depth", "3"), "--depth 3 moves the v4 variant's compressor"),
        (
            (
                "--depth",
                "99",
            ),
            "depth 99 is out of range",
        ),
        (("--max-slices", "4", "--policy-param", "max_slice_nums=5"), "disagree"),
        (("--dtype", "bf16"), "add --memory"),
        (("--memory", "--llm", "gpt-9"), "unknown LLM 'gpt-9'"),
        (("--memory", "--attn", "flash"), "--attn 'flash' is not valid"),
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
    tokens = d["llm_tokens"]
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


def test_minicpm_memory_per_encoding_and_variant(cli_json):
    objs = cli_json("image", "1344x896", "--memory", "--llm", "none", "--variant", "v4", "--json")
    assert [(d["encoding"], [m["variant"] for m in d["memory"]]) for d in objs] == [("sliced", ["v4"]), ("global", ["v4"])]
    (sliced,) = objs[0]["memory"]
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
    assert set(iv["encoding"]) == {"native"} and set(iv["variant"]) == {"vit"} and len(iv) == 2
    a = iv[iv.path.str.endswith("a.png")].iloc[0]
    views = get_policy("internvl").views(600, 400)
    for key, value in views.token_fields.items():
        assert a[key] == value, key
    assert a["macs"] == count_call("internvit-300m-448", "vit", Size(448, 448), len(views.views))["macs"]
    # every policy's rows and summary have the same columns: one shape
    assert set(rows[rows.policy == DEFAULT_POLICY].dropna(axis=1, how="all").columns) == set(iv.columns)
    summary = pd.read_csv(out_dir / "summary.csv")
    assert set(summary["policy"]) == {DEFAULT_POLICY, "internvl"}
    meta = json.loads((out_dir / "summary.json").read_text())
    assert [p["name"] for p in meta["policies"]] == [DEFAULT_POLICY, DEFAULT_POLICY, "internvl"] and meta["images"] == 2
    assert [p["params"].get("encoding") for p in meta["policies"]] == ["sliced", "global", None]
    assert len(meta["skipped"]) == 1 and (out_dir / "histogram.png").exists()
    assert "internvl" in out and "skipped" in err


def test_dataset_policy_errors(tmp_path, cli_error):
    d = _images(tmp_path)
    assert "--max-slices sets the policy parameter" in cli_error("dataset", str(d), "--policy", "qwen2.5-vl", "--max-slices", "4")
    assert "given twice" in cli_error("dataset", str(d), "--policy", "internvl", "--policy", "internvl")
    assert "names policy 'internvl'" in cli_error(
        "dataset", str(d), "--policy", "qwen2.5-vl", "--policy-param", "internvl:max_tiles=4"
    )


def test_dataset_summary_json_has_one_shape_for_every_policy(cli, tmp_path):
    d = _images(tmp_path)
    shapes = {}
    for name in POLICIES:
        out_dir = tmp_path / f"out-{name}"
        code, _, err = cli("dataset", str(d), "--out", str(out_dir), "--policy", name)
        assert code == 0, err
        meta = json.loads((out_dir / "summary.json").read_text())
        shapes[name] = (
            tuple(meta),
            tuple(meta["policies"][0]),
            tuple(meta["summary"][0]),
            tuple(sorted({s["metric"] for s in meta["summary"]})),
        )
    assert len(set(shapes.values())) == 1, shapes
