"""Environment fingerprint: what a timing was measured on, recorded with every record.

`fingerprint()` returns a flat, JSON-serialisable dict (snake_case keys, ``None`` for anything
that cannot be read on this machine; it never raises). `fingerprint_key()` hashes the subset of
fields that decide whether two timings are comparable (hardware, driver and library versions,
thread count, TF32/cuDNN flags), leaving out what identifies a run rather than a setting
(hostname, git commit, dirty flag, timestamp, GPU UUID). Time comparisons across different keys
are refused unless the user allows it (see docs/measurement.md, "Environment fingerprint").

Static parts (CPU description, library versions, the GPU's name/UUID/driver) are cached per
process; the torch flags, NVML modes, git state and timestamp are read on every call.
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import json
import os
import platform
import socket
import subprocess
import sys
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from uhd_profile.version import __version__

# the CUDA runtime and the torch backend flags that choose its kernels
_CUDA_SETTINGS = ("cuda_runtime", "cudnn", "tf32_matmul", "tf32_cudnn", "cudnn_benchmark", "float32_matmul_precision")

FIELDS: tuple[str, ...] = (
    "uhd_profile_version",
    "python",
    "platform",
    "hostname",
    "cpu_model",
    "cpu_cores_logical",
    "cpu_cores_physical",
    "cpu_affinity",
    "torch_threads",
    "torch",
    "transformers",
    *_CUDA_SETTINGS,
    "device",
    "gpu_name",
    "gpu_uuid",
    "gpu_driver",
    "gpu_count",
    "mig_mode",
    "ecc_mode",
    "persistence_mode",
    "nvml_error",
    "git_commit",
    "git_dirty",
    "timestamp_utc",
)
"""Every key `fingerprint()` returns, in order."""

# Fields that make timings comparable. Device-independent ones always count; the GPU/CUDA ones
# only when the measured device is a GPU (a CPU timing does not depend on the installed GPU or
# its driver). Left out on purpose: hostname, git_commit, git_dirty, timestamp_utc (identify a
# run), gpu_uuid (two boards of the same model are comparable), gpu_count (other boards do not
# change a single-device timing), persistence_mode (affects first-call latency, not the warm
# median), platform (the kernel build string changes with every security update),
# uhd_profile_version (the count/timing protocol is versioned separately), nvml_error.
KEY_FIELDS_COMMON: tuple[str, ...] = (
    "python_minor",
    "torch",
    "transformers",
    "cpu_model",
    "cpu_cores_logical",
    "cpu_cores_physical",
    "cpu_affinity",
    "torch_threads",
    "device_type",
)
KEY_FIELDS_GPU: tuple[str, ...] = (
    "gpu_name",
    "gpu_driver",
    *_CUDA_SETTINGS,
    "mig_mode",
    "ecc_mode",
)
# On CPU, float32_matmul_precision can still change which kernels run (e.g. bf16 emulation on
# oneDNN); keep it in the CPU key as well.
KEY_FIELDS_CPU_EXTRA: tuple[str, ...] = ("float32_matmul_precision",)

_GIT_TIMEOUT_S = 2.0


def _guard(fn, *args, default=None):
    """Call ``fn(*args)``; any exception (or warning-as-error) yields ``default``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn(*args)
    except Exception:  # noqa: BLE001 - a fingerprint must never crash a measurement
        return default


# ---------------------------------------------------------------------------------------------
# static parts (cached)


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> tuple[str | None, int | None]:
    """(model name, physical core count) from /proc/cpuinfo; (None, None) where unreadable."""
    model = None
    cores: set[tuple[str, str]] = set()
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return None, None
    phys = core = None
    for line in text.splitlines() + [""]:
        if not line.strip():  # end of one processor block
            if core is not None:
                cores.add((phys or "0", core))
            phys = core = None
            continue
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "model name" and model is None and value:
            model = value
        elif key == "physical id":
            phys = value
        elif key == "core id":
            core = value
    return model, (len(cores) or None)


@functools.lru_cache(maxsize=1)
def static_fields() -> dict[str, Any]:
    """The fields of the fingerprint that do not change while the process runs (cached)."""
    model, physical = _cpuinfo()
    if not model:
        model = _guard(platform.processor) or None
    if physical is None:
        physical = _guard(_psutil_physical)

    def _dist_version(name: str) -> str | None:
        return metadata.version(name)

    def _cudnn() -> int | None:
        if not torch.backends.cudnn.is_available():
            return None
        return torch.backends.cudnn.version()

    return {
        "uhd_profile_version": __version__,
        "python": platform.python_version(),
        "platform": _guard(platform.platform),
        "hostname": _guard(socket.gethostname),
        "cpu_model": model,
        "cpu_cores_logical": os.cpu_count(),
        "cpu_cores_physical": physical,
        "torch": torch.__version__,
        "transformers": _guard(_dist_version, "transformers"),
        "cuda_runtime": torch.version.cuda,
        "cudnn": _guard(_cudnn),
    }


def _psutil_physical() -> int | None:
    import psutil  # optional; not a dependency

    return psutil.cpu_count(logical=False)


