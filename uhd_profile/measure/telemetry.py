"""GPU power, clocks, temperature and clock-event (throttle) reasons sampled by NVML while timing.

See docs/measurement.md, "Energy and clocks". Use :class:`NvmlSampler` as a context manager around the
timed iterations::

    with NvmlSampler("cuda:0") as s:
        run_timed_iterations()
    tel = s.result()            # Telemetry; available=False with a reason on a CPU box
    tel.energy_per_image_j(images)

A sample is taken when the window opens, every ``interval_s`` in a daemon thread, and when it closes,
so integrated power covers the whole window. Energy comes from NVML's total-energy counter
(millijoules since the driver loaded) read at both ends of the window where the GPU supports it
(Volta and newer), otherwise from the trapezoid integral of the sampled power. Note that on recent
data-centre GPUs ``nvmlDeviceGetPowerUsage`` is itself a ~1 s moving average, so for windows of a
few seconds the counter is the figure to trust.

A sample is flagged ``slowdown`` when a slowdown reason bit is set (HW slowdown, HW thermal, HW power
brake, SW thermal, SW power cap; not idle, sync boost or applications-clocks bits) or, while the
GPU is not idle, when its SM clock is below 75% of the default applications clock. Idle samples are
exempt from the clock rule because an idle GPU parks its clocks low on purpose.

Nothing here raises because NVML is missing: without ``pynvml``, without a driver, or on a CPU device
the result is :func:`null_telemetry` with the reason.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from dataclasses import dataclass, field, fields
from typing import Any

import torch

# (name used in reports, suffix of pynvml's nvmlClocksEventReason*/nvmlClocksThrottleReason*, documented bit)
_REASONS: tuple[tuple[str, str, int], ...] = (
    ("gpu_idle", "GpuIdle", 0x1),
    ("applications_clocks_setting", "ApplicationsClocksSetting", 0x2),
    ("sw_power_cap", "SwPowerCap", 0x4),
    ("hw_slowdown", "HwSlowdown", 0x8),
    ("sync_boost", "SyncBoost", 0x10),
    ("sw_thermal", "SwThermalSlowdown", 0x20),
    ("hw_thermal", "HwThermalSlowdown", 0x40),
    ("hw_power_brake", "HwPowerBrakeSlowdown", 0x80),
    ("display_clock_setting", "DisplayClockSetting", 0x100),
    ("board_limit", "BoardLimit", 0x200),  # only in the deprecated throttle-reason set
    ("reliability", "Reliability", 0x400),  # idem
)
SLOWDOWN_REASONS = ("hw_slowdown", "hw_thermal", "hw_power_brake", "sw_thermal", "sw_power_cap")
CLOCK_RULE_FRACTION = 0.75

ENERGY_COUNTER = "total_energy_counter"
ENERGY_INTEGRATED = "integrated_power"

# Documented NVML enum values, used only when the module does not define them.
_NVML_CLOCK_SM = 1
_NVML_TEMPERATURE_GPU = 0
_NVML_CLOCK_ID_APP_CLOCK_TARGET = 1
_NVML_CLOCK_ID_APP_CLOCK_DEFAULT = 2


def reason_bits(nvml=None) -> dict[str, int]:
    """Reason name -> bit, from the module's constants by name, else the documented value."""
    out = {}
    for name, suffix, documented in _REASONS:
        value = None
        for prefix in ("nvmlClocksEventReason", "nvmlClocksThrottleReason"):
            value = getattr(nvml, prefix + suffix, None) if nvml is not None else None
            if value is not None:
                break
        out[name] = int(documented if value is None else value)
    return out


def decode_reasons(mask: int, bits: dict[str, int]) -> list[str]:
    """Names of the bits set in ``mask``, in bit order; unknown bits as ``unknown_0x...``."""
    names = [n for n, b in sorted(bits.items(), key=lambda kv: kv[1]) if mask & b]
    rest = mask & ~functools.reduce(lambda a, b: a | b, bits.values(), 0)
    bit = 1
    while rest:
        if rest & bit:
            names.append(f"unknown_{bit:#x}")
            rest &= ~bit
        bit <<= 1
    return names


@dataclass(slots=True)
class TelemetrySample:
    t_s: float  # seconds since the window opened
    power_w: float | None
    sm_clock_mhz: int | None
    temp_c: int | None
    throttle_reasons: int | None  # raw clock-event reason mask
    slowdown: bool


@dataclass
class Telemetry:
    available: bool
    telemetry_reason: str | None  # why not available (or what stopped sampling early)
    gpu_name: str | None
    gpu_uuid: str | None
    samples: list[TelemetrySample]
    energy_j: float | None  # over the sampled window
    energy_method: str | None  # "total_energy_counter" or "integrated_power"
    mean_power_w: float | None  # arithmetic mean of the sampled power readings
    max_temp_c: int | None
    min_sm_clock_mhz: int | None
    default_sm_clock_mhz: int | None  # default applications clock used for the 75% rule
    throttled_fraction: float | None  # share of samples flagged slowdown
    throttle_reasons_seen: list[str] = field(default_factory=list)
    clocks_locked: bool | None = None  # True only on evidence; None when NVML cannot tell
    window_s: float | None = None  # length of the sampled window

    def energy_per_image_j(self, images: int) -> float | None:
        if images <= 0:
            raise ValueError(f"images must be positive, got {images}")
        return None if self.energy_j is None else self.energy_j / images


