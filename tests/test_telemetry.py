"""NVML telemetry against a FAKE NVML module (FakeNvml below); the real one only on a GPU box."""

import sys
import threading
import time

import pytest
import torch

from uhd_profile.measure.telemetry import NvmlSampler, Telemetry, decode_reasons, null_telemetry, reason_bits

# pynvml's clock-event reason bits (documented values)
IDLE, APP, SW_POWER, HW_SLOW, SYNC, SW_THERM, HW_THERM, HW_BRAKE = 0x1, 0x2, 0x4, 0x8, 0x10, 0x20, 0x40, 0x80


class FakeNVMLError(Exception):
    """Stands in for pynvml.NVMLError: deliberately unrelated to any real exception class."""


class FakeNvml:
    """A FAKE NVML module (not the real driver): scripted per-call values, clearly not hardware.

    Each reader returns the next value of its script on every call and repeats the last one, so
    the i-th sample sees script[i] whatever the thread's timing. A script entry that is an exception
    instance is raised instead.
    """

    NVMLError = FakeNVMLError
    NVML_CLOCK_SM = 1
    NVML_TEMPERATURE_GPU = 0
    NVML_CLOCK_ID_CURRENT = 0
    NVML_CLOCK_ID_APP_CLOCK_TARGET = 1
    NVML_CLOCK_ID_APP_CLOCK_DEFAULT = 2
    nvmlClocksEventReasonGpuIdle = IDLE
    nvmlClocksEventReasonApplicationsClocksSetting = APP
    nvmlClocksEventReasonSwPowerCap = SW_POWER
    nvmlClocksEventReasonHwSlowdown = HW_SLOW
    nvmlClocksEventReasonSyncBoost = SYNC
    nvmlClocksEventReasonSwThermalSlowdown = SW_THERM
    nvmlClocksEventReasonHwThermalSlowdown = HW_THERM
    nvmlClocksEventReasonHwPowerBrakeSlowdown = HW_BRAKE
    nvmlClocksEventReasonDisplayClockSetting = 0x100

    def __init__(
        self,
        power_mw=(250_000,),
        sm_clock=(1400,),
        temp=(60,),
        reasons=(0,),
        energy_mj=(1_000_000, 1_012_500),
        default_clock=1400,
        app_target_clock=1400,
        init_error=None,
        name=b"Fake GPU (not real)",
        uuid=b"GPU-fake-0000",
    ):
        self.scripts = {
            "power": list(power_mw),
            "clock": list(sm_clock),
            "temp": list(temp),
            "reasons": list(reasons),
            "energy": list(energy_mj),
        }
        self.calls = dict.fromkeys(self.scripts, 0)
        self.default_clock = default_clock
        self.app_target_clock = app_target_clock
        self.init_error = init_error
        self.name, self.uuid = name, uuid
        self.inits = self.shutdowns = 0
        self.handle_index = None
        self.lock = threading.Lock()

    def _next(self, key):
        with self.lock:
            script, i = self.scripts[key], self.calls[key]
            self.calls[key] += 1
        v = script[min(i, len(script) - 1)]
        if isinstance(v, BaseException):
            raise v
        return v

    def nvmlInit(self):
        if self.init_error is not None:
            raise self.init_error
        self.inits += 1

    def nvmlShutdown(self):
        self.shutdowns += 1

    def nvmlDeviceGetHandleByIndex(self, index):
        self.handle_index = index
        return ("fake-handle", index)

    def nvmlDeviceGetName(self, handle):
        return self.name

    def nvmlDeviceGetUUID(self, handle):
        return self.uuid

    def nvmlDeviceGetClock(self, handle, clock_type, clock_id):
        assert clock_type == self.NVML_CLOCK_SM
        if clock_id == self.NVML_CLOCK_ID_APP_CLOCK_DEFAULT:
            return self.default_clock
        if clock_id == self.NVML_CLOCK_ID_APP_CLOCK_TARGET:
            return self.app_target_clock
        raise FakeNVMLError("not supported")

    def nvmlDeviceGetPowerUsage(self, handle):  # milliwatts
        return self._next("power")

    def nvmlDeviceGetClockInfo(self, handle, clock_type):  # MHz
        assert clock_type == self.NVML_CLOCK_SM
        return self._next("clock")

    def nvmlDeviceGetTemperature(self, handle, sensor):  # °C
        assert sensor == self.NVML_TEMPERATURE_GPU
        return self._next("temp")

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle):
        return self._next("reasons")

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):  # millijoules since driver load
        return self._next("energy")


