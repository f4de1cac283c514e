"""Trunk adapters: one uniform face over each ``transformers`` vision tower.

A variant needs four things from a tower, whatever its code looks like:

* ``embed_pixels(pixels)`` -> tokens (B, prefix + h*w, d), grid tokens row-major;
* ``run_layer(i, x, grid)`` -> x, running encoder layer ``i`` on the current token grid (the grid
  shrinks after an in-ViT compressor, so per-layer inputs such as rotary tables or attention
  windows are derived from ``grid`` every time);
* ``post_norm`` (a module, or ``nn.Identity``);
* ``layer_parts(k)`` -> ``LayerParts`` for the reuse initialisation.

A trunk's registered children are canonical (``embed``, ``layers``, ``post_norm`` and any extras);
the variant adopts them so module paths read ``layers.3.self_attn.q_proj``. The ``transformers``
model object itself is kept unregistered in ``hf``.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from .compressors import Geometry, LayerParts
from .errors import UhdProfileError


def tag(module: nn.Module, paper: str) -> nn.Module:
    """Mark how the paper convention prices ``module`` (see ``flops`` module docstring)."""
    module._uhd_paper = paper
    return module


def check_weights_dir(path: str | os.PathLike) -> str:
    p = os.fspath(path)
    if not os.path.isdir(p):
        raise UhdProfileError(f"--weights {p!r} is not a directory; give a local checkpoint directory (config.json + weights)")
    if not os.path.isfile(os.path.join(p, "config.json")):
        raise UhdProfileError(f"--weights {p!r} has no config.json; give a local checkpoint directory saved by transformers")
    return p


def from_config_or_weights(model_cls, config, weights: str | None, attn: str):
    """Random weights from ``config``, or a local checkpoint. Never downloads."""
    if weights is None:
        config._attn_implementation = attn
        return model_cls(config)
    path = check_weights_dir(weights)
    try:
        return model_cls.from_pretrained(path, local_files_only=True, attn_implementation=attn)
    except (OSError, ValueError) as exc:
        raise UhdProfileError(f"--weights {path!r} could not be loaded as {model_cls.__name__}: {str(exc).splitlines()[0]}") from None


class Trunk(nn.Module):
    """Base class; subclasses set ``embed``, ``layers``, ``post_norm`` and ``hf``."""

    prefix_tokens: int = 0

    def __init__(self, spec):
        super().__init__()
        self.spec = spec

    @property
    def hf(self) -> nn.Module:
        return self.__dict__["_hf"]

    def set_hf(self, model: nn.Module) -> None:
        self.__dict__["_hf"] = model

    def embed_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def run_layer(self, i: int, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        raise NotImplementedError

    def layer_parts(self, k: int) -> LayerParts:
        raise NotImplementedError

    def geometry(self, k: int) -> Geometry:
        parts = self.layer_parts(k)
        s = self.spec
        return Geometry(d=s.hidden, m=s.mlp, heads=s.heads, eps=parts.eps, act=parts.act,
                        norm_template=parts.norm1, gated=parts.gate is not None)


class SiglipTrunk(Trunk):
    """SigLIP (and SigLIP-2 fixed-resolution) towers: conv patch embedding, learned position table
    (bicubically interpolated when the input is not the native size), pre-norm layers, post-LN."""

    def __init__(self, spec, weights: str | None = None, attn: str = "sdpa"):
        super().__init__(spec)
        from transformers import SiglipVisionConfig, SiglipVisionModel

        cfg = SiglipVisionConfig(
            hidden_size=spec.hidden, intermediate_size=spec.mlp, num_hidden_layers=spec.layers,
            num_attention_heads=spec.heads, image_size=spec.image_size, patch_size=spec.patch,
            hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6, vision_use_head=False,
        )
        hf = from_config_or_weights(SiglipVisionModel, cfg, weights, attn)
        self.set_hf(hf)
        self.embed = tag(hf.embeddings, "macs_only")
        self.layers = hf.encoder.layers
        self.post_norm = tag(hf.post_layernorm, "exclude")

    def embed_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        h, w = pixels.shape[-2:]
        native = (h == w == self.spec.image_size)
        return self.embed(pixels, interpolate_pos_encoding=not native)

    def run_layer(self, i: int, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        return self.layers[i](x, None)

    def layer_parts(self, k: int) -> LayerParts:
        layer = self.layers[k]
        a = layer.self_attn
        return LayerParts(
            norm1=layer.layer_norm1, q=a.q_proj, k=a.k_proj, v=a.v_proj, o=a.out_proj,
            norm2=layer.layer_norm2, fc1=layer.mlp.fc1, fc2=layer.mlp.fc2,
            act=layer.mlp.activation_fn, eps=layer.layer_norm1.eps,
        )


def minicpm_model(spec, weights: str | None = None, attn: str = "sdpa"):
    """``transformers``' MiniCPMV4_6VisionModel at the given geometry, tagged for the paper
    convention (its window-attention merger is charged densely, like ours)."""
    from transformers.models.minicpmv4_6.configuration_minicpmv4_6 import MiniCPMV4_6VisionConfig
    from transformers.models.minicpmv4_6.modeling_minicpmv4_6 import MiniCPMV4_6VisionModel

    cfg = MiniCPMV4_6VisionConfig(
        hidden_size=spec.hidden, intermediate_size=spec.mlp, num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads, image_size=spec.image_size, patch_size=spec.patch,
        insert_layer_id=6,
    )
    model = from_config_or_weights(MiniCPMV4_6VisionModel, cfg, weights, attn)
    tag(model.embeddings, "macs_only")
    tag(model.post_layernorm, "exclude")
    tag(model.vit_merger, "dense_attention")
    return model
