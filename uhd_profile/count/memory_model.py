"""Memory before it runs: what a forward holds, traced op by op on ``meta`` (docs/memory.md).

The model is not a formula. The variant (or the LLM) runs on the ``meta`` device exactly as the
FLOPs engine runs it (``uhd_profile.count.flops.counting``: the same modules, the same ops, small
integer bookkeeping kept real), and a dispatch mode watches every tensor storage the forward
creates, the way an allocator would: a storage is allocated when an op returns a tensor whose
storage did not exist before (views and in-place ops allocate nothing) and freed when its last
reference dies (a weak-reference finaliser on the storage). The live total over the forward gives
the activation peak; the storages live at that moment say what it is made of.

What a trace includes, and what it does not:

* **included**: every op output at its dtype's size: activations, the attention score matrices of
  eager attention with its float32 softmax copy and the cast back, contiguous copies made by
  ``reshape``/``matmul``, the forward's outputs, KV-cache tensors (and the copy ``torch.cat`` makes
  while a cache layer grows);
* **the attention path**: ``scaled_dot_product_attention`` runs as the op the target device would
  run: on ``cpu`` the backend ``torch._fused_sdp_choice`` picks for the same shapes (the fused flash
  kernel returns the output and a float32 log-sum-exp and never materialises the scores; the math
  fallback does); on ``cuda`` the backend the GPU picks where one is present, else torch's order for
  an Ampere-or-newer GPU (flash for fp16/bf16 without a mask, else memory-efficient, else math).
  A bool mask first becomes an additive mask of the query's dtype, as torch does. Eager attention
  runs ``transformers``' own code; on ``cuda`` a half-precision softmax into float32 runs as one
  kernel (``_softmax(half_to_float=True)``), as torch's CUDA path does, with no separate cast copy;
* **device rounding**: ``cuda`` rounds every allocation up to 512 bytes (the caching allocator's
  block, what ``max_memory_allocated`` counts); ``cpu`` counts exact bytes;
* **not included**: the small integer tensors the FLOPs engine keeps real on the CPU (grid sizes,
  window bounds: host bookkeeping in real runs too), kernel-internal scratch (the CPU flash kernel's per-thread blocks, cuBLAS and
  oneDNN workspaces), the allocator's cache and fragmentation, the CUDA context, and on a CPU the
  process itself. Compare ``activation_bytes`` with a measured *growth* over the forward.

Two shortcuts keep traces fast and change nothing (tests compare them with plain traces): an op
seen before with the same argument metadata is remade as empty tensors of the recorded shapes
instead of running its meta kernel again, and a tower layer called with the same input metadata
as an earlier layer of the same structure is replayed (its transient peak and its outputs) instead
of run again: Qwen2.5-VL's windows and every ViT's identical layers would otherwise be traced one
op at a time.
"""

from __future__ import annotations

import contextlib
import time
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.weak import WeakIdKeyDictionary

from uhd_profile.count.flops import module_group
from uhd_profile.count.llm import cache_size
from uhd_profile.count.meta import meta_llm, meta_run
from uhd_profile.errors import UhdProfileError
from uhd_profile.model.llm_drops import check_tokens
from uhd_profile.model.llms import LlmSpec, check_attn, get_llm
from uhd_profile.model.variants import SLICING_DEFAULTS, VariantSpec, build_variant, example_input
from uhd_profile.units import Size, parse_dtype, torch_dtype

ATTN_PATHS = ("sdpa", "eager")
DEVICE_KINDS = ("cpu", "cuda")
CUDA_BLOCK_BYTES = 512
"""The CUDA caching allocator rounds every allocation up to a multiple of this (``kMinBlockSize``)."""

SOFTMAX_OPS = frozenset({"aten::_softmax", "aten::_safe_softmax", "aten::softmax"})
# ops that carry a score matrix forward at the same size (the cast back after a float32 softmax, dropout)
_SCORE_CARRIERS = frozenset({"aten::_to_copy", "aten::clone", "aten::native_dropout", "aten::dropout"})

# torch's SDPA backends, as ``torch._fused_sdp_choice`` numbers them
_MATH, _FLASH, _EFFICIENT = 0, 1, 2
BACKEND_NAMES = {0: "math", 1: "flash", 2: "efficient", 3: "cudnn", 4: "overrideable"}


def check_attn_path(attn: str) -> str:
    """``attn`` if it is an attention path of ``ATTN_PATHS``, else a one-line UhdProfileError."""
    if attn not in ATTN_PATHS:
        raise UhdProfileError(f"attention path {attn!r} is not valid; valid: {', '.join(ATTN_PATHS)}")
    return attn


def check_device_kind(kind: str) -> str:
    """``kind`` if it is one of ``DEVICE_KINDS``, else a one-line UhdProfileError."""
    if kind not in DEVICE_KINDS:
        raise UhdProfileError(f"device kind {kind!r} is not valid; valid: {', '.join(DEVICE_KINDS)}")
    return kind


# --------------------------------------------------------------------------------------------
# What a trace returns
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Allocation:
    """One storage a forward allocated: ``op`` that made it, the innermost ``module`` running
    (dotted path, "" for the root), ``shape``, ``dtype``, ``nbytes`` (after the device's rounding),
    and ``score``: whether it holds attention scores (QK^T, scaled or masked scores, the softmax
    and its casts)."""

    op: str
    module: str
    shape: tuple[int, ...]
    dtype: str
    nbytes: int
    score: bool = False


