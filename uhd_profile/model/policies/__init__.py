"""Image policies per model family: how many views and visual tokens an image becomes.

Every family is one module here (a ``POLICY`` with its rule, parameters, tower, variants, default
LLM and size knob), registered in ``POLICIES``; everything downstream (``uhd_profile.analyse.cost``
and the commands) reads the policy's data and never a family's name.

``get_policy(name).views(width, height, **params)`` -> ``ImageViews`` (see ``base``). Each policy
reproduces the view sizes and token counts of that family's image processor in ``transformers``
(``tests/test_policies.py`` checks them size by size); docs/policies.md describes the rules.

>>> v = get_policy("qwen2.5-vl").views(1920, 1080)
>>> [str(s) for s in v.sizes], v.view_llm_tokens, v.llm_tokens
(['1316x728'], 1222, 1224)
"""

from __future__ import annotations

from uhd_profile.errors import UhdProfileError
from uhd_profile.model.policies import (
    gemma4,
    internvl,
    llava_1_5,
    llava_next,
    llava_onevision,
    minicpm_v,
    phi4_multimodal,
    qwen2_5_vl,
    qwen3_vl,
    smolvlm,
)
from uhd_profile.model.policies.base import Extra, ImageViews, Param, Policy, View

POLICIES: dict[str, Policy] = {
    p.name: p
    for p in (
        minicpm_v.POLICY,
        qwen2_5_vl.POLICY,
        qwen3_vl.POLICY,
        qwen3_vl.POLICY_3_5,
        llava_next.POLICY,
        internvl.POLICY,
        internvl.POLICY_V3,
        phi4_multimodal.POLICY,
        minicpm_v.POLICY_V47,
        llava_1_5.POLICY,
        gemma4.POLICY,
        llava_onevision.POLICY,
        smolvlm.POLICY_SMOLVLM2,
        smolvlm.POLICY_IDEFICS3,
    )
}
DEFAULT_POLICY = "minicpm-v-4.6"


def get_policy(name: str) -> Policy:
    """The policy called ``name``; an unknown name is a one-line UhdProfileError listing the valid ones."""
    if name not in POLICIES:
        raise UhdProfileError(f"unknown image policy {name!r}; valid policies: {', '.join(POLICIES)}")
    return POLICIES[name]


__all__ = ["POLICIES", "DEFAULT_POLICY", "get_policy", "Policy", "Param", "ImageViews", "View", "Extra"]
