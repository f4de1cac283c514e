"""FLOPs engine: counts what a module graph executes, per module, in named conventions.

How it works (see README, "Conventions"):

* The model runs under a ``TorchDispatchMode``; every aten op is priced by a pure function of
  its shapes taken from a registry (``register``), which refuses duplicates. Ops with no formula
  that produce floating-point tensors are listed in ``FlopCount.uncounted_ops``, never priced 0
  silently. Pure data movement (views, gathers, copies) is priced 0 by an explicit list.
* ``scaled_dot_product_attention`` is priced once per call at the torch-function level, before
  any backend is chosen, so that CPU (where torch's own counter sees 0), CUDA (flash, efficient,
  cuDNN, math) and ``meta`` execution all count the same. Lower-level attention ops (flash,
  efficient, varlen) have dispatch formulas too, for code that calls them directly.
* ``shape_only=True`` executes on ``meta`` tensors: floating-point tensors carry shapes but no
  data, so counting a 4900-token so400m costs milliseconds and no memory. Small integer
  bookkeeping tensors (grid sizes, ``cu_seqlens``, window indices) stay real on the CPU, because
  ``transformers`` code takes ``.tolist()`` of them.
* Every op is priced in all three conventions at once (``macs``, ``flops``, ``paper``), and
  attributed to the innermost module running it.
* Causal attention (decoder LLMs; see "Causal attention" below) is charged as the lower triangle
  in ``macs``/``flops`` and densely in ``paper``; what the triangle leaves out is kept in
  ``FlopCount.causal_skipped`` so the dense figure is always one addition away.

Causal attention. A causal kernel only needs the (query, key) pairs with key <= query; flash-style
kernels skip the masked tiles, so a causal prefill of n tokens costs about half of n^2. ``macs`` and
``flops`` charge exactly the allowed pairs (n(n+1)/2 per head for a prefill from an empty cache),
whichever way the causal structure reaches the attention: SDPA's ``is_causal`` flag (torch's
top-left alignment), a real (non-meta) causal mask tensor passed to SDPA (bottom-right alignment,
as ``transformers`` builds it with a KV cache), or eager attention (matmul, mask add, softmax,
matmul) inside a module whose ``is_causal`` is True and whose ``attention_mask`` is such a causal
mask. ``paper`` charges the full square, like the formulas papers print. Bidirectional attention
(every vision tower) is untouched: no ``is_causal``, no causal mask. Not covered: flash/efficient
attention ops called directly (below SDPA) with their own causal flag are still priced dense, and
a causal mask on ``meta`` (no values to inspect) is priced dense; ``transformers``' SDPA and eager
paths never hit either when counting on meta (bool masks are built on the CPU).

Module tags steer the ``paper`` convention (LLaVA-UHD v4; docs/conventions.md, "The paper convention in detail"); they are plain
attributes set by the variant builder, so they work on ``transformers`` modules too:

* ``_uhd_paper = "exclude"``: the paper does not charge this module (post-ViT connector,
  post-LayerNorm).
* ``_uhd_paper = "macs_only"``: only multiply-accumulates count (patch embedding: the conv counts,
  the position-embedding add and conv bias do not).
* ``_uhd_paper = "dense_attention"``: attention inside is charged as dense attention over all the
  module's input tokens (the paper's charge for the 2x2 window attention of its compressor). A
  module that takes several views packed in one sequence sets ``_uhd_dense_segments`` (token
  counts per view) for the call; it is then charged densely within each view, sum n_i^2.
"""

from __future__ import annotations

import contextlib
import math
import time
import weakref
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

from uhd_profile.count.conventions import check_convention
from uhd_profile.model.variants import VariantSpec, build_variant, example_input

# Element-wise weights shared by the flops and paper conventions (per output element).
LAYER_NORM_PER_ELEM = 5  # mean, centre, variance, normalise, affine (docs/conventions.md)
RMS_NORM_PER_ELEM = 4  # square, mean, rsqrt-scale, weight
SOFTMAX_PER_ELEM = 3  # exp, sum, divide
ATTN_SCALE_PER_SCORE = 1  # the 1/sqrt(d) scaling (3 + 1 = the paper's 4 per score)


@dataclass(frozen=True)
class Cost:
    """Price of one op in every convention (integers: MACs or FLOPs)."""

    macs: int = 0
    flops: int = 0
    paper: int = 0

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.macs + other.macs, self.flops + other.flops, self.paper + other.paper)

    def __rmul__(self, k: int) -> Cost:
        return Cost(self.macs * k, self.flops * k, self.paper * k)

    def get(self, convention: str) -> int:
        return getattr(self, convention)


ZERO = Cost()


def _numel(shape) -> int:
    return math.prod(int(s) for s in shape)


def matmul_cost(macs: int, out_elems: int = 0, bias: bool = False) -> Cost:
    """A matmul of ``macs`` multiply-accumulates; a bias add costs 1 per output element."""
    bias_flops = out_elems if bias else 0
    return Cost(macs=macs, flops=2 * macs + bias_flops, paper=macs)


def elementwise_cost(elems: int, per_elem: int = 1) -> Cost:
    return Cost(macs=0, flops=elems * per_elem, paper=elems * per_elem)