@dataclass(frozen=True)
class MemoryTrace:
    """What one traced call held, in bytes, relative to what existed before it (weights, inputs,
    a KV cache from an earlier call).

    ``peak_bytes``: the most bytes live at once; ``end_bytes``: live when the call returned (its
    outputs, a grown cache); ``score_bytes``: the part of the peak in attention score matrices;
    ``peak_module`` / ``peak_op``: what was running at the peak; ``live_at_peak``: the storages
    making up the peak, largest first; ``largest``: the largest single allocation;
    ``allocations``: storages made; ``sdpa_backends``: SDPA calls per backend; ``seconds``: wall
    time of the trace."""

    peak_bytes: int
    end_bytes: int
    score_bytes: int
    peak_module: str
    peak_op: str
    live_at_peak: tuple[Allocation, ...]
    largest: Allocation | None
    allocations: int
    sdpa_backends: dict[str, int]
    seconds: float = 0.0

    def by_module(self, depth: int = 1) -> dict[str, int]:
        """Bytes live at the peak per module group (``layers.3`` is one group at depth 1, as in
        ``FlopCount.grouped``), largest first."""
        out: dict[str, int] = {}
        for a in self.live_at_peak:
            key = module_group(a.module, depth)
            out[key] = out.get(key, 0) + a.nbytes
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))


# --------------------------------------------------------------------------------------------
# The tracker
# --------------------------------------------------------------------------------------------


class _Record:
    __slots__ = ("index", "op", "module", "shape", "dtype", "nbytes", "numel", "inputs", "score")

    def __init__(self, index, op, module, shape, dtype, nbytes, numel, inputs):
        self.index, self.op, self.module, self.shape = index, op, module, shape
        self.dtype, self.nbytes, self.numel, self.inputs = dtype, nbytes, numel, inputs
        self.score = False

    def frozen(self, module: str | None = None) -> Allocation:
        return Allocation(self.op, self.module if module is None else module, self.shape, self.dtype, self.nbytes, self.score)


