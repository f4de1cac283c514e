"""Measure one variant on one device: latency, memory, energy, roofline, in one result.

``bench(spec, settings)`` is the Python API (a :class:`BenchResult` whose ``metrics`` carry the
record schema's names); ``uhd-profile bench`` renders it as a table or ``--json``. The measurement
protocol is described in ``docs/measurement.md``.
"""

from __future__ import annotations

import contextlib
import glob
import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from uhd_profile.count.flops import count_flops
from uhd_profile.count.memory_model import DEVICE_KINDS, predict_memory
from uhd_profile.errors import UhdProfileError
from uhd_profile.files import check_output_dir
from uhd_profile.measure import roofline
from uhd_profile.measure.devices import resolve_device
from uhd_profile.measure.env import fingerprint, fingerprint_key
from uhd_profile.measure.limits import check_fits, check_threads
from uhd_profile.measure.memory import MemoryStats, measure_memory
from uhd_profile.measure.roofline import Peak
from uhd_profile.measure.roofline import mfu as mfu_of
from uhd_profile.measure.schema import count_metrics, fill, predicted_memory_metrics
from uhd_profile.measure.telemetry import NvmlSampler, Telemetry, null_telemetry
from uhd_profile.measure.timing import LatencyStats, TimingSettings, time_forward
from uhd_profile.model.variants import VariantSpec, build_variant, example_input
from uhd_profile.units import parse_dtype, torch_dtype

ATTN_BACKENDS = ("sdpa", "eager")


@dataclass(frozen=True)
class BenchSettings:
    """How to measure: device (``auto``/``cpu``/``cuda[:N]``), dtype (``fp32``/``bf16``/``fp16`` or an
    alias such as ``bfloat16``; stored canonical), images per forward, CPU threads (None: torch's
    default), attention backend, ``torch.compile``, CUDA graphs, the timing protocol, and whether to
    sample NVML telemetry, measure memory and trace."""

    device: str = "auto"
    dtype: str = "fp32"
    batch: int = 1
    threads: int | None = None
    attn: str = "sdpa"
    compile: bool = False
    cuda_graphs: bool = False
    timing: TimingSettings = field(default_factory=TimingSettings)
    telemetry: bool = True
    memory: bool = True
    trace_dir: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", parse_dtype(self.dtype))
        if not isinstance(self.batch, int) or self.batch < 1:
            raise UhdProfileError(f"batch {self.batch!r} is not valid; it must be an integer >= 1")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise UhdProfileError(f"threads {self.threads!r} is not valid; it must be an integer >= 1")
        if self.attn not in ATTN_BACKENDS:
            raise UhdProfileError(f"attention backend {self.attn!r} is not valid; valid: {', '.join(ATTN_BACKENDS)}")


@dataclass
class BenchResult:
    """One measured variant.

    ``metrics`` maps record-schema metric names (``uhd_profile.measure.schema.METRICS``) to values
    in SI units: counts per forward in every convention, latency statistics with every raw sample,
    memory, energy, achieved FLOP/s and MFU. The probe results it was filled from are kept beside it
    (``latency``, ``memory``, ``telemetry`` with its samples, the ``peak`` used for MFU), with the
    per-module time breakdown and trace path when traced, and notes.
    """

    spec: VariantSpec
    settings: BenchSettings
    device: str  # the device that ran (``settings.device`` says what was asked)
    threads: int
    metrics: dict[str, Any]
    env: dict[str, Any]
    latency: LatencyStats
    memory: MemoryStats | None
    telemetry: Telemetry
    peak: Peak | None
    module_time_s: dict[str, float] | None = None  # per category (attention, mlp, compressor, ...), from the trace
    trace_path: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """What ``uhd-profile bench --json`` prints: ``variant_id``, ``spec`` (``VariantSpec.describe``),
        ``device``, ``settings``, ``metrics`` (schema names), ``env``, ``telemetry_samples``, ``peak``,
        ``module_time_s``, ``trace_path``, ``notes``."""
        s = self.settings
        tel = asdict(self.telemetry)
        return {
            "variant_id": self.spec.id,
            "spec": self.spec.describe(),
            "device": self.device,
            "settings": {
                "device": s.device,
                "dtype": s.dtype,
                "batch": s.batch,
                "threads": self.threads,
                "attn": s.attn,
                "compile": s.compile,
                "cuda_graphs": s.cuda_graphs,
                "timing": asdict(s.timing),
                "telemetry": s.telemetry,
                "memory": s.memory,
            },
            "metrics": self.metrics,
            "env": self.env,
            "telemetry": {k: v for k, v in tel.items() if k != "samples"},
            "telemetry_samples": tel["samples"],
            "peak": asdict(self.peak) if self.peak is not None else None,
            "module_time_s": self.module_time_s,
            "trace_path": self.trace_path,
            "notes": list(self.notes),
        }