def attention_cost(batch: int, heads: int, lq: int, lk: int, e: int, ev: int, masked: bool) -> Cost:
    """Softmax attention of ``lq`` queries over ``lk`` keys, per (batch, head).

    MACs: QK^T (lq*lk*e) plus AV (lq*lk*ev). Per score: scaling (1) and softmax (3); a mask
    add costs 1 more in ``flops``; the paper charges no mask (docs/conventions.md).
    """
    scores = batch * heads * lq * lk
    macs = scores * (e + ev)
    per_score = ATTN_SCALE_PER_SCORE + SOFTMAX_PER_ELEM
    return Cost(macs=macs, flops=2 * macs + scores * (per_score + (1 if masked else 0)), paper=macs + scores * per_score)


def causal_pairs(lq: int, lk: int, align: str = "bottom_right") -> int:
    """(query, key) pairs a causal mask allows, per (batch, head).

    ``bottom_right``: the queries are the last ``lq`` of ``lk`` positions (``transformers``' masks
    with a KV cache): query i sees keys 0 .. lk - lq + i. ``top_left``: query i sees keys 0 .. i
    (torch's ``is_causal``). Both give lq(lq+1)/2 when lq == lk.
    """
    if align == "bottom_right":
        past = lk - lq
        if past >= 0:
            return lq * past + lq * (lq + 1) // 2
        # more queries than keys: the first -past queries see nothing
        return lk * (lk + 1) // 2
    m = min(lq, lk)
    return m * (m + 1) // 2 + (lq - m) * lk


def causal_attention_cost(
    batch: int, heads: int, lq: int, lk: int, e: int, ev: int, masked: bool, align: str
) -> tuple[Cost, Cost]:
    """Causal attention: (charged, skipped).

    ``charged``: ``macs``/``flops`` over the allowed pairs only, ``paper`` over the full square.
    ``skipped``: what ``macs``/``flops`` would add if the masked pairs were charged (paper 0), so
    charged + skipped == ``attention_cost`` in every convention.
    """
    dense = attention_cost(batch, heads, lq, lk, e, ev, masked)
    scores = batch * heads * causal_pairs(lq, lk, align)
    macs = scores * (e + ev)
    per_score = ATTN_SCALE_PER_SCORE + SOFTMAX_PER_ELEM + (1 if masked else 0)
    charged = Cost(macs=macs, flops=2 * macs + scores * per_score, paper=dense.paper)
    return charged, Cost(dense.macs - charged.macs, dense.flops - charged.flops, 0)


def causal_mask_pairs(mask: torch.Tensor, lq: int, lk: int) -> int | None:
    """If ``mask`` (bool, or additive float; broadcastable to (..., lq, lk)) is exactly the
    bottom-right causal pattern, the allowed pairs per (batch, head); otherwise None.

    Only real tensors can be inspected: a mask on ``meta`` has no values and returns None.
    """
    if not isinstance(mask, torch.Tensor) or mask.device.type == "meta" or mask.dim() < 2:
        return None
    if tuple(mask.shape[-2:]) != (lq, lk):
        return None
    allowed = mask if mask.dtype == torch.bool else mask > torch.finfo(mask.dtype).min / 2
    q = torch.arange(lq, device=mask.device)[:, None]
    k = torch.arange(lk, device=mask.device)[None, :]
    if not bool((allowed == (k <= q + (lk - lq))).all()):
        return None
    return causal_pairs(lq, lk, "bottom_right")


# --------------------------------------------------------------------------------------------
# Registry of dispatch-level formulas
# --------------------------------------------------------------------------------------------

Formula = Callable[[tuple, dict, Any], Cost]

KINDS = ("matmul", "attention", "norm", "softmax", "elementwise", "reduction", "resample")
"""What a registered formula prices: ``matmul`` (mm, addmm, bmm, conv), ``attention`` (fused
attention kernels: QK^T, softmax and AV in one op), ``norm``, ``softmax``, ``elementwise``,
``reduction``, ``resample`` (interpolation)."""

CATEGORIES = ("linear", "matmul", "attention", "attention_scores", "elementwise")
"""Where ``FlopCount.by_category`` puts every priced op: ``linear`` (a matmul or convolution inside an
``nn.Linear``/``nn.Conv*``), ``matmul`` (any other matmul, e.g. eager attention's QK^T and AV),
``attention`` (the multiply-accumulates of a fused attention kernel: QK^T and AV), ``attention_scores``
(scaling, softmax and mask of attention scores, fused or eager), ``elementwise`` (norms, activations,
residual adds, reductions, resampling)."""


@dataclass(frozen=True)
class FormulaEntry:
    """A registered formula: ``fn(args, kwargs, out) -> Cost``, its ``kind`` (``KINDS``), and for
    attention kernels ``heads(args) -> (heads, head_dim, value_dim)``."""

    fn: Formula
    kind: str
    heads: Callable[[tuple], tuple[int, int, int]] | None = None


_FORMULAS: dict[str, FormulaEntry] = {}


