"""The main job (issue 14): dtype ``auto`` (chosen per device, recorded with its reason, reused on
resume), the default recipe's global-vs-sliced points, the sweep's phase split, counting in
parallel, fast random weights for measured models, and the report's too-few-samples flag."""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch

from uhd_profile.analyse.report.tables import encoding_table, prepare
from uhd_profile.errors import UhdProfileError
from uhd_profile.measure import dtypes as roofline  # choose_dtype lives in measure/dtypes.py now
from uhd_profile.measure.dtypes import DtypeChoice, choose_dtype
from uhd_profile.model.variants import VariantSpec, build_variant, example_input
from uhd_profile.run.recipe import load_recipe
from uhd_profile.run.store import RESULTS_FILE, load, read_header
from uhd_profile.run.sweep import PHASES_FILE, phase_split, run_point, run_sweep

HEADER = """
[recipe]
name = "NAME"
[defaults]
encoders = ["tiny"]
resolutions = [128]
post_ratios = [1]
dtypes = ["auto"]
"""

COUNT_ONLY = (
    HEADER.replace("NAME", "auto-counts")
    + """
[[grid]]
compressors = ["none", "avg-pool", "window-attn-reused-mlp"]
depths = [1]
"""
)

MEASURED = (
    HEADER.replace("NAME", "auto-measured")
    + """
[timing]
warmup_iters = 0
min_samples = 3
min_time_s = 0.0
max_time_s = 2.0
target_iqr = 0.5
[[grid]]
compressors = ["none", "avg-pool"]
depths = [1]
[[grid]]
name = "measured"
compressors = ["none"]
measure = ["flops", "latency"]
"""
)


def _write(tmp_path: Path, text: str, name: str = "r.toml") -> str:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return str(p)


@pytest.fixture
def fixed_choice(monkeypatch):
    """``choose_dtype`` without a calibration: returns what the test sets in ``box[0]``."""
    box = [DtypeChoice("fp32", "auto: fp32 (test)")]
    calls = []

    def fake(device="cpu", threads=None):
        calls.append(device)
        return box[0]

    import uhd_profile.run.recipe as recipe_mod

    monkeypatch.setattr(recipe_mod, "choose_dtype", fake)
    return box, calls


# --------------------------------------------------------------------------------------------
# dtype auto
# --------------------------------------------------------------------------------------------


def test_choose_dtype_on_cpu_compares_both_and_is_cached(monkeypatch):
    rates = {"fp32": 100e9, "bf16": 10e9}
    calls = []

    def fake_peak(dtype, seconds=0.5, n=1024, threads=None):
        calls.append(dtype)
        return roofline.Peak("cpu", dtype, rates[dtype], "test", "measured")

    monkeypatch.setattr(roofline, "cpu_peak", fake_peak)
    monkeypatch.setattr(roofline, "_CHOICES", {})
    c = choose_dtype("cpu", threads=2)
    assert c.dtype == "fp32" and set(calls) == {"fp32", "bf16"}
    assert "100.0 GFLOP/s" in c.reason and "bf16 10.0 GFLOP/s" in c.reason and "2 thread" in c.reason
    n = len(calls)
    assert choose_dtype("cpu", threads=2) is c and len(calls) == n  # once per process
    rates["bf16"] = 400e9  # a CPU with native bf16 (AMX): bf16 wins there
    monkeypatch.setattr(roofline, "_CHOICES", {})
    assert choose_dtype("cpu", threads=2).dtype == "bf16"


def test_choose_dtype_really_calibrates_this_cpu(monkeypatch):
    monkeypatch.setattr(roofline, "_CHOICES", {})
    monkeypatch.setattr(roofline, "AUTO_CALIBRATION_N", 64)
    monkeypatch.setattr(roofline, "AUTO_CALIBRATION_S", 0.01)
    c = choose_dtype("cpu")
    assert c.dtype in ("fp32", "bf16") and c.reason.startswith(f"auto: {c.dtype} on ")