def _categorise(model: nn.Module) -> dict[nn.Module, str]:
    """Top-level cost centres for the per-module time breakdown (non-overlapping)."""
    cats: dict[nn.Module, str] = {}
    for name in ("embed", "compressor", "connector", "post_norm"):
        m = getattr(model, name, None)
        if isinstance(m, nn.Module):
            cats[m] = name
    layers = getattr(model, "layers", None)
    if layers is not None:
        for layer in layers:
            for child_name, child in layer.named_children():
                low = child_name.lower()
                if "attn" in low or "attention" in low:
                    cats[child] = "attention"
                elif "mlp" in low or "ffn" in low or "feed_forward" in low:
                    cats[child] = "mlp"
    return cats


@contextlib.contextmanager
def _labelled(model: nn.Module):
    """Wrap each cost centre's forward in a ``record_function`` range named ``uhd::<category>``."""
    handles = []
    open_ranges: dict[int, list] = {}
    for module, cat in _categorise(model).items():

        def pre(m, a, cat=cat):
            rf = torch.profiler.record_function(f"uhd::{cat}")
            rf.__enter__()
            open_ranges.setdefault(id(m), []).append(rf)

        def post(m, a, o):
            stack = open_ranges.get(id(m))
            if stack:
                stack.pop().__exit__(None, None, None)

        handles.append(module.register_forward_pre_hook(pre))
        handles.append(module.register_forward_hook(post))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def profile_trace(fn, model: nn.Module, device: torch.device, trace_dir: str, iters: int = 3) -> tuple[dict, str]:
    """Run ``iters`` forwards under ``torch.profiler``; write a trace TensorBoard's profiler plugin
    and Chrome's trace viewer open; return per-category time per forward (s) and the trace file."""
    from torch.profiler import ProfilerActivity, profile, schedule, tensorboard_trace_handler

    os.makedirs(trace_dir, exist_ok=True)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    before = set(glob.glob(os.path.join(trace_dir, "*.pt.trace.json")))
    with (
        _labelled(model),
        profile(
            activities=acts,
            schedule=schedule(wait=0, warmup=1, active=iters, repeat=1),
            on_trace_ready=tensorboard_trace_handler(trace_dir, worker_name="uhd-profile"),
        ) as prof,
    ):
        for _ in range(iters + 1):
            fn()
            prof.step()
    times: dict[str, float] = {}
    for evt in prof.key_averages():
        if evt.key.startswith("uhd::"):
            total_us = evt.device_time_total if device.type == "cuda" and evt.device_time_total else evt.cpu_time_total
            times[evt.key[5:]] = total_us / 1e6 / iters
    written = sorted(set(glob.glob(os.path.join(trace_dir, "*.pt.trace.json"))) - before)
    return times, (written[-1] if written else "")


_CPU_PEAKS: dict[tuple[str, int], Any] = {}


def _peak(device: torch.device, dtype: str, threads: int):
    if device.type == "cuda":
        return roofline.gpu_peak(torch.cuda.get_device_name(device), dtype)
    key = (dtype, threads)
    if key not in _CPU_PEAKS:
        _CPU_PEAKS[key] = roofline.cpu_peak(dtype, threads=threads)
    return _CPU_PEAKS[key]


def precount(spec: VariantSpec, settings: BenchSettings, device_kind: str) -> dict[str, Any]:
    """What ``bench`` counts and predicts before it measures (count metrics, and the memory
    model's prediction on ``device_kind``), as record metrics: pure functions of the shapes, so a
    sweep computes them beforehand, in parallel, and hands them to ``bench(counted=...)``."""
    metrics = count_metrics(count_flops(spec, batch=settings.batch))
    if device_kind in DEVICE_KINDS:
        metrics.update(predicted_memory_metrics(predict_memory(spec, settings.dtype, settings.batch, settings.attn, device_kind)))
    return metrics