def register(
    *names: str, kind: str = "elementwise", heads: Callable[[tuple], tuple[int, int, int]] | None = None
) -> Callable[[Formula], Formula]:
    """Register a pricing formula for aten (or custom) ops, by qualified name ("aten::mm"), with
    the ``kind`` of arithmetic it prices (``KINDS``; attention kernels also say where their heads are).

    Refuses a name that already has a formula, so two formulas can never disagree silently.
    """
    if kind not in KINDS:
        raise ValueError(f"formula kind {kind!r} is not one of {KINDS}")
    if (kind == "attention") != (heads is not None):
        raise ValueError("attention formulas (and only they) say where their heads are")

    def deco(fn: Formula) -> Formula:
        for name in names:
            if name in _FORMULAS:
                raise ValueError(f"a FLOPs formula for {name} is already registered")
            _FORMULAS[name] = FormulaEntry(fn, kind, heads)
        return fn

    return deco


def has_formula(name: str) -> bool:
    return name in _FORMULAS


def formula_kind(name: str) -> str | None:
    """The ``kind`` of the formula registered for op ``name``, or None."""
    entry = _FORMULAS.get(name)
    return entry.kind if entry else None


def _heads_bhle(args: tuple) -> tuple[int, int, int]:
    """(heads, head_dim, value_dim) of q/k/v laid out (..., heads, length, dim) (SDPA)."""
    q, v = args[0], args[2]
    return int(q.shape[-3]), int(q.shape[-1]), int(v.shape[-1])


def _heads_blhe(args: tuple) -> tuple[int, int, int]:
    """(heads, head_dim, value_dim) of q/k/v laid out (..., length, heads, dim) (flash kernels)."""
    q, v = args[0], args[2]
    return int(q.shape[-2]), int(q.shape[-1]), int(v.shape[-1])


@register("aten::mm", kind="matmul")
def _mm(args, kwargs, out) -> Cost:
    a, b = args[0], args[1]
    return matmul_cost(a.shape[0] * a.shape[1] * b.shape[1])


@register("aten::addmm", kind="matmul")
def _addmm(args, kwargs, out) -> Cost:
    a, b = args[1], args[2]  # args[0] is the bias
    return matmul_cost(a.shape[0] * a.shape[1] * b.shape[1], out_elems=out.numel(), bias=True)


@register("aten::bmm", kind="matmul")
def _bmm(args, kwargs, out) -> Cost:
    a, b = args[0], args[1]
    return matmul_cost(a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2])


@register("aten::baddbmm", kind="matmul")
def _baddbmm(args, kwargs, out) -> Cost:
    a, b = args[1], args[2]
    return matmul_cost(a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2], out_elems=out.numel(), bias=True)


@register("aten::convolution", "aten::_convolution", kind="matmul")
def _conv(args, kwargs, out) -> Cost:
    w, bias = args[1], args[2]
    # each output element is a dot product over (C_in / groups) * prod(kernel) inputs
    per_out = _numel(w.shape[1:])
    return matmul_cost(out.numel() * per_out, out_elems=out.numel(), bias=bias is not None)


def _sdpa_dispatch(args, kwargs, out) -> Cost:
    q, k, v = args[0], args[1], args[2]
    mask = kwargs.get("attn_mask", args[3] if len(args) > 3 and isinstance(args[3], torch.Tensor) else None)
    b = _numel(q.shape[:-3]) if q.dim() > 3 else 1
    return attention_cost(b, q.shape[-3], q.shape[-2], k.shape[-2], q.shape[-1], v.shape[-1], mask is not None)


register(
    "aten::_scaled_dot_product_flash_attention_for_cpu",
    "aten::_scaled_dot_product_flash_attention",
    "aten::_scaled_dot_product_efficient_attention",
    "aten::_scaled_dot_product_cudnn_attention",
    "aten::_scaled_dot_product_attention_math",
    "aten::_scaled_dot_product_attention_math_for_mps",
    kind="attention",
    heads=_heads_bhle,
)(_sdpa_dispatch)


def varlen_attention_cost(heads: int, e: int, ev: int, cu_q: list[int], cu_k: list[int]) -> Cost:
    """Packed variable-length attention: each segment attends only within itself."""
    total = ZERO
    for i in range(len(cu_q) - 1):
        lq, lk = cu_q[i + 1] - cu_q[i], cu_k[i + 1] - cu_k[i]
        total = total + attention_cost(1, heads, lq, lk, e, ev, masked=False)
    return total


def _cu(t) -> list[int]:
    return [int(x) for x in t.detach().to("cpu").tolist()]


@register("aten::_flash_attention_forward", "aten::_efficient_attention_forward", kind="attention", heads=_heads_blhe)
def _flash_fwd(args, kwargs, out) -> Cost:
    # layout (total_or_batch, seq, heads, dim); cu_seqlens present for packed sequences
    q, k, v, cu_q, cu_k = args[0], args[1], args[2], args[3], args[4]
    if cu_q is None:
        b, lq, h, e = q.shape
        return attention_cost(b, h, lq, k.shape[1], e, v.shape[-1], masked=False)
    h, e = q.shape[-2], q.shape[-1]
    return varlen_attention_cost(h, e, v.shape[-1], _cu(cu_q), _cu(cu_k))