def null_telemetry(reason: str) -> Telemetry:
    """No telemetry, because of ``reason``: no samples, every reading None."""
    none: dict[str, Any] = {f.name: None for f in fields(Telemetry)}
    return Telemetry(**{**none, "available": False, "telemetry_reason": reason, "samples": [], "throttle_reasons_seen": []})


def import_nvml():
    """(pynvml module, None) or (None, why not)."""
    try:
        import pynvml
    except ImportError as e:
        return None, f"pynvml not installed ({e})"
    return pynvml, None


def _text(v) -> str | None:
    if v is None:
        return None
    return v.decode(errors="replace") if isinstance(v, (bytes, bytearray)) else str(v)


def nvml_handle(nvml, device: torch.device):
    """NVML handle of a torch CUDA device.

    With CUDA present, by UUID (immune to CUDA_VISIBLE_DEVICES and CUDA_DEVICE_ORDER), then by
    torch's CUDA_VISIBLE_DEVICES-aware index; otherwise (and as a last resort) by the index itself.
    """
    index = device.index
    if torch.cuda.is_available():
        if index is None:
            index = torch.cuda.current_device()
        by_uuid = getattr(nvml, "nvmlDeviceGetHandleByUUID", None)
        uuid = None
        with contextlib.suppress(Exception):
            uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
        if by_uuid is not None and uuid is not None:
            try:
                return by_uuid(f"GPU-{uuid}".encode())
            except Exception:
                pass
        with contextlib.suppress(Exception):
            index = torch.cuda._get_nvml_device_index(index)
    return nvml.nvmlDeviceGetHandleByIndex(0 if index is None else index)


