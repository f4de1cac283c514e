"""Roofline: achieved FLOP/s and model-FLOPs utilisation (MFU) against a device peak.

Units. Every peak here is in FLOP/s counting **2 FLOPs per fused multiply-add** (the unit NVIDIA
datasheets and the matmul calibration below use). So the ``flops`` passed to `achieved` and `mfu`
must be in the same unit: the ``flops`` convention of `uhd_profile.count_flops`
(``FlopCount.get("flops")``), or 2 x a ``macs`` count. Passing a ``macs`` or ``paper`` count
(1 per multiply-accumulate) under-reports MFU by a factor of two.

Peaks. `GPU_PEAKS` lists **dense** (no 2:4 structured sparsity) datasheet peaks for fp32 (CUDA
cores, no TF32), tf32, bf16 and fp16 tensor cores, the latter two with FP32 accumulation (what
PyTorch's cuBLAS/cuDNN calls use). Datasheets often print the sparsity figure with an asterisk;
those are halved here and the source string says so. For CPUs there is no trustworthy datasheet
number for "what torch.matmul can reach", so `cpu_peak` measures it with a short square-matmul
calibration (kind "measured").

fp32 on a GPU with TF32 enabled (``torch.backends.cuda.matmul.allow_tf32`` or
``torch.set_float32_matmul_precision("high")``) runs its matmuls on TF32 tensor cores: compare
against the ``"tf32"`` peak then (the fingerprint records both flags).

The ``auto`` dtype (what is fast on a device) is chosen in ``uhd_profile.measure.dtypes``.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import torch

from uhd_profile.errors import UhdProfileError
from uhd_profile.measure.env import static_fields
from uhd_profile.units import DTYPES as UNIT_DTYPES
from uhd_profile.units import TF32, parse_dtype, torch_dtype

DTYPES: tuple[str, ...] = tuple(UNIT_DTYPES)
"""Compute dtypes a measurement can run in (and `cpu_peak` can calibrate)."""

GPU_DTYPES: tuple[str, ...] = ("fp32", TF32, "bf16", "fp16")
"""Dtypes `gpu_peak` knows: `DTYPES` plus tf32 (fp32 matmuls on TF32 tensor cores)."""


@dataclass(frozen=True)
class Peak:
    """A device's peak throughput for one dtype, in FLOP/s (2 FLOPs per FMA).

    ``kind`` is ``"datasheet"`` (a vendor number, dense) or ``"measured"`` (a calibration on
    this machine); ``source`` says where the number comes from.
    """

    device: str
    dtype: str
    flops_per_s: float
    source: str
    kind: str  # "datasheet" or "measured"

    @property
    def tflops(self) -> float:
        return self.flops_per_s / 1e12


# ---------------------------------------------------------------------------------------------
# GPU datasheet peaks (dense)

_T = 1e12


def _product(device: str, doc: str, **per_dtype: tuple[float, str]) -> tuple[Peak, ...]:
    """Peaks of one product. ``per_dtype``: dtype -> (dense TFLOP/s, what the document prints)."""
    return tuple(
        Peak(device, dtype, tflops * _T, f"{doc}; {printed}", "datasheet") for dtype, (tflops, printed) in per_dtype.items()
    )


_A100_DOC = (
    "NVIDIA A100 Tensor Core GPU datasheet (https://www.nvidia.com/en-us/data-center/a100/), "
    "same peaks for the 40GB/80GB SXM4 and PCIe boards"
)
_A100 = dict(
    fp32=(19.5, "FP32 19.5 TFLOPS"),
    tf32=(156.0, "TF32 Tensor Core 156 | 312* TFLOPS (*sparsity), dense 156"),
    bf16=(312.0, "BFLOAT16 Tensor Core 312 | 624* TFLOPS (*sparsity), dense 312"),
    fp16=(312.0, "FP16 Tensor Core 312 | 624* TFLOPS (*sparsity), dense 312"),
)
_HOPPER_SXM = dict(
    fp32=(67.0, "FP32 67 TFLOPS"),
    tf32=(
        494.5,
        "TF32 Tensor Core 989 TFLOPS* (*with sparsity), halved to 494.5 dense (Hopper whitepaper: 494.7 dense at 1830 MHz boost)",
    ),
    bf16=(989.5, "BFLOAT16 Tensor Core 1,979 TFLOPS* (*with sparsity), halved to 989.5 dense (Hopper whitepaper: 989.4 dense)"),
    fp16=(989.5, "FP16 Tensor Core 1,979 TFLOPS* (*with sparsity), halved to 989.5 dense (Hopper whitepaper: 989.4 dense)"),
)
_ADA_DOC = "NVIDIA Ada GPU Architecture whitepaper (https://images.nvidia.com/aem-dam/Solutions/geforce/ada/nvidia-ada-gpu-architecture.pdf)"
_GA102_DOC = (
    "NVIDIA Ampere GA102 GPU Architecture whitepaper "
    "(https://www.nvidia.com/content/PDF/nvidia-ampere-ga-102-gpu-architecture-whitepaper-v2.pdf)"
)

GPU_PEAKS: tuple[Peak, ...] = (
    *_product("NVIDIA A100 SXM4 80GB", _A100_DOC, **_A100),
    *_product("NVIDIA A100 SXM4 40GB", _A100_DOC, **_A100),
    *_product("NVIDIA A100 PCIe", _A100_DOC, **_A100),
    *_product(
        "NVIDIA H100 SXM5",
        "NVIDIA H100 Tensor Core GPU datasheet, H100 SXM column (https://www.nvidia.com/en-us/data-center/h100/)",
        **_HOPPER_SXM,
    ),
    *_product(
        "NVIDIA H100 PCIe",
        "NVIDIA H100 Tensor Core GPU datasheet, H100 PCIe column (https://www.nvidia.com/en-us/data-center/h100/)",
        fp32=(51.0, "FP32 51 TFLOPS"),
        tf32=(378.0, "TF32 Tensor Core 756 TFLOPS* (*with sparsity), halved to 378 dense"),
        bf16=(756.5, "BFLOAT16 Tensor Core 1,513 TFLOPS* (*with sparsity), halved to 756.5 dense"),
        fp16=(756.5, "FP16 Tensor Core 1,513 TFLOPS* (*with sparsity), halved to 756.5 dense"),
    ),
    *_product(
        "NVIDIA H200 SXM",
        "NVIDIA H200 Tensor Core GPU datasheet, H200 SXM column (https://www.nvidia.com/en-us/data-center/h200/); "
        "same GH100 compute as H100 SXM",
        **_HOPPER_SXM,
    ),
    *_product(
        "NVIDIA L40S",
        "NVIDIA L40S datasheet (https://www.nvidia.com/en-us/data-center/l40s/)",
        fp32=(91.6, "FP32 91.6 TFLOPS"),
        tf32=(183.0, "TF32 Tensor Core 183 | 366* TFLOPS (*with sparsity), dense 183"),
        bf16=(362.05, "BFLOAT16 Tensor Core 362.05 | 733* TFLOPS (*with sparsity), dense 362.05"),
        fp16=(362.05, "FP16 Tensor Core 362.05 | 733* TFLOPS (*with sparsity), dense 362.05"),
    ),
    *_product(
        "NVIDIA L40",
        "NVIDIA L40 datasheet (https://www.nvidia.com/en-us/data-center/l40/)",
        fp32=(90.5, "FP32 90.5 TFLOPS"),
        tf32=(90.5, "TF32 Tensor Core 90.5 | 181* TFLOPS (*with sparsity), dense 90.5"),
        bf16=(181.05, "BFLOAT16 Tensor Core 181.05 | 362.1* TFLOPS (*with sparsity), dense 181.05"),
        fp16=(181.05, "FP16 Tensor Core 181.05 | 362.1* TFLOPS (*with sparsity), dense 181.05"),
    ),
    *_product(
        "NVIDIA L4",
        "NVIDIA L4 Tensor Core GPU datasheet (https://www.nvidia.com/en-us/data-center/l4/)",
        fp32=(30.3, "FP32 30.3 TFLOPS"),
        tf32=(60.0, "TF32 Tensor Core 120* TFLOPS (*with sparsity), halved to 60 dense"),
        bf16=(121.0, "BFLOAT16 Tensor Core 242* TFLOPS (*with sparsity), halved to 121 dense"),
        fp16=(121.0, "FP16 Tensor Core 242* TFLOPS (*with sparsity), halved to 121 dense"),
    ),
    *_product(
        "NVIDIA A10",
        "NVIDIA A10 Tensor Core GPU datasheet (https://www.nvidia.com/en-us/data-center/products/a10-gpu/)",
        fp32=(31.2, "FP32 31.2 TFLOPS"),
        tf32=(62.5, "TF32 Tensor Core 62.5 | 125* TFLOPS (*with sparsity), dense 62.5"),
        bf16=(125.0, "BFLOAT16 Tensor Core 125 | 250* TFLOPS (*with sparsity), dense 125"),
        fp16=(125.0, "FP16 Tensor Core 125 | 250* TFLOPS (*with sparsity), dense 125"),
    ),
    *_product(
        "NVIDIA A40",
        "NVIDIA A40 datasheet (https://www.nvidia.com/en-us/data-center/a40/)",
        fp32=(37.4, "Peak FP32 TFLOPS (non-Tensor) 37.4"),
        tf32=(74.8, "Peak TF32 Tensor TFLOPS 74.8 | 149.6* (*with sparsity), dense 74.8"),
        bf16=(149.7, "Peak BF16 Tensor TFLOPS with FP32 Accumulate 149.7 | 299.4* (*with sparsity), dense 149.7"),
        fp16=(149.7, "Peak FP16 Tensor TFLOPS 149.7 | 299.4* (*with sparsity), dense 149.7"),
    ),
    *_product(
        "NVIDIA GeForce RTX 4090",
        _ADA_DOC + ", GeForce RTX 4090 column",
        fp32=(82.6, "Peak FP32 TFLOPS (non-Tensor) 82.6"),
        tf32=(82.6, "Peak TF32 Tensor TFLOPS 82.6/165.2 (dense/sparse), dense 82.6"),
        bf16=(165.2, "Peak BF16 Tensor TFLOPS with FP32 Accumulate 165.2/330.4 (dense/sparse), dense 165.2"),
        fp16=(
            165.2,
            "Peak FP16 Tensor TFLOPS with FP32 Accumulate 165.2/330.4 (dense/sparse), dense 165.2; "
            "GeForce runs FP16 accumulate at 330.3 but PyTorch matmuls accumulate in FP32",
        ),
    ),
    *_product(
        "NVIDIA RTX 6000 Ada Generation",
        _ADA_DOC + ", RTX 6000 Ada column; datasheet https://www.nvidia.com/en-us/design-visualization/rtx-6000/",
        fp32=(91.1, "Peak FP32 TFLOPS (non-Tensor) 91.1"),
        tf32=(182.1, "Peak TF32 Tensor TFLOPS 182.1/364.2 (dense/sparse), dense 182.1"),
        bf16=(364.2, "Peak BF16 Tensor TFLOPS with FP32 Accumulate 364.2/728.5 (dense/sparse), dense 364.2"),
        fp16=(364.2, "Peak FP16 Tensor TFLOPS with FP32 Accumulate 364.2/728.5 (dense/sparse), dense 364.2"),
    ),
    *_product(
        "NVIDIA RTX A6000",
        _GA102_DOC + ", RTX A6000 column; datasheet https://www.nvidia.com/en-us/design-visualization/rtx-a6000/",
        fp32=(38.7, "Peak FP32 TFLOPS (non-Tensor) 38.7"),
        tf32=(77.4, "Peak TF32 Tensor TFLOPS 77.4/154.8 (dense/sparse), dense 77.4"),
        bf16=(154.8, "Peak BF16 Tensor TFLOPS with FP32 Accumulate 154.8/309.7 (dense/sparse), dense 154.8"),
        fp16=(154.8, "Peak FP16 Tensor TFLOPS with FP32 Accumulate 154.8/309.7 (dense/sparse), dense 154.8"),
    ),
    # Volta and Turing: no BF16 or TF32 tensor cores (torch emulates bf16 there: no peak given).
    *_product(
        "NVIDIA V100 SXM2",
        "NVIDIA Tesla V100 datasheet, V100 for NVLink column (https://www.nvidia.com/en-us/data-center/v100/)",
        fp32=(15.7, "Single-Precision 15.7 TFLOPS"),
        fp16=(125.0, "Tensor Performance 125 TFLOPS (FP16 inputs, FP32 accumulate; no sparsity on Volta)"),
    ),
    *_product(
        "NVIDIA V100 PCIe",
        "NVIDIA Tesla V100 datasheet, V100 for PCIe column (https://www.nvidia.com/en-us/data-center/v100/)",
        fp32=(14.0, "Single-Precision 14 TFLOPS"),
        fp16=(112.0, "Tensor Performance 112 TFLOPS (FP16 inputs, FP32 accumulate; no sparsity on Volta)"),
    ),
    *_product(
        "NVIDIA V100S PCIe",
        "NVIDIA Tesla V100S datasheet, V100S for PCIe column (https://www.nvidia.com/en-us/data-center/v100/)",
        fp32=(16.4, "Single-Precision 16.4 TFLOPS"),
        fp16=(130.0, "Tensor Performance 130 TFLOPS (FP16 inputs, FP32 accumulate; no sparsity on Volta)"),
    ),
    *_product(
        "NVIDIA T4",
        "NVIDIA T4 Tensor Core GPU datasheet (https://www.nvidia.com/en-us/data-center/tesla-t4/)",
        fp32=(8.1, "Single-Precision 8.1 TFLOPS"),
        fp16=(65.0, "Mixed-Precision (FP16/FP32) 65 TFLOPS (no sparsity on Turing)"),
    ),
)


def _tokens(name: str) -> list[str]:
    return [t for t in re.split(r"[^A-Z0-9]+", name.upper()) if t]


def _identify(gpu_name: str) -> str | None:
    """Map an NVML/torch GPU name to a `GPU_PEAKS` device, or None when unknown or ambiguous.

    Model numbers are matched as whole tokens ("A10" never matches "A100" or "A10G"; "L4" never
    matches "L40S"). Ambiguous names return None rather than a guess: a bare "H100" or "V100"
    (form factor decides the peak), the H100/H200 NVL boards (not in the table), laptop and
    "D" variants of the RTX 4090, and MIG instances (a slice has a fraction of the peak).
    """
    toks = _tokens(gpu_name)
    t = set(toks)
    if "MIG" in t or "LAPTOP" in t or "NVL" in t:
        return None
    sxm = any(x.startswith("SXM") for x in toks)
    if "H200" in t:
        return "NVIDIA H200 SXM"
    if "H100" in t:
        if "PCIE" in t:
            return "NVIDIA H100 PCIe"
        if sxm or "HBM3" in t:  # NVML reports the SXM5 board as "NVIDIA H100 80GB HBM3"
            return "NVIDIA H100 SXM5"
        return None
    if "A100" in t:  # all A100 boards share the datasheet peaks
        if "PCIE" in t:
            return "NVIDIA A100 PCIe"
        return "NVIDIA A100 SXM4 40GB" if "40GB" in t else "NVIDIA A100 SXM4 80GB"
    if "V100S" in t:
        return "NVIDIA V100S PCIe"
    if "V100" in t:
        if "PCIE" in t:
            return "NVIDIA V100 PCIe"
        if "SXM2" in t:
            return "NVIDIA V100 SXM2"
        return None
    if "4090" in t:
        return None if "D" in t else "NVIDIA GeForce RTX 4090"
    if "6000" in t and "ADA" in t:
        return "NVIDIA RTX 6000 Ada Generation"
    if "A6000" in t:
        return "NVIDIA RTX A6000"
    for model in ("L40S", "L40", "L4", "A40", "A10", "T4"):
        if model in t:
            return f"NVIDIA {model}"
    return None


def gpu_peak(gpu_name: str, dtype: str) -> Peak | None:
    """The dense datasheet peak of ``gpu_name`` (as NVML or torch reports it) in ``dtype``.

    ``dtype`` is one of `GPU_DTYPES` (aliases such as "bfloat16" or a torch.dtype are
    accepted); an unknown dtype raises `UhdProfileError`. Returns None when the GPU is not in
    `GPU_PEAKS`, the name is ambiguous, or the GPU has no tensor-core peak for that dtype
    (bf16/tf32 on V100 and T4).
    """
    canon = parse_dtype(dtype, tf32=True)
    device = _identify(str(gpu_name or ""))
    if device is None:
        return None
    for peak in GPU_PEAKS:
        if peak.device == device and peak.dtype == canon:
            return peak
    return None


# ---------------------------------------------------------------------------------------------
# CPU: measured


def cpu_peak(dtype: str = "fp32", seconds: float = 0.5, n: int = 1024, threads: int | None = None) -> Peak:
    """Measure this CPU's matmul throughput in ``dtype``: best-of repeats of (n x n) @ (n x n).

    Runs ``torch.matmul`` on random square matrices until ``seconds`` have passed (at least two
    runs; the first also serves as warm-up and can only lower the best time if the later ones
    are slower). FLOP/s = 2 n^3 / best time. ``threads`` sets torch's intra-op thread count for
    the calibration (restored afterwards); default: the current count. This is an achievable
    peak for torch's CPU kernels (oneDNN/MKL), not a theoretical one, and varies with load: run
    it on a quiet machine, with the thread count the measurement uses.
    """
    canon = parse_dtype(dtype)
    if not isinstance(n, int) or n < 1:
        raise UhdProfileError(f"calibration size n={n!r} is invalid: use a positive integer (e.g. 1024)")
    if not seconds > 0:
        raise UhdProfileError(f"calibration time seconds={seconds!r} is invalid: use a positive number")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise UhdProfileError(f"threads={threads!r} is invalid: use a positive integer or None")

    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        used_threads = torch.get_num_threads()
        tdtype = torch_dtype(canon)
        gen = torch.Generator().manual_seed(0)
        a = torch.randn(n, n, generator=gen).to(tdtype)
        b = torch.randn(n, n, generator=gen).to(tdtype)
        out = torch.empty(n, n, dtype=tdtype)
        times: list[int] = []
        budget = int(seconds * 1e9)
        start = time.perf_counter_ns()
        while len(times) < 2 or time.perf_counter_ns() - start < budget:
            t0 = time.perf_counter_ns()
            torch.matmul(a, b, out=out)
            times.append(max(time.perf_counter_ns() - t0, 1))
    finally:
        if threads is not None:
            torch.set_num_threads(previous)

    best_s = min(times) / 1e9
    cpu_model = static_fields().get("cpu_model") or "unknown CPU"
    source = (
        f"measured: best of {len(times)} runs of torch.matmul ({n}x{n} @ {n}x{n}, {canon}) "
        f"within {seconds:g} s on {used_threads} thread(s); FLOP/s = 2*{n}^3 / best time "
        f"({best_s * 1e3:.3f} ms); torch {torch.__version__}"
    )
    return Peak(f"cpu: {cpu_model}", canon, 2.0 * n**3 / best_s, source, "measured")


# ---------------------------------------------------------------------------------------------
# achieved throughput and MFU


def achieved(flops: int, latency_s: float) -> float:
    """Achieved FLOP/s: ``flops`` / ``latency_s`` (flops counted 2 per multiply-accumulate)."""
    if flops < 0:
        raise UhdProfileError(f"flops={flops!r} is invalid: a FLOP count cannot be negative")
    if not latency_s > 0:
        raise UhdProfileError(f"latency_s={latency_s!r} is invalid: a latency must be positive (seconds)")
    return flops / latency_s


def mfu(flops: int, latency_s: float, peak: Peak | None) -> float | None:
    """Model-FLOPs utilisation: achieved FLOP/s over ``peak.flops_per_s`` (a fraction, not %).

    ``flops`` must count 2 per multiply-accumulate, like the peaks (the ``flops`` convention, or
    2 x ``macs``). None when no peak is known.
    """
    rate = achieved(flops, latency_s)
    if peak is None:
        return None
    return rate / peak.flops_per_s
