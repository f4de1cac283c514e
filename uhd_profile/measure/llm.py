"""Latency of the LLM stage: prefill (the LLM part of time to first token) and per-token decode.

Both are timed with ``uhd_profile.measure.timing.time_forward`` on a model with random weights
(latency does not depend on weight values) built in the requested dtype on the requested device.

On a CPU a full 7-9B model is too slow (and too big) to time, so ``time_llm(layers=N)`` times a
reduced-depth copy (the first N decoder layers, see ``LlmSpec.reduced``) and scales:

* the decoder stack (N layers, plus the rotary tables, the mask and the final norm, which run once
  per forward) is timed and multiplied by ``layers / N``; the once-per-forward parts are therefore
  over-counted by a factor (layers / N - 1), a small error next to N layers of work;
* the LM head is timed separately, on one position (what generation computes), and added once;
* the input embeddings are not timed: the stage's inputs are embeddings (the visual tokens come
  from the connector; a prompt's embedding lookup is a gather). The embedding table is not even
  materialised unless the LM head shares it (tied embeddings).

Every record says whether it was scaled (``scaled``, ``note``). For hybrid models the first N
layers should have the whole model's mix of layer types (N a multiple of the pattern period);
``mix_matches`` says whether they do.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import torch
from torch import nn

from uhd_profile.errors import UhdProfileError
from uhd_profile.measure.devices import resolve_device
from uhd_profile.measure.memory import MemoryStats, measure_memory
from uhd_profile.measure.timing import LatencyStats, TimingSettings, time_forward
from uhd_profile.model.llm_drops import check_tokens
from uhd_profile.model.llms import DEFAULT_LLM, FULL, LlmSpec, get_llm
from uhd_profile.units import DTYPES


@dataclass
class LlmTiming:
    """Latency of one LLM's prefill and decode on one device. Times in seconds.

    ``prefill_stack`` / ``decode_stack``: the timed decoder stack of ``layers_timed`` layers (prefill
    over ``visual_tokens + prompt_tokens`` tokens; decode: one token over a cache of ``context``
    tokens); ``lm_head``: the LM head on one position. ``prefill_s`` and ``decode_token_s`` are the
    estimates for the whole model (stack median x ``layers / layers_timed`` + LM head median).
    ``prefill_memory``: memory of one prefill forward of the timed stack (``time_llm(memory=True)``),
    None when not measured.
    """

    llm: str
    layers: int
    layers_timed: int
    scaled: bool
    mix_matches: bool
    note: str
    device: str
    dtype: str
    threads: int
    visual_tokens: int
    prompt_tokens: int
    context: int
    prefill_stack: LatencyStats
    decode_stack: LatencyStats
    lm_head: LatencyStats
    prefill_memory: MemoryStats | None = None

    @property
    def scale(self) -> float:
        """layers / layers_timed."""
        return self.layers / self.layers_timed

    @property
    def per_layer_prefill_s(self) -> float:
        """Median prefill time of the timed stack per layer (seconds)."""
        return self.prefill_stack.latency_median_s / self.layers_timed

    @property
    def per_layer_decode_s(self) -> float:
        """Median decode time of the timed stack per layer, for one token (seconds)."""
        return self.decode_stack.latency_median_s / self.layers_timed

    @property
    def prefill_s(self) -> float:
        """Estimated prefill of the whole LLM, LM head on the last position included (seconds)."""
        return self.prefill_stack.latency_median_s * self.scale + self.lm_head.latency_median_s

    @property
    def decode_token_s(self) -> float:
        """Estimated time of one decode forward at ``context`` tokens of context (seconds)."""
        return self.decode_stack.latency_median_s * self.scale + self.lm_head.latency_median_s

    def as_dict(self) -> dict:
        return {
            "llm": self.llm,
            "layers": self.layers,
            "layers_timed": self.layers_timed,
            "scaled": self.scaled,
            "scale": self.scale,
            "mix_matches": self.mix_matches,
            "note": self.note,
            "device": self.device,
            "dtype": self.dtype,
            "threads": self.threads,
            "visual_tokens": self.visual_tokens,
            "prompt_tokens": self.prompt_tokens,
            "context": self.context,
            "prefill_s": self.prefill_s,
            "decode_token_s": self.decode_token_s,
            "per_layer_prefill_s": self.per_layer_prefill_s,
            "per_layer_decode_s": self.per_layer_decode_s,
            "prefill_stack": asdict(self.prefill_stack),
            "decode_stack": asdict(self.decode_stack),
            "lm_head": asdict(self.lm_head),
            "prefill_memory": asdict(self.prefill_memory) if self.prefill_memory is not None else None,
        }


@contextlib.contextmanager
def _threads(n: int | None) -> Iterator[int]:
    old = torch.get_num_threads()
    if n is not None:
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise UhdProfileError(f"threads = {n!r}: must be an integer >= 1")
        torch.set_num_threads(n)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(old)


def _crop_attention(cache, length: int) -> None:
    """Cut every softmax-attention layer of ``cache`` back to ``length`` tokens. Linear-attention
    layers keep a fixed-size state that each step overwrites, so they need no reset."""
    from transformers.cache_utils import LinearAttentionCacheLayerMixin

    for layer in cache.layers:
        keys = getattr(layer, "keys", None)
        if isinstance(keys, torch.Tensor) and not isinstance(layer, LinearAttentionCacheLayerMixin):
            layer.crop(length - keys.shape[-2])  # transformers crops by minus the tokens to remove


def time_llm(
    llm: str | LlmSpec = DEFAULT_LLM,
    visual_tokens: int = 576,
    prompt_tokens: int = 64,
    device: str | torch.device = "cpu",
    dtype: str = "bf16",
    layers: int | None = None,
    context: int | None = None,
    attn: str = "sdpa",
    threads: int | None = None,
    settings: TimingSettings | None = None,
    memory: bool = False,
) -> LlmTiming:
    """Time the prefill and one decode step of ``llm`` on ``device``.

    ``layers``: time only the first N decoder layers and scale (None: the whole model).
    ``context``: decode with a cache of this many tokens (default: visual + prompt, the first
    generated token's context). ``threads``: CPU threads during the measurement (restored after).
    ``memory``: also measure the memory of one prefill forward of the timed stack (``prefill_memory``).
    """
    spec = llm if isinstance(llm, LlmSpec) else get_llm(llm)
    if dtype not in DTYPES:
        raise UhdProfileError(f"unknown dtype {dtype!r}; valid: {', '.join(DTYPES)}")
    check_tokens(visual_tokens, prompt_tokens, 0)
    context = visual_tokens + prompt_tokens if context is None else context
    if not isinstance(context, int) or isinstance(context, bool) or context < 1:
        raise UhdProfileError(f"context = {context!r}: must be an integer >= 1 (tokens already in the cache)")
    timed = spec if layers is None or layers == spec.layers else spec.reduced(layers)
    n_timed = timed.layers
    if not timed.attention_layers:
        raise UhdProfileError(
            f"layers = {n_timed} on {spec.name}: the first {n_timed} layers are all linear attention, "
            f"and a cache needs an attention layer; time at least {spec.attention_layers[0] + 1} layers"
        )
    mix = timed.types.count(FULL) * spec.layers == spec.types.count(FULL) * n_timed
    dev = resolve_device(device)
    torch_dtype = DTYPES[dtype]
    from transformers import DynamicCache

    with _threads(threads) as nthreads, torch.no_grad():
        model = timed.build(dev, attn=attn, dtype=torch_dtype)
        if not timed.tied_embeddings:
            # inputs are embeddings: the table is never read, so it need not take memory
            model.model.embed_tokens = nn.Embedding(spec.vocab, spec.hidden, device="meta", dtype=torch_dtype)
        stack = model.model
        x = torch.randn(1, visual_tokens + prompt_tokens, spec.hidden, device=dev, dtype=torch_dtype)
        settings = settings or TimingSettings()
        prefill = time_forward(lambda: stack(inputs_embeds=x, use_cache=False), dev, settings)
        prefill_memory = measure_memory(lambda: stack(inputs_embeds=x, use_cache=False), model, dev) if memory else None

        cache = DynamicCache(config=model.config)
        stack(inputs_embeds=torch.randn(1, context, spec.hidden, device=dev, dtype=torch_dtype), cache=cache, use_cache=True)
        x1 = torch.randn(1, 1, spec.hidden, device=dev, dtype=torch_dtype)

        def decode_step():
            stack(inputs_embeds=x1, cache=cache, use_cache=True)
            _crop_attention(cache, context)  # every sample decodes at the same context

        decode = time_forward(decode_step, dev, settings)
        h = torch.randn(1, 1, spec.hidden, device=dev, dtype=torch_dtype)
        head = time_forward(lambda: model.lm_head(h), dev, settings)
    scaled = n_timed < spec.layers
    note = (
        f"measured on {n_timed} of {spec.layers} layers and scaled x{spec.layers / n_timed:g}; "
        if scaled
        else "measured on all layers; "
    )
    note += "LM head timed separately on one position and added once; input embeddings not timed"
    return LlmTiming(
        llm=spec.name,
        layers=spec.layers,
        layers_timed=n_timed,
        scaled=scaled,
        mix_matches=mix,
        note=note,
        device=str(dev),
        dtype=dtype,
        threads=nthreads,
        visual_tokens=visual_tokens,
        prompt_tokens=prompt_tokens,
        context=context,
        prefill_stack=prefill,
        decode_stack=decode,
        lm_head=head,
        prefill_memory=prefill_memory,
    )