def test_auto_points_hold_the_resolved_dtype_and_their_reason(tmp_path, fixed_choice):
    box, _ = fixed_choice
    auto = load_recipe(_write(tmp_path, COUNT_ONLY), device="cpu")
    fixed = load_recipe(_write(tmp_path, COUNT_ONLY.replace('"auto"', '"fp32"'), "f.toml"), device="cpu")
    assert auto.dtype_choice == box[0]
    assert {p.dtype for p in auto.points} == {"fp32"} and {p.dtype_reason for p in auto.points} == {box[0].reason}
    # the id names what runs: the resolved dtype, not "auto"
    assert [p.point_id for p in auto.points] == [p.point_id for p in fixed.points] and auto.hash == fixed.hash
    assert fixed.dtype_choice is None and {p.dtype_reason for p in fixed.points} == {None}
    rec = run_point(auto.points[0].to_dict(), auto.hash, auto.name)
    assert rec["metrics"]["measured_dtype"] == "fp32" and rec["metrics"]["dtype_reason"] == box[0].reason
    assert rec["point"]["dtype_reason"] == box[0].reason
    # a count-only point with a fixed dtype ran nothing in it: no measured_dtype
    assert "measured_dtype" not in run_point(fixed.points[0].to_dict(), fixed.hash, fixed.name)["metrics"]


def test_a_measured_point_records_its_dtype_and_why(tmp_path, fixed_choice):
    rec = load_recipe(_write(tmp_path, MEASURED), device="cpu")
    measured = [p for p in rec.points if p.measured]
    r = run_point(measured[0].to_dict(), rec.hash, rec.name)
    assert r["status"] == "ok", r["error"]
    m = r["metrics"]
    assert m["measured_dtype"] == "fp32" and m["dtype_reason"] == "auto: fp32 (test)" and m["build_s"] >= 0
    fixed = load_recipe(_write(tmp_path, MEASURED.replace('"auto"', '"fp32"'), "f.toml"), device="cpu")
    p = next(p for p in fixed.points if p.measured)
    assert p.dtype_metrics() == {"measured_dtype": "fp32", "dtype_reason": "the recipe asks for fp32"}


def test_resume_reuses_the_recorded_choice(tmp_path, fixed_choice, cli):
    box, calls = fixed_choice
    recipe, out = _write(tmp_path, COUNT_ONLY), str(tmp_path / "run")
    code, _, err = cli("sweep", recipe, "--out", out, "--only", "*baseline*", "--no-report", "--in-process")
    assert code == 0, err
    assert read_header(out)["dtype_auto"] == {"dtype": "fp32", "reason": "auto: fp32 (test)"}
    box[0] = DtypeChoice("bf16", "auto: bf16 (this machine now prefers it)")
    n = len(calls)
    code, _, err = cli("sweep", recipe, "--out", out, "--resume", "--no-report", "--in-process")
    assert code == 0, err
    assert len(calls) == n  # no new choice: the recorded one
    assert "recorded in the run" in err
    df = load(out)
    assert len(df) == 3 and set(df["dtype"]) == {"fp32"} and set(df["measured_dtype"]) == {"fp32"}
    # without --resume a new run chooses anew
    code, _, err = cli("sweep", recipe, "--out", str(tmp_path / "new"), "--no-report", "--in-process")
    assert code == 0 and set(load(str(tmp_path / "new"))["dtype"]) == {"bf16"}


def test_resume_with_another_choice_through_the_api_is_refused(tmp_path, fixed_choice):
    box, _ = fixed_choice
    path = _write(tmp_path, COUNT_ONLY)
    run_sweep(load_recipe(path, device="cpu"), str(tmp_path / "run"), only="*baseline*", runner=run_point)
    box[0] = DtypeChoice("fp32", "auto: fp32 (measured again, other numbers)")
    with pytest.raises(UhdProfileError, match="dtype auto") as exc:
        run_sweep(load_recipe(path, device="cpu"), str(tmp_path / "run"), resume=True, runner=run_point)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("value", ["fp8", "automatic", 16])
def test_a_bad_dtype_is_one_line_naming_auto(tmp_path, cli, value):
    bad = COUNT_ONLY.replace('dtypes = ["auto"]', f"dtypes = [{json.dumps(value)}]")
    code, out, err = cli("sweep", _write(tmp_path, bad), "--dry-run")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "dtypes" in err and repr(value) in err and "fp32, bf16, fp16" in err and "auto" in err
    assert "Traceback" not in err


def test_a_damaged_recorded_choice_is_one_line():
    with pytest.raises(UhdProfileError, match="not valid"):
        DtypeChoice.from_dict({"dtype": "fp8", "reason": "x"})


def test_the_paper_recipe_measures_in_auto_on_cpu_and_cuda(monkeypatch, fixed_choice):
    cpu = load_recipe("paper", device="cpu")
    measured = [p for p in cpu.points if p.measured]
    assert measured and {p.dtype_reason for p in measured} == {"auto: fp32 (test)"}
    assert all(p.dtype_reason is None and p.dtype == "bf16" for p in cpu.points if not p.measured)


