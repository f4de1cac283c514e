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

from uhd_profile.analyse.cost import MemorySettings, cost_item, variant_spec, views_memory
from uhd_profile.count.conventions import get_convention
from uhd_profile.count.flops import count_flops
from uhd_profile.count.memory_model import predict_memory, predict_pipeline_memory
from uhd_profile.errors import UhdProfileError
from uhd_profile.model.compressors import COMPRESSORS
from uhd_profile.model.encoders import get_encoder
from uhd_profile.model.policies import POLICIES, get_policy
from uhd_profile.model.policies.base import Knob, jsonable
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


KNOBS: dict[str, Knob] = {p.name: p.knob for p in POLICIES.values() if p.knob is not None}
"""The size setting planned per family (``Policy.knob``); a family whose processor fixes its
views (LLaVA-NeXT's grid pinpoints, LLaVA-1.5's one 336 px view) has none."""
FAMILY_LLMS: dict[str, str] = {p.name: p.llm for p in POLICIES.values() if p.llm is not None}
"""The LLM preset each family's memory and planning use by default (``Policy.llm``)."""


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
    """``"1:1,16:9"`` -> ((1, 1), (16, 9)), each in lowest terms; None -> ``RATIOS``. A ratio
    given twice (``1:1,2:2``) is refused in one line."""
    if text is None:
        return RATIOS
    out: list[tuple[int, int]] = []
    for item in str(text).split(","):
        a, sep, b = item.strip().partition(":")
        if not sep or not a.isdigit() or not b.isdigit() or int(a) < 1 or int(b) < 1:
            raise UhdProfileError(f"--ratios {text!r} is not valid; give W:H pairs separated by commas, e.g. 1:1,16:9,9:16")
        w, h = int(a), int(b)
        g = math.gcd(w, h)
        same = next((r for r in out if r == (w // g, h // g)), None)
        if same is not None:
            raise UhdProfileError(f"--ratios {text!r}: {w}:{h} is the ratio {same[0]}:{same[1]} again; give each ratio once")
        out.append((w // g, h // g))
    return tuple(out)


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


def search(
    value: Callable[[int], float], limit: float, lo: int, hi: int, lo_value: float, hi_value: float | None = None
) -> tuple[int, int]:
    """Grid indices (last that fits, first that does not) between ``lo`` (fits: its value is
    ``lo_value`` <= ``limit``) and ``hi`` (does not; ``hi_value`` if known), probing with ``value``.

    Like ``bisect``, it keeps one end that fits and one that does not until they are neighbours,
    so its answer is checked the same way; it only chooses the points it probes differently: where
    the straight line between the two ends' values meets the limit, then steps away from that
    point growing twofold until the limit is crossed (costs here grow smoothly with size, so the
    guess lands close and the steps stay small). Without ``hi_value`` it starts by halving."""
    while hi - lo > 1:
        if hi_value is None or hi_value <= lo_value:
            mid = (lo + hi) // 2
            v = value(mid)
            if v <= limit:
                lo, lo_value = mid, v
            else:
                hi, hi_value = mid, v
            continue
        guess = lo + int((limit - lo_value) / (hi_value - lo_value) * (hi - lo))
        point = min(max(guess, lo + 1), hi - 1)
        step = max(1, (hi - lo) // 64)
        direction = 0
        while hi - lo > 1:
            v = value(point)
            if v <= limit:
                lo, lo_value, d = point, v, 1
            else:
                hi, hi_value, d = point, v, -1
            if direction and d != direction:
                break  # crossed the limit: interpolate again in the narrower bracket
            direction, point, step = d, point + d * step, step * 2
            if not lo < point < hi:
                break
    return lo, hi


def find_limit(
    value: Callable[[int], float], limit: float, low: int, high: int, start: int | None = None
) -> tuple[str, int | None, int | None]:
    """The largest grid index in ``low`` .. ``high`` whose ``value`` is within ``limit``, found
    from below: ``("none", None, low)`` when ``low`` does not fit, ``("ceiling", high, None)`` when
    ``high`` does, else ``("limit", lo, lo + 1)`` with ``lo`` fitting and ``lo + 1`` not.

    It climbs from ``low`` (and ``start``, e.g. a setting's default, when that fits) along the line
    through the last two points that fit, never less than half its previous stride, until a point
    does not fit, then narrows with ``search``. Points above the first one that does not fit are
    never probed, so the largest sizes (the slowest to count or trace) are run only when the
    budget reaches them."""
    low_value = value(low)
    if low_value > limit:
        return "none", None, low
    lo, lo_value = low, low_value
    prev: tuple[int, float] | None = None
    if start is not None and low < start < high:
        v = value(start)
        if v > limit:
            a, b = search(value, limit, lo, start, lo_value, v)
            return "limit", a, b
        prev, lo, lo_value = (lo, lo_value), start, v
    while True:
        if prev is not None and lo_value > prev[1]:
            stride = lo - prev[0]
            guess = lo + int((limit - lo_value) * stride / (lo_value - prev[1]))
            guess = max(guess, lo + max(1, stride // 2))
        else:
            guess = lo + max(1, (high - lo) // 2)
        point = min(guess, high)
        v = value(point)
        if v > limit:
            a, b = search(value, limit, lo, point, lo_value, v)
            return "limit", a, b
        if point == high:
            return "ceiling", high, None
        prev, lo, lo_value = (lo, lo_value), point, v


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
    variant: str
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
    stage counted under the variant ``plan`` (one of ``Policy.variants``; default v4 where the
    policy has the paper's designs, else its first default, ``vit``: the tower alone) in ``convention``, and memory predicted with
    ``memory`` (``MemorySettings``: dtype, attention path, device, LLM, prompt tokens).
    ``progress(text)`` is told about each probe; ``probes`` counts the engine's runs (a geometry
    seen before is not run again) and ``lookups`` every point the searches asked about."""

    policy: str
    budget: Budget | None
    params: dict[str, Any] = field(default_factory=dict)
    variant: str | None = None
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
        self.tower: str = pol.tower(self.encoder)
        variants = pol.check_variants((self.variant,) if self.variant else None)
        self.variant = self.variant or ("v4" if "v4" in pol.variants else variants[0])
        self.chosen: str = self.variant
        if self.depth is not None and self.variant != "v4":
            raise UhdProfileError(
                f"--depth {self.depth} moves the v4 variant's compressor; {self.policy} is planned under {self.variant}"
            )
        if self.depth is not None:
            variant_spec(
                self.tower, "v4", Size(448, 448), self.depth
            )  # a depth the tower has not is one line, whatever the budget
        self.encoder = self.tower
        self.views(Size(1024, 1024))  # bad parameters fail here, once
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
        return get_policy(self.policy).views(size.width, size.height, encoder=self.tower, **{**self.params, **(params or {})})

    def measure(
        self, size: Size, params: dict[str, Any] | None = None, metrics: tuple[str, ...] | None = None
    ) -> dict[str, float]:
        """The budget's metric (or ``metrics``) of a ``size`` image under the policy with
        ``params`` (over the planner's): views by the policy, counts by the engine, memory by the
        memory model, each run once per geometry."""
        params = {**self.params, **(params or {})}
        metrics = metrics or ((self.budget.kind,) if self.budget else BUDGETS)
        views = self.views(size, params)
        have = self._cache.setdefault(geometry(views), {"llm_tokens": float(views.llm_tokens)})
        self.lookups += 1
        missing = [m for m in metrics if m not in have]
        if missing:
            self.probes += 1
            if self.progress:
                self.progress(f"probe {self.probes}: {size} {params or ''} ({', '.join(missing)})")
            if "gflops" in missing:
                cost = cost_item(size.width, size.height, self.policy, params, (self.chosen,), self.tower, self.depth)
                have["gflops"] = cost.counts[self.chosen][self.column] / 1e9
            if "memory" in missing:
                pred = views_memory(views, self.tower, self.chosen, self.memory, self.depth)
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
        lo, hi = search(
            lambda n: self.value(ratio_size(ratio, n), params),
            self.limit.limit,
            1,
            CEILING_PX,
            self.value(one, params),
            self.value(top, params),
        )
        a, b = ratio_size(ratio, lo), ratio_size(ratio, hi)
        return RatioPlan(ratio, "limit", a, self.value(a, params), b, self.value(b, params))

    def _knob(self) -> tuple[Knob, Any] | None:
        knob = get_policy(self.policy).knob
        if knob is None:
            return None
        return knob, {**get_policy(self.policy).defaults, **self.params}[knob.name]

    def largest_setting(self, ratios: tuple[tuple[int, int], ...] = RATIOS) -> SettingPlan | None:
        """The largest knob value (``KNOBS``) at which the ``CEILING_PX`` image of every ratio
        fits; None for a family without one. The ratio whose image costs most at the default setting
        is tried first (it usually binds), climbing from the default (``find_limit``); a
        ratio that fails at the answer found so far is searched below it, until every ratio fits."""
        found = self._knob()
        if found is None:
            return None
        knob, default = found
        images = {r: ratio_size(r, CEILING_PX) for r in ratios}

        def at(r: tuple[int, int], i: int) -> float:
            return self.value(images[r], {knob.name: knob.value(i)})

        last = knob.values() - 1
        start = (int(default) - knob.low) // knob.step if isinstance(default, int) else None
        if start is not None and 0 <= start <= last:
            # the costliest ratio at the default is searched first (these probes are the ones
            # largest_image made already): the one most likely to bind, so fewer searches again
            order = sorted(ratios, key=lambda r: (-at(r, start), -images[r].area))
        else:
            order = sorted(ratios, key=lambda r: -images[r].area)
        first = order[0]
        status, found_lo, found_hi = find_limit(functools.partial(at, first), self.limit.limit, 0, last, start)
        if status == "none":
            return SettingPlan(knob, default, "none", None, first, {}, knob.low, at(first, 0))
        lo, hi = (last, last + 1) if found_lo is None or found_hi is None else (found_lo, found_hi)
        binding = None if status == "ceiling" else first
        # every ratio is checked at the answer so far (its values are reported); one that does not
        # fit there is searched below it, and the others checked again at the new answer
        failing = next((r for r in order[1:] if at(r, lo) > self.limit.limit), None)
        while failing is not None:
            zero = at(failing, 0)
            if zero > self.limit.limit:
                return SettingPlan(knob, default, "none", None, failing, {}, knob.low, zero)
            lo, hi = search(functools.partial(at, failing), self.limit.limit, 0, lo, zero, at(failing, lo))
            binding = failing
            failing = next((r for r in order if at(r, lo) > self.limit.limit), None)
        vals = {ratio_text(r): at(r, lo) for r in ratios}
        if binding is None:
            return SettingPlan(knob, default, "ceiling", knob.high, None, vals)
        return SettingPlan(knob, default, "limit", knob.value(lo), binding, vals, knob.value(hi), at(binding, hi))

    def designs(self, image: Size = REFERENCE_IMAGE, compressors: tuple[str, ...] | None = None) -> list[DesignPlan]:
        """For a policy with the paper's designs (``minicpm-v-4.6``): each in-ViT compressor's
        (``compressors``, default all) deepest insertion layer index (0-based) that fits for
        ``image`` (sliced, the design's 4x connector after it), and the baseline."""
        if not has_designs(self.policy):
            raise UhdProfileError(f"the design table is for a policy with the paper's designs (baseline, v4), not {self.policy}")
        budget = self.limit
        p = {**get_policy(self.policy).defaults, **self.params}
        extras = self.views(image).extra_tokens
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
                    cache[key] = float(spec_memory(s, self.memory, s.tokens_llm + extras))
            return cache[key]

        def ok(c: str | None, d: int | None) -> bool:
            return value(c, d) <= budget.limit

        out = [DesignPlan("baseline", "fits" if ok(None, None) else "none", None, value(None, None))]
        for name in compressors or tuple(COMPRESSORS):
            if name not in COMPRESSORS:
                raise UhdProfileError(f"compressor {name!r} is not valid; valid: {', '.join(COMPRESSORS)}")
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
            self.chosen,
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

            def at(i: int) -> float:
                return self.value(size, {knob.name: knob.value(i)})

            setting: dict[str, Any] = {"name": knob.name, "default": default, "step": knob.step}
            start = (int(default) - knob.low) // knob.step if isinstance(default, int) else None
            status, lo, hi = find_limit(at, self.limit.limit, 0, last, start)
            if status == "ceiling":
                setting.update(status="ceiling", largest=knob.high, value=at(last))
            elif status == "none" or lo is None or hi is None:
                setting.update(status="none", largest=None, next=knob.low, next_value=at(0))
            else:
                setting.update(status="limit", largest=knob.value(lo), value=at(lo), next=knob.value(hi), next_value=at(hi))
            plan.setting = setting
        return plan

    def settings_dict(self) -> dict[str, Any]:
        m = self.memory
        return {
            "policy": self.policy,
            "params": jsonable(self.params),
            "encoder": self.tower,
            "variant": self.variant,
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


def has_designs(policy: str) -> bool:
    """Whether the policy is costed under the paper's designs (its design table can be planned)."""
    return "v4" in get_policy(policy).variants


def spec_memory(spec: VariantSpec, settings: MemorySettings, llm_tokens: int) -> int:
    """The predicted peak (bytes) of one image encoded as the whole-image ``spec`` (a design of
    the table), with ``settings.llm`` over ``llm_tokens``, by the memory model."""
    s = settings
    if s.llm is None:
        return predict_memory(spec, s.dtype, 1, s.attn, s.device_kind).peak_bytes
    return predict_pipeline_memory(
        spec, s.llm, s.prompt_tokens, s.decode_tokens, s.dtype, s.attn, s.device_kind, visual_tokens=llm_tokens
    ).peak_bytes


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
    if designs and has_designs(planner.policy):
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
    "has_designs",
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
