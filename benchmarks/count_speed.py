"""Benchmark: count all 12 paper configurations (so400m/14 at 980 px, 4900 tokens) in one process.

Target (issue 2): under 30 s and under 2 GB peak RSS on a 2-core CPU. Prints the figures; it is a
benchmark, not a test, because shared machines are noisy.

    python benchmarks/count_speed.py [--json]
"""

from __future__ import annotations

import json
import resource
import sys
import time


def main() -> None:
    t_import = time.perf_counter()
    from uhd_profile.count.flops import count_flops
    from uhd_profile.count.paper import PAPER_FIGURES

    t0 = time.perf_counter()
    per = []
    for fig in PAPER_FIGURES:  # all 12, the repeated k=6 row counted again on purpose
        t = time.perf_counter()
        fc = count_flops(fig.spec())
        per.append((fig.spec().id, fc.get("paper") / 1e9, time.perf_counter() - t))
    total_s = time.perf_counter() - t0
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # Linux reports KiB
    result = {
        "configurations": len(per),
        "count_seconds": round(total_s, 3),
        "import_seconds": round(t0 - t_import, 3),
        "peak_rss_gb": round(rss_gb, 3),
        "targets": {"count_seconds": 30, "peak_rss_gb": 2},
        "within_targets": total_s < 30 and rss_gb < 2,
    }
    if "--json" in sys.argv:
        print(json.dumps(result))
        return
    for vid, g, s in per:
        print(f"{vid:<70} {g:>10.2f} G (paper)  {s:6.2f} s")
    print(f"\n12 configurations counted in {total_s:.2f} s (import {t0 - t_import:.2f} s); peak RSS {rss_gb:.2f} GB")
    print(f"targets: < 30 s and < 2 GB -> {'met' if result['within_targets'] else 'NOT met'}")


if __name__ == "__main__":
    main()
