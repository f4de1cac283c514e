"""Running models on the ``meta`` device: the one place the FLOPs engine and the memory model share.

* ``meta_llm(spec, attn, dtype)``: an LLM built on ``meta`` once per geometry, attention path and
  dtype. A meta model holds no state between forwards (each brings its own cache; dropping hooks
  are removed when a count ends), and building an 8B model takes longer than running a short
  prefill through it, so ``count_llm`` and the memory model's ``trace_llm`` reuse one build.
* ``meta_run(model)``: a context in which ``model`` runs on ``meta`` with the counter's
  bookkeeping (the module stack, small integer tensors kept real on the CPU) and nothing priced:
  what the memory model traces allocations in, and how it fills a KV cache to the length a decode
  step reads.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

import torch

from uhd_profile.count.flops import counting
from uhd_profile.model.llms import LlmSpec
from uhd_profile.units import parse_dtype, torch_dtype


@lru_cache(maxsize=8)
def meta_llm(spec: LlmSpec, attn: str = "sdpa", dtype: str = "fp32") -> Any:
    """The LLM of ``spec`` on ``meta`` in ``dtype`` with the ``attn`` path, built once."""
    return spec.build("meta", attn=attn, dtype=torch_dtype(parse_dtype(dtype)))


@contextlib.contextmanager
def meta_run(model: torch.nn.Module) -> Iterator[Any]:
    """``model`` run with the counter's bookkeeping and no pricing; yields the live state (its
    ``current_path`` names the module running)."""
    with counting(model, shape_only=True, priced=False) as state:
        yield state


__all__ = ["meta_llm", "meta_run"]
