"""Benchmark: the one-line questions people ask at a terminal, each as a fresh `uhd-profile` process.

Times each command as a user types it (a new process, so imports count), several times, and
prints the median and the spread with the machine (CPU model, cores, load average before and
after: timings on a shared machine are only as good as its load). The targets are those of the
"answers in about a second" issue, for a cold start (this project has no count cache yet, so
every run is cold); a command over its target is marked, not hidden.

    python benchmarks/interactive.py [--repeat N] [--only NAME]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time

COMMANDS: list[tuple[str, list[str], float]] = [
    ("help", ["--help"], 0.5),
    ("list", ["list"], 0.5),
    ("list policies", ["list", "policies"], 0.5),
    ("image 1920x1080", ["image", "1920x1080"], 3.0),
    ("image 3840x2160 qwen2.5-vl + llm", ["image", "3840x2160", "--policy", "qwen2.5-vl", "--llm", "qwen2.5-7b"], 3.0),
    ("e2e defaults", ["e2e"], 4.0),
    ("e2e --decode-tokens 4096 qwen3-8b", ["e2e", "--llm", "qwen3-8b", "--decode-tokens", "4096"], 4.0),
    ("plan qwen2.5-vl 24GiB", ["plan", "--policy", "qwen2.5-vl", "--max-memory", "24GiB"], 5.0),
]


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="runs per command (the median is reported)")
    ap.add_argument("--only", default=None, help="run only the command whose name contains this text")
    args = ap.parse_args()
    exe = [sys.executable, "-m", "uhd_profile.cli"]
    print(f"machine: {_cpu()}, {os.cpu_count()} cores; python {platform.python_version()}; load before {_load()}")
    print(f"{'command':<36} {'median s':>9} {'min s':>7} {'max s':>7} {'target s':>9}")
    over = 0
    for name, argv, target in COMMANDS:
        if args.only and args.only not in name:
            continue
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            done = subprocess.run([*exe, *argv], capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
            times.append(time.perf_counter() - t0)
            if done.returncode != 0:
                print(f"{name}: exit {done.returncode}: {done.stderr.strip().splitlines()[-1:]}")
                return 1
        med = statistics.median(times)
        mark = "" if med <= target else "  over"
        over += med > target
        print(f"{name:<36} {med:>9.2f} {min(times):>7.2f} {max(times):>7.2f} {target:>9.1f}{mark}")
    print(f"load after {_load()}; {over} command(s) over target (cold start: no count cache yet)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
