"""Which device a measurement runs on: one resolver for every probe, with one-line errors."""

from __future__ import annotations

import torch

from uhd_profile.errors import UhdProfileError

VALID = "auto, cpu, cuda, cuda:N"


def available_devices() -> list[str]:
    """Device strings this process can use, e.g. ``["cpu", "cuda:0"]``."""
    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return found


def resolve_device(requested: torch.device | str) -> torch.device:
    """``auto`` -> the first GPU, else the CPU (the only request that may fall back);
    ``cpu``, ``cuda`` (the current GPU) and ``cuda:N`` must exist, or a one-line
    ``UhdProfileError`` names the request and lists the devices found."""
    found = available_devices()
    if requested == "auto":
        return torch.device("cuda", torch.cuda.current_device()) if len(found) > 1 else torch.device("cpu")
    try:
        dev = torch.device(requested)
    except (RuntimeError, TypeError, ValueError):
        raise UhdProfileError(f"device {requested!r} is not a device; valid: {VALID} (found: {', '.join(found)})") from None
    if dev.type == "cpu":
        return dev
    if dev.type != "cuda":
        raise UhdProfileError(f"device {str(dev)!r} is not supported for measurement; valid: {VALID} (found: {', '.join(found)})")
    if not torch.cuda.is_available():
        raise UhdProfileError(
            f"device {str(dev)!r} requested but CUDA is not available on this machine; devices found: {', '.join(found)}"
        )
    dev = torch.device("cuda", torch.cuda.current_device() if dev.index is None else dev.index)
    if str(dev) not in found:
        raise UhdProfileError(f"device {str(dev)!r} requested but there is no such device; devices found: {', '.join(found)}")
    return dev
