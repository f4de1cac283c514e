"""The counting conventions: the one place each is named, labelled and explained.

Every number uhd-profile counts says which convention it is in. The full definitions, and why the
paper's number differs from the as-executed one, are in ``docs/conventions.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

from uhd_profile.errors import UhdProfileError


@dataclass(frozen=True)
class Convention:
    """One way of pricing what a module graph executes.

    ``name`` is what users type (``--convention``); ``column`` the metric that holds the count in
    records, baselines and ``uhd_profile.load`` (an integer); ``unit`` what one unit of the count is
    (``MACs`` or ``FLOPs``); ``meaning`` a one-line definition for tables and help text.
    """

    name: str
    column: str
    unit: str
    meaning: str

    @property
    def giga(self) -> str:
        """The unit of count / 1e9 as tables print it (``GMACs``, ``GFLOPs``)."""
        return f"G{self.unit}"


CONVENTIONS: dict[str, Convention] = {
    c.name: c
    for c in (
        Convention("macs", "macs", "MACs", "1 per multiply-accumulate; element-wise ops free; attention as executed"),
        Convention(
            "flops",
            "flops",
            "FLOPs",
            "2 per multiply-accumulate plus element-wise ops (bias, norms, activations, softmax); attention as executed",
        ),
        Convention(
            "paper",
            "paper_flops",
            "FLOPs",
            "the LLaVA-UHD v4 paper's: 1 per MAC, no biases, 4 per attention score, LayerNorm 5/elem, "
            "activations and residual adds 1/elem, window attention charged densely, connector and post-LayerNorm excluded",
        ),
    )
}
"""Convention name -> definition, in display order (``macs`` is the default)."""
DEFAULT_CONVENTION = "macs"
CONVENTION_CHOICES = " | ".join(CONVENTIONS)
"""For help text: ``macs | flops | paper``."""


def get_convention(name: str) -> Convention:
    """The convention called ``name``; a one-line ``UhdProfileError`` listing the valid ones otherwise."""
    if name not in CONVENTIONS:
        raise UhdProfileError(f"unknown convention {name!r}; valid conventions: {', '.join(CONVENTIONS)}")
    return CONVENTIONS[name]


def check_convention(name: str) -> None:
    get_convention(name)
