"""The LLM stage, counted by running the real ``transformers`` modules with the FLOPs engine.

What one image costs inside the LLM:

* **prefill**: one forward over ``visual_tokens`` + ``prompt_tokens`` input embeddings (laid out
  ``[visual | prompt]``: the image, then the question), on ``meta`` (shapes only, nothing
  materialised), filling the model's own KV cache class (``transformers.DynamicCache``);
* **decode**: ``decode_tokens`` single-token forwards through that cache, so each costs more than
  the last (its attention reads one more key). The prefill yields the first generated token, each
  decode forward one more: ``decode_tokens + 1`` tokens are generated in all;
* **LM head**: ``lm_head="last"`` charges the prefill's LM head for the last position only (what
  generation computes: ``logits_to_keep=1``); ``"all"`` for every position (a plain forward,
  scoring, training). Decode forwards have one position either way;
* **KV cache**: elements held after the prefill and after decoding, and bytes per dtype;
* **causal attention**: ``macs``/``flops`` charge the allowed (query, key) pairs, ``paper`` the
  full square (see ``uhd_profile.count.flops``); ``LlmCount.prefill_total(causal="dense")`` gives
  the dense figure in any convention, next to the executed one.

In-LLM token dropping (``Drop``; ``fastv`` and ``pyramid_drop`` build the two classic shapes):
after layer K a fraction of the visual tokens is dropped, and every later layer runs, and caches,
fewer tokens. In a real run the dropped tokens are the visual tokens the last token attends to
least at layer K (its attention row averaged over heads); on ``meta`` there are no values, so the
first ones are kept (the cost only depends on how many). The ranking row is recomputed from that
layer's queries and keys (SDPA returns no attention weights) and is counted: heads·n·e MACs
(on meta too, so a shape-only count equals a real one). A drop with ``select="first"`` keeps a
fixed prefix and ranks nothing.
"""

from __future__ import annotations

import contextlib
import copy
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from uhd_profile.count.conventions import CONVENTIONS, check_convention
from uhd_profile.count.flops import FlopCount, count_module
from uhd_profile.count.llm_formulas import TextbookOptions, textbook
from uhd_profile.count.meta import meta_llm
from uhd_profile.errors import UhdProfileError
from uhd_profile.model.llm_drops import (
    LM_HEAD_CHOICES,
    Drop,
    DropStage,
    check_tokens,
    fastv,
    kept_count,
    pyramid_drop,
)
from uhd_profile.model.llms import DEFAULT_LLM, LlmSpec, check_attn, get_llm
from uhd_profile.units import DTYPES, dtype_bytes, parse_dtype

CAUSAL_CHOICES = ("executed", "dense")


# --------------------------------------------------------------------------------------------
# Drops
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# Running with a drop: hooks on the real decoder layers
# --------------------------------------------------------------------------------------------

_PROBE = "uhd_profile_rank_probe"


