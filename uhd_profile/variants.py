"""Variants: a frozen description (``VariantSpec``) and the module that runs it (``build_variant``).

A variant is an encoder preset, one input view of H x W pixels, and a compression plan: an optional
in-ViT compressor after encoder layer index ``depth`` (0-based: depth 6 means 7 layers at N tokens,
the rest at N/4), then a post-ViT pixel-unshuffle MLP connector of ratio ``post_ratio`` (1 = no
connector, the ViT alone; 4 = one 2x2 stage; 16 = two).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import torch
from torch import nn

from .compressors import COMPRESSORS, Connector, check_grid, get_compressor, reuse_init_
from .encoders import DEFAULT_ENCODER, get_encoder
from .errors import UhdProfileError

V4_COMPRESSOR = "window-attn-reused-mlp"
V4_DEPTH = 6
ALIASES = ("baseline", "v4")
POST_RATIOS = (1, 4, 16)
LLM_HIDDEN = 4096  # Qwen3-8B, the paper's LLM


@dataclass(frozen=True)
class VariantSpec:
    """Frozen identity of one variant; ``.id`` is its stable join key.

    Fields: ``encoder`` preset name; ``resolution`` (H, W) in pixels (None: the encoder's native
    square size); ``compressor`` in-ViT design name or None (post-ViT compression only);
    ``depth`` encoder layer index after which the compressor runs; ``post_ratio`` connector ratio
    (None: the design's own, 16 without an in-ViT compressor and 4 with one, so the total is 16x);
    ``llm_hidden`` connector output width; ``encoding`` ``"view"`` (one view; slicing of whole
    images comes with the slicing issue).
    """

    encoder: str = DEFAULT_ENCODER
    resolution: tuple[int, int] | None = None
    compressor: str | None = None
    depth: int | None = None
    post_ratio: int | None = None
    llm_hidden: int = LLM_HIDDEN
    encoding: str = "view"

    def __post_init__(self):
        enc = get_encoder(self.encoder)
        if self.resolution is not None:
            object.__setattr__(self, "resolution", tuple(int(x) for x in self.resolution))
        h, w = self.size
        for side, name in ((h, "height"), (w, "width")):
            if side <= 0 or side % enc.patch:
                raise UhdProfileError(
                    f"resolution {h}x{w}: {name} {side} is not a positive multiple of {self.encoder}'s patch size {enc.patch}"
                )
        gm = enc.grid_multiple
        for stage, (gh, gw) in (("at the input", self.grid), ("after the in-ViT compressor", self.grid_after_vit)):
            if gm > 1 and (gh % gm or gw % gm):
                step = enc.patch * gm * (2 if self.compressor else 1)
                raise UhdProfileError(
                    f"resolution {h}x{w} gives a {gh}x{gw} token grid {stage}; {self.encoder} needs grid sides that are "
                    f"multiples of {gm}: use a resolution that is a multiple of {step} px"
                )
        if self.compressor is not None:
            get_compressor(self.compressor)
            if self.depth is None:
                raise UhdProfileError(f"compressor {self.compressor!r} needs a depth (0..{enc.layers - 1})")
            if not 0 <= self.depth < enc.layers:
                raise UhdProfileError(f"depth {self.depth} is out of range for {self.encoder}: valid depths are 0..{enc.layers - 1}")
            check_grid(self.grid, f"compressor {self.compressor}")
        elif self.depth is not None:
            raise UhdProfileError(f"depth {self.depth} given without a compressor; add --compressor NAME (or use --variant v4)")
        if self.post_ratio is not None and self.post_ratio not in POST_RATIOS:
            raise UhdProfileError(f"post-ratio {self.post_ratio} is not valid; valid: {', '.join(map(str, POST_RATIOS))}")
        if enc.released and self.compressor not in (None, V4_COMPRESSOR):
            raise UhdProfileError(
                f"{self.encoder} is the released model: it has only its own merger ({V4_COMPRESSOR}); use --variant baseline or v4"
            )
        if self.encoding != "view":
            raise UhdProfileError(f"encoding {self.encoding!r} is not available yet; valid: view")
        if self.llm_hidden <= 0:
            raise UhdProfileError(f"llm_hidden {self.llm_hidden} must be positive")
        self._check_connector()

    # -- derived geometry ----------------------------------------------------------------------
    @property
    def enc(self):
        return get_encoder(self.encoder)

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) in pixels."""
        if self.resolution is None:
            return (self.enc.image_size, self.enc.image_size)
        return self.resolution

    @property
    def grid(self) -> tuple[int, int]:
        """Patch grid (rows, cols) of the view."""
        p = self.enc.patch
        return (self.size[0] // p, self.size[1] // p)

    @property
    def in_vit_ratio(self) -> int:
        return 4 if self.compressor else 1

    @property
    def ratio(self) -> int:
        """The post-ViT ratio actually used."""
        if self.post_ratio is not None:
            return self.post_ratio
        return 16 // self.in_vit_ratio

    @property
    def grid_after_vit(self) -> tuple[int, int]:
        h, w = self.grid
        return (h // 2, w // 2) if self.compressor else (h, w)

    def connector_fits(self, ratio: int | None = None) -> bool:
        ratio = self.ratio if ratio is None else ratio
        side = {1: 1, 4: 2, 16: 4}[ratio]
        h, w = self.grid_after_vit
        return h % side == 0 and w % side == 0

    def _check_connector(self) -> None:
        if not self.connector_fits():
            h, w = self.grid_after_vit
            side = {4: 2, 16: 4}[self.ratio]
            raise UhdProfileError(
                f"a {self.ratio}x post-ViT connector needs a token grid divisible by {side}, but "
                f"{self.id_plan()} leaves {h}x{w} tokens after the ViT; use --post-ratio 1 (the ViT alone, "
                f"the paper's scope) or a resolution that makes the grid divisible"
            )

    @property
    def tokens_in(self) -> int:
        """Tokens entering the first encoder layer (class tokens included)."""
        h, w = self.grid
        return h * w + self.enc.prefix_tokens

    @property
    def tokens_llm(self) -> int:
        """Tokens leaving the variant (what the LLM would see)."""
        h, w = self.grid_after_vit
        n = h * w // self.ratio
        return n + (self.enc.prefix_tokens if self.ratio == 1 else 0)

    def id_plan(self) -> str:
        return "baseline" if self.compressor is None else f"{self.compressor}@{self.depth}"

    @property
    def id(self) -> str:
        """Stable slug, e.g. ``siglip2-so400m-p14@980x980/window-attn-reused-mlp@6/post4``."""
        h, w = self.size
        s = f"{self.encoder}@{h}x{w}/{self.id_plan()}/post{self.ratio}"
        if self.ratio > 1 and self.llm_hidden != LLM_HIDDEN:
            s += f"/llm{self.llm_hidden}"
        return s

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(id=self.id, post_ratio=self.ratio, resolution=list(self.size), tokens_in=self.tokens_in,
                 tokens_llm=self.tokens_llm)
        return d

    @classmethod
    def alias(cls, name: str, depth: int | None = None, **kw) -> "VariantSpec":
        """``baseline`` (post-ViT 16x) or ``v4`` (window-attn-reused-mlp at depth 6, or ``depth``, then 4x)."""
        if name == "baseline":
            if depth is not None:
                raise UhdProfileError("depth does not apply to the baseline variant (no in-ViT compression)")
            return cls(**kw)
        if name == "v4":
            return cls(compressor=V4_COMPRESSOR, depth=V4_DEPTH if depth is None else depth, **kw)
        raise UhdProfileError(f"unknown variant {name!r}; valid variants: {', '.join(ALIASES)} (or --compressor NAME --depth K)")

    def with_(self, **kw) -> "VariantSpec":
        return replace(self, **kw)


class VariantModel(nn.Module):
    """embed -> layers[0..depth] -> compressor -> layers[depth+1..] -> post_norm -> connector."""

    def __init__(self, spec: VariantSpec, trunk, compressor: nn.Module | None, connector: nn.Module | None):
        super().__init__()
        self.spec = spec
        self.__dict__["trunk"] = trunk  # adopted children below; the adapter itself stays unregistered
        for name, child in trunk.named_children():
            self.add_module(name, child)
        self.compressor = compressor
        self.connector = connector

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        s, t = self.spec, self.trunk
        grid = s.grid
        x = t.embed_pixels(pixel_values)
        p = t.prefix_tokens
        for i in range(s.enc.layers):
            x = t.run_layer(i, x, grid)
            if self.compressor is not None and i == s.depth:
                prefix, tokens = x[:, :p], x[:, p:]
                tokens = self.compressor(tokens, grid)
                grid = (grid[0] // 2, grid[1] // 2)
                x = torch.cat([prefix, tokens], dim=1) if p else tokens
        x = t.post_norm(x)
        if self.connector is not None:
            x = self.connector(x[:, p:], grid)
        return x


class ReleasedVariantModel(nn.Module):
    """The released MiniCPM-V 4.6 vision model run whole, merger on (v4) or off (baseline),
    followed by our connector when a post-ViT ratio is asked for."""

    def __init__(self, spec: VariantSpec, model: nn.Module, connector: nn.Module | None):
        super().__init__()
        self.spec = spec
        self.__dict__["hf"] = model
        self.embed = model.embeddings
        self.layers = model.encoder.layers
        self.compressor = model.vit_merger
        self.post_norm = model.post_layernorm
        self.connector = connector
        model.config.insert_layer_id = spec.depth if spec.compressor else model.config.insert_layer_id

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        h, w = self.spec.grid
        sizes = torch.tensor([[h, w]], dtype=torch.int32).repeat(pixel_values.shape[0], 1)
        x = self.hf(pixel_values, target_sizes=sizes, use_vit_merger=self.spec.compressor is not None).last_hidden_state
        if self.connector is not None:
            b = pixel_values.shape[0]
            x = self.connector(x.reshape(b, -1, x.shape[-1]), self.spec.grid_after_vit)
        return x


def build_variant(spec: VariantSpec, device: str | torch.device = "cpu", weights: str | None = None,
                  attn: str = "sdpa", reuse_init: bool = True) -> nn.Module:
    """Build the runnable module for ``spec`` on ``device`` (``"meta"``: shapes only, no memory).

    In-ViT compressors whose design reuses layer k are initialised from it (paper-spec 7) when
    ``reuse_init``; otherwise they keep their own random initialisation.
    """
    enc = spec.enc
    with torch.device(device):
        built = enc.build(weights=weights, attn=attn)
        connector = Connector(enc.hidden, spec.llm_hidden, spec.ratio) if spec.ratio > 1 else None
        if enc.released:
            model = ReleasedVariantModel(spec, built, connector)
        else:
            compressor = None
            if spec.compressor is not None:
                design = COMPRESSORS[spec.compressor]
                compressor = design.factory(built.geometry(spec.depth))
                if design.reuse and reuse_init:
                    reuse_init_(compressor, built.layer_parts(spec.depth))
            model = VariantModel(spec, built, compressor, connector)
    return model.eval()


def example_input(spec: VariantSpec, batch: int = 1, device: str | torch.device = "cpu",
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A (batch, 3, H, W) pixel tensor for ``spec`` (empty on meta, random elsewhere)."""
    h, w = spec.size
    if torch.device(device).type == "meta":
        return torch.empty(batch, 3, h, w, device="meta", dtype=dtype)
    return torch.randn(batch, 3, h, w, device=device, dtype=dtype)