@register("torch_attn::_varlen_attn", "torch_attn::_varlen_attn_out", kind="attention", heads=_heads_blhe)
def _torch_varlen(args, kwargs, out) -> Cost:
    q, v, cu_q, cu_k = args[0], args[2], args[3], args[4]
    return varlen_attention_cost(q.shape[-2], q.shape[-1], v.shape[-1], _cu(cu_q), _cu(cu_k))


@register("flash_attn::_flash_attn_varlen_forward", kind="attention", heads=_heads_blhe)
def _fa2_varlen(args, kwargs, out) -> Cost:
    q, v, cu_q, cu_k = args[0], args[2], args[3], args[4]
    return varlen_attention_cost(q.shape[-2], q.shape[-1], v.shape[-1], _cu(cu_q), _cu(cu_k))


@register("flash_attn::_flash_attn_forward", kind="attention", heads=_heads_blhe)
def _fa2(args, kwargs, out) -> Cost:
    q, k, v = args[0], args[1], args[2]
    b, lq, h, e = q.shape
    return attention_cost(b, h, lq, k.shape[1], e, v.shape[-1], masked=False)


@register("aten::linalg_solve_triangular", kind="matmul")
def _solve_triangular(args, kwargs, out) -> Cost:
    # A X = B (left=True) by substitution, A (..., n, n) triangular, B (..., n, r): each of the r
    # columns needs n(n-1)/2 multiply-accumulates, plus n divisions unless A is unit-triangular
    # (the gated delta rule of hybrid LLMs solves unit-triangular chunk systems).
    a = args[0]
    unit = kwargs.get("unitriangular", args[4] if len(args) > 4 else False)
    n = int(a.shape[-1])
    rhs = out.numel() // n  # columns of B (left=True) or rows of B (left=False, X A = B): same work each
    macs = rhs * n * (n - 1) // 2
    divs = 0 if unit else out.numel()
    return Cost(macs=macs, flops=2 * macs + divs, paper=macs)


@register("aten::native_layer_norm", "aten::layer_norm", kind="norm")
def _layer_norm(args, kwargs, out) -> Cost:
    return elementwise_cost(args[0].numel(), LAYER_NORM_PER_ELEM)


@register("aten::_fused_rms_norm", "aten::rms_norm", kind="norm")
def _rms_norm(args, kwargs, out) -> Cost:
    return elementwise_cost(args[0].numel(), RMS_NORM_PER_ELEM)


@register("aten::_softmax", "aten::_safe_softmax", "aten::softmax", kind="softmax")
def _softmax(args, kwargs, out) -> Cost:
    return elementwise_cost(args[0].numel(), SOFTMAX_PER_ELEM)


def _out_elems(args, kwargs, out) -> Cost:
    o = out[0] if isinstance(out, (tuple, list)) else out
    return elementwise_cost(o.numel(), 1)


register(
    *(
        f"aten::{n}"
        for n in (
            "add",
            "add_",
            "sub",
            "sub_",
            "rsub",
            "mul",
            "mul_",
            "div",
            "div_",
            "neg",
            "reciprocal",
            "gelu",
            "gelu_",
            "silu",
            "silu_",
            "sigmoid",
            "sigmoid_",
            "tanh",
            "tanh_",
            "relu",
            "relu_",
            "exp",
            "exp_",
            "log",
            "sqrt",
            "rsqrt",
            "pow",
            "erf",
            "abs",
            "abs_",
            "clamp",
            "clamp_",
            "clamp_min",
            "softplus",
            "maximum",
            "minimum",
            "addcmul",
            "lerp",
            "sin",
            "cos",
            "hardtanh",
        )
    )
)(_out_elems)


@register("aten::mean", "aten::sum", "aten::prod", kind="reduction")
def _reduce(args, kwargs, out) -> Cost:
    # a reduction touches every input element once; the paper does not charge pooling arithmetic
    n = args[0].numel()
    return Cost(macs=0, flops=n, paper=0)


def _interp_cost(taps: int) -> Formula:
    def fn(args, kwargs, out) -> Cost:
        # weighted sum of `taps` inputs per output element; only used for position tables,
        # which the paper does not charge
        macs = out.numel() * taps
        return Cost(macs=macs, flops=2 * macs, paper=0)

    return fn


register("aten::upsample_bicubic2d", "aten::_upsample_bicubic2d_aa", kind="resample")(_interp_cost(16))
register("aten::upsample_bilinear2d", "aten::_upsample_bilinear2d_aa", kind="resample")(_interp_cost(4))
register("aten::upsample_nearest2d", "aten::_upsample_nearest_exact2d", kind="resample")(_interp_cost(0))