def _tensors(x: Any) -> Iterator[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        yield x
    elif isinstance(x, (list, tuple)):
        for y in x:
            yield from _tensors(y)
    elif isinstance(x, dict):
        for y in x.values():
            yield from _tensors(y)


@dataclass
class _Replay:
    """What a tower layer did, to redo it without running it: the transient peak above the live
    total at its call, the storages live at that peak (record indices and module paths relative
    to the layer), and its outputs."""

    increment: int
    at_peak: tuple[tuple[int, str], ...]
    where: tuple[str, str]
    outputs: tuple  # (many, ((shape, stride, dtype, op, relative module), ...))
    backends: dict[str, int]  # SDPA calls it made, per backend


class _Live:
    """Live bytes over one trace: allocations, frees (by finaliser), the peak and what made it."""

    def __init__(self, path, round_to: int):
        self.path = path  # () -> the innermost module's dotted path
        self.round_to = round_to
        self.ids: WeakIdKeyDictionary = WeakIdKeyDictionary()  # storage -> record index, -1: existed before
        self.records: list[_Record] = []
        self.live: dict[int, int] = {}  # record index -> bytes, while alive
        self.now = 0
        self.peak = 0
        self.peak_ids: tuple[int, ...] = ()
        self.peak_virtual: tuple[tuple[int, str], ...] = ()  # (record, module path) of a replayed layer's peak
        self.peak_where = ("", "")
        self.closed = False
        self.paused = 0  # > 0 while the tracker itself makes tensors that are not the model's
        self.backends: dict[str, int] = {}
        self.existing_freed = 0  # storages from before the trace that died during it
        # a layer being recorded for replay: its live total at entry, its own peak and what made it
        self.layer: list | None = None

    def _rounded(self, nbytes: int) -> int:
        return -(-nbytes // self.round_to) * self.round_to if self.round_to > 1 else nbytes

    def _free(self, index: int) -> None:
        if self.closed:
            return
        n = self.live.pop(index, None)
        if n is not None:
            self.now -= n

    def _free_existing(self, nbytes: int) -> None:
        if not self.closed:
            self.now -= nbytes
            self.existing_freed += 1

    def see_inputs(self, tensors) -> list[int]:
        """Indices of tracked storages among ``tensors``. An untracked one existed before the
        trace (weights, inputs, a KV cache): using it allocates nothing, but if it dies during the
        trace (a cache layer replaced by a longer copy) its bytes are given back."""
        out = []
        for t in tensors:
            if t.device.type != "meta":
                continue  # integer bookkeeping kept on the CPU: not device memory
            st = t.untyped_storage()
            idx = self.ids.get(st)
            if idx is None:
                self.ids[st] = -1
                weakref.finalize(st, self._free_existing, self._rounded(st.nbytes()))
            elif idx >= 0:
                out.append(idx)
        return out

    def see_outputs(self, op: str, tensors, inputs: Sequence[int], module: str | None = None) -> list[int]:
        """Record the new storages among ``tensors`` (made by ``op``); returns their indices."""
        made: list[int] = []
        if self.paused:
            return made
        for t in tensors:
            if t.device.type != "meta":
                continue  # integer bookkeeping kept on the CPU (grid sizes, window bounds): not device memory
            st = t.untyped_storage()
            if st in self.ids:
                continue  # a view of, or in-place on, a storage that already exists
            idx = len(self.records)
            self.ids[st] = idx
            nbytes = self._rounded(st.nbytes())
            self.records.append(
                _Record(
                    idx,
                    op,
                    self.path() if module is None else module,
                    tuple(int(s) for s in t.shape),
                    str(t.dtype).replace("torch.", ""),
                    nbytes,
                    t.numel(),
                    tuple(inputs),
                )
            )
            made.append(idx)
            if nbytes == 0:
                continue
            self.live[idx] = nbytes
            self.now += nbytes
            weakref.finalize(st, self._free, idx)
            self._rise(op)
        return made

    def _rise(self, op: str) -> None:
        if self.layer is not None and self.now > self.layer[1]:
            self.layer[1] = self.now
            self.layer[2] = tuple(i for i in self.live if i >= self.layer[3])
            self.layer[4] = (self.path(), op)
        if self.now > self.peak:
            self.peak = self.now
            self.peak_ids = tuple(self.live)
            self.peak_virtual = ()
            self.peak_where = (self.path(), op)

    def mark_scores(self) -> None:
        """Tag the score matrices: every softmax's output and input, back through the ops of the
        same size that made its input (scaling, mask add, the QK^T product), and forward through
        casts of the same size (eager attention's cast back after a float32 softmax)."""
        by_index = {r.index: r for r in self.records}
        for r in self.records:
            if r.op in SOFTMAX_OPS:
                r.score = True
                stack = list(r.inputs)
                while stack:
                    p = by_index.get(stack.pop())
                    if p is not None and not p.score and p.numel == r.numel:
                        p.score = True
                        stack.extend(p.inputs)
        for r in self.records:  # allocation order: a cast comes after what it casts
            if not r.score and r.op in _SCORE_CARRIERS:
                r.score = any(i in by_index and by_index[i].score and by_index[i].numel == r.numel for i in r.inputs)


class _NoMemo(Exception):
    pass


def _arg_key(a: Any, cpu_values: bool = False) -> Any:
    """A hashable description of an op or layer argument (tensors by their metadata; with
    ``cpu_values`` small CPU tensors by their values too), or ``_NoMemo``."""
    if isinstance(a, torch.Tensor):
        if a.device.type == "meta":
            return ("T", tuple(a.shape), tuple(a.stride()), a.dtype)
        if cpu_values and a.numel() <= 1_000_000:
            return ("C", a.dtype, tuple(a.shape), tuple(a.reshape(-1).tolist()))
        raise _NoMemo
    if isinstance(a, (list, tuple)):
        return tuple(_arg_key(x, cpu_values) for x in a)
    if isinstance(a, dict):
        return tuple((k, _arg_key(v, cpu_values)) for k, v in sorted(a.items()))
    if a is None or isinstance(a, (bool, int, float, str, torch.dtype, torch.device, torch.layout, torch.memory_format)):
        return a
    raise _NoMemo


def _out_template(out: Any, input_storages: list) -> tuple | None:
    """How to remake ``out`` from metadata alone, or None when that would not be the same thing:
    an output aliasing an input or another output, living off ``meta``, or holding a storage
    larger than its strides need."""
    items = out if isinstance(out, (tuple, list)) else (out,)
    seen: list = []
    template: list[tuple] = []
    for o in items:
        if isinstance(o, torch.Tensor):
            st = o.untyped_storage()
            if o.device.type != "meta" or o.storage_offset() or any(st is s for s in (*input_storages, *seen)):
                return None
            extent = 1 + sum((n - 1) * k for n, k in zip(o.shape, o.stride())) if o.numel() else 0
            if st.nbytes() != extent * o.element_size():
                return None
            seen.append(st)
            template.append(("T", tuple(o.shape), tuple(o.stride()), o.dtype))
        elif o is None or isinstance(o, (bool, int, float)):
            template.append(("V", o))
        else:
            return None
    return (isinstance(out, (tuple, list)), tuple(template))


def _remake(template: tuple) -> Any:
    many, items = template
    made = [torch.empty_strided(t[1], t[2], dtype=t[3], device="meta") if t[0] == "T" else t[1] for t in items]
    return tuple(made) if many else made[0]


_OP_MEMO: dict[tuple, tuple | None] = {}
"""(op, argument metadata) -> output template (None: the op cannot be remade from metadata).
Meta kernels are pure functions of metadata, so an op seen once with the same arguments is remade
as empty tensors of the recorded shapes instead of running its (Python) meta kernel again."""


class _TrackAllocations(TorchDispatchMode):
    def __init__(self, live: _Live, memo: bool = True):
        super().__init__()
        self.live = live
        self.memo = memo

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        ins = list(_tensors((args, kwargs)))
        inputs = self.live.see_inputs(ins)
        key = None
        if self.memo and not func._schema.is_mutable:
            try:
                key = (func, _arg_key(args), _arg_key(kwargs))
            except _NoMemo:
                key = None
        template = _OP_MEMO.get(key) if key is not None else None
        if template is not None:
            out = _remake(template)
        else:
            out = func(*args, **kwargs)
            if key is not None and key not in _OP_MEMO:
                _OP_MEMO[key] = _out_template(out, [t.untyped_storage() for t in ins])
        self.live.see_outputs(func._schema.name, _tensors(out), inputs)
        return out


# --------------------------------------------------------------------------------------------
# Replaying identical tower layers
# --------------------------------------------------------------------------------------------


def _structure(module: nn.Module) -> tuple:
    """What makes two layers run the same ops: their class and every parameter's and buffer's
    name, shape and dtype."""
    return (
        type(module).__qualname__,
        tuple((n, tuple(p.shape), p.dtype) for n, p in module.named_parameters()),
        tuple((n, tuple(b.shape), b.dtype) for n, b in module.named_buffers()),
    )


@contextlib.contextmanager
def _replaying(live: _Live, layers: Sequence[nn.Module], prefix: dict[int, str]) -> Iterator[None]:
    """While open, a call of one of ``layers`` whose structure and input metadata match an earlier
    recorded call is replayed: its recorded transient peak is added at once and its outputs are
    made from metadata. A call that frees storages from before it, keeps storages alive other
    than its outputs, or returns something else than tensors is never replayed."""
    memo: dict[tuple, _Replay | None] = {}

    def wrap(module: nn.Module, original):
        here = prefix.get(id(module), "")
        sig = _structure(module)

        def relative(path: str) -> str:
            return path[len(here) :] if here and path.startswith(here) else "\0" + path

        def absolute(rel: str) -> str:
            return rel[1:] if rel.startswith("\0") else here + rel

        def forward(*args, **kwargs):
            try:
                key = (sig, _arg_key(args, cpu_values=True), _arg_key(kwargs, cpu_values=True))
            except _NoMemo:
                return original(*args, **kwargs)
            rec = memo.get(key)
            if rec is not None:
                return replay(rec, absolute)
            if key in memo or live.layer is not None or live.paused:
                return original(*args, **kwargs)
            start, freed, backends = live.now, live.existing_freed, dict(live.backends)
            live.layer = [start, start, (), len(live.records), (live.path(), "")]
            try:
                out = original(*args, **kwargs)
            finally:
                state, live.layer = live.layer, None
            outs = list(_tensors(out))
            made = [live.ids.get(t.untyped_storage()) for t in outs]
            kept = {i for i in live.live if i >= state[3]}
            template = _out_template(out, [])
            ok = template is not None and live.existing_freed == freed and kept == {i for i in made if i is not None}
            if not ok:
                memo[key] = None
                return out
            records = {r.index: r for r in live.records[state[3] :]}
            memo[key] = _Replay(
                increment=state[1] - start,
                at_peak=tuple((i, relative(records[i].module)) for i in state[2]),
                where=(relative(state[4][0]), state[4][1]),
                backends={k: v - backends.get(k, 0) for k, v in live.backends.items() if v != backends.get(k, 0)},
                outputs=(
                    template[0],
                    tuple(
                        (t[1], t[2], t[3], records[i].op, relative(records[i].module)) if t[0] == "T" else None
                        for t, i in zip(template[1], made)
                    ),
                ),
            )
            return out

        return forward

    def replay(rec: _Replay, absolute) -> Any:
        for k, v in rec.backends.items():
            live.backends[k] = live.backends.get(k, 0) + v
        if live.now + rec.increment > live.peak:
            live.peak = live.now + rec.increment
            live.peak_ids = tuple(live.live)
            live.peak_virtual = tuple((i, absolute(rel)) for i, rel in rec.at_peak)
            live.peak_where = (absolute(rec.where[0]), rec.where[1])
        many, items = rec.outputs
        made = []
        for item in items:
            shape, stride, dtype, op, rel = item
            live.paused += 1
            try:
                t = torch.empty_strided(shape, stride, dtype=dtype, device="meta")
            finally:
                live.paused -= 1
            live.see_outputs(op, [t], (), module=absolute(rel))
            made.append(t)
        return tuple(made) if many else made[0]

    patched = []
    for m in layers:
        if "forward" in m.__dict__:
            continue  # already an instance-level forward: leave it alone
        m.forward = wrap(m, m.forward)
        patched.append(m)
    try:
        yield
    finally:
        for m in patched:
            del m.forward


def tower_layers(model: nn.Module) -> list[nn.Module]:
    """The repeated layers of a variant's tower (``model.layers``), the ones a trace may replay."""
    layers = getattr(model, "layers", None)
    return list(layers) if isinstance(layers, nn.ModuleList) else []


# --------------------------------------------------------------------------------------------
# The attention path a device takes
# --------------------------------------------------------------------------------------------


def _stand_in(t: Any, device: str) -> Any:
    """An uninitialised tensor on ``device`` with ``t``'s shape, strides and dtype (only its
    metadata is read: memory never touched is never resident)."""
    if not isinstance(t, torch.Tensor):
        return t
    return torch.empty_strided(tuple(t.shape), tuple(t.stride()), dtype=t.dtype, device=device)


_CHOICES: dict[tuple, int] = {}


def sdpa_backend(
    device_kind: str,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> int:
    """The backend (``torch._fused_sdp_choice`` numbering: 0 math, 1 flash, 2 memory-efficient)
    that ``scaled_dot_product_attention`` takes for these arguments on ``device_kind``.

    Asked of torch itself with stand-in tensors on the device (the CPU always; CUDA where a GPU is
    present). Without a GPU, ``cuda`` follows torch's order for an Ampere-or-newer GPU: flash for
    fp16/bf16 without a mask and equal head sizes up to 256, else memory-efficient when the query
    and key heads match, else math."""
    check_device_kind(device_kind)

    def meta(t):
        return None if not isinstance(t, torch.Tensor) else (tuple(t.shape), tuple(t.stride()), t.dtype)

    key = (device_kind, meta(q), meta(k), meta(v), meta(attn_mask), dropout_p, is_causal, enable_gqa)
    if key in _CHOICES:
        return _CHOICES[key]
    if device_kind == "cpu" or torch.cuda.is_available():
        dev = "cpu" if device_kind == "cpu" else "cuda"
        qs, ks, vs, ms = (_stand_in(t, dev) for t in (q, k, v, attn_mask))
        choice = int(
            torch._fused_sdp_choice(
                qs, ks, vs, attn_mask=ms, dropout_p=dropout_p, is_causal=is_causal, scale=scale, enable_gqa=enable_gqa
            )
        )
    else:
        e = q.shape[-1]
        same = e == k.shape[-1] == v.shape[-1]
        heads_match = q.dim() < 3 or q.shape[-3] == k.shape[-3]
        if q.dtype in (torch.float16, torch.bfloat16) and attn_mask is None and same and e <= 256:
            choice = _FLASH
        elif heads_match:
            choice = _EFFICIENT
        else:
            choice = _MATH
    _CHOICES[key] = choice
    return choice


class _AttentionPath(TorchFunctionMode):
    """Runs ``F.scaled_dot_product_attention`` (and a half-precision softmax on CUDA) as the ops
    the target device would run."""

    def __init__(self, live: _Live, device_kind: str):
        super().__init__()
        self.live = live
        self.kind = device_kind

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.softmax and self.kind == "cuda":
            return self._softmax(func, args, kwargs)
        if func is not F.scaled_dot_product_attention:
            return func(*args, **kwargs)
        names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
        call = dict(zip(names, args))
        call.update(kwargs)
        q, k, v = call["query"], call["key"], call["value"]
        mask = call.get("attn_mask")
        dropout_p, is_causal = float(call.get("dropout_p", 0.0)), bool(call.get("is_causal", False))
        scale, gqa = call.get("scale"), bool(call.get("enable_gqa", False))
        self.live.paused += 1
        try:
            choice = sdpa_backend(self.kind, q, k, v, mask, dropout_p, is_causal, scale, gqa)
        finally:
            self.live.paused -= 1
        name = BACKEND_NAMES.get(choice, str(choice))
        self.live.backends[name] = self.live.backends.get(name, 0) + 1
        if isinstance(mask, torch.Tensor) and mask.dtype == torch.bool:
            # torch turns a bool mask into an additive one of the query's dtype before any backend
            mask = torch.zeros(mask.shape, dtype=q.dtype, device=q.device)
        if choice == _FLASH and self.kind == "cpu":
            return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
                q, k, v, dropout_p, is_causal, attn_mask=mask, scale=scale
            )[0]
        if choice == _FLASH:
            return torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, dropout_p, is_causal, False, scale=scale)[0]
        if choice == _EFFICIENT:
            return torch.ops.aten._scaled_dot_product_efficient_attention(
                q, k, v, mask, False, dropout_p, is_causal, scale=scale
            )[0]
        return torch.ops.aten._scaled_dot_product_attention_math(
            q, k, v, mask, dropout_p, is_causal, None, scale=scale, enable_gqa=gqa
        )[0]

    @staticmethod
    def _softmax(func, args, kwargs):
        # torch's CUDA softmax of a float16 input into float32 is one kernel (half_to_float), not a
        # cast copy followed by a softmax as elsewhere (aten/src/ATen/native/SoftMax.cpp)
        names = ("input", "dim", "_stacklevel", "dtype")
        call = dict(zip(names, args))
        call.update(kwargs)
        x, dim, dtype = call["input"], call.get("dim"), call.get("dtype")
        if isinstance(x, torch.Tensor) and x.dtype == torch.float16 and dtype == torch.float32 and dim is not None:
            return torch.ops.aten._softmax(x, dim, True)
        return func(*args, **kwargs)


# --------------------------------------------------------------------------------------------
# Tracing
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def tracking(model: nn.Module, device_kind: str = "cpu", replay: Sequence[nn.Module] = (), memo: bool = True) -> Iterator[_Live]:
    """While open, every forward through ``model`` (on ``meta``) is traced for memory as on
    ``device_kind``; ``replay`` lists layers whose identical calls may be replayed and ``memo``
    remakes ops from recorded metadata (the two shortcuts of the module docstring). Yields the live
    state; ``trace_of`` turns it into a ``MemoryTrace``."""
    check_device_kind(device_kind)
    prefix = {id(m): f"{n}." for n, m in model.named_modules()}
    with meta_run(model) as state:
        # the meta run is what the FLOPs engine and the memory model share (the module stack,
        # small integer bookkeeping kept real on the CPU), with nothing priced
        live = _Live(state.current_path, CUDA_BLOCK_BYTES if device_kind == "cuda" else 1)
        try:
            with _replaying(live, replay, prefix), _AttentionPath(live, device_kind), _TrackAllocations(live, memo):
                yield live
        finally:
            live.closed = True


def trace_of(live: _Live, seconds: float = 0.0) -> MemoryTrace:
    """The ``MemoryTrace`` of a ``tracking`` run (call it while the outputs are still referenced,
    so that they count in ``end_bytes``)."""
    live.mark_scores()
    by_index = {r.index: r for r in live.records}
    at_peak = [by_index[i].frozen() for i in live.peak_ids if i in by_index]
    at_peak += [by_index[i].frozen(module) for i, module in live.peak_virtual if i in by_index]
    at_peak.sort(key=lambda a: -a.nbytes)
    largest = max(live.records, key=lambda r: r.nbytes, default=None)
    return MemoryTrace(
        peak_bytes=live.peak,
        end_bytes=live.now,
        score_bytes=sum(a.nbytes for a in at_peak if a.score),
        peak_module=live.peak_where[0],
        peak_op=live.peak_where[1],
        live_at_peak=tuple(at_peak),
        largest=largest.frozen() if largest is not None else None,
        allocations=len(live.records),
        sdpa_backends=dict(live.backends),
        seconds=seconds,
    )


def trace_module(model: nn.Module, *inputs: Any, device_kind: str = "cpu", fast: bool = True, **kw: Any) -> MemoryTrace:
    """Run ``model(*inputs, **kw)`` once on ``meta`` and trace what it allocates (module docstring).

    ``model`` and its floating-point inputs live on ``meta``; integer inputs may stay on the CPU.
    ``fast``: replay identical calls of the tower's layers (``tower_layers``) and remake repeated
    ops from their recorded metadata (the same result, faster; tests compare both ways).
    """
    t0 = time.perf_counter()
    with tracking(model, device_kind, tower_layers(model) if fast else (), memo=fast) as live:
        out = model(*inputs, **kw)
        trace = trace_of(live, time.perf_counter() - t0)
    del out
    return trace


def module_bytes(model: nn.Module) -> int:
    """Bytes of ``model``'s parameters and buffers (shared tensors once) at their dtypes: what must
    be resident for a forward (works on ``meta``; equals ``measure.memory.model_bytes`` of the
    built model)."""
    seen: set[int] = set()
    total = 0
    for t in (*model.parameters(), *model.buffers()):
        if id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total


def _tensor_bytes(x: Any) -> int:
    return sum(t.numel() * t.element_size() for t in _tensors(x))


# --------------------------------------------------------------------------------------------
# Stages and predictions
# --------------------------------------------------------------------------------------------

STAGES = ("vision", "llm_prefill", "llm_decode")


@dataclass(frozen=True)
class StageMemory:
    """One stage of running an image, in bytes.

    ``stage``: ``vision`` (the tower over one call or the whole image), ``llm_prefill`` or
    ``llm_decode``; ``model`` the preset that runs; ``label`` what it ran (views, tokens);
    ``weights_bytes`` that model's parameters and buffers; ``held_bytes`` what the stage needs
    resident besides weights before it starts (pixel inputs; the visual + prompt embeddings; the KV
    cache the last decode step reads); ``activation_bytes`` the traced peak on top of that (outputs
    and a cache being written included); ``score_bytes`` the part of it in attention score
    matrices; ``kv_cache_bytes`` the KV cache when the stage ends; ``largest_tensor_bytes``;
    ``peak_module`` where the peak was reached; ``sdpa_backends`` SDPA calls per backend."""

    stage: str
    model: str
    label: str
    weights_bytes: int
    held_bytes: int
    activation_bytes: int
    score_bytes: int = 0
    kv_cache_bytes: int = 0
    largest_tensor_bytes: int = 0
    peak_module: str = ""
    sdpa_backends: dict[str, int] = field(default_factory=dict)
    views: int = 0
    size: Size | None = None

    @property
    def peak_bytes(self) -> int:
        """This stage alone: its weights, what it holds and its activation peak."""
        return self.weights_bytes + self.held_bytes + self.activation_bytes

    def as_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "model": self.model,
            "label": self.label,
            "views": self.views or None,
            "size": list(self.size) if self.size is not None else None,
            "weights_bytes": self.weights_bytes,
            "held_bytes": self.held_bytes,
            "activation_bytes": self.activation_bytes,
            "attention_score_bytes": self.score_bytes,
            "kv_cache_bytes": self.kv_cache_bytes,
            "largest_tensor_bytes": self.largest_tensor_bytes,
            "peak_bytes": self.peak_bytes,
            "peak_module": self.peak_module,
            "sdpa_backends": dict(self.sdpa_backends),
        }


