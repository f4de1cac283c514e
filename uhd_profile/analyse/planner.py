"""What fits: the largest image, the largest setting and the designs that stay within a budget.

A budget is one of: ``memory`` (bytes: the memory model's peak with every model resident,
``uhd_profile.count.memory_model``), ``gflops`` (the vision stage's count in a convention, by the
FLOPs engine) or ``llm_tokens`` (everything the LLM sees for the image: the policy's visual tokens
and extras). Every figure the planner reports comes from a probe: the policy's views of one image
size, counted by the engine or traced by the memory model. Nothing is extrapolated.

Probes are remembered per *geometry*: the views the policy makes of an image (their roles, sizes
and patch grids, in order) and the tokens the LLM sees. Two image sizes or settings with the same
geometry run the same forward calls, so they cost the same and the second is not run again: a
setting past the point where the policy's own cap stops changing the views (Qwen2.5-VL's
``max_pixels`` above the image's area, ``max_slice_nums`` above the slices the image asks for) costs
one probe however many grid steps the search visits there. A memory budget runs the memory model
alone (no FLOPs are counted for it); a token budget runs neither.

Searches are bisections over an integer grid (an image's long side in pixels, a policy setting in
its own steps). A bisection keeps one end that fits and one that does not, so its answer is
exact in the sense a test can check: the planned point fits and the next step up does not. If cost
grew with size everywhere, that answer would be the largest; the policies' tie-breaks (grids
chosen by aspect ratio) can make the cost dip, so "largest" is read as "the largest before the
first step that does not fit, found by halving".

* ``largest_image(ratio)``: the largest image (long side up to ``CEILING_PX``) at an aspect ratio
  under the policy's settings. A policy that caps the image (every family does by default) may
  fit at every size: the answer then says so.
* ``largest_setting()``: the largest value of the family's own size knob (``KNOBS``:
  ``max_slice_nums``, ``max_pixels``, ``max_tiles``) at which the largest image of every ratio
  fits: bisected on the ratio that fails first, then checked at every other ratio.
* ``designs(image)`` (``minicpm-v-4.6``): for each of the paper's in-ViT compressors, the deepest
  insertion layer that fits for one image (deeper costs more compute).
* ``image_plan(w, h)``: the inverse, what one image costs under a policy and the largest setting
  that brings it under the budget.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from uhd_profile.analyse.images import (
    FAMILY_LLMS,
    MemorySettings,
    cost_policy_image,
    policy_encoder,
    policy_plans,
    spec_memory,
    views_memory,
)
from uhd_profile.count.conventions import get_convention
from uhd_profile.count.flops import count_flops
from uhd_profile.errors import UhdProfileError
from uhd_profile.model.compressors import COMPRESSORS
from uhd_profile.model.encoders import get_encoder
from uhd_profile.model.policies import DEFAULT_POLICY, get_policy
from uhd_profile.model.variants import VariantSpec
from uhd_profile.units import Size, format_bytes, parse_bytes

BUDGETS = ("memory", "gflops", "llm_tokens")
UNITS = {"memory": "bytes", "gflops": "G (count / 1e9 in the convention)", "llm_tokens": "tokens"}
RATIOS: tuple[tuple[int, int], ...] = ((1, 1), (4, 3), (3, 2), (16, 9), (21, 9), (3, 4), (9, 16))
"""Common aspect ratios (width:height) planned for."""
CEILING_PX = 8192
"""The longest image side searched (8K), and the side of the "largest image" a setting is planned for."""
REFERENCE_IMAGE = Size(3840, 2160)
"""The image the design table is planned for when none is given (4K UHD)."""


@dataclass(frozen=True)
class Knob:
    """A family's size setting: the policy parameter ``name``, searched from ``low`` to ``high``
    in steps of ``step`` (the unit the processor works in)."""

    name: str
    low: int
    high: int
    step: int
    description: str

    def values(self) -> int:
        """How many settings the grid holds."""
        return (self.high - self.low) // self.step + 1

    def value(self, i: int) -> int:
        return self.low + i * self.step


KNOBS: dict[str, Knob] = {
    "minicpm-v-4.6": Knob("max_slice_nums", 1, 64, 1, "most slices per image"),
    "qwen2.5-vl": Knob(
        "max_pixels", 3136, CEILING_PX * CEILING_PX, 28 * 28, "most pixels of the resized image (28x28 merge units)"
    ),
    "internvl": Knob("max_tiles", 1, 64, 1, "most 448 px tiles per image"),
}
"""The size setting planned per family; LLaVA-NeXT (a fixed list of grid pinpoints) and LLaVA-1.5
(one 336 px view) have none."""


@dataclass(frozen=True)
class Budget:
    """``kind`` (``BUDGETS``) and ``limit`` (bytes, G in the convention, or tokens)."""

    kind: str
    limit: float

    def __post_init__(self) -> None:
        if self.kind not in BUDGETS:
            raise UhdProfileError(f"budget {self.kind!r} is not valid; valid: {', '.join(BUDGETS)}")
        limit = self.limit
        if isinstance(limit, bool) or not isinstance(limit, (int, float)) or not math.isfinite(limit) or limit <= 0:
            raise UhdProfileError(f"{self.kind} budget {limit!r} is not valid; it must be a positive finite number")

    @property
    def option(self) -> str:
        """The command-line option that sets this budget."""
        return "--max-" + self.kind.replace("_", "-")

    def text(self, value: float | None) -> str:
        if value is None:
            return "n/a"
        if self.kind == "memory":
            return format_bytes(value)
        if self.kind == "gflops":
            return f"{value:,.1f} G"
        return f"{int(value):,} tokens"


def parse_budget(
    max_memory: str | int | None = None, max_gflops: str | float | None = None, max_llm_tokens: str | int | None = None
) -> Budget | None:
    """The one budget given (``--max-memory`` as ``24GiB``, ``--max-gflops``, ``--max-llm-tokens``),
    or None when none is; two are refused."""
    given = [(k, v) for k, v in (("memory", max_memory), ("gflops", max_gflops), ("llm_tokens", max_llm_tokens)) if v is not None]
    if len(given) > 1:
        names = " and ".join("--max-" + k.replace("_", "-") for k, _ in given)
        raise UhdProfileError(f"give one budget, not {names}; valid: --max-memory, --max-gflops or --max-llm-tokens")
    if not given:
        return None
    kind, value = given[0]
    if kind == "memory":
        return Budget("memory", parse_bytes(value, "--max-memory"))
    option = "--max-" + kind.replace("_", "-")
    limit: float
    try:
        limit = float(value) if kind == "gflops" else int(str(value).replace("_", ""))
    except ValueError:
        what = "a positive number of GFLOPs (count / 1e9), e.g. 2000" if kind == "gflops" else "a positive whole number of tokens"
        raise UhdProfileError(f"{option} {value!r} is not valid; give {what}") from None
    if not math.isfinite(limit) or limit <= 0:
        raise UhdProfileError(f"{option} {value!r} is not valid; it must be a positive finite number")
    return Budget(kind, limit)


def ratio_size(ratio: tuple[int, int], long_side: int) -> Size:
    """The image of aspect ratio ``ratio`` (width:height) whose longer side is ``long_side`` px
    (the other rounded, at least 1 px)."""
    a, b = ratio
    if a >= b:
        return Size(long_side, max(1, round(long_side * b / a)))
    return Size(max(1, round(long_side * a / b)), long_side)


def parse_ratios(text: str | None) -> tuple[tuple[int, int], ...]:
    """``"1:1,16:9"`` -> ((1, 1), (16, 9)); None -> ``RATIOS``."""
    if text is None:
        return RATIOS
    out: list[tuple[int, int]] = []
    for item in str(text).split(","):
        a, sep, b = item.strip().partition(":")
        if not sep or not a.isdigit() or not b.isdigit() or int(a) < 1 or int(b) < 1:
            raise UhdProfileError(f"--ratios {text!r} is not valid; give W:H pairs separated by commas, e.g. 1:1,16:9,9:16")
        out.append((int(a), int(b)))
    return tuple(dict.fromkeys(out))


def ratio_text(ratio: tuple[int, int]) -> str:
    return f"{ratio[0]}:{ratio[1]}"


def bisect(fits: Callable[[int], bool], lo: int, hi: int) -> tuple[int, int]:
    """Grid indices (last that fits, first that does not) between ``lo`` (fits) and ``hi`` (does not)."""
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo, hi


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RatioPlan:
    """The largest image at one aspect ratio: ``status`` ``"limit"`` (``largest`` fits, ``next``,
    one pixel longer, does not), ``"any"`` (even the ``CEILING_PX`` image fits: the policy caps it),
    or ``"none"`` (not even a 1 px image fits); ``value`` / ``next_value`` the budget's metric."""

    ratio: tuple[int, int]
    status: str
    largest: Size | None
    value: float | None
    next: Size | None = None
    next_value: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "ratio": ratio_text(self.ratio),
            "status": self.status,
            "largest": list(self.largest) if self.largest else None,
            "largest_pixels": self.largest.area if self.largest else None,
            "value": self.value,
            "next": list(self.next) if self.next else None,
            "next_value": self.next_value,
        }


