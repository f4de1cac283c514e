"""The one road: what one image (or video) costs, under any policy.

``cost_item(width, height, policy=..., ...)`` -> ``ItemCost``, in four steps that are the same for
every family:

1. **Views.** The policy (``uhd_profile.model.policies``) turns the item into the views its tower
   encodes and the extras the LLM sees (``ImageViews``): MiniCPM-V 4.6's thumbnail and slices, or
   its global view, are that policy's ``encoding`` parameter; Qwen2.5-VL's one resized view;
   InternVL's tiles; a video's frames or frame groups.
2. **Vision.** The views run as forward calls, equal sizes batched into one call in order of first
   appearance, and each call is counted by the FLOPs engine on ``meta`` under each *variant* (the
   design of the vision encoding: ``baseline`` or ``v4`` at any depth for the paper's policy,
   ``vit`` for a family's tower alone; ``Policy.variants``). Counts are cached per (tower,
   variant, view size, views in the call, depth): a count depends on nothing else.
3. **LLM.** With ``LlmSettings``, the LLM's prefill over everything it sees for the item (the
   policy's ``llm_tokens``) plus the prompt, and the decode, counted by the engine (``count_llm``).
4. **Memory.** With ``MemorySettings``, the memory model's prediction per variant: the largest
   vision call, then the LLM prefill and decode with their KV cache.

The token fields of every result (``placeholder_tokens``, ``special_tokens``, ``text_tokens``,
``llm_tokens``, ``vit_tokens``) come from the policy's ``ImageViews`` (docs/schema.md).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

from uhd_profile.count.conventions import CONVENTIONS, get_convention
from uhd_profile.count.flops import count_flops
from uhd_profile.count.llm import count_llm
from uhd_profile.count.memory_model import (
    MemoryPrediction,
    check_attn_path,
    check_device_kind,
    combine,
    llm_stages,
    vision_stage,
)
from uhd_profile.errors import UhdProfileError
from uhd_profile.model.encoders import get_encoder
from uhd_profile.model.llms import get_llm
from uhd_profile.model.policies import DEFAULT_POLICY, ImageViews, get_policy
from uhd_profile.model.policies.base import View, jsonable
from uhd_profile.model.slicing import check_image_size
from uhd_profile.model.variants import ALIASES, VariantSpec
from uhd_profile.units import Size, parse_dtype

VIT = "vit"
"""The variant that counts a family's tower alone (post-ratio 1): its LLM tokens come from the
family's own merge/connector, as the policy says."""
VARIANTS = (*ALIASES, VIT)
COUNT_COLUMNS = tuple(c.column for c in CONVENTIONS.values())
"""Count columns: the record schema's names (``macs``, ``flops``, ``paper_flops``)."""
DEFAULT_PROMPT_TOKENS = 64


# --------------------------------------------------------------------------------------------
# Settings of the LLM and memory steps
# --------------------------------------------------------------------------------------------


def _count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UhdProfileError(f"{name} {value!r} is not valid; it must be an integer >= 0")
    return value


@dataclass(frozen=True)
class LlmSettings:
    """The LLM an item goes through: preset ``llm`` (``uhd-profile list llms``), ``prompt_tokens``
    after the item and ``decode_tokens`` generated."""

    llm: str
    prompt_tokens: int = DEFAULT_PROMPT_TOKENS
    decode_tokens: int = 0

    def __post_init__(self) -> None:
        get_llm(self.llm)
        _count("--prompt-tokens", self.prompt_tokens)
        _count("--decode-tokens", self.decode_tokens)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class MemorySettings:
    """How memory is predicted: ``dtype``, attention path ``attn`` (sdpa | eager), ``device_kind``
    (cpu | cuda), the ``llm`` preset of the LLM stage (None: the vision stage only),
    ``prompt_tokens`` after the item and ``decode_tokens`` generated."""

    dtype: str = "bf16"
    attn: str = "sdpa"
    device_kind: str = "cuda"
    llm: str | None = None
    prompt_tokens: int = DEFAULT_PROMPT_TOKENS
    decode_tokens: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", parse_dtype(self.dtype))
        check_attn_path(self.attn)
        check_device_kind(self.device_kind)
        if self.llm is not None:
            get_llm(self.llm)
        _count("prompt_tokens", self.prompt_tokens)
        _count("decode_tokens", self.decode_tokens)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------------------------
# Vision: one forward call, counted
# --------------------------------------------------------------------------------------------


