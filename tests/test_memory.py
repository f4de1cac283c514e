"""Memory measurement: real on CPU (Linux peak-RSS reset), CUDA path on a GPU box only."""

import os
import types

import pytest
import torch
from torch import nn

from uhd_profile.errors import UhdProfileError
from uhd_profile.measure import memory
from uhd_profile.measure.memory import (
    MemoryStats,
    cpu_peak_rss_supported,
    measure_cpu_in_child,
    measure_memory,
    model_bytes,
)

MiB = 2**20
needs_rss_reset = pytest.mark.skipif(not cpu_peak_rss_supported(), reason="needs /proc/self/clear_refs and VmHWM")


def _touch(nbytes: int):
    def fn():
        t = torch.empty(nbytes, dtype=torch.uint8)
        t.fill_(1)  # touch every page so it is resident
        return None  # freed on return: the peak must still see it

    return fn


# ---------------------------------------------------------------------------------------------
# weights


def test_model_bytes_linear_exact():
    assert model_bytes(nn.Linear(10, 7)) == (10 * 7 + 7) * 4
    assert model_bytes(nn.Linear(10, 7, bias=False).to(torch.float16)) == 10 * 7 * 2


def test_model_bytes_counts_buffers_and_shared_weights_once():
    bn = nn.BatchNorm1d(5)  # weight, bias, running_mean, running_var (fp32) + num_batches_tracked (int64)
    assert model_bytes(bn) == 4 * 5 * 4 + 8
    emb = nn.Embedding(11, 3)
    head = nn.Linear(3, 11, bias=False)
    head.weight = emb.weight  # tied
    assert model_bytes(nn.ModuleList([emb, head])) == 11 * 3 * 4


# ---------------------------------------------------------------------------------------------
# CPU, in process


@needs_rss_reset
def test_cpu_activation_matches_a_known_allocation_and_reset_works():
    model = nn.Linear(16, 16)
    big = measure_memory(_touch(200 * MiB), model, "cpu")
    assert isinstance(big, MemoryStats)
    assert big.memory_method == "clear_refs+VmHWM" and big.device == "cpu"
    assert big.weights_bytes == model_bytes(model)
    assert big.baseline_mem_bytes > 0 and big.peak_mem_bytes >= big.baseline_mem_bytes
    assert big.activation_mem_bytes == big.peak_mem_bytes - big.baseline_mem_bytes
    assert big.activation_mem_bytes == pytest.approx(200 * MiB, rel=0.15)
    assert big.reserved_peak_mem_bytes is None and big.nvml_used_mem_bytes is None

    # Without the reset the high-water mark would still hold the 200 MiB peak.
    small = measure_memory(_touch(60 * MiB), model, torch.device("cpu"))
    assert small.activation_mem_bytes == pytest.approx(60 * MiB, rel=0.15)
    assert small.peak_mem_bytes < big.peak_mem_bytes
    from dataclasses import fields

    from uhd_profile.measure.schema import METRICS

    # every field but the device is a record metric under the same name
    assert {f.name for f in fields(small)} - {"device"} <= set(METRICS)


def test_cpu_without_clear_refs_runs_nothing_and_says_so(monkeypatch, tmp_path):
    monkeypatch.setattr(memory, "_CLEAR_REFS", str(tmp_path / "missing" / "clear_refs"))
    assert not cpu_peak_rss_supported()
    called = []
    stats = measure_memory(lambda: called.append(1), nn.Linear(4, 4), "cpu")
    assert called == []
    assert stats.peak_mem_bytes is None and stats.activation_mem_bytes is None and stats.baseline_mem_bytes is None
    assert stats.weights_bytes == (16 + 4) * 4
    assert "measure_cpu_in_child" in stats.memory_note


@needs_rss_reset
def test_cpu_reset_that_does_not_take_effect_is_not_trusted(monkeypatch, tmp_path):
    fake = tmp_path / "clear_refs"
    fake.write_text("")
    monkeypatch.setattr(memory, "_CLEAR_REFS", str(fake))  # writable, but resets nothing
    ballast = torch.empty(64 * MiB, dtype=torch.uint8).fill_(1)
    del ballast  # VmHWM now sits >= 64 MiB above VmRSS
    stats = measure_memory(_touch(MiB), nn.Linear(2, 2), "cpu")
    assert stats.peak_mem_bytes is None and "did not reset VmHWM" in stats.memory_note


def test_bad_devices_are_user_errors():
    with pytest.raises(UhdProfileError, match="meta"):
        measure_memory(lambda: None, nn.Linear(2, 2), "meta")
    with pytest.raises(UhdProfileError, match="valid"):
        measure_memory(lambda: None, nn.Linear(2, 2), "no-such-device")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only box")