@dataclass(frozen=True)
class SettingPlan:
    """The largest value of a family's knob at which the ``CEILING_PX`` image of every ratio fits:
    ``status`` ``"limit"`` (``largest`` fits at every ratio, ``next`` = largest + step does not at
    ``binding_ratio``), ``"ceiling"`` (the knob's top value fits), ``"none"`` (its bottom value does
    not fit at ``binding_ratio``); ``values`` the metric at ``largest`` per ratio."""

    knob: Knob
    default: Any
    status: str
    largest: int | None
    binding_ratio: tuple[int, int] | None
    values: dict[str, float]
    next: int | None = None
    next_value: float | None = None

    def as_dict(self) -> dict[str, Any]:
        k = self.knob
        return {
            "name": k.name,
            "description": k.description,
            "default": self.default,
            "low": k.low,
            "high": k.high,
            "step": k.step,
            "status": self.status,
            "largest": self.largest,
            "binding_ratio": ratio_text(self.binding_ratio) if self.binding_ratio else None,
            "values": self.values,
            "next": self.next,
            "next_value": self.next_value,
        }


@dataclass(frozen=True)
class DesignPlan:
    """One in-ViT compressor (or ``baseline``) for one image: the deepest insertion layer index
    that fits (``depth``; None for the baseline or when none fits), its metric ``value``, and the
    next depth with its value (which does not fit); ``status`` ``"limit"``, ``"all"`` (every depth
    fits), ``"none"``; for the baseline ``"fits"`` or ``"none"``."""

    design: str
    status: str
    depth: int | None
    value: float | None
    next_depth: int | None = None
    next_value: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class ImagePlan:
    """One image under one policy: views, tokens, the vision count and the memory peak, whether it
    fits the budget, and the largest setting of the family's knob at which it does."""

    policy: str
    encoder: str
    plan: str
    image: Size
    views: int
    vit_tokens: int
    llm_tokens: int
    gflops: float
    memory_bytes: int
    fits: bool | None
    setting: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["image"] = list(self.image)
        return d


