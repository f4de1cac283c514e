"""End to end: a vision variant, the post-ViT connector, and the LLM that reads the visual tokens.

A :class:`PipelineSpec` is what one image costs the whole multimodal model:

1. **vision**: the ``VariantSpec``'s ViT (any variant: one view, or a whole image encoded global or
   sliced; in-ViT compressor included, connector excluded);
2. **connector**: the post-ViT connector projecting to the LLM's width: at ratio 4 and 16 the
   variant's pixel-unshuffle MLP (``compressors.Connector``), at ratio 1 a projector that merges
   nothing (``compressors.Projector``, LLaVA-1.5's two-layer MLP). Class tokens are dropped before
   it, as in every connector here;
3. **prefill**: the LLM over ``[visual | prompt]``, the connector's tokens then ``prompt_tokens``
   text tokens, with an optional in-LLM token drop (``Drop``: FastV, PyramidDrop);
4. **decode**: ``decode_tokens`` generated tokens through the KV cache.

The connector's output width is the LLM's hidden size: the pipeline derives the variant's
``llm_hidden`` from the LLM (a variant that names another width is refused), so the two cannot
disagree. ``PipelineSpec.id`` extends the variant id with the LLM part.

Token grids that a merge cannot divide (a 980 px view is 70 x 70 patches: 35 x 35 after an in-ViT
2x2 merge, which a 4x connector cannot halve) are refused in one line, never rounded: the released
MiniCPM-V 4.6 code refuses them too (its merger's reshape fails on such a grid), and its image
processor never produces one, because it rounds every view side to a multiple of patch x 4 px
(``ensure_divide``: 980 -> 1008). ``merge_misfit`` writes that line with the fixes.

Drops have a text form shared by the command line, recipes and ids (``parse_drop``/``drop_text``):
``fastv:K:R`` (after layer K drop R of the visual tokens), ``pyramid-drop:K1,K2,...:RATIO`` (after
each Ki keep RATIO of what is left), ``drop:K1@KEEP1,K2@KEEP2`` (any drop: keep fractions of the
original), each with an optional ``:first`` (keep a fixed prefix instead of ranking by attention).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any

import torch
from torch import nn

from uhd_profile.errors import UhdProfileError
from uhd_profile.model.compressors import CONNECTOR_KINDS, make_connector
from uhd_profile.model.llm_drops import Drop, DropStage, check_tokens, fastv, pyramid_drop
from uhd_profile.model.llms import DEFAULT_LLM, LlmSpec, get_llm
from uhd_profile.model.variants import LLM_HIDDEN, VariantSpec, build_variant, example_input

DEFAULT_PROMPT_TOKENS = 64
DEFAULT_DECODE_TOKENS = 0
STAGES = ("vision", "connector", "prefill", "decode")
"""The stages of a pipeline, in order; ``vision + connector + prefill`` is what runs before the
first generated token (time to first token)."""
TTFT_STAGES = STAGES[:3]
DROP_FORMS = "none, fastv:K:R, pyramid-drop:K1,K2,...:RATIO, drop:K1@KEEP1,K2@KEEP2 (each optionally :first)"


# --------------------------------------------------------------------------------------------
# Drops as text
# --------------------------------------------------------------------------------------------


def _frac(x: float) -> Fraction:
    return Fraction(x).limit_denominator(1_000_000)


def _num(text: str, what: str, drop: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise UhdProfileError(f"drop {drop!r}: {what} {text!r} is not a number; valid forms: {DROP_FORMS}") from None
    if not math.isfinite(v):
        raise UhdProfileError(f"drop {drop!r}: {what} {text!r} is not finite; valid forms: {DROP_FORMS}")
    return v


def _layer(text: str, drop: str) -> int:
    if not text.strip().isdigit():
        raise UhdProfileError(f"drop {drop!r}: layer {text!r} is not a 0-based layer index; valid forms: {DROP_FORMS}")
    return int(text)


def parse_drop(text: str | None) -> Drop | None:
    """The ``Drop`` of a drop's text form (``DROP_FORMS``); None for ``"none"``/None."""
    if text is None:
        return None
    if not isinstance(text, str):
        raise UhdProfileError(f"drop {text!r} must be text; valid forms: {DROP_FORMS}")
    t = text.strip()
    if t in ("", "none"):
        return None
    parts = t.split(":")
    select = "attention"
    if len(parts) > 1 and parts[-1] == "first":
        select, parts = "first", parts[:-1]
    kind, args = parts[0], parts[1:]
    if kind == "fastv" and len(args) == 2:
        return fastv(_layer(args[0], t), _num(args[1], "R", t), select=select)
    if kind == "pyramid-drop" and len(args) == 2:
        layers = [_layer(k, t) for k in args[0].split(",")]
        return pyramid_drop(layers, _num(args[1], "ratio", t), select=select)
    if kind == "drop" and len(args) == 1:
        stages = []
        for item in args[0].split(","):
            k, sep, keep = item.partition("@")
            if not sep:
                raise UhdProfileError(f"drop {t!r}: stage {item!r} must be LAYER@KEEP; valid forms: {DROP_FORMS}")
            stages.append(DropStage(_layer(k, t), _num(keep, "keep", t)))
        return Drop(tuple(stages), name=t, select=select)
    raise UhdProfileError(f"drop {t!r} is not valid; valid forms: {DROP_FORMS}")


