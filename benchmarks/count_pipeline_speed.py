"""Benchmark: count a full pipeline on ``meta``: the so400m/14 ViT at 980 px (4900 tokens), the
ratio-1 projector (no merge), and Qwen3-8B's prefill over those 4900 visual tokens plus a 64-token
prompt, stage by stage, without materialising any weight.

Target (issue 12): seconds, not minutes. The first count in a process also pays for importing and
warming up the model code, so it is printed apart from the steady state (the median of
``--repeat`` counts, each with the per-process memo off). Prints the figures; it is a benchmark, not
a test, because shared machines are noisy.

    python benchmarks/count_pipeline_speed.py [--llm NAME] [--variant baseline|v4] [--repeat N] [--json]
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
    ap.add_argument("--variant", default="baseline", choices=("baseline", "v4"))
    ap.add_argument("--resolution", type=int, default=980)
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--decode", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    t_import = time.perf_counter()
    from uhd_profile.count.pipeline import count_pipeline
    from uhd_profile.model.pipeline import PipelineSpec
    from uhd_profile.model.variants import VariantSpec

    # post-ratio 1: every one of the 4900 patch tokens of a 980 px view reaches the LLM
    spec = VariantSpec.alias(args.variant, resolution=args.resolution, post_ratio=1)
    pipeline = PipelineSpec(spec, llm=args.llm, prompt_tokens=args.prompt, decode_tokens=args.decode)
    t0 = time.perf_counter()
    first = count_pipeline(pipeline, memo=False)
    first_s = time.perf_counter() - t0
    times = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        c = count_pipeline(pipeline, memo=False)
        times.append(time.perf_counter() - t)
        assert c.stages("macs") == first.stages("macs")  # the same count every time
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # Linux reports KiB
    result = {
        "pipeline": pipeline.id,
        "tokens": pipeline.tokens,
        "stages_tmacs": {k: v / 1e12 for k, v in first.stages("macs").items()},
        "import_seconds": round(t0 - t_import, 3),
        "first_count_seconds": round(first_s, 3),
        "count_seconds_median": round(statistics.median(times), 3) if times else None,
        "count_seconds_all": [round(t, 3) for t in times],
        "peak_rss_gb": round(rss_gb, 3),
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"pipeline: {result['pipeline']}")
    print(f"tokens per stage: {result['tokens']}")
    print("counted (TMACs): " + ", ".join(f"{k} {v:,.3f}" for k, v in result["stages_tmacs"].items()))
    print(f"import: {result['import_seconds']} s; first count (with warm-up): {result['first_count_seconds']} s")
    print(f"count, median of {args.repeat}: {result['count_seconds_median']} s ({result['count_seconds_all']})")
    print(f"peak RSS of the process: {result['peak_rss_gb']} GB (weights are never materialised)")


if __name__ == "__main__":
    main()
