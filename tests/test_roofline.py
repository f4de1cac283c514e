"""Roofline: the dense datasheet peak table, GPU-name matching, the measured CPU peak, MFU
arithmetic and dtype validation."""

from __future__ import annotations

import pytest
import torch

from uhd_profile.errors import UhdProfileError
from uhd_profile.measure.roofline import (
    DTYPES,
    GPU_DTYPES,
    GPU_PEAKS,
    Peak,
    achieved,
    cpu_peak,
    gpu_peak,
    mfu,
)

T = 1e12


@pytest.mark.parametrize(
    ("name", "device", "tflops"),
    [
        # A100 datasheet: BFLOAT16 Tensor Core 312 | 624* TFLOPS (*sparsity) -> 312 dense
        ("NVIDIA A100-SXM4-80GB", "NVIDIA A100 SXM4 80GB", 312.0),
        # H100 datasheet, SXM: BFLOAT16 Tensor Core 1,979 TFLOPS* (*sparsity) -> 989.5 dense
        ("NVIDIA H100 80GB HBM3", "NVIDIA H100 SXM5", 989.5),
        # H100 datasheet, PCIe: BFLOAT16 Tensor Core 1,513 TFLOPS* (*sparsity) -> 756.5 dense
        ("NVIDIA H100 PCIe", "NVIDIA H100 PCIe", 756.5),
        # H200 datasheet, SXM: BFLOAT16 Tensor Core 1,979 TFLOPS* (*sparsity) -> 989.5 dense
        ("NVIDIA H200", "NVIDIA H200 SXM", 989.5),
        # L40S datasheet: BFLOAT16 Tensor Core 362.05 | 733* TFLOPS (*sparsity) -> 362.05 dense
        ("NVIDIA L40S", "NVIDIA L40S", 362.05),
        # Ada whitepaper, RTX 4090: Peak BF16 Tensor TFLOPS with FP32 Accumulate 165.2/330.4 -> 165.2
        ("NVIDIA GeForce RTX 4090", "NVIDIA GeForce RTX 4090", 165.2),
    ],
)
def test_bf16_dense_peaks(name, device, tflops):
    peak = gpu_peak(name, "bf16")
    assert peak is not None
    assert peak.device == device and peak.dtype == "bf16" and peak.kind == "datasheet"
    assert peak.flops_per_s == pytest.approx(tflops * T, rel=1e-12)


@pytest.mark.parametrize(
    ("name", "dtype", "tflops"),
    [
        ("NVIDIA A100-SXM4-40GB", "tf32", 156.0),  # A100 datasheet: TF32 156 | 312*
        ("NVIDIA A100-PCIE-40GB", "fp16", 312.0),  # same datasheet, PCIe column
        ("NVIDIA A100 80GB PCIe", "fp32", 19.5),  # FP32 19.5
        ("NVIDIA H100 80GB HBM3", "fp32", 67.0),  # H100 SXM: FP32 67
        ("NVIDIA H100 PCIe", "tf32", 378.0),  # H100 PCIe: TF32 756* -> 378
        ("NVIDIA L4", "bf16", 121.0),  # L4 datasheet: BF16 242* -> 121
        ("NVIDIA A10", "bf16", 125.0),  # A10 datasheet: BF16 125 | 250*
        ("NVIDIA RTX A6000", "fp16", 154.8),  # GA102 whitepaper: 154.8/309.7
        ("NVIDIA RTX 6000 Ada Generation", "bf16", 364.2),  # Ada whitepaper: 364.2/728.5
        ("Tesla V100-SXM2-16GB", "fp16", 125.0),  # V100 datasheet: Tensor 125
        ("Tesla V100-PCIE-32GB", "fp16", 112.0),  # V100 PCIe: Tensor 112
        ("Tesla T4", "fp16", 65.0),  # T4 datasheet: mixed precision 65
    ],
)
def test_other_peaks_and_names(name, dtype, tflops):
    peak = gpu_peak(name, dtype)
    assert peak is not None and peak.flops_per_s == pytest.approx(tflops * T, rel=1e-12)


@pytest.mark.parametrize(
    "name",
    [
        "NVIDIA GeForce GTX 1080",  # not in the table
        "NVIDIA A10G",  # AWS SKU, not the A10 (and "A10" must not match "A100")
        "NVIDIA H100 NVL",  # NVL board: not in the table, not the SXM
        "NVIDIA H100",  # form factor unknown: ambiguous
        "Tesla V100",  # form factor unknown: ambiguous
        "NVIDIA A100-SXM4-80GB MIG 3g.40gb",  # a MIG slice has a fraction of the peak
        "NVIDIA GeForce RTX 4090 D",  # cut-down China SKU
        "NVIDIA GeForce RTX 4090 Laptop GPU",
        "Quadro RTX 6000",  # Turing, not the Ada RTX 6000
        "",
    ],
)
def test_unknown_or_ambiguous_gpu_is_none(name):
    assert gpu_peak(name, "bf16") is None