def _probe_attention(module, query, key, value, attention_mask, **kwargs):
    """Runs the module's real attention, then the row the ranking needs: the last query's
    softmax attention over every key, averaged over heads, kept on ``module._uhd_rank_scores``."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    inner_name = module._uhd_rank_inner
    default = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
    inner = ALL_ATTENTION_FUNCTIONS.get_interface(inner_name, default)
    out = inner(module, query, key, value, attention_mask, **kwargs)
    groups = query.shape[1] // key.shape[1]
    k = key if groups == 1 else key.repeat_interleave(groups, dim=1)
    scaling = kwargs.get("scaling") or query.shape[-1] ** -0.5
    row = torch.softmax(torch.matmul(query[:, :, -1:, :], k.transpose(-1, -2)) * scaling, dim=-1)
    module._uhd_rank_scores = row.mean(dim=1)[:, 0]  # (batch, keys)
    return out


def _register_probe() -> None:
    # Only the probed attention module's own config names the probe; masks are built from the
    # model's config, which keeps its backend, so no mask function is needed for the new name.
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    if _PROBE not in ALL_ATTENTION_FUNCTIONS:
        ALL_ATTENTION_FUNCTIONS[_PROBE] = _probe_attention


def _index_seq(t, idx: torch.Tensor, dim: int):
    if not isinstance(t, torch.Tensor):
        return t
    return t.index_select(dim % t.dim(), idx.to(t.device) if t.device.type != "meta" else idx)


class _Dropping:
    """Hooks that make the layers after each active stage run on the kept tokens only.

    The ``transformers`` model loop hands every layer the full-length rotary tables, positions and
    mask; a pre-hook on each later layer gathers them at the kept positions (original positions
    are kept, as FastV does), and at a stage's first layer also gathers the hidden states. Layers
    then cache only what they saw. In decode the new token needs no gathering; an eager mask is
    cut to the keys each layer holds."""

    def __init__(
        self,
        model: Any,  # a transformers causal LM: its structure is its own
        spec: LlmSpec,
        visual: int,
        prompt: int,
        active: tuple[tuple[int, int, int], ...],
        select: str,
    ):
        self.model = model
        self.spec, self.visual, self.prompt = spec, visual, prompt
        self.n = visual + prompt
        self.start = {k + 1: (k, before, after) for k, before, after in active}
        self.select = select
        self._phase = "prefill"
        self.idx: torch.Tensor | None = None  # original positions of the tokens now running
        self.layer_idx: dict[int, torch.Tensor] = {}
        self.kept: list[tuple[int, ...]] = []  # original positions of the visual tokens each stage kept
        self.handles: list[Any] = []
        self.probed: list[tuple[Any, Any]] = []
        layers = self.model.model.layers
        first = min(self.start) if self.start else len(layers)
        for i in range(first, len(layers)):
            self.handles.append(layers[i].register_forward_pre_hook(self._hook(i), with_kwargs=True))
        ranked = active if select == "attention" else ()  # "first" ranks nothing, so runs no probe
        if ranked:
            _register_probe()
        for k, _, _ in ranked:
            attn = layers[k].self_attn
            self.probed.append((attn, attn.config))
            attn.config = copy.copy(attn.config)
            attn._uhd_rank_inner = attn.config._attn_implementation
            attn.config._attn_implementation = _PROBE

    @property
    def phase(self) -> str:
        """``"prefill"`` or ``"decode"``; switching to decode removes the ranking probes (the
        decode forwards rank nothing)."""
        return self._phase

    @phase.setter
    def phase(self, value: str) -> None:
        if value not in ("prefill", "decode"):
            raise ValueError(f"phase {value!r}: prefill or decode")
        if value == "decode":
            self._unprobe()
        self._phase = value

    def _unprobe(self) -> None:
        for attn, cfg in self.probed:
            attn.config = cfg
            for name in ("_uhd_rank_inner", "_uhd_rank_scores"):
                attn.__dict__.pop(name, None)
        self.probed = []

    def close(self) -> None:
        for h in self.handles:
            h.remove()
        self._unprobe()

    def _keep(self, k: int, before: int, after: int) -> torch.Tensor:
        """Local indices (into the tokens now running) of the visual tokens to keep, in order."""
        if self.select == "first":
            return torch.arange(after)
        scores = self.model.model.layers[k].self_attn._uhd_rank_scores
        if scores.device.type == "meta":
            return torch.arange(after)  # no values on meta: the cost depends only on how many
        top = scores[0, :before].float().topk(after).indices
        return top.sort().values.cpu()

    def _hook(self, i: int):
        def hook(module, args, kwargs):
            h = args[0] if args else kwargs["hidden_states"]
            if self.phase == "prefill":
                if i in self.start:
                    k, before, after = self.start[i]
                    n_now = h.shape[1]
                    local = torch.cat([self._keep(k, before, after), torch.arange(before, n_now)])
                    current = self.idx if self.idx is not None else torch.arange(self.n)
                    self.idx = current.index_select(0, local)
                    self.kept.append(tuple(int(p) for p in self.idx[:after]))
                    h = _index_seq(h, local, 1)
                self.layer_idx[i] = self.idx
                kwargs = dict(kwargs)
                pe = kwargs.get("position_embeddings")
                if pe is not None:
                    kwargs["position_embeddings"] = tuple(_index_seq(t, self.idx, -2) for t in pe)
                if isinstance(kwargs.get("position_ids"), torch.Tensor):
                    kwargs["position_ids"] = _index_seq(kwargs["position_ids"], self.idx, -1)
                mask = kwargs.get("attention_mask")
                if isinstance(mask, torch.Tensor):
                    mask = _index_seq(mask, self.idx, -1)
                    if mask.dim() == 4:
                        mask = _index_seq(mask, self.idx, -2)
                    kwargs["attention_mask"] = mask
            else:
                mask = kwargs.get("attention_mask")
                if isinstance(mask, torch.Tensor) and mask.dim() == 4:
                    keys = torch.cat([self.layer_idx[i], torch.arange(self.n, mask.shape[-1])])
                    kwargs = dict(kwargs, attention_mask=_index_seq(mask, keys, -1))
            if args:
                args = (h, *args[1:])
            else:
                kwargs = dict(kwargs, hidden_states=h)
            return args, kwargs

        return hook


@contextlib.contextmanager
def dropping(
    model: torch.nn.Module, spec: LlmSpec, visual_tokens: int, prompt_tokens: int, drop: Drop | None
) -> Iterator[_Dropping | None]:
    """While open, forwards of ``model`` (a causal LM built from ``spec``) drop visual tokens per
    ``drop``: first a prefill of ``visual_tokens + prompt_tokens`` embeddings (visual first), then
    single-token decode forwards after setting ``.phase = "decode"`` on the yielded object. Yields
    None when nothing is dropped (no hooks at all)."""
    if drop is None:
        yield None
        return
    _, active = drop.schedule(spec, visual_tokens)
    if not active:
        yield None
        return
    if prompt_tokens < 1:
        raise UhdProfileError(
            f"prompt_tokens = {prompt_tokens}: dropping ranks visual tokens by the last token's "
            "attention, so at least one prompt token must follow the image"
        )
    runner = _Dropping(model, spec, visual_tokens, prompt_tokens, active, drop.select)
    try:
        yield runner
    finally:
        runner.close()


# --------------------------------------------------------------------------------------------
# Cache sizes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CacheSize:
    """What the cache holds, read off the real cache object after a forward.

    ``kv_tokens``: tokens cached per softmax-attention layer (in layer order); ``kv_elems``: key and
    value elements over those layers; ``conv_elems`` / ``recurrent_elems``: the fixed-size state of
    linear-attention layers (conv window, recurrent matrix), 0 for plain transformers."""

    kv_tokens: tuple[int, ...]
    kv_elems: int
    conv_elems: int = 0
    recurrent_elems: int = 0

    @property
    def state_elems(self) -> int:
        """Linear-attention state elements (conv + recurrent)."""
        return self.conv_elems + self.recurrent_elems

    def bytes(self, dtype: str = "bf16", recurrent_dtype: str = "fp32") -> int:
        """Bytes with keys, values and conv windows in ``dtype`` (fp32, bf16, fp16) and the
        recurrent state in ``recurrent_dtype``: fp32 by default, because ``transformers``' gated
        delta rule keeps it in float32 whatever the model dtype (a bf16 run stores it so)."""
        for d in (dtype, recurrent_dtype):
            parse_dtype(d, "cache dtype")
        return (self.kv_elems + self.conv_elems) * dtype_bytes(dtype) + self.recurrent_elems * dtype_bytes(recurrent_dtype)

    def as_dict(self) -> dict:
        return {
            "kv_tokens": list(self.kv_tokens),
            "kv_elems": self.kv_elems,
            "conv_elems": self.conv_elems,
            "recurrent_elems": self.recurrent_elems,
            "bytes": {d: self.bytes(d) for d in DTYPES},
        }


def cache_size(cache) -> CacheSize:
    """Sizes of a ``transformers`` cache (``DynamicCache``, also hybrid), from its tensors' shapes."""
    tokens, kv, sizes = [], 0, {"conv_states": 0, "recurrent_states": 0}
    for layer in cache.layers:
        keys = getattr(layer, "keys", None)
        if isinstance(keys, torch.Tensor) and keys.dim() >= 2:
            tokens.append(int(keys.shape[-2]))
            kv += keys.numel() + layer.values.numel()
        for name in sizes:
            for t in (getattr(layer, name, None) or {}).values():
                if isinstance(t, torch.Tensor):
                    sizes[name] += t.numel()
    return CacheSize(tuple(tokens), kv, sizes["conv_states"], sizes["recurrent_states"])


