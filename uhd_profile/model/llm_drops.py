"""What the LLM runs: in-LLM visual-token drops (FastV- and PyramidDrop-style schedules) and the
inputs of the LLM stage. Pure descriptions, like ``VariantSpec`` for the vision side; the count
layer (``uhd_profile.count.llm``) runs them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from uhd_profile.errors import UhdProfileError
from uhd_profile.model.llms import LlmSpec

LM_HEAD_CHOICES = ("last", "all")
"""Where the prefill runs the LM head: the last position only (generation) or every position."""
SELECT_CHOICES = ("attention", "first")
"""How a real run picks the visual tokens a drop stage keeps."""


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def kept_count(visual: int, keep: float) -> int:
    """Visual tokens left when ``keep`` of ``visual`` are kept: round half up of visual x keep,
    with ``keep`` read as the decimal it was written as (1 - 0.7 keeps 30 %, not 30.000000000000004 %)."""
    frac = Fraction(keep).limit_denominator(1_000_000)
    return math.floor(visual * frac + Fraction(1, 2))


@dataclass(frozen=True)
class DropStage:
    """After decoder layer ``after_layer`` (0-based) only ``keep`` of the visual tokens that
    entered the LLM remain (a fraction of the original count, not of the previous stage)."""

    after_layer: int
    keep: float

    def __post_init__(self) -> None:
        if not _is_int(self.after_layer) or self.after_layer < 0:
            raise UhdProfileError(
                f"drop stage after_layer = {self.after_layer!r}: must be an integer >= 0 (a 0-based layer index)"
            )
        if isinstance(self.keep, bool) or not isinstance(self.keep, (int, float)) or not 0 < self.keep <= 1:
            raise UhdProfileError(f"drop stage keep = {self.keep!r}: must be a fraction in (0, 1] of the visual tokens")


@dataclass(frozen=True)
class Drop:
    """Stages of in-LLM visual-token dropping, by increasing layer and non-increasing ``keep``.

    ``select``: how a real run picks the visual tokens to keep: ``"attention"`` (those the last
    token attends to most at the stage's layer, averaged over heads) or ``"first"`` (a fixed
    prefix, what shape-only counting does anyway). ``name`` labels the drop in reports.
    """

    stages: tuple[DropStage, ...] = ()
    name: str = "custom"
    select: str = "attention"

    def __post_init__(self) -> None:
        stages = tuple(self.stages)
        object.__setattr__(self, "stages", stages)
        for s in stages:
            if not isinstance(s, DropStage):
                raise UhdProfileError(f"drop stage {s!r}: must be a DropStage(after_layer, keep)")
        for a, b in zip(stages, stages[1:]):
            if b.after_layer <= a.after_layer:
                raise UhdProfileError(
                    f"drop stages after layers {a.after_layer} then {b.after_layer}: layers must strictly increase"
                )
            if b.keep > a.keep:
                raise UhdProfileError(
                    f"drop keeps {a.keep} then {b.keep}: a later stage cannot keep more visual tokens than an earlier one"
                )
        if self.select not in SELECT_CHOICES:
            raise UhdProfileError(f"drop select = {self.select!r}; valid: {', '.join(SELECT_CHOICES)}")

    def check(self, spec: LlmSpec) -> None:
        """Every stage must leave layers after it, and rank from a softmax-attention layer."""
        for s in self.stages:
            if s.after_layer > spec.layers - 2:
                raise UhdProfileError(
                    f"drop stage after layer {s.after_layer} on {spec.name}: must be 0..{spec.layers - 2} "
                    f"(0-based; {spec.layers} layers, and a later layer must remain)"
                )
            if s.after_layer not in spec.attention_layers:
                valid = ", ".join(str(i) for i in spec.attention_layers if i <= spec.layers - 2)
                raise UhdProfileError(
                    f"drop stage after layer {s.after_layer} on {spec.name}: ranking needs attention weights, "
                    f"and that layer is linear attention; valid layers: {valid}"
                )

    def schedule(self, spec: LlmSpec, visual: int) -> tuple[tuple[int, ...], tuple[tuple[int, int, int], ...]]:
        """(visual tokens each layer runs on, active stages as (layer, visual before, after)).

        A stage that would drop nothing (keep 1, or rounding) is inactive: it adds no ranking and
        no work, so a drop that drops nothing counts exactly like no drop."""
        self.check(spec)
        at = {s.after_layer: s for s in self.stages}
        v, per_layer, active = visual, [], []
        for i in range(spec.layers):
            per_layer.append(v)
            if i in at:
                new = min(v, kept_count(visual, at[i].keep))
                if new < v:
                    active.append((i, v, new))
                    v = new
        return tuple(per_layer), tuple(active)


def fastv(k: int, r: float, select: str = "attention") -> Drop:
    """FastV-style: after layer ``k`` (0-based) drop a fraction ``r`` (0 <= r < 1) of the visual tokens."""
    if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 <= r < 1:
        raise UhdProfileError(f"FastV drop ratio R = {r!r}: must be 0 <= R < 1")
    keep = float(1 - Fraction(r).limit_denominator(1_000_000))
    return Drop((DropStage(k, keep),), name=f"fastv(K={k},R={r:g})", select=select)


def pyramid_drop(layers: Sequence[int], ratio: float, select: str = "attention") -> Drop:
    """PyramidDrop-style: after each of ``layers`` keep ``ratio`` of the visual tokens left by the
    previous stage (0 < ratio <= 1), i.e. ratio, ratio^2, ... of the original."""
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio <= 1:
        raise UhdProfileError(f"PyramidDrop ratio = {ratio!r}: must be 0 < ratio <= 1 (kept per stage)")
    layers = list(layers)
    frac = Fraction(ratio).limit_denominator(1_000_000)
    stages = tuple(DropStage(k, float(frac ** (i + 1))) for i, k in enumerate(layers))
    return Drop(stages, name=f"pyramid_drop({','.join(map(str, layers))};{ratio:g})", select=select)


def check_tokens(visual_tokens, prompt_tokens, decode_tokens) -> None:
    for name, v, low in (
        ("visual_tokens", visual_tokens, 0),
        ("prompt_tokens", prompt_tokens, 0),
        ("decode_tokens", decode_tokens, 0),
    ):
        if not _is_int(v) or v < low:
            raise UhdProfileError(f"{name} = {v!r}: must be an integer >= {low}")
    if visual_tokens + prompt_tokens < 1:
        raise UhdProfileError("visual_tokens + prompt_tokens = 0: the prefill needs at least one token")
