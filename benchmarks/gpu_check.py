"""The Python half of benchmarks/gpu_check.sh: the first-GPU-session check.

    python benchmarks/gpu_check.py preflight OUT        # exit 2 and one line when there is no CUDA device
    python benchmarks/gpu_check.py matmul OUT [--n 8192] [--dtype bf16]
    python benchmarks/gpu_check.py summary OUT          # judge every step, write OUT/summary.{json,md}

`gpu_check.sh` runs the steps (GPU tests, the known-answer matmul, the paper sweep, a profiler
trace), each under a time budget, appending one line per step to ``OUT/steps.tsv``
(name, exit code, seconds, budget, command); ``summary`` then judges the files the steps left
and prints one line per failed check (``FAIL <check>: <why>``), exit 1 if any failed.

**Known-answer timing check.** An n x n @ n x n matmul has exactly 2 n^3 FLOPs (2 per
multiply-accumulate, the unit of datasheet peaks); the check counts it with uhd-profile's own
counter (which must say 2 n^3), times it with the project's probe
(`uhd_profile.measure.timing.time_forward`, CUDA events) and compares the achieved FLOP/s with the
device's dense datasheet peak (`uhd_profile.measure.roofline.gpu_peak`). Pass band: 30-105 % of
the peak (`PEAK_BAND`). Why: a large bf16 GEMM from cuBLAS typically sustains 60-80 % of the dense
datasheet peak on H100/H200 (the peak assumes the boost clock, which the power cap does not hold
under a dense GEMM) and 80-90 % on A100, so a working set-up lands well inside. Under 30 % means
something structural: the matmul is not on tensor cores (CUDA-core fp32 is 7 % of H100's bf16
peak), the GPU is shared or throttled, the name matched the wrong board or a MIG slice, or the
timer over-reports. Over 105 % cannot happen on a dense GEMM: it means the timer under-reports
(events not around the kernel), the FLOPs are over-counted, or the table's peak is too low (a PCIe
figure for an SXM board); the 5 % above 100 allows for boards that boost past the datasheet clock.
A second check needs no datasheet: the per-iteration CUDA-event median must agree with the host
clock over back-to-back iterations between two synchronisations (`TIMER_BAND`, 0.9-1.2: the GPU
stays busy, so only launch gaps, well under 1 % of a millisecond kernel, separate them).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

PEAK_BAND = (0.30, 1.05)
"""Achieved / dense datasheet peak a large bf16 GEMM must land in (see the module docstring)."""
TIMER_BAND = (0.90, 1.20)
"""Host-clock time per back-to-back iteration / CUDA-event median must land in this."""
TOTAL_BUDGET_S = 8 * 60
"""The whole session (all steps) must fit in this on one H100/H200-class GPU (seconds)."""
STEPS_FILE = "steps.tsv"
TRACE_RANGES = ("uhd::attention", "uhd::mlp", "uhd::compressor")


# ---------------------------------------------------------------------------------------------
# Checks and their lines


@dataclass
class Check:
    """One judged check: ``ok`` and a one-line ``detail`` (why it failed, or what passed)."""

    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"FAIL {self.name}: {self.detail}"


def failure_lines(checks: list[Check]) -> list[str]:
    """One line per failed check, in order."""
    return [c.line() for c in checks if not c.ok]


# ---------------------------------------------------------------------------------------------
# Known-answer matmul


@dataclass
class MatmulResult:
    """The known-answer matmul measurement. Times in seconds, FLOPs and FLOP/s in the 2-per-MAC unit."""

    device: str
    device_name: str
    dtype: str
    n: int
    expected_flops: int  # 2 n^3
    counted_flops: int  # uhd-profile's count of the same matmul (flops convention)
    median_s: float
    iqr_over_median: float
    samples: int
    achieved_flops_per_s: float
    peak_flops_per_s: float | None
    peak_source: str | None
    wall_per_iter_s: float | None  # host clock over back-to-back iterations (None: not measured)
    checks: list[Check] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def judge_matmul(
    expected_flops: int,
    counted_flops: int,
    median_s: float,
    peak_flops_per_s: float | None,
    wall_per_iter_s: float | None,
    device_name: str,
    dtype: str,
    peak_band: tuple[float, float] = PEAK_BAND,
    timer_band: tuple[float, float] = TIMER_BAND,
) -> list[Check]:
    """The known-answer verdicts (pure): the counter, achieved vs peak, timer vs host clock."""
    checks = [
        Check(
            "matmul-count",
            counted_flops == expected_flops,
            f"uhd-profile counts {counted_flops:,} FLOPs for the matmul, the known answer is {expected_flops:,}",
        )
    ]
    achieved = expected_flops / median_s if median_s > 0 else math.inf
    lo, hi = peak_band
    if peak_flops_per_s is None:
        checks.append(
            Check(
                "matmul-peak",
                False,
                f"no dense datasheet peak for {device_name!r} in {dtype} "
                "(uhd_profile.measure.roofline.GPU_PEAKS): achieved "
                f"{achieved / 1e12:.1f} TFLOP/s cannot be judged",
            )
        )
    else:
        frac = achieved / peak_flops_per_s
        ok = lo <= frac <= hi
        why = (
            ""
            if ok
            else (
                " (too slow: not on tensor cores, shared or throttled GPU, wrong board, or the timer over-reports)"
                if frac < lo
                else " (impossible for a dense GEMM: the timer under-reports, "
                "the FLOPs are over-counted, or the peak entry is too low)"
            )
        )
        checks.append(
            Check(
                "matmul-peak",
                ok,
                f"achieved {achieved / 1e12:.1f} TFLOP/s = {frac:.1%} of the "
                f"{peak_flops_per_s / 1e12:.1f} TFLOP/s dense {dtype} peak of "
                f"{device_name}, pass band {lo:.0%}-{hi:.0%}{why}",
            )
        )
    if wall_per_iter_s is not None:
        ratio = wall_per_iter_s / median_s if median_s > 0 else math.inf
        ok = timer_band[0] <= ratio <= timer_band[1]
        checks.append(
            Check(
                "matmul-timer",
                ok,
                f"host clock {wall_per_iter_s * 1e3:.3f} ms per back-to-back iteration vs "
                f"probe median {median_s * 1e3:.3f} ms: ratio {ratio:.3f}, pass band "
                f"{timer_band[0]:g}-{timer_band[1]:g}",
            )
        )
    return checks


def measure_matmul(
    n: int = 8192,
    dtype: str = "bf16",
    device: str = "cuda",
    settings=None,
    clock_ns: Callable[[], int] | None = None,
    sync: Callable[[], None] | None = None,
    peak=None,
    wall_iters: int = 20,
    check_timer: bool | None = None,
    fn_wrapper: Callable[[Callable[[], object]], Callable[[], object]] | None = None,
) -> MatmulResult:
    """Time an (n x n) @ (n x n) matmul in ``dtype`` on ``device`` with the project's probe and
    judge it (`judge_matmul`). ``peak``: a `roofline.Peak` (default: the GPU's datasheet peak; on a
    CPU, pass one). ``clock_ns``/``sync``/``fn_wrapper`` let tests drive the probe with a fake
    clock. ``check_timer``: compare with the host clock over ``wall_iters`` back-to-back
    iterations (default: on CUDA only; on a CPU the probe already uses the host clock).
    """
    import torch
    from torch import nn

    from uhd_profile.count.flops import count_module
    from uhd_profile.measure.devices import resolve_device
    from uhd_profile.measure.roofline import gpu_peak
    from uhd_profile.measure.timing import TimingSettings, time_forward

    tdtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
    dev = resolve_device(device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    if peak is None and dev.type == "cuda":
        peak = gpu_peak(name, dtype)
    settings = settings or TimingSettings(
        warmup_iters=3, warmup_time_s=0.5, min_samples=20, min_time_s=1.0, max_time_s=10.0, target_iqr=0.05
    )

    class MatMul(nn.Module):
        def forward(self, a, b):
            return torch.matmul(a, b)

    meta = torch.empty(n, n, dtype=tdtype, device="meta")
    counted = count_module(MatMul(), meta, meta).get("flops")

    gen = torch.Generator(device=dev).manual_seed(0)
    a = torch.randn(n, n, generator=gen, device=dev, dtype=torch.float32).to(tdtype)
    b = torch.randn(n, n, generator=gen, device=dev, dtype=torch.float32).to(tdtype)
    out = torch.empty(n, n, dtype=tdtype, device=dev)

    def fn():
        return torch.matmul(a, b, out=out)

    run = fn_wrapper(fn) if fn_wrapper else fn
    stats = time_forward(run, dev, settings, clock_ns=clock_ns, sync=sync)

    wall = None
    if check_timer if check_timer is not None else dev.type == "cuda":
        clock = clock_ns or time.perf_counter_ns
        wait = sync or ((lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None))
        wait()
        t0 = clock()
        for _ in range(wall_iters):
            run()
        wait()
        wall = (clock() - t0) / 1e9 / wall_iters

    expected = 2 * n**3
    res = MatmulResult(
        device=str(dev),
        device_name=name,
        dtype=dtype,
        n=n,
        expected_flops=expected,
        counted_flops=int(counted),
        median_s=stats.latency_median_s,
        iqr_over_median=stats.latency_iqr_over_median,
        samples=stats.latency_n,
        achieved_flops_per_s=expected / stats.latency_median_s if stats.latency_median_s > 0 else math.inf,
        peak_flops_per_s=None if peak is None else peak.flops_per_s,
        peak_source=None if peak is None else peak.source,
        wall_per_iter_s=wall,
    )
    res.checks = judge_matmul(expected, int(counted), stats.latency_median_s, res.peak_flops_per_s, wall, name, dtype)
    return res


# ---------------------------------------------------------------------------------------------
# Steps and their artefacts


@dataclass
class Step:
    """One line of ``steps.tsv``: a step gpu_check.sh ran."""

    name: str
    rc: int
    seconds: float
    budget_s: float
    command: str


def read_steps(out: Path) -> dict[str, Step]:
    """The steps recorded in ``out/steps.tsv`` (name -> last record of that name)."""
    path = out / STEPS_FILE
    steps: dict[str, Step] = {}
    if not path.is_file():
        return steps
    with path.open(newline="") as fh:
        for row in csv.reader(fh, delimiter="\t"):
            if len(row) < 5:
                continue
            try:
                steps[row[0]] = Step(row[0], int(row[1]), float(row[2]), float(row[3]), row[4])
            except ValueError:
                continue
    return steps


def _step_check(steps: dict[str, Step], name: str, ok_codes: tuple[int, ...] = (0,)) -> Check:
    s = steps.get(name)
    if s is None:
        return Check(f"{name}-ran", False, "the step did not run (no line in steps.tsv)")
    if s.rc == 124 or s.rc == 137:
        return Check(f"{name}-ran", False, f"timed out after its {s.budget_s:g} s budget: `{s.command}`")
    if s.rc not in ok_codes:
        return Check(f"{name}-ran", False, f"exit code {s.rc} after {s.seconds:g} s: `{s.command}` (see its log)")
    return Check(f"{name}-ran", True, f"exit {s.rc} in {s.seconds:g} s (budget {s.budget_s:g} s)")


def check_pytest(out: Path, steps: dict[str, Step]) -> list[Check]:
    """The GPU-marked tests: the step's exit code and the JUnit XML (something ran, nothing failed)."""
    checks = [_step_check(steps, "gpu-tests")]
    xml = out / "gpu-tests.xml"
    if not xml.is_file():
        return checks + [Check("gpu-tests-results", False, f"no {xml.name}: pytest wrote no results")]
    try:
        root = ET.parse(xml).getroot()
    except ET.ParseError as exc:
        return checks + [Check("gpu-tests-results", False, f"{xml.name} is not valid XML ({exc})")]
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    tot = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    ran = tot["tests"] - tot["skipped"]
    ok = tot["failures"] == 0 and tot["errors"] == 0 and ran > 0
    detail = f"{tot['tests']} GPU tests: {ran} ran, {tot['skipped']} skipped, {tot['failures']} failed, {tot['errors']} errors"
    if ran == 0:
        detail += " (all skipped: pytest saw no CUDA device)"
    return checks + [Check("gpu-tests-results", ok, detail)]


