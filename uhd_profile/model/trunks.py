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
from typing import Any

import torch
from torch import nn

from uhd_profile.errors import UhdProfileError
from uhd_profile.model.compressors import Geometry, LayerParts


def tag(module: nn.Module, paper: str) -> nn.Module:
    """Mark how the paper convention prices ``module`` (see ``flops`` module docstring)."""
    module.__dict__["_uhd_paper"] = paper  # a plain attribute: works on transformers modules too
    return module


def check_weights_dir(path: str | os.PathLike, what: str = "--weights") -> str:
    """``path`` as a string, when it is a local checkpoint directory (one with a ``config.json``);
    a one-line error naming it ``what`` otherwise."""
    p = os.fspath(path)
    if not os.path.isdir(p):
        raise UhdProfileError(f"{what} {p!r} is not a directory; give a local checkpoint directory (config.json + weights)")
    if not os.path.isfile(os.path.join(p, "config.json")):
        raise UhdProfileError(f"{what} {p!r} has no config.json; give a local checkpoint directory saved by transformers")
    return p


def load_pretrained(model_cls, path: str, what: str = "--weights", **kwargs):
    """``model_cls.from_pretrained`` of the local checkpoint ``path`` (local files only, ``kwargs``
    passed on); a one-line error naming it ``what`` when it does not load."""
    try:
        return model_cls.from_pretrained(path, local_files_only=True, **kwargs)
    except (OSError, ValueError) as exc:
        raise UhdProfileError(
            f"{what} {path!r} could not be loaded as {model_cls.__name__}: {str(exc).splitlines()[0]}"
        ) from None


def from_config_or_weights(model_cls, config, weights: str | None, attn: str):
    """Random weights from ``config``, or a local checkpoint. Never downloads."""
    if weights is None:
        config._attn_implementation = attn
        return model_cls(config)
    return load_pretrained(model_cls, check_weights_dir(weights), attn_implementation=attn)


def hf_geometry(spec: Any) -> dict[str, int]:
    """A spec's width, MLP width, depth and heads under their ``transformers`` config names."""
    return dict(
        hidden_size=spec.hidden, intermediate_size=spec.mlp, num_hidden_layers=spec.layers, num_attention_heads=spec.heads
    )


def build_tower(model_cls, config_cls, spec: Any, weights: str | None, attn: str, **settings):
    """``model_cls`` from a ``config_cls`` at ``spec``'s width, MLP width, depth, heads and patch
    size plus the tower's own ``settings`` (random weights), or from the local checkpoint
    ``weights``. Never downloads."""
    config = config_cls(**hf_geometry(spec), patch_size=spec.patch, **settings)
    return from_config_or_weights(model_cls, config, weights, attn)