@dataclass(frozen=True)
class MemoryPrediction:
    """Predicted memory of running ``what``, in bytes, with every model resident.

    ``stages`` in order (each with its own weights, held bytes and activation peak); ``views``
    per forward call of the vision tower (one entry per group of equal views, as they run);
    ``weights_bytes`` all models together; ``peak_bytes`` = ``weights_bytes`` + the largest
    (held + activation) over the stages, reached in ``peak_stage``. ``parts()`` splits the peak."""

    what: str
    dtype: str
    batch: int
    attn: str
    device_kind: str
    stages: tuple[StageMemory, ...]
    views: tuple[StageMemory, ...] = ()

    @property
    def weights_bytes(self) -> int:
        seen: dict[str, int] = {}
        for s in self.stages:
            seen[s.model] = s.weights_bytes
        return sum(seen.values())

    @property
    def peak_stage(self) -> StageMemory:
        return max(self.stages, key=lambda s: s.held_bytes + s.activation_bytes)

    @property
    def peak_bytes(self) -> int:
        s = self.peak_stage
        return self.weights_bytes + s.held_bytes + s.activation_bytes

    @property
    def activation_bytes(self) -> int:
        """The peak stage's activation peak (what a measured growth over the forward compares with)."""
        return self.peak_stage.activation_bytes

    def stage(self, name: str) -> StageMemory | None:
        return next((s for s in self.stages if s.stage == name), None)

    def parts(self) -> dict[str, int]:
        """The peak split: ``weights`` (all models), ``held`` (inputs, embeddings or cache the
        peak stage starts with), ``activations`` (its traced peak), of which ``attention_scores``,
        and ``kv_cache`` (the largest cache of any stage, for reference)."""
        s = self.peak_stage
        return {
            "weights": self.weights_bytes,
            "held": s.held_bytes,
            "activations": s.activation_bytes,
            "attention_scores": s.score_bytes,
            "kv_cache": max((x.kv_cache_bytes for x in self.stages), default=0),
        }

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: the settings, ``peak_bytes``, ``peak_stage``, ``parts`` and every stage and view."""
        return {
            "what": self.what,
            "dtype": self.dtype,
            "batch": self.batch,
            "attn": self.attn,
            "device_kind": self.device_kind,
            "peak_bytes": self.peak_bytes,
            "peak_stage": self.peak_stage.stage,
            "weights_bytes": self.weights_bytes,
            "activation_bytes": self.activation_bytes,
            "parts": self.parts(),
            "stages": [s.as_dict() for s in self.stages],
            "views": [v.as_dict() for v in self.views],
        }


def _traced_stage(
    stage: str, model: str, label: str, weights_bytes: int, held_bytes: int, trace: MemoryTrace, **extra: Any
) -> StageMemory:
    """A ``StageMemory`` whose activation peak, score bytes, largest tensor, peak module and SDPA
    backends are ``trace``'s (``extra``: the other fields)."""
    return StageMemory(
        stage=stage,
        model=model,
        label=label,
        weights_bytes=weights_bytes,
        held_bytes=held_bytes,
        activation_bytes=trace.peak_bytes,
        score_bytes=trace.score_bytes,
        largest_tensor_bytes=trace.largest.nbytes if trace.largest else 0,
        peak_module=trace.peak_module,
        sdpa_backends=trace.sdpa_backends,
        **extra,
    )