def variant_spec(encoder: str, variant: str, size: Size, depth: int | None = None, **kw: Any) -> VariantSpec:
    """The spec a call of ``variant`` over views of ``size`` runs: ``vit`` the tower alone
    (post-ratio 1); ``baseline``/``v4`` the paper's designs (``depth`` moves v4's compressor; None:
    layer index 6, the paper's). ``kw`` (``encoding``, ``max_slices``, ...) makes a whole-image spec."""
    if variant == VIT:
        return VariantSpec(encoder=encoder, resolution=size, post_ratio=1, **kw)
    if variant not in ALIASES:
        raise UhdProfileError(f"variant {variant!r} is not valid; valid: {', '.join(VARIANTS)}")
    try:
        return VariantSpec.alias(variant, depth=depth if variant == "v4" else None, encoder=encoder, resolution=size, **kw)
    except UhdProfileError as exc:
        if variant == "v4" and depth is None and "depth" in str(exc):  # the user gave no depth: say whose it is
            raise UhdProfileError(
                f"the v4 variant (one of the default variants) puts its compressor after layer 6, the paper's: {exc}; "
                "choose a depth with --depth K, or leave v4 out with --variant baseline"
            ) from None
        raise


@lru_cache(maxsize=4096)
def count_call(encoder: str, variant: str, size: Size, views: int, depth: int | None = None) -> dict[str, int]:
    """Counts (``COUNT_COLUMNS`` -> int) of one forward call over ``views`` equal views of ``size``
    under ``variant``, counted on ``meta``."""
    fc = count_flops(variant_spec(encoder, variant, size, depth), batch=views)
    if fc.uncounted_ops:
        raise UhdProfileError(f"{encoder} at {size}: ops with no FLOPs formula {fc.uncounted_ops}; counts would be incomplete")
    return {c.column: fc.get(c.name) for c in CONVENTIONS.values()}


