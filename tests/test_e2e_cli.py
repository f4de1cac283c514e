"""``uhd-profile e2e`` and ``list llms``: JSON keys and values against closed forms, the table,
one-line errors; the report's "End to end" section from a run's pipeline points."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from uhd_profile.analyse import report as R
from uhd_profile.count.analytic import analytic_cost, connector_cost
from uhd_profile.count.conventions import CONVENTIONS
from uhd_profile.count.llm_formulas import closed_form, textbook
from uhd_profile.count.pipeline import POSITIONS
from uhd_profile.model.llms import LLMS, get_llm
from uhd_profile.model.pipeline import STAGES
from uhd_profile.model.variants import VariantSpec
from uhd_profile.run.recipe import load_recipe
from uhd_profile.run.store import load
from uhd_profile.run.sweep import run_point, run_sweep

QWEN = get_llm("qwen3-8b")


@pytest.fixture(scope="module")
def e2e_json():
    """``e2e --resolution 448 --variant v4|baseline --json`` with the default LLM (qwen3-8b)."""
    from uhd_profile.cli import main

    out = {}
    for variant in ("v4", "baseline"):
        import contextlib
        import io

        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            main(["e2e", "--resolution", "448", "--variant", variant, "--json"])
        out[variant] = json.loads(buf.getvalue())
    return out


@pytest.mark.parametrize("variant", ["v4", "baseline"])
def test_e2e_json_keys_and_values(e2e_json, variant):
    rec = e2e_json[variant]
    spec = VariantSpec.alias(variant, resolution=448)
    assert rec["llm"] == "qwen3-8b" and rec["prompt_tokens"] == 64 and rec["decode_tokens"] == 0 and rec["drop"] is None
    assert rec["variant_id"] == spec.id and rec["pipeline_id"] == spec.id + "/qwen3-8b/p64/d0"
    assert [r["stage"] for r in rec["stages"]] == list(STAGES)
    # every stage in every convention, under the record schema's names
    for s in STAGES:
        for c in CONVENTIONS.values():
            assert isinstance(rec["metrics"][f"{s}_{c.column}"], int)
    # tokens entering each stage: 448 px = 32 x 32 patches; 16x in total -> 64 visual tokens
    after_vit = 256 if variant == "v4" else 1024
    assert rec["tokens"] == {"vision": 1024, "connector": after_vit, "prefill": 128, "decode": 0, "visual": 64}
    assert {r["stage"]: r["tokens_in"] for r in rec["stages"]} == {
        "vision": 1024,
        "connector": after_vit,
        "prefill": 128,
        "decode": 0,
    }
    # values: the ViT and the connector against their closed form, the prefill against the LLM's
    vision = analytic_cost(spec.with_(post_ratio=1))
    conn = connector_cost(1, after_vit, 1152, QWEN.hidden, spec.ratio)
    cf = closed_form(QWEN, 64, 64, 0)
    m = rec["metrics"]
    for c in CONVENTIONS.values():
        assert m[f"vision_{c.column}"] == vision.get(c.name) and m[f"connector_{c.column}"] == conn.get(c.name)
        assert m[f"decode_{c.column}"] == 0 and m[f"decode_{c.column}_per_token"] is None
        assert rec["ttft"][c.column] == m[f"vision_{c.column}"] + m[f"connector_{c.column}"] + m[f"prefill_{c.column}"]
    assert m["prefill_macs"] == cf.prefill and m["prefill_dense_macs"] == cf.prefill_dense
    assert rec["prefill_causal"]["dense"]["macs"] == cf.prefill_dense > rec["prefill_causal"]["executed"]["macs"]
    assert (
        rec["prefill_causal"]["executed"]["paper_flops"] == rec["prefill_causal"]["dense"]["paper_flops"]
    )  # dense by definition
    assert m["prefill_textbook_macs"] == textbook(QWEN, 64, 64).total
    assert m["macs"] == m["vision_macs"] + m["connector_macs"]  # the variant's own count: ViT + its connector
    # KV cache: 36 layers x K and V x 8 heads x 128 x 128 tokens
    elems = 36 * 2 * 8 * 128 * 128
    assert rec["kv_cache_bytes"]["after_prefill"] == {"fp32": elems * 4, "bf16": elems * 2, "fp16": elems * 2}
    assert m["kv_cache_bytes"] == 36 * 2 * 8 * 128 * 128 * 2 and rec["kv_dtype"] == "bf16"
    assert rec["uncounted_ops"] == {} and 0 < rec["vit_share_of_ttft"] < 1


def test_v4_and_baseline_differ_in_the_vit_only(e2e_json):
    b, v = e2e_json["baseline"]["metrics"], e2e_json["v4"]["metrics"]
    assert v["vision_macs"] < b["vision_macs"] and v["connector_macs"] < b["connector_macs"]
    assert v["prefill_macs"] == b["prefill_macs"] and v["kv_cache_bytes"] == b["kv_cache_bytes"]


def test_e2e_table_and_drops(cli):
    code, out, err = cli("e2e", "--encoder", "tiny", "--resolution", "128", "--llm", "tiny-llm", "--decode-tokens", "3")
    assert code == 0, err
    for word in (
        "vision (tiny",
        "connector (pixel-unshuffle MLP",
        "prefill (tiny-llm: 16 visual + 64 prompt)",
        "decode (3 tokens)",
    ):
        assert word in out
    assert "before the first token" in out and "KV cache" in out and "causal attention" in err
    base = json.loads(cli("e2e", "--encoder", "tiny", "--resolution", "128", "--llm", "tiny-llm", "--json")[1])
    zero = json.loads(cli("e2e", "--encoder", "tiny", "--resolution", "128", "--llm", "tiny-llm", "--fastv", "1:0", "--json")[1])
    half = json.loads(
        cli("e2e", "--encoder", "tiny", "--resolution", "128", "--llm", "tiny-llm", "--fastv", "1:0.5", "--json")[1]
    )
    pyr = json.loads(
        cli("e2e", "--encoder", "tiny", "--resolution", "128", "--llm", "tiny-llm", "--pyramid-drop", "0,1:0.5", "--json")[1]
    )
    assert zero["drop"] == "fastv:1:0.0" and zero["stages"] == base["stages"]  # R = 0 == no drop
    assert (
        half["metrics"]["prefill_macs"] < base["metrics"]["prefill_macs"]
        and half["metrics"]["vision_macs"] == base["metrics"]["vision_macs"]
    )
    assert pyr["drop"] == "pyramid-drop:0,1:0.5" and pyr["metrics"]["prefill_macs"] < half["metrics"]["prefill_macs"]


def test_e2e_whole_image_and_positions(cli):
    code, out, err = cli("e2e", "--encoder", "tiny", "--image", "512x384", "--llm", "tiny-llm", "--positions", "--json")
    assert code == 0, err
    rec = json.loads(out)
    assert "/sliced/" in rec["pipeline_id"] and rec["tokens"]["vision"] > 0
    assert {r["position"] for r in rec["positions"]} == set(POSITIONS) and all(r["pipeline_id"] for r in rec["positions"])
    assert rec["positions"][0]["ttft_reduction"]["macs"] == 0
    code, out, err = cli("e2e", "--encoder", "tiny", "--image", "512x384", "--encoding", "global", "--llm", "tiny-llm")
    assert code == 0 and "/global/" in out


@pytest.mark.parametrize(
    "args,match",
    [
        (["--resolution", "980"], "70x70 token grid, which a 16x connector (4x4 merge) cannot divide"),
        (["--resolution", "980", "--variant", "v4"], "35x35 after window-attn-reused-mlp@6"),
        (["--image", "640x480", "--resolution", "448"], "--image and --resolution both given"),
        (["--encoding", "global"], "--encoding applies to a whole image"),
        (["--image", "640x480", "--encoding", "tiles"], "--encoding 'tiles' is not valid; valid: sliced, global"),
        (["--llm", "gpt-5"], "unknown LLM 'gpt-5'; valid LLMs: qwen3-8b"),
        (["--fastv", "2"], "--fastv '2': drop 'fastv:2' is not valid"),
        (["--fastv", "40:0.5"], "drop stage after layer 40 on qwen3-8b: must be 0..34"),
        (["--fastv", "2:0.5", "--pyramid-drop", "7,15:0.5"], "--fastv and --pyramid-drop both given"),
        (["--prompt-tokens", "-1"], "--prompt-tokens -1 is not valid"),
        (["--positions"], "--positions lists the options for a whole image"),
        (["--kv-dtype", "int4"], "--kv-dtype"),
        (["--convention", "tflops"], "unknown convention 'tflops'"),
    ],
)
def test_e2e_bad_input_is_one_line(cli, args, match):
    code, out, err = cli("e2e", *args)
    assert code == 2 and out == "" and err.count("\n") == 1 and err.startswith("error: ") and match in err, err


def test_list_llms(cli):
    code, out, _ = cli("list", "llms")
    assert code == 0
    for name in LLMS:
        assert name in out


# --------------------------------------------------------------------------------------------
# The report section


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    """The smoke recipe's points with an LLM, run in this process (one of them timed)."""
    d = tmp_path_factory.mktemp("e2e") / "run"
    summary = run_sweep(load_recipe("smoke", device="cpu"), str(d), only="*tiny-llm*", runner=run_point)
    assert summary.failed == 0 and summary.total == 5
    return d