def _no_sampler_threads():
    return not any(t.name == "uhd-profile-nvml" for t in threading.enumerate())


# ---------------------------------------------------------------------------------------------


def test_energy_from_the_total_energy_counter():
    fake = FakeNvml(energy_mj=(1_000_000, 1_012_500))
    with NvmlSampler("cuda:0", interval_s=0.01, nvml=fake) as s:
        time.sleep(0.05)
    tel = s.result()
    assert isinstance(tel, Telemetry) and tel.available and tel.telemetry_reason is None
    assert tel.energy_method == "total_energy_counter"
    assert tel.energy_j == pytest.approx(12.5)
    assert tel.energy_per_image_j(5) == pytest.approx(2.5)
    assert tel.mean_power_w == pytest.approx(250.0)
    assert tel.gpu_name == "Fake GPU (not real)" and tel.gpu_uuid == "GPU-fake-0000"  # bytes decoded
    assert tel.default_sm_clock_mhz == 1400
    assert fake.inits == 1 and fake.shutdowns == 1
    if not torch.cuda.is_available():  # with CUDA, the index goes through CUDA_VISIBLE_DEVICES
        assert fake.handle_index == 0
    assert tel.window_s >= 0.05
    with pytest.raises(ValueError):
        tel.energy_per_image_j(0)


def test_energy_integrated_when_the_counter_raises_the_modules_nvml_error():
    # A long interval: only the opening and closing samples, with 100 W then 300 W.
    fake = FakeNvml(power_mw=(100_000, 300_000), energy_mj=(FakeNVMLError("Not Supported"),))
    with NvmlSampler("cuda:0", interval_s=30.0, nvml=fake) as s:
        time.sleep(0.05)
    tel = s.result()
    assert tel.available and tel.energy_method == "integrated_power"
    a, b = tel.samples
    assert (a.power_w, b.power_w) == (100.0, 300.0)
    assert tel.energy_j == pytest.approx((b.t_s - a.t_s) * 200.0)  # trapezoid
    assert tel.energy_j == pytest.approx(tel.window_s * 200.0, rel=0.05)
    assert fake.calls["energy"] == 1  # a refusing counter is not asked again


def test_counter_failing_only_at_the_end_falls_back_to_integration():
    fake = FakeNvml(power_mw=(200_000,), energy_mj=(5_000, FakeNVMLError("GPU is lost")))
    with NvmlSampler("cuda:0", interval_s=0.01, nvml=fake) as s:
        time.sleep(0.05)
    tel = s.result()
    assert tel.energy_method == "integrated_power"
    assert tel.energy_j == pytest.approx(200.0 * (tel.samples[-1].t_s - tel.samples[0].t_s))


def test_slowdown_flags_from_bits_and_the_75_percent_clock_rule():
    script = [  # (reason mask, SM clock MHz, expected slowdown) with a 1400 MHz default clock
        (0, 1400, False),
        (HW_SLOW, 1400, True),
        (0, 1000, True),  # below 0.75 * 1400 = 1050
        (0, 1100, False),
        (IDLE, 300, False),  # idle parks the clock low: not a slowdown
        (SYNC | APP, 1400, False),  # not slowdown bits
        (SW_THERM, 1400, True),
        (SW_POWER, 1400, True),
        (HW_THERM, 1400, True),
        (HW_BRAKE, 1400, True),
        (0, 300, True),  # low clock while not idle
        (0, 1400, False),  # repeated from here on
    ]
    fake = FakeNvml(reasons=[m for m, _, _ in script], sm_clock=[c for _, c, _ in script])
    with NvmlSampler("cuda:0", interval_s=0.002, nvml=fake) as s:
        deadline = time.monotonic() + 2.0
        while len(s._samples) < len(script) + 2 and time.monotonic() < deadline:
            time.sleep(0.01)  # samples keep coming while the caller sleeps
    tel = s.result()
    assert len(tel.samples) >= len(script) + 2
    got = [(x.throttle_reasons, x.sm_clock_mhz, x.slowdown) for x in tel.samples[: len(script)]]
    assert got == script
    assert all(not x.slowdown for x in tel.samples[len(script) :])
    assert tel.throttled_fraction == pytest.approx(7 / len(tel.samples))
    assert tel.min_sm_clock_mhz == 300
    assert tel.throttle_reasons_seen == [
        "gpu_idle",
        "applications_clocks_setting",
        "sw_power_cap",
        "hw_slowdown",
        "sync_boost",
        "sw_thermal",
        "hw_thermal",
        "hw_power_brake",
    ]
    ts = [x.t_s for x in tel.samples]
    assert ts == sorted(ts) and ts[0] >= 0