class NvmlSampler:
    """Background NVML sampling over a ``with`` block. Never raises because NVML is unusable."""

    def __init__(self, device: torch.device | str, interval_s: float = 0.02, nvml=None):
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {interval_s}")
        self.interval_s = float(interval_s)
        self._reason: str | None = None
        self._nvml = nvml
        self._err = getattr(nvml, "NVMLError", Exception)
        self._initialised = False
        self._entered = False
        self._samples: list[TelemetrySample] = []
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._thread_error: str | None = None
        self.device: torch.device | None
        try:
            self.device = torch.device(device)
        except (RuntimeError, TypeError) as e:
            self.device = None
            self._reason = f"not a torch device: {device!r} ({e})"
            return
        if self.device.type != "cuda":
            self._reason = f"device is {self.device.type}"
            return
        if nvml is None:
            self._nvml, self._reason = import_nvml()
            self._err = getattr(self._nvml, "NVMLError", Exception)

    # -- set-up ---------------------------------------------------------------------------------

    def _static(self, fn_name: str, *args):
        """One static query; None if the function is missing or NVML refuses."""
        fn = getattr(self._nvml, fn_name, None)
        if fn is None:
            return None
        try:
            return fn(self._handle, *args)
        except self._err:
            return None

    def _bind(self, fn_name: str, *args):
        fn = getattr(self._nvml, fn_name, None)
        return None if fn is None else functools.partial(fn, self._handle, *args)

    def __enter__(self) -> NvmlSampler:
        if self._reason is not None or self.device is None:
            return self
        nv = self._nvml
        try:
            nv.nvmlInit()
        except Exception as e:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
            self._reason = f"NVML init failed: {e}"
            return self
        self._initialised = True
        try:
            self._handle = nvml_handle(nv, self.device)
        except Exception as e:
            self._reason = f"NVML has no handle for {self.device}: {e}"
            self._shutdown()
            return self
        clock_sm = getattr(nv, "NVML_CLOCK_SM", _NVML_CLOCK_SM)
        self._bits = reason_bits(nv)
        self._slow_mask = functools.reduce(lambda a, n: a | self._bits[n], SLOWDOWN_REASONS, 0)
        self._idle_bit = self._bits["gpu_idle"]
        self._name = _text(self._static("nvmlDeviceGetName"))
        self._uuid = _text(self._static("nvmlDeviceGetUUID"))
        default = self._static(
            "nvmlDeviceGetClock", clock_sm, getattr(nv, "NVML_CLOCK_ID_APP_CLOCK_DEFAULT", _NVML_CLOCK_ID_APP_CLOCK_DEFAULT)
        )
        if default is None:  # deprecated, still the only call on older drivers
            default = self._static("nvmlDeviceGetDefaultApplicationsClock", clock_sm)
        self._default_clock = int(default) if default else None
        target = self._static(
            "nvmlDeviceGetClock", clock_sm, getattr(nv, "NVML_CLOCK_ID_APP_CLOCK_TARGET", _NVML_CLOCK_ID_APP_CLOCK_TARGET)
        )
        if target is None:
            target = self._static("nvmlDeviceGetApplicationsClock", clock_sm)
        self._app_target_clock = int(target) if target else None

        self._read_power = self._bind("nvmlDeviceGetPowerUsage")
        self._read_clock = self._bind("nvmlDeviceGetClockInfo", clock_sm)
        self._read_temp = self._bind("nvmlDeviceGetTemperature", getattr(nv, "NVML_TEMPERATURE_GPU", _NVML_TEMPERATURE_GPU))
        self._read_reasons = self._bind("nvmlDeviceGetCurrentClocksEventReasons") or self._bind(
            "nvmlDeviceGetCurrentClocksThrottleReasons"
        )
        self._read_energy = self._bind("nvmlDeviceGetTotalEnergyConsumption")

        self._samples = []
        self._stop.clear()
        self._thread_error = None
        self._t_end: float | None = None
        self._t0 = time.perf_counter()
        self._energy_start = self._read("_read_energy")
        self._entered = True
        if self._safe_sample():
            self._thread = threading.Thread(target=self._run, name="uhd-profile-nvml", daemon=True)
            self._thread.start()
        return self

    # -- sampling -------------------------------------------------------------------------------

    def _read(self, attr: str):
        """Call a bound reader; on an NVML error disable it for the rest of the window."""
        fn = getattr(self, attr)
        if fn is None:
            return None
        try:
            return fn()
        except self._err:
            setattr(self, attr, None)
            return None

    def _sample(self) -> None:
        t = time.perf_counter() - self._t0
        mw = self._read("_read_power")
        clock = self._read("_read_clock")
        temp = self._read("_read_temp")
        mask = self._read("_read_reasons")
        slow = False
        if (
            mask is not None
            and mask & self._slow_mask
            or (
                clock is not None
                and self._default_clock
                and not (mask is not None and mask & self._idle_bit)
                and clock < CLOCK_RULE_FRACTION * self._default_clock
            )
        ):
            slow = True
        self._samples.append(TelemetrySample(t, None if mw is None else mw / 1000.0, clock, temp, mask, slow))

    def _safe_sample(self) -> bool:
        try:
            self._sample()
        except Exception as e:  # not an NVML error: end sampling, never the caller
            self._thread_error = self._thread_error or f"sampling stopped early: {type(e).__name__}: {e}"
            return False
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            if not self._safe_sample():
                return

    # -- tear-down ------------------------------------------------------------------------------

    def _shutdown(self) -> None:
        if self._initialised:
            self._initialised = False
            with contextlib.suppress(Exception):
                self._nvml.nvmlShutdown()

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self._entered:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval_s + 2.0)
            if self._thread.is_alive():  # stuck inside an NVML call: leave the daemon behind
                self._thread_error = "sampling thread did not stop within 2 s"
        if self._thread is None or not self._thread.is_alive():
            self._thread = None
            if self._thread_error is None:
                self._safe_sample()
        self._energy_end = self._read("_read_energy")
        self._t_end = time.perf_counter() - self._t0
        self._entered = False
        if self._thread is None:  # never shut NVML down under a thread still inside a call
            self._shutdown()

    # -- result ---------------------------------------------------------------------------------

    def result(self) -> Telemetry:
        if self._reason is not None:
            return null_telemetry(self._reason)
        if not hasattr(self, "_t0"):
            return null_telemetry("sampler was never entered")
        samples = list(self._samples)
        window = self._t_end if self._t_end is not None else time.perf_counter() - self._t0

        energy = method = None
        end = getattr(self, "_energy_end", None) if self._t_end is not None else None
        if self._energy_start is not None and end is not None and end >= self._energy_start:
            energy, method = (end - self._energy_start) / 1000.0, ENERGY_COUNTER
        else:
            pts = [(s.t_s, s.power_w) for s in samples if s.power_w is not None]
            if len(pts) >= 2:
                energy = sum((t1 - t0) * (p0 + p1) / 2.0 for (t0, p0), (t1, p1) in zip(pts, pts[1:]))
                method = ENERGY_INTEGRATED

        powers = [s.power_w for s in samples if s.power_w is not None]
        temps = [s.temp_c for s in samples if s.temp_c is not None]
        clocks = [s.sm_clock_mhz for s in samples if s.sm_clock_mhz is not None]
        seen = 0
        for s in samples:
            if s.throttle_reasons is not None:
                seen |= s.throttle_reasons
        locked = None
        if self._app_target_clock and self._default_clock and self._app_target_clock != self._default_clock:
            locked = True  # application clocks were set away from the default

        return Telemetry(
            available=True,
            telemetry_reason=self._thread_error,
            gpu_name=self._name,
            gpu_uuid=self._uuid,
            samples=samples,
            energy_j=energy,
            energy_method=method,
            mean_power_w=sum(powers) / len(powers) if powers else None,
            max_temp_c=max(temps) if temps else None,
            min_sm_clock_mhz=min(clocks) if clocks else None,
            default_sm_clock_mhz=self._default_clock,
            throttled_fraction=sum(s.slowdown for s in samples) / len(samples) if samples else None,
            throttle_reasons_seen=decode_reasons(seen, self._bits),
            clocks_locked=locked,
            window_s=window,
        )
