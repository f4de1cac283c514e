"""Formulas for the LLM stage, computed from the geometry alone (never from execution).

Two different things live here:

* **Closed forms** (``closed_form``): the exact ``macs`` the counter must find when it runs a preset
  (prefill and every decode step), derived op by op from the ``transformers`` code. Tests require
  counted == closed form to the integer for every preset, so a module that runs an op the formula
  does not expect, or with another shape, is caught.

* **The textbook formula** (``textbook``): the per-layer prefill formula that transformer and
  token-pruning papers print, e.g. FastV's 4nd^2 + 2n^2d + 2ndm per layer, summed over layers. It is
  an approximation by design (dense attention, no norms, usually no LM head, two-matrix MLP, no GQA)
  and papers differ in which of those choices they make, so every choice is a named option. It is
  called *textbook* because that is what it is: the standard back-of-the-envelope formula, computed
  from the geometry, not a measurement and not any one paper's number (a name like
  "prefill-formula" would say neither). Always show it next to the counted figure
  (``LlmCount.as_dict`` does): the gap is the point.

Both are in multiply-accumulates (MACs): compare with the ``macs`` convention. Papers that print
this formula usually call the result "FLOPs"; ``TextbookOptions(flops_per_mac=2)`` doubles it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from uhd_profile.errors import UhdProfileError
from uhd_profile.model.llm_drops import LM_HEAD_CHOICES, Drop, check_tokens
from uhd_profile.model.llms import FULL, LlmSpec

GDN_CHUNK = 64
"""Chunk length of ``transformers``' torch gated-delta-rule (``torch_chunk_gated_delta_rule``)."""


# --------------------------------------------------------------------------------------------
# Closed forms (exact, in the macs convention)
# --------------------------------------------------------------------------------------------


def _causal_pairs(n: int) -> int:
    return n * (n + 1) // 2


def _attention_layer(s: LlmSpec, n: int, pairs: int) -> int:
    """MACs of one softmax-attention layer: n tokens through the projections and MLP, ``pairs``
    (query, key) pairs per head through QK^T and AV."""
    q_width = s.heads * s.head_dim * (2 if s.attn_output_gate else 1)  # Qwen3.5: half of q_proj is a gate
    proj = n * s.hidden * (q_width + 2 * s.kv_heads * s.head_dim) + n * s.heads * s.head_dim * s.hidden
    attn = s.heads * pairs * 2 * s.head_dim
    return proj + attn + 3 * n * s.hidden * s.mlp


def _linear_projections(s: LlmSpec, n: int) -> int:
    """A gated delta net's in_proj_qkv, in_proj_z, in_proj_b, in_proj_a and out_proj on n tokens."""
    key_dim, value_dim = s.linear_k_heads * s.linear_k_dim, s.linear_v_heads * s.linear_v_dim
    return n * s.hidden * (2 * key_dim + value_dim + value_dim + 2 * s.linear_v_heads) + n * value_dim * s.hidden


def _conv_dim(s: LlmSpec) -> int:
    return 2 * s.linear_k_heads * s.linear_k_dim + s.linear_v_heads * s.linear_v_dim


def _linear_layer_prefill(s: LlmSpec, n: int) -> int:
    """One gated-delta-net layer over n tokens, as ``transformers``' torch fallback runs it."""
    k = s.conv_kernel
    # depthwise causal conv, padded by k-1 on both sides and cut back to n (inputs shorter than k
    # are first padded to k by the cache)
    conv = _conv_dim(s) * (max(n, k) + k - 1) * k
    c, dk, dv, hv = GDN_CHUNK, s.linear_k_dim, s.linear_v_dim, s.linear_v_heads
    chunks = math.ceil(n / c)
    per_chunk = (
        2 * c * c * dk  # beta-scaled K K^T and Q K^T inside the chunk
        + c * (c - 1) // 2 * (dv + dk)  # two unit-triangular solves (values and decayed keys)
        + 3 * c * dk * dv  # state reads (K and Q against the state) and the state update
        + c * c * dv  # intra-chunk attention times the new values
    )
    return _linear_projections(s, n) + conv + hv * chunks * per_chunk + 3 * n * s.hidden * s.mlp