# --------------------------------------------------------------------------------------------
# The count
# --------------------------------------------------------------------------------------------

EXACT_DECODE_STEPS = 8
"""Up to this many decode forwards are each run and counted; past it, three are, and the sum over
every step is exact in closed form (``DecodeSeries``): ``--decode-tokens 100000`` costs what 8 do."""


@dataclass(frozen=True)
class DecodeSeries:
    """The cost of decode step ``t`` (0-based) is ``first + t x step`` per convention: ``first``
    and ``step`` map convention -> int, from the counted first steps; ``steps`` decode forwards."""

    first: dict[str, int]
    step: dict[str, int]
    steps: int

    def at(self, t: int, convention: str) -> int:
        return self.first[convention] + t * self.step[convention]

    def total(self, convention: str) -> int:
        n = self.steps
        return n * self.first[convention] + self.step[convention] * n * (n - 1) // 2


@dataclass
class LlmCount:
    """The LLM stage of one image, counted. Integers are MACs or FLOPs in the named convention.

    ``prefill``: the prefill forward (by module, by op, uncounted ops, ``causal_skipped``);
    ``decode_steps``: one count per decode forward, in order; ``decode_context``: keys the new
    token attends to in the first layer at each step (the context including itself);
    ``tokens_per_layer``: tokens each decoder layer ran on during the prefill;
    ``cache_after_prefill`` / ``cache_after_decode``: cache sizes; ``kept``: per active drop stage,
    the original positions (0-based, visual tokens first) of the visual tokens it kept (on meta
    always a prefix); ``seconds``: wall time of the counting (all forwards).

    ``decode_series``: set when more than ``EXACT_DECODE_STEPS`` tokens are decoded. Step t's cost
    is then ``first + t x step`` exactly (every layer's cache grows by one token per step, a
    softmax-attention layer's cost is affine in its cache length, a linear-attention layer's is
    constant), so only the first steps are run (``decode_steps`` holds them) and the rest is summed
    in closed form; ``decode_context`` is then a ``range``."""

    llm: str
    visual_tokens: int
    prompt_tokens: int
    decode_tokens: int
    lm_head: str
    attn: str
    drop: Drop | None
    prefill: FlopCount
    decode_steps: list[FlopCount]
    decode_context: Sequence[int]
    tokens_per_layer: tuple[int, ...]
    cache_after_prefill: CacheSize
    cache_after_decode: CacheSize
    kept: tuple[tuple[int, ...], ...] = ()
    spec: LlmSpec | None = field(repr=False, default=None)
    seconds: float = 0.0
    decode_series: DecodeSeries | None = None

    @property
    def tokens_in(self) -> int:
        """Tokens entering the LLM stage: visual + prompt."""
        return self.visual_tokens + self.prompt_tokens

    @property
    def uncounted_ops(self) -> dict[str, int]:
        out: dict[str, int] = dict(self.prefill.uncounted_ops)
        # every decode step runs the same ops; in closed form the first step stands for all of them
        steps = (
            [(fc, 1) for fc in self.decode_steps] if self.decode_series is None else [(self.decode_steps[0], self.decode_tokens)]
        )
        for fc, times in steps:
            for k, v in fc.uncounted_ops.items():
                out[k] = out.get(k, 0) + v * times
        return out

    def prefill_total(self, convention: str = "macs", causal: str = "executed") -> int:
        """Prefill cost; ``causal="dense"`` charges causal attention as the full square."""
        check_convention(convention)
        if causal not in CAUSAL_CHOICES:
            raise UhdProfileError(f"causal = {causal!r}; valid: {', '.join(CAUSAL_CHOICES)}")
        cost = self.prefill.total if causal == "executed" else self.prefill.dense
        return cost.get(convention)

    def prefill_per_layer(self, convention: str = "macs") -> tuple[int, ...]:
        """Prefill cost of each decoder layer (``model.layers.i``), in order; the rest of the
        prefill (LM head, final norm, rotary tables) is ``prefill_total - sum(...)``."""
        check_convention(convention)
        out = [0] * len(self.tokens_per_layer)
        for path, cost in self.prefill.by_module.items():
            parts = path.split(".")
            if len(parts) >= 3 and parts[0] == "model" and parts[1] == "layers" and parts[2].isdigit():
                out[int(parts[2])] += cost.get(convention)
        return tuple(out)

    def decode_total(self, convention: str = "macs") -> int:
        check_convention(convention)
        if self.decode_series is not None:
            return self.decode_series.total(convention)
        return sum(fc.total.get(convention) for fc in self.decode_steps)

    def decode_per_token(self, convention: str = "macs") -> dict[str, float | int | None]:
        """Cost of one decode forward: ``first``, ``last`` (ints) and ``mean`` (a float); None
        without decode forwards."""
        check_convention(convention)
        if self.decode_series is not None:
            d = self.decode_series
            return {"first": d.at(0, convention), "last": d.at(d.steps - 1, convention), "mean": d.total(convention) / d.steps}
        costs = [fc.total.get(convention) for fc in self.decode_steps]
        if not costs:
            return {"first": None, "last": None, "mean": None}
        return {"first": costs[0], "last": costs[-1], "mean": sum(costs) / len(costs)}

    def total(self, convention: str = "macs") -> int:
        """Prefill + every decode forward."""
        return self.prefill_total(convention) + self.decode_total(convention)

    def textbook(self, **options):
        """The textbook per-layer formula for this configuration (see ``llm_formulas.textbook``)."""
        return textbook(self.spec, self.visual_tokens, self.prompt_tokens, self.drop, TextbookOptions(**options))

    def as_dict(self) -> dict:
        """JSON-ready summary: counts in every convention, cache bytes per dtype, the textbook figure."""
        tb = self.textbook()
        return {
            "llm": self.llm,
            "visual_tokens": self.visual_tokens,
            "prompt_tokens": self.prompt_tokens,
            "tokens_in": self.tokens_in,
            "decode_tokens": self.decode_tokens,
            "lm_head": self.lm_head,
            "attn": self.attn,
            "drop": None
            if self.drop is None
            else {
                "name": self.drop.name,
                "select": self.drop.select,
                "stages": [[s.after_layer, s.keep] for s in self.drop.stages],
            },
            "tokens_per_layer": list(self.tokens_per_layer),
            "prefill": {c: self.prefill_total(c) for c in CONVENTIONS},
            "prefill_per_layer_macs": list(self.prefill_per_layer("macs")),
            "prefill_causal_dense": {c: self.prefill_total(c, "dense") for c in CONVENTIONS},
            "decode_total": {c: self.decode_total(c) for c in CONVENTIONS},
            "decode_per_token": {c: self.decode_per_token(c) for c in CONVENTIONS},
            "cache_after_prefill": self.cache_after_prefill.as_dict(),
            "cache_after_decode": self.cache_after_decode.as_dict(),
            "textbook": tb.as_dict(),
            "uncounted_ops": self.uncounted_ops,
            "seconds": self.seconds,
        }


