"""Variants: a frozen description (``VariantSpec``) and the module that runs it (``build_variant``).

A variant is an encoder preset, an input, and a compression plan: an optional in-ViT compressor
after encoder layer index ``depth`` (0-based: depth 6 means 7 layers at N tokens, the rest at N/4),
then a post-ViT pixel-unshuffle MLP connector of ratio ``post_ratio`` (1 = no connector, the ViT
alone; 4 = one 2x2 stage; 16 = two).

The input is one view of W x H pixels (``encoding="view"``), or a whole W x H image turned into
views by ``uhd_profile.model.slicing``: one resized view (``"global"``) or a thumbnail plus a grid of
slices (``"sliced"``). Several views run either ``batched`` (the thumbnail in one call, the
equal-sized slices as one batch in another) or ``packed`` (all views in one token sequence,
attention kept within each view, compressor and connector applied per view on its own grid).
Both execute the same arithmetic, so they count the same FLOPs.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from uhd_profile.errors import UhdProfileError
from uhd_profile.model.compressors import COMPRESSORS, Connector, check_grid, get_compressor, reuse_init_
from uhd_profile.model.encoders import DEFAULT_ENCODER, ENCODERS, EncoderSpec, get_encoder
from uhd_profile.model.slicing import (
    MAX_SLICE_NUMS,
    SCALE_RESOLUTION,
    GlobalView,
    Slicing,
    check_params,
    global_resize,
    slice_image,
)
from uhd_profile.units import Size, parse_resolution

V4_COMPRESSOR = "window-attn-reused-mlp"
V4_DEPTH = 6
ALIASES = ("baseline", "v4")
POST_RATIOS = (1, 4, 16)
ENCODINGS = ("view", "global", "sliced")
PACKINGS = ("batched", "packed")
LLM_HIDDEN = 4096  # Qwen3-8B, the paper's LLM
MAX_VIEW_SIDE = 1 << 20
"""The longest view side a variant takes (px): 1,048,576 px a side is 10^12 pixels, already far
past any device's memory (which the measuring paths say in one line); much past it the pixel
tensor's size overflows a tensor's storage arithmetic."""
SLICING_DEFAULTS = {"packing": "batched", "max_slices": MAX_SLICE_NUMS, "scale_resolution": SCALE_RESOLUTION}
"""Defaults of the several-view fields: a spec names them only where it differs."""
_DICT_KEY = {"scale_resolution": "scale_resolution_px"}  # attribute -> key in to_dict (unit in the name)


def nearest_view_sizes(view: Size, patch: int, unit: int, floors: bool = False) -> tuple[Size, ...]:
    """The view sizes nearest ``view`` whose token grid sides (side // ``patch``) are multiples of
    ``unit``, each side rounded down and up: ``(down, up)`` as ``Size`` (width first), a side that
    already fits kept as it is, a size below one unit left out. ``floors``: the tower floors its
    grid (any side works); else a side must be an exact multiple of ``patch``."""
    step = patch * unit

    def fits(side: int) -> bool:
        return (floors or side % patch == 0) and side >= step and (side // patch) % unit == 0

    def rounded(side: int) -> tuple[int, int]:
        if fits(side):
            return side, side
        down = side // step * step
        return (down if down >= step else step), (side // step + 1) * step

    (wd, wu), (hd, hu) = rounded(view.width), rounded(view.height)
    return tuple(dict.fromkeys(s for s in (Size(wd, hd), Size(wu, hu)) if s != view))


@dataclass(frozen=True)
class VariantSpec:
    """Frozen identity of one variant; ``.id`` is its stable join key.

    Fields: ``encoder`` preset name; ``resolution`` a :class:`~uhd_profile.units.Size` (width x
    height, px; also accepted: ``"WxH"``, a side ``R`` for a square, ``"native"``/None for the
    encoder's native square size): the view for ``encoding="view"``, the whole image for
    ``"global"``/``"sliced"`` (any positive size; the views come from ``uhd_profile.model.slicing``);
    ``compressor`` in-ViT design name or None (post-ViT compression only); ``depth`` encoder layer
    index after which the compressor runs; ``post_ratio`` connector ratio (None: the design's own,
    16 without an in-ViT compressor and 4 with one, so the total is 16x); ``llm_hidden`` connector
    output width; ``encoding`` ``"view"`` | ``"global"`` | ``"sliced"``; ``packing`` how several views
    run, ``"batched"`` | ``"packed"``; ``max_slices`` (M) and ``scale_resolution`` (S, px) the slicing
    parameters of global/sliced encoding (views aligned to patch x 4 px).

    A bare ``(a, b)`` tuple is refused as a resolution: it cannot say which side is the width.
    """

    encoder: str = DEFAULT_ENCODER
    resolution: Size | int | str | None = None  # normalised to Size | None on construction
    compressor: str | None = None
    depth: int | None = None
    post_ratio: int | None = None
    llm_hidden: int = LLM_HIDDEN
    encoding: str = "view"
    packing: str = "batched"
    max_slices: int = MAX_SLICE_NUMS
    scale_resolution: int = SCALE_RESOLUTION

    def __post_init__(self) -> None:
        enc = get_encoder(self.encoder)
        object.__setattr__(self, "resolution", parse_resolution(self.resolution))
        if self.encoding not in ENCODINGS:
            raise UhdProfileError(f"encoding {self.encoding!r} is not valid; valid: {', '.join(ENCODINGS)}")
        if self.packing not in PACKINGS:
            raise UhdProfileError(f"packing {self.packing!r} is not valid; valid: {', '.join(PACKINGS)}")
        size = self.size
        if self.encoding == "view":
            if self.packing != "batched":
                raise UhdProfileError(
                    f"packing {self.packing!r} applies to several views; use encoding global or sliced, "
                    f"or packing batched for one view"
                )
            if (self.max_slices, self.scale_resolution) != (MAX_SLICE_NUMS, SCALE_RESOLUTION):
                raise UhdProfileError("max_slices and scale_resolution apply to encoding global or sliced, not to one view")
            self._check_view(size, f"resolution {size}")
        else:
            check_params(self.max_slices, self.scale_resolution, self.align)
            if self.packing == "packed" and not enc.released and enc.trunk not in PACKABLE_TRUNKS:
                raise UhdProfileError(
                    f"packing 'packed' is not available for {self.encoder} (its layers do not run through uhd-profile's "
                    f"per-view attention); use packing batched, or one of: {', '.join(packable_encoders())}"
                )
            for view in dict.fromkeys(self.view_sizes):
                self._check_view(view, f"view {view} of the {size} image ({self.encoding})")
        if self.compressor is not None:
            get_compressor(self.compressor)
            if self.depth is None:
                raise UhdProfileError(f"compressor {self.compressor!r} needs a depth (0..{enc.layers - 1})")
            if not 0 <= self.depth < enc.layers:
                raise UhdProfileError(
                    f"depth {self.depth} is out of range for {self.encoder}: valid depths are 0..{enc.layers - 1}"
                )
            for grid, view in dict.fromkeys(zip(self.view_grids, self.view_sizes)):
                rows, cols = grid
                if rows % 2 or cols % 2:
                    raise UhdProfileError(
                        f"compressor {self.compressor} at {size} needs an even token grid for 2x2 windows, got "
                        f"{cols}x{rows} tokens (width x height) from the {view} view; {self._fix(view)}"
                    )
                check_grid(grid, f"compressor {self.compressor} at {size}")
        elif self.depth is not None:
            raise UhdProfileError(f"depth {self.depth} given without a compressor; add --compressor NAME (or use --variant v4)")
        if self.post_ratio is not None and self.post_ratio not in POST_RATIOS:
            raise UhdProfileError(f"post-ratio {self.post_ratio} is not valid; valid: {', '.join(map(str, POST_RATIOS))}")
        if enc.released and self.compressor not in (None, V4_COMPRESSOR):
            raise UhdProfileError(
                f"{self.encoder} is the released model: it has only its own merger ({V4_COMPRESSOR}); "
                "use --variant baseline or v4"
            )
        if self.llm_hidden <= 0:
            raise UhdProfileError(f"llm_hidden {self.llm_hidden} must be positive")
        self._check_connector()

    def _check_view(self, view: Size, label: str) -> None:
        """One view: at most ``MAX_VIEW_SIDE`` px a side (a larger input tensor cannot be made);
        at least one patch per side; an exact multiple of the patch (and of the trunk's grid unit)
        where the tower's patch embedding does not floor; the trunk's grid multiple before and
        after the in-ViT compressor."""
        enc = self.enc
        if max(view) > MAX_VIEW_SIDE:
            raise UhdProfileError(
                f"{label}: a view of {view} px cannot be built (its input tensor would be too large to address); "
                f"each side must be at most {MAX_VIEW_SIDE:,} px"
            )
        for side, name in ((view.width, "width"), (view.height, "height")):
            if side < enc.patch:
                raise UhdProfileError(
                    f"{label}: {name} {side} is smaller than {self.encoder}'s patch size {enc.patch} px; {self._fix(view)}"
                )
            if not enc.floors_input and side % enc.patch:
                raise UhdProfileError(
                    f"{label}: {name} {side} is not a multiple of {self.encoder}'s patch size {enc.patch} px "
                    f"(its patch embedding takes whole patches only); use a multiple of {enc.patch * enc.grid_multiple} px"
                    f"; {self._fix(view)}"
                )
        gm = enc.grid_multiple
        rows, cols = view.height // enc.patch, view.width // enc.patch
        after = (rows // 2, cols // 2) if self.compressor else (rows, cols)
        for stage, (sr, sc) in (("at the input", (rows, cols)), ("after the in-ViT compressor", after)):
            if gm > 1 and (sr % gm or sc % gm):
                step = enc.patch * gm * (2 if self.compressor else 1)
                raise UhdProfileError(
                    f"{label} gives a {sc}x{sr} token grid (width x height) {stage}; {self.encoder} needs grid sides "
                    f"that are multiples of {gm}: use a resolution that is a multiple of {step} px; {self._fix(view)}"
                )

    def _grid_unit(self, ratio: int | None = None) -> int:
        """What every token-grid side of a view must be a multiple of for this spec: the trunk's
        grid multiple, 2 for the in-ViT compressor's 2x2 windows (and the multiple again after it
        halves the grid), and the connector's merge side (``ratio``, default this spec's) after the ViT."""
        gm = self.enc.grid_multiple
        halves = 2 if self.compressor else 1
        merge_side = {1: 1, 4: 2, 16: 4}[self.ratio if ratio is None else ratio]
        return math.lcm(gm, halves * gm, halves, halves * merge_side)

    def _fix(self, view: Size, ratio: int | None = None) -> str:
        """``nearest valid: AxB or CxD`` (width first): the view sizes closest to ``view`` that this
        spec takes; for global/sliced encoding, which views come from the slicing, what to change."""
        if self.encoding != "view":
            return "change the image size, --max-slices or --scale-resolution"
        sizes = nearest_view_sizes(view, self.enc.patch, self._grid_unit(ratio), self.enc.floors_input)
        return "nearest valid: " + " or ".join(map(str, sizes))

    # -- derived geometry ----------------------------------------------------------------------
    @property
    def enc(self) -> EncoderSpec:
        return get_encoder(self.encoder)

    @property
    def size(self) -> Size:
        """Width x height in pixels: the view, or the whole image for global/sliced encoding."""
        if self.resolution is None:
            return Size.square(self.enc.image_size)
        assert isinstance(self.resolution, Size)  # normalised by __post_init__
        return self.resolution

    @property
    def align(self) -> int:
        """View sides of global/sliced encoding are multiples of this (patch x 4 px: 56 at patch 14)."""
        return self.enc.patch * 4

    @property
    def slicing(self) -> Slicing | GlobalView | None:
        """``slicing.Slicing`` (sliced) or ``slicing.GlobalView`` (global) of the image; None for one view."""
        w, h = self.size
        if self.encoding == "sliced":
            return slice_image(w, h, self.max_slices, self.scale_resolution, self.align)
        if self.encoding == "global":
            return global_resize(w, h, self.max_slices, self.scale_resolution, self.align)
        return None

    @property
    def groups(self) -> tuple[tuple[int, Size], ...]:
        """The forward calls of the batched layout, as (views, size): the thumbnail (or the one
        view) first, then the equal-sized slices as one group. Views in this order are the
        encoding order (thumbnail, slices row-major)."""
        sl = self.slicing
        if sl is None:
            return ((1, self.size),)
        if isinstance(sl, GlobalView):
            return ((1, sl.size),)
        out = [(1, sl.thumbnail)]
        if sl.slices and sl.slice_size is not None:
            out.append((len(sl.slices), sl.slice_size))
        return tuple(out)

    @property
    def view_sizes(self) -> tuple[Size, ...]:
        """Width x height px of every view, in encoding order."""
        return tuple(size for k, size in self.groups for _ in range(k))

    @property
    def view_grids(self) -> tuple[tuple[int, int], ...]:
        """Patch grid (rows, cols) of every view, in encoding order (floored where the tower floors)."""
        p = self.enc.patch
        return tuple((v.height // p, v.width // p) for v in self.view_sizes)

    @property
    def grid(self) -> tuple[int, int]:
        """Patch grid (rows, cols) of the view (one-view encoding only; else see ``view_grids``)."""
        if self.encoding != "view":
            raise UhdProfileError(f"{self.id} has several views; its grids are .view_grids, not .grid")
        return self.view_grids[0]

    @property
    def in_vit_ratio(self) -> int:
        return 4 if self.compressor else 1

    @property
    def design_ratio(self) -> int:
        """The post-ViT ratio a variant of this tower has when none is given: the tower's family
        merge (``EncoderSpec.default_post_ratio``: 16 for the paper's towers, 4 for Qwen2.5-VL's and
        InternViT, 1 for LLaVA's CLIP and SigLIP), divided by the in-ViT compressor's 4x, so the
        total stays the family's where it can (and never below a 1:1 projector)."""
        return max(1, self.enc.default_post_ratio // self.in_vit_ratio)

    @property
    def ratio(self) -> int:
        """The post-ViT ratio actually used: ``post_ratio``, or ``design_ratio`` when it is None."""
        if self.post_ratio is not None:
            return self.post_ratio
        return self.design_ratio

    def _after_vit(self, grid: tuple[int, int]) -> tuple[int, int]:
        h, w = grid
        return (h // 2, w // 2) if self.compressor else (h, w)

    @property
    def grid_after_vit(self) -> tuple[int, int]:
        return self._after_vit(self.grid)

    def connector_fits(self, ratio: int | None = None) -> bool:
        ratio = self.ratio if ratio is None else ratio
        side = {1: 1, 4: 2, 16: 4}[ratio]
        return all(h % side == 0 and w % side == 0 for h, w in (self._after_vit(g) for g in self.view_grids))

    def _check_connector(self) -> None:
        if not self.connector_fits():
            side = {4: 2, 16: 4}[self.ratio]
            h, w = next(a for a in (self._after_vit(g) for g in self.view_grids) if a[0] % side or a[1] % side)
            view = next(v for g, v in zip(self.view_grids, self.view_sizes) if self._after_vit(g) == (h, w))
            raise UhdProfileError(
                f"a {self.ratio}x post-ViT connector needs a token grid divisible by {side}, but "
                f"{self.id_plan()} leaves {w}x{h} tokens (width x height) after the ViT; use --post-ratio 1 (the ViT "
                f"alone, the paper's scope) or a resolution that makes the grid divisible ({self._fix(view)})"
            )

    @property
    def tokens_in(self) -> int:
        """Tokens entering the first encoder layer (class tokens included), summed over views."""
        return sum(h * w + self.enc.prefix_tokens for h, w in self.view_grids)

    @property
    def tokens_llm(self) -> int:
        """Tokens leaving the variant (what the LLM would see), summed over views."""
        total = 0
        for grid in self.view_grids:
            h, w = self._after_vit(grid)
            total += h * w // self.ratio + (self.enc.prefix_tokens if self.ratio == 1 else 0)
        return total

    def id_plan(self) -> str:
        return "baseline" if self.compressor is None else f"{self.compressor}@{self.depth}"

    def id_encoding(self) -> str:
        """``sliced``, ``global``, plus ``-m<M>``/``-s<S>`` for non-default slicing and ``-packed``."""
        s = self.encoding
        if self.max_slices != MAX_SLICE_NUMS:
            s += f"-m{self.max_slices}"
        if self.scale_resolution != SCALE_RESOLUTION:
            s += f"-s{self.scale_resolution}"
        if self.packing != "batched":
            s += f"-{self.packing}"
        return s

    @property
    def id(self) -> str:
        """Stable slug, e.g. ``siglip2-so400m-p14@980x980/window-attn-reused-mlp@6/post4`` (one view) or
        ``siglip2-so400m-p14@1344x896/sliced/window-attn-reused-mlp@6/post4`` (a 1344 x 896 (WxH) image)."""
        enc = "" if self.encoding == "view" else f"/{self.id_encoding()}"
        s = f"{self.encoder}@{self.size}{enc}/{self.id_plan()}/post{self.ratio}"
        if self.ratio > 1 and self.llm_hidden != LLM_HIDDEN:
            s += f"/llm{self.llm_hidden}"
        return s

    def to_dict(self) -> dict[str, Any]:
        """The identity as JSON: ``encoder``, ``width_px``, ``height_px``, ``compressor``, ``depth``,
        ``post_ratio`` (resolved), ``llm_hidden``, ``encoding``, and ``packing``/``max_slices``/
        ``scale_resolution_px`` where they differ from the defaults (so one-view ids stay stable).
        ``from_dict`` inverts it."""
        w, h = self.size
        d: dict[str, Any] = {
            "encoder": self.encoder,
            "width_px": w,
            "height_px": h,
            "compressor": self.compressor,
            "depth": self.depth,
            "post_ratio": self.ratio,
            "llm_hidden": self.llm_hidden,
            "encoding": self.encoding,
        }
        for attr, default in SLICING_DEFAULTS.items():
            if getattr(self, attr) != default:
                d[_DICT_KEY.get(attr, attr)] = getattr(self, attr)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VariantSpec:
        """The spec of a ``to_dict`` mapping (unknown keys refused)."""
        keys = {
            "encoder",
            "width_px",
            "height_px",
            "compressor",
            "depth",
            "post_ratio",
            "llm_hidden",
            "encoding",
            *(_DICT_KEY.get(a, a) for a in SLICING_DEFAULTS),
        }
        extra = set(d) - keys
        if extra:
            raise UhdProfileError(f"variant spec has unknown fields {sorted(extra)}; valid: {sorted(keys)}")
        attrs = {v: k for k, v in _DICT_KEY.items()}
        kw = {attrs.get(k, k): d[k] for k in keys - {"width_px", "height_px"} if k in d}
        return cls(resolution=Size(int(d["width_px"]), int(d["height_px"])), **kw)

    def describe(self) -> dict[str, Any]:
        """``to_dict`` plus what it implies: ``id``, tokens in and to the LLM, and every view ("WxH")."""
        d = self.to_dict()
        d.update(id=self.id, tokens_in=self.tokens_in, tokens_llm=self.tokens_llm)
        if self.encoding != "view":
            d["views"] = [str(v) for v in self.view_sizes]
        return d

    @classmethod
    def alias(cls, name: str, depth: int | None = None, **kw: Any) -> VariantSpec:
        """``baseline`` (post-ViT 16x) or ``v4`` (window-attn-reused-mlp at depth 6, or ``depth``, then 4x)."""
        if name == "baseline":
            if depth is not None:
                raise UhdProfileError("depth does not apply to the baseline variant (no in-ViT compression)")
            return cls(**kw)
        if name == "v4":
            return cls(compressor=V4_COMPRESSOR, depth=V4_DEPTH if depth is None else depth, **kw)
        raise UhdProfileError(f"unknown variant {name!r}; valid variants: {', '.join(ALIASES)} (or --compressor NAME --depth K)")

    def with_(self, **kw: Any) -> VariantSpec:
        return replace(self, **kw)


# --------------------------------------------------------------------------------------------
# Several views: batched calls, or one packed sequence with attention kept within each view
# --------------------------------------------------------------------------------------------

#: trunks whose layers reach attention through transformers' attention interface, so a packed
#: sequence can be split per view there (Qwen2.5-VL's windowed layers are not; the released model
#: packs views natively)
PACKABLE_TRUNKS = ("SiglipTrunk", "ClipTrunk", "InternVitTrunk", "Siglip2NaflexTrunk")

# Token counts of the views of the packed sequence being run (None: one plain sequence).
_SEGMENTS: contextvars.ContextVar[tuple[int, ...] | None] = contextvars.ContextVar("uhd_segments", default=None)


def packable_encoders() -> list[str]:
    return [e.name for e in ENCODERS.values() if e.trunk in PACKABLE_TRUNKS or e.released]


def segmented_attention(
    module,
    query,
    key,
    value,
    attention_mask,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    backend: str = "sdpa",
    **kwargs,
):
    """A ``transformers`` attention function for packed sequences: q/k/v (B, heads, L, hd), the L
    tokens being the views of ``_SEGMENTS``; each view attends only within itself.

    Runs of equal-length consecutive views go through one attention call batched over the views
    (what a variable-length kernel does), so the work is sum_i n_i^2 per head, never (sum_i n_i)^2:
    the FLOPs counter prices each call as it executes. ``backend`` "sdpa" or "eager" (matmul,
    float32 softmax, matmul, as transformers' eager attention). Returns ((B, L, heads, hd), None).
    """
    if attention_mask is not None:
        raise ValueError("segmented attention takes no attention mask: views are separated by their lengths")
    b, h, length, hd = query.shape
    seg = _SEGMENTS.get() or (length,)
    if sum(seg) != length:
        raise ValueError(f"packed views hold {sum(seg)} tokens but the sequence has {length}")
    scale = hd**-0.5 if scaling is None else scaling
    runs: list[list[int]] = []
    for n in seg:
        if runs and runs[-1][0] == n:
            runs[-1][1] += 1
        else:
            runs.append([n, 1])
    outs, start = [], 0
    for n, c in runs:

        def views(t: torch.Tensor, start: int = start, c: int = c, n: int = n) -> torch.Tensor:
            # (B, H, c*n, hd) -> (B*c, H, n, hd)
            return t[:, :, start : start + c * n].reshape(b, h, c, n, hd).transpose(1, 2).reshape(b * c, h, n, hd)

        q, k, v = views(query), views(key), views(value)
        if backend == "sdpa":
            o = F.scaled_dot_product_attention(q, k, v, scale=scale)
        else:
            w = torch.softmax(torch.matmul(q, k.transpose(2, 3)) * scale, dim=-1, dtype=torch.float32).to(q.dtype)
            o = torch.matmul(w, v)
        outs.append(o.reshape(b, c, h, n, hd).transpose(1, 2).reshape(b, h, c * n, hd))
        start += c * n
    out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)
    return out.transpose(1, 2).contiguous(), None


def _use_segmented_attention(hf_model: Any, attn: str) -> None:
    """Route the attention of ``hf_model``'s layers through ``segmented_attention``."""
    from transformers import AttentionInterface

    name = f"uhd_segmented_{attn}"
    if name not in AttentionInterface._global_mapping:
        AttentionInterface.register(name, partial(segmented_attention, backend=attn))
    hf_model.config._attn_implementation = name


def _cat_groups(outs: list[torch.Tensor], batch: int) -> torch.Tensor:
    """Per-group outputs (B*k, n, C) -> one (B, sum k*n, C) sequence, views in encoding order."""
    flat = [o.reshape(batch, -1, o.shape[-1]) for o in outs]
    return flat[0] if len(flat) == 1 else torch.cat(flat, dim=1)


def _split_groups(x: torch.Tensor, lengths: list[int], counts: list[int]) -> list[torch.Tensor]:
    """Inverse of ``_cat_groups``: (B, L, C) -> per group (B*k, n, C)."""
    b, out, start = x.shape[0], [], 0
    for n, k in zip(lengths, counts):
        out.append(x[:, start : start + k * n].reshape(b * k, n, x.shape[-1]))
        start += k * n
    return out


class VariantModel(nn.Module):
    """embed -> layers[0..depth] -> compressor -> layers[depth+1..] -> post_norm -> connector.

    Input: one (B, 3, H, W) view, or for global/sliced encoding a list with one (B*k, 3, H, W)
    tensor per group of ``spec.groups`` (``example_input`` makes it). Output: (B, tokens, C), the
    views' tokens concatenated in encoding order.
    """

    trunk: Any  # the adapter (uhd_profile.model.trunks.Trunk), kept unregistered: its children are adopted

    def __init__(self, spec: VariantSpec, trunk: Any, compressor: nn.Module | None, connector: nn.Module | None):
        super().__init__()
        self.spec = spec
        self.__dict__["trunk"] = trunk  # adopted children below; the adapter itself stays unregistered
        for name, child in trunk.named_children():
            self.add_module(name, child)
        self.compressor = compressor
        self.connector = connector

    def forward(self, pixel_values) -> torch.Tensor:
        if isinstance(pixel_values, (list, tuple)):
            if self.spec.packing == "packed":
                return self._packed(list(pixel_values))
            return _cat_groups([self._one(x) for x in pixel_values], pixel_values[0].shape[0])
        return self._one(pixel_values)

    def _one(self, pixel_values: torch.Tensor) -> torch.Tensor:
        s, t = self.spec, self.trunk
        grid = (pixel_values.shape[-2] // s.enc.patch, pixel_values.shape[-1] // s.enc.patch)
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

    def _packed(self, groups: list[torch.Tensor]) -> torch.Tensor:
        """All views in one sequence; attention per view (``segmented_attention``); compressor and
        connector per group of equal-sized views, each on its own grid."""
        s, t = self.spec, self.trunk
        p, patch, b = t.prefix_tokens, s.enc.patch, groups[0].shape[0]
        grids = [(x.shape[-2] // patch, x.shape[-1] // patch) for x in groups]
        counts = [x.shape[0] // b for x in groups]

        def lengths():
            return [p + h * w for h, w in grids]

        def segments():
            return tuple(n for n, k in zip(lengths(), counts) for _ in range(k))

        x = _cat_groups([t.embed_pixels(g) for g in groups], b)
        token = _SEGMENTS.set(segments())
        try:
            for i in range(s.enc.layers):
                x = t.run_layer(i, x, None)  # packable trunks take the grid from nowhere: see PACKABLE_TRUNKS
                if self.compressor is not None and i == s.depth:
                    parts = []
                    for part, grid in zip(_split_groups(x, lengths(), counts), grids):
                        tokens = self.compressor(part[:, p:], grid)
                        parts.append(torch.cat([part[:, :p], tokens], dim=1) if p else tokens)
                    grids = [(h // 2, w // 2) for h, w in grids]
                    x = _cat_groups(parts, b)
                    _SEGMENTS.set(segments())
        finally:
            _SEGMENTS.reset(token)
        x = t.post_norm(x)
        if self.connector is not None:
            x = _cat_groups(
                [self.connector(part[:, p:], grid) for part, grid in zip(_split_groups(x, lengths(), counts), grids)], b
            )
        return x


class ReleasedVariantModel(nn.Module):
    """The released MiniCPM-V 4.6 vision model run whole, merger on (v4) or off (baseline),
    followed by our connector when a post-ViT ratio is asked for. Views (a batch, or the groups of
    global/sliced encoding) go in the model's own packed layout, one call per group (batched) or
    one call for all (packed)."""

    hf: Any  # transformers' MiniCPMV4_6VisionModel, kept unregistered: its parts are registered below
    compressor: Any

    def __init__(self, spec: VariantSpec, model: Any, connector: nn.Module | None):
        super().__init__()
        self.spec = spec
        self.__dict__["hf"] = model
        self.embed = model.embeddings
        self.layers = model.encoder.layers
        self.compressor = model.vit_merger
        self.post_norm = model.post_layernorm
        self.connector = connector
        model.config.insert_layer_id = spec.depth if spec.compressor else model.config.insert_layer_id

    def forward(self, pixel_values) -> torch.Tensor:
        groups = list(pixel_values) if isinstance(pixel_values, (list, tuple)) else [pixel_values]
        b = groups[0].shape[0]
        if len(groups) > 1 and self.spec.packing == "packed":
            outs = self._run(groups)
        else:
            outs = [out for g in groups for out in self._run([g])]
        return outs[0] if len(outs) == 1 and not isinstance(pixel_values, (list, tuple)) else _cat_groups(outs, b)

    def _run(self, groups: list[torch.Tensor]) -> list[torch.Tensor]:
        """One call of the released model over every view of ``groups`` (each (N, 3, H, W)), packed
        its own way: patches in NaViT layout in one sequence, ``target_sizes`` per view (its
        attention and merger keep to each view). Returns per group (N, tokens per view, C)."""
        patch = self.spec.enc.patch
        parts, sizes, grids = [], [], []
        for x in groups:
            n, c, hh, ww = x.shape
            h, w = hh // patch, ww // patch
            # (n, c, h, p, w, p) -> (c, p, n*h*w*p): the processor's reshape_by_patch, views one after another
            parts.append(x.reshape(n, c, h, patch, w, patch).permute(1, 3, 0, 2, 4, 5).reshape(c, patch, n * h * w * patch))
            sizes += [[h, w]] * n
            grids.append((h, w))
        pv = (parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)).unsqueeze(0)
        target = torch.tensor(sizes, dtype=torch.int32)
        # the paper charges the merger's window attention densely within each view, not over the sequence
        self.compressor._uhd_dense_segments = tuple(h * w for h, w in sizes)
        try:
            x = self.hf(pv, target_sizes=target, use_vit_merger=self.spec.compressor is not None).last_hidden_state
        finally:
            self.compressor._uhd_dense_segments = None
        outs, start = [], 0
        for g, grid in zip(groups, grids):
            after = self.spec._after_vit(grid)
            n_tok = g.shape[0] * after[0] * after[1]
            y = x[0, start : start + n_tok].reshape(g.shape[0], after[0] * after[1], x.shape[-1])
            start += n_tok
            outs.append(self.connector(y, after) if self.connector is not None else y)
        return outs


INITS = ("default", "fast")
"""``build_variant`` weight initialisations of a model built without a checkpoint."""
FAST_INIT_BLOCK = 1 << 20
"""Values in the random block that ``fast`` initialisation repeats over every weight matrix."""


@contextlib.contextmanager
def _no_init() -> Iterator[None]:
    """Skip torch's and transformers' weight initialisers while a model is constructed (the
    parameters are then uninitialised memory until ``fast_fill_``)."""
    from transformers.initialization import no_init_weights

    with no_init_weights():
        yield


def fast_fill_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every parameter a value cheaply: matrices (2-D and up) a repeated block of
    ``FAST_INIT_BLOCK`` standard normal values scaled by 1/sqrt(fan-in) (the magnitude of the usual
    initialisers), biases 0, other vectors (norm scales) 1. Drawing ~10^9 random numbers and
    truncating them, as the towers' own initialisers do, takes longer on a CPU than timing the model;
    dense kernels take the same time whatever the values, and these keep activations in the normal
    range (no NaN, no denormals)."""
    gen = torch.Generator().manual_seed(seed)
    block = torch.randn(FAST_INIT_BLOCK, generator=gen)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.device.type == "meta":
                continue
            if p.dim() >= 2:
                flat = p.view(-1)
                src = (block / math.sqrt(max(1, p[0].numel()))).to(device=p.device, dtype=p.dtype)
                for start in range(0, flat.numel(), src.numel()):
                    n = min(src.numel(), flat.numel() - start)
                    flat[start : start + n].copy_(src[:n])
            elif name.endswith("bias"):
                p.zero_()
            else:
                p.fill_(1.0)
    return model


def build_variant(
    spec: VariantSpec,
    device: str | torch.device = "cpu",
    weights: str | None = None,
    attn: str = "sdpa",
    reuse_init: bool = True,
    init: str = "default",
) -> nn.Module:
    """Build the runnable module for ``spec`` on ``device`` (``"meta"``: shapes only, no memory).

    In-ViT compressors whose design reuses layer k are initialised from it (docs/paper.md §7) when
    ``reuse_init``; otherwise they keep their own random initialisation. ``init`` (random weights
    only: no ``weights``): ``default``, each module's own initialiser; ``fast``, ``fast_fill_`` (for
    timing and memory, where values do not matter; seconds instead of tens of seconds on a CPU).
    """
    if init not in INITS:
        raise UhdProfileError(f"init {init!r} is not valid; valid: {', '.join(INITS)}")
    fast = init == "fast" and weights is None and torch.device(device).type != "meta"
    enc = spec.enc
    with torch.device(device), _no_init() if fast else contextlib.nullcontext():
        built = enc.build(weights=weights, attn=attn)
        connector = Connector(enc.hidden, spec.llm_hidden, spec.ratio) if spec.ratio > 1 else None
        model: nn.Module
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
            if spec.packing == "packed":
                _use_segmented_attention(built.hf, attn)
    if fast:
        fast_fill_(model)
    return model.eval()


def example_input(
    spec: VariantSpec, batch: int = 1, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> torch.Tensor | list[torch.Tensor]:
    """A (batch, 3, H, W) pixel tensor for ``spec`` (empty on meta, random elsewhere); for
    global/sliced encoding a list of (batch * k, 3, H, W) tensors, one per group of ``spec.groups``
    (views of one image next to each other: image b's slices are rows b*k .. b*k+k-1)."""

    def make(n: int, size: Size) -> torch.Tensor:
        shape = (n, 3, size.height, size.width)
        if torch.device(device).type == "meta":
            return torch.empty(shape, device="meta", dtype=dtype)
        return torch.randn(shape, device=device, dtype=dtype)

    if spec.encoding == "view":
        return make(batch, spec.size)
    return [make(batch * k, size) for k, size in spec.groups]
