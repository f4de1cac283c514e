"""The command line: outputs, JSON fields, exit codes, one-line errors without tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def test_flops_json_fields(cli):
    code, out, _ = cli("flops", "--encoder", "tiny", "--variant", "v4", "--depth", "1", "--post-ratio", "4", "--json")
    assert code == 0
    rec = json.loads(out)
    for key in (
        "encoder",
        "variant_id",
        "width_px",
        "height_px",
        "tokens_in",
        "convention",
        "unit",
        "total",
        "giga",
        "counts",
        "by_module",
        "by_category",
        "uncounted_ops",
    ):
        assert key in rec
    assert rec["convention"] == "macs" and rec["unit"] == "MACs" and rec["tokens_in"] == 64 and rec["tokens_llm"] == 4
    assert rec["total"] == sum(rec["by_module"].values()) == sum(rec["by_category"].values())
    assert rec["giga"] == rec["total"] / 1e9
    assert set(rec["counts"]) == {"macs", "flops", "paper_flops"}  # the record schema's names


def test_flops_default_is_paper_geometry_vit_alone(cli):
    code, out, err = cli("flops", "--json")  # 980 px: the 70x70 grid cannot take the 16x connector
    rec = json.loads(out)
    assert code == 0 and rec["post_ratio"] == 1 and rec["total"] == 3_511_178_496_000
    assert "counting the ViT alone" in err and "nearest valid: 952x952 or 1008x1008" in err  # the note, with --json too


def test_flops_conventions_and_wxh(cli):
    _, out, _ = cli("flops", "--resolution", "1344x756", "--convention", "paper", "--json")
    rec = json.loads(out)
    assert (rec["width_px"], rec["height_px"]) == (1344, 756) and rec["convention"] == "paper"
    assert rec["variant_id"].startswith("siglip2-so400m-p14@1344x756/")
    assert rec["total"] == rec["counts"]["paper_flops"]


def test_a_tower_that_floors_takes_any_size(cli):
    """SigLIP's stride-14 patch convolution floors: the 384 px preset takes 384 px (27 x 27 = 729 tokens),
    as every user runs it; `native` works on the command line too."""
    code, out, err = cli("flops", "--encoder", "siglip-so400m-p14-384", "--resolution", "384", "--post-ratio", "1", "--json")
    assert code == 0, err
    rec = json.loads(out)
    assert rec["tokens_in"] == 729 and (rec["width_px"], rec["height_px"]) == (384, 384)
    code, out, _ = cli("flops", "--encoder", "siglip-so400m-p14-384", "--resolution", "native", "--post-ratio", "1", "--json")
    assert code == 0 and json.loads(out)["total"] == rec["total"]


def test_flops_table_names_the_convention(cli):
    code, out, _ = cli("flops", "--encoder", "tiny", "--by-module")
    assert code == 0 and "macs convention" in out and "layers.3" in out


def test_reproduce_json(cli):
    code, out, _ = cli("reproduce", "--json")
    rec = json.loads(out)
    assert code == 0
    assert len(rec["rows"]) == 12
    assert {"figure", "variant_id", "paper_gflops", "counted_gflops", "rel_err", "executed_gflops"} <= set(rec["rows"][0])
    assert rec["reduction"]["paper"] == 0.5575
    assert abs(rec["reduction"]["counted"] - 0.5575) < 5e-5
    assert rec["count_seconds"] > 0


def test_list(cli):
    code, out, _ = cli("list", "encoders")
    assert code == 0 and "siglip2-so400m-p14" in out and "minicpm-v-4.6" in out
    code, out, _ = cli("list", "compressors")
    assert code == 0 and "window-attn-reused-mlp" in out


def test_list_without_an_argument_says_what_can_be_listed(cli):
    code, out, err = cli("list")
    assert code == 0 and err == ""
    for kind in ("encoders", "compressors", "conventions", "metrics", "recipes", "llms", "policies"):
        assert kind in out
    assert "uhd-profile list KIND" in out


@pytest.mark.parametrize(
    "encoder,resolution,post_ratio,tokens_llm",
    [
        ("qwen2.5-vl-vit", "448", 4, 256),  # Qwen2.5-VL: its merger joins 2x2 patches
        ("internvit-300m-448", "448", 4, 256),  # InternVL: pixel shuffle 0.5, 256 tokens per 448 px tile
        ("clip-vit-l14-336", "336", 1, 577),  # LLaVA-1.5: a 1:1 projector (the class token kept)
        ("siglip-so400m-p14-384", "384", 1, 729),  # LLaVA-OneVision: a per-token projector
        ("siglip2-so400m-p14", "448", 16, 64),  # the paper's tower keeps the paper's 16x
        ("minicpm-v-4.6", "448", 16, 64),
    ],
)
def test_a_tower_defaults_to_its_own_familys_connector(cli, encoder, resolution, post_ratio, tokens_llm):
    code, out, err = cli("flops", "--encoder", encoder, "--resolution", resolution, "--json")
    assert code == 0, err
    rec = json.loads(out)
    assert (rec["post_ratio"], rec["tokens_llm"]) == (post_ratio, tokens_llm)
    assert rec["variant_id"].endswith(f"/baseline/post{post_ratio}")


def test_an_explicit_post_ratio_still_wins_over_the_family_default(cli):
    code, out, _ = cli("flops", "--encoder", "qwen2.5-vl-vit", "--resolution", "448", "--post-ratio", "16", "--json")
    assert code == 0 and json.loads(out)["tokens_llm"] == 64
    code, out, _ = cli("flops", "--encoder", "qwen2.5-vl-vit", "--resolution", "448", "--variant", "v4", "--json")
    assert code == 0 and json.loads(out)["post_ratio"] == 1  # 4x in the ViT: the family's 4x in total


def test_size_errors_print_the_token_grid_width_first_and_the_nearest_valid_sizes(cli_error):
    line = cli_error("flops", "--resolution", "1920x1080", "--variant", "v4")  # 137 columns x 77 rows of tokens
    assert "got 137x77 tokens (width x height)" in line and "nearest valid: 1904x1064 or 1932x1092" in line
    line = cli_error("flops", "--resolution", "1920x1080", "--post-ratio", "16")
    assert "leaves 137x77 tokens (width x height)" in line and "nearest valid: 1904x1064 or 1960x1120" in line
    line = cli_error("flops", "--encoder", "qwen2.5-vl-vit", "--resolution", "450x300")
    assert "nearest valid: 448x280 or 476x308" in line


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["flops", "--encoder", "qwen2.5-vl-vit", "--resolution", "450"], "multiple of 28 px"),
        (["flops", "--encoder", "siglip2-so400m-p16", "--resolution", "500"], "patch size 16"),
        (["flops", "--resolution", "980x"], "resolution '980x'"),
        (["flops", "--resolution", "abc"], "resolution 'abc'"),
        (["flops", "--encoder", "tiny", "--resolution", "72", "--compressor", "avg-pool", "--depth", "1"], "even token grid"),
        (["flops", "--compressor", "avg-pool", "--depth", "99"], "valid depths are 0..26"),
        (["flops", "--encoder", "nope"], "valid encoders"),
        (["flops", "--compressor", "nope", "--depth", "1"], "valid compressors"),
        (["flops", "--convention", "nope"], "valid conventions"),
        (["flops", "--weights", "/does/not/exist"], "not a directory"),
        (["flops", "--post-ratio", "16"], "divisible by 4"),
        (["flops", "--post-ratio", "3"], "valid: 1, 4, 16"),
        (["flops", "--variant", "v5"], "valid variants"),
        (["flops", "--compressor", "avg-pool"], "needs --depth"),
        (["flops", "--batch", "0"], "at least 1"),
        (["flops", "--counter", "nope"], "nope"),
        (["flops", "--no-such-flag"], "no-such-flag"),
        (["list", "things"], "valid: encoders, compressors, conventions, metrics, recipes"),
    ],
)
def test_bad_input_one_line_exit_2(cli, args, fragment):
    code, out, err = cli(*args)
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert fragment in lines[0]
    assert "Traceback" not in err


def test_console_script_exit_code_and_no_traceback():
    # through a real process, as a user runs it
    proc = subprocess.run(
        [sys.executable, "-m", "uhd_profile.cli", "flops", "--depth", "3", "--compressor", "avg-pool", "--resolution", "15"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
