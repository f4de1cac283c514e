"""Benchmark: the memory model's predicted peak next to the peak measured on this machine.

For each configuration (tower, view size, dtype, attention path) the vision forward is traced on
``meta`` (``count.memory_model.predict_memory``, as for a CPU) and measured for real in a fresh
process (``measure.memory_check``): the growth of the peak resident set over one forward, after a
warm-up forward. What is compared is the *activation* part (predicted: bytes the forward allocates
above its weights and inputs; measured: peak RSS minus RSS before the forward): the whole peak RSS
also holds the interpreter and its libraries (~0.4 GB here), which the model does not predict.
Weights are compared apart (parameters and buffers of the built model vs the meta-built one).

The judged measurement runs with ``MALLOC_MMAP_THRESHOLD_=65536`` so that freed blocks go back to
the kernel (see ``measure.memory_check``: with glibc's default settings the RSS growth of a
forward depends on what the heap kept from earlier allocations). The last column measures again
with the defaults, for information: there small forwards can grow the RSS by less than they
allocate.

One LLM row checks the prefill stage: a one-layer Llama-2-7B (random weights, fp32) over 600
visual + 64 prompt tokens, with its KV cache.

    python benchmarks/memory_model.py [--json] [--no-default-malloc]

It prints figures; it is not a test (the same checks, smaller, are in tests/test_memory_model.py).
On a shared machine the measured growth is still the forward's own: other processes do not
change this process's resident set.
"""

from __future__ import annotations

import argparse
import json
import platform

from uhd_profile.count.memory_model import predict_memory, trace_llm
from uhd_profile.measure.memory_check import MMAP_THRESHOLD_BYTES, measure_in_fresh_process
from uhd_profile.model.llms import get_llm
from uhd_profile.model.variants import VariantSpec
from uhd_profile.units import format_bytes

TOL = 0.15

CONFIGS = [
    (VariantSpec(encoder="tiny", resolution=384, post_ratio=1), "fp32", "eager"),
    (VariantSpec(encoder="tiny", resolution=384, post_ratio=1), "fp32", "sdpa"),
    (VariantSpec(encoder="tiny", resolution=512, post_ratio=1), "fp32", "eager"),
    (VariantSpec(encoder="tiny", resolution=512, post_ratio=1), "fp32", "sdpa"),
    (VariantSpec(encoder="siglip2-so400m-p14[:2]", resolution=448, post_ratio=1), "fp32", "eager"),
    (VariantSpec(encoder="siglip2-so400m-p14[:2]", resolution=448, post_ratio=1), "fp32", "sdpa"),
    (VariantSpec(encoder="siglip2-so400m-p14[:2]", resolution=672, post_ratio=1), "fp32", "eager"),
    (VariantSpec(encoder="siglip2-so400m-p14[:2]", resolution=672, post_ratio=1), "fp32", "sdpa"),
    (VariantSpec(encoder="siglip2-so400m-p14[:2]", resolution=448, post_ratio=1), "bf16", "eager"),
    (VariantSpec(encoder="siglip2-so400m-p14[:2]", resolution=448, post_ratio=1), "bf16", "sdpa"),
]
LLM = {"llm": "llama-2-7b", "layers": 1, "visual_tokens": 600, "prompt_tokens": 64, "dtype": "fp32", "attn": "sdpa"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print the rows as JSON")
    ap.add_argument("--no-default-malloc", action="store_true", help="skip the information-only measurement with glibc defaults")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    jobs = [{"kind": "vision", "spec": s.to_dict(), "dtype": d, "attn": a, "batch": 1} for s, d, a in CONFIGS]
    jobs.append({"kind": "llm", **LLM})
    judged = measure_in_fresh_process({"kind": "many", "jobs": jobs, "threads": args.threads})
    defaults = [None] * len(jobs)
    if not args.no_default_malloc:
        defaults = [measure_in_fresh_process({**job, "threads": args.threads}, mmap_threshold=None) for job in jobs]

    rows = []
    for (spec, dtype, attn), m, d in zip(CONFIGS, judged, defaults):
        p = predict_memory(spec, dtype, attn=attn, device_kind="cpu")
        rows.append(_row(spec.id, attn, dtype, p.activation_bytes, p.stages[0].score_bytes, p.weights_bytes, m, d))
    spec = get_llm(LLM["llm"]).reduced(LLM["layers"])
    t = trace_llm(spec, LLM["visual_tokens"], LLM["prompt_tokens"], 0, LLM["dtype"], LLM["attn"], "cpu")
    row = _row(
        f"{spec.name} prefill {LLM['visual_tokens']}+{LLM['prompt_tokens']} tokens",
        LLM["attn"],
        LLM["dtype"],
        t.prefill.peak_bytes,
        t.prefill.score_bytes,
        t.weights_bytes,
        judged[-1],
        defaults[-1],
    )
    row["kv_cache_bytes"] = {"predicted": t.cache_after_prefill.bytes(LLM["dtype"]), "measured": judged[-1]["kv_cache_bytes"]}
    rows.append(row)

    machine = f"{platform.processor() or platform.machine()}, {args.threads} threads"
    if args.json:
        print(json.dumps({"machine": machine, "mmap_threshold": MMAP_THRESHOLD_BYTES, "tolerance": TOL, "rows": rows}))
        return
    print(f"memory model vs measured peak (activation growth over one forward), this machine: {machine}")
    print(f"judged with MALLOC_MMAP_THRESHOLD_={MMAP_THRESHOLD_BYTES}; tolerance {TOL:.0%}\n")
    head = "| configuration | attn | dtype | predicted | of which scores | measured | predicted / measured | within 15 % |"
    head += " measured, default malloc | weights predicted / measured |"
    print(head)
    print("|---|---|---|---:|---:|---:|---:|:---:|---:|---:|")
    for r in rows:
        dflt = format_bytes(r["measured_default_malloc_bytes"]) if r["measured_default_malloc_bytes"] is not None else "-"
        print(
            f"| {r['config']} | {r['attn']} | {r['dtype']} | {format_bytes(r['predicted_bytes'])} | "
            f"{format_bytes(r['score_bytes'])} | {format_bytes(r['measured_bytes'])} | {r['ratio']:.3f} | "
            f"{'yes' if r['within'] else 'NO'} | {dflt} | {format_bytes(r['weights_predicted_bytes'])} / "
            f"{format_bytes(r['weights_measured_bytes'])} |"
        )
    kv = rows[-1]["kv_cache_bytes"]
    print(f"\nLLM KV cache after the prefill: predicted {format_bytes(kv['predicted'])}, measured {format_bytes(kv['measured'])}")
    bad = [r["config"] for r in rows if not r["within"]]
    print(f"{len(rows) - len(bad)} of {len(rows)} within {TOL:.0%}" + (f"; outside: {', '.join(bad)}" if bad else ""))


def _row(config, attn, dtype, predicted, scores, weights, measured, default) -> dict:
    got = measured["activation_mem_bytes"]
    ratio = predicted / got if got else float("inf")
    return {
        "config": config,
        "attn": attn,
        "dtype": dtype,
        "predicted_bytes": predicted,
        "score_bytes": scores,
        "measured_bytes": got,
        "ratio": ratio,
        "within": abs(ratio - 1) <= TOL,
        "measured_default_malloc_bytes": default["activation_mem_bytes"] if default else None,
        "weights_predicted_bytes": weights,
        "weights_measured_bytes": measured["weights_bytes"],
    }


if __name__ == "__main__":
    main()