def _resolve(llm: str | LlmSpec) -> LlmSpec:
    return llm if isinstance(llm, LlmSpec) else get_llm(llm)


def count_llm(
    llm: str | LlmSpec = DEFAULT_LLM,
    visual_tokens: int = 576,
    prompt_tokens: int = 64,
    decode_tokens: int = 0,
    lm_head: str = "last",
    drop: Drop | None = None,
    attn: str = "sdpa",
    shape_only: bool = True,
    model: Any = None,
    inputs_embeds: torch.Tensor | None = None,
) -> LlmCount:
    """Count the LLM stage of one image (batch 1) by running the model.

    ``shape_only`` (default) runs on ``meta``: nothing is materialised (benchmarks/count_llm_speed.py
    times a 5k-token prefill of the 8B default). ``shape_only=False`` runs a real CPU forward with random weights
    and random input embeddings (dropping then ranks by real attention). ``model``: an already
    built causal LM of ``llm``'s geometry (on meta for shape-only counting), e.g. from a checkpoint;
    ``inputs_embeds``: the (1, visual + prompt, hidden) prefill input of a real run (decode inputs
    stay random).
    """
    spec = _resolve(llm)
    check_tokens(visual_tokens, prompt_tokens, decode_tokens)
    if lm_head not in LM_HEAD_CHOICES:
        raise UhdProfileError(f"lm_head = {lm_head!r}; valid: last (generation: last position only), all (every position)")
    check_attn(attn)
    if drop is not None and not isinstance(drop, Drop):
        raise UhdProfileError(f"drop = {drop!r}: must be a Drop (see fastv, pyramid_drop) or None")
    per_layer_visual = drop.schedule(spec, visual_tokens)[0] if drop is not None else (visual_tokens,) * spec.layers
    from transformers import DynamicCache

    t0 = time.perf_counter()
    device = "meta" if shape_only else "cpu"
    if model is None:
        model = meta_llm(spec, attn) if shape_only else spec.build(device, attn=attn)
    n, d = visual_tokens + prompt_tokens, spec.hidden

    def embeds(k: int) -> torch.Tensor:
        return torch.empty(1, k, d, device="meta") if shape_only else torch.randn(1, k, d)

    cache = DynamicCache(config=model.config)
    steps: list[FlopCount] = []
    context = []
    with dropping(model, spec, visual_tokens, prompt_tokens, drop) as runner:
        x = embeds(n) if inputs_embeds is None else inputs_embeds
        if tuple(x.shape) != (1, n, d):
            raise UhdProfileError(
                f"inputs_embeds of shape {tuple(x.shape)}: must be (1, {n}, {d}) = (batch, visual + prompt, hidden)"
            )
        prefill = count_module(
            model,
            inputs_embeds=x,
            cache=cache,
            use_cache=True,
            logits_to_keep=1 if lm_head == "last" else 0,
            shape_only=shape_only,
        )
        after_prefill = cache_size(cache)
        if runner is not None:
            runner.phase = "decode"
        closed = decode_tokens > EXACT_DECODE_STEPS
        sizes = []
        for t in range(3 if closed else decode_tokens):
            steps.append(
                count_module(model, inputs_embeds=embeds(1), cache=cache, use_cache=True, logits_to_keep=1, shape_only=shape_only)
            )
            context.append(n + t + 1)
            sizes.append(cache_size(cache))
        after_decode = cache_size(cache)
        kept = tuple(runner.kept) if runner is not None else ()
    series = None
    decode_context: Sequence[int] = tuple(context)
    if closed:
        series, after_decode = _closed_form(spec.name, steps, sizes, decode_tokens)
        decode_context = range(n + 1, n + decode_tokens + 1)
    return LlmCount(
        llm=spec.name,
        visual_tokens=visual_tokens,
        prompt_tokens=prompt_tokens,
        decode_tokens=decode_tokens,
        lm_head=lm_head,
        attn=attn,
        drop=drop,
        prefill=prefill,
        decode_steps=steps,
        decode_context=decode_context,
        tokens_per_layer=tuple(v + prompt_tokens for v in per_layer_visual),
        cache_after_prefill=after_prefill,
        cache_after_decode=after_decode,
        kept=kept,
        spec=spec,
        seconds=time.perf_counter() - t0,
        decode_series=series,
    )


