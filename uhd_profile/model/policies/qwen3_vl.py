"""Qwen3-VL (and Qwen3.5): native resolution, one view per image.

The rule is Qwen2.5-VL's at patch 16: each side is moved to a multiple of 32 px (patch 16 x the 2x2
merge), then the whole image is scaled, aspect ratio kept, when its area falls outside
[min_pixels, max_pixels]. The ViT sees (w/16)(h/16) patches; the 2x2 merger sends a quarter of them
to the LLM (one token per 32 x 32 px). Reproduces ``Qwen2VLImageProcessorPil`` (the image processor
``Qwen3VLProcessor`` uses in ``transformers``) with the released Qwen3-VL preprocessor_config values:
patch_size 16, merge_size 2, size {shortest_edge: 65536, longest_edge: 16777216} (256^2 to 4096^2 px).
Qwen3.5 ships the same processor classes and the same preprocessor values, so ``qwen3.5`` is this
rule under another name (its LLM differs).
"""

from __future__ import annotations

from uhd_profile.model.policies.qwen2_5_vl import native_policy

NAME = "qwen3-vl"
NAME_3_5 = "qwen3.5"
ENCODER = "qwen3-vl-vit"
MIN_PIXELS = 65536  #: released preprocessor_config size.shortest_edge (256 x 256 px: 64 LLM tokens)
MAX_PIXELS = 16777216  #: released preprocessor_config size.longest_edge (4096 x 4096 px: 16384 LLM tokens)


POLICY = native_policy(
    NAME,
    ENCODER,
    "Qwen3-VL: native resolution, sides to multiples of 32 px within [min_pixels, max_pixels] "
    "(256^2 to 4096^2 px), 2x2 merge to the LLM",
    "qwen3-8b",  # Qwen3-VL-8B's text model has the Qwen3-8B geometry (36 layers, d 4096, GQA 32/8)
    MIN_PIXELS,
    MAX_PIXELS,
    MIN_PIXELS,
)

#: Qwen3.5: the same Qwen3VLProcessor + Qwen2VLImageProcessor and the same released preprocessor values,
#: the same tower geometry (Qwen3_5VisionConfig, without DeepStack); its LLM is a hybrid (gated
#: DeltaNet + full attention): the closest preset is minicpm-v-4.6-llm, the Qwen3_5TextConfig defaults
#: (Qwen3.5-9B style per its docstring).
POLICY_3_5 = native_policy(
    NAME_3_5,
    ENCODER,
    "Qwen3.5: Qwen3-VL's image rule and processor values (sides to multiples of 32 px, 256^2 to 4096^2 px, 2x2 merge)",
    "minicpm-v-4.6-llm",
    MIN_PIXELS,
    MAX_PIXELS,
    MIN_PIXELS,
)
