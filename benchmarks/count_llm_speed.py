"""Benchmark: count the LLM prefill of one 4900-token image + a 64-token prompt through the full
Qwen3-8B (36 layers) on ``meta``, without ever materialising its weights.

Target (issue 12): seconds, not minutes, and well under 1 GB of memory. The first count in a
process also pays for importing and warming up the ``transformers`` model code, so it is printed
apart (``first_count_seconds``) from the steady-state figure (the median of ``--repeat`` counts).
Prints the figures; it is a benchmark, not a test, because shared machines are noisy.

    python benchmarks/count_llm_speed.py [--llm NAME] [--repeat N] [--json]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--llm", default="qwen3-8b")
    ap.add_argument("--visual", type=int, default=4900)
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    t_import = time.perf_counter()
    from uhd_profile.count.llm import count_llm

    t0 = time.perf_counter()
    first = count_llm(args.llm, args.visual, args.prompt)
    first_s = time.perf_counter() - t0
    times = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        c = count_llm(args.llm, args.visual, args.prompt)
        times.append(time.perf_counter() - t)
        assert c.prefill.total == first.prefill.total  # the same count every time
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # Linux reports KiB
    result = {
        "llm": args.llm,
        "visual_tokens": args.visual,
        "prompt_tokens": args.prompt,
        "prefill_tmacs": first.prefill_total("macs") / 1e12,
        "import_seconds": round(t0 - t_import, 3),
        "first_count_seconds": round(first_s, 3),
        "count_seconds_median": round(statistics.median(times), 3) if times else None,
        "count_seconds_all": [round(t, 3) for t in times],
        "peak_rss_gb": round(rss_gb, 3),
        "uncounted_ops": first.uncounted_ops,
    }
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"{args.llm}: prefill of {args.visual} visual + {args.prompt} prompt tokens on meta, "
        f"{result['prefill_tmacs']:.3f} TMACs counted"
    )
    print(
        f"import {result['import_seconds']:.2f} s; first count {first_s:.2f} s (includes warm-up); "
        f"then median {result['count_seconds_median']} s over {args.repeat} counts {result['count_seconds_all']}"
    )
    print(f"peak RSS {rss_gb:.2f} GB; uncounted ops: {first.uncounted_ops or 'none'}")


if __name__ == "__main__":
    main()
