"""uhd-profile: what high-resolution visual encoding costs in multimodal LLMs."""

__version__ = "0.1.0"

from uhd_profile.errors import UhdProfileError  # noqa: E402
from uhd_profile.count.flops import CONVENTIONS, Cost, FlopCount, count_flops  # noqa: E402
from uhd_profile.model.variants import VariantSpec, build_variant  # noqa: E402
from uhd_profile.run.store import load  # noqa: E402

__all__ = ["CONVENTIONS", "Cost", "FlopCount", "UhdProfileError", "VariantSpec", "build_variant", "count_flops", "load", "__version__"]