def _linear_layer_decode(s: LlmSpec) -> int:
    """One gated-delta-net layer for one new token: the conv update convolves the k cached
    columns plus the new one (two outputs); the recurrent update is element-wise multiplies and
    sums, which ``macs`` prices at 0 (see docs/llm.md)."""
    return _linear_projections(s, 1) + _conv_dim(s) * 2 * s.conv_kernel + 3 * s.hidden * s.mlp


@dataclass(frozen=True)
class ClosedForm:
    """Exact MACs of the LLM stage from the geometry: ``prefill`` (causal attention as executed),
    ``prefill_dense`` (causal attention as the full square), ``decode`` (one entry per decode
    forward), ``tokens_per_layer`` (prefill tokens per layer)."""

    prefill: int
    prefill_dense: int
    decode: tuple[int, ...]
    tokens_per_layer: tuple[int, ...]


def closed_form(
    spec: LlmSpec,
    visual_tokens: int,
    prompt_tokens: int = 64,
    decode_tokens: int = 0,
    lm_head: str = "last",
    drop: Drop | None = None,
) -> ClosedForm:
    """The ``macs`` ``count_llm`` must find for these arguments, from the geometry alone."""
    check_tokens(visual_tokens, prompt_tokens, decode_tokens)
    if lm_head not in LM_HEAD_CHOICES:
        raise UhdProfileError(f"lm_head = {lm_head!r}; valid: {', '.join(LM_HEAD_CHOICES)}")
    if drop is not None:
        visual, active = drop.schedule(spec, visual_tokens)
    else:
        visual, active = (visual_tokens,) * spec.layers, ()
    tokens = tuple(v + prompt_tokens for v in visual)
    prefill = dense = 0
    for kind, n in zip(spec.types, tokens):
        if kind == FULL:
            prefill += _attention_layer(spec, n, _causal_pairs(n))
            dense += _attention_layer(spec, n, n * n)
        else:
            layer = _linear_layer_prefill(spec, n)
            prefill += layer
            dense += layer
    # the attention ranking recomputes the last query's row at each stage's layer: 1 x n_K x e per head
    ranked = active if drop is not None and drop.select == "attention" else ()
    ranking = sum(spec.heads * tokens[k] * spec.head_dim for k, _, _ in ranked)
    head = (1 if lm_head == "last" else tokens[-1]) * spec.hidden * spec.vocab
    decode = []
    for t in range(decode_tokens):
        step = spec.hidden * spec.vocab
        for kind, n in zip(spec.types, tokens):
            step += _attention_layer(spec, 1, n + t + 1) if kind == FULL else _linear_layer_decode(spec)
        decode.append(step)
    return ClosedForm(prefill + ranking + head, dense + ranking + head, tuple(decode), tokens)


# --------------------------------------------------------------------------------------------
# The textbook formula
# --------------------------------------------------------------------------------------------

TEXTBOOK_SCOPES = ("sequence", "visual")
TEXTBOOK_HEADS = ("none", "last", "all")


