"""uhd-profile: what high-resolution visual encoding costs in multimodal LLMs.

The public API (docs/api.md shows a notebook session with it), by what it answers:

* **A vision design**: ``VariantSpec`` (encoder, resolution, compressor, depth, connector),
  ``build_variant``, ``count_flops`` -> ``FlopCount``, in the conventions of ``CONVENTIONS``;
  ``Size`` (width x height).
* **An image under a family's policy, end to end**: ``get_policy``, ``cost_item`` -> ``ItemCost``
  (views, the token fields, vision FLOPs per variant, with ``LlmSettings`` the LLM prefill and
  decode, with ``MemorySettings`` the predicted memory).
* **The LLM and the whole pipeline**: ``count_llm``, ``PipelineSpec``, ``count_pipeline``.
* **Memory**: ``predict_memory`` (the memory model) and ``MemorySettings``.
* **What fits**: ``Planner`` (the largest image, setting or design within a budget).
* **Measuring**: ``bench``, ``BenchSettings``, ``TimingSettings``.
* **Runs, reports and quality**: ``load`` (a run directory as a DataFrame), ``write_report``,
  ``read_quality`` and ``join_quality`` (benchmark scores next to cost).
* ``UhdProfileError``: every user mistake, in one line.

Importing the package imports none of its heavy dependencies (torch, transformers, pandas): each
name is imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from uhd_profile.errors import UhdProfileError
from uhd_profile.version import __version__

_LAZY = {
    "VariantSpec": "uhd_profile.model.variants",
    "build_variant": "uhd_profile.model.variants",
    "count_flops": "uhd_profile.count.flops",
    "FlopCount": "uhd_profile.count.flops",
    "CONVENTIONS": "uhd_profile.count.conventions",
    "Size": "uhd_profile.units",
    "get_policy": "uhd_profile.model.policies",
    "cost_item": "uhd_profile.analyse.cost",
    "ItemCost": "uhd_profile.analyse.cost",
    "LlmSettings": "uhd_profile.analyse.cost",
    "MemorySettings": "uhd_profile.analyse.cost",
    "count_llm": "uhd_profile.count.llm",
    "PipelineSpec": "uhd_profile.model.pipeline",
    "count_pipeline": "uhd_profile.count.pipeline",
    "predict_memory": "uhd_profile.count.memory_model",
    "Planner": "uhd_profile.analyse.planner",
    "bench": "uhd_profile.measure.bench",
    "BenchSettings": "uhd_profile.measure.bench",
    "TimingSettings": "uhd_profile.measure.timing",
    "load": "uhd_profile.run.store",
    "write_report": "uhd_profile.analyse.report",
    "read_quality": "uhd_profile.analyse.quality",
    "join_quality": "uhd_profile.analyse.quality",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # imported once
        return value
    raise AttributeError(f"module 'uhd_profile' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [*_LAZY, "UhdProfileError", "__version__"]