def padded_input(tokens: int, patch: int) -> Size:
    """The tower input a view padded to ``tokens`` grid tokens is counted on: the most nearly square
    ``cols x rows`` patch grid with ``cols * rows == tokens`` (rows the largest divisor <= sqrt),
    ``patch`` px per patch. A ViT's FLOPs, time and memory over N tokens do not depend on how the N
    tokens lie in 2D (its position embeddings aside), so this counts the padded sequence the tower
    really runs (Gemma 4: 2520 patches, 56x45, whatever the image's own grid)."""
    rows = max(d for d in range(1, math.isqrt(tokens) + 1) if tokens % d == 0)
    return Size(tokens // rows * patch, rows * patch)


def call_size(views: ImageViews, view: View, encoder: str | None = None) -> Size:
    """The tower input of ``view``'s forward call: its own size, or for a view the tower runs padded
    (``View.padding`` > 0) a ``padded_input`` of its ``seq_len`` tokens (class tokens aside) on
    ``encoder`` (None: the policy's own tower)."""
    if not view.padding:
        return Size(*view.size)
    spec = get_encoder(encoder or get_policy(views.policy).encoder)
    return padded_input(view.seq_len - spec.prefix_tokens, spec.patch)


def view_calls(views: ImageViews, encoder: str | None = None) -> list[tuple[int, Size]]:
    """The forward calls of an item's views on ``encoder`` (None: the policy's own tower): equal
    tower inputs (``call_size``) batched into one call (first appearance first), as the variants'
    batched layout runs them. A view padded to a token budget is counted on its padded length:
    every FLOPs, latency and memory figure of the tower follows the sequence the tower runs, not
    the real patches alone."""
    groups: dict[Size, int] = {}
    for v in views.views:
        size = call_size(views, v, encoder)
        groups[size] = groups.get(size, 0) + 1
    return [(k, size) for size, k in groups.items()]


# --------------------------------------------------------------------------------------------
# LLM: the prefill and decode of an item
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LlmStages:
    """The LLM stages of one item, counted by the engine (``count_llm`` on ``meta``): the prefill
    over ``input_tokens`` (everything the LLM sees for the item) plus ``prompt_tokens``, then
    ``decode_tokens`` generated with a KV cache. Counts per count column; causal attention as each
    convention charges it (docs/llm.md)."""

    llm: str
    input_tokens: int
    prompt_tokens: int
    decode_tokens: int
    prefill: dict[str, int]
    decode: dict[str, int]
    kv_cache_bf16_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@lru_cache(maxsize=4096)
def llm_stage_counts(
    llm: str, input_tokens: int, prompt_tokens: int = DEFAULT_PROMPT_TOKENS, decode_tokens: int = 0
) -> LlmStages:
    """``LlmStages`` of an item the LLM sees as ``input_tokens`` tokens (cached per token count:
    the LLM's cost depends on the item only through it)."""
    get_llm(llm)  # an unknown preset is one line before anything is built
    c = count_llm(llm, input_tokens, prompt_tokens, decode_tokens)
    cols = {conv.column: conv.name for conv in CONVENTIONS.values()}
    return LlmStages(
        llm=llm,
        input_tokens=input_tokens,
        prompt_tokens=prompt_tokens,
        decode_tokens=decode_tokens,
        prefill={col: c.prefill_total(name) for col, name in cols.items()},
        decode={col: c.decode_total(name) for col, name in cols.items()},
        kv_cache_bf16_bytes=c.cache_after_decode.bytes("bf16"),
    )


# --------------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------------


def views_memory(
    views: ImageViews, encoder: str, variant: str, settings: MemorySettings, depth: int | None = None
) -> MemoryPrediction:
    """The ``MemoryPrediction`` of an item whose ``views`` run on ``encoder`` under ``variant``,
    with no FLOPs counted: each forward call's vision stage (the largest is the stage), then with
    ``settings.llm`` the LLM stage over everything the LLM sees for the item plus the prompt."""
    s = settings
    calls = tuple(
        vision_stage(variant_spec(encoder, variant, size, depth), s.dtype, k, s.attn, s.device_kind)
        for k, size in view_calls(views, encoder)
    )
    vision = max(calls, key=lambda c: c.held_bytes + c.activation_bytes)
    stages = [vision]
    if s.llm is not None:
        stages += llm_stages(s.llm, views.llm_tokens, s.prompt_tokens, s.decode_tokens, s.dtype, s.attn, s.device_kind)
    what = f"{Size(*views.image)} under {views.policy} ({variant})" + (f" + {s.llm}" if s.llm else "")
    return combine(what, stages, calls if len(calls) > 1 else (), s.dtype, 1, s.attn, s.device_kind)


# --------------------------------------------------------------------------------------------
# The cost of one item
# --------------------------------------------------------------------------------------------


@dataclass
class ItemCost:
    """One item (an image, or a video) under one policy: its ``views`` (the policy's
    ``ImageViews``), the tower and ``variants`` it is counted under, its forward ``calls``
    ((views, size) per call), the exact ``counts`` per variant and count column, each view's share
    of its call (``view_counts``), the variant ids per call, notes on what is counted, and, when
    asked for, the LLM stages (``llm``) and the predicted memory per variant (``memory``)."""

    path: str | None
    size: Size
    policy: str
    encoder: str
    variants: tuple[str, ...]
    depth: int | None
    views: ImageViews
    calls: list[tuple[int, Size]]
    counts: dict[str, dict[str, int]]
    view_counts: list[dict[str, dict[str, float]]]
    variant_ids: dict[str, list[str]]
    notes: list[str] = field(default_factory=list)
    llm_settings: LlmSettings | None = None
    llm: LlmStages | None = None
    memory_settings: MemorySettings | None = None
    memory: dict[str, MemoryPrediction] = field(default_factory=dict)

    @property
    def params(self) -> dict[str, Any]:
        """The policy's parameters used (defaults filled in)."""
        return dict(self.views.params)

    @property
    def encoding(self) -> str:
        """The policy's ``encoding`` parameter, or ``native`` for a family with one way to encode."""
        return str(self.views.params.get("encoding", "native"))

    @property
    def llm_tokens(self) -> int:
        """Everything the LLM sees for the item (visual tokens and extras), from the policy."""
        return self.views.llm_tokens

    def total(self, variant: str) -> dict[str, int]:
        """Vision plus both LLM stages per count column (vision alone without an LLM)."""
        v = self.counts[variant]
        if self.llm is None:
            return dict(v)
        return {c: v[c] + self.llm.prefill[c] + self.llm.decode[c] for c in COUNT_COLUMNS}

    def to_dict(self, convention: str = "macs") -> dict[str, Any]:
        """The JSON object of one item (``image --json``, docs/schema.md): identity, the token
        fields at the top level, the views with ``patch_grid`` [cols, rows] and ``gflops`` per
        variant (count / 1e9 in ``convention``), extras, notes, the forward ``calls``, ``counts``
        and ``gflops`` per variant, and ``llm_stages`` / ``memory`` when they were asked for."""
        conv = get_convention(convention)
        col = conv.column
        d = self.views.to_dict()
        views = []
        for v, vc in zip(d["views"], self.view_counts):
            v = dict(v)
            v["patch_grid"] = v.pop("patches")
            v["gflops"] = {p: vc[p][col] / 1e9 for p in self.variants}
            views.append(v)
        out: dict[str, Any] = {
            "path": self.path,
            "size": list(self.size),
            "policy": self.policy,
            "policy_params": jsonable(self.views.params),
            "encoding": self.encoding,
            "encoder": self.encoder,
            "variants": list(self.variants),
            "depth": self.depth,
            "convention": convention,
            "convention_help": conv.meaning,
            **self.views.token_fields,
            "view_llm_tokens": d["view_llm_tokens"],
            "processor_tokens": d["processor_tokens"],
            "grid": d["grid"],
            "canvas": d["canvas"],
            "content": d["content"],
            "views": views,
            "extras": d["extras"],
            "notes": d["notes"] + self.notes,
            "warnings": d["warnings"],
            "calls": [
                {"views": k, "size": list(size), "variant_ids": {p: self.variant_ids[p][i] for p in self.variants}}
                for i, (k, size) in enumerate(self.calls)
            ],
            "counts": self.counts,
            "gflops": {p: self.counts[p][col] / 1e9 for p in self.variants},
        }
        if self.llm is not None:
            out["llm_stages"] = {
                **self.llm.to_dict(),
                "vision": {p: dict(self.counts[p]) for p in self.variants},
                "total": {p: self.total(p) for p in self.variants},
            }
        if self.memory_settings is not None:
            out["memory"] = [
                {
                    "variant": p,
                    "llm": self.memory_settings.llm,
                    "prompt_tokens": self.memory_settings.prompt_tokens,
                    **m.as_dict(),
                }
                for p, m in self.memory.items()
            ]
        return out

    def rows(self) -> list[dict[str, Any]]:
        """Flat rows, one per variant, for a DataFrame or CSV (``dataset``'s ``per_image.csv``):
        the same columns for every policy."""
        v = self.views
        out = []
        for p in self.variants:
            row: dict[str, Any] = {
                "path": self.path,
                "width": self.size.width,
                "height": self.size.height,
                "policy": self.policy,
                "encoding": self.encoding,
                "variant": p,
                "encoder": self.encoder,
                "views": len(v.views),
                "grid_cols": v.grid[0] if v.grid else None,
                "grid_rows": v.grid[1] if v.grid else None,
                **v.token_fields,
                **self.counts[p],
                "variant_id": ";".join(self.variant_ids[p]),
            }
            if self.llm is not None:
                row["llm"] = self.llm.llm
                for c in COUNT_COLUMNS:
                    row[f"llm_prefill_{c}"] = self.llm.prefill[c]
                    row[f"llm_decode_{c}"] = self.llm.decode[c]
                    row[f"total_{c}"] = self.total(p)[c]
            out.append(row)
        return out


LLM_COLUMNS = tuple(f"llm_{stage}_{col}" for stage in ("prefill", "decode") for col in COUNT_COLUMNS)
"""Row columns an LLM adds (its stages per count column); ``total_<col>`` adds vision to them."""


def check_item(
    policy: str,
    params: dict[str, Any] | None = None,
    variants: tuple[str, ...] | None = None,
    encoder: str | None = None,
    depth: int | None = None,
) -> tuple[tuple[str, ...], str]:
    """The variants and tower ``cost_item`` will use, with every setting checked and nothing
    counted: bad names, parameters, variants, towers and depths are one line here, before any
    file is read. ``depth`` applies to v4 only, and must be a layer the tower has."""
    variants, tower = _variants_and_tower(policy, variants, encoder, depth)
    get_policy(policy).views(448, 448, encoder=encoder, **(params or {}))
    return variants, tower


def _variants_and_tower(
    policy: str, variants: tuple[str, ...] | None, encoder: str | None, depth: int | None
) -> tuple[tuple[str, ...], str]:
    """``check_item`` less the parameters, which the policy's own ``views`` checks."""
    pol = get_policy(policy)
    variants = pol.check_variants(variants)
    if depth is not None and "v4" not in variants:
        raise UhdProfileError(
            f"--depth {depth} moves the v4 variant's compressor, and {policy} is counted under {', '.join(variants)}; "
            "add --variant v4 (minicpm-v-4.6) or drop --depth"
        )
    tower = pol.tower(encoder)
    if depth is not None:
        variant_spec(tower, "v4", Size(448, 448), depth)
    return variants, tower


def cost_item(
    width: int,
    height: int,
    policy: str = DEFAULT_POLICY,
    params: dict[str, Any] | None = None,
    variants: tuple[str, ...] | None = None,
    encoder: str | None = None,
    depth: int | None = None,
    path: str | None = None,
    llm: LlmSettings | None = None,
    memory: MemorySettings | None = None,
) -> ItemCost:
    """What a ``width`` x ``height`` px image costs under ``policy`` (``params`` over its
    defaults), counted under ``variants`` (default: the policy's) on ``encoder`` (default: the
    policy's tower; another only where the policy allows it), ``depth`` moving v4's compressor;
    with ``llm`` its LLM stages, with ``memory`` its predicted memory per variant."""
    size = check_image_size(width, height)
    pol = get_policy(policy)
    variants, tower = _variants_and_tower(policy, variants, encoder, depth)
    views = pol.views(size.width, size.height, encoder=encoder, **(params or {}))
    calls = view_calls(views, tower)
    counts = {p: dict.fromkeys(COUNT_COLUMNS, 0) for p in variants}
    per_size: dict[Size, dict[str, dict[str, float]]] = {}
    ids: dict[str, list[str]] = {p: [] for p in variants}
    for k, vsize in calls:
        per_size[vsize] = {}
        for p in variants:
            call = count_call(tower, p, vsize, k, depth)
            for c in COUNT_COLUMNS:
                counts[p][c] += call[c]
            per_size[vsize][p] = {c: call[c] / k for c in COUNT_COLUMNS}
            ids[p].append(variant_spec(tower, p, vsize, depth).id)
    notes = []
    if VIT in variants:
        notes.append(
            f"FLOPs of the vit variant are {tower}'s tower alone (post-ratio 1): the family's own merge/projector "
            f"({pol.merge}:1) is not counted; its LLM tokens come from the policy"
        )
    cost = ItemCost(
        path=path,
        size=size,
        policy=policy,
        encoder=tower,
        variants=variants,
        depth=depth,
        views=views,
        calls=calls,
        counts=counts,
        view_counts=[per_size[call_size(views, v, tower)] for v in views.views],
        variant_ids=ids,
        notes=notes,
        llm_settings=llm,
        memory_settings=memory,
    )
    if llm is not None:
        cost.llm = llm_stage_counts(llm.llm, views.llm_tokens, llm.prompt_tokens, llm.decode_tokens)
    if memory is not None:
        cost.memory = {p: views_memory(views, tower, p, memory, depth) for p in variants}
    return cost


@dataclass(frozen=True)
class PolicyChoice:
    """How to cost items: a ``policy`` with its ``params`` (over its defaults), counted under
    ``variants`` (None: the policy's) on ``encoder`` (None: the policy's tower), ``depth`` moving
    v4's compressor. ``check()`` validates it without counting; ``cost(w, h)`` is ``cost_item``."""

    policy: str
    params: dict[str, Any] = field(default_factory=dict)
    variants: tuple[str, ...] | None = None
    encoder: str | None = None
    depth: int | None = None

    def check(self) -> None:
        """Bad names, parameters, variants, towers or depths fail once, before any file is read."""
        check_item(self.policy, self.params, self.variants, self.encoder, self.depth)

    def cost(
        self,
        width: int,
        height: int,
        path: str | None = None,
        llm: LlmSettings | None = None,
        memory: MemorySettings | None = None,
    ) -> ItemCost:
        return cost_item(width, height, self.policy, self.params, self.variants, self.encoder, self.depth, path, llm, memory)

    def to_dict(self) -> dict[str, Any]:
        pol = get_policy(self.policy)
        return {
            "name": self.policy,
            "params": jsonable({**pol.defaults, **self.params}),
            "variants": list(pol.check_variants(self.variants)),
            "encoder": pol.tower(self.encoder),
            "depth": self.depth,
        }


__all__ = [
    "PolicyChoice",
    "COUNT_COLUMNS",
    "LLM_COLUMNS",
    "VARIANTS",
    "VIT",
    "ItemCost",
    "LlmSettings",
    "LlmStages",
    "MemorySettings",
    "check_item",
    "cost_item",
    "count_call",
    "llm_stage_counts",
    "variant_spec",
    "view_calls",
    "call_size",
    "padded_input",
    "views_memory",
]
