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
    for key in ("encoder", "variant_id", "tokens_in", "convention", "total", "gflops", "by_module", "uncounted_ops"):
        assert key in rec
    assert rec["convention"] == "macs" and rec["tokens_in"] == 64 and rec["tokens_llm"] == 4
    assert rec["total"] == sum(rec["by_module"].values())
    assert rec["gflops"] == rec["total"] / 1e9


def test_flops_default_is_paper_geometry_vit_alone(cli):
    code, out, err = cli("flops", "--json")
    rec = json.loads(out)
    assert code == 0 and rec["post_ratio"] == 1 and rec["total"] == 3_511_178_496_000


def test_flops_conventions_and_wxh(cli):
    _, out, _ = cli("flops", "--resolution", "1344x756", "--convention", "paper", "--json")
    rec = json.loads(out)
    assert rec["resolution"] == [756, 1344] and rec["convention"] == "paper"
    assert rec["total"] == rec["counts"]["paper"]


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


@pytest.mark.parametrize("args,fragment", [
    (["flops", "--resolution", "981"], "patch size 14"),
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
    (["list", "things"], "valid: encoders, compressors"),
])
def test_bad_input_one_line_exit_2(cli, args, fragment):
    code, out, err = cli(*args)
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert fragment in lines[0]
    assert "Traceback" not in err


def test_console_script_exit_code_and_no_traceback():
    # through a real process, as a user runs it
    proc = subprocess.run([sys.executable, "-m", "uhd_profile.cli", "flops", "--depth", "3", "--compressor", "avg-pool", "--resolution", "15"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