def test_model_numbers_match_as_whole_tokens():
    assert gpu_peak("NVIDIA L4", "bf16").device == "NVIDIA L4"
    assert gpu_peak("NVIDIA L40", "bf16").device == "NVIDIA L40"
    assert gpu_peak("NVIDIA L40S", "bf16").device == "NVIDIA L40S"
    assert gpu_peak("NVIDIA A10", "bf16").device == "NVIDIA A10"
    assert gpu_peak("NVIDIA A100-SXM4-40GB", "bf16").device == "NVIDIA A100 SXM4 40GB"


def test_no_bf16_or_tf32_peak_on_volta_and_turing():
    assert gpu_peak("Tesla V100-SXM2-32GB", "bf16") is None
    assert gpu_peak("Tesla T4", "tf32") is None


def test_table_entries_well_formed():
    seen = set()
    for peak in GPU_PEAKS:
        assert peak.source.strip(), peak
        assert "http" in peak.source and peak.kind == "datasheet"
        assert peak.dtype in GPU_DTYPES and peak.flops_per_s > 0
        assert (peak.device, peak.dtype) not in seen
        seen.add((peak.device, peak.dtype))
        # every entry is reachable through its own device name
        assert gpu_peak(peak.device, peak.dtype) == peak
    devices = {p.device for p in GPU_PEAKS}
    for device in devices:
        by = {p.dtype: p.flops_per_s for p in GPU_PEAKS if p.device == device}
        if "bf16" in by:  # dense bf16 and fp16 (FP32 accumulate) are equal on these parts
            assert by["bf16"] == by["fp16"] and by["tf32"] <= by["bf16"] and by["fp32"] < by["bf16"]


def test_aliases_and_torch_dtypes():
    ref = gpu_peak("NVIDIA L40S", "bf16")
    assert gpu_peak("NVIDIA L40S", "bfloat16") == ref
    assert gpu_peak("NVIDIA L40S", torch.bfloat16) == ref
    assert gpu_peak("NVIDIA L40S", "half") == gpu_peak("NVIDIA L40S", "fp16")


def test_invalid_dtype_is_one_line_error():
    with pytest.raises(UhdProfileError) as exc:
        cpu_peak("int8")
    msg = str(exc.value)
    assert "\n" not in msg and "'int8'" in msg and "fp32, bf16, fp16" in msg
    with pytest.raises(UhdProfileError, match="tf32"):
        gpu_peak("NVIDIA L4", "fp8")
    with pytest.raises(UhdProfileError):
        cpu_peak("tf32")  # no TF32 on CPU
    assert DTYPES == ("fp32", "bf16", "fp16")


def test_cpu_peak_measured_quickly():
    before = torch.get_num_threads()
    peak = cpu_peak("fp32", seconds=0.1, n=256, threads=1)
    assert torch.get_num_threads() == before  # thread count restored
    assert peak.kind == "measured" and peak.dtype == "fp32" and peak.flops_per_s > 0
    assert peak.device.startswith("cpu")
    assert "256x256" in peak.source and "best of" in peak.source and "1 thread" in peak.source


def test_cpu_peak_bad_arguments():
    with pytest.raises(UhdProfileError):
        cpu_peak("fp32", n=0)
    with pytest.raises(UhdProfileError):
        cpu_peak("fp32", seconds=0)


def test_achieved_and_mfu_arithmetic():
    peak = Peak("test device", "bf16", 100 * T, "test", "datasheet")
    assert achieved(2_000_000_000, 0.5) == 4e9
    assert mfu(50 * T, 1.0, peak) == pytest.approx(0.5)
    assert mfu(10 * T, 0.25, peak) == pytest.approx(0.4)
    assert mfu(1, 1.0, None) is None
    # MACs must be doubled to compare with a FLOP/s peak (2 FLOPs per FMA)
    macs = 25 * T
    assert mfu(2 * macs, 1.0, peak) == pytest.approx(0.5)
    with pytest.raises(UhdProfileError):
        achieved(1, 0.0)
    with pytest.raises(UhdProfileError):
        mfu(-1, 1.0, peak)
