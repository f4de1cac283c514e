"""Environment fingerprint: every field present and JSON-serialisable, a key that ignores what
identifies a run (hostname, time, commit) but not what changes timings (threads, GPU, flags),
git state of this checkout, and NVML handling against a fake NVML module (named as such)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from uhd_profile.measure import env
from uhd_profile.measure.env import FIELDS, fingerprint, fingerprint_key, gpu_info, key_differences

REPO = Path(__file__).resolve().parents[1]

LISTED_FIELDS = (
    "uhd_profile_version",
    "python",
    "platform",
    "hostname",
    "cpu_model",
    "cpu_cores_logical",
    "cpu_cores_physical",
    "torch_threads",
    "torch",
    "transformers",
    "cuda_runtime",
    "cudnn",
    "tf32_matmul",
    "tf32_cudnn",
    "cudnn_benchmark",
    "float32_matmul_precision",
    "device",
    "gpu_name",
    "gpu_uuid",
    "gpu_driver",
    "gpu_count",
    "mig_mode",
    "ecc_mode",
    "persistence_mode",
    "git_commit",
    "git_dirty",
    "timestamp_utc",
)


def test_fingerprint_has_every_field_and_is_json():
    fp = fingerprint()
    assert set(LISTED_FIELDS) <= set(fp)
    assert tuple(fp) == FIELDS
    assert all(re.fullmatch(r"[a-z0-9_]+", k) for k in fp)
    assert json.loads(json.dumps(fp)) == fp
    assert fp["device"] == "cpu"
    assert isinstance(fp["torch_threads"], int) and fp["torch_threads"] >= 1
    assert fp["cpu_cores_logical"] >= 1
    assert fp["timestamp_utc"].endswith("+00:00")
    assert fp["gpu_name"] is None  # a CPU measurement names no GPU


def test_fingerprint_cuda_device_without_gpu_does_not_crash():
    fp = fingerprint("cuda:0")  # this CI machine has no GPU and no NVML library
    assert fp["device"] == "cuda:0"
    assert json.loads(json.dumps(fp)) == fp


def test_key_stable_and_sensitive_to_threads_only_where_it_matters():
    a, b = fingerprint(threads=1), fingerprint(threads=1)
    assert fingerprint_key(a) == fingerprint_key(b)
    assert re.fullmatch(r"[0-9a-f]{16}", fingerprint_key(a))
    c = fingerprint(threads=2)
    assert c["torch_threads"] == 2
    assert fingerprint_key(c) != fingerprint_key(a)
    assert key_differences(a, c) == {"torch_threads": (1, 2)}

    renamed = dict(
        a,
        hostname="elsewhere",
        timestamp_utc="1999-01-01T00:00:00+00:00",
        git_commit="0" * 40,
        git_dirty=not a["git_dirty"],
        gpu_uuid="GPU-other",
        platform="Linux-other-kernel",
        uhd_profile_version="9.9.9",
    )
    assert fingerprint_key(renamed) == fingerprint_key(a)
    assert key_differences(renamed, a) == {}


def test_key_gpu_fields_count_only_for_gpu_devices():
    cpu = fingerprint()
    # A CPU timing does not depend on the installed GPU or its driver ...
    assert fingerprint_key(dict(cpu, gpu_driver="550.54", gpu_name="NVIDIA L4")) == fingerprint_key(cpu)
    # ... a GPU timing does, and on the TF32 flag.
    gpu = dict(
        cpu, device="cuda:0", gpu_name="NVIDIA H100 80GB HBM3", gpu_driver="550.54.15", cuda_runtime="12.4", tf32_matmul=False
    )
    assert fingerprint_key(gpu) != fingerprint_key(cpu)
    for field, value in [
        ("gpu_name", "NVIDIA A100-SXM4-80GB"),
        ("gpu_driver", "560.1"),
        ("cuda_runtime", "12.8"),
        ("tf32_matmul", True),
    ]:
        assert fingerprint_key(dict(gpu, **{field: value})) != fingerprint_key(gpu), field
    assert fingerprint_key(dict(gpu, device="cuda:1", gpu_uuid="GPU-x")) == fingerprint_key(gpu)


def test_git_fields_of_this_checkout():
    fp = fingerprint()
    assert re.fullmatch(r"[0-9a-f]{40}", fp["git_commit"] or "")
    kind = subprocess.run(
        ["git", "-C", str(REPO), "cat-file", "-t", fp["git_commit"]], capture_output=True, text=True, check=False
    ).stdout.strip()
    assert kind == "commit"
    assert isinstance(fp["git_dirty"], bool)


def test_git_fields_none_outside_a_checkout(tmp_path, monkeypatch):
    monkeypatch.setattr(env, "_PKG_DIR", tmp_path)
    assert env.git_state() == (None, None)


def test_git_fields_none_without_git(monkeypatch):
    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(env.subprocess, "run", no_git)
    assert env.git_state() == (None, None)


class FakeNvml:
    """A stand-in for `pynvml` with known answers (not the real library)."""

    def __init__(self, fail_init=False, fail=()):
        self.fail_init, self.fail, self.calls = fail_init, set(fail), []

    def _maybe_fail(self, name):
        self.calls.append(name)
        if name in self.fail:
            raise RuntimeError(f"fake NVML: {name} not supported")

    def nvmlInit(self):
        self.calls.append("nvmlInit")
        if self.fail_init:
            raise RuntimeError("fake NVML: driver not loaded")

    def nvmlShutdown(self):
        self.calls.append("nvmlShutdown")

    def nvmlSystemGetDriverVersion(self):
        self._maybe_fail("nvmlSystemGetDriverVersion")
        return b"550.54.15"

    def nvmlDeviceGetCount(self):
        self._maybe_fail("nvmlDeviceGetCount")
        return 8

    def nvmlDeviceGetHandleByUUID(self, uuid):
        self._maybe_fail("nvmlDeviceGetHandleByUUID")
        return ("uuid", uuid)

    def nvmlDeviceGetHandleByIndex(self, index):
        self._maybe_fail("nvmlDeviceGetHandleByIndex")
        return ("index", index)

    def nvmlDeviceGetName(self, handle):
        self._maybe_fail("nvmlDeviceGetName")
        return "NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetUUID(self, handle):
        self._maybe_fail("nvmlDeviceGetUUID")
        return "GPU-12345678-aaaa-bbbb-cccc-1234567890ab"

    def nvmlDeviceGetMigMode(self, handle):
        self._maybe_fail("nvmlDeviceGetMigMode")
        return (0, 0)

    def nvmlDeviceGetEccMode(self, handle):
        self._maybe_fail("nvmlDeviceGetEccMode")
        return (1, 1)

    def nvmlDeviceGetPersistenceMode(self, handle):
        self._maybe_fail("nvmlDeviceGetPersistenceMode")
        return 1


def test_gpu_info_with_fake_nvml():
    fake = FakeNvml()
    info = gpu_info(fake, 0)
    assert info == {
        "gpu_name": "NVIDIA H100 80GB HBM3",
        "gpu_uuid": "GPU-12345678-aaaa-bbbb-cccc-1234567890ab",
        "gpu_driver": "550.54.15",
        "gpu_count": 8,
        "mig_mode": False,
        "ecc_mode": True,
        "persistence_mode": True,
        "nvml_error": None,
    }
    assert fake.calls[0] == "nvmlInit" and fake.calls[-1] == "nvmlShutdown"
    assert "nvmlDeviceGetHandleByIndex" in fake.calls  # no UUID hint: found by index


def test_gpu_info_prefers_uuid_and_guards_each_field():
    fake = FakeNvml(fail={"nvmlDeviceGetEccMode", "nvmlDeviceGetMigMode"})
    info = gpu_info(fake, 3, uuid_hint="GPU-abc")
    assert "nvmlDeviceGetHandleByUUID" in fake.calls and "nvmlDeviceGetHandleByIndex" not in fake.calls
    assert info["ecc_mode"] is None and info["mig_mode"] is None  # unsupported: None, no crash
    assert info["gpu_name"] == "NVIDIA H100 80GB HBM3" and info["persistence_mode"] is True


def test_gpu_info_nvml_unavailable_gives_reason():
    info = gpu_info(FakeNvml(fail_init=True), 0)
    assert info["nvml_error"] == "RuntimeError: fake NVML: driver not loaded"
    assert all(info[k] is None for k in info if k != "nvml_error")


def test_gpu_info_cpu_device_reads_only_driver_and_count():
    fake = FakeNvml()
    info = gpu_info(fake, None)
    assert info["gpu_driver"] == "550.54.15" and info["gpu_count"] == 8
    assert info["gpu_name"] is None and "nvmlDeviceGetName" not in fake.calls


def test_cpu_model_falls_back_when_cpuinfo_unreadable(monkeypatch):
    missing = "/proc/cpuinfo"
    env._cpuinfo.cache_clear()
    env.static_fields.cache_clear()
    real_read = Path.read_text

    def read_text(self, *a, **k):
        if str(self) == missing:
            raise OSError("unreadable")
        return real_read(self, *a, **k)

    monkeypatch.setattr(Path, "read_text", read_text)
    try:
        fp = fingerprint()
        assert fp["cpu_model"] is None or isinstance(fp["cpu_model"], str)
        assert json.loads(json.dumps(fp)) == fp
    finally:
        monkeypatch.undo()
        env._cpuinfo.cache_clear()
        env.static_fields.cache_clear()
