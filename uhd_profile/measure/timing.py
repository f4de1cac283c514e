"""Latency probe: per-iteration samples, a stop rule on the IQR, noise flags (docs/measurement.md, "Latency").

The protocol follows ``torch.utils.benchmark`` and Triton's ``do_bench``:

1. One untimed-for-statistics first call (compilation, allocator and cuBLAS workspace warm-up);
   its duration is still reported as ``first_call_s``.
2. Warm-up by count *and* by time: at least ``warmup_iters`` iterations and ``warmup_time_s``.
3. Measurement: every iteration is one raw sample, all kept. After each sample (CPU) or each chunk
   of samples (CUDA) the stop rule is checked:

   * ``"target_iqr"``: at least ``min_samples`` samples and ``min_time_s`` elapsed, and
     IQR/median < ``target_iqr``;
   * ``"max_samples"``: ``max_samples`` samples taken;
   * ``"time_limit"``: ``max_time_s`` elapsed.

   The first matching rule in that order wins. When the measurement stops for any reason but the
   target, ``LatencyStats.latency_unmet`` names every condition that was not met.

Timers. CPU: ``time.perf_counter_ns`` around each call (injectable ``clock_ns``; an optional
``sync`` is called inside the timed region). CUDA: one ``torch.cuda.Event`` pair per iteration,
recorded for a chunk of iterations sized to take about ``CHECK_INTERVAL_S``, then a single
synchronise per chunk and the stop rule on the whole chunk. Elapsed time for the stop rule is
read on the host clock (``clock_ns``) on both paths, so a fake clock fully determines behaviour.

Statistics use linear-interpolated percentiles, bit-identical to ``numpy.percentile``'s default
method, in pure Python (no per-sample numpy).
"""

from __future__ import annotations

import bisect
import math
import numbers
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from uhd_profile.errors import UhdProfileError
from uhd_profile.measure.devices import resolve_device

NOISY_AT = 0.10
"""IQR/median at or above which a measurement is flagged ``"noisy"``."""
UNRELIABLE_AT = 0.25
"""IQR/median at or above which a measurement is flagged ``"unreliable"``."""
CHECK_INTERVAL_S = 0.05
"""CUDA: target wall time of one chunk of iterations between synchronisations (seconds)."""
L2_FALLBACK_BYTES = 256 * 2**20
"""CUDA: L2 flush buffer size when the device does not report its L2 size (bytes)."""

STOP_REASONS = ("target_iqr", "max_samples", "time_limit")


# ---------------------------------------------------------------------------------------------
# Settings


def _bad(name: str, value: object, rule: str) -> UhdProfileError:
    text = f"TimingSettings.{name} = {value!r}: {rule}"
    return UhdProfileError(" ".join(text.splitlines()))


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


@dataclass(frozen=True)
class TimingSettings:
    """How long and how much to measure. Times in seconds. Validated on construction."""

    warmup_iters: int = 3
    """Warm-up runs at least this many iterations ..."""
    warmup_time_s: float = 0.2
    """... and at least this long (seconds)."""
    min_samples: int = 10
    """The target may only stop the measurement after this many samples."""
    min_time_s: float = 1.0
    """... and after this long (seconds)."""
    max_time_s: float = 30.0
    """Time limit of the measurement phase (seconds)."""
    target_iqr: float = 0.05
    """Stop when IQR/median < this (after the minimums); ``inf`` stops at the minimums."""
    max_samples: int = 100_000
    """Hard cap on the number of samples."""
    l2_flush: bool = False
    """CUDA only: overwrite a buffer the size of the L2 cache before each iteration (cold cache)."""

    def __post_init__(self) -> None:
        for name, minimum in (("warmup_iters", 0), ("min_samples", 1), ("max_samples", 1)):
            value = getattr(self, name)
            if not _is_int(value) or value < minimum:
                raise _bad(name, value, f"must be an integer >= {minimum}")
        for name in ("warmup_time_s", "min_time_s", "max_time_s"):
            value = getattr(self, name)
            if not _is_real(value) or not math.isfinite(value) or value < 0:
                raise _bad(name, value, "must be a finite number of seconds >= 0")
        if self.max_time_s <= 0:
            raise _bad("max_time_s", self.max_time_s, "must be > 0 seconds")
        if self.min_time_s > self.max_time_s:
            raise _bad("min_time_s", self.min_time_s, f"must be <= max_time_s ({self.max_time_s!r})")
        if self.max_samples < self.min_samples:
            raise _bad("max_samples", self.max_samples, f"must be >= min_samples ({self.min_samples!r})")
        if not _is_real(self.target_iqr) or math.isnan(self.target_iqr) or self.target_iqr <= 0:
            raise _bad("target_iqr", self.target_iqr, "must be a number > 0 (a fraction, e.g. 0.05 for 5%)")
        if not isinstance(self.l2_flush, bool):
            raise _bad("l2_flush", self.l2_flush, "must be True or False")