def test_report_section_from_the_runs_pipeline_points(pipeline_run):
    written = R.write_report(pipeline_run, recount=False)
    out = pipeline_run / "report"
    md = (out / "report.md").read_text()
    assert "## 7. End to end: what an image costs the whole model" in md and "figures/e2e_stages.png" in md
    assert written["figures/e2e_stages.svg"] and "Source: the run's records" in md
    t = pd.read_csv(out / "tables" / "e2e.csv")
    df = load(pipeline_run)
    assert len(t) == df["variant_id"].nunique() == 4 and set(t["source"]) == {"run"}
    runs = df.drop_duplicates("variant_id").set_index("variant_id")
    for _, r in t.iterrows():
        assert r["prefill_macs"] == runs.loc[r["pipeline_id"], "prefill_macs"]
        assert r["ttft_macs"] == sum(runs.loc[r["pipeline_id"], f"{s}_macs"] for s in ("vision", "connector", "prefill"))
    assert set(t["position"]) == {"reference", "inside the ViT", "inside the LLM", "inside the ViT + inside the LLM"}
    assert t["ttft_s"].notna().sum() == 1  # the timed point's stage times joined its counts
    # the headline: the ViT's share of the compute before the first token, and the design's end-to-end cut
    b = t[t["variant"] == "baseline"].iloc[0]
    v = t[t["variant"] == "window-attn-reused-mlp@1"].iloc[0]
    assert (
        f"the ViT takes {b['vit_share_paper_flops']:.1%}" in md
        and f"cuts that compute by {v['ttft_reduction_paper_flops']:.1%}" in md
    )
    assert "not in this run (recount off" in md


