"""Decode in closed form: past ``EXACT_DECODE_STEPS`` forwards the steps are summed exactly from
the first ones, and the sum equals counting every step (dense, hybrid linear attention, dropping)."""

from __future__ import annotations

import pytest

import uhd_profile.count.llm as L
from uhd_profile.model.pipeline import parse_drop


@pytest.mark.parametrize("llm", ["tiny-llm", "tiny-hybrid-llm"])
@pytest.mark.parametrize("drop", [None, "fastv:1:0.5"])
@pytest.mark.parametrize("n", [L.EXACT_DECODE_STEPS + 1, 20])
def test_the_closed_form_equals_counting_every_step(llm, drop, n, monkeypatch):
    d = parse_drop(drop) if drop else None
    closed = L.count_llm(llm, 40, 16, n, drop=d)
    assert closed.decode_series is not None and len(closed.decode_steps) == 3
    monkeypatch.setattr(L, "EXACT_DECODE_STEPS", 10**9)
    every = L.count_llm(llm, 40, 16, n, drop=d)
    assert every.decode_series is None and len(every.decode_steps) == n
    for c in ("macs", "flops", "paper"):
        assert closed.decode_total(c) == every.decode_total(c) > 0
        assert closed.decode_per_token(c) == every.decode_per_token(c)
        assert closed.total(c) == every.total(c)
    assert closed.cache_after_decode == every.cache_after_decode
    assert list(closed.decode_context) == list(every.decode_context)
    assert closed.as_dict()["decode_total"] == every.as_dict()["decode_total"]


def test_a_long_generation_costs_what_a_short_one_does():
    # 10^9 decode steps would never finish one by one; the closed form runs three
    c = L.count_llm("tiny-llm", 64, 16, 10**9)
    first, step = c.decode_series.first["macs"], c.decode_series.step["macs"]
    assert step > 0 and c.decode_total("macs") == 10**9 * first + step * 10**9 * (10**9 - 1) // 2
    assert c.cache_after_decode.kv_tokens[0] == 64 + 16 + 10**9
    assert len(c.decode_context) == 10**9 and c.decode_context[-1] == 64 + 16 + 10**9


def test_a_hybrid_models_state_does_not_grow_with_decode():
    short, long_ = L.count_llm("tiny-hybrid-llm", 64, 16, 10), L.count_llm("tiny-hybrid-llm", 64, 16, 10**6)
    assert long_.cache_after_decode.state_elems == short.cache_after_decode.state_elems > 0
    assert long_.cache_after_decode.kv_elems > short.cache_after_decode.kv_elems


def test_e2e_with_a_long_generation_answers(cli_json):
    d = cli_json("e2e", "--encoder", "tiny", "--llm", "tiny-llm", "--decode-tokens", "100000", "--json")
    c = L.count_llm("tiny-llm", d["tokens"]["visual"], 64, 100000)
    assert d["decode_tokens"] == 100000 and d["decode_per_token"]["macs"] == c.decode_per_token("macs")