def _check(dtype: str, attn: str, device_kind: str, batch: int) -> str:
    check_attn_path(attn)
    check_device_kind(device_kind)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise UhdProfileError(f"batch {batch!r} is not valid; it must be an integer >= 1")
    return parse_dtype(dtype)


@lru_cache(maxsize=1024)
def vision_stage(
    spec: VariantSpec, dtype: str = "bf16", batch: int = 1, attn: str = "sdpa", device_kind: str = "cuda"
) -> StageMemory:
    """The vision stage of ``spec`` (one view, or a whole global/sliced image) for ``batch``
    images: built on ``meta`` in ``dtype`` with ``attn``, traced as on ``device_kind``."""
    dtype = _check(dtype, attn, device_kind, batch)
    dt = torch_dtype(dtype)
    model = build_variant(spec, device="meta", attn=attn).to(dt)
    x = example_input(spec, batch, "meta", dt)
    # packed views change attention per view through a context the layer's arguments do not show
    trace = trace_module(model, x, device_kind=device_kind, fast=spec.packing != "packed")
    if spec.encoding == "view":
        label, views, size = f"{batch} x {spec.size}" if batch > 1 else str(spec.size), batch, spec.size
    else:
        label, views, size = (
            f"{spec.encoding} {spec.size} image: " + " + ".join(f"{k} x {s}" for k, s in spec.groups),
            len(spec.view_sizes),
            None,
        )
    return _traced_stage("vision", spec.encoder, label, module_bytes(model), _tensor_bytes(x), trace, views=views, size=size)


