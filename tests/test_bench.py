"""uhd-profile bench: the record, device resolution, trace files, and the error cases."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from uhd_profile.errors import UhdProfileError
from uhd_profile.measure.bench import BenchSettings, bench
from uhd_profile.measure.devices import resolve_device
from uhd_profile.measure.timing import TimingSettings
from uhd_profile.model.variants import VariantSpec

FAST = TimingSettings(warmup_iters=1, warmup_time_s=0.0, min_samples=3, min_time_s=0.05, max_time_s=0.5)
TINY = VariantSpec(encoder="tiny", compressor="window-attn-reused-mlp", depth=1, post_ratio=4)


@pytest.fixture(scope="module")
def record():
    return bench(TINY, BenchSettings(device="cpu", timing=FAST, threads=1))


def test_record_fields_and_units(record):
    from uhd_profile.measure.schema import METRICS

    d = record.to_json()
    for key in ("variant_id", "spec", "device", "settings", "metrics", "env", "telemetry", "peak", "notes"):
        assert key in d
    m = d["metrics"]
    assert set(m) <= set(METRICS)  # every metric under its one schema name
    assert m["latency_n"] == len(m["latency_samples_s"]) >= 3
    assert m["latency_p10_s"] <= m["latency_median_s"] <= m["latency_p90_s"]
    assert d["device"] == "cpu" and d["settings"]["threads"] == 1 and m["threads"] == 1
    assert m["macs"] > 0 and m["flops"] > 2 * m["macs"] - 1 and m["paper_flops"] > 0
    # achieved = flops convention / median latency
    assert m["achieved_flops_per_s"] == pytest.approx(m["flops"] / m["latency_median_s"])
    assert d["peak"]["kind"] == "measured" and m["mfu"] > 0 and m["peak_flops_per_s"] == d["peak"]["flops_per_s"]
    assert d["telemetry"]["available"] is False and m["telemetry_reason"]
    assert m["weights_bytes"] > 0 and m["peak_mem_bytes"] > 0 and m["memory_method"] == "clear_refs+VmHWM"
    assert d["env"]["torch"] == torch.__version__
    json.dumps(d, allow_nan=False)  # strict JSON-ready


def test_auto_falls_back_and_says_so():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: auto picks it")
    assert resolve_device("auto") == torch.device("cpu")
    rec = bench(TINY, BenchSettings(device="auto", timing=FAST, memory=False))
    assert rec.device == "cpu" and rec.settings.device == "auto"
    assert any("no GPU" in n for n in rec.notes)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:3"])
def test_gpu_requested_but_absent_is_exit_2(cli, device):
    code, out, err = cli("bench", "--encoder", "tiny", "--device", device)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "devices found: cpu" in lines[0] and "Traceback" not in err


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["--batch", "0"], "batch 0"),
        (["--dtype", "fp64"], "valid: fp32, bf16, fp16"),
        (["--min-time", "-1"], "--min-time -1.0"),
        (["--max-time", "nan"], "--max-time nan"),
        (["--target-iqr", "0"], "--target-iqr 0.0"),
        (["--threads", "0"], "threads 0"),
        (["--attn", "flash"], "valid: sdpa, eager"),
        (["--device", "tpu"], "valid: auto, cpu, cuda"),
        (["--cuda-graphs", "--device", "cpu"], "needs a CUDA device"),
        (["--l2-flush", "--device", "cpu"], "--l2-flush needs a CUDA device"),
    ],
)
def test_nonsense_settings_rejected(cli, args, fragment):
    code, out, err = (
        cli("bench", "--encoder", "tiny", "--max-time", "1", *args)
        if "--max-time" not in args
        else cli("bench", "--encoder", "tiny", *args)
    )
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], lines


def test_bench_json_cli(cli):
    code, out, _ = cli(
        "bench", "--encoder", "tiny", "--device", "cpu", "--min-time", "0.05", "--max-time", "0.5", "--min-samples", "3", "--json"
    )
    assert code == 0
    rec = json.loads(out)
    assert rec["variant_id"] == "tiny@64x64/baseline/post16" and rec["metrics"]["latency_n"] >= 3


def test_trace_written_and_breakdown(tmp_path, cli):
    code, out, _ = cli(
        "bench",
        "--encoder",
        "tiny",
        "--variant",
        "v4",
        "--depth",
        "1",
        "--device",
        "cpu",
        "--min-time",
        "0.05",
        "--max-time",
        "0.5",
        "--trace",
        str(tmp_path),
        "--json",
    )
    assert code == 0
    rec = json.loads(out)
    trace = json.loads(Path(rec["trace_path"]).read_text())
    assert "traceEvents" in trace and trace["traceEvents"]  # what TensorBoard's plugin and chrome://tracing read
    names = {e.get("name") for e in trace["traceEvents"]}
    assert {"uhd::attention", "uhd::mlp", "uhd::compressor", "uhd::connector"} <= names
    assert set(rec["module_time_s"]) >= {"attention", "mlp", "compressor", "connector", "embed"}
    assert all(v > 0 for v in rec["module_time_s"].values())


def test_table_output_names_noise_and_device(cli):
    code, out, err = cli("bench", "--encoder", "tiny", "--device", "cpu", "--min-time", "0.05", "--max-time", "0.5")
    assert code == 0 and "latency median" in out and "IQR / median" in out and "on cpu" in out


def test_bad_settings_in_api():
    with pytest.raises(UhdProfileError, match="batch"):
        BenchSettings(batch=0)
    with pytest.raises(UhdProfileError, match="dtype"):
        BenchSettings(dtype="int8")


@pytest.mark.gpu
def test_bench_on_cuda_has_memory_and_telemetry_fields():
    rec = bench(TINY, BenchSettings(device="cuda", timing=FAST, dtype="fp16"))
    assert rec.device.startswith("cuda")
    assert rec.metrics["memory_method"] == "cuda_allocator" and rec.metrics["peak_mem_bytes"] > 0
    assert rec.telemetry.available in (True, False)


def test_compile_is_recorded_and_compilation_stays_out_of_the_samples():
    # torch.compile on CPU needs the system C++ compiler (present on these machines); ~30 s
    rec = bench(TINY, BenchSettings(device="cpu", timing=FAST, compile=True, memory=False))
    assert rec.settings.compile is True and rec.to_json()["settings"]["compile"] is True
    # compilation happens in the untimed first call, not in the samples
    assert rec.metrics["first_call_s"] > 10 * rec.metrics["latency_median_s"]
