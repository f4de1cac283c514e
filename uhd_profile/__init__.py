"""uhd-profile: what high-resolution visual encoding costs in multimodal LLMs."""

__version__ = "0.1.0"

from .errors import UhdProfileError  # noqa: E402
from .flops import CONVENTIONS, Cost, FlopCount, count_flops  # noqa: E402
from .variants import VariantSpec, build_variant  # noqa: E402
from .store import load  # noqa: E402

__all__ = ["CONVENTIONS", "Cost", "FlopCount", "UhdProfileError", "VariantSpec", "build_variant", "count_flops", "load", "__version__"]