def _views(spec: VariantSpec, dtype: str, batch: int, attn: str, device_kind: str) -> tuple[StageMemory, ...]:
    """Per forward call of a global/sliced spec: each group of equal views as the one-view spec
    it runs as (the thumbnail alone, the slices as one batch)."""
    if spec.encoding == "view":
        return ()
    return tuple(
        vision_stage(spec.with_(encoding="view", resolution=size, **SLICING_DEFAULTS), dtype, batch * k, attn, device_kind)
        for k, size in spec.groups
    )


def predict_memory(
    spec: VariantSpec, dtype: str = "bf16", batch: int = 1, attn: str = "sdpa", device_kind: str = "cuda"
) -> MemoryPrediction:
    """Predicted memory of one forward of ``spec``'s vision stage for ``batch`` images: weights,
    pixel inputs and the traced activation peak (attention scores where ``attn`` materialises
    them), per group of equal views too. ``device_kind``: ``cpu`` or ``cuda``."""
    dtype = _check(dtype, attn, device_kind, batch)
    stage = vision_stage(spec, dtype, batch, attn, device_kind)
    return MemoryPrediction(spec.id, dtype, batch, attn, device_kind, (stage,), _views(spec, dtype, batch, attn, device_kind))


@dataclass(frozen=True)
class LlmTrace:
    """The LLM stage of one image, traced: ``prefill`` over the visual + prompt embeddings into an
    empty ``DynamicCache`` (the cache it fills is in its ``end_bytes``); ``decode`` the last decode
    forward (the largest: its cache is the longest), None without decode tokens;
    ``cache_before_decode``/``cache_after_decode`` the cache that forward reads and leaves
    (``count.llm.CacheSize``); ``weights_bytes``; ``input_bytes`` of the prefill embeddings."""

    llm: str
    visual_tokens: int
    prompt_tokens: int
    decode_tokens: int
    dtype: str
    weights_bytes: int
    input_bytes: int
    prefill: MemoryTrace
    cache_after_prefill: Any
    decode: MemoryTrace | None = None
    cache_before_decode: Any = None
    cache_after_decode: Any = None