# Data movement and bookkeeping: priced 0 on purpose (no arithmetic).
FREE_OPS = frozenset(
    "aten::" + n
    for n in (
        "view",
        "_unsafe_view",
        "reshape",
        "_reshape_alias",
        "transpose",
        "t",
        "permute",
        "expand",
        "contiguous",
        "clone",
        "cat",
        "stack",
        "split",
        "split_with_sizes",
        "unbind",
        "slice",
        "select",
        "index",
        "index_select",
        "gather",
        "unsqueeze",
        "squeeze",
        "flatten",
        "_to_copy",
        "copy_",
        "detach",
        "alias",
        "constant_pad_nd",
        "embedding",
        "new_empty",
        "empty",
        "empty_like",
        "empty_strided",
        "zeros",
        "zeros_like",
        "ones",
        "ones_like",
        "full",
        "full_like",
        "arange",
        "fill_",
        "zero_",
        "narrow",
        "repeat",
        "lift_fresh",
        "lift_fresh_copy",
        "roll",
        "as_strided",
        "masked_fill",
        "masked_fill_",
        "where",
        "_local_scalar_dense",
        "native_dropout",
        "dropout",
        "new_zeros",
        "new_ones",
        "new_full",
        "unfold",
        "pixel_shuffle",
        "pixel_unshuffle",
        "repeat_interleave",
        "flip",
        "scalar_tensor",
        "_unsafe_index",
        "index_put",
        "index_put_",
        "scatter",
        "scatter_",
        "sort",
        "argsort",
        "topk",
        "eq",
        "ne",
        "lt",
        "le",
        "gt",
        "ge",
        "logical_and",
        "logical_or",
        "logical_not",
        "bitwise_and",
        "bitwise_or",
        "cumsum",
        "diff",
        "max",
        "min",
        "isfinite",
        "isnan",
        "_assert_async",
        "sym_size",
        "sym_numel",
        "sym_stride",
        "item",
        "resize_",
        "set_",
        "view_as_real",
        "view_as_complex",
        "_unsafe_view",
    )
)


def _qualname(func) -> str:
    name = func._schema.name  # e.g. "aten::mm"
    return name


# --------------------------------------------------------------------------------------------
# Result
# --------------------------------------------------------------------------------------------


@dataclass
class FlopCount:
    """What ``count_flops`` saw.

    ``by_module`` maps the dotted path of the innermost module that ran each op to its summed
    ``Cost`` (``""`` is the root); ``by_category`` splits the same costs further by what kind of
    arithmetic they are (``(path, category)`` -> Cost, ``CATEGORIES``); ``by_op`` sums them per op.
    ``uncounted_ops`` maps op names that produced floating-point tensors but have no formula to how
    often they ran: those are *not* in any total.
    """

    by_module: dict[str, Cost] = field(default_factory=dict)
    by_op: dict[str, Cost] = field(default_factory=dict)
    by_category: dict[tuple[str, str], Cost] = field(default_factory=dict)
    uncounted_ops: dict[str, int] = field(default_factory=dict)
    variant_id: str | None = None
    encoder: str | None = None
    tokens_in: int | None = None
    tokens_llm: int | None = None
    params: int | None = None  # parameters of the counted module
    seconds: float = 0.0  # wall time of the counting run
    causal_skipped: Cost = ZERO
    """Causally masked (query, key) pairs that ``macs``/``flops`` do not charge (``paper`` 0: it
    already charges them): ``total + causal_skipped`` is the count with causal attention dense."""

    @property
    def dense(self) -> Cost:
        """The total with causal attention charged as the full square in every convention."""
        return self.total + self.causal_skipped

    @property
    def total(self) -> Cost:
        t = ZERO
        for c in self.by_module.values():
            t = t + c
        return t

    def get(self, convention: str = "macs") -> int:
        check_convention(convention)
        return self.total.get(convention)

    def grouped(self, depth: int = 1, convention: str = "macs") -> dict[str, int]:
        """Totals per module prefix. ``depth`` counts path components, but a numeric component
        (a layer index) is kept with its container: ``layers.3`` is one group at depth 1."""
        check_convention(convention)
        out: dict[str, int] = defaultdict(int)
        for path, cost in self.by_module.items():
            out[module_group(path, depth)] += cost.get(convention)
        return dict(out)

    def categories(self, convention: str = "macs") -> dict[str, int]:
        """Totals per category (``CATEGORIES``) in ``convention``."""
        check_convention(convention)
        out = dict.fromkeys(CATEGORIES, 0)
        for (_, cat), cost in self.by_category.items():
            out[cat] += cost.get(convention)
        return out


def module_group(path: str, depth: int) -> str:
    if not path:
        return "(root)"
    parts = path.split(".")
    keep: list[str] = []
    taken = 0
    for p in parts:
        if taken >= depth and not p.isdigit():
            break
        keep.append(p)
        if not p.isdigit():
            taken += 1
    return ".".join(keep)


# --------------------------------------------------------------------------------------------
# The counting modes
# --------------------------------------------------------------------------------------------

_META = torch.device("meta")
_CPU = torch.device("cpu")


def _is_float(t: Any) -> bool:
    return isinstance(t, torch.Tensor) and (t.is_floating_point() or t.is_complex())


