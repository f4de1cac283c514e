"""Measure what the memory model predicts, for comparing the two (docs/memory.md, "Validation").

The memory model (``uhd_profile.count.memory_model``) predicts the bytes a forward allocates above
what existed before it. On a CPU the measured counterpart is the growth of the peak resident set
over one forward (``measure.memory``: ``VmHWM`` after a reset, minus ``VmRSS`` before), taken here
in a fresh process so that nothing earlier is resident.

One setting is changed on purpose, and said wherever a figure is printed: glibc's ``malloc``
keeps freed blocks under its (dynamic, up to 32 MiB) mmap threshold in the heap and hands them out
again, so with the default settings the growth over a forward depends on what earlier allocations
left behind: a forward whose tensors are all under 32 MiB can grow the RSS by much less than it
allocates (its warm-up left the heap big enough), or by more (fragmentation). With
``MALLOC_MMAP_THRESHOLD_`` set (64 KiB by default here), every larger block is its own mapping,
returned to the kernel when freed, and the RSS growth is what the forward holds at its peak, page
by page: the quantity the model predicts. ``mmap_threshold=None`` measures with the defaults.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from typing import Any

from uhd_profile.errors import UhdProfileError

MMAP_THRESHOLD_BYTES = 64 * 1024
"""``MALLOC_MMAP_THRESHOLD_`` of the measuring process: blocks from this size up are mmapped."""


def _vision(job: dict[str, Any]) -> dict[str, Any]:
    import torch

    from uhd_profile.measure.memory import measure_memory
    from uhd_profile.model.variants import VariantSpec, build_variant, example_input
    from uhd_profile.units import torch_dtype

    spec = VariantSpec.from_dict(job["spec"])
    dt = torch_dtype(job["dtype"])
    model = build_variant(spec, device="cpu", attn=job["attn"]).to(dt)
    x = example_input(spec, job["batch"], "cpu", dt)

    def forward():
        with torch.inference_mode():
            return model(x)

    forward()  # lazy initialisation (thread pools, kernels) is not the forward's memory
    gc.collect()
    m = measure_memory(forward, model, "cpu")
    return {k: getattr(m, k) for k in ("peak_mem_bytes", "baseline_mem_bytes", "activation_mem_bytes", "weights_bytes")}


def _llm(job: dict[str, Any]) -> dict[str, Any]:
    import torch
    from transformers import DynamicCache

    from uhd_profile.count.llm import cache_size
    from uhd_profile.measure.memory import measure_memory
    from uhd_profile.model.llms import get_llm
    from uhd_profile.units import torch_dtype

    spec = get_llm(job["llm"])
    if job.get("layers"):
        spec = spec.reduced(job["layers"])
    dt = torch_dtype(job["dtype"])
    model = spec.build("cpu", attn=job["attn"], dtype=dt)
    n = job["visual_tokens"] + job["prompt_tokens"]
    x = torch.randn(1, n, spec.hidden, dtype=dt)
    caches = []

    def prefill():
        cache = DynamicCache(config=model.config)
        caches.append(cache)  # the cache outlives the forward, as in generation
        with torch.inference_mode():
            return model(inputs_embeds=x, cache=cache, use_cache=True, logits_to_keep=1)

    prefill()
    caches.clear()
    gc.collect()
    m = measure_memory(prefill, model, "cpu")
    out = {k: getattr(m, k) for k in ("peak_mem_bytes", "baseline_mem_bytes", "activation_mem_bytes", "weights_bytes")}
    out["kv_cache_bytes"] = cache_size(caches[-1]).bytes(job["dtype"])
    return out


_KINDS = {"vision": _vision, "llm": _llm}


def _run(job: dict[str, Any]) -> dict[str, Any] | list[dict[str, Any]]:
    import torch

    if job.get("threads"):
        torch.set_num_threads(int(job["threads"]))
    if job["kind"] == "many":
        out = []
        for one in job["jobs"]:
            out.append(_KINDS[one["kind"]](one))
            gc.collect()  # the model of one job is gone (and its pages unmapped) before the next
        return out
    return _KINDS[job["kind"]](job)


def measure_in_fresh_process(
    job: dict[str, Any], mmap_threshold: int | None = MMAP_THRESHOLD_BYTES, timeout_s: float | None = 1800
) -> Any:
    """Run a measurement ``job`` in a new Python process and return its figures (bytes).

    ``job``: ``{"kind": "vision", "spec": VariantSpec.to_dict(), "dtype", "attn", "batch"}``,
    ``{"kind": "llm", "llm", "layers" (None: all), "visual_tokens", "prompt_tokens", "dtype",
    "attn"}``, or ``{"kind": "many", "jobs": [...]}`` (one after another in the same process,
    which pays for its start once); optionally ``"threads"``. Returns (a list of, for ``many``)
    ``peak_mem_bytes``, ``baseline_mem_bytes``, ``activation_mem_bytes`` (the growth over one
    forward), ``weights_bytes`` (and for ``llm`` ``kv_cache_bytes``), plus ``mmap_threshold``.
    ``mmap_threshold``: see the module docstring (None: glibc's defaults)."""
    kinds = [j.get("kind") for j in job.get("jobs", [])] if job.get("kind") == "many" else [job.get("kind")]
    bad = [k for k in kinds if k not in _KINDS]
    if bad or not kinds:
        raise UhdProfileError(f"measurement kind {bad[0] if bad else None!r} is not valid; valid: {', '.join(_KINDS)}, many")
    env = dict(os.environ)
    env.pop("MALLOC_MMAP_THRESHOLD_", None)
    if mmap_threshold is not None:
        env["MALLOC_MMAP_THRESHOLD_"] = str(int(mmap_threshold))
    proc = subprocess.run(
        [sys.executable, "-m", "uhd_profile.measure.memory_check", json.dumps(job)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout_s,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith(("{", "["))]
    if proc.returncode != 0 or not lines:
        tail = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        raise RuntimeError(f"memory measurement failed (exit {proc.returncode}): {tail[-1] if tail else 'no output'}")
    out = json.loads(lines[-1])
    for one in out if isinstance(out, list) else [out]:
        one["mmap_threshold"] = mmap_threshold
    return out


if __name__ == "__main__":
    print(json.dumps(_run(json.loads(sys.argv[1]))))