def drop_text(drop: Drop | None) -> str:
    """The canonical text form of ``drop`` (``"none"`` for None): ``parse_drop(drop_text(d))``
    drops the same tokens as ``d``, and two spellings of one drop give one text."""
    if drop is None:
        return "none"
    keeps = [_frac(s.keep) for s in drop.stages]
    layers = [s.after_layer for s in drop.stages]
    if len(keeps) == 1:
        text = f"fastv:{layers[0]}:{float(1 - keeps[0])!r}"
    elif keeps and all(k == keeps[0] ** (i + 1) for i, k in enumerate(keeps)):
        text = f"pyramid-drop:{','.join(map(str, layers))}:{float(keeps[0])!r}"
    else:
        text = "drop:" + ",".join(f"{k}@{float(f)!r}" for k, f in zip(layers, keeps))
    return text + (":first" if drop.select == "first" else "")


# --------------------------------------------------------------------------------------------
# Merges that do not divide the token grid
# --------------------------------------------------------------------------------------------


def _ensure_divide(length: int, unit: int) -> int:
    """MiniCPM-V 4.6's processor rounding (``ensure_divide``): the nearest multiple of ``unit``
    (Python round, halves to even), at least ``unit``."""
    return max(round(length / unit) * unit, unit)


def _after_vit(spec: VariantSpec, grid: tuple[int, int]) -> tuple[int, int]:
    """Token grid (rows, cols) leaving the ViT: halved per side by an in-ViT compressor."""
    h, w = grid
    return (h // 2, w // 2) if spec.compressor else (h, w)


def merge_misfit(spec: VariantSpec, ratio: int) -> str | None:
    """None when a ``ratio`` connector fits every view of ``spec`` after its ViT, else the one-line
    refusal: which grid, why the released MiniCPM-V 4.6 code would not run it either, and the fixes."""
    if spec.connector_fits(ratio):
        return None
    side = {1: 1, 4: 2, 16: 4}[ratio]
    unit = spec.enc.patch * side * (2 if spec.compressor else 1)
    rows, cols, ar, ac, view = next(
        (r, c, *_after_vit(spec, (r, c)), v)
        for (r, c), v in zip(spec.view_grids, spec.view_sizes)
        if any(x % side for x in _after_vit(spec, (r, c)))
    )
    after = f", {ac}x{ar} after {spec.id_plan()}" if spec.compressor else ""
    fixed = f"{_ensure_divide(view.width, unit)}x{_ensure_divide(view.height, unit)}"
    where = f"the {view} view" if spec.encoding == "view" else f"view {view} of the {spec.size} image"
    fixes = (
        f"use --resolution {fixed} (the processor's rounding), --image {spec.size} --encoding sliced|global (views as the "
        f"processor makes them), or --post-ratio 1 (a projector that merges nothing)"
        if spec.encoding == "view"
        else "use another --max-slices/--scale-resolution, or --post-ratio 1 (a projector that merges nothing)"
    )
    return (
        f"{where} gives a {cols}x{rows} token grid{after}, which a {ratio}x connector ({side}x{side} merge) cannot "
        f"divide; the released MiniCPM-V 4.6 code refuses such a grid too (its merger's reshape fails), and its image "
        f"processor never makes one: it rounds view sides to multiples of {unit} px ({view} -> {fixed}). Nothing is "
        f"rounded here: {fixes}"
    )


def design_variant(spec: VariantSpec, post_ratio: int | None = None) -> VariantSpec:
    """``spec`` at ``post_ratio`` (None: the design's, 16x in total), refused in one line
    (``merge_misfit``) when that connector does not divide the token grid."""
    ratio = 16 // spec.in_vit_ratio if post_ratio is None else post_ratio
    if ratio not in CONNECTOR_KINDS:
        raise UhdProfileError(f"post-ratio {ratio!r} is not valid; valid: {', '.join(map(str, CONNECTOR_KINDS))}")
    msg = merge_misfit(spec.with_(post_ratio=1), ratio)
    if msg:
        raise UhdProfileError(msg)
    return spec.with_(post_ratio=ratio)


# --------------------------------------------------------------------------------------------
# The spec
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PipelineSpec:
    """Frozen identity of one image through the whole model; ``.id`` extends the variant id.

    ``variant``: the vision side (any ``VariantSpec``); its ``post_ratio`` picks the connector
    (``CONNECTOR_KINDS``) and its ``llm_hidden`` is derived from the LLM. ``llm``: an LLM preset
    name (``uhd_profile.model.llms.LLMS``). ``prompt_tokens``: text tokens after the image (default
    64). ``decode_tokens``: tokens generated after the first (default 0; the prefill yields the
    first). ``drop``: in-LLM token dropping (a ``Drop``, its text form, or None).
    """

    variant: VariantSpec
    llm: str = DEFAULT_LLM
    prompt_tokens: int = DEFAULT_PROMPT_TOKENS
    decode_tokens: int = DEFAULT_DECODE_TOKENS
    drop: Drop | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.variant, VariantSpec):
            raise UhdProfileError(f"pipeline variant {self.variant!r} must be a VariantSpec")
        if not isinstance(self.llm, str):
            raise UhdProfileError(f"pipeline llm {self.llm!r} must be an LLM preset name")
        spec = get_llm(self.llm)
        if self.variant.llm_hidden != spec.hidden:
            if self.variant.llm_hidden != LLM_HIDDEN:
                raise UhdProfileError(
                    f"variant {self.variant.id} projects to width {self.variant.llm_hidden}, but {self.llm}'s hidden size is "
                    f"{spec.hidden}; leave llm_hidden at its default: the pipeline derives it from the LLM"
                )
            object.__setattr__(self, "variant", self.variant.with_(llm_hidden=spec.hidden))
        drop = parse_drop(self.drop) if isinstance(self.drop, str) else self.drop
        if drop is not None and not isinstance(drop, Drop):
            raise UhdProfileError(f"pipeline drop {drop!r} must be a Drop, its text form ({DROP_FORMS}) or None")
        object.__setattr__(self, "drop", drop)
        check_tokens(self.visual_tokens, self.prompt_tokens, self.decode_tokens)
        if drop is not None:
            _, active = drop.schedule(spec, self.visual_tokens)  # checks every stage against the LLM
            if active and self.prompt_tokens < 1:
                raise UhdProfileError(
                    f"drop {drop_text(drop)} with prompt_tokens = 0: dropping ranks visual tokens by the last token's "
                    "attention, so at least one prompt token must follow the image"
                )

    # -- derived ------------------------------------------------------------------------------
    @property
    def llm_spec(self) -> LlmSpec:
        return get_llm(self.llm)

    @property
    def ratio(self) -> int:
        """The connector's ratio (the variant's post-ViT ratio)."""
        return self.variant.ratio

    @property
    def connector_kind(self) -> str:
        return CONNECTOR_KINDS[self.ratio]

    @property
    def vision_spec(self) -> VariantSpec:
        """The vision stage alone: the variant without its connector (post-ratio 1)."""
        return self.variant.with_(post_ratio=1)

    @property
    def grids_after_vit(self) -> tuple[tuple[int, int], ...]:
        """Token grid (rows, cols) of every view leaving the ViT, in encoding order."""
        return tuple(_after_vit(self.variant, g) for g in self.variant.view_grids)

    @property
    def tokens(self) -> dict[str, int]:
        """Tokens entering each stage: ``vision`` (into the first ViT layer, class tokens included),
        ``connector`` (patch tokens leaving the ViT; class tokens are dropped before it),
        ``prefill`` (visual + prompt), ``decode`` (forwards of one token each); plus ``visual``
        (the connector's output, what the LLM sees of the image)."""
        return {
            "vision": self.variant.tokens_in,
            "connector": sum(h * w for h, w in self.grids_after_vit),
            "prefill": self.visual_tokens + self.prompt_tokens,
            "decode": self.decode_tokens,
            "visual": self.visual_tokens,
        }

    @property
    def visual_tokens(self) -> int:
        """Visual tokens the connector hands the LLM, summed over views."""
        return sum(h * w // self.ratio for h, w in self.grids_after_vit)

    @property
    def id(self) -> str:
        """``<variant id>/<llm>/p<prompt>/d<decode>[/<drop>]``, e.g.
        ``siglip2-so400m-p14@448x448/window-attn-reused-mlp@6/post4/qwen3-8b/p64/d0``."""
        s = f"{self.variant.id}/{self.llm}/p{self.prompt_tokens}/d{self.decode_tokens}"
        return s + (f"/{drop_text(self.drop)}" if self.drop is not None else "")

    def llm_dict(self) -> dict[str, Any]:
        """The LLM side as JSON: ``llm``, ``prompt_tokens``, ``decode_tokens``, ``drop`` (text or None)."""
        return {
            "llm": self.llm,
            "prompt_tokens": self.prompt_tokens,
            "decode_tokens": self.decode_tokens,
            "drop": None if self.drop is None else drop_text(self.drop),
        }

    @classmethod
    def from_parts(cls, variant: VariantSpec, llm: dict[str, Any]) -> PipelineSpec:
        """The pipeline of a variant and an ``llm_dict`` mapping (unknown keys refused)."""
        keys = {"llm", "prompt_tokens", "decode_tokens", "drop"}
        extra = set(llm) - keys
        if extra:
            raise UhdProfileError(f"pipeline has unknown fields {sorted(extra)}; valid: {sorted(keys)}")
        return cls(variant, **llm)

    def describe(self) -> dict[str, Any]:
        """``id``, the variant (``VariantSpec.describe``), the LLM side, the connector and tokens per stage."""
        return {
            "id": self.id,
            "variant": self.variant.describe(),
            **self.llm_dict(),
            "connector": self.connector_kind,
            "tokens": self.tokens,
        }

    def with_(self, **kw: Any) -> PipelineSpec:
        return replace(self, **kw)


# --------------------------------------------------------------------------------------------
# Modules
# --------------------------------------------------------------------------------------------


class ConnectorStage(nn.Module):
    """The connector applied to the vision stage's output: views in encoding order, each group of
    equal-sized views on its own grid (class tokens dropped first), outputs concatenated again.

    Input (B, L, d): what ``build_variant(pipeline.vision_spec)`` returns; output (B, visual, hidden).
    """

    def __init__(self, pipeline: PipelineSpec, net: nn.Module):
        super().__init__()
        v = pipeline.variant
        self.net = net
        self.prefix = v.enc.prefix_tokens
        self.groups = [(k, _after_vit(v, (size.height // v.enc.patch, size.width // v.enc.patch))) for k, size in v.groups]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, d, p = x.shape[0], x.shape[-1], self.prefix
        outs, start = [], 0
        for k, (h, w) in self.groups:
            n = p + h * w
            part = x[:, start : start + k * n].reshape(b * k, n, d)[:, p:]
            y = self.net(part, (h, w))
            outs.append(y.reshape(b, -1, y.shape[-1]))
            start += k * n
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)


class PipelineModel(nn.Module):
    """vision -> connector -> LLM prefill over ``[visual | prompt]`` (one forward: time to first
    token). ``forward(pixel_values, prompt_embeds, **llm_kwargs)`` returns the LLM's output."""

    def __init__(self, pipeline: PipelineSpec, vision: nn.Module, connector: ConnectorStage, llm: nn.Module):
        super().__init__()
        self.pipeline = pipeline
        self.vision = vision
        self.connector = connector
        self.llm = llm

    def visual(self, pixel_values) -> torch.Tensor:
        """The visual tokens the LLM reads: (B, visual_tokens, hidden)."""
        return self.connector(self.vision(pixel_values))

    def forward(self, pixel_values, prompt_embeds: torch.Tensor, **llm_kwargs: Any):
        x = self.visual(pixel_values)
        if prompt_embeds.shape[1]:
            x = torch.cat([x, prompt_embeds], dim=1)
        return self.llm(inputs_embeds=x, **llm_kwargs)


def build_connector(pipeline: PipelineSpec, device: str | torch.device = "cpu") -> ConnectorStage:
    """The connector stage of ``pipeline`` on ``device`` (random weights; ``"meta"``: shapes only)."""
    with torch.device(device):
        net = make_connector(pipeline.variant.enc.hidden, pipeline.llm_spec.hidden, pipeline.ratio)
    return ConnectorStage(pipeline, net).eval()


def build_pipeline(
    pipeline: PipelineSpec, device: str | torch.device = "cpu", attn: str = "sdpa", dtype: torch.dtype | None = None
) -> PipelineModel:
    """The runnable pipeline on ``device`` (``"meta"``: shapes only), random weights, in ``dtype``
    (default fp32); the LLM is built directly in that dtype (an 8B model need not exist in fp32)."""
    vision = build_variant(pipeline.vision_spec, device=device, attn=attn)
    connector = build_connector(pipeline, device)
    if dtype is not None:
        vision, connector = vision.to(dtype), connector.to(dtype)
    llm = pipeline.llm_spec.build(device, attn=attn, dtype=dtype)
    return PipelineModel(pipeline, vision, connector, llm).eval()


def pipeline_inputs(
    pipeline: PipelineSpec, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor | list[torch.Tensor], torch.Tensor]:
    """(pixel values, prompt embeddings) for one image: ``example_input`` of the vision stage and a
    (1, prompt_tokens, hidden) tensor (empty on meta, random elsewhere)."""
    pixels = example_input(pipeline.vision_spec, 1, device, dtype)
    shape = (1, pipeline.prompt_tokens, pipeline.llm_spec.hidden)
    prompt = (
        torch.empty(shape, device=device, dtype=dtype)
        if torch.device(device).type == "meta"
        else torch.randn(shape, device=device, dtype=dtype)
    )
    return pixels, prompt