@lru_cache(maxsize=256)
def trace_llm(
    llm: str | LlmSpec,
    visual_tokens: int,
    prompt_tokens: int = 64,
    decode_tokens: int = 0,
    dtype: str = "bf16",
    attn: str = "sdpa",
    device_kind: str = "cuda",
) -> LlmTrace:
    """Trace the LLM stage of one image on ``meta`` as ``count.llm.count_llm`` runs it: a prefill
    over ``visual_tokens + prompt_tokens`` embeddings into a ``DynamicCache`` (the LM head on the
    last position, as generation does), and the last of ``decode_tokens`` single-token forwards,
    through a cache of every token before it (made by a prefill of that length: the cache's
    shapes are the same as after decoding step by step)."""
    from transformers import DynamicCache

    spec = llm if isinstance(llm, LlmSpec) else get_llm(llm)
    check_tokens(visual_tokens, prompt_tokens, decode_tokens)
    check_attn(attn)
    dtype = _check(dtype, attn, device_kind, 1)
    dt = torch_dtype(dtype)
    model = meta_llm(spec, attn, dtype)
    n = visual_tokens + prompt_tokens

    def embeds(k: int) -> torch.Tensor:
        return torch.empty(1, k, spec.hidden, device="meta", dtype=dt)

    config: Any = model.config
    cache = DynamicCache(config=config)
    x = embeds(n)
    t0 = time.perf_counter()
    with tracking(model, device_kind) as live:
        out = model(inputs_embeds=x, cache=cache, use_cache=True, logits_to_keep=1)
        prefill = trace_of(live, time.perf_counter() - t0)
    del out
    result: dict[str, Any] = dict(cache_after_prefill=cache_size(cache))
    if decode_tokens:
        cache = DynamicCache(config=config)
        with meta_run(model):
            model(inputs_embeds=embeds(n + decode_tokens - 1), cache=cache, use_cache=True, logits_to_keep=1)
        before = cache_size(cache)
        t0 = time.perf_counter()
        with tracking(model, device_kind) as live:
            out = model(inputs_embeds=embeds(1), cache=cache, use_cache=True, logits_to_keep=1)
            decode = trace_of(live, time.perf_counter() - t0)
        del out
        result.update(decode=decode, cache_before_decode=before, cache_after_decode=cache_size(cache))
    # llm, the tokens and dtype traced, weights_bytes, input_bytes, prefill, then what decode added
    return LlmTrace(
        spec.name, visual_tokens, prompt_tokens, decode_tokens, dtype, module_bytes(model), _tensor_bytes(x), prefill, **result
    )


