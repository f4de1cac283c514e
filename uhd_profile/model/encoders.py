"""Encoder presets: the geometry of each vision tower and how to build it from ``transformers``.

Every preset builds from its ``transformers`` config class with random weights (FLOPs, latency
and memory do not depend on weight values), or from a local checkpoint directory (``weights``).
Nothing is ever downloaded.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from uhd_profile.errors import UhdProfileError


@dataclass(frozen=True)
class EncoderSpec:
    """Geometry of one vision tower.

    Attributes: ``layers`` encoder layers; ``hidden`` width d; ``mlp`` MLP hidden width m;
    ``heads`` attention heads; ``patch`` patch size in pixels; ``image_size`` native input side in
    pixels (the position table); ``trunk`` the adapter class name in ``uhd_profile.model.trunks``;
    ``prefix_tokens`` class tokens ahead of the patch grid; ``mlp_kind``/``norm`` describe the
    layer; ``released`` marks the released MiniCPM-V 4.6 model, which is run whole;
    ``grid_multiple`` is what every token-grid side must be a multiple of, also after an in-ViT
    compressor halves it (Qwen2.5-VL's window and rotary layout works in 2x2 merge units);
    ``floors_input`` marks towers whose patch embedding is a stride-``patch`` convolution, which
    takes any input size and floors the grid (a 384 px view at patch 14 is 27 x 27 tokens), as the
    real towers run; the others (linear embeddings over pre-cut patches, Qwen's merge units, the
    released model's packed layout) need exact multiples. ``default_post_ratio`` is the visual
    tokens merged into one LLM token by the tower's own family (its ``uhd_profile.model.policies``
    ``merge``): the default compression of a variant of this tower (``VariantSpec.design_ratio``).
    """

    name: str
    layers: int
    hidden: int
    mlp: int
    heads: int
    patch: int
    image_size: int
    trunk: str
    description: str
    prefix_tokens: int = 0
    mlp_kind: str = "gelu_tanh"
    norm: str = "layernorm"
    released: bool = False
    grid_multiple: int = 1  # token-grid sides must be multiples of this (Qwen2.5-VL: 2x2 merge units)
    floors_input: bool = False  # the patch embedding is a stride-p convolution: any size works, the grid floors
    default_post_ratio: int = 16  # the family's merge (policies' MERGE): 16 the paper's, 4 Qwen2.5-VL/InternVL, 1 LLaVA

    def build(self, weights: str | None = None, attn: str = "sdpa"):
        """Build the trunk adapter (or, for the released preset, the whole HF model)."""
        if attn not in ("sdpa", "eager"):
            raise UhdProfileError(f"unknown attention backend {attn!r}; valid: sdpa, eager")
        from uhd_profile.model import trunks  # torch and transformers: only to build, not to list the presets

        factory = getattr(trunks, self.trunk, None)
        if factory is None:
            raise UhdProfileError(f"encoder {self.name!r} needs trunk adapter {self.trunk}, which this version does not have")
        return factory(self, weights=weights, attn=attn)


# (layers, hidden, mlp, heads) shared by several towers
_SO400M = (27, 1152, 4304, 16)  # SigLIP / SigLIP-2 so400m (MiniCPM-V 4.6's tower too)
_VIT_L = (24, 1024, 4096, 16)  # ViT-L geometry: CLIP ViT-L/14, InternViT-300M

_PRESETS = [
    EncoderSpec(
        "siglip2-so400m-p14",
        *_SO400M,
        14,
        980,
        "SiglipTrunk",
        "SigLIP-2 so400m/14 at 980 px, 70x70 position table: the paper's tower (default)",
        floors_input=True,
    ),
    EncoderSpec(
        "siglip-so400m-p14-384",
        *_SO400M,
        14,
        384,
        "SiglipTrunk",
        "SigLIP so400m/14 at 384 px (27x27 grid: pick an even grid, e.g. 392 px, for 2x2 windows)",
        floors_input=True,
        default_post_ratio=1,  # LLaVA-NeXT/OneVision: a per-token projector
    ),
    EncoderSpec(
        "siglip2-so400m-p16",
        *_SO400M,
        16,
        512,
        "Siglip2NaflexTrunk",
        "SigLIP-2 so400m/16 NaFlex (linear patch embedding, 16x16 table resized per input)",
    ),
    EncoderSpec(
        "clip-vit-l14-336",
        *_VIT_L,
        14,
        336,
        "ClipTrunk",
        "CLIP ViT-L/14 at 336 px (class token, pre-LN, quick-GELU): LLaVA-1.5's tower",
        prefix_tokens=1,
        mlp_kind="quick_gelu",
        floors_input=True,
        default_post_ratio=1,  # LLaVA-1.5: a 1:1 MLP projector
    ),
    EncoderSpec(
        "internvit-300m-448",
        *_VIT_L,
        14,
        448,
        "InternVitTrunk",
        "InternViT-300M at 448 px (class token, layer scale): InternVL's small tower",
        prefix_tokens=1,
        mlp_kind="gelu",
        floors_input=True,
        default_post_ratio=4,  # InternVL: pixel shuffle 0.5 (2x2 patches per token)
    ),
    EncoderSpec(
        "qwen2.5-vl-vit",
        32,
        1280,
        3420,
        16,
        14,
        448,
        "Qwen25VlTrunk",
        "Qwen2.5-VL ViT (SwiGLU, RMSNorm, 2D RoPE, 112 px window attention, full attention in blocks 7/15/23/31)",
        mlp_kind="swiglu",
        norm="rmsnorm",
        grid_multiple=2,
        default_post_ratio=4,  # Qwen2.5-VL: the merger joins 2x2 patches
    ),
    EncoderSpec(
        "minicpm-v-4.6",
        *_SO400M,
        14,
        980,
        "minicpm_model",
        "MiniCPM-V 4.6's released vision model (transformers MiniCPMV4_6VisionModel); baseline = merger off, v4 = merger on",
        released=True,
    ),
    EncoderSpec(
        "internvit-6b-448",
        45,
        3200,
        12800,
        25,
        14,
        448,
        "InternVitTrunk",
        "InternViT-6B at 448 px (class token, layer scale, RMSNorm, qk-norm, no qkv bias): InternVL2.5/3-38B/78B's tower; "
        "geometry of the released InternViT-6B-448px-V2_5 config",
        prefix_tokens=1,
        mlp_kind="gelu",
        norm="rmsnorm",
        floors_input=True,
        default_post_ratio=4,  # InternVL: pixel shuffle 0.5 (2x2 patches per token)
    ),
    EncoderSpec(
        "gemma4-vision",
        16,
        768,
        4608,  # 1.5 x 3072: the two-matrix GELU MLP with the gated MLP's MACs and weights (see description)
        12,
        16,
        768,
        "SiglipTrunk",
        "Gemma 4 vision tower, transformers Gemma4VisionConfig defaults (16 layers, d 768, 12 heads x 64, patch 16; "
        "the E2B/E4B tower): its gated GELU MLP (3 x 768x3072) is run as SigLIP's two-matrix MLP of width 4608, "
        "same MACs and weights; not modelled: RMSNorm sandwich norms, q/k/v norms, 2D RoPE and the x/y position "
        "tables (a 48x48 interpolated table instead), the 3x3 average pooling (the policy's merge); the 31B model's "
        "tower (27 layers, d 1152) is larger",
        mlp_kind="gelu_tanh",
        norm="layernorm",
    ),
    EncoderSpec(
        "siglip-so400m-p14-364",
        *_SO400M,
        14,
        364,
        "SiglipTrunk",
        "SigLIP so400m/14 at 364 px (26x26 grid, position table resized from 384): Idefics3's tower "
        "(Idefics3-8B-Llama3 vision_config); the pixel-shuffle connector is not modelled",
        floors_input=True,
        default_post_ratio=4,  # Idefics3: pixel shuffle scale_factor 2 (2x2 patches per token)
    ),
    EncoderSpec(
        "siglip-b16-512",
        12,
        768,
        3072,
        12,
        16,
        512,
        "SiglipTrunk",
        "SigLIP base/16 at 512 px (32x32 grid): SmolVLM2-256M/500M's tower; the pixel-shuffle connector is not modelled",
        floors_input=True,
        default_post_ratio=16,  # SmolVLM2-256M/500M: pixel shuffle scale_factor 4 (4x4 patches per token)
    ),
    EncoderSpec(
        "phi4-mm-siglip-448",
        *_SO400M,
        14,
        448,
        "SiglipTrunk",
        "Phi-4-multimodal's SigLIP so400m/14 at 448 px (Phi4MultimodalVisionConfig defaults; all 27 layers run, "
        "features taken from layer -2); its patch attention mask and the pooling head it also runs not modelled",
        floors_input=True,
        default_post_ratio=4,  # Phi-4-multimodal: 2x2 average pooling
    ),
    EncoderSpec(
        "qwen3-vl-vit",
        *_SO400M,
        16,
        768,
        "SiglipTrunk",
        "Qwen3-VL ViT, transformers Qwen3VLVisionConfig defaults (27 layers, d 1152, MLP 4304, 16 heads, patch 16; "
        "Qwen3.5's tower too), run as a SigLIP-style pre-LN ViT at patch 16 (same matmuls per token); not modelled: "
        "2D RoPE, the temporal patch of 2 (one image is repeated), the 48x48 bilinear position table (SigLIP's "
        "bicubic resize instead), SigLIP's post-LN in place of the merger's LN, the 2x2 merger MLP and the three "
        "DeepStack mergers on layers 8/16/24 (their FLOPs are not counted in the tower)",
        grid_multiple=2,
        default_post_ratio=4,  # Qwen3-VL: the merger joins 2x2 patches
    ),
    EncoderSpec(
        "tiny",
        4,
        64,
        128,
        4,
        8,
        64,
        "SiglipTrunk",
        "tiny SigLIP-style tower for tests (4 layers, d=64, 8x8 grid at 64 px)",
        floors_input=True,
    ),
]

ENCODERS: dict[str, EncoderSpec] = {e.name: e for e in _PRESETS}
DEFAULT_ENCODER = "siglip2-so400m-p14"


_REDUCED = re.compile(r"(.+)\[:(\d+)\]")


def get_encoder(name: str) -> EncoderSpec:
    """The preset called ``name``; ``"NAME[:K]"`` is preset NAME with only its first K encoder
    layers (see ``reduced_encoder``)."""
    if name in ENCODERS:
        return ENCODERS[name]
    m = _REDUCED.fullmatch(name)
    if m and m.group(1) in ENCODERS:
        return reduced_encoder(m.group(1), int(m.group(2)))
    raise UhdProfileError(f"unknown encoder {name!r}; valid encoders: {', '.join(ENCODERS)} (NAME[:K] for the first K layers)")


def reduced_encoder(name: str, layers: int) -> EncoderSpec:
    """A copy of preset ``name`` with only its first ``layers`` encoder layers, named
    ``"NAME[:K]"`` (so variant ids say so), for measuring memory and time of a tower too big to run
    whole on a CPU: every layer of a ViT sees the same token count, so the activation peak of one
    layer is the tower's, and the weights scale with depth. The released model is run whole only."""
    base = get_encoder(name)
    if base.released:
        raise UhdProfileError(f"{name} is the released model, run whole; it has no reduced-depth copies")
    if isinstance(layers, bool) or not isinstance(layers, int) or not 1 <= layers <= base.layers:
        raise UhdProfileError(f"reduced depth {layers!r} for {name}: must be an integer from 1 to {base.layers}")
    if layers == base.layers:
        return base
    return dataclasses.replace(base, name=f"{name}[:{layers}]", layers=layers)
