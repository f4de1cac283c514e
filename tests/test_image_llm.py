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
    objs = cli_json("image", "896x448", *TINY, *LLM, "--prompt-tokens", "16", "--decode-tokens", "2", "--json")
    assert [d["encoding"] for d in objs] == ["sliced", "global"]
    for d in objs:
        s = d["llm_stages"]
        views = get_policy(DEFAULT_POLICY).views(896, 448, encoder="tiny", encoding=d["encoding"])
        assert views.extra_tokens > 0  # markers and the image id, for the global view too
        tokens = views.llm_tokens
        assert tokens == d["llm_tokens"] == d["placeholder_tokens"] + d["special_tokens"] + d["text_tokens"]
        assert s["llm"] == "tiny-llm" and s["input_tokens"] == tokens
        assert (s["prompt_tokens"], s["decode_tokens"]) == (16, 2)
        prefill, decode = _expected(tokens, 16, 2)
        assert s["prefill"]["macs"] == prefill and s["decode"]["macs"] == decode and decode > 0
        assert set(s["vision"]) == {"baseline", "v4"}
        for variant in ("baseline", "v4"):
            assert s["vision"][variant] == d["counts"][variant]
            for col in ("macs", "flops", "paper_flops"):
                total = s["total"][variant][col]
                assert total == s["vision"][variant][col] + s["prefill"][col] + s["decode"][col]
    # without --llm the objects have no LLM stages and are otherwise the same
    plain = cli_json("image", "896x448", *TINY, "--json")
    assert all("llm_stages" not in d for d in plain)
    assert [{k: v for k, v in d.items() if k != "llm_stages"} for d in objs] == plain


def test_image_llm_under_another_policy_counts_its_tokens_with_extras(cli_json):
    (d,) = cli_json("image", "1000x700", "--policy", "llava-next", *LLM, "--json")
    s = d["llm_stages"]
    tokens = d["llm_tokens"]
    assert s["input_tokens"] == tokens > d["view_llm_tokens"]  # llava-next adds row newlines
    assert d["placeholder_tokens"] == tokens  # the newlines sit at placeholder positions
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
        ((*LLM, "--prompt-tokens", "-1"), "--prompt-tokens -1 is not valid; it must be an integer >= 0"),
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
    assert len(rows) == 2 * 2 * 2  # images x encodings x variants
    for r in rows:
        w, h = int(r["width"]), int(r["height"])
        tokens = get_policy(DEFAULT_POLICY).views(w, h, encoder="tiny", encoding=r["encoding"]).llm_tokens
        assert r["llm"] == "tiny-llm" and int(r["llm_tokens"]) == tokens
        assert int(r["llm_prefill_macs"]) == _expected(tokens, 8, 0)[0]
        assert int(r["total_macs"]) == int(r["macs"]) + int(r["llm_prefill_macs"]) + int(r["llm_decode_macs"])
    meta = json.loads((out / "summary.json").read_text())
    assert meta["llm"]["llm"] == "tiny-llm" and meta["llm"]["prompt_tokens"] == 8
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
        "--encoder",
        "tiny",
        "--variant",
        "baseline",
        *LLM,
    )
    assert code == 0, err
    rows = list(csv.DictReader((out2 / "per_image.csv").open()))
    assert {r["policy"] for r in rows} == {"minicpm-v-4.6", "llava-1.5"}
    assert all(int(r["llm_prefill_macs"]) > 0 for r in rows)