def test_samples_collected_during_a_sleep_and_thread_stops_promptly():
    fake = FakeNvml(temp=(50, 61, 72, 65))
    t0 = time.perf_counter()
    with NvmlSampler("cuda:0", interval_s=0.01, nvml=fake) as s:
        assert s._thread is not None and s._thread.is_alive()
        time.sleep(0.2)
    assert time.perf_counter() - t0 < 0.5
    assert s._thread is None and _no_sampler_threads()
    tel = s.result()
    assert len(tel.samples) >= 5  # ~20 expected; generous for a loaded CI box
    assert tel.max_temp_c == 72
    calls = dict(fake.calls)
    time.sleep(0.05)
    assert fake.calls == calls  # nothing samples after exit
    assert len(s.result().samples) == len(tel.samples)


def test_exit_does_not_wait_for_a_long_interval_and_exceptions_propagate():
    fake = FakeNvml()
    t0 = time.perf_counter()
    with pytest.raises(KeyError), NvmlSampler("cuda:0", interval_s=60.0, nvml=fake) as s:
        raise KeyError("from the timed body")
    assert time.perf_counter() - t0 < 1.0
    assert _no_sampler_threads() and fake.shutdowns == 1
    assert len(s.result().samples) == 2  # opening and closing samples


def test_a_reader_failing_with_nvml_error_is_dropped_not_fatal():
    fake = FakeNvml(power_mw=(150_000, FakeNVMLError("Not Supported"), 999_000))
    with NvmlSampler("cuda:0", interval_s=0.005, nvml=fake) as s:
        time.sleep(0.05)
    tel = s.result()
    assert tel.available and tel.telemetry_reason is None
    assert tel.samples[0].power_w == 150.0
    assert all(x.power_w is None for x in tel.samples[1:])
    assert fake.calls["power"] == 2
    assert tel.energy_method == "total_energy_counter"


def test_unexpected_errors_end_sampling_but_never_the_caller():
    fake = FakeNvml(temp=(60, ValueError("driver hiccup")))
    with NvmlSampler("cuda:0", interval_s=0.005, nvml=fake) as s:
        time.sleep(0.05)
    tel = s.result()
    assert tel.available and "sampling stopped early" in tel.telemetry_reason and "driver hiccup" in tel.telemetry_reason
    assert len(tel.samples) == 1 and _no_sampler_threads()


def test_clocks_locked_only_on_evidence():
    with NvmlSampler("cuda:0", interval_s=1.0, nvml=FakeNvml(app_target_clock=1200)) as s:
        pass
    assert s.result().clocks_locked is True
    with NvmlSampler("cuda:0", interval_s=1.0, nvml=FakeNvml(app_target_clock=1400)) as s:
        pass
    assert s.result().clocks_locked is None  # NVML cannot read locked GPU clocks: not "False"


def test_device_index_is_passed_to_nvml():
    fake = FakeNvml()
    with NvmlSampler(torch.device("cuda", 3), interval_s=1.0, nvml=fake):
        pass
    if not torch.cuda.is_available():
        assert fake.handle_index == 3


# ---------------------------------------------------------------------------------------------
# reason bits


