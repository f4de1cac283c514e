"""Benchmark: the measurement's own overhead. Latency with telemetry sampling on vs off, on the
same variant, alternating runs so drift hits both. Target (issue 3): the medians differ by < 2 %.

    python benchmarks/telemetry_overhead.py [--device auto] [--resolution 448] [--rounds 3]

Without a GPU there is no NVML to sample, so on a CPU box this measures the probe's own path only
(the sampler is not started); the figure that matters comes from a GPU run.
"""

from __future__ import annotations

import argparse
import statistics
import sys

from uhd_profile.measure.bench import BenchSettings, bench
from uhd_profile.measure.timing import TimingSettings
from uhd_profile.model.variants import VariantSpec


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="fp32")
    ap.add_argument("--resolution", type=int, default=448)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--min-time", type=float, default=3.0)
    args = ap.parse_args()
    spec = VariantSpec.alias("v4", resolution=(args.resolution, args.resolution), post_ratio=4)
    timing = TimingSettings(min_time_s=args.min_time, max_time_s=max(30.0, args.min_time), target_iqr=0.02)
    meds = {True: [], False: []}
    tel_reason = None
    for _ in range(args.rounds):
        for on in (True, False):
            rec = bench(spec, BenchSettings(device=args.device, dtype=args.dtype, timing=timing, telemetry=on, memory=False))
            meds[on].append(rec.latency_s["median"])
            if on:
                tel_reason = rec.telemetry.get("reason")
    on, off = statistics.median(meds[True]), statistics.median(meds[False])
    diff = on / off - 1
    print(
        f"{spec.id} on {rec.device} ({args.dtype}): median latency telemetry on {on * 1e3:.2f} ms, off {off * 1e3:.2f} ms, "
        f"difference {diff:+.2%} over {args.rounds} alternating rounds"
    )
    if tel_reason:
        print(f"telemetry was not sampled: {tel_reason}")
    print(f"target: |difference| < 2% -> {'met' if abs(diff) < 0.02 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