@dataclass
class _CausalWindow:
    """Eager causal attention in one module: QK^T (a bmm giving (.., lq, lk) scores), then
    element-wise ops and softmax on the scores, then AV (a bmm reading them). Between the two bmms
    every op on a (.., lq, lk) tensor is score arithmetic; ``macs``/``flops`` are cut to the
    ``pairs`` allowed out of lq*lk, ``paper`` stays dense, and the mask add is free in ``paper``
    (as SDPA's mask is). Ops before QK^T (projections, rotary) and after AV are never touched."""

    lq: int
    lk: int
    pairs: int
    phase: str = "before"  # before QK^T -> "scores" -> "done" after AV

    def scale(self, x: int) -> int:
        # every score op's price is a multiple of lq*lk (per score: e MACs, 1 scale, 3 softmax...);
        # anything else is left whole rather than rounded
        square = self.lq * self.lk
        return x // square * self.pairs if x % square == 0 else x

    def classify(self, name: str, args, out) -> str | None:
        """ "qk", "score", "mask_add", "av" or None (not score arithmetic)."""

        def scores(t) -> bool:
            return isinstance(t, torch.Tensor) and t.dim() >= 3 and tuple(t.shape[-2:]) == (self.lq, self.lk)

        o = out[0] if isinstance(out, (tuple, list)) else out
        if name == "aten::bmm":
            if self.phase == "before" and scores(o):
                return "qk"
            if self.phase == "scores" and scores(args[0]):
                return "av"
            return None
        if self.phase != "scores" or not scores(o):
            return None
        if name in ("aten::add", "aten::add_") and len(args) > 1 and isinstance(args[1], torch.Tensor):
            return "mask_add"
        return "score"


class _Counter:
    """Shared state of one counting run: module stack, totals, uncounted ops."""

    def __init__(self, names: dict[int, str]):
        self.names = names
        self.stack: list[torch.nn.Module] = []
        self.by_module: dict[str, Cost] = defaultdict(lambda: ZERO)
        self.by_op: dict[str, Cost] = defaultdict(lambda: ZERO)
        self.by_category: dict[tuple[str, str], Cost] = defaultdict(lambda: ZERO)
        self.uncounted: Counter[str] = Counter()
        self.suppress = 0
        # dense-attention modules open on the stack: id -> [batch, tokens, heads, head_dim, ev]
        self.dense_open: dict[int, list] = {}
        self.causal_skipped = ZERO
        # eager causal attention: id(module) -> _CausalWindow while such a module runs
        self.causal_open: dict[int, _CausalWindow] = {}
        # causal-pattern checks of real masks by id; a weak reference tells a live mask from a
        # new one that reuses a freed mask's id, without keeping big masks alive
        self.mask_pairs: dict[int, tuple[weakref.ref, int | None]] = {}

    def mask_causal_pairs(self, mask: torch.Tensor, lq: int, lk: int) -> int | None:
        """``causal_mask_pairs`` memoised per mask object: ``transformers`` hands the same mask to
        every layer, and checking a 5k x 5k mask 36 times would dominate a meta count."""
        hit = self.mask_pairs.get(id(mask))
        if hit is not None and hit[0]() is mask:
            return hit[1]
        pairs = causal_mask_pairs(mask, lq, lk)
        self.mask_pairs[id(mask)] = (weakref.ref(mask), pairs)
        return pairs

    def causal_pre_hook(self, module, args, kwargs):
        """Opens the eager causal window of a ``transformers`` attention module (``is_causal``)
        that receives a real causal ``attention_mask``; SDPA calls inside are priced on their own."""
        mask = kwargs.get("attention_mask")
        x = args[0] if args else kwargs.get("hidden_states")
        if mask is None or not isinstance(x, torch.Tensor) or x.dim() < 2:
            return
        lq, lk = int(mask.shape[-2]), int(mask.shape[-1])
        if lq != int(x.shape[-2]):
            return
        pairs = self.mask_causal_pairs(mask, lq, lk)
        if pairs is not None and pairs < lq * lk:
            self.causal_open[id(module)] = _CausalWindow(lq, lk, pairs)

    def causal_post_hook(self, module, args, output):
        self.causal_open.pop(id(module), None)

    def causal_window(self) -> _CausalWindow | None:
        """The eager causal window of the innermost module, if it has one."""
        if self.stack:
            return self.causal_open.get(id(self.stack[-1]))
        return None

    # -- module tracking -----------------------------------------------------------------
    def current_path(self) -> str:
        for m in reversed(self.stack):
            name = self.names.get(id(m))
            if name is not None:
                return name
        return ""

    def paper_mode(self) -> tuple[str | None, torch.nn.Module | None]:
        """Innermost-wins except that 'exclude' anywhere above wins over everything."""
        tag_found: tuple[str | None, torch.nn.Module | None] = (None, None)
        for m in reversed(self.stack):
            tag = getattr(m, "_uhd_paper", None)
            if tag == "exclude":
                return "exclude", m
            if tag is not None and tag_found[0] is None:
                tag_found = (tag, m)
        return tag_found

    def pre_hook(self, module, args, kwargs=None):
        self.stack.append(module)
        if getattr(module, "_uhd_paper", None) == "dense_attention":
            x = args[0] if args else (kwargs or {}).get("hidden_states")
            self.dense_open[id(module)] = [
                int(x.shape[0]),
                int(x.shape[1]),
                None,
                None,
                None,
                getattr(module, "_uhd_dense_segments", None),
            ]

    def post_hook(self, module, args, output):
        if self.stack and self.stack[-1] is module:
            entry = self.dense_open.pop(id(module), None)
            if entry is not None and entry[2] is not None:
                b, n, h, e, ev, segments = entry
                dense = ZERO
                for seg in segments or (n,):
                    dense = dense + attention_cost(b, h, seg, seg, e, ev, masked=False)
                if self.paper_mode()[0] != "exclude":
                    self.add(Cost(paper=dense.paper), "uhd::dense_window_attention_charge", "attention")
            self.stack.pop()

    # -- pricing ---------------------------------------------------------------------------
    def add(self, cost: Cost, op: str, category: str) -> None:
        path = self.current_path()
        self.by_module[path] = self.by_module[path] + cost
        self.by_op[op] = self.by_op[op] + cost
        self.by_category[(path, category)] = self.by_category[(path, category)] + cost

    def price(self, op: str, cost: Cost, kind: str, heads: tuple | None = None) -> None:
        mode, owner = self.paper_mode()
        if mode == "exclude":
            cost = Cost(cost.macs, cost.flops, 0)
        elif mode == "macs_only":
            # only multiply-accumulates the paper charges (the conv), nothing element-wise
            cost = Cost(cost.macs, cost.flops, min(cost.paper, cost.macs))
        elif mode == "dense_attention" and kind == "attention":
            entry = self.dense_open.get(id(owner))
            if entry is not None and heads is not None:
                entry[2], entry[3], entry[4] = heads
            cost = Cost(cost.macs, cost.flops, 0)  # charged densely when the module exits
        if kind == "attention":
            # a fused kernel's QK^T and AV multiply-accumulates, apart from its score arithmetic
            mm = Cost(cost.macs, min(cost.flops, 2 * cost.macs), min(cost.paper, cost.macs))
            self.add(mm, op, "attention")
            self.add(Cost(0, cost.flops - mm.flops, cost.paper - mm.paper), op, "attention_scores")
        elif kind == "matmul":
            inner = self.stack[-1] if self.stack else None
            self.add(cost, op, "linear" if isinstance(inner, _WEIGHT_MODULES) else "matmul")
        else:
            self.add(cost, op, "attention_scores" if kind == "softmax" else "elementwise")