def test_report_section_is_left_out_without_points_or_recount(tmp_path, pipeline_run):
    from uhd_profile.analyse.report.e2e import e2e_blocks

    blocks = e2e_blocks(pd.DataFrame(), [], recount=False)
    assert blocks[0][0] == "h" and "Left out" in blocks[1][1] and len(blocks) == 2


@pytest.fixture(scope="module")
def tiny_llm_checkpoint(tmp_path_factory):
    from uhd_profile.model.llms import get_llm

    d = tmp_path_factory.mktemp("tiny-llm-ckpt")
    torch.manual_seed(0)
    get_llm("tiny-llm").build("cpu").save_pretrained(d)
    return str(d)


def test_llm_weights_run_the_llm_stage_for_real_and_rank_by_real_attention(cli, tiny_llm_checkpoint):
    args = ("e2e", "--encoder", "tiny", "--resolution", "128", "--llm", "tiny-llm", "--fastv", "1:0.5", "--json")
    code, out, err = cli(*args, "--llm-weights", tiny_llm_checkpoint)
    assert code == 0, err
    rec = json.loads(out)
    real = rec["llm_weights"]
    assert real["path"] == tiny_llm_checkpoint and real["prefill_macs_equal"] is True
    (kept,) = real["kept"]
    assert len(kept) == len(set(kept)) == rec["tokens"]["visual"] // 2 and kept == sorted(kept)
    # the same count as without weights (shape only)
    code, plain, err = cli(*args)
    assert code == 0 and "llm_weights" not in json.loads(plain)


def test_llm_weights_mistakes_are_one_line(cli, tmp_path, tiny_llm_checkpoint):
    for extra, match in (
        (("--llm-weights", str(tmp_path / "none")), "none"),
        (("--llm", "llama-2-7b", "--llm-weights", tiny_llm_checkpoint), "geometry"),
    ):
        code, out, err = cli("e2e", "--encoder", "tiny", "--resolution", "128", *extra)
        lines = [x for x in err.strip().splitlines() if x.strip()]
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and match in lines[0], err


def test_e2e_memory_is_the_memory_models_prediction_of_the_pipeline(cli):
    from uhd_profile.count.memory_model import predict_pipeline_memory

    code, out, err = cli(
        "e2e", "--encoder", "tiny", "--resolution", "128", "--llm", "tiny-llm", "--memory", "--dtype", "fp32", "--json"
    )
    assert code == 0, err
    rec = json.loads(out)
    (m,) = rec["memory"]
    spec = VariantSpec(encoder="tiny", resolution=128, post_ratio=16, llm_hidden=get_llm("tiny-llm").hidden)
    want = predict_pipeline_memory(spec, "tiny-llm", 64, 0, "fp32", "sdpa", "cuda", rec["tokens"]["visual"])
    assert m["peak_bytes"] == want.peak_bytes > 0 and m["llm"] == "tiny-llm"
    code, out, err = cli("e2e", "--encoder", "tiny", "--resolution", "128", "--dtype", "fp32")
    assert code == 2 and "add --memory" in err