def _closed_form(llm: str, steps: list[FlopCount], sizes: list[CacheSize], n: int) -> tuple[DecodeSeries, CacheSize]:
    """The ``DecodeSeries`` of ``n`` decode steps from the first three counted ones, and the cache
    after all of them. The first two give each convention's slope, the third checks it: a model
    whose step cost is not affine in the cache length is refused rather than summed wrongly."""
    first = {c: steps[0].total.get(c) for c in CONVENTIONS}
    step = {c: steps[1].total.get(c) - first[c] for c in CONVENTIONS}
    for c in CONVENTIONS:
        if steps[2].total.get(c) - steps[1].total.get(c) != step[c]:
            raise UhdProfileError(
                f"{llm}: a decode step's cost is not affine in the cache length ({c} steps "
                f"{first[c]:,}, {steps[1].total.get(c):,}, {steps[2].total.get(c):,}), so {n:,} decode tokens cannot be "
                f"summed in closed form; give --decode-tokens {EXACT_DECODE_STEPS} or fewer"
            )
    a, b = sizes[1], sizes[2]
    grow = n - len(sizes)
    after = CacheSize(
        kv_tokens=tuple(t + grow for t in b.kv_tokens),
        kv_elems=b.kv_elems + grow * (b.kv_elems - a.kv_elems),
        conv_elems=b.conv_elems,
        recurrent_elems=b.recurrent_elems,
    )
    return DecodeSeries(first, step, n), after


__all__ = [
    "EXACT_DECODE_STEPS",
    "DecodeSeries",
    "CAUSAL_CHOICES",
    "CacheSize",
    "Drop",
    "DropStage",
    "LM_HEAD_CHOICES",
    "LlmCount",
    "cache_size",
    "count_llm",
    "dropping",
    "fastv",
    "kept_count",
    "pyramid_drop",
]
