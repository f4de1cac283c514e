"""A pipeline's record metrics: its stage counts, and on a device its stage timings and memory.

* :func:`count_metrics` (counts only, any point): the variant's own metrics (``macs``, ``flops``,
  ``paper_flops``, ``params``, ``tokens_in``, ``tokens_llm``: exactly what a point of the same
  variant without an LLM records, so the rest of the report reads a pipeline point as its variant),
  then every stage in every convention (``vision_macs``, ..., ``decode_paper_flops``), decode per
  token, the prefill with causal attention dense, the textbook figure, tokens entering the prefill,
  the KV cache in the point's dtype and the LLM's weight bytes.
* :func:`time_pipeline` (a measured point): time to first token split per stage on the device,
  each stage timed on its own with ``time_forward`` (random weights in the point's dtype):

  - **vision**: the ViT (connector excluded) on the image's views;
  - **connector**: the connector stage on the ViT's real output;
  - **prefill** and one **decode** step: ``uhd_profile.measure.llm.time_llm``. On a GPU the whole
    LLM; on a CPU an 8B model is too slow, so a reduced-depth copy (``cpu_llm_layers``: 2 layers, or
    one period of a hybrid's layer pattern) is timed and scaled by layers / N, marked by
    ``llm_layers_timed`` < the LLM's layers;
  - memory where measurable: the vision forward's and the (timed) prefill's activation memory;
    the KV cache and the LLM weights are counted, not measured (exact, from the cache object's
    shapes and the parameter count).

Not measured for pipelines: energy, and in-LLM drops (a reduced-depth copy cannot be
scaled when later layers run fewer tokens); both are refused in one line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from uhd_profile.count.conventions import CONVENTIONS
from uhd_profile.count.pipeline import PipelineCount, count_pipeline
from uhd_profile.errors import UhdProfileError
from uhd_profile.measure.devices import resolve_device
from uhd_profile.measure.env import fingerprint, fingerprint_key
from uhd_profile.measure.llm import LlmTiming, time_llm
from uhd_profile.measure.memory import MemoryStats, measure_memory
from uhd_profile.measure.schema import Point
from uhd_profile.measure.timing import LatencyStats, TimingSettings, time_forward
from uhd_profile.model.llms import FULL, LlmSpec
from uhd_profile.model.pipeline import STAGES, PipelineSpec, build_connector, drop_text
from uhd_profile.model.variants import build_variant, example_input
from uhd_profile.units import dtype_bytes, parse_dtype, torch_dtype

CPU_LLM_LAYERS = 2
"""Decoder layers a CPU times of an LLM (then scaled), for homogeneous models."""


def cpu_llm_layers(spec: LlmSpec) -> int:
    """Layers to time on a CPU: ``CPU_LLM_LAYERS``, rounded up to whole periods of a hybrid's layer
    pattern (Qwen3.5: 3 linear + 1 full = 4) so the timed layers have the model's mix; at most all."""
    period = spec.types.index(FULL) + 1 if spec.hybrid else 1
    n = -(-CPU_LLM_LAYERS // period) * period
    return min(n, spec.layers)


def count_metrics(pc: PipelineCount, dtype: str) -> dict[str, Any]:
    """The count metrics of a pipeline point, named by the record schema (see module docstring)."""
    dtype = parse_dtype(dtype)
    with_connector = pc.pipeline.ratio > 1  # the variant itself runs its connector only at 4x and 16x
    variant = pc.pipeline.variant
    m: dict[str, Any] = {}
    for c in CONVENTIONS.values():
        m[c.column] = pc.vision.get(c.name) + (pc.connector.get(c.name) if with_connector else 0)
    m.update(
        params=(pc.vision.params or 0) + ((pc.connector.params or 0) if with_connector else 0),
        tokens_in=variant.tokens_in,
        tokens_llm=variant.tokens_llm,
        count_s=round(pc.seconds, 6),
    )
    if pc.uncounted_ops:
        m["uncounted_ops"] = dict(pc.uncounted_ops)
    for s in STAGES:
        for c in CONVENTIONS.values():
            m[f"{s}_{c.column}"] = pc.stage(s, c.name)
    for c in CONVENTIONS.values():
        m[f"decode_{c.column}_per_token"] = pc.decode_per_token(c.name)["mean"]
    m.update(
        prefill_dense_macs=pc.llm.prefill_total("macs", "dense"),
        prefill_textbook_macs=pc.llm.textbook().total,
        prefill_tokens=pc.tokens["prefill"],
        kv_cache_bytes=pc.kv_cache_bytes(dtype, "decode"),
        llm_weights_bytes=(pc.params["llm"] or 0) * dtype_bytes(dtype),
    )
    return m


@dataclass
class PipelineTiming:
    """Stage timings of one pipeline on one device (seconds): ``vision`` and ``connector`` as timed,
    ``llm`` the LLM stage (``LlmTiming``: prefill and one decode step, scaled when reduced);
    ``vision_memory`` the vision forward's memory when measured."""

    pipeline: PipelineSpec
    device: str
    dtype: str
    threads: int
    vision: LatencyStats
    connector: LatencyStats
    llm: LlmTiming
    vision_memory: MemoryStats | None = None

    @property
    def ttft_s(self) -> float:
        """Time to first token: vision + connector + prefill medians (s)."""
        return self.vision.latency_median_s + self.connector.latency_median_s + self.llm.prefill_s

    def metrics(self) -> dict[str, Any]:
        """The timing and memory metrics, named by the record schema."""
        m: dict[str, Any] = {
            "ttft_vision_s": self.vision.latency_median_s,
            "ttft_connector_s": self.connector.latency_median_s,
            "ttft_prefill_s": self.llm.prefill_s,
            "ttft_s": self.ttft_s,
            "decode_token_s": self.llm.decode_token_s,
            "llm_layers_timed": self.llm.layers_timed,
            "threads": self.threads,
        }
        if self.vision_memory is not None:
            m["vision_activation_mem_bytes"] = self.vision_memory.activation_mem_bytes
        if self.llm.prefill_memory is not None:
            m["prefill_activation_mem_bytes"] = self.llm.prefill_memory.activation_mem_bytes
        return m


def check_measurable(pipeline: PipelineSpec, measure: tuple[str, ...] = ("flops", "latency")) -> None:
    """Refuse (one line) what pipeline timing does not do: drops, energy."""
    if "energy" in measure:
        raise UhdProfileError(f"{pipeline.id}: energy is not measured for points with an LLM; measure flops, latency and memory")
    if pipeline.drop is not None and pipeline.drop.schedule(pipeline.llm_spec, pipeline.visual_tokens)[1]:
        raise UhdProfileError(
            f"{pipeline.id}: timing an in-LLM drop ({drop_text(pipeline.drop)}) is not built (a reduced-depth "
            "copy cannot be scaled when later layers run fewer tokens); count it, or time the pipeline without the drop"
        )


def _time_stage(
    module: torch.nn.Module, x: Any, dev: torch.device, settings: TimingSettings, memory: bool
) -> tuple[LatencyStats, MemoryStats | None, torch.Tensor]:
    """Time ``module(x)``; its memory when asked; and its output (the next stage's input)."""

    def run() -> torch.Tensor:
        with torch.inference_mode():
            return module(x)

    stats = time_forward(run, dev, settings)
    mem = measure_memory(run, module, dev) if memory else None
    return stats, mem, run()


def time_pipeline(
    pipeline: PipelineSpec,
    device: str | torch.device = "cpu",
    dtype: str = "bf16",
    settings: TimingSettings | None = None,
    memory: bool = False,
    llm_layers: int | str | None = "auto",
    threads: int | None = None,
    attn: str = "sdpa",
) -> PipelineTiming:
    """Time each stage of ``pipeline`` before the first token, and one decode step, on ``device``.

    ``llm_layers``: decoder layers to time and scale from (``"auto"``: ``cpu_llm_layers`` on a CPU,
    all on a GPU; None: all). ``memory``: also measure the vision and prefill forwards' memory.
    ``threads``: CPU threads (torch's setting is left as it was set by the caller otherwise)."""
    check_measurable(pipeline)
    dev = resolve_device(device)
    dtype = parse_dtype(dtype)
    settings = settings or TimingSettings()
    if threads is not None:
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
            raise UhdProfileError(f"threads = {threads!r}: must be an integer >= 1")
        torch.set_num_threads(threads)
    tdt = torch_dtype(dtype)
    vision: Any = build_variant(pipeline.vision_spec, device=dev, attn=attn).to(tdt)
    pixels: Any = example_input(pipeline.vision_spec, 1, dev, tdt)
    features: Any
    t_vision, vision_memory, features = _time_stage(vision, pixels, dev, settings, memory)
    vision = pixels = None  # free the ViT before the LLM is built
    t_connector, _, _ = _time_stage(build_connector(pipeline, dev).to(tdt), features, dev, settings, False)
    features = None
    spec = pipeline.llm_spec
    n: int | None
    if llm_layers == "auto":
        n = cpu_llm_layers(spec) if dev.type == "cpu" else None
    else:
        n = int(llm_layers) if llm_layers is not None else None
    llm = time_llm(
        spec,
        pipeline.visual_tokens,
        pipeline.prompt_tokens,
        device=dev,
        dtype=dtype,
        layers=n,
        attn=attn,
        settings=settings,
        memory=memory,
    )
    return PipelineTiming(pipeline, str(dev), dtype, torch.get_num_threads(), t_vision, t_connector, llm, vision_memory)


def point_metrics(point: Point) -> dict[str, Any]:
    """Every metric of a point with an LLM: its counts, and where the point is measured its stage
    timings and memory on the point's device, with the environment key."""
    p = point.pipeline
    if p is None:
        raise UhdProfileError(f"point {point.point_id} has no LLM; count it with count_flops")
    if point.batch != 1:
        raise UhdProfileError(f"{p.id}: batch {point.batch}; points with an LLM run one image (batch 1)")
    metrics = count_metrics(count_pipeline(p), point.dtype)
    if not point.measured:
        return metrics
    check_measurable(p, point.measure)
    timing = time_pipeline(p, point.device, point.dtype, TimingSettings(**point.timing), memory="memory" in point.measure)
    metrics.update(timing.metrics())
    env = fingerprint(resolve_device(point.device), threads=timing.threads)
    metrics.update(env_key=fingerprint_key(env), pid=os.getpid())
    return metrics
