"""Peak memory of one forward pass, on CUDA or CPU (docs/measurement.md, "Memory").

CUDA: after the caller's warm-up, ``reset_peak_memory_stats``; the baseline is what is allocated just
before the forward (weights, inputs, anything the caller keeps alive); the peak is
``max_memory_allocated`` over the forward; the activation memory is peak minus baseline. The caching
allocator's reserved peak and NVML's view of the process (which includes the CUDA context) are
reported next to it.

CPU: the kernel's high-water mark of the resident set (``VmHWM``) is reset by writing ``5`` to
``/proc/self/clear_refs``; the baseline is ``VmRSS`` right after the reset, the peak is ``VmHWM``
after the forward. Both come from ``/proc/self/status`` (kB, normalised to bytes here).
``tracemalloc`` is not used: it does not see torch's CPU tensors. Where the reset is not available,
:func:`measure_memory` does not run the forward and says so; :func:`measure_cpu_in_child` measures a
picklable callable in a fresh ``spawn`` process instead.

Note: resetting ``VmHWM`` also resets what ``getrusage(RUSAGE_SELF).ru_maxrss`` reports for this
process on Linux (both read the same high-water mark), so a process-wide peak read afterwards only
covers the time since the last measurement.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch

from uhd_profile.errors import UhdProfileError
from uhd_profile.measure.devices import resolve_device
from uhd_profile.measure.telemetry import import_nvml, nvml_handle

METHOD_CUDA = "cuda_allocator"
METHOD_CPU = "clear_refs+VmHWM"
METHOD_CHILD = "child_process"

_STATUS = "/proc/self/status"
_CLEAR_REFS = "/proc/self/clear_refs"
# After a reset VmHWM equals VmRSS; a larger gap means the kernel ignored the reset.
_RESET_TOLERANCE_BYTES = 16 * 2**20


@dataclass
class MemoryStats:
    device: str  # "cpu" or "cuda:N"
    memory_method: str  # "cuda_allocator", "clear_refs+VmHWM", or "child_process"
    weights_bytes: int  # parameters + buffers of the model
    baseline_mem_bytes: int | None  # allocated (CUDA) / RSS (CPU) just before the measured forward
    peak_mem_bytes: int | None  # CUDA: max_memory_allocated after reset; CPU: peak RSS during the forward
    reserved_peak_mem_bytes: int | None  # CUDA: max_memory_reserved
    activation_mem_bytes: int | None  # peak - baseline (what the forward added on top of weights and inputs)
    nvml_used_mem_bytes: int | None  # NVML's used memory for this process, where readable
    memory_note: str | None


def _stats(
    device: str,
    method: str,
    weights: int,
    baseline: int | None,
    peak: int | None,
    activation: int | None,
    note: str,
    reserved: int | None = None,
    nvml_used: int | None = None,
) -> MemoryStats:
    """A ``MemoryStats`` from one measurement's figures (the CUDA-only ones default to None)."""
    return MemoryStats(device, method, weights, baseline, peak, reserved, activation, nvml_used, note)


def model_bytes(model: torch.nn.Module) -> int:
    """Bytes held by the model's parameters and buffers (shared tensors counted once)."""
    seen: set[int] = set()
    total = 0
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) in seen:
            continue
        seen.add(id(t))
        total += t.numel() * t.element_size()
    return total


# ---------------------------------------------------------------------------------------------
# CPU: /proc/self/status and clear_refs


def _read_status_kb(*keys: str) -> dict[str, int]:
    """The named ``/proc/self/status`` fields, in bytes (the file gives kB)."""
    out: dict[str, int] = {}
    with open(_STATUS, "rb") as f:
        for line in f:
            name, _, rest = line.partition(b":")
            key = name.decode()
            if key in keys:
                parts = rest.split()
                unit = parts[1].lower() if len(parts) > 1 else b"kb"
                if unit != b"kb":  # the kernel always writes kB; refuse to guess otherwise
                    raise OSError(f"unexpected unit {unit!r} for {key} in {_STATUS}")
                out[key] = int(parts[0]) * 1024
    missing = [k for k in keys if k not in out]
    if missing:
        raise OSError(f"{_STATUS} has no {', '.join(missing)}")
    return out