def test_reason_bits_by_name_with_fallbacks():
    documented = reason_bits(None)
    assert documented["hw_slowdown"] == 0x8 and documented["sw_power_cap"] == 0x4
    assert reason_bits(FakeNvml()) == documented

    class OldNames:  # only the deprecated throttle-reason names, one with a made-up value
        nvmlClocksThrottleReasonHwSlowdown = 0x800

    assert reason_bits(OldNames)["hw_slowdown"] == 0x800
    assert reason_bits(OldNames)["hw_thermal"] == 0x40


def test_decode_reasons_names_and_unknown_bits():
    bits = reason_bits(None)
    assert decode_reasons(0, bits) == []
    assert decode_reasons(HW_THERM | IDLE | 0x1000, bits) == ["gpu_idle", "hw_thermal", "unknown_0x1000"]


def test_real_pynvml_constants_agree_with_the_documented_bits():
    pynvml = pytest.importorskip("pynvml")
    assert reason_bits(pynvml) == reason_bits(None)


# ---------------------------------------------------------------------------------------------
# NVML absent


def _assert_null(tel, reason_part):
    assert tel.available is False and reason_part in tel.telemetry_reason
    assert tel.samples == [] and tel.energy_j is None and tel.energy_per_image_j(4) is None
    assert tel.throttled_fraction is None and tel.throttle_reasons_seen == []
    from dataclasses import asdict

    from uhd_profile.measure.schema import fill

    assert asdict(tel)["available"] is False
    assert fill({}, tel) == {
        "telemetry_reason": tel.telemetry_reason,
        "mean_power_w": None,
        "max_temp_c": None,
        "throttled_fraction": None,
    }  # what a record takes from it


def test_cpu_device_is_null_with_reason():
    with NvmlSampler("cpu", nvml=FakeNvml()) as s:
        pass
    _assert_null(s.result(), "device is cpu")
    _assert_null(null_telemetry("because"), "because")


def test_pynvml_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError
    with NvmlSampler("cuda:0") as s:
        time.sleep(0.01)
    _assert_null(s.result(), "pynvml not installed")


def test_nvml_init_failure():
    fake = FakeNvml(init_error=FakeNVMLError("Driver Not Loaded"))
    with NvmlSampler("cuda:0", nvml=fake) as s:
        pass
    _assert_null(s.result(), "NVML init failed: Driver Not Loaded")
    assert fake.shutdowns == 0


def test_handle_failure():
    class NoDevice(FakeNvml):
        def nvmlDeviceGetHandleByIndex(self, index):
            raise FakeNVMLError("Invalid Argument")

    fake = NoDevice()
    with NvmlSampler("cuda:1", nvml=fake) as s:
        pass
    _assert_null(s.result(), "Invalid Argument")
    assert fake.inits == fake.shutdowns == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a box without a driver")
def test_real_pynvml_without_a_driver_does_not_crash():
    with NvmlSampler("cuda:0") as s:
        pass
    tel = s.result()
    assert tel.available is False and tel.telemetry_reason


def test_result_before_enter():
    tel = NvmlSampler("cuda:0", nvml=FakeNvml()).result()
    assert tel.available is False and "never entered" in tel.telemetry_reason


# ---------------------------------------------------------------------------------------------
# real NVML


@pytest.mark.gpu
def test_real_nvml_while_running_matmuls():
    pytest.importorskip("pynvml")
    a = torch.randn(2048, 2048, device="cuda")
    with NvmlSampler("cuda", interval_s=0.01) as s:
        t_end = time.perf_counter() + 0.5
        while time.perf_counter() < t_end:
            a = (a @ a).clamp_(-1, 1)
        torch.cuda.synchronize()
    tel = s.result()
    assert tel.available, tel.telemetry_reason
    assert tel.gpu_name and tel.gpu_uuid and tel.gpu_uuid.startswith(("GPU-", "MIG-"))
    assert len(tel.samples) >= 3
    assert tel.mean_power_w is None or tel.mean_power_w > 0
    assert tel.energy_j is None or tel.energy_j > 0
    assert tel.clocks_locked in (True, None)
    assert _no_sampler_threads()