def _cpu_affinity() -> int | None:
    """CPUs this process may run on (a container or taskset can give fewer than cpu_count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return None


# ---------------------------------------------------------------------------------------------
# torch flags (read every call: the user may change them between measurements)


def _torch_flags() -> dict[str, Any]:
    return {
        "tf32_matmul": _guard(lambda: bool(torch.backends.cuda.matmul.allow_tf32)),
        "tf32_cudnn": _guard(lambda: bool(torch.backends.cudnn.allow_tf32)),
        "cudnn_benchmark": _guard(lambda: bool(torch.backends.cudnn.benchmark)),
        "float32_matmul_precision": _guard(torch.get_float32_matmul_precision),
    }


# ---------------------------------------------------------------------------------------------
# GPU via NVML (nvidia-ml-py's `pynvml`)

_GPU_NONE: dict[str, Any] = {
    "gpu_name": None,
    "gpu_uuid": None,
    "gpu_driver": None,
    "gpu_count": None,
    "mig_mode": None,
    "ecc_mode": None,
    "persistence_mode": None,
    "nvml_error": None,
}


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _torch_uuid(index: int) -> str | None:
    """The UUID torch sees for CUDA device ``index`` (honours CUDA_VISIBLE_DEVICES), or None."""
    if not torch.cuda.is_available():
        return None
    uuid = str(torch.cuda.get_device_properties(index).uuid)
    return uuid if uuid.startswith("GPU-") else f"GPU-{uuid}"


def gpu_info(nvml, index: int | None, uuid_hint: str | None = None) -> dict[str, Any]:
    """GPU fields from an NVML module (``pynvml`` or a stand-in with the same functions).

    ``index`` is the torch CUDA index of the measured device, or None when the measured device
    is not a GPU (then only driver and count are read). The NVML handle is found by UUID when
    ``uuid_hint`` is given (torch and NVML number devices differently under
    CUDA_VISIBLE_DEVICES), else by index. Every read is guarded; an NVML that cannot start
    gives all-None fields with the reason in ``nvml_error``.
    """
    out = dict(_GPU_NONE)
    try:
        nvml.nvmlInit()
    except Exception as exc:  # noqa: BLE001
        out["nvml_error"] = f"{type(exc).__name__}: {exc}"
        return out
    try:
        out["gpu_driver"] = _guard(lambda: _text(nvml.nvmlSystemGetDriverVersion()))
        out["gpu_count"] = _guard(lambda: int(nvml.nvmlDeviceGetCount()))
        if index is None:
            return out
        handle = None
        if uuid_hint:
            handle = _guard(nvml.nvmlDeviceGetHandleByUUID, uuid_hint)
        if handle is None:
            handle = _guard(nvml.nvmlDeviceGetHandleByIndex, index)
        if handle is None:
            out["nvml_error"] = f"no NVML handle for CUDA device {index}"
            return out
        out["gpu_name"] = _guard(lambda: _text(nvml.nvmlDeviceGetName(handle)))
        out["gpu_uuid"] = _guard(lambda: _text(nvml.nvmlDeviceGetUUID(handle)))
        out["mig_mode"] = _guard(lambda: bool(nvml.nvmlDeviceGetMigMode(handle)[0]))
        out["ecc_mode"] = _guard(lambda: bool(nvml.nvmlDeviceGetEccMode(handle)[0]))
        out["persistence_mode"] = _guard(lambda: bool(nvml.nvmlDeviceGetPersistenceMode(handle)))
        return out
    finally:
        _guard(nvml.nvmlShutdown)


@functools.lru_cache(maxsize=8)
def _gpu_static(index: int | None) -> tuple[str | None, str | None, str | None, int | None, str | None]:
    """Cached (name, uuid, driver, count, nvml_error) for a CUDA index (None: driver/count only)."""
    try:
        import pynvml
    except Exception as exc:  # noqa: BLE001
        return None, None, None, None, f"{type(exc).__name__}: {exc}"
    info = gpu_info(pynvml, index, _guard(_torch_uuid, index) if index is not None else None)
    return info["gpu_name"], info["gpu_uuid"], info["gpu_driver"], info["gpu_count"], info["nvml_error"]


def _gpu_modes(index: int) -> dict[str, Any]:
    """MIG/ECC/persistence modes (not cached: an admin can change them while we run)."""
    try:
        import pynvml
    except Exception:  # noqa: BLE001
        return {}
    info = gpu_info(pynvml, index, _guard(_torch_uuid, index))
    return {k: info[k] for k in ("mig_mode", "ecc_mode", "persistence_mode")}


def _gpu_fields(dev: torch.device) -> dict[str, Any]:
    out = dict(_GPU_NONE)
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else (_guard(torch.cuda.current_device) or 0)
        name, uuid, driver, count, err = _gpu_static(index)
        out.update(gpu_name=name, gpu_uuid=uuid, gpu_driver=driver, gpu_count=count, nvml_error=err)
        if err is None:
            out.update(_gpu_modes(index))
        if out["gpu_name"] is None and torch.cuda.is_available():  # NVML missing but CUDA works
            out["gpu_name"] = _guard(torch.cuda.get_device_name, index)
    else:
        _, _, driver, count, err = _gpu_static(None)
        out.update(gpu_driver=driver, gpu_count=count, nvml_error=err)
    return out


# ---------------------------------------------------------------------------------------------
# git (of the checkout this package lives in)


_PKG_DIR = Path(__file__).resolve().parent.parent  # the uhd_profile package


def _git(*args: str) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(
            # --no-optional-locks: reading the state never takes the repository's index.lock (a git
            # command running beside a sweep would otherwise fail, or stall on ours)
            ["git", "--no-optional-locks", "-C", str(_PKG_DIR), *args],
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None


def git_state() -> tuple[str | None, bool | None]:
    """(HEAD commit, dirty) of the repository holding this package; (None, None) if not in one.

    The package's ``__init__.py`` must be tracked by that repository: an installed copy inside some unrelated
    checkout (a venv under a project directory) does not report that project's commit. ``dirty``
    means tracked files differ from HEAD (staged or not) anywhere in the repository, or the
    package directory itself holds untracked (not ignored) files, i.e. code that is not in the
    commit. Untracked files elsewhere (results, caches) do not mark a run dirty.
    """
    tracked = _git("ls-files", "--error-unmatch", "--", "__init__.py")
    if tracked is None or tracked.returncode != 0:
        return None, None
    head = _git("rev-parse", "HEAD")
    if head is None or head.returncode != 0 or not head.stdout.strip():
        return None, None
    tracked_changes = _git("status", "--porcelain", "--untracked-files=no")
    package_untracked = _git("status", "--porcelain", "--untracked-files=normal", "--", ".")
    if tracked_changes is None or package_untracked is None or tracked_changes.returncode or package_untracked.returncode:
        return head.stdout.strip(), None
    dirty = bool(tracked_changes.stdout.strip()) or any(line.startswith("??") for line in package_untracked.stdout.splitlines())
    return head.stdout.strip(), dirty


# ---------------------------------------------------------------------------------------------
# public API


def fingerprint(device: torch.device | str = "cpu", threads: int | None = None) -> dict:
    """The environment of a measurement on ``device`` with ``threads`` CPU threads.

    ``threads`` is the intra-op thread count the measurement uses (default: torch's current
    ``torch.get_num_threads()``). Returns a dict with exactly the keys in `FIELDS`; values are
    str/int/bool/None, so the dict is JSON-serialisable. Never raises for an unreadable field.
    """
    dev = torch.device(device)
    fp: dict[str, Any] = dict.fromkeys(FIELDS)
    fp.update(static_fields())
    fp["cpu_affinity"] = _guard(_cpu_affinity)
    fp["torch_threads"] = int(threads) if threads is not None else _guard(torch.get_num_threads)
    fp.update(_torch_flags())
    fp["device"] = str(dev)
    fp.update(_gpu_fields(dev))
    fp["git_commit"], fp["git_dirty"] = git_state()
    fp["timestamp_utc"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    assert tuple(fp) == FIELDS  # noqa: S101 - internal invariant
    return fp


def _key_view(fp: dict) -> dict[str, Any]:
    device = str(fp.get("device") or "cpu")
    device_type = device.split(":", 1)[0]
    python = fp.get("python")
    view: dict[str, Any] = {
        "python_minor": ".".join(str(python).split(".")[:2]) if python else None,
        "device_type": device_type,
    }
    for name in KEY_FIELDS_COMMON:
        if name not in view:
            view[name] = fp.get(name)
    for name in KEY_FIELDS_GPU if device_type == "cuda" else KEY_FIELDS_CPU_EXTRA:
        view[name] = fp.get(name)
    return view


def fingerprint_key(fp: dict) -> str:
    """A stable 16-hex-digit hash of the fields of ``fp`` that make timings comparable.

    Equal keys mean: same CPU model/cores/affinity and thread count, same torch/transformers/
    Python minor version and device type, and (for GPU devices) same GPU model, driver, CUDA and
    cuDNN versions, TF32/cuDNN-benchmark/matmul-precision flags, MIG and ECC modes. Hostname, git
    commit/dirty, timestamp and GPU UUID do not enter the key.
    """
    blob = json.dumps(_key_view(fp), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def key_differences(a: dict, b: dict) -> dict[str, tuple[Any, Any]]:
    """The key fields on which two fingerprints differ: name -> (value in a, value in b).

    Empty exactly when ``fingerprint_key(a) == fingerprint_key(b)``; use it to say *why* a
    comparison is refused.
    """
    va, vb = _key_view(a), _key_view(b)
    return {k: (va.get(k), vb.get(k)) for k in sorted(set(va) | set(vb)) if va.get(k) != vb.get(k)}


if __name__ == "__main__":  # pragma: no cover - manual inspection
    json.dump(fingerprint(sys.argv[1] if len(sys.argv) > 1 else "cpu"), sys.stdout, indent=2)
    print()
