"""Resource limits checked before anything is allocated (docs/reliability.md, "Resource limits").

* ``check_threads(threads)``: more CPU threads than the cores this process may use is refused (one
  line naming the limit). Timing oversubscribed cores measures the contention, and a huge count
  makes torch's thread pool fail (``--threads 100000`` crashed the process).
* ``check_fits(spec, settings, device)``: a forward whose memory *lower bound* exceeds what the
  device has free is refused with ``WontFit`` (exit 2 from ``bench``; ``oom`` in a sweep), naming
  the estimate and the limit. The bound is deliberately simple and never over-estimates: while the
  patch embedding runs, the pixel input (``batch x views x 3 x H x W x dtype bytes``) and the first
  hidden state (``tokens x hidden x dtype bytes x batch``) both exist, so a forward needs at least
  their sum (weights, attention scores and every later activation come on top). The limit is
  ``MemAvailable`` of ``/proc/meminfo`` (or a tighter cgroup memory limit) on the CPU and the free
  memory ``torch.cuda.mem_get_info`` reports on a GPU.

This is the one place such a check lives: a fuller memory model (weights, the largest layer's
activations, attention scores) replaces ``lower_bound_bytes`` here without touching the callers.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from uhd_profile.errors import UhdProfileError
from uhd_profile.model.variants import VariantSpec
from uhd_profile.units import dtype_bytes, format_bytes


class WontFit(UhdProfileError):
    """A forward that cannot fit in the device's free memory, refused before allocating (a sweep
    records it as ``oom``)."""


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. under taskset, Slurm or a container)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def check_threads(threads: int | None, name: str = "--threads") -> None:
    """Refuse a CPU thread count above ``usable_cores()`` (None: torch's default, always fine)."""
    if threads is None:
        return
    cores = usable_cores()
    if threads > cores:
        raise UhdProfileError(
            f"{name} {threads} is more than the {cores} CPU cores this process may use (its affinity mask); "
            f"give 1..{cores}: threads beyond the cores time their contention, not the model"
        )


def lower_bound_bytes(spec: VariantSpec, batch: int, dtype: str) -> dict[str, int]:
    """Bytes a forward needs at the least (see module docstring): ``input`` (pixels of every view),
    ``hidden`` (one hidden state over every view's tokens) and their ``total``."""
    b = dtype_bytes(dtype)
    pixels = sum(k * size.width * size.height for k, size in spec.groups) * 3 * batch * b
    hidden = spec.tokens_in * spec.enc.hidden * batch * b
    return {"input": pixels, "hidden": hidden, "total": pixels + hidden}


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def available_bytes(device: torch.device) -> tuple[int | None, str]:
    """Free memory for a forward on ``device`` in bytes, and where the figure comes from (None when
    it cannot be read: then nothing is refused)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free), f"free on {device} (torch.cuda.mem_get_info)"
    avail, source = None, ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail, source = int(line.split()[1]) * 1024, "MemAvailable in /proc/meminfo"
    except (OSError, ValueError, IndexError):
        pass
    # a container's memory limit can be tighter than the host's free memory
    for limit_p, used_p in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        limit, used = _read_int(Path(limit_p)), _read_int(Path(used_p))
        if limit is not None and used is not None and (avail is None or limit - used < avail):
            avail, source = max(0, limit - used), f"the cgroup memory limit ({limit_p})"
    return avail, source


def check_fits(spec: VariantSpec, settings: Any, device: torch.device) -> None:
    """Refuse (``WontFit``) a forward of ``spec`` with ``settings`` (``batch``, ``dtype``) whose lower
    bound exceeds the free memory of ``device``; the message names the estimate and the limit."""
    need = lower_bound_bytes(spec, settings.batch, settings.dtype)
    avail, source = available_bytes(device)
    if avail is None or need["total"] <= avail:
        return
    raise WontFit(
        f"{spec.id} at batch {settings.batch} in {settings.dtype} needs at least {format_bytes(need['total'])} on {device} "
        f"before its first layer (pixel input {format_bytes(need['input'])} + one hidden state of {spec.tokens_in:,} "
        f"tokens x width {spec.enc.hidden} = {format_bytes(need['hidden'])}), more than the {format_bytes(avail)} available "
        f"({source}); choose a smaller resolution or batch"
    )