def check_matmul(out: Path, steps: dict[str, Step]) -> list[Check]:
    """The known-answer matmul's own verdicts, from ``matmul.json``."""
    checks = [_step_check(steps, "matmul", ok_codes=(0, 1))]  # 1: a verdict failed; judged below
    path = out / "matmul.json"
    if not path.is_file():
        return checks + [Check("matmul-result", False, "no matmul.json (see matmul.err)")]
    try:
        data = json.loads(path.read_text())
        return checks + [Check(**c) for c in data["checks"]]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        return checks + [Check("matmul-result", False, f"matmul.json is unreadable ({exc})")]


def check_sweep(out: Path, steps: dict[str, Step]) -> list[Check]:
    """The paper recipe on CUDA: every point recorded and ok, every measured point with latency,
    memory and energy, and the report written."""
    checks = [_step_check(steps, "sweep", ok_codes=(0, 1))]  # 1: some point failed; named below
    run_dir = out / "sweep"
    import uhd_profile
    from uhd_profile.errors import UhdProfileError
    from uhd_profile.run.recipe import load_recipe

    try:
        df = uhd_profile.load(run_dir)
        want = [p.to_dict() for p in load_recipe("paper", device="cuda").points]
    except (UhdProfileError, OSError) as exc:
        return checks + [Check("sweep-results", False, f"{run_dir}: {exc}")]
    got = set(df["point_id"])
    missing = [p["variant_id"] for p in want if p["point_id"] not in got]
    bad = df[df["status"] != "ok"]
    detail = f"{len(df)} of {len(want)} points recorded, {len(bad)} not ok"
    if missing:
        detail += f"; missing e.g. {missing[0]} (resume: uhd-profile sweep paper --device cuda --resume --out {run_dir})"
    if len(bad):
        detail += f"; e.g. {bad.iloc[0]['variant_id']}: {bad.iloc[0]['status']} {bad.iloc[0]['error']}"
    checks.append(Check("sweep-complete", not missing and bad.empty, detail))
    measured = df[df["measure"].fillna("").str.contains("latency") & (df["status"] == "ok")]
    lacking = []
    for _, r in measured.iterrows():
        absent = [c for c in ("latency_median_s", "peak_mem_bytes", "energy_per_image_j") if pd_isna(r[c]) or not r[c] > 0]
        if not str(r["device"]).startswith("cuda"):
            absent.append(f"device {r['device']}")
        if absent:
            lacking.append(f"{r['variant_id']} ({', '.join(absent)})")
    checks.append(
        Check(
            "sweep-measured",
            bool(len(measured)) and not lacking,
            f"{len(measured)} measured points"
            + (f"; lacking: {'; '.join(lacking[:3])}" if lacking else " on CUDA, each with latency, memory and energy"),
        )
    )
    report = run_dir / "report" / "report.md"
    checks.append(Check("sweep-report", report.is_file(), f"{report} " + ("written" if report.is_file() else "missing")))
    return checks