def cpu_peak_rss_supported() -> bool:
    """Whether ``/proc/self/clear_refs`` is writable and ``VmHWM`` is readable (Linux)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        _read_status_kb("VmHWM", "VmRSS")
        # Opening for writing checks the permission without resetting anything.
        with open(_CLEAR_REFS, "w"):
            pass
    except OSError:
        return False
    return True


def _reset_peak_rss() -> int:
    """Reset VmHWM to the current RSS; return that RSS (bytes). Raises OSError if it cannot."""
    with open(_CLEAR_REFS, "w") as f:
        f.write("5")
    s = _read_status_kb("VmHWM", "VmRSS")
    if s["VmHWM"] > s["VmRSS"] + _RESET_TOLERANCE_BYTES:
        raise OSError(f"writing 5 to {_CLEAR_REFS} did not reset VmHWM ({s['VmHWM']} B > VmRSS {s['VmRSS']} B)")
    return s["VmRSS"]


def _measure_cpu(fn: Callable[[], object], weights: int) -> MemoryStats:
    gc.collect()
    try:
        baseline = _reset_peak_rss()
    except OSError as e:
        note = (
            f"peak RSS cannot be reset in this process ({e}); the forward was not run. "
            "Use measure_cpu_in_child() to measure it in a fresh process."
        )
        return _stats("cpu", METHOD_CPU, weights, None, None, None, note)
    out = fn()
    peak = _read_status_kb("VmHWM")["VmHWM"]
    del out
    note = "process RSS: baseline includes the interpreter, libraries, weights and inputs"
    return _stats("cpu", METHOD_CPU, weights, baseline, peak, max(peak - baseline, 0), note)


# ---------------------------------------------------------------------------------------------
# CPU in a fresh child process


def _peak_rss_self_bytes() -> int:
    """Peak RSS of the calling process in bytes.

    Linux: ``VmHWM`` of the current address space. ``ru_maxrss`` is not used there because after
    ``exec`` it keeps the high-water mark of the address space it replaced, which for a ``spawn``
    child is the (v)forked parent's: a child of a 2 GB parent would report >= 2 GB.
    Elsewhere: ``ru_maxrss``, which is bytes on macOS and KiB on Linux/BSD.
    """
    if sys.platform.startswith("linux"):
        try:
            return _read_status_kb("VmHWM")["VmHWM"]
        except OSError:
            pass
    import resource  # POSIX only

    ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(ru) if sys.platform == "darwin" else int(ru) * 1024


def _child_main(target: Callable[[], None], conn) -> None:
    try:
        target()
        conn.send(("ok", _peak_rss_self_bytes()))
    except BaseException as e:  # report, then let the child exit non-zero
        conn.send(("error", f"{type(e).__name__}: {e}"))
        raise
    finally:
        conn.close()


def measure_cpu_in_child(target: Callable[[], None], timeout_s: float | None = None) -> int:
    """Run ``target`` (a picklable top-level callable) in a fresh ``spawn`` process; return its peak RSS.

    The figure is the child's whole peak resident set in bytes: interpreter and imports (torch is
    a few hundred MB) plus whatever ``target`` builds. Measure an empty target the same way to get
    the floor to subtract.
    """
    ctx = multiprocessing.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child_main, args=(target, send), name="uhd-profile-memory")
    proc.start()
    send.close()  # only the child holds the sending end: its death reads as EOF here
    try:
        if not recv.poll(timeout_s):
            proc.kill()
            proc.join()
            raise RuntimeError(f"memory child did not finish within {timeout_s} s (killed)")
        try:
            status, value = recv.recv()
        except EOFError:
            proc.join()
            raise RuntimeError(
                f"memory child exited with code {proc.exitcode} without reporting: killed (out of "
                "memory?) or failed before the target ran (is it a picklable top-level callable "
                "importable in a fresh interpreter?)"
            ) from None
    finally:
        recv.close()
    proc.join(timeout=30)
    if proc.is_alive():  # reported but hangs on exit: the figure is already ours
        proc.kill()
        proc.join()
    if status != "ok":
        raise RuntimeError(f"memory child failed: {value}")
    return int(value)


# ---------------------------------------------------------------------------------------------
# CUDA


def _nvml_process_used_bytes(device: torch.device, nvml=None) -> tuple[int | None, str | None]:
    """NVML's used memory for this pid on ``device``, or (None, why not)."""
    if nvml is None:
        nvml, why = import_nvml()
        if nvml is None:
            return None, why
    try:
        nvml.nvmlInit()
    except Exception as e:  # library missing, driver absent, ...
        return None, f"NVML init failed: {e}"
    err = getattr(nvml, "NVMLError", Exception)
    try:
        handle = nvml_handle(nvml, device)
        procs = nvml.nvmlDeviceGetComputeRunningProcesses(handle)
    except (err, AttributeError) as e:
        return None, f"NVML process list unreadable: {e}"
    finally:
        with contextlib.suppress(Exception):
            nvml.nvmlShutdown()
    pid = os.getpid()
    used = [p.usedGpuMemory for p in procs if getattr(p, "pid", None) == pid]
    if not used:
        return None, "this pid is not in NVML's process list (e.g. a container PID namespace)"
    if any(u is None for u in used):
        return None, "NVML does not report per-process memory here (e.g. WDDM)"
    return int(sum(used)), None


def _measure_cuda(fn: Callable[[], object], dev: torch.device, weights: int) -> MemoryStats:
    if not torch.cuda.is_available():
        raise UhdProfileError(f"device {str(dev)!r} requested for memory measurement but CUDA is not available")
    torch.cuda.synchronize(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    baseline = torch.cuda.memory_allocated(dev)
    out = fn()
    torch.cuda.synchronize(dev)
    peak = torch.cuda.max_memory_allocated(dev)
    reserved = torch.cuda.max_memory_reserved(dev)
    nvml_used, why = _nvml_process_used_bytes(dev)  # while the forward's output is still alive
    del out
    note = "nvml_used_mem_bytes includes the CUDA context and the allocator's cache"
    if why:
        note = f"nvml_used_mem_bytes unavailable: {why}"
    return _stats(str(dev), METHOD_CUDA, weights, baseline, peak, peak - baseline, note, reserved=reserved, nvml_used=nvml_used)


def measure_memory(fn: Callable[[], object], model: torch.nn.Module, device: torch.device | str) -> MemoryStats:
    """Peak memory of one call of ``fn`` (the forward), after the caller's warm-up.

    ``fn`` is called once (not at all on a CPU without a resettable peak RSS; see the note).
    """
    dev = resolve_device(device)
    weights = model_bytes(model)
    if dev.type == "cuda":
        return _measure_cuda(fn, dev, weights)
    return _measure_cpu(fn, weights)
