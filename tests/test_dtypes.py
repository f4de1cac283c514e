"""Dtypes: one parser (uhd_profile.units.parse_dtype) for every caller, and ``auto`` resolved the
same way by ``bench --dtype auto`` and a recipe's ``dtypes = ["auto"]`` (uhd_profile.measure.dtypes)."""

from __future__ import annotations

import json

import pytest
import torch

from uhd_profile.errors import UhdProfileError
from uhd_profile.measure import dtypes, llm, roofline
from uhd_profile.units import DTYPES, parse_dtype


def test_one_parser_with_auto_and_tf32_only_where_asked():
    assert parse_dtype("bfloat16") == parse_dtype(torch.bfloat16) == "bf16" and parse_dtype(" Half ") == "fp16"
    assert parse_dtype("auto", auto=True) == "auto" and parse_dtype("tf32", tf32=True) == "tf32"
    for value, kw in (("auto", {}), ("tf32", {}), ("fp8", {"auto": True})):
        with pytest.raises(UhdProfileError, match=r"is not valid; valid: fp32, bf16, fp16"):
            parse_dtype(value, "--dtype", **kw)
    assert llm.DTYPES is DTYPES  # the LLM timer's table is the units one, not a copy
    assert not hasattr(roofline, "_norm_dtype") and not hasattr(roofline, "choose_dtype")  # roofline is for rooflines


def test_resolve_dtype_is_the_sweeps_choice(monkeypatch):
    monkeypatch.setattr(dtypes, "_CHOICES", {("cpu", 3): dtypes.DtypeChoice("bf16", "auto: bf16 (test)")})
    assert dtypes.resolve_dtype("auto", "cpu", 3) == ("bf16", dtypes.choose_dtype("cpu", 3))
    assert dtypes.resolve_dtype("float32", "cpu", 3) == ("fp32", None)


def test_bench_dtype_auto_resolves_and_records_the_choice_like_a_sweep(cli, monkeypatch):
    choice = dtypes.DtypeChoice("fp32", "auto: fp32 on a test CPU (bf16 slower)")
    monkeypatch.setattr(dtypes, "choose_dtype", lambda device="cpu", threads=None: choice)
    code, out, err = cli(
        "bench", "--encoder", "tiny", "--device", "cpu", "--dtype", "auto", "--min-time", "0.01", "--max-time", "0.2",
        "--min-samples", "3", "--json",
    )  # fmt: skip
    assert code == 0, err
    rec = json.loads(out)
    assert rec["settings"]["dtype"] == "fp32" and rec["dtype_auto"] == choice.as_dict()
    assert rec["metrics"]["measured_dtype"] == "fp32" and rec["metrics"]["dtype_reason"] == choice.reason
    assert f"dtype auto -> fp32: {choice.reason}" in err


def test_bench_dtype_auto_really_calibrates(cli, monkeypatch):
    monkeypatch.setattr(dtypes, "_CHOICES", {})
    monkeypatch.setattr(dtypes, "AUTO_CALIBRATION_N", 64)
    monkeypatch.setattr(dtypes, "AUTO_CALIBRATION_S", 0.01)
    code, out, err = cli(
        "bench", "--encoder", "tiny", "--device", "cpu", "--dtype", "auto", "--max-time", "0.2", "--min-samples", "3", "--json"
    )
    assert code == 0, err
    rec = json.loads(out)
    assert rec["settings"]["dtype"] in ("fp32", "bf16") and rec["dtype_auto"]["reason"].startswith("auto: ")