def pd_isna(x) -> bool:
    import pandas as pd

    return bool(pd.isna(x))


def check_bench(out: Path, steps: dict[str, Step]) -> list[Check]:
    """The profiler-trace bench: a CUDA record with an MFU, and a trace with our ranges and GPU kernels."""
    checks = [_step_check(steps, "trace")]
    path = out / "bench.json"
    try:
        rec = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        return checks + [Check("trace-record", False, f"{path.name}: {exc}")]
    problems = []
    m = rec.get("metrics") or {}
    if not str(rec.get("device", "")).startswith("cuda"):
        problems.append(f"ran on {rec.get('device')!r}, not CUDA")
    if m.get("mfu") is None:
        problems.append("no MFU (no datasheet peak for this GPU)")
    if not rec.get("module_time_s"):
        problems.append("no per-module times")
    checks.append(
        Check(
            "trace-record",
            not problems,
            "; ".join(problems)
            or f"{rec.get('variant_id')} on {rec.get('device')}: median {m['latency_median_s'] * 1e3:.2f} ms, MFU {m['mfu']:.1%}",
        )
    )
    tp = rec.get("trace_path") or ""
    try:
        events = json.loads(Path(tp).read_text())["traceEvents"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        return checks + [Check("trace-file", False, f"trace {tp!r} unreadable ({exc})")]
    names = {e.get("name") for e in events}
    kernels = sum(1 for e in events if str(e.get("cat", "")).lower() == "kernel")
    lost = [r for r in TRACE_RANGES if r not in names]
    checks.append(
        Check(
            "trace-file",
            not lost and kernels > 0,
            f"{Path(tp).name}: {kernels} GPU kernel events"
            + (f"; missing ranges {', '.join(lost)}" if lost else f", ranges {', '.join(TRACE_RANGES)}"),
        )
    )
    return checks


def check_time(steps: dict[str, Step], budget_s: float = TOTAL_BUDGET_S) -> Check:
    total = sum(s.seconds for s in steps.values())
    return Check("total-time", total <= budget_s, f"all steps took {total:.0f} s, target {budget_s:.0f} s")


def summarize(out: str | os.PathLike) -> tuple[list[Check], dict]:
    """Judge every step's artefacts in ``out``; write ``summary.json`` and ``summary.md`` there.
    Returns the checks and the summary dict."""
    out = Path(out)
    steps = read_steps(out)
    checks = [
        *check_pytest(out, steps),
        *check_matmul(out, steps),
        *check_sweep(out, steps),
        *check_bench(out, steps),
        check_time(steps),
    ]
    device = {}
    if (out / "device.json").is_file():
        try:
            device = json.loads((out / "device.json").read_text())
        except json.JSONDecodeError:
            device = {}
    summary = {
        "out": str(out),
        "device": device,
        "steps": [asdict(s) for s in steps.values()],
        "checks": [asdict(c) for c in checks],
        "failed": sum(not c.ok for c in checks),
        "total": len(checks),
    }
    write_summary(out, summary)
    return checks, summary


def write_summary(out: Path, summary: dict) -> None:
    """``summary.json`` (everything) and ``summary.md`` (a table per steps and checks)."""
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    dev = summary.get("device") or {}
    lines = [f"# GPU check: {summary['total'] - summary['failed']} of {summary['total']} checks passed", ""]
    if dev:
        lines += [
            f"Device: {dev.get('name')} (torch {dev.get('torch')}, CUDA {dev.get('cuda')}); "
            f"bf16 dense peak: {dev.get('bf16_peak_tflops')} TFLOP/s",
            "",
        ]
    lines += ["| step | exit | seconds | budget s | command |", "|---|---:|---:|---:|---|"]
    lines += [f"| {s['name']} | {s['rc']} | {s['seconds']:g} | {s['budget_s']:g} | `{s['command']}` |" for s in summary["steps"]]
    lines += ["", "| check | result | detail |", "|---|---|---|"]
    lines += [
        f"| {c['name']} | {'pass' if c['ok'] else '**FAIL**'} | {c['detail'].replace('|', '/')} |" for c in summary["checks"]
    ]
    (out / "summary.md").write_text("\n".join(lines) + "\n")


# ---------------------------------------------------------------------------------------------
# Commands


def no_cuda_line() -> str | None:
    """None when a CUDA device is usable, else the one line saying why not."""
    import torch

    if torch.cuda.is_available() and torch.cuda.device_count() > 0:
        return None
    return (
        f"gpu-check: no CUDA device on this machine (torch {torch.__version__}, built for CUDA "
        f"{torch.version.cuda or 'none'}); run it on a GPU machine"
    )


def cmd_preflight(out: Path) -> int:
    line = no_cuda_line()
    if line:
        print(line, file=sys.stderr)
        return 2
    import torch

    from uhd_profile.measure.roofline import gpu_peak

    out.mkdir(parents=True, exist_ok=True)
    name = torch.cuda.get_device_name(0)
    peak = gpu_peak(name, "bf16")
    info = {
        "name": name,
        "capability": list(torch.cuda.get_device_capability(0)),
        "count": torch.cuda.device_count(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "bf16_peak_tflops": None if peak is None else peak.tflops,
        "bf16_peak_source": None if peak is None else peak.source,
    }
    (out / "device.json").write_text(json.dumps(info, indent=2) + "\n")
    print(f"gpu-check: {name} (torch {torch.__version__}, CUDA {torch.version.cuda}); writing to {out}")
    return 0


def cmd_matmul(out: Path, n: int, dtype: str) -> int:
    res = measure_matmul(n=n, dtype=dtype, device="cuda")
    (out / "matmul.json").write_text(json.dumps(res.as_dict(), indent=2) + "\n")
    for c in res.checks:
        print(("ok   " if c.ok else "FAIL ") + f"{c.name}: {c.detail}")
    return 0 if all(c.ok for c in res.checks) else 1


def cmd_summary(out: Path) -> int:
    checks, summary = summarize(out)
    for line in failure_lines(checks):
        print(line, file=sys.stderr)
    print(
        f"gpu-check: {summary['total'] - summary['failed']} of {summary['total']} checks passed; summary in {out / 'summary.md'}"
    )
    return 1 if summary["failed"] else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("preflight", "matmul", "summary"):
        p = sub.add_parser(name)
        p.add_argument("out", type=Path)
        if name == "matmul":
            p.add_argument("--n", type=int, default=8192)
            p.add_argument("--dtype", default="bf16", choices=("bf16", "fp16", "fp32"))
    args = ap.parse_args(argv)
    if args.cmd == "preflight":
        return cmd_preflight(args.out)
    if args.cmd == "matmul":
        return cmd_matmul(args.out, args.n, args.dtype)
    return cmd_summary(args.out)


if __name__ == "__main__":
    sys.exit(main())