def bench(
    spec: VariantSpec,
    settings: BenchSettings = BenchSettings(),
    weights: str | None = None,
    counted: dict[str, Any] | None = None,
) -> BenchResult:
    """Build ``spec`` on the settings' device and measure it (see module docstring). ``counted``:
    ``precount``'s metrics for this spec and settings, computed beforehand (None: count here)."""
    device = resolve_device(settings.device)
    notes: list[str] = []
    if settings.device == "auto" and device.type == "cpu":
        notes.append("--device auto found no GPU: measured on the CPU")
    if settings.cuda_graphs and device.type != "cuda":
        raise UhdProfileError(f"--cuda-graphs needs a CUDA device; this run is on {device}")
    if settings.timing.l2_flush and device.type != "cuda":
        raise UhdProfileError(f"--l2-flush needs a CUDA device; this run is on {device}")
    # refused before anything is allocated or written (docs/reliability.md)
    if settings.trace_dir:
        check_output_dir(settings.trace_dir, "--trace")
    if device.type == "cpu":
        check_threads(settings.threads)
    check_fits(spec, settings, device)
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    dtype = torch_dtype(settings.dtype)

    pre = counted if counted is not None else precount(spec, settings, device.type)
    t_build = time.perf_counter()
    # random weights: filled fast (values do not change a dense kernel's time; model.variants.fast_fill_)
    model = build_variant(spec, device=device, weights=weights, attn=settings.attn, init="fast").to(dtype)
    build_s = time.perf_counter() - t_build
    x = example_input(spec, settings.batch, device, dtype)
    runner: Any = model
    if settings.compile:
        runner = torch.compile(model)

    def forward() -> Any:
        with torch.inference_mode():
            return runner(x)

    fn = forward
    if settings.cuda_graphs:
        fn = _cuda_graph(forward, device)

    if settings.telemetry and device.type == "cuda":
        with NvmlSampler(device) as sampler:
            lat = time_forward(fn, device, settings.timing)
        telemetry = sampler.result()
    else:
        lat = time_forward(fn, device, settings.timing)
        reason = "telemetry disabled" if not settings.telemetry else f"no NVML telemetry on {device.type}"
        telemetry = null_telemetry(reason)

    memory = measure_memory(fn, model, device) if settings.memory else None
    module_times, trace_path = (None, None)
    if settings.trace_dir:
        module_times, trace_path = profile_trace(fn, model, device, settings.trace_dir)

    threads = torch.get_num_threads()
    env = fingerprint(device, threads=threads)
    metrics = dict(pre)
    fill(metrics, lat)
    if memory is not None:
        fill(metrics, memory)
    fill(metrics, telemetry)
    if telemetry.available and telemetry.energy_j is not None:
        metrics["energy_per_image_j"] = telemetry.energy_j / (settings.batch * max(1, lat.latency_n))
    med = lat.latency_median_s
    flops = metrics["flops"]
    peak = _peak(device, settings.dtype, threads)
    achieved = flops / med if med and med > 0 and math.isfinite(med) else None
    metrics.update(
        achieved_flops_per_s=achieved,
        mfu=mfu_of(flops, med, peak) if achieved else None,
        peak_flops_per_s=peak.flops_per_s if peak is not None else None,
        peak_source=peak.source if peak is not None else None,
        threads=threads,
        env_key=fingerprint_key(env),
        pid=os.getpid(),
        build_s=round(build_s, 6),
    )
    if telemetry.available and telemetry.throttled_fraction:
        notes.append(f"{telemetry.throttled_fraction:.0%} of telemetry samples were under clock slowdown")
    return BenchResult(
        spec=spec,
        settings=settings,
        device=str(device),
        threads=threads,
        metrics=metrics,
        env=env,
        latency=lat,
        memory=memory,
        telemetry=telemetry,
        peak=peak,
        module_time_s=module_times,
        trace_path=trace_path,
        notes=notes,
    )


def _cuda_graph(forward, device: torch.device):
    """Capture ``forward`` once in a CUDA graph and return a replay function."""
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        for _ in range(3):
            forward()
    torch.cuda.current_stream(device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        forward()
    return graph.replay
