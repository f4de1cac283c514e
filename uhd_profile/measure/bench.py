"""Measure one variant on one device: latency, memory, energy, roofline, in one record.

``bench(spec, settings)`` is the Python API (a ``BenchRecord`` dataclass); ``uhd-profile bench``
renders the same record as a table or ``--json``. Protocol: ../shared/measurement.md.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from uhd_profile.measure.devices import resolve_device
from uhd_profile.errors import UhdProfileError
from uhd_profile.measure.timing import TimingSettings

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class BenchSettings:
    """How to measure: device (``auto``/``cpu``/``cuda[:N]``), dtype (fp32/bf16/fp16), images per
    forward, CPU threads (None: torch's default), attention backend, ``torch.compile``, CUDA graphs,
    the timing protocol, and whether to sample NVML telemetry, measure memory and trace."""

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

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise UhdProfileError(f"dtype {self.dtype!r} is not valid; valid: {', '.join(DTYPES)}")
        if not isinstance(self.batch, int) or self.batch < 1:
            raise UhdProfileError(f"batch {self.batch!r} is not valid; it must be an integer >= 1")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise UhdProfileError(f"threads {self.threads!r} is not valid; it must be an integer >= 1")
        if self.attn not in ("sdpa", "eager"):
            raise UhdProfileError(f"attention backend {self.attn!r} is not valid; valid: sdpa, eager")


@dataclass
class BenchRecord:
    """One measured variant. Units: seconds, bytes, FLOPs (integers), FLOP/s, joules."""

    variant_id: str
    spec: dict
    device: str  # the device that ran (``device_requested`` says what was asked)
    device_requested: str
    dtype: str
    batch: int
    threads: int
    attn: str
    compile: bool
    cuda_graphs: bool
    latency_s: dict  # median, p10, p90, iqr_over_median, n, samples, stop_reason, ...
    memory: dict | None  # bytes
    telemetry: dict
    flops: dict  # counted per forward: {"macs", "flops", "paper"}
    achieved_flops_per_s: float | None  # flops convention (2 per MAC + element-wise) / median latency
    mfu: float | None  # achieved / peak for the dtype
    peak: dict | None  # the peak used, with its source
    noise_flag: str
    env: dict
    module_time_s: dict | None = None  # per category (attention, mlp, compressor, connector, ...), from the trace
    trace_path: str | None = None
    notes: list[str] = field(default_factory=list)
    params: int | None = None  # parameters of the variant (from the FLOPs count)

    def as_dict(self) -> dict:
        return asdict(self)


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
    import glob
    import os

    from torch.profiler import ProfilerActivity, profile, schedule, tensorboard_trace_handler

    os.makedirs(trace_dir, exist_ok=True)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    before = set(glob.glob(os.path.join(trace_dir, "*.pt.trace.json")))
    with _labelled(model):
        with profile(activities=acts, schedule=schedule(wait=0, warmup=1, active=iters, repeat=1),
                     on_trace_ready=tensorboard_trace_handler(trace_dir, worker_name="uhd-profile")) as prof:
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
    from uhd_profile.measure import roofline

    if device.type == "cuda":
        return roofline.gpu_peak(torch.cuda.get_device_name(device), dtype)
    key = (dtype, threads)
    if key not in _CPU_PEAKS:
        _CPU_PEAKS[key] = roofline.cpu_peak(dtype, threads=threads)
    return _CPU_PEAKS[key]


def bench(spec, settings: BenchSettings = BenchSettings(), weights: str | None = None) -> BenchRecord:
    """Build ``spec`` on the settings' device and measure it (see module docstring)."""
    from uhd_profile.measure.env import fingerprint
    from uhd_profile.count.flops import count_flops
    from uhd_profile.measure.memory import measure_memory
    from uhd_profile.measure.roofline import mfu as mfu_of
    from uhd_profile.measure.telemetry import NvmlSampler, null_telemetry
    from uhd_profile.measure.timing import time_forward
    from uhd_profile.model.variants import build_variant, example_input

    device = resolve_device(settings.device)
    notes: list[str] = []
    if settings.device == "auto" and device.type == "cpu":
        notes.append("--device auto found no GPU: measured on the CPU")
    if settings.cuda_graphs and device.type != "cuda":
        raise UhdProfileError(f"--cuda-graphs needs a CUDA device; this run is on {device}")
    if settings.timing.l2_flush and device.type != "cuda":
        raise UhdProfileError(f"--l2-flush needs a CUDA device; this run is on {device}")
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    dtype = DTYPES[settings.dtype]

    counted = count_flops(spec, batch=settings.batch)
    model = build_variant(spec, device=device, weights=weights, attn=settings.attn).to(dtype)
    x = example_input(spec, settings.batch, device, dtype)
    runner: Any = model
    if settings.compile:
        runner = torch.compile(model)

    def forward():
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

    memory = measure_memory(fn, model, device).as_dict() if settings.memory else None
    module_times, trace_path = (None, None)
    if settings.trace_dir:
        module_times, trace_path = profile_trace(fn, model, device, settings.trace_dir)

    flops = {c: counted.get(c) for c in ("macs", "flops", "paper")}
    med = lat.median_s
    achieved = flops["flops"] / med if med and med > 0 and math.isfinite(med) else None
    peak = _peak(device, settings.dtype, torch.get_num_threads())
    tel = telemetry.as_dict()
    if telemetry.available and telemetry.slowdown_fraction:
        notes.append(f"{telemetry.slowdown_fraction:.0%} of telemetry samples were under clock slowdown")
    return BenchRecord(
        variant_id=spec.id, spec=spec.as_dict(), device=str(device), device_requested=settings.device,
        dtype=settings.dtype, batch=settings.batch, threads=torch.get_num_threads(), attn=settings.attn,
        compile=settings.compile, cuda_graphs=settings.cuda_graphs, latency_s=lat.as_dict(), memory=memory,
        telemetry=tel, flops=flops, achieved_flops_per_s=achieved,
        mfu=mfu_of(flops["flops"], med, peak) if achieved else None,
        peak=asdict(peak) if peak is not None else None, noise_flag=lat.noise_flag,
        env=fingerprint(device, threads=torch.get_num_threads()), module_time_s=module_times,
        trace_path=trace_path, notes=notes, params=counted.params,
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