class Trunk(nn.Module):
    """Base class; subclasses set ``embed``, ``layers``, ``post_norm`` and ``hf``."""

    prefix_tokens: int = 0
    # transformers submodules adopted by the subclasses: their structure is the tower's own
    embed: Any
    layers: Any
    post_norm: Any

    def __init__(self, spec: Any):
        super().__init__()
        self.spec = spec

    @property
    def hf(self) -> nn.Module:
        return self.__dict__["_hf"]

    def set_hf(self, model: nn.Module) -> None:
        self.__dict__["_hf"] = model

    def adopt(self, hf: nn.Module, embed: nn.Module, layers: Any, post_norm: nn.Module) -> None:
        """Keep the tower ``hf`` unregistered and register its parts under the canonical names:
        ``embed`` (priced MACs only by the paper convention), ``layers`` and ``post_norm``
        (excluded by the paper convention, unless it is an ``nn.Identity``)."""
        self.set_hf(hf)
        self.embed = tag(embed, "macs_only")
        self.layers = layers
        self.post_norm = post_norm if isinstance(post_norm, nn.Identity) else tag(post_norm, "exclude")

    def embed_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def run_layer(self, i: int, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        raise NotImplementedError

    def layer_parts(self, k: int) -> LayerParts:
        raise NotImplementedError

    def geometry(self, k: int) -> Geometry:
        p, s = self.layer_parts(k), self.spec
        return Geometry(d=s.hidden, m=s.mlp, heads=s.heads, eps=p.eps, act=p.act, norm_template=p.norm1, gated=p.gate is not None)


class PreNormTrunk(Trunk):
    """Towers whose layers are ``layer_norm1 -> self_attn(q/k/v/out_proj) -> layer_norm2 ->
    mlp(fc1, activation_fn, fc2)`` with a learned position table that the embeddings interpolate
    off the native size (SigLIP, CLIP). Vision layers are bidirectional: no mask is passed."""

    def embed_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        h, w = pixels.shape[-2:]
        native = h == w == self.spec.image_size
        return self.embed(pixels, interpolate_pos_encoding=not native)

    def run_layer(self, i: int, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        return self.layers[i](x, None)

    def layer_parts(self, k: int) -> LayerParts:
        layer = self.layers[k]
        a = layer.self_attn
        return LayerParts(
            norm1=layer.layer_norm1,
            q=a.q_proj,
            k=a.k_proj,
            v=a.v_proj,
            o=a.out_proj,
            norm2=layer.layer_norm2,
            fc1=layer.mlp.fc1,
            fc2=layer.mlp.fc2,
            act=layer.mlp.activation_fn,
            eps=layer.layer_norm1.eps,
        )


class SiglipTrunk(PreNormTrunk):
    """SigLIP (and SigLIP-2 fixed-resolution) towers: conv patch embedding, learned position table
    (bicubically interpolated when the input is not the native size), pre-norm layers, post-LN."""

    def __init__(self, spec, weights: str | None = None, attn: str = "sdpa"):
        super().__init__(spec)
        from transformers import SiglipVisionConfig, SiglipVisionModel

        settings = dict(image_size=spec.image_size, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6, vision_use_head=False)
        hf = build_tower(SiglipVisionModel, SiglipVisionConfig, spec, weights, attn, **settings)
        self.adopt(hf, hf.embeddings, hf.encoder.layers, hf.post_layernorm)


def minicpm_model(spec, weights: str | None = None, attn: str = "sdpa"):
    """``transformers``' MiniCPMV4_6VisionModel at the given geometry, tagged for the paper
    convention (its window-attention merger is charged densely, like ours)."""
    from transformers.models.minicpmv4_6.configuration_minicpmv4_6 import MiniCPMV4_6VisionConfig
    from transformers.models.minicpmv4_6.modeling_minicpmv4_6 import MiniCPMV4_6VisionModel

    model = build_tower(
        MiniCPMV4_6VisionModel, MiniCPMV4_6VisionConfig, spec, weights, attn, image_size=spec.image_size, insert_layer_id=6
    )
    tag(model.embeddings, "macs_only")
    tag(model.post_layernorm, "exclude")
    tag(model.vit_merger, "dense_attention")
    return model


# --------------------------------------------------------------------------------------------
# Helpers shared by the adapters below
# --------------------------------------------------------------------------------------------


def _linear_copy(src: nn.Linear, rows: slice | None = None, scale: torch.Tensor | None = None) -> nn.Linear:
    """A new ``nn.Linear`` holding a copy of ``src`` (output ``rows`` only, each row times ``scale``).

    Built on the device and dtype of ``src``'s weight, so it works on ``meta`` too. Used to hand the
    reuse initialisation plain Linear(d, d) pieces: slices of a fused qkv, or an output projection
    with a layer scale folded in.
    """
    w = src.weight if rows is None else src.weight[rows]
    b = None if src.bias is None else (src.bias if rows is None else src.bias[rows])
    out = nn.Linear(w.shape[1], w.shape[0], bias=b is not None, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        out.weight.copy_(w if scale is None else w * scale[:, None])
        if b is not None:
            out.bias.copy_(b if scale is None else b * scale)
    return out


# --------------------------------------------------------------------------------------------
# CLIP
# --------------------------------------------------------------------------------------------


class _ClipEmbed(nn.Module):
    """CLIP's patch + class + position embeddings followed by ``pre_layrnorm``, the LayerNorm
    ``CLIPVisionModel`` applies before its first encoder layer (one module, so the counter sees it)."""

    def __init__(self, embeddings: nn.Module, pre_layrnorm: nn.Module):
        super().__init__()
        self.embeddings = embeddings
        self.pre_layrnorm = pre_layrnorm

    def forward(self, pixels: torch.Tensor, interpolate_pos_encoding: bool) -> torch.Tensor:
        return self.pre_layrnorm(self.embeddings(pixels, interpolate_pos_encoding=interpolate_pos_encoding))


class ClipTrunk(PreNormTrunk):
    """CLIP ViT towers (LLaVA-1.5's ViT-L/14-336): conv patch embedding without bias, class token,
    learned position table (bicubically interpolated off the native size), pre-LN, quick-GELU MLP.

    ``post_norm`` is CLIP's ``post_layernorm``. ``CLIPVisionModel`` itself applies it to the class
    token only (the pooled output); here it runs over every token, which costs no MACs and which the
    paper convention excludes anyway.
    """

    prefix_tokens = 1

    def __init__(self, spec, weights: str | None = None, attn: str = "sdpa"):
        super().__init__(spec)
        from transformers import CLIPVisionConfig, CLIPVisionModel

        settings = dict(image_size=spec.image_size, hidden_act="quick_gelu", layer_norm_eps=1e-5)
        hf = build_tower(CLIPVisionModel, CLIPVisionConfig, spec, weights, attn, **settings)
        self.adopt(hf, _ClipEmbed(hf.embeddings, hf.pre_layrnorm), hf.encoder.layers, hf.post_layernorm)


# --------------------------------------------------------------------------------------------
# InternViT
# --------------------------------------------------------------------------------------------


class InternVitTrunk(Trunk):
    """InternViT-300M (InternVL's small tower) through ``InternVLVisionModel``: conv patch
    embedding, class token, learned position table (bicubically interpolated by the embeddings
    whenever the grid is not the native one), pre-LN layers with layer scale (lambda_1, lambda_2),
    exact-GELU MLP, qkv biases, no qk-norm. A preset with ``norm="rmsnorm"`` is InternViT-6B: RMSNorm
    layers, RMS qk-norm over the full width, no qkv biases (its released config's values).

    The 300M tower has no final norm (``use_mean_pooling=True`` makes ``layernorm`` an identity;
    InternVL's projector starts with its own LayerNorm), so ``post_norm`` is ``nn.Identity``.
    """

    prefix_tokens = 1

    def __init__(self, spec, weights: str | None = None, attn: str = "sdpa"):
        super().__init__(spec)
        from transformers.models.internvl import InternVLVisionConfig, InternVLVisionModel

        # the values of OpenGVLab's InternViT-300M-448px as converted to transformers; a preset with
        # norm="rmsnorm" is InternViT-6B (RMSNorm, qk-norm over the full width, no qkv bias)
        six_b = spec.norm == "rmsnorm"
        settings = dict(
            image_size=spec.image_size,
            hidden_act="gelu",
            attention_bias=not six_b,
            use_qk_norm=six_b,
            norm_type="rms_norm" if six_b else "layer_norm",
            layer_norm_eps=1e-6,
            layer_scale_init_value=0.1,
            use_mean_pooling=True,
            use_absolute_position_embeddings=True,
        )
        hf = build_tower(InternVLVisionModel, InternVLVisionConfig, spec, weights, attn, **settings)
        self.adopt(hf, hf.embeddings, hf.encoder.layer, nn.Identity() if isinstance(hf.layernorm, nn.Identity) else hf.layernorm)

    def embed_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        # the embeddings interpolate the table themselves when the grid differs from the native one
        return self.embed(pixels)

    def run_layer(self, i: int, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        return self.layers[i](x)

    def layer_parts(self, k: int) -> LayerParts:
        """Layer k's parts with its layer scales folded in: ``o`` is lambda_1 * projection_layer and
        ``fc2`` is lambda_2 * fc2 (new Linear copies), so a reused compressor's branches start out
        computing exactly what layer k's residual branches add."""
        layer = self.layers[k]
        a, mlp = layer.attention, layer.mlp
        o, fc2 = _linear_copy(a.projection_layer, scale=layer.lambda_1), _linear_copy(mlp.fc2, scale=layer.lambda_2)
        return LayerParts(
            norm1=layer.layernorm_before,
            q=a.q_proj,
            k=a.k_proj,
            v=a.v_proj,
            o=o,
            norm2=layer.layernorm_after,
            fc1=mlp.fc1,
            fc2=fc2,
            act=mlp.activation_fn,
            eps=getattr(layer.layernorm_before, "eps", None) or layer.layernorm_before.variance_epsilon,
        )


# --------------------------------------------------------------------------------------------
# Qwen2.5-VL
# --------------------------------------------------------------------------------------------


class _QwenGrid:
    """Qwen2.5-VL's window bookkeeping for one (h, w) token grid, as small CPU integer tensors.

    ``order[j]`` is the row-major index of the token Qwen puts at position j of its sequence
    (2x2 merge units, windows of ``window_size`` pixels, both row-major); ``inverse`` undoes it;
    ``positions`` (N, 2) are the (row, col) of each token in that order, for the 2D rotary table;
    ``cu_windows`` are the window boundaries (cumulative token counts, ``int32`` like Qwen's).
    """

    def __init__(self, h: int, w: int, merge: int, window_size: int, patch: int):
        from transformers.vision_utils import get_vision_position_ids, get_vision_window_index

        thw = torch.tensor([[1, h, w]])
        # Qwen's own sequence order: merge-unit major (its processor's patch order) ...
        pos = get_vision_position_ids(thw, merge)
        merge_major = (pos[:, 0] * w + pos[:, 1]).reshape(-1, merge * merge)
        # ... then merge units regrouped window by window
        window_index, cu_windows = get_vision_window_index(
            thw, spatial_merge_size=merge, window_size=window_size, patch_size=patch
        )
        self.n = h * w
        self.order = merge_major[window_index].reshape(-1)
        self.inverse = torch.argsort(self.order)
        self.positions = torch.stack([self.order // w, self.order % w], dim=-1)
        self.cu_windows = cu_windows.to(torch.int32)
        self.cu_full = torch.tensor([0, self.n], dtype=torch.int32)

    def cu(self, full: bool, batch: int) -> torch.Tensor:
        """Segment boundaries for ``batch`` images packed into one sequence (Qwen's packing)."""
        one = self.cu_full if full else self.cu_windows
        if batch == 1:
            return one
        starts = [one[:-1] + b * self.n for b in range(batch)]
        return torch.cat(starts + [torch.tensor([batch * self.n], dtype=torch.int32)])


class Qwen25VlTrunk(Trunk):
    """The Qwen2.5-VL vision transformer (``Qwen2_5_VisionTransformerPretrainedModel``): Conv3d patch
    embedding over 2 identical frames, 2D rotary embeddings, RMSNorm + SwiGLU blocks, window
    attention (windows of ``window_size`` = 112 px = 8x8 patches) except in the full-attention blocks
    ``fullatt_block_indexes`` (7, 15, 23, 31).

    Tokens travel between layers in plain row-major order. ``run_layer`` reorders them into Qwen's
    sequence order for the current grid (merge units, then windows: the order Qwen's own forward
    uses), runs the block with that grid's rotary table and segment boundaries, and orders them back
    (gathers, priced 0). The grid must have even sides (Qwen's 2x2 merge units); after an in-ViT
    compressor Qwen's window rule is applied to the halved grid.

    Qwen's own merger is not run (the variant's connector replaces it) and its model has no norm
    before the merger other than the merger's ``ln_q``, so ``post_norm`` is ``nn.Identity``.
    """

    def __init__(self, spec, weights: str | None = None, attn: str = "sdpa"):
        super().__init__(spec)
        from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import Qwen2_5_VLVisionConfig
        from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel

        cfg = Qwen2_5_VLVisionConfig(
            depth=spec.layers,
            hidden_size=spec.hidden,
            intermediate_size=spec.mlp,
            num_heads=spec.heads,
            patch_size=spec.patch,
            temporal_patch_size=2,
            spatial_merge_size=2,
            window_size=112,
            fullatt_block_indexes=[7, 15, 23, 31],
            hidden_act="silu",
            out_hidden_size=spec.hidden,  # the merger is never run; keep it small
        )
        hf = from_config_or_weights(Qwen2_5_VisionTransformerPretrainedModel, cfg, weights, attn)
        hf.merger = nn.Identity()  # unused: dropping it keeps its weights out of memory measurements
        self.set_hf(hf)
        c = hf.config
        self.merge = c.spatial_merge_size
        self.temporal = c.temporal_patch_size
        self.window_size = c.window_size
        self.full_attention = frozenset(c.fullatt_block_indexes)
        self.embed = tag(hf.patch_embed, "macs_only")
        self.rotary = hf.rotary_pos_emb
        self.layers = hf.blocks
        self.post_norm = nn.Identity()
        self._input_grid: tuple[int, int] | None = None  # of the current forward, for error messages
        self._grids: dict[tuple[int, int], _QwenGrid] = {}
        self._rope: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def _grid(self, grid: tuple[int, int]) -> _QwenGrid:
        h, w = grid
        if h % self.merge or w % self.merge:
            came_from = ""
            if self._input_grid is not None and grid != self._input_grid:
                came_from = f" (the {self._input_grid[0]}x{self._input_grid[1]} input grid halved by the in-ViT compressor)"
            raise UhdProfileError(
                f"{self.spec.name}: token grid {h}x{w}{came_from} has a side that is not a multiple of "
                f"{self.merge}, but Qwen2.5-VL's windows are made of {self.merge}x{self.merge} merge units; use a "
                f"resolution that is a multiple of {self.merge * self.spec.patch} px "
                f"({2 * self.merge * self.spec.patch} px with an in-ViT compressor)"
            )
        if grid not in self._grids:
            self._grids[grid] = _QwenGrid(h, w, self.merge, self.window_size, self.spec.patch)
        return self._grids[grid]

    def embed_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        b, c, H, W = pixels.shape
        p, t = self.spec.patch, self.temporal
        h, w = H // p, W // p
        self._input_grid = (h, w)
        self._grid((h, w))  # fail early on a grid Qwen cannot window
        # Qwen's processor repeats a still image into `t` frames and flattens each patch as
        # (channel, frame, row, col); patches here are taken row-major over the grid
        x = pixels.reshape(b, c, h, p, w, p).permute(0, 2, 4, 1, 3, 5)
        x = x.unsqueeze(4).expand(b, h, w, c, t, p, p).reshape(b * h * w, c * t * p * p)
        # the rotary tables are built once per grid per forward, as in Qwen's own forward
        self._rope = {}
        return self.embed(x).reshape(b, h * w, -1)

    def _rotary(self, g: _QwenGrid, grid: tuple[int, int], x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if grid not in self._rope:
            self._rope[grid] = self.rotary(x, g.positions.to(x.device))
        return self._rope[grid]

    def run_layer(self, i: int, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        g = self._grid(grid)
        b, n, d = x.shape
        cos, sin = self._rotary(g, grid, x)
        seq = x[:, g.order.to(x.device)].reshape(b * n, d)
        # boundaries stay on the CPU: Qwen splits the packed sequence with `.tolist()` of them
        cu = g.cu(full=i in self.full_attention, batch=b)
        seq = self.layers[i](seq, cu_seqlens=cu, position_embeddings=(cos.repeat(b, 1), sin.repeat(b, 1)))
        return seq.reshape(b, n, d)[:, g.inverse.to(x.device)]

    def layer_parts(self, k: int) -> LayerParts:
        """Block k's parts; the fused ``qkv`` Linear(d, 3d) is split into three new Linear(d, d)
        copies (Qwen's qkv output is laid out q | k | v)."""
        layer = self.layers[k]
        a, mlp = layer.attn, layer.mlp
        d = self.spec.hidden
        q, k_, v = (_linear_copy(a.qkv, rows=slice(j * d, (j + 1) * d)) for j in range(3))
        return LayerParts(
            norm1=layer.norm1,
            q=q,
            k=k_,
            v=v,
            o=a.proj,
            norm2=layer.norm2,
            fc1=mlp.up_proj,
            fc2=mlp.down_proj,
            gate=mlp.gate_proj,
            act=mlp.act_fn,
            eps=layer.norm1.variance_epsilon,
        )


# --------------------------------------------------------------------------------------------
# SigLIP-2 NaFlex
# --------------------------------------------------------------------------------------------


class _NaflexTableResize(nn.Module):
    """Siglip2's resize of its square position table to the input grid, in a module of its own.

    Siglip2 resizes with a (tokens x table) weight matrix times the table, a matmul; tagged
    "exclude", the paper convention leaves it uncharged like the bicubic resize of the fixed-size
    towers (the ``macs`` and ``flops`` conventions still count it).
    """

    position_embedding: Any
    resize: Any

    def __init__(self, embeddings: Any):
        super().__init__()
        self.position_embedding = embeddings.position_embedding
        self.side = embeddings.position_embedding_size
        self.resize = embeddings.resize_positional_embeddings  # a staticmethod of Siglip2VisionEmbeddings

    def forward(self, spatial_shapes: torch.Tensor, tokens: int) -> torch.Tensor:
        table = self.position_embedding.weight.reshape(self.side, self.side, -1)
        return self.resize(table, spatial_shapes, max_length=tokens)


class _NaflexEmbed(nn.Module):
    """``Siglip2VisionEmbeddings.forward`` (linear patch embedding + resized position table), with
    the table resize split out so the counter can tell it from the patch embedding."""

    patch_embedding: Any
    position_resize: Any

    def __init__(self, embeddings: Any):
        super().__init__()
        self.patch_embedding = embeddings.patch_embedding
        self.position_resize = tag(_NaflexTableResize(embeddings), "exclude")

    def forward(self, patches: torch.Tensor, spatial_shapes: torch.Tensor) -> torch.Tensor:
        x = self.patch_embedding(patches.to(self.patch_embedding.weight.dtype))
        return x + self.position_resize(spatial_shapes, patches.shape[1])


class Siglip2NaflexTrunk(PreNormTrunk):
    """SigLIP-2 NaFlex towers (``Siglip2VisionModel``): pre-patchified input, linear patch
    embedding, a 16x16 position table resized (bilinear, antialiased) to each input's grid,
    pre-LN layers, tanh-GELU MLP, post-LN.

    One view has no padding, so layers get no attention mask: ``Siglip2VisionModel`` itself turns an
    all-ones ``pixel_attention_mask`` into ``None`` under sdpa and eager, so nothing is lost.
    """

    def __init__(self, spec, weights: str | None = None, attn: str = "sdpa"):
        super().__init__(spec)
        from transformers import Siglip2VisionConfig, Siglip2VisionModel

        settings = dict(num_patches=256, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6, vision_use_head=False)
        hf = build_tower(Siglip2VisionModel, Siglip2VisionConfig, spec, weights, attn, **settings)
        self.adopt(hf, _NaflexEmbed(hf.embeddings), hf.encoder.layers, hf.post_layernorm)

    def embed_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        b, c, H, W = pixels.shape
        p = self.spec.patch
        h, w = H // p, W // p
        # Siglip2's image processor flattens each patch as (row, col, channel), patches row-major
        patches = pixels.reshape(b, c, h, p, w, p).permute(0, 2, 4, 3, 5, 1).reshape(b, h * w, p * p * c)
        # integer bookkeeping stays on the CPU (the counter keeps it real on meta runs)
        spatial_shapes = torch.tensor([[h, w]] * b, dtype=torch.long)
        return self.embed(patches, spatial_shapes)
