"""Dtypes of a measurement: resolving ``auto`` (what is fast on this device) into fp32, bf16 or fp16.

Dtype *names* are parsed in one place, ``uhd_profile.units.parse_dtype`` (``parse_dtype(x,
auto=True)`` accepts ``auto``). This module decides what ``auto`` becomes, for a recipe's
``dtypes = ["auto"]`` (``uhd_profile.run.recipe``, once per sweep) and for ``uhd-profile bench
--dtype auto`` alike, and records why (`DtypeChoice`: the dtype and a one-line reason with the
numbers compared).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from uhd_profile.errors import UhdProfileError
from uhd_profile.measure.env import static_fields
from uhd_profile.measure.roofline import Peak, cpu_peak
from uhd_profile.units import AUTO_DTYPE, DTYPES, parse_dtype

__all__ = ["AUTO_DTYPE", "AUTO_CALIBRATION_N", "AUTO_CALIBRATION_S", "DtypeChoice", "Peak", "choose_dtype", "resolve_dtype"]

AUTO_CALIBRATION_N = 512
"""Side of the square matmuls the CPU choice compares (small: bf16 without native support is slow)."""
AUTO_CALIBRATION_S = 0.2
"""Seconds each dtype's calibration runs (at least two matmuls each)."""


@dataclass(frozen=True)
class DtypeChoice:
    """The dtype ``auto`` resolved to on one device kind, and why (one line, with the numbers)."""

    dtype: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"dtype": self.dtype, "reason": self.reason}

    @classmethod
    def from_dict(cls, d: object) -> DtypeChoice:
        if not isinstance(d, dict) or d.get("dtype") not in DTYPES or not isinstance(d.get("reason"), str):
            raise UhdProfileError(
                f"recorded dtype choice {d!r} is not valid: needs dtype (one of {', '.join(DTYPES)}) and reason"
            )
        return cls(str(d["dtype"]), str(d["reason"]))


_CHOICES: dict[tuple[str, int], DtypeChoice] = {}


def choose_dtype(device: str = "cpu", threads: int | None = None) -> DtypeChoice:
    """Resolve ``auto`` for ``device`` (``cpu`` or ``cuda[:N]``), once per process (cached).

    CPU: bf16 and fp32 square matmuls (`cpu_peak`, ``AUTO_CALIBRATION_N``, interleaved twice so a
    load change hits both) on the thread count the measurement uses; the faster one wins (CPUs
    without native bf16 run it far slower than fp32, those with AMX far faster). CUDA: bf16 where
    the GPU supports it, else fp16 (tensor cores on Volta and Turing). The reason names the numbers.
    """
    kind = "cuda" if str(device).startswith("cuda") else "cpu"
    n_threads = threads if threads is not None else torch.get_num_threads()
    key = (str(device) if kind == "cuda" else "cpu", n_threads)
    if key in _CHOICES:
        return _CHOICES[key]
    if kind == "cuda":
        name = torch.cuda.get_device_name(device) if torch.cuda.is_available() else "no CUDA device"
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            choice = DtypeChoice("bf16", f"auto: bf16 on {name} (supported natively: tensor cores)")
        else:
            choice = DtypeChoice("fp16", f"auto: fp16 on {name} (no native bf16 here; fp16 runs on its tensor cores)")
    else:
        best: dict[str, float] = {}
        for dt in ("fp32", "bf16", "fp32", "bf16"):
            p = cpu_peak(dt, seconds=AUTO_CALIBRATION_S, n=AUTO_CALIBRATION_N, threads=n_threads)
            best[dt] = max(best.get(dt, 0.0), p.flops_per_s)
        winner = max(best, key=lambda d: best[d])
        loser = "bf16" if winner == "fp32" else "fp32"
        cpu_model = static_fields().get("cpu_model") or "unknown CPU"
        choice = DtypeChoice(
            winner,
            f"auto: {winner} on {cpu_model}, {n_threads} thread(s): matmul {best[winner] / 1e9:,.1f} GFLOP/s vs "
            f"{loser} {best[loser] / 1e9:,.1f} GFLOP/s ({AUTO_CALIBRATION_N}x{AUTO_CALIBRATION_N}, best of "
            f"{AUTO_CALIBRATION_S:g} s twice each)",
        )
    _CHOICES[key] = choice
    return choice


def resolve_dtype(dtype: str, device: str = "cpu", threads: int | None = None) -> tuple[str, DtypeChoice | None]:
    """``(canonical dtype, choice)``: ``auto`` resolved by `choose_dtype` for ``device`` and
    ``threads`` (``choice`` says what and why), any other name canonical with ``choice`` None."""
    canon = parse_dtype(dtype, auto=True)
    if canon != AUTO_DTYPE:
        return canon, None
    choice = choose_dtype(device, threads)
    return choice.dtype, choice