# --------------------------------------------------------------------------------------------
# Global vs sliced in the default recipe
# --------------------------------------------------------------------------------------------


def test_the_default_recipe_holds_global_and_sliced_images(fixed_choice):
    r = load_recipe("paper", device="cpu")
    images = [p for p in r.points if p.spec.encoding in ("global", "sliced")]
    assert {p.spec.encoding for p in images} == {"global", "sliced"}
    assert len({(p.spec.size.width, p.spec.size.height) for p in images}) >= 2
    assert {p.spec.compressor for p in images} == {None, "window-attn-reused-mlp"}
    assert all(not p.measured for p in images)  # counted only: cheap on any machine
    # each aspect ratio at two sizes at least, with and without the LLM
    by_aspect: dict[float, set] = {}
    for p in images:
        by_aspect.setdefault(round(p.spec.size.width / p.spec.size.height, 2), set()).add(p.spec.size)
    assert len(by_aspect) >= 2 and all(len(v) >= 2 for v in by_aspect.values())


@pytest.mark.slow
def test_the_default_recipes_encoding_section_is_filled(tmp_path, fixed_choice):
    """Counts one image size of the default recipe's sliced/global points (through Qwen3-8B on
    meta: tens of seconds on 2 cores) and reads the section's table."""
    r = load_recipe("paper", device="cpu")
    s = run_sweep(r, str(tmp_path / "run"), only="*1344x896*", runner=run_point)
    assert s.failed == 0 and s.total == 4
    t = encoding_table(load(str(tmp_path / "run")))
    assert set(t["encoding"]) == {"global", "sliced"} and len(t) == 4


def test_encoding_table_reads_global_and_sliced_records(tmp_path, fixed_choice):
    """The section's table from count-only global/sliced records (tiny tower, no LLM: fast)."""
    text = (
        COUNT_ONLY.replace("resolutions = [128]", 'resolutions = ["384x256"]')
        .replace('"none", "avg-pool", "window-attn-reused-mlp"', '"none"')
        .replace("[[grid]]", '[[grid]]\nencodings = ["global", "sliced"]')
    )
    rec = load_recipe(_write(tmp_path, text), device="cpu")
    s = run_sweep(rec, str(tmp_path / "run"), runner=run_point, count_workers=1)
    assert s.failed == 0
    t = encoding_table(load(str(tmp_path / "run")))
    assert set(t["encoding"]) == {"global", "sliced"} and t["paper_flops"].notna().all()


# --------------------------------------------------------------------------------------------
# Phases, parallel counting
# --------------------------------------------------------------------------------------------


def test_phase_split_of_measured_points():
    recs = [
        {"point_id": "a", "point": {"device": "cpu"}, "duration_s": 10.0, "metrics": {"build_s": 2.0, "count_s": 1.0}},
        {"point_id": "b", "point": {"device": "meta"}, "duration_s": 5.0, "metrics": {"count_s": 5.0}},
    ]
    ph = phase_split(recs, {"a": 13.0})
    assert ph == {"measure_start_s": 3.0, "measure_build_s": 2.0, "measure_count_s": 1.0, "measure_time_s": 7.0}


def test_a_sweep_records_its_phases(tmp_path, fixed_choice, cli):
    out = tmp_path / "run"
    code, stdout, err = cli("sweep", _write(tmp_path, MEASURED), "--out", str(out), "--no-report", "--in-process")
    assert code == 0, err
    ph = json.loads((out / PHASES_FILE).read_text())
    for key in ("setup_s", "counting_s", "measuring_s", "measure_build_s", "measure_time_s", "wall_s"):
        assert ph[key] >= 0, key
    assert ph["wall_s"] >= ph["counting_s"] + ph["measuring_s"]
    assert "report_s" not in ph  # --no-report
    assert "wall " in stdout and "counting" in stdout and "model builds" in stdout


def test_parallel_counting_records_what_serial_counting_does(tmp_path, fixed_choice):
    rec = load_recipe(_write(tmp_path, COUNT_ONLY), device="cpu")
    par = run_sweep(rec, str(tmp_path / "par"), count_workers=2)
    ser = run_sweep(rec, str(tmp_path / "ser"), count_workers=1)
    assert par.failed == ser.failed == 0 and par.phases["count_workers"] == 2.0
    drop = ("count_s",)  # wall time: differs
    a = {r["point_id"]: {k: v for k, v in r["metrics"].items() if k not in drop} for r in par.records}
    b = {r["point_id"]: {k: v for k, v in r["metrics"].items() if k not in drop} for r in ser.records}
    assert a == b and len(a) == 3
    lines = Path(tmp_path / "par", RESULTS_FILE).read_text().splitlines()
    assert len(lines) == 4  # header + each point once


