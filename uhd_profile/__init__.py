"""uhd-profile: what high-resolution visual encoding costs in multimodal LLMs.

The public API, by layer (see the README's "Layout"):

* ``VariantSpec``, ``build_variant`` (model), ``Size`` (units);
* ``count_flops``, ``FlopCount``, ``Cost``, ``CONVENTIONS`` (count);
* ``bench``, ``BenchSettings``, ``TimingSettings`` (measure);
* ``load`` (run: a run directory as a DataFrame);
* ``write_report`` (analyse).
"""

from typing import Any

from uhd_profile.count.conventions import CONVENTIONS  # noqa: E402
from uhd_profile.count.flops import Cost, FlopCount, count_flops  # noqa: E402
from uhd_profile.errors import UhdProfileError  # noqa: E402
from uhd_profile.model.variants import VariantSpec, build_variant  # noqa: E402
from uhd_profile.run.store import load  # noqa: E402
from uhd_profile.units import Size  # noqa: E402
from uhd_profile.version import __version__  # noqa: E402

# Importing these costs more (the measurement probes, the report's plotting stack): on first use.
_LAZY = {
    "bench": "uhd_profile.measure.bench",
    "BenchSettings": "uhd_profile.measure.bench",
    "TimingSettings": "uhd_profile.measure.timing",
    "write_report": "uhd_profile.analyse.report",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'uhd_profile' has no attribute {name!r}")


__all__ = [
    "CONVENTIONS",
    "BenchSettings",
    "Cost",
    "FlopCount",
    "Size",
    "TimingSettings",
    "UhdProfileError",
    "VariantSpec",
    "bench",
    "build_variant",
    "count_flops",
    "load",
    "write_report",
    "__version__",
]