# --------------------------------------------------------------------------------------------
# The planner
# --------------------------------------------------------------------------------------------


def geometry(views: Any) -> tuple:
    """What a probe's cost depends on, given the planner's tower, plan and settings: every view's
    role, size and patch grid in order, and everything the LLM sees for the image."""
    return (tuple((v.role, tuple(v.size), tuple(v.patches)) for v in views.views), views.llm_tokens)


@dataclass
class Planner:
    """Plans for one ``policy`` (``params`` over its defaults), under ``budget``, with the vision
    stage counted under ``plan`` (``minicpm-v-4.6``: the paper's ``baseline`` or ``v4``, default
    v4; other families: ``vit``, their tower alone) in ``convention``, and memory predicted with
    ``memory`` (``MemorySettings``: dtype, attention path, device, LLM, prompt tokens).
    ``progress(text)`` is told about each probe; ``probes`` counts the engine's runs (a geometry
    seen before is not run again) and ``lookups`` every point the searches asked about."""

    policy: str
    budget: Budget | None
    params: dict[str, Any] = field(default_factory=dict)
    plan: str | None = None
    encoder: str | None = None
    convention: str = "macs"
    memory: MemorySettings = field(default_factory=MemorySettings)
    depth: int | None = None
    progress: Callable[[str], None] | None = None
    probes: int = 0
    lookups: int = 0

    def __post_init__(self) -> None:
        pol = get_policy(self.policy)
        self.column = get_convention(self.convention).column
        self.tower: str = policy_encoder(self.policy, self.encoder)
        plans = policy_plans(self.policy, (self.plan,) if self.plan else None)
        self.plan_name: str = self.plan or ("v4" if self.policy == DEFAULT_POLICY else plans[0])
        self.encoder, self.plan = self.tower, self.plan_name
        pol.views(1024, 1024, **self.params)  # bad parameters fail here, once
        self._cache: dict[tuple, dict[str, float]] = {}

    @property
    def limit(self) -> Budget:
        """The budget; a search without one is refused in one line."""
        if self.budget is None:
            raise UhdProfileError("no budget given: add --max-memory, --max-gflops or --max-llm-tokens")
        return self.budget

    # -- one probe --------------------------------------------------------------------------
    def views(self, size: Size, params: dict[str, Any] | None = None) -> Any:
        """The policy's ``ImageViews`` of a ``size`` image with ``params`` over the planner's."""
        return get_policy(self.policy).views(size.width, size.height, **{**self.params, **(params or {})})

    def measure(
        self, size: Size, params: dict[str, Any] | None = None, metrics: tuple[str, ...] | None = None
    ) -> dict[str, float]:
        """The budget's metric (or ``metrics``) of a ``size`` image under the policy with
        ``params`` (over the planner's): views by the policy, counts by the engine, memory by the
        memory model, each run once per geometry."""
        params = {**self.params, **(params or {})}
        metrics = metrics or ((self.budget.kind,) if self.budget else BUDGETS)
        views = get_policy(self.policy).views(size.width, size.height, **params)
        have = self._cache.setdefault(geometry(views), {"llm_tokens": float(views.llm_tokens)})
        self.lookups += 1
        missing = [m for m in metrics if m not in have]
        if missing:
            self.probes += 1
            if self.progress:
                self.progress(f"probe {self.probes}: {size} {params or ''} ({', '.join(missing)})")
            if "gflops" in missing:
                cost = cost_policy_image(size.width, size.height, self.policy, params, (self.plan_name,), self.tower, self.depth)
                have["gflops"] = cost.counts[self.plan_name][self.column] / 1e9
            if "memory" in missing:
                pred = views_memory(self.policy, self.tower, size, views, self.plan_name, self.memory, self.depth)
                have["memory"] = float(pred.peak_bytes)
        return {m: have[m] for m in metrics}

    def value(self, size: Size, params: dict[str, Any] | None = None) -> float:
        return self.measure(size, params, (self.limit.kind,))[self.limit.kind]

    def fits(self, size: Size, params: dict[str, Any] | None = None) -> bool:
        return self.value(size, params) <= self.limit.limit

    # -- searches -----------------------------------------------------------------------------
    def largest_image(self, ratio: tuple[int, int], params: dict[str, Any] | None = None) -> RatioPlan:
        """The largest image at ``ratio`` (long side 1 .. ``CEILING_PX`` px) that fits."""
        top = ratio_size(ratio, CEILING_PX)
        if self.fits(top, params):
            return RatioPlan(ratio, "any", top, self.value(top, params))
        one = ratio_size(ratio, 1)
        if not self.fits(one, params):
            return RatioPlan(ratio, "none", None, None, one, self.value(one, params))
        lo, hi = bisect(lambda n: self.fits(ratio_size(ratio, n), params), 1, CEILING_PX)
        a, b = ratio_size(ratio, lo), ratio_size(ratio, hi)
        return RatioPlan(ratio, "limit", a, self.value(a, params), b, self.value(b, params))

    def _knob(self) -> tuple[Knob, Any] | None:
        knob = KNOBS.get(self.policy)
        if knob is None:
            return None
        return knob, {**get_policy(self.policy).defaults, **self.params}[knob.name]

    def largest_setting(self, ratios: tuple[tuple[int, int], ...] = RATIOS) -> SettingPlan | None:
        """The largest knob value (``KNOBS``) at which the ``CEILING_PX`` image of every ratio
        fits; None for a family without one. The ratio whose image has the most pixels is tried
        first (it is the one that usually binds); a ratio that fails at the answer found so far is
        bisected below it, until every ratio fits."""
        found = self._knob()
        if found is None:
            return None
        knob, default = found
        images = {r: ratio_size(r, CEILING_PX) for r in ratios}
        order = sorted(ratios, key=lambda r: -images[r].area)

        def fits(r: tuple[int, int], i: int) -> bool:
            return self.fits(images[r], {knob.name: knob.value(i)})

        def at(r: tuple[int, int], i: int) -> float:
            return self.value(images[r], {knob.name: knob.value(i)})

        hi = knob.values()  # one past the grid: "fails" by definition until a ratio says otherwise
        lo = hi - 1
        binding: tuple[int, int] | None = None
        for r in order:
            if fits(r, lo):
                continue
            if not fits(r, 0):
                return SettingPlan(knob, default, "none", None, r, {}, knob.low, at(r, 0))
            lo, hi = bisect(functools.partial(fits, r), 0, lo)
            binding = r
        # each ratio fits at lo: it was checked there, or at a larger value before lo came down to
        # where another ratio fits; the check below makes the answer the engine's, not the order's
        vals = {ratio_text(r): at(r, lo) for r in ratios}
        bad = [r for r, v in zip(ratios, vals.values()) if v > self.limit.limit]
        if bad:  # a dip (cost not monotone in the setting): say so rather than report a wrong answer
            raise UhdProfileError(
                f"{knob.name} {knob.value(lo)} does not fit at {', '.join(map(ratio_text, bad))} although a larger value "
                f"did: {self.policy}'s cost is not monotone in {knob.name} here; plan with --ratios one at a time"
            )
        if binding is None:
            return SettingPlan(knob, default, "ceiling", knob.high, None, vals)
        return SettingPlan(knob, default, "limit", knob.value(lo), binding, vals, knob.value(hi), at(binding, hi))

    def designs(self, image: Size = REFERENCE_IMAGE) -> list[DesignPlan]:
        """For ``minicpm-v-4.6``: each in-ViT compressor's deepest insertion layer index (0-based)
        that fits for ``image`` (sliced, the design's 4x connector after it), and the baseline."""
        if self.policy != DEFAULT_POLICY:
            raise UhdProfileError(f"the design table is for the {DEFAULT_POLICY} policy (the paper's designs), not {self.policy}")
        budget = self.limit
        p = {**get_policy(self.policy).defaults, **self.params}
        extras = get_policy(self.policy).views(image.width, image.height, **p).extra_tokens
        layers = get_encoder(self.tower).layers
        cache: dict[tuple[str | None, int | None], float] = {}

        def value(compressor: str | None, depth: int | None) -> float:
            key = (compressor, depth)
            if key not in cache:
                self.probes += 1
                self.lookups += 1
                if self.progress:
                    where = "" if depth is None else f"@{depth}"
                    self.progress(f"probe {self.probes}: {image} with {compressor or 'baseline'}{where}")
                s = VariantSpec(
                    encoder=self.tower,
                    resolution=image,
                    encoding="sliced",
                    compressor=compressor,
                    depth=depth,
                    max_slices=p["max_slice_nums"],
                    scale_resolution=p["scale_resolution"],
                )
                if budget.kind == "llm_tokens":
                    cache[key] = float(s.tokens_llm + extras)
                elif budget.kind == "gflops":
                    cache[key] = count_flops(s).get(self.convention) / 1e9
                else:
                    cache[key] = float(spec_memory(s, self.memory, s.tokens_llm + extras).peak_bytes)
            return cache[key]

        def ok(c: str | None, d: int | None) -> bool:
            return value(c, d) <= budget.limit

        out = [DesignPlan("baseline", "fits" if ok(None, None) else "none", None, value(None, None))]
        for name in COMPRESSORS:
            if ok(name, layers - 1):
                out.append(DesignPlan(name, "all", layers - 1, value(name, layers - 1)))
            elif not ok(name, 0):
                out.append(DesignPlan(name, "none", None, None, 0, value(name, 0)))
            else:
                lo, hi = bisect(functools.partial(ok, name), 0, layers - 1)
                out.append(DesignPlan(name, "limit", lo, value(name, lo), hi, value(name, hi)))
        return out

    def image_plan(self, size: Size) -> ImagePlan:
        """What ``size`` costs under the policy (every metric), whether it fits the budget, and the
        largest knob value at which it does."""
        m = self.measure(size, metrics=BUDGETS)
        views = self.views(size)
        fits = None if self.budget is None else m[self.budget.kind] <= self.budget.limit
        plan = ImagePlan(
            self.policy,
            self.tower,
            self.plan_name,
            size,
            len(views.views),
            views.vit_tokens,
            int(m["llm_tokens"]),
            m["gflops"],
            int(m["memory"]),
            fits,
        )
        found = self._knob()
        if self.budget is not None and found is not None:
            knob, default = found
            last = knob.values() - 1

            def ok(i: int) -> bool:
                return self.fits(size, {knob.name: knob.value(i)})

            def at(i: int) -> float:
                return self.value(size, {knob.name: knob.value(i)})

            setting: dict[str, Any] = {"name": knob.name, "default": default, "step": knob.step}
            if ok(last):
                setting.update(status="ceiling", largest=knob.high, value=at(last))
            elif not ok(0):
                setting.update(status="none", largest=None, next=knob.low, next_value=at(0))
            else:
                lo, hi = bisect(ok, 0, last)
                setting.update(status="limit", largest=knob.value(lo), value=at(lo), next=knob.value(hi), next_value=at(hi))
            plan.setting = setting
        return plan

    def settings_dict(self) -> dict[str, Any]:
        m = self.memory
        return {
            "policy": self.policy,
            "params": {k: ([list(x) for x in v] if isinstance(v, tuple) else v) for k, v in self.params.items()},
            "encoder": self.tower,
            "plan": self.plan_name,
            "convention": self.convention,
            "memory": {
                "dtype": m.dtype,
                "attn": m.attn,
                "device_kind": m.device_kind,
                "llm": m.llm,
                "prompt_tokens": m.prompt_tokens,
                "decode_tokens": m.decode_tokens,
            },
        }