_WEIGHT_MODULES = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)


class _DispatchCounter(TorchDispatchMode):
    def __init__(self, state: _Counter, shape_only: bool):
        super().__init__()
        self.state = state
        self.shape_only = shape_only

    # Keep integer bookkeeping on the CPU while floating-point data lives on meta.
    def _route(self, func, args, kwargs):
        name = _qualname(func)
        dev = kwargs.get("device")
        if dev is not None and torch.device(dev).type == "meta":
            dtype = kwargs.get("dtype")
            int_factory = dtype is None and name in ("aten::arange", "aten::scalar_tensor")
            if int_factory or (dtype is not None and not (dtype.is_floating_point or dtype.is_complex)):
                if name == "aten::_to_copy" and args and isinstance(args[0], torch.Tensor):
                    if args[0].device.type == "cpu" and not _is_float(args[0]):
                        return None, args[0]  # stays real
                elif name != "aten::_to_copy":
                    trial = func(*args, **{**kwargs, "device": _CPU})
                    if isinstance(trial, torch.Tensor) and not _is_float(trial):
                        return None, trial
        tensors = [a for a in _flat(args, kwargs) if isinstance(a, torch.Tensor)]
        if any(t.device.type == "meta" for t in tensors) and any(t.device.type == "cpu" for t in tensors):
            to_meta = lambda a: a.to(_META) if isinstance(a, torch.Tensor) and a.device.type == "cpu" else a  # noqa: E731
            args, kwargs = tree_map(to_meta, args), tree_map(to_meta, kwargs)
        return (args, kwargs), None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.shape_only:
            routed, early = self._route(func, args, kwargs)
            if routed is None:
                return early
            args, kwargs = routed
        out = func(*args, **kwargs)
        if self.state.suppress:
            return out
        name = _qualname(func)
        outs = out if isinstance(out, (tuple, list)) else (out,)
        if not any(_is_float(o) for o in outs):
            return out  # integer/bool bookkeeping (grid sizes, indices, masks) is not model arithmetic
        entry = _FORMULAS.get(name)
        if entry is not None:
            heads = entry.heads(args) if entry.heads is not None else None
            cost = entry.fn(args, kwargs, out)
            window = self.state.causal_window()
            kind = window.classify(name, args, out) if window is not None else None
            if kind is not None:
                # eager causal attention: charge the allowed pairs, keep the rest as skipped
                charged = Cost(window.scale(cost.macs), window.scale(cost.flops), 0 if kind == "mask_add" else cost.paper)
                self.state.causal_skipped = self.state.causal_skipped + Cost(
                    cost.macs - charged.macs, cost.flops - charged.flops, 0
                )
                cost = charged
                window.phase = {"qk": "scores", "av": "done"}.get(kind, window.phase)
            self.state.price(name, cost, entry.kind, heads)
        elif name not in FREE_OPS:
            self.state.uncounted[name] += 1
        return out


