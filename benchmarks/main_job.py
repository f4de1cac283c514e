"""Benchmark: the main job, `uhd-profile sweep` with no arguments (the `paper` recipe), end to end.

Runs the default sweep, report included, into a temporary directory, exactly as a user types it
(`uhd-profile sweep --out DIR`: a new process, so imports count), and prints its wall time, the
per-phase split the sweep records (`RUN_DIR/phases.json`: setup, counting, measuring with its
process starts, model builds, counts and timing, report), the dtype `auto` chose and why, and the
machine: CPU model, cores, and the load average before and after (timings on a shared machine are
only as good as its load).

    python benchmarks/main_job.py [--repeat N] [--keep DIR]

The target (issue 14): at most 120 s on a 2-core CPU. benchmarks/results-main-job-cpu.txt holds
the output of a run on this project's machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_S = 120.0
PHASES = (
    ("setup_s", "setup: imports, recipe, dtype choice"),
    ("counting_s", "counting (count-only points, in parallel)"),
    ("measuring_s", "measuring (each point alone, a fresh process)"),
    ("measure_start_s", "  of which process starts and imports"),
    ("measure_build_s", "  of which model builds (random weights)"),
    ("measure_count_s", "  of which FLOP counts and memory predictions"),
    ("measure_time_s", "  of which timing and memory forwards"),
    ("report_s", "report"),
)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def run_once(out: Path) -> dict:
    cmd = [sys.executable, "-m", "uhd_profile.cli", "sweep", "--out", str(out)]
    before = load()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = load()
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-2000:])
        raise SystemExit(f"uhd-profile sweep exited {proc.returncode}")
    phases = json.loads((out / "phases.json").read_text())
    head = json.loads((out / "results.jsonl").read_text().splitlines()[0])
    return {"wall_s": wall, "load_before": before, "load_after": after, "phases": phases, "dtype_auto": head.get("dtype_auto")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=1, help="runs (each into a new directory)")
    ap.add_argument("--keep", default=None, help="keep the last run directory here")
    args = ap.parse_args()
    print(f"machine: {cpu_model()}; {os.cpu_count()} cores visible, {len(os.sched_getaffinity(0))} usable; {platform.platform()}")
    import torch

    print(f"python {platform.python_version()}, torch {torch.__version__}, {torch.get_num_threads()} torch threads")
    for i in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="uhd-main-job-") as tmp:
            out = Path(tmp, "run")
            r = run_once(out)
            if args.keep and i == args.repeat - 1:
                shutil.rmtree(args.keep, ignore_errors=True)
                shutil.copytree(out, args.keep)
        ph = r["phases"]
        verdict = "within" if r["wall_s"] <= TARGET_S else "OVER"
        print(
            f"\nrun {i + 1}: `uhd-profile sweep` wall {r['wall_s']:.1f} s ({verdict} the {TARGET_S:.0f} s target); "
            f"load average (1, 5, 15 min) before {r['load_before']}, after {r['load_after']}"
        )
        if r["dtype_auto"]:
            print(f"  dtype auto -> {r['dtype_auto']['dtype']}: {r['dtype_auto']['reason']}")
        print(f"  {'phase':<48} {'s':>7}")
        for key, label in PHASES:
            if key in ph:
                print(f"  {label:<48} {ph[key]:7.1f}")
        print(f"  {'wall inside the command':<48} {ph.get('wall_s', 0.0):7.1f}")


if __name__ == "__main__":
    main()