# ---------------------------------------------------------------------------------------------
# Statistics (pure)


def _quantile_sorted(xs: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile of sorted ``xs``, operation for operation like numpy's
    default ``method="linear"`` (virtual index (n-1)q, and numpy's two-sided lerp)."""
    n = len(xs)
    h = (n - 1) * q
    if h >= n - 1:
        return xs[-1]
    lo = math.floor(h)
    a, b = xs[lo], xs[lo + 1]
    t = h - lo
    d = b - a
    return b - d * (1 - t) if t >= 0.5 else a + d * t


def _iqr_over_median_sorted(xs: Sequence[float]) -> float:
    median = _quantile_sorted(xs, 50 / 100)
    iqr = _quantile_sorted(xs, 75 / 100) - _quantile_sorted(xs, 25 / 100)
    if median == 0:
        return 0.0 if iqr == 0 else math.inf
    return iqr / median


def summarize(samples_s: Sequence[float]) -> dict:
    """Median, p10, p90 (seconds), IQR/median ((q75 - q25) / median) and n of ``samples_s``.

    Percentiles are linear-interpolated exactly like ``numpy.percentile``'s default. Pure; the
    input is not modified. IQR/median is 0 for a zero-spread sample and ``inf`` for a zero median
    with a non-zero spread.
    """
    xs = sorted(samples_s)
    if not xs:
        raise ValueError("summarize: samples_s is empty; need at least one sample")
    return {
        "median": _quantile_sorted(xs, 50 / 100),
        "p10": _quantile_sorted(xs, 10 / 100),
        "p90": _quantile_sorted(xs, 90 / 100),
        "iqr_over_median": _iqr_over_median_sorted(xs),
        "n": len(xs),
    }


def noise_flag(iqr_over_median: float) -> str:
    """``"ok"`` below 10 %, ``"noisy"`` from 10 %, ``"unreliable"`` from 25 % (and for NaN)."""
    if not iqr_over_median < UNRELIABLE_AT:
        return "unreliable"
    if iqr_over_median >= NOISY_AT:
        return "noisy"
    return "ok"


# ---------------------------------------------------------------------------------------------
# Result


@dataclass
class LatencyStats:
    """What one latency measurement saw. All times in seconds. Field names are the record
    schema's metric names (``uhd_profile.measure.schema``), so a record takes them as they are."""

    latency_samples_s: list[float]
    """Every raw sample of the measurement phase, in order (seconds)."""
    latency_median_s: float
    latency_p10_s: float
    latency_p90_s: float
    latency_iqr_over_median: float
    """(q75 - q25) / median, unit-free (``inf`` for a zero median with a non-zero spread)."""
    latency_n: int
    stop_reason: str
    """``"target_iqr"``, ``"max_samples"`` or ``"time_limit"``."""
    latency_unmet: str | None
    """When the target did not stop it: the unmet conditions, ``"; "``-separated."""
    noise_flag: str
    """``"ok"``, ``"noisy"`` or ``"unreliable"`` (see ``noise_flag``)."""
    first_call_s: float
    """Duration of the first call, excluded from the samples (compilation, warm-up)."""
    warmup_iters: int
    """Warm-up iterations actually run (CUDA warms up in chunks, so may exceed the setting)."""
    warmup_s: float
    """Wall time of the warm-up (seconds)."""
    timer: str
    """``"perf_counter_ns"`` (host clock) or ``"cuda_events"``."""
    cache: str
    """``"hot"``, or ``"cold"`` when the L2 was flushed before each iteration."""


def _stop_reason(srt: list[float], n: int, elapsed_s: float, s: TimingSettings) -> str | None:
    if n >= s.min_samples and elapsed_s >= s.min_time_s and _iqr_over_median_sorted(srt) < s.target_iqr:
        return "target_iqr"
    if n >= s.max_samples:
        return "max_samples"
    if elapsed_s >= s.max_time_s:
        return "time_limit"
    return None


def _unmet(srt: list[float], n: int, elapsed_s: float, s: TimingSettings) -> str:
    unmet = []
    if n < s.min_samples:
        unmet.append(f"min_samples {s.min_samples} not reached ({n})")
    if elapsed_s < s.min_time_s:
        unmet.append(f"min_time_s {s.min_time_s:g} not reached ({elapsed_s:.3g} s)")
    ratio = _iqr_over_median_sorted(srt)
    if not ratio < s.target_iqr:
        unmet.append(f"IQR/median {ratio:.3g} >= target {s.target_iqr:g}")
    return "; ".join(unmet)


def _result(
    samples: list[float],
    srt: list[float],
    elapsed_s: float,
    reason: str,
    s: TimingSettings,
    first_call_s: float,
    warmup_iters: int,
    warmup_s: float,
    timer: str,
    cache: str,
) -> LatencyStats:
    st = summarize(samples)
    return LatencyStats(
        latency_samples_s=samples,
        latency_median_s=st["median"],
        latency_p10_s=st["p10"],
        latency_p90_s=st["p90"],
        latency_iqr_over_median=st["iqr_over_median"],
        latency_n=st["n"],
        stop_reason=reason,
        latency_unmet=None if reason == "target_iqr" else _unmet(srt, len(srt), elapsed_s, s),
        noise_flag=noise_flag(st["iqr_over_median"]),
        first_call_s=first_call_s,
        warmup_iters=warmup_iters,
        warmup_s=warmup_s,
        timer=timer,
        cache=cache,
    )


# ---------------------------------------------------------------------------------------------
# Probes


def time_forward(
    fn: Callable[[], object],
    device: torch.device | str = "cpu",
    settings: TimingSettings = TimingSettings(),
    clock_ns: Callable[[], int] | None = None,
    sync: Callable[[], None] | None = None,
) -> LatencyStats:
    """Time ``fn()`` (no arguments; close over the model and inputs) on ``device``.

    ``clock_ns`` (default ``time.perf_counter_ns``) is the host clock in integer nanoseconds: it
    times each CPU iteration, the first call and warm-up, and the elapsed time the stop rule
    sees. ``sync`` waits for the device: on CPU it is optional and called inside each timed
    region; on CUDA it defaults to ``torch.cuda.synchronize(device)`` and is called once per chunk.
    Thread count, dtype, grad mode etc. are the caller's to set and record.
    """
    if not callable(fn):
        raise UhdProfileError(f"time_forward: fn = {fn!r} is not callable")
    if not isinstance(settings, TimingSettings):
        raise UhdProfileError(f"time_forward: settings = {settings!r} is not a TimingSettings")
    dev = resolve_device(device)
    clock = time.perf_counter_ns if clock_ns is None else clock_ns
    if dev.type == "cpu":
        if settings.l2_flush:
            raise _bad("l2_flush", True, "the L2 flush is CUDA only; the device is 'cpu'")
        return _time_host(fn, settings, clock, sync)
    return _time_cuda(fn, dev, settings, clock, sync)


def _time_host(
    fn: Callable[[], object], s: TimingSettings, clock: Callable[[], int], sync: Callable[[], None] | None
) -> LatencyStats:
    if sync is not None:
        sync()
    t0 = clock()
    fn()
    if sync is not None:
        sync()
    t1 = clock()
    first_call_s = (t1 - t0) / 1e9

    start = now = t1
    k = 0
    while k < s.warmup_iters or (now - start) / 1e9 < s.warmup_time_s:
        fn()
        if sync is not None:
            sync()
        now = clock()
        k += 1
    warmup_s = (now - start) / 1e9

    # The hot loop: only the clock, fn (and sync) inside the timed region; the stop rule costs
    # one bisect.insort and, once the minimums are met, three quantiles per sample.
    samples: list[float] = []
    srt: list[float] = []
    append, insort = samples.append, bisect.insort
    begin = now
    while True:
        if sync is None:
            t0 = clock()
            fn()
            t1 = clock()
        else:
            t0 = clock()
            fn()
            sync()
            t1 = clock()
        dt = (t1 - t0) / 1e9
        append(dt)
        insort(srt, dt)
        elapsed = (t1 - begin) / 1e9
        reason = _stop_reason(srt, len(srt), elapsed, s)
        if reason is not None:
            break
    return _result(samples, srt, elapsed, reason, s, first_call_s, k, warmup_s, timer="perf_counter_ns", cache="hot")


def _l2_bytes(dev: torch.device) -> int:
    size = getattr(torch.cuda.get_device_properties(dev), "L2_cache_size", 0)
    return int(size) if size and size > 0 else L2_FALLBACK_BYTES


def _time_cuda(
    fn: Callable[[], object], dev: torch.device, s: TimingSettings, clock: Callable[[], int], sync: Callable[[], None] | None
) -> LatencyStats:
    with torch.cuda.device(dev):
        if sync is None:

            def sync() -> None:
                torch.cuda.synchronize(dev)

        flush = None
        if s.l2_flush:
            # Like nvbench: overwrite an L2-sized buffer before each iteration, outside the
            # timed events, so every iteration starts with none of its data in L2.
            buf = torch.empty(_l2_bytes(dev) // 4, dtype=torch.int32, device=dev)
            flush = buf.zero_

        sync()
        t0 = clock()
        fn()
        sync()
        t1 = clock()
        first_call_s = (t1 - t0) / 1e9

        # Warm-up in chunks with one synchronise each; the chunk grows to cover the remaining
        # warm-up time, capped at about CHECK_INTERVAL_S of work.
        start = now = t1
        k = 0
        chunk = max(1, s.warmup_iters)
        while k < s.warmup_iters or (now - start) / 1e9 < s.warmup_time_s:
            for _ in range(chunk):
                if flush is not None:
                    flush()
                fn()
            sync()
            now = clock()
            k += chunk
            per_iter = max((now - start) / 1e9 / k, 1e-9)
            left = s.warmup_time_s - (now - start) / 1e9
            chunk = max(1, min(math.ceil(left / per_iter), int(CHECK_INTERVAL_S / per_iter)))
        warmup_s = (now - start) / 1e9
        per_iter = max(warmup_s / k if k else first_call_s, 1e-9)

        starts: list[torch.cuda.Event] = []
        ends: list[torch.cuda.Event] = []
        samples: list[float] = []
        srt: list[float] = []
        begin = now
        elapsed = 0.0
        while True:
            chunk = max(1, int(CHECK_INTERVAL_S / per_iter))
            chunk = min(chunk, s.max_samples - len(samples), max(1, math.ceil((s.max_time_s - elapsed) / per_iter)))
            while len(starts) < chunk:  # events are reused across chunks after each sync
                starts.append(torch.cuda.Event(enable_timing=True))
                ends.append(torch.cuda.Event(enable_timing=True))
            t_chunk = clock()
            for i in range(chunk):
                if flush is not None:
                    flush()
                starts[i].record()
                fn()
                ends[i].record()
            sync()
            now = clock()
            for i in range(chunk):
                dt = starts[i].elapsed_time(ends[i]) / 1e3  # ms -> s
                samples.append(dt)
                bisect.insort(srt, dt)
            elapsed = (now - begin) / 1e9
            reason = _stop_reason(srt, len(srt), elapsed, s)
            if reason is not None:
                break
            per_iter = max((now - t_chunk) / 1e9 / chunk, 1e-9)
    return _result(
        samples, srt, elapsed, reason, s, first_call_s, k, warmup_s, timer="cuda_events", cache="cold" if s.l2_flush else "hot"
    )