def _cache_bytes(size, dtype: str) -> int:
    return size.bytes(dtype) if size is not None else 0


def llm_stages(
    llm: str | LlmSpec,
    visual_tokens: int,
    prompt_tokens: int = 64,
    decode_tokens: int = 0,
    dtype: str = "bf16",
    attn: str = "sdpa",
    device_kind: str = "cuda",
) -> tuple[StageMemory, ...]:
    """The LLM prefill (and, with decode tokens, the last decode forward) as stages."""
    t = trace_llm(llm, visual_tokens, prompt_tokens, decode_tokens, parse_dtype(dtype), attn, device_kind)
    prefill = _traced_stage(
        "llm_prefill",
        t.llm,
        f"prefill {visual_tokens:,} visual + {prompt_tokens:,} prompt tokens",
        t.weights_bytes,
        t.input_bytes,
        t.prefill,
        kv_cache_bytes=_cache_bytes(t.cache_after_prefill, t.dtype),
    )
    if t.decode is None:
        return (prefill,)
    decode = _traced_stage(
        "llm_decode",
        t.llm,
        f"decode token {decode_tokens:,} (cache of {visual_tokens + prompt_tokens + decode_tokens - 1:,} tokens)",
        t.weights_bytes,
        _cache_bytes(t.cache_before_decode, t.dtype),
        t.decode,
        kv_cache_bytes=_cache_bytes(t.cache_after_decode, t.dtype),
    )
    return (prefill, decode)


def predict_pipeline_memory(
    spec: VariantSpec,
    llm: str | LlmSpec,
    prompt_tokens: int = 64,
    decode_tokens: int = 0,
    dtype: str = "bf16",
    attn: str = "sdpa",
    device_kind: str = "cuda",
    visual_tokens: int | None = None,
) -> MemoryPrediction:
    """Predicted memory of one image through the vision stage of ``spec`` and the LLM ``llm``, both
    resident: the vision stage, the prefill over ``visual_tokens`` (default: ``spec.tokens_llm``)
    plus ``prompt_tokens``, and the last of ``decode_tokens`` decode forwards. Batch 1."""
    dtype = _check(dtype, attn, device_kind, 1)
    vision = vision_stage(spec, dtype, 1, attn, device_kind)
    tokens = spec.tokens_llm if visual_tokens is None else visual_tokens
    stages = (vision, *llm_stages(llm, tokens, prompt_tokens, decode_tokens, dtype, attn, device_kind))
    name = llm if isinstance(llm, str) else llm.name
    return MemoryPrediction(f"{spec.id} + {name}", dtype, 1, attn, device_kind, stages, _views(spec, dtype, 1, attn, device_kind))


def combine(
    what: str,
    stages: Sequence[StageMemory],
    views: Sequence[StageMemory] = (),
    dtype: str = "bf16",
    batch: int = 1,
    attn: str = "sdpa",
    device_kind: str = "cuda",
) -> MemoryPrediction:
    """A prediction made of stages traced separately (e.g. an image policy's view groups and an
    LLM stage)."""
    return MemoryPrediction(what, parse_dtype(dtype), batch, attn, device_kind, tuple(stages), tuple(views))


__all__ = [
    "ATTN_PATHS",
    "DEVICE_KINDS",
    "Allocation",
    "LlmTrace",
    "MemoryPrediction",
    "MemoryTrace",
    "StageMemory",
    "combine",
    "llm_stages",
    "module_bytes",
    "predict_memory",
    "predict_pipeline_memory",
    "sdpa_backend",
    "trace_llm",
    "trace_module",
    "tracking",
    "vision_stage",
]
