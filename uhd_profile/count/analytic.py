"""Analytic closed form of a variant's cost, beside the counted one as a cross-check.

This derives the cost from the geometry alone (token counts, widths, heads) with the same per-op
prices as the counter (``flops.matmul_cost`` etc.), never from execution. Tests require
counted == analytic: if a module runs an op the closed form does not expect, or with another
shape, they disagree.

Coverage: every convention for the SigLIP-family trunks (the paper's tower, the 384 px SigLIP, the
tiny test preset) and the released MiniCPM-V 4.6 model in ``macs`` and ``paper`` (its ``flops``
holds 140 more, from its own nearest-position bucketing). Other towers are
cross-checked against real CPU execution instead (tests/test_trunks.py).
"""

from __future__ import annotations

from uhd_profile.count.flops import ZERO, Cost, attention_cost, elementwise_cost, matmul_cost
from uhd_profile.errors import UhdProfileError
from uhd_profile.model.variants import VariantSpec

_SIGLIP_TRUNKS = ("SiglipTrunk", "minicpm_model")


def _ln(elems: int) -> Cost:
    return elementwise_cost(elems, 5)


def _linear(tokens: int, fan_in: int, fan_out: int) -> Cost:
    return matmul_cost(tokens * fan_in * fan_out, out_elems=tokens * fan_out, bias=True)


def _paper_free(c: Cost) -> Cost:
    """A cost the paper does not charge (connector, post-LN, pooling, position add, conv bias)."""
    return Cost(c.macs, c.flops, 0)


def siglip_layer(b: int, n: int, d: int, m: int, h: int) -> Cost:
    """One pre-norm SigLIP layer on ``n`` tokens: LN, attention, residual, LN, GELU MLP, residual."""
    e = d // h
    return (
        _ln(b * n * d)
        + _linear(b * n, d, d)
        + _linear(b * n, d, d)
        + _linear(b * n, d, d)
        + attention_cost(b, h, n, n, e, e, masked=False)
        + _linear(b * n, d, d)
        + elementwise_cost(b * n * d)  # residual
        + _ln(b * n * d)
        + _linear(b * n, d, m)
        + elementwise_cost(b * n * m)
        + _linear(b * n, m, d)
        + elementwise_cost(b * n * d)  # residual
    )


def fusion_mlp(b: int, n: int, d: int, hidden: int) -> Cost:
    """Unshuffle -> LN(4d) -> Linear(4d, hidden) -> act -> Linear(hidden, d) -> + 2x2 mean, on n tokens."""
    q = n // 4
    return (
        Cost(0, b * n * d, 0)  # the 2x2 mean reads every input element; the paper charges no pooling
        + _ln(b * q * 4 * d)
        + _linear(b * q, 4 * d, hidden)
        + elementwise_cost(b * q * hidden)
        + _linear(b * q, hidden, d)
        + elementwise_cost(b * q * d)  # + mean residual
    )


def window_attention(b: int, n: int, d: int, h: int) -> Cost:
    """LN -> q/k/v/o -> attention inside 2x2 windows (executed) -> residual.

    Executed: n/4 windows of 4x4 scores; the paper charges the attention densely over n tokens.
    """
    e = d // h
    executed = attention_cost(b * n // 4, h, 4, 4, e, e, masked=False)
    dense = attention_cost(b, h, n, n, e, e, masked=False)
    return (
        _ln(b * n * d) + 4 * _linear(b * n, d, d) + Cost(executed.macs, executed.flops, dense.paper) + elementwise_cost(b * n * d)
    )


def cross_attention(b: int, n: int, d: int, m: int, h: int, query: str) -> Cost:
    """Paper-spec 3.4: LN + q/k/v on n tokens, one query per window over its 4 keys, o-proj and
    residual on n/4, then LN + FFN + residual on n/4."""
    q, e = n // 4, d // h
    pick = Cost(0, b * n * d, 0) if query == "mean" else ZERO  # window mean of Q, and of x for the residual
    return (
        _ln(b * n * d)
        + 3 * _linear(b * n, d, d)
        + pick
        + attention_cost(b * q, h, 1, 4, e, e, masked=False)
        + _linear(b * q, d, d)
        + pick
        + elementwise_cost(b * q * d)
        + _ln(b * q * d)
        + _linear(b * q, d, m)
        + elementwise_cost(b * q * m)
        + _linear(b * q, m, d)
        + elementwise_cost(b * q * d)
    )


def compressor_cost(name: str, b: int, n: int, d: int, m: int, h: int) -> Cost:
    if name == "avg-pool":
        return Cost(0, b * n * d, 0)
    if name == "pixel-unshuffle-mlp":
        return fusion_mlp(b, n, d, 4 * d)
    if name == "reused-mlp":
        return fusion_mlp(b, n, d, 4 * m)
    if name == "window-attn-mlp":
        return window_attention(b, n, d, h) + fusion_mlp(b, n, d, 4 * d)
    if name == "window-attn-reused-mlp":
        return window_attention(b, n, d, h) + fusion_mlp(b, n, d, 4 * m)
    if name in ("cross-attn-topleft", "cross-attn-mean"):
        return cross_attention(b, n, d, m, h, name.rsplit("-", 1)[1])
    raise UhdProfileError(f"no closed form for compressor {name!r}")


def connector_cost(b: int, n: int, d: int, out: int, ratio: int) -> Cost:
    """Chained 2x2 pixel-unshuffle MLP stages (docs/paper.md §4); the paper excludes all of it."""
    total = ZERO
    stages = {1: 0, 4: 1, 16: 2}[ratio]
    for i in range(stages):
        q = n // 4
        width = out if i == stages - 1 else d
        total = (
            total
            + _ln(b * q * 4 * d)
            + _linear(b * q, 4 * d, 4 * d)
            + elementwise_cost(b * q * 4 * d)
            + _linear(b * q, 4 * d, width)
        )
        n = q
    return _paper_free(total)


def analytic_cost(spec: VariantSpec, batch: int = 1) -> Cost:
    """Closed-form cost of ``spec`` in every convention (see module docstring for coverage)."""
    enc = spec.enc
    if enc.trunk not in _SIGLIP_TRUNKS:
        raise UhdProfileError(
            f"the closed form covers the SigLIP-family presets; {spec.encoder} is cross-checked by execution instead"
        )
    b, d, m, h, p = batch, enc.hidden, enc.mlp, enc.heads, enc.patch
    rows, cols = spec.grid
    n = rows * cols
    native = spec.size == (enc.image_size, enc.image_size)
    embed = matmul_cost(b * n * d * 3 * p * p, out_elems=b * n * d, bias=True)  # patch conv
    embed = Cost(embed.macs, embed.flops, embed.macs)  # conv bias not charged by the paper
    if not native and not enc.released:
        interp = 16 * d * n  # bicubic position-table resize, once per batch: 16 taps per output
        embed = embed + Cost(interp, 2 * interp, 0)
    embed = embed + _paper_free(elementwise_cost(b * n * d))  # position add
    total = embed
    tokens = n
    for i in range(enc.layers):
        total = total + siglip_layer(b, tokens, d, m, h)
        if spec.compressor is not None and i == spec.depth:
            total = total + compressor_cost(spec.compressor, b, tokens, d, m, h)
            tokens //= 4
    total = total + _paper_free(_ln(b * tokens * d))  # post-LayerNorm
    return total + connector_cost(b, tokens, d, spec.llm_hidden, spec.ratio)
