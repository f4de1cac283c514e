"""``image --llm`` and ``dataset --llm``: each image's cost through the whole model.

The LLM stages are checked against ``count_llm`` run independently (a fresh model per count), so a
wrong token count (visual tokens, the policy's extras, the prompt) or a cache that mixes images
fails here.
"""

from __future__ import annotations

import csv
import json

import pytest
from PIL import Image

from uhd_profile.count.llm import count_llm
from uhd_profile.model.policies import DEFAULT_POLICY, get_policy

LLM = ("--llm", "tiny-llm")
TINY = ("--encoder", "tiny", "--depth", "2")  # tiny has 4 layers: v4 after layer index 2


def _expected(tokens: int, prompt: int, decode: int) -> tuple[int, int]:
    c = count_llm("tiny-llm", tokens, prompt, decode)
    return c.prefill_total("macs"), c.decode_total("macs")


def test_image_llm_stages_are_the_llms_count_of_what_it_sees(cli_json):
    (d,) = cli_json("image", "896x448", *TINY, *LLM, "--prompt-tokens", "16", "--decode-tokens", "2", "--json")
    stages = {(s["encoding"], s["plan"]): s for s in d["llm_stages"]}
    assert set(stages) == {(e, p) for e in ("sliced", "global") for p in ("baseline", "v4")}
    extras = get_policy(DEFAULT_POLICY).views(896, 448).extra_tokens
    assert extras > 0
    for (enc, plan), s in stages.items():
        tokens = d[enc]["llm_tokens"][plan] + (extras if enc == "sliced" else 0)
        assert s["llm"] == "tiny-llm" and s["visual_tokens"] == tokens
        assert (s["prompt_tokens"], s["decode_tokens"]) == (16, 2)
        prefill, decode = _expected(tokens, 16, 2)
        assert s["prefill"]["macs"] == prefill and s["decode"]["macs"] == decode and decode > 0
        assert s["vision"] == d[enc]["counts"][plan]
        for col in ("macs", "flops", "paper_flops"):
            assert s["total"][col] == s["vision"][col] + s["prefill"][col] + s["decode"][col]
    # without --llm the object has no LLM stages and is otherwise the same
    (plain,) = cli_json("image", "896x448", *TINY, "--json")
    assert "llm_stages" not in plain and plain["sliced"] == d["sliced"]


def test_image_llm_under_another_policy_counts_its_tokens_with_extras(cli_json):
    (d,) = cli_json("image", "1000x700", "--policy", "llava-next", *LLM, "--json")
    (s,) = d["llm_stages"]
    tokens = d["policy_views"]["llm_tokens"]
    assert s["visual_tokens"] == tokens > d["policy_views"]["view_llm_tokens"]  # llava-next adds row newlines
    assert s["prefill"]["macs"] == _expected(tokens, 64, 0)[0]


def test_image_llm_table(cli):
    code, out, err = cli("image", "448x448", *TINY, *LLM, "--variant", "v4")
    assert code == 0, err
    assert "end to end through tiny-llm (64 prompt tokens, 0 decoded" in out
    assert "vision share before 1st token" in out


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("--prompt-tokens", "8"), "--prompt-tokens applies to an LLM stage; add --llm NAME"),
        (("--llm", "none", "--decode-tokens", "3"), "--decode-tokens applies to an LLM stage"),
        (("--llm", "gpt-9"), "gpt-9"),
        ((*LLM, "--prompt-tokens", "-1"), "--prompt-tokens -1: must be >= 0"),
    ],
)
def test_bad_llm_options_are_one_line_errors(args, match, cli_error):
    assert match in cli_error("image", "640x480", *TINY, *args)


def test_dataset_llm_adds_the_stages_per_row_and_to_the_summary(cli, tmp_path):
    src = tmp_path / "imgs"
    src.mkdir()
    for i, (w, h) in enumerate([(640, 480), (1000, 300)]):
        Image.new("RGB", (w, h), (0, 100, 0)).save(src / f"{i}.png")
    out = tmp_path / "out"
    code, _, err = cli("dataset", str(src), "--out", str(out), *TINY, *LLM, "--prompt-tokens", "8")
    assert code == 0, err
    rows = list(csv.DictReader((out / "per_image.csv").open()))
    assert len(rows) == 2 * 2 * 2  # images x encodings x plans
    for r in rows:
        w, h = int(r["width"]), int(r["height"])
        extras = get_policy(DEFAULT_POLICY).views(w, h).extra_tokens if r["encoding"] == "sliced" else 0
        tokens = int(r["llm_tokens"]) + extras
        assert r["llm"] == "tiny-llm" and int(r["llm_input_tokens"]) == tokens
        assert int(r["llm_prefill_macs"]) == _expected(tokens, 8, 0)[0]
        assert int(r["total_macs"]) == int(r["macs"]) + int(r["llm_prefill_macs"]) + int(r["llm_decode_macs"])
    meta = json.loads((out / "summary.json").read_text())
    assert meta["llm"]["name"] == "tiny-llm" and meta["llm"]["prompt_tokens"] == 8
    assert {"llm_prefill_macs", "total_macs"} <= {s["metric"] for s in meta["summary"]}
    # side by side under two policies
    out2 = tmp_path / "out2"
    code, _, err = cli(
        "dataset",
        str(src),
        "--out",
        str(out2),
        "--policy",
        "minicpm-v-4.6",
        "--policy",
        "llava-1.5",
        *TINY,
        "--variant",
        "baseline",
        *LLM,
    )
    assert code == 0, err
    rows = list(csv.DictReader((out2 / "per_image.csv").open()))
    assert {r["policy"] for r in rows} == {"minicpm-v-4.6", "llava-1.5"}
    assert all(int(r["llm_prefill_macs"]) > 0 for r in rows)
