"""benchmarks/gpu_check.sh and its Python half: what can be checked without a GPU.

The script itself on this CPU machine (exit 2, one line), the known-answer matmul's verdicts
(pure, with a fake clock, and a real CPU run), the summary writer and its failure lines on
prepared output folders. The numbers in the prepared folders are synthetic test inputs for the
judging logic, not measurements. One test is GPU-marked: the known-answer check on a real GPU.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from uhd_profile.measure.roofline import Peak
from uhd_profile.measure.timing import TimingSettings

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


def _load_helper():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = mod  # dataclasses look their module up by name
    spec.loader.exec_module(mod)
    return mod


gc = _load_helper()
H100 = "NVIDIA H100 80GB HBM3"
H100_BF16 = 989.5e12


# ---------------------------------------------------------------------------------------------
# The script on a machine without CUDA


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_script_without_cuda_exits_2_with_one_line(tmp_path):
    out = tmp_path / "gpu-out"
    env = dict(os.environ, PYTHON=sys.executable)
    p = subprocess.run(["bash", str(SCRIPT), str(out)], capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu-check: no CUDA device on this machine"), p.stderr
    assert p.stdout == "" and not out.exists()  # nothing written
    # the default folder name is only made once CUDA is there
    p = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert p.returncode == 2 and not list(tmp_path.glob("gpu-check-*"))


# ---------------------------------------------------------------------------------------------
# The known-answer matmul


def _verdicts(checks):
    return {c.name: c.ok for c in checks}


def test_judge_matmul_band():
    n = 8192
    flops = 2 * n**3
    at = lambda frac: flops / (frac * H100_BF16)  # noqa: E731 - the median that gives this fraction of the peak
    ok = gc.judge_matmul(flops, flops, at(0.70), H100_BF16, at(0.70) * 1.01, H100, "bf16")
    assert _verdicts(ok) == {"matmul-count": True, "matmul-peak": True, "matmul-timer": True}
    assert "70.0% of the 989.5 TFLOP/s dense bf16 peak" in ok[1].detail
    slow = gc.judge_matmul(flops, flops, at(0.07), H100_BF16, None, H100, "bf16")  # fp32 CUDA-core speed
    assert _verdicts(slow) == {"matmul-count": True, "matmul-peak": False}
    assert "too slow: not on tensor cores" in slow[1].line()
    fast = gc.judge_matmul(flops, flops, at(1.3), H100_BF16, None, H100, "bf16")
    assert not fast[1].ok and "impossible for a dense GEMM" in fast[1].detail
    edge = [gc.judge_matmul(flops, flops, at(f), H100_BF16, None, H100, "bf16")[1].ok for f in (0.299, 0.30, 1.05, 1.051)]
    assert edge == [False, True, True, False]


def test_judge_matmul_count_peak_and_timer_failures():
    flops = 2 * 1024**3
    wrong = gc.judge_matmul(flops, flops // 2, 1e-3, 1e12, None, "x", "bf16")
    assert not wrong[0].ok and wrong[0].line().startswith("FAIL matmul-count: uhd-profile counts 1,073,741,824")
    nopeak = gc.judge_matmul(flops, flops, 1e-3, None, None, "NVIDIA H100 NVL", "bf16")
    assert not nopeak[1].ok and "no dense datasheet peak for 'NVIDIA H100 NVL'" in nopeak[1].detail
    timer = gc.judge_matmul(flops, flops, 1e-3, 4e12, 2e-3, "x", "bf16")  # host clock twice the probe
    assert _verdicts(timer)["matmul-timer"] is False and "ratio 2.000" in timer[2].detail


class FakeClock:
    """A host clock that only moves when the matmul runs: ``dt_ns`` per call."""

    def __init__(self, dt_ns: int):
        self.t, self.dt = 0, dt_ns

    def __call__(self) -> int:
        return self.t

    def wrap(self, fn):
        def run():
            fn()
            self.t += self.dt

        return run


FAST = TimingSettings(warmup_iters=1, warmup_time_s=0.0, min_samples=5, min_time_s=0.0, max_time_s=1.0, target_iqr=float("inf"))


@pytest.mark.parametrize("frac,ok", [(0.5, True), (2.0, False), (0.1, False)])
def test_measure_matmul_with_a_fake_clock(frac, ok):
    n = 64
    flops = 2 * n**3
    dt_ns = 1_000_000  # 1 ms per matmul, exactly
    peak = Peak("fake GPU", "fp32", flops / 1e-3 / frac, "test peak", "datasheet")
    clock = FakeClock(dt_ns)
    res = gc.measure_matmul(
        n=n, dtype="fp32", device="cpu", settings=FAST, clock_ns=clock, fn_wrapper=clock.wrap, peak=peak, check_timer=True
    )
    assert res.counted_flops == res.expected_flops == flops
    assert res.median_s == pytest.approx(1e-3) and res.achieved_flops_per_s == pytest.approx(flops / 1e-3)
    assert res.wall_per_iter_s == pytest.approx(1e-3)
    assert _verdicts(res.checks) == {"matmul-count": True, "matmul-peak": ok, "matmul-timer": True}
    json.dumps(res.as_dict())


def test_measure_matmul_really_runs_on_cpu():
    res = gc.measure_matmul(
        n=256, dtype="fp32", device="cpu", settings=FAST, peak=Peak("cpu", "fp32", 1e12, "test peak", "measured")
    )
    assert res.device == "cpu" and res.samples >= 5 and res.median_s > 0
    assert res.counted_flops == 2 * 256**3 and res.wall_per_iter_s is None  # the CPU probe is the host clock
    assert res.achieved_flops_per_s == pytest.approx(2 * 256**3 / res.median_s)
    assert [c.name for c in res.checks] == ["matmul-count", "matmul-peak"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_known_answer_matmul_on_cuda():
    res = gc.measure_matmul(n=8192, dtype="bf16", device="cuda")
    assert res.device.startswith("cuda") and res.wall_per_iter_s is not None
    assert all(c.ok for c in res.checks), gc.failure_lines(res.checks)


# ---------------------------------------------------------------------------------------------
# Summary and failure lines on prepared output folders (synthetic artefacts)


def _steps(out: Path, rows):
    (out / "steps.tsv").write_text("".join("\t".join(map(str, r)) + "\n" for r in rows))


def _junit(out: Path, tests: int, skipped: int, failures: int = 0):
    (out / "gpu-tests.xml").write_text(
        f'<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="0" failures="{failures}" '
        f'skipped="{skipped}" tests="{tests}" time="3.1"></testsuite></testsuites>'
    )


def _matmul(out: Path, frac: float):
    n, flops = 8192, 2 * 8192**3
    median = flops / (frac * H100_BF16)
    checks = gc.judge_matmul(flops, flops, median, H100_BF16, median, H100, "bf16")
    (out / "matmul.json").write_text(json.dumps({"checks": [c.__dict__ for c in checks], "n": n}))


def _sweep(out: Path, monkeypatch, ok: bool = True):
    """A run directory holding every point of the paper recipe on CUDA; synthetic metrics."""
    import uhd_profile.run.recipe as recipe_mod
    from uhd_profile.run.store import ResultStore, make_record

    monkeypatch.setattr(recipe_mod, "_device_kind", lambda device: "cuda")
    rec = recipe_mod.load_recipe("paper", device="cuda")
    store = ResultStore(out / "sweep", rec.hash, rec.name, recipe_text=rec.text)
    for i, p in enumerate(rec.points):
        d = p.to_dict()
        m = {"macs": 1, "flops": 2, "paper_flops": 1}
        if p.measured:
            m.update(latency_median_s=0.01, peak_mem_bytes=2**30, energy_per_image_j=None if (not ok and i % 2) else 3.0)
        store.append(make_record(d, "ok", m, None, {}, rec.hash, rec.name, "2026-11-30T00:00:00Z", 1.0))
    (out / "sweep" / "report").mkdir()
    (out / "sweep" / "report" / "report.md").write_text("# report\n")
    return len(rec.points)


def _bench(out: Path, device="cuda:0", ranges=gc.TRACE_RANGES, kernels=5):
    trace = out / "trace" / "w.pt.trace.json"
    trace.parent.mkdir()
    events = [{"ph": "X", "cat": "user_annotation", "name": r, "ts": 1, "dur": 2} for r in ranges]
    events += [{"ph": "X", "cat": "kernel", "name": "sm90_xmma_gemm", "ts": 1, "dur": 1}] * kernels
    trace.write_text(json.dumps({"traceEvents": events}))
    (out / "bench.json").write_text(
        json.dumps(
            {
                "variant_id": "siglip2-so400m-p14@980x980/window-attn-reused-mlp@6/post4",
                "device": device,
                "metrics": {"mfu": 0.41, "latency_median_s": 0.012},
                "module_time_s": {"attention": 0.004},
                "trace_path": str(trace),
            }
        )
    )


GOOD_STEPS = [
    ("gpu-tests", 0, 41, 60, "python -m pytest -q -m gpu"),
    ("matmul", 0, 17, 45, "python gpu_check.py matmul"),
    ("sweep", 0, 233, 270, "python -m uhd_profile.cli sweep paper --device cuda"),
    ("trace", 0, 38, 75, "python -m uhd_profile.cli bench --variant v4"),
]


def test_summary_all_pass(tmp_path, monkeypatch, capsys):
    out = tmp_path
    _steps(out, GOOD_STEPS)
    _junit(out, tests=6, skipped=0)
    _matmul(out, 0.72)
    n = _sweep(out, monkeypatch)
    _bench(out)
    (out / "device.json").write_text(json.dumps({"name": H100, "torch": "2.x", "cuda": "12.8", "bf16_peak_tflops": 989.5}))
    assert gc.main(["summary", str(out)]) == 0
    cap = capsys.readouterr()
    assert cap.err == "" and cap.out.startswith("gpu-check: 14 of 14 checks passed")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["failed"] == 0 and summary["total"] == 14 and len(summary["steps"]) == 4
    names = [c["name"] for c in summary["checks"]]
    assert names == [
        "gpu-tests-ran",
        "gpu-tests-results",
        "matmul-ran",
        "matmul-count",
        "matmul-peak",
        "matmul-timer",
        "sweep-ran",
        "sweep-complete",
        "sweep-measured",
        "sweep-report",
        "trace-ran",
        "trace-record",
        "trace-file",
        "total-time",
    ]
    assert f"{n} of {n} points recorded" in summary["checks"][7]["detail"]
    md = (out / "summary.md").read_text()
    assert md.startswith("# GPU check: 14 of 14 checks passed") and "| sweep | 0 | 233 | 270 |" in md and H100 in md


def test_summary_failure_lines(tmp_path, monkeypatch, capsys):
    out = tmp_path
    _steps(
        out,
        [
            ("gpu-tests", 0, 20, 60, "python -m pytest -q -m gpu"),
            ("matmul", 1, 17, 45, "python gpu_check.py matmul"),
            ("sweep", 124, 270, 270, "python -m uhd_profile.cli sweep paper --device cuda"),
            ("trace", 0, 250, 75, "python -m uhd_profile.cli bench --variant v4"),
        ],
    )
    _junit(out, tests=6, skipped=6)  # every GPU test skipped
    _matmul(out, 0.10)  # far under the band
    _sweep(out, monkeypatch, ok=False)  # half the measured points without energy
    _bench(out, device="cpu", ranges=("uhd::attention",), kernels=0)
    assert gc.main(["summary", str(out)]) == 1
    cap = capsys.readouterr()
    lines = cap.err.strip().splitlines()
    failed = [ln.split(":")[0] for ln in lines]
    assert failed == [
        "FAIL gpu-tests-results",
        "FAIL matmul-peak",
        "FAIL sweep-ran",
        "FAIL sweep-measured",
        "FAIL trace-record",
        "FAIL trace-file",
        "FAIL total-time",
    ]
    text = "\n".join(lines)
    assert "6 skipped" in text and "all skipped: pytest saw no CUDA device" in text
    assert "10.0% of the 989.5 TFLOP/s" in text and "timed out after its 270 s budget" in text
    assert "energy_per_image_j" in text and "ran on 'cpu', not CUDA" in text
    assert "0 GPU kernel events; missing ranges uhd::mlp, uhd::compressor" in text
    assert "all steps took 557 s, target 480 s" in text
    assert cap.out.startswith("gpu-check: 7 of 14 checks passed")
    assert json.loads((out / "summary.json").read_text())["failed"] == 7


def test_summary_of_an_empty_folder_fails_every_step(tmp_path, capsys):
    assert gc.main(["summary", str(tmp_path)]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert all(ln.startswith("FAIL ") and "\n" not in ln for ln in lines)
    assert {"FAIL gpu-tests-ran", "FAIL matmul-ran", "FAIL sweep-ran", "FAIL trace-ran"} <= {ln.split(":")[0] for ln in lines}
    assert (tmp_path / "summary.md").is_file()