def plan_policy(
    planner: Planner, ratios: tuple[tuple[int, int], ...] = RATIOS, designs: bool = True, image: Size | None = None
) -> dict[str, Any]:
    """The forward plan of one policy as a JSON-ready dict: the largest image per ratio, the
    largest setting, and (``minicpm-v-4.6``, ``designs``) the design table for ``image``."""
    if planner.budget is None:
        raise UhdProfileError(
            "plan needs a budget: --max-memory, --max-gflops or --max-llm-tokens (or --image to cost one image)"
        )
    t0 = time.perf_counter()
    b = planner.budget
    out: dict[str, Any] = {
        **planner.settings_dict(),
        "budget": {"kind": b.kind, "limit": b.limit, "unit": UNITS[b.kind]},
        "ceiling_px": CEILING_PX,
        "ratios": [planner.largest_image(r).as_dict() for r in ratios],
    }
    setting = planner.largest_setting(ratios)
    out["setting"] = setting.as_dict() if setting else None
    if setting is None:
        out["setting_note"] = f"{planner.policy} has no size setting to plan (its views are fixed by the processor)"
    if designs and planner.policy == DEFAULT_POLICY:
        ref = image or REFERENCE_IMAGE
        out["design_image"] = list(ref)
        out["designs"] = [d.as_dict() for d in planner.designs(ref)]
    out["fits_anything"] = any(r["status"] != "none" for r in out["ratios"])
    out["probes"] = planner.probes
    out["lookups"] = planner.lookups
    out["seconds"] = round(time.perf_counter() - t0, 3)
    return out


__all__ = [
    "BUDGETS",
    "CEILING_PX",
    "FAMILY_LLMS",
    "KNOBS",
    "RATIOS",
    "REFERENCE_IMAGE",
    "Budget",
    "DesignPlan",
    "ImagePlan",
    "Knob",
    "Planner",
    "RatioPlan",
    "SettingPlan",
    "bisect",
    "geometry",
    "parse_budget",
    "parse_ratios",
    "plan_policy",
    "ratio_size",
]
