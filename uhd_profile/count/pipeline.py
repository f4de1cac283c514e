"""A pipeline counted stage by stage, by running its real modules chained on ``meta``.

``count_pipeline(pipeline)`` runs, with the same FLOPs engine as everything else:

* **vision**: the variant's ViT (``build_variant(pipeline.vision_spec)``: connector excluded) on the
  image's views; its output tensor goes on to
* **connector**: the connector stage on exactly that output (``ConnectorStage``); its output, the
  visual tokens, is concatenated with the prompt's embeddings and goes on to
* **prefill** and **decode**: ``count_llm`` with that tensor as ``inputs_embeds`` (so the visual
  token count the LLM runs on is the one the connector produced, checked against the geometry),
  the pipeline's drop, decode steps through the real KV cache.

Every stage is counted in every convention (``macs``, ``flops``, ``paper``); causal attention in
the prefill is charged as executed in ``macs``/``flops`` and dense in ``paper``, with the dense
figure in every convention and the textbook formula next to it (``uhd_profile.count.llm``).
The connector is not charged in ``paper`` (the paper's scope excludes it, the ratio-1 projector
included), so a ``paper`` total is vision + prefill (+ decode).

``position_options`` lists, for one image size, the options of each position where tokens can be
cut (before, inside and after the ViT, inside the LLM) as pipelines on the same per-stage axes.

Counts are pure functions of the pipeline (shapes only), so they are memoised per process
(``memo=True``): a sweep or report that counts baseline and v4 at one image counts their common
LLM stage once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from uhd_profile.count.conventions import CONVENTIONS, check_convention
from uhd_profile.count.flops import FlopCount, count_module
from uhd_profile.count.llm import LlmCount, count_llm
from uhd_profile.errors import UhdProfileError
from uhd_profile.model.compressors import COMPRESSORS
from uhd_profile.model.encoders import DEFAULT_ENCODER, get_encoder
from uhd_profile.model.llm_drops import fastv, pyramid_drop
from uhd_profile.model.llms import DEFAULT_LLM, get_llm
from uhd_profile.model.pipeline import (
    DEFAULT_DECODE_TOKENS,
    DEFAULT_PROMPT_TOKENS,
    STAGES,
    TTFT_STAGES,
    PipelineSpec,
    build_connector,
    drop_text,
    pipeline_inputs,
)
from uhd_profile.model.slicing import MAX_SLICE_NUMS, SCALE_RESOLUTION
from uhd_profile.model.variants import V4_COMPRESSOR, V4_DEPTH, VariantSpec, build_variant
from uhd_profile.units import DTYPES, Size, parse_dtype, parse_resolution


@dataclass
class PipelineCount:
    """One pipeline, counted. Integers are MACs or FLOPs in the named convention.

    ``vision``: the ViT's count (connector excluded); ``connector``: the connector stage's;
    ``llm``: the LLM stage (prefill, decode steps, caches, textbook; ``uhd_profile.count.llm``);
    ``seconds``: wall time of this count (near 0 when every part came from the memo).
    """

    pipeline: PipelineSpec
    vision: FlopCount
    connector: FlopCount
    llm: LlmCount
    seconds: float = 0.0
    memoised: tuple[str, ...] = field(default_factory=tuple)

    def stage(self, name: str, convention: str = "macs") -> int:
        """Cost of stage ``name`` (``STAGES``; ``decode`` is every decode forward together)."""
        check_convention(convention)
        if name == "vision":
            return self.vision.get(convention)
        if name == "connector":
            return self.connector.get(convention)
        if name == "prefill":
            return self.llm.prefill_total(convention)
        if name == "decode":
            return self.llm.decode_total(convention)
        raise UhdProfileError(f"unknown stage {name!r}; valid stages: {', '.join(STAGES)}")

    def stages(self, convention: str = "macs") -> dict[str, int]:
        return {s: self.stage(s, convention) for s in STAGES}

    def ttft(self, convention: str = "macs") -> int:
        """Compute before the first generated token: vision + connector + prefill."""
        return sum(self.stage(s, convention) for s in TTFT_STAGES)

    def total(self, convention: str = "macs") -> int:
        """Every stage, decode included."""
        return sum(self.stages(convention).values())

    def vit_share(self, convention: str = "macs") -> float:
        """The vision stage's share of the compute before the first token."""
        t = self.ttft(convention)
        return self.stage("vision", convention) / t if t else 0.0

    def decode_per_token(self, convention: str = "macs") -> dict[str, float | int | None]:
        """One decode forward: ``first``, ``last``, ``mean`` (None without decode tokens)."""
        return self.llm.decode_per_token(convention)

    @property
    def tokens(self) -> dict[str, int]:
        """Tokens entering each stage (``PipelineSpec.tokens``)."""
        return self.pipeline.tokens

    def kv_cache_bytes(self, dtype: str = "bf16", after: str = "decode") -> int:
        """Bytes of the KV cache (and linear-attention state) after the prefill (``after="prefill"``)
        or after decoding too (``"decode"``), keys and values in ``dtype``."""
        dtype = parse_dtype(dtype, "cache dtype")
        if after not in ("prefill", "decode"):
            raise UhdProfileError(f"after = {after!r}; valid: prefill, decode")
        cache = self.llm.cache_after_prefill if after == "prefill" else self.llm.cache_after_decode
        return cache.bytes(dtype)

    @property
    def params(self) -> dict[str, int | None]:
        """Parameters of each part's modules: ``vision``, ``connector``, ``llm`` (embeddings and LM head included)."""
        return {"vision": self.vision.params, "connector": self.connector.params, "llm": self.llm.prefill.params}

    @property
    def uncounted_ops(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for d in (self.vision.uncounted_ops, self.connector.uncounted_ops, self.llm.uncounted_ops):
            for k, v in d.items():
                out[k] = out.get(k, 0) + v
        return out

    def table(self, convention: str = "macs") -> list[dict[str, Any]]:
        """One row per stage: ``stage``, ``tokens_in``, the count in every convention (schema column
        names: ``macs``, ``flops``, ``paper_flops``), ``share`` of the compute before the first
        token in ``convention`` (None for decode)."""
        check_convention(convention)
        t = self.ttft(convention)
        rows = []
        for s in STAGES:
            row: dict[str, Any] = {"stage": s, "tokens_in": self.tokens[s]}
            row.update({c.column: self.stage(s, c.name) for c in CONVENTIONS.values()})
            row["share"] = (self.stage(s, convention) / t if t else 0.0) if s in TTFT_STAGES else None
            rows.append(row)
        return rows

    def as_dict(self, convention: str = "macs") -> dict[str, Any]:
        """JSON-ready: the pipeline, per-stage rows (``table``), the compute before the first token
        and in total per convention, the prefill with causal attention executed and dense, decode per
        token, KV-cache bytes per dtype, parameters, the LLM stage in full (``LlmCount.as_dict``)."""
        check_convention(convention)
        return {
            "pipeline": self.pipeline.describe(),
            "convention": convention,
            "stages": self.table(convention),
            "ttft": {c.column: self.ttft(c.name) for c in CONVENTIONS.values()},
            "total": {c.column: self.total(c.name) for c in CONVENTIONS.values()},
            "vit_share_of_ttft": self.vit_share(convention),
            "prefill_causal": {
                "executed": {c.column: self.llm.prefill_total(c.name) for c in CONVENTIONS.values()},
                "dense": {c.column: self.llm.prefill_total(c.name, "dense") for c in CONVENTIONS.values()},
            },
            "decode_per_token": {c.column: self.decode_per_token(c.name) for c in CONVENTIONS.values()},
            "kv_cache_bytes": {
                "after_prefill": {d: self.kv_cache_bytes(d, "prefill") for d in DTYPES},
                "after_decode": {d: self.kv_cache_bytes(d, "decode") for d in DTYPES},
            },
            "params": self.params,
            "llm": self.llm.as_dict(),
            "uncounted_ops": self.uncounted_ops,
            "count_s": self.seconds,
        }


# --------------------------------------------------------------------------------------------
# Counting
# --------------------------------------------------------------------------------------------

_VISION_MEMO: dict[tuple, tuple[FlopCount, tuple[int, ...]]] = {}
_CONNECTOR_MEMO: dict[tuple, tuple[FlopCount, tuple[int, ...]]] = {}
_LLM_MEMO: dict[tuple, LlmCount] = {}
MEMO_LIMIT = 256
"""Entries kept per memo (each holds per-module totals only: a few kB)."""


def clear_memo() -> None:
    """Forget every memoised count (after changing a preset in place, say)."""
    _VISION_MEMO.clear()
    _CONNECTOR_MEMO.clear()
    _LLM_MEMO.clear()


def _remember(memo: dict, key: tuple, value: Any) -> Any:
    if len(memo) >= MEMO_LIMIT:
        memo.pop(next(iter(memo)))
    memo[key] = value
    return value


def _count_capture(model: torch.nn.Module, *inputs: Any) -> tuple[FlopCount, torch.Tensor]:
    """``count_module(model, *inputs)`` on meta, and the output tensor that forward produced."""
    box: list[torch.Tensor] = []
    handle = model.register_forward_hook(lambda m, a, o: box.append(o))
    try:
        fc = count_module(model, *inputs, shape_only=True)
    finally:
        handle.remove()
    return fc, box[-1]


def count_pipeline(pipeline: PipelineSpec, attn: str = "sdpa", memo: bool = True) -> PipelineCount:
    """Count every stage of ``pipeline`` by running its modules chained on ``meta`` (see module
    docstring). ``memo``: reuse a part counted before in this process for the same inputs."""
    if not isinstance(pipeline, PipelineSpec):
        raise UhdProfileError(f"count_pipeline needs a PipelineSpec, got {type(pipeline).__name__}")
    t0 = time.perf_counter()
    reused = []
    vspec = pipeline.vision_spec
    pixels, prompt = pipeline_inputs(pipeline, "meta")
    vkey = (vspec.id, attn)
    if memo and vkey in _VISION_MEMO:
        vision_fc, shape = _VISION_MEMO[vkey]
        vision_out = torch.empty(shape, device="meta")
        reused.append("vision")
    else:
        model = build_variant(vspec, device="meta", attn=attn)
        vision_fc, vision_out = _count_capture(model, pixels)
        vision_fc.variant_id, vision_fc.encoder = vspec.id, vspec.encoder
        vision_fc.tokens_in, vision_fc.tokens_llm = vspec.tokens_in, pipeline.tokens["connector"]
        vision_fc.seconds = time.perf_counter() - t0
        if memo:
            _remember(_VISION_MEMO, vkey, (vision_fc, tuple(vision_out.shape)))
    ckey = (pipeline.variant.id, pipeline.llm_spec.hidden, tuple(vision_out.shape))
    if memo and ckey in _CONNECTOR_MEMO:
        conn_fc, shape = _CONNECTOR_MEMO[ckey]
        visual = torch.empty(shape, device="meta")
        reused.append("connector")
    else:
        conn_fc, visual = _count_capture(build_connector(pipeline, "meta"), vision_out)
        if memo:
            _remember(_CONNECTOR_MEMO, ckey, (conn_fc, tuple(visual.shape)))
    if tuple(visual.shape) != (1, pipeline.visual_tokens, pipeline.llm_spec.hidden):
        raise RuntimeError(  # the modules and the spec's geometry disagree: a bug, not a user mistake
            f"{pipeline.id}: the connector produced {tuple(visual.shape)}, the geometry says "
            f"(1, {pipeline.visual_tokens}, {pipeline.llm_spec.hidden})"
        )
    lkey = (pipeline.llm, pipeline.visual_tokens, pipeline.prompt_tokens, pipeline.decode_tokens, drop_text(pipeline.drop), attn)
    if memo and lkey in _LLM_MEMO:
        llm = _LLM_MEMO[lkey]
        reused.append("llm")
    else:
        embeds = torch.cat([visual, prompt], dim=1) if pipeline.prompt_tokens else visual
        llm = count_llm(
            pipeline.llm_spec,
            pipeline.visual_tokens,
            pipeline.prompt_tokens,
            pipeline.decode_tokens,
            drop=pipeline.drop,
            attn=attn,
            inputs_embeds=embeds,
        )
        if memo:
            _remember(_LLM_MEMO, lkey, llm)
    return PipelineCount(pipeline, vision_fc, conn_fc, llm, seconds=time.perf_counter() - t0, memoised=tuple(reused))


# --------------------------------------------------------------------------------------------
# Compression at every position
# --------------------------------------------------------------------------------------------

POSITIONS = ("reference", "before the ViT", "inside the ViT", "after the ViT", "inside the LLM")
"""Where a pipeline cuts tokens, in the order the image meets them."""


def _connector_deviation(v: VariantSpec) -> float:
    """The connector's ratio over the design's own (16x in total): 1 for the design."""
    return v.ratio / (16 // v.in_vit_ratio)


def position_of(p: PipelineSpec, ref: PipelineSpec) -> str | None:
    """Which position's compression tells ``p`` from ``ref`` (``POSITIONS``; several joined by
    " + "), or None when they are not the same image, encoder, LLM, prompt and decode length."""
    v, r = p.variant, ref.variant
    same = (v.encoder, v.size, p.llm, p.prompt_tokens, p.decode_tokens) == (
        r.encoder,
        r.size,
        ref.llm,
        ref.prompt_tokens,
        ref.decode_tokens,
    )
    if not same:
        return None
    diffs = []
    if (v.encoding, v.max_slices, v.scale_resolution, v.packing) != (r.encoding, r.max_slices, r.scale_resolution, r.packing):
        diffs.append(POSITIONS[1])
    if (v.compressor, v.depth) != (r.compressor, r.depth):
        diffs.append(POSITIONS[2])
    if _connector_deviation(v) != _connector_deviation(r):
        diffs.append(POSITIONS[3])
    if drop_text(p.drop) != drop_text(ref.drop):
        diffs.append(POSITIONS[4])
    return " + ".join(diffs) if diffs else POSITIONS[0]


@dataclass(frozen=True)
class PositionOption:
    """One option of ``position_options``: its ``position``, a short ``option`` label, and its
    ``pipeline`` (None with the reason in ``error`` when the option does not apply to this image)."""

    position: str
    option: str
    pipeline: PipelineSpec | None
    error: str | None = None


def _llm_drops(llm: str) -> list[tuple[str, Any]]:
    spec = get_llm(llm)
    valid = [k for k in spec.attention_layers if k <= spec.layers - 2]
    out = []
    if valid:
        k = min((x for x in valid if x >= 2), default=valid[-1])  # FastV's K = 2 where the model allows it
        out += [(f"FastV K={k}, R=50%", fastv(k, 0.5)), (f"FastV K={k}, R=75%", fastv(k, 0.75))]
    quarters = sorted({min(valid, key=lambda x: abs(x - (spec.layers * i // 4 - 1))) for i in (1, 2, 3)} if valid else set())
    if len(quarters) >= 2:
        out.append((f"PyramidDrop after layers {','.join(map(str, quarters))}, keep 50% each", pyramid_drop(quarters, 0.5)))
    return out


def position_options(
    image: Size | str,
    encoding: str = "sliced",
    encoder: str = DEFAULT_ENCODER,
    llm: str = DEFAULT_LLM,
    prompt_tokens: int = DEFAULT_PROMPT_TOKENS,
    decode_tokens: int = DEFAULT_DECODE_TOKENS,
) -> list[PositionOption]:
    """For one image (W x H px), the options of every position on one axis, first the reference:
    the post-ViT baseline (16x connector) on ``encoding`` (``sliced`` or ``global``) with ``llm``.

    * before the ViT: the other encoding; at most 4 slices; smaller slices (336 px);
    * inside the ViT: each in-ViT design at depth 6, and v4's design at depths 3, 9, 15 (4x connector);
    * after the ViT: a 4x connector, and the ratio-1 projector (no merge);
    * inside the LLM: FastV (K = 2, R = 50 % and 75 %), PyramidDrop (three stages, 50 % each).

    An option the image or the models do not allow is listed with its one-line reason."""
    size = parse_resolution(image, "image")
    if size is None:
        raise UhdProfileError("image 'native' has no size; give the image as WxH")
    if encoding not in ("sliced", "global"):
        raise UhdProfileError(f"encoding {encoding!r} is not valid for a whole image; valid: sliced, global")
    enc = get_encoder(encoder)
    base = VariantSpec(encoder=encoder, resolution=size, encoding=encoding)
    ref = PipelineSpec(base, llm=llm, prompt_tokens=prompt_tokens, decode_tokens=decode_tokens)
    out = [PositionOption(POSITIONS[0], f"baseline, {encoding}, 16x connector", ref)]

    def add(position: str, option: str, **variant: Any) -> None:
        drop = variant.pop("drop", None)
        try:
            p = ref.with_(variant=base.with_(**variant), drop=drop)
        except UhdProfileError as exc:
            out.append(PositionOption(position, option, None, str(exc)))
            return
        out.append(PositionOption(position, option, p))

    other = "global" if encoding == "sliced" else "sliced"
    add(POSITIONS[1], f"{other} encoding", encoding=other)
    if encoding == "sliced":
        if MAX_SLICE_NUMS > 4:
            add(POSITIONS[1], "at most 4 slices", max_slices=4)
        smaller = SCALE_RESOLUTION - 2 * base.align
        add(POSITIONS[1], f"smaller slices ({smaller} px)", scale_resolution=smaller)
    depth = min(V4_DEPTH, enc.layers - 1)
    for name in COMPRESSORS:
        add(POSITIONS[2], f"{name} at depth {depth}", compressor=name, depth=depth, post_ratio=4)
    for k in (3, 9, 15):
        if k != depth and k < enc.layers:
            add(POSITIONS[2], f"{V4_COMPRESSOR} at depth {k}", compressor=V4_COMPRESSOR, depth=k, post_ratio=4)
    add(POSITIONS[3], "4x connector", post_ratio=4)
    add(POSITIONS[3], "projector, no merge (1x)", post_ratio=1)
    for label, drop in _llm_drops(llm):
        add(POSITIONS[4], label, drop=drop)
    return out


__all__ = [
    "POSITIONS",
    "PipelineCount",
    "PositionOption",
    "clear_memo",
    "count_pipeline",
    "position_of",
    "position_options",
]