@dataclass(frozen=True)
class TextbookOptions:
    """The choices a printed per-layer formula makes. Defaults give the plain printed form,
    4nd^2 + 2n^2d + 2ndm per layer (n = every token of the prefill, no LM head).

    ``scope``: ``"sequence"`` (n = visual + prompt tokens) or ``"visual"`` (n = visual tokens only).
    ``mlp_matrices``: 2 (2ndm: an up and a down projection) or 3 (3ndm: SwiGLU's gate, up, down).
    ``gqa``: False charges q, k, v and o at d x d each (4nd^2); True charges k and v at their real
    width kv_heads x head_dim (2nd^2 + 2nd·kv·e).
    ``lm_head``: ``"none"``, ``"last"`` (one position: d·V) or ``"all"`` (n·d·V).
    ``flops_per_mac``: 1 (the formula's terms are multiply-accumulates) or 2 (FLOPs).
    """

    scope: str = "sequence"
    mlp_matrices: int = 2
    gqa: bool = False
    lm_head: str = "none"
    flops_per_mac: int = 1

    def __post_init__(self) -> None:
        if self.scope not in TEXTBOOK_SCOPES:
            raise UhdProfileError(f"textbook scope = {self.scope!r}; valid: {', '.join(TEXTBOOK_SCOPES)}")
        if self.mlp_matrices not in (2, 3) or isinstance(self.mlp_matrices, bool):
            raise UhdProfileError(f"textbook mlp_matrices = {self.mlp_matrices!r}: must be 2 (2ndm) or 3 (3ndm)")
        if not isinstance(self.gqa, bool):
            raise UhdProfileError(f"textbook gqa = {self.gqa!r}: must be True or False")
        if self.lm_head not in TEXTBOOK_HEADS:
            raise UhdProfileError(f"textbook lm_head = {self.lm_head!r}; valid: {', '.join(TEXTBOOK_HEADS)}")
        if self.flops_per_mac not in (1, 2) or isinstance(self.flops_per_mac, bool):
            raise UhdProfileError(f"textbook flops_per_mac = {self.flops_per_mac!r}: must be 1 (MACs) or 2 (FLOPs)")


@dataclass(frozen=True)
class Textbook:
    """The textbook figure: ``total`` (MACs, or FLOPs with ``flops_per_mac=2``), its ``per_layer``
    terms, ``lm_head`` term, the ``tokens_per_layer`` n it used and the ``options``."""

    total: int
    per_layer: tuple[int, ...]
    lm_head: int
    tokens_per_layer: tuple[int, ...]
    options: TextbookOptions

    def as_dict(self) -> dict:
        return {
            "total": self.total,
            "per_layer": list(self.per_layer),
            "lm_head": self.lm_head,
            "tokens_per_layer": list(self.tokens_per_layer),
            "options": asdict(self.options),
            "unit": "MACs" if self.options.flops_per_mac == 1 else "FLOPs",
        }


def textbook(
    spec: LlmSpec,
    visual_tokens: int,
    prompt_tokens: int = 64,
    drop: Drop | None = None,
    options: TextbookOptions = TextbookOptions(),
) -> Textbook:
    """The per-layer prefill formula papers print, for ``spec``, with ``drop``'s token
    counts per layer. Every layer is treated as a softmax-attention layer with d = hidden and
    head_dim x heads as the attention width (a printed formula knows nothing of linear attention)."""
    check_tokens(visual_tokens, prompt_tokens, 0)
    if not isinstance(options, TextbookOptions):
        raise UhdProfileError(f"textbook options = {options!r}: must be a TextbookOptions")
    visual = drop.schedule(spec, visual_tokens)[0] if drop is not None else (visual_tokens,) * spec.layers
    extra = prompt_tokens if options.scope == "sequence" else 0
    tokens = tuple(v + extra for v in visual)
    d, m, width = spec.hidden, spec.mlp, spec.heads * spec.head_dim
    per_layer = []
    for n in tokens:
        if options.gqa:
            proj = 2 * n * d * width + 2 * n * d * spec.kv_heads * spec.head_dim
        else:
            proj = 4 * n * d * d
        per_layer.append(proj + 2 * n * n * width + options.mlp_matrices * n * d * m)
    head_tokens = {"none": 0, "last": 1, "all": tokens[-1]}[options.lm_head]
    head = head_tokens * d * spec.vocab
    k = options.flops_per_mac
    scaled = tuple(k * x for x in per_layer)
    return Textbook(sum(scaled) + k * head, scaled, k * head, tokens, options)