# --------------------------------------------------------------------------------------------
# Fast random weights, the report's flag
# --------------------------------------------------------------------------------------------


def test_fast_init_builds_a_runnable_model_with_sane_weights():
    spec = VariantSpec(encoder="tiny", resolution=128, compressor="window-attn-reused-mlp", depth=1, post_ratio=4)
    model = build_variant(spec, device="cpu", init="fast")
    for name, p in model.named_parameters():
        assert torch.isfinite(p).all(), name
        if p.dim() >= 2:
            assert 0 < p.abs().max() <= 6 / math.sqrt(p[0].numel()), name
        elif name.endswith("bias"):
            assert (p == 0).all(), name
    ref = build_variant(spec, device="cpu")
    assert [n for n, _ in model.named_buffers()] == [n for n, _ in ref.named_buffers()]
    for (n, a), (_, b) in zip(model.named_buffers(), ref.named_buffers()):
        if not a.is_floating_point():
            assert torch.equal(a, b), n  # index buffers (position ids) are the real ones
    with torch.inference_mode():
        y = model(example_input(spec, 1, "cpu"))
    ys = y if isinstance(y, (list, tuple)) else [y]
    assert all(torch.isfinite(t).all() for t in ys)
    with pytest.raises(UhdProfileError, match="init 'slow' is not valid"):
        build_variant(spec, device="cpu", init="slow")


def test_too_few_samples_is_flagged_in_the_report(monkeypatch):
    from uhd_profile.analyse.report import tables

    row = {
        "status": "ok",
        "compressor": None,
        "noise_flag": "ok",
        "throttled_fraction": None,
        "latency_unmet": "min_samples 3 not reached (1)",
        "latency_n": 1,
        "latency_median_s": 1.0,
        "flops": 1e9,
        "batch": 1,
        "device": "cpu",
        "dtype": "fp32",
        "encoder": "tiny",
    }
    df = pd.DataFrame([row, {**row, "latency_unmet": None, "latency_n": 3}])
    monkeypatch.setattr(tables, "variant_label", lambda r: "x")
    d = prepare(df)
    assert list(d["flagged"]) == [True, False]
    assert "too few samples (1" in d["flag_reason"].iloc[0]


def test_a_pair_slowed_by_the_machine_is_flagged():
    """Two measured points (a CPU run's headline pair): the one whose throughput is more than 3x
    below the other's is a slow outlier (the median of two would hide it)."""
    from uhd_profile.analyse.report.tables import slow_outliers

    base = {"status": "ok", "batch": 1, "device": "cpu", "dtype": "fp32", "encoder": "e"}
    df = pd.DataFrame(
        [
            {**base, "flops": 219e9, "latency_median_s": 2.46},  # 89 GFLOP/s
            {**base, "flops": 112e9, "latency_median_s": 6.58},  # 17 GFLOP/s: the machine got busy
        ]
    )
    s = slow_outliers(df)
    assert s.iloc[1] > 3 and s.iloc[0] < 1
    df.loc[1, "latency_median_s"] = 1.3  # 86 GFLOP/s: consistent
    assert (slow_outliers(df) < 3).all()


def test_measured_points_are_counted_beforehand_with_the_same_numbers(tmp_path, fixed_choice):
    from uhd_profile.count.flops import count_flops
    from uhd_profile.run import sweep as sweep_mod

    rec = load_recipe(_write(tmp_path, MEASURED), device="cpu")
    seen = []
    real = sweep_mod.measure_point

    def spy(point, precounted=None):
        seen.append(precounted is not None)
        return real(point, precounted) if precounted is not None else real(point)

    sweep_mod.measure_point = spy
    try:
        s = run_sweep(rec, str(tmp_path / "run"), runner=run_point, count_workers=2)
    finally:
        sweep_mod.measure_point = real
    assert s.failed == 0
    m = next(r for r in s.records if r["point"]["device"] == "cpu")
    fc = count_flops(next(p for p in rec.points if p.measured).spec)
    assert (m["metrics"]["macs"], m["metrics"]["paper_flops"]) == (fc.get("macs"), fc.get("paper"))
    assert m["metrics"]["predicted_peak_mem_bytes"] > 0
    assert seen[-1] is True  # the measured point came with its counts (the count-only ones ran in the pool)