def test_cuda_requested_without_cuda_is_a_user_error():
    with pytest.raises(UhdProfileError, match="CUDA is not available"):
        measure_memory(lambda: None, nn.Linear(2, 2), "cuda:0")


# ---------------------------------------------------------------------------------------------
# CPU, in a fresh child process


def _child_allocates_300mib():  # top level: picklable by reference for the spawn child
    t = torch.empty(300 * MiB, dtype=torch.uint8)
    t.fill_(1)


def _child_fails():
    raise ValueError("planted failure")


def test_measure_cpu_in_child_reports_the_child_peak_not_the_parent():
    # The parent holds 1 GiB resident; a child's ru_maxrss would inherit that after exec.
    ballast = torch.empty(1024 * MiB, dtype=torch.uint8).fill_(1)
    peak = measure_cpu_in_child(_child_allocates_300mib)
    del ballast
    assert peak >= 300 * MiB
    assert peak < 1024 * MiB  # child floor (interpreter + torch + pytest) is well under 700 MiB


def test_measure_cpu_in_child_surfaces_failures():
    with pytest.raises(RuntimeError, match="planted failure"):
        measure_cpu_in_child(_child_fails)


def test_peak_rss_units_are_bytes(monkeypatch):
    linux = memory._peak_rss_self_bytes()
    assert linux > 10 * MiB  # a torch process is tens of MB at least: bytes, not KiB
    # ru_maxrss fallback: KiB on Linux, bytes on macOS.
    monkeypatch.setattr(memory, "_read_status_kb", lambda *k: (_ for _ in ()).throw(OSError("no /proc")))
    fake_ru = types.SimpleNamespace(ru_maxrss=2048)
    monkeypatch.setattr("resource.getrusage", lambda who: fake_ru)
    monkeypatch.setattr(memory.sys, "platform", "linux")
    assert memory._peak_rss_self_bytes() == 2048 * 1024
    monkeypatch.setattr(memory.sys, "platform", "darwin")
    assert memory._peak_rss_self_bytes() == 2048


# ---------------------------------------------------------------------------------------------
# NVML's per-process used memory (fake NVML; the real one is exercised by the GPU test)


class FakeNvmlProcesses:
    """A FAKE NVML module: just what _nvml_process_used_bytes calls."""

    class NVMLError(Exception):
        pass

    def __init__(self, procs, init_error=None):
        self.procs = procs
        self.init_error = init_error
        self.shutdowns = 0

    def nvmlInit(self):
        if self.init_error:
            raise self.init_error

    def nvmlShutdown(self):
        self.shutdowns += 1

    def nvmlDeviceGetHandleByIndex(self, i):
        return ("fake-handle", i)

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        return self.procs


def test_nvml_process_used_bytes_with_a_fake():
    me = os.getpid()
    proc = types.SimpleNamespace
    fake = FakeNvmlProcesses([proc(pid=me + 1, usedGpuMemory=5), proc(pid=me, usedGpuMemory=123 * MiB)])
    assert memory._nvml_process_used_bytes(torch.device("cuda", 0), nvml=fake) == (123 * MiB, None)
    assert fake.shutdowns == 1
    used, why = memory._nvml_process_used_bytes(torch.device("cuda", 0), nvml=FakeNvmlProcesses([]))
    assert used is None and "process list" in why
    used, why = memory._nvml_process_used_bytes(
        torch.device("cuda", 0), nvml=FakeNvmlProcesses([proc(pid=me, usedGpuMemory=None)])
    )
    assert used is None and "per-process" in why
    used, why = memory._nvml_process_used_bytes(
        torch.device("cuda", 0), nvml=FakeNvmlProcesses([], init_error=RuntimeError("driver not loaded"))
    )
    assert used is None and why.startswith("NVML init failed")


# ---------------------------------------------------------------------------------------------
# CUDA


@pytest.mark.gpu
def test_cuda_activation_of_a_known_allocation():
    model = nn.Linear(256, 256).cuda()
    x = torch.randn(8, 256, device="cuda")
    model(x)  # warm-up

    def fn():
        y = model(x)
        scratch = torch.empty(64 * MiB, dtype=torch.uint8, device="cuda")
        scratch.fill_(1)
        return y

    stats = measure_memory(fn, model, "cuda")
    assert stats.memory_method == "cuda_allocator" and stats.device.startswith("cuda:")
    assert stats.baseline_mem_bytes >= stats.weights_bytes == model_bytes(model)
    assert stats.activation_mem_bytes >= 64 * MiB
    assert stats.activation_mem_bytes == pytest.approx(64 * MiB, rel=0.05, abs=4 * MiB)
    assert stats.reserved_peak_mem_bytes >= stats.peak_mem_bytes
    if stats.nvml_used_mem_bytes is not None:
        assert stats.nvml_used_mem_bytes >= stats.reserved_peak_mem_bytes