def _flat(args, kwargs) -> Iterator[Any]:
    for a in list(args) + list(kwargs.values()):
        if isinstance(a, (list, tuple)):
            yield from a
        else:
            yield a


class _FunctionCounter(TorchFunctionMode):
    """Prices ``scaled_dot_product_attention`` once, before any backend decomposes it."""

    def __init__(self, state: _Counter):
        super().__init__()
        self.state = state

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention and not self.state.suppress:
            q, k, v = args[0], args[1], args[2]
            mask = kwargs.get("attn_mask", args[3] if len(args) > 3 else None)
            is_causal = bool(kwargs.get("is_causal", args[5] if len(args) > 5 else False))
            b = _numel(q.shape[:-3]) if q.dim() > 3 else 1
            h, lq, e = int(q.shape[-3]), int(q.shape[-2]), int(q.shape[-1])
            lk, ev = int(k.shape[-2]), int(v.shape[-1])
            # GQA (enable_gqa) repeats K/V heads; the arithmetic is per query head, as priced
            masked = mask is not None
            pairs = self.state.mask_causal_pairs(mask, lq, lk) if masked else None
            if is_causal or (pairs is not None and pairs < lq * lk):
                cost, skipped = causal_attention_cost(b, h, lq, lk, e, ev, masked, "top_left" if is_causal else "bottom_right")
                self.state.causal_skipped = self.state.causal_skipped + skipped
            else:
                cost = attention_cost(b, h, lq, lk, e, ev, masked=masked)
            self.state.price("F.scaled_dot_product_attention", cost, "attention", heads=(h, e, ev))
            if q.device.type == "meta":
                # shape-only run: the result is only a shape. Skipping the call matters for causal
                # prefills: torch's math fallback materialises a real lq x lk causal mask (bool
                # factories stay on the CPU), seconds per 5k-token layer.
                return q.new_empty((*q.shape[:-1], ev))
            self.state.suppress += 1
            try:
                return func(*args, **kwargs)
            finally:
                self.state.suppress -= 1
        return func(*args, **kwargs)


@contextlib.contextmanager
def counting(model: torch.nn.Module, shape_only: bool = False, priced: bool = True) -> Iterator[_Counter]:
    """Context in which every forward through ``model`` is priced. Yields the live state.
    ``priced=False`` keeps the bookkeeping (the module stack, small integer tensors kept real on the
    CPU) and prices nothing: ``uhd_profile.count.meta.meta_run``, which the memory model traces in."""
    names: dict[int, str] = {}
    for name, mod in model.named_modules(remove_duplicate=False):
        names.setdefault(id(mod), name)
    state = _Counter(names)
    if not priced:
        state.suppress += 1
    h1 = torch.nn.modules.module.register_module_forward_pre_hook(lambda m, a: state.pre_hook(m, a))
    h2 = torch.nn.modules.module.register_module_forward_hook(lambda m, a, o: state.post_hook(m, a, o))
    # decoder attention modules (transformers marks them is_causal = True) need their
    # attention_mask keyword, which global hooks do not see
    local = []
    for mod in model.modules():
        if getattr(mod, "is_causal", False) is True:
            local.append(mod.register_forward_pre_hook(state.causal_pre_hook, with_kwargs=True))
            local.append(mod.register_forward_hook(state.causal_post_hook))
    try:
        with _FunctionCounter(state), _DispatchCounter(state, shape_only), torch.no_grad():
            yield state
    finally:
        h1.remove()
        h2.remove()
        for h in local:
            h.remove()


def count_module(model: torch.nn.Module, *inputs: Any, shape_only: bool = True, **kw: Any) -> FlopCount:
    """Run ``model(*inputs, **kw)`` once and price every op it executes.

    With ``shape_only`` the model and floating-point inputs must live on the ``meta`` device
    (integer inputs may stay on the CPU); nothing heavy is computed.
    """
    with counting(model, shape_only=shape_only) as state:
        model(*inputs, **kw)
    return FlopCount(
        by_module=dict(state.by_module),
        by_op=dict(state.by_op),
        by_category=dict(state.by_category),
        uncounted_ops=dict(state.uncounted),
        params=sum(p.numel() for p in model.parameters()),
        causal_skipped=state.causal_skipped,
    )


def count_flops(
    target: Any, *inputs: Any, batch: int = 1, weights: str | None = None, attn: str = "sdpa", shape_only: bool = True
) -> FlopCount:
    """Count a ``VariantSpec`` (built on ``meta``: no weights, no arithmetic) or a module.

    For a spec, the input is one (batch, 3, H, W) view. Returns counts in every convention;
    pick one with ``.get(convention)``.
    """
    t0 = time.perf_counter()
    if isinstance(target, VariantSpec):
        device = "meta" if shape_only else "cpu"
        model = build_variant(target, device=device, weights=weights if not shape_only else None, attn=attn)
        result = count_module(model, example_input(target, batch, device), shape_only=shape_only)
        result.variant_id, result.encoder = target.id, target.encoder
        result.tokens_in, result.tokens_llm = target.tokens_in, target.tokens_llm
    else:
        result = count_module(target, *inputs, shape_only=shape_only)
    result.seconds = time.perf_counter() - t0
    return result
