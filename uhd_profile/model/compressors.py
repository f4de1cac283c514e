"""Token compressors: the in-ViT designs the paper compares and the post-ViT connector.

Every in-ViT compressor maps a token grid ``x`` of shape (B, h*w, d) (row-major, h and w even)
to (B, h/2 * w/2, d). Structures follow docs/paper.md §3; parameter reuse follows §7.

A 2x2 *window* is ordered top-left, top-right, bottom-left, bottom-right; *unshuffle*
concatenates a window's four tokens in that order into one 4d vector, windows row-major.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from uhd_profile.errors import UhdProfileError

# --------------------------------------------------------------------------------------------
# Grid helpers (pure data movement: no arithmetic)
# --------------------------------------------------------------------------------------------


def windows(x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(B, h*w, C) row-major -> (B, h/2*w/2, 4, C): each 2x2 window's tokens TL, TR, BL, BR."""
    b, n, c = x.shape
    h, w = grid
    x = x.reshape(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // 2) * (w // 2), 4, c)


def unwindows(x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Inverse of ``windows``: (B, h/2*w/2, 4, C) -> (B, h*w, C) row-major."""
    b, _, _, c = x.shape
    h, w = grid
    x = x.reshape(b, h // 2, w // 2, 2, 2, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h * w, c)


def unshuffle(x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(B, h*w, d) -> (B, h/2*w/2, 4d), window tokens concatenated TL, TR, BL, BR."""
    win = windows(x, grid)
    return win.reshape(win.shape[0], win.shape[1], -1)


def check_grid(grid: tuple[int, int], where: str) -> None:
    h, w = grid
    if h % 2 or w % 2:
        raise UhdProfileError(
            f"{where} needs an even token grid for 2x2 windows, got {w}x{h} tokens (width x height); "
            f"choose a resolution that is a multiple of 2 x the patch size"
        )


# --------------------------------------------------------------------------------------------
# Reuse source: one encoder layer's parts, in a trunk-independent form
# --------------------------------------------------------------------------------------------


@dataclass
class LayerParts:
    """The pieces of encoder layer k that the reuse initialisation copies.

    ``q, k, v, o`` are Linear(d, d) (a fused qkv is split by the trunk before it gets here);
    ``fc1`` is Linear(d, m) (for a gated MLP, ``gate`` is Linear(d, m) too), ``fc2`` Linear(m, d).
    ``norm1``/``norm2`` are the pre-attention and pre-MLP norms (LayerNorm or RMSNorm).
    """

    norm1: nn.Module
    q: nn.Linear
    k: nn.Linear
    v: nn.Linear
    o: nn.Linear
    norm2: nn.Module
    fc1: nn.Linear
    fc2: nn.Linear
    act: Callable[[torch.Tensor], torch.Tensor]
    gate: nn.Linear | None = None
    eps: float = 1e-6


def _copy_(dst: torch.Tensor | None, src: torch.Tensor | None) -> None:
    if dst is None or src is None:
        return
    with torch.no_grad():
        dst.copy_(src)


def _copy_modules_(*pairs: tuple[nn.Module, nn.Module]) -> None:
    """Copy each source module's ``weight`` and ``bias`` into its twin (where both have one)."""
    for mine, theirs in pairs:
        for attr in ("weight", "bias"):
            _copy_(getattr(mine, attr, None), getattr(theirs, attr, None))


def _norm_like(template: nn.Module, dim: int, eps: float) -> nn.Module:
    """A norm of the same kind as ``template`` (LayerNorm, or RMS-style) over ``dim`` features."""
    if isinstance(template, nn.LayerNorm):
        return nn.LayerNorm(dim, eps=eps)
    return nn.RMSNorm(dim, eps=eps)


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------


class _WindowAttentionBase(nn.Module):
    """The attention both window designs share: ``heads``, a pre-norm ``norm1`` and Linear(d, d)
    ``q``, ``k``, ``v``, ``o``, which the reuse initialisation copies from layer k."""

    def __init__(self, d: int, heads: int, norm1: nn.Module):
        super().__init__()
        self.heads = heads
        self.norm1 = norm1
        self.q = nn.Linear(d, d)
        self.k = nn.Linear(d, d)
        self.v = nn.Linear(d, d)
        self.o = nn.Linear(d, d)

    def reuse_(self, parts: LayerParts) -> None:
        _copy_modules_((self.q, parts.q), (self.k, parts.k), (self.v, parts.v), (self.o, parts.o), (self.norm1, parts.norm1))


class WindowAttention(_WindowAttentionBase):
    """Pre-norm self-attention inside each 2x2 window, plus the residual.

    All windows run as one batched attention call: (B * windows, heads, 4, head_dim).
    The paper charges this attention densely over the whole slice (``_uhd_paper``).
    """

    _uhd_paper = "dense_attention"

    def __init__(self, d: int, heads: int, norm: nn.Module):
        super().__init__(d, heads, norm)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        b, n, d = x.shape
        y = self.norm1(x)
        hd = d // self.heads

        def split(t: torch.Tensor) -> torch.Tensor:
            # (B, n, d) -> (B*windows, heads, 4, hd)
            t = windows(t, grid)
            return t.reshape(-1, 4, self.heads, hd).transpose(1, 2)

        attn = F.scaled_dot_product_attention(split(self.q(y)), split(self.k(y)), split(self.v(y)))
        attn = attn.transpose(1, 2).reshape(b, n // 4, 4, d)
        return x + self.o(unwindows(attn, grid))


class FusionMLP(nn.Module):
    """Unshuffle -> norm(4d) -> Linear(4d, H) -> act -> Linear(H, d) -> + 2x2 mean residual.

    With ``gated`` (for SwiGLU trunks) the hidden is act(gate(x)) * up(x), both 4d -> H.
    """

    def __init__(self, d: int, hidden: int, act: Callable, norm: nn.Module, gated: bool = False, reusable: bool = False):
        super().__init__()
        self.reusable = reusable  # only the 4m-wide "reused" MLP takes layer k's FFN
        self.pre_norm = norm
        self.linear_1 = nn.Linear(4 * d, hidden)
        self.gate = nn.Linear(4 * d, hidden) if gated else None
        self.act = act
        self.linear_2 = nn.Linear(hidden, d)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        win = windows(x, grid)
        residual = win.mean(dim=2)
        y = self.pre_norm(win.reshape(win.shape[0], win.shape[1], -1))
        if self.gate is not None:
            y = self.act(self.gate(y)) * self.linear_1(y)
        else:
            y = self.act(self.linear_1(y))
        return self.linear_2(y) + residual

    def reuse_(self, parts: LayerParts) -> None:
        """Paper-spec section 7: block-diagonal fc1 copies, fc2 copies side by side times 1/4,
        pre_norm = layer k's norm2 tiled 4 times."""
        if not self.reusable:
            return
        d = parts.fc1.in_features
        m = parts.fc1.out_features
        with torch.no_grad():
            for mine, theirs in ((self.linear_1, parts.fc1), (self.gate, parts.gate)):
                if mine is None or theirs is None:
                    continue
                mine.weight.zero_()
                for i in range(4):
                    mine.weight[i * m : (i + 1) * m, i * d : (i + 1) * d] = theirs.weight
                if mine.bias is not None and theirs.bias is not None:
                    mine.bias.copy_(theirs.bias.repeat(4))
                elif mine.bias is not None:
                    mine.bias.zero_()
            self.linear_2.weight.copy_(parts.fc2.weight.repeat(1, 4) * 0.25)
            if parts.fc2.bias is not None:
                self.linear_2.bias.copy_(parts.fc2.bias)
            else:
                self.linear_2.bias.zero_()
            for attr in ("weight", "bias"):
                src = getattr(parts.norm2, attr, None)
                dst = getattr(self.pre_norm, attr, None)
                if src is not None and dst is not None:
                    dst.copy_(src.repeat(4))


class AvgPool(nn.Module):
    """2x2 mean of each window; no parameters (docs/paper.md §3)."""

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        return windows(x, grid).mean(dim=2)


class Sequential2(nn.Module):
    """Window attention followed by a fusion MLP (docs/paper.md §3)."""

    def __init__(self, attn: WindowAttention, mlp: FusionMLP):
        super().__init__()
        self.attn = attn
        self.mlp = mlp

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        return self.mlp(self.attn(x, grid), grid)


class CrossAttnMerge(_WindowAttentionBase):
    """One query per window attends to its window's 4 keys, then an FFN (docs/paper.md §3).

    The structure is the one of eight candidates that reproduces the paper's 1402.0 G; the paper
    does not release it. The query (and residual) is the window's top-left token or its mean.
    """

    def __init__(self, d: int, heads: int, m: int, act: Callable, norm1: nn.Module, norm2: nn.Module, query: str):
        super().__init__(d, heads, norm1)
        self.query = query
        self.norm2 = norm2
        self.fc1 = nn.Linear(d, m)
        self.act = act
        self.fc2 = nn.Linear(m, d)

    def _pick(self, win: torch.Tensor) -> torch.Tensor:
        # win: (B, W, 4, C) -> (B, W, C)
        return win[:, :, 0] if self.query == "topleft" else win.mean(dim=2)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        b, n, d = x.shape
        hd = d // self.heads
        y = self.norm1(x)
        q = self._pick(windows(self.q(y), grid))  # (B, W, d)
        k, v = windows(self.k(y), grid), windows(self.v(y), grid)  # (B, W, 4, d)
        nw = q.shape[1]
        qh = q.reshape(b * nw, 1, self.heads, hd).transpose(1, 2)
        kh = k.reshape(b * nw, 4, self.heads, hd).transpose(1, 2)
        vh = v.reshape(b * nw, 4, self.heads, hd).transpose(1, 2)
        attn = F.scaled_dot_product_attention(qh, kh, vh).transpose(1, 2).reshape(b, nw, d)
        h = self._pick(windows(x, grid)) + self.o(attn)
        return h + self.fc2(self.act(self.fc1(self.norm2(h))))

    def reuse_(self, parts: LayerParts) -> None:
        super().reuse_(parts)
        _copy_modules_((self.fc1, parts.fc1), (self.fc2, parts.fc2), (self.norm2, parts.norm2))


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Geometry:
    """What a compressor factory needs to know about the trunk at the insertion point."""

    d: int
    m: int
    heads: int
    eps: float
    act: Callable
    norm_template: nn.Module
    gated: bool


@dataclass(frozen=True)
class CompressorDesign:
    name: str
    description: str
    paper_label: str
    factory: Callable[[Geometry], nn.Module]
    reuse: bool  # initialised from layer k (docs/paper.md §7) when built with real weights


def _gelu_exact(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x)


def _win_attn(g: Geometry) -> WindowAttention:
    return WindowAttention(g.d, g.heads, _norm_like(g.norm_template, g.d, g.eps))


def _pu_mlp(g: Geometry) -> FusionMLP:
    """unshuffle -> LN(4d) -> Linear(4d,4d) -> GELU -> Linear(4d,d) + mean, randomly initialised."""
    return FusionMLP(g.d, 4 * g.d, _gelu_exact, nn.LayerNorm(4 * g.d, eps=g.eps))


def _reused_mlp(g: Geometry) -> FusionMLP:
    """unshuffle -> norm(4d) -> Linear(4d,4m) -> act -> Linear(4m,d) + mean, reusable from layer k's FFN."""
    return FusionMLP(g.d, 4 * g.m, g.act, _norm_like(g.norm_template, 4 * g.d, g.eps), gated=g.gated, reusable=True)


def _cross_attn(query: str) -> Callable[[Geometry], nn.Module]:
    def build(g: Geometry) -> nn.Module:
        norm1, norm2 = _norm_like(g.norm_template, g.d, g.eps), _norm_like(g.norm_template, g.d, g.eps)
        return CrossAttnMerge(g.d, g.heads, g.m, g.act, norm1, norm2, query)

    return build


COMPRESSORS: dict[str, CompressorDesign] = {}


def _register(name: str, description: str, label: str, reuse: bool, factory: Callable[[Geometry], nn.Module]) -> None:
    if name in COMPRESSORS:
        raise ValueError(f"compressor {name} registered twice")
    COMPRESSORS[name] = CompressorDesign(name, description, label, factory, reuse)


_register("avg-pool", "2x2 average pooling, no parameters", "Average Pool", False, lambda g: AvgPool())
_register(
    "pixel-unshuffle-mlp",
    "unshuffle -> LN(4d) -> Linear(4d,4d) -> GELU -> Linear(4d,d) + mean; random init",
    "Pixel-Unshuffle MLP",
    False,
    _pu_mlp,
)
_register(
    "reused-mlp",
    "unshuffle -> norm(4d) -> Linear(4d,4m) -> act -> Linear(4m,d) + mean; from layer k's FFN",
    "Reused MLP",
    True,
    _reused_mlp,
)
_register(
    "cross-attn-topleft",
    "window top-left token queries its 4 tokens, then FFN (structure inferred)",
    "Cross-Attn (top-left query)",
    True,
    _cross_attn("topleft"),
)
_register(
    "cross-attn-mean",
    "window mean queries its 4 tokens, then FFN (structure inferred)",
    "Cross-Attn (mean query)",
    True,
    _cross_attn("mean"),
)
_register(
    "window-attn-mlp",
    "2x2 window attention (from layer k) + pixel-unshuffle MLP (random)",
    "Win-Attn w/ MLP",
    True,
    lambda g: Sequential2(_win_attn(g), _pu_mlp(g)),
)
_register(
    "window-attn-reused-mlp",
    "2x2 window attention + reused MLP, both from layer k (LLaVA-UHD v4's D)",
    "Win-Attn w/ Reused MLP (LLaVA-UHD v4)",
    True,
    lambda g: Sequential2(_win_attn(g), _reused_mlp(g)),
)


def get_compressor(name: str) -> CompressorDesign:
    if name not in COMPRESSORS:
        raise UhdProfileError(f"unknown compressor {name!r}; valid compressors: {', '.join(COMPRESSORS)}")
    return COMPRESSORS[name]


def reuse_init_(module: nn.Module, parts: LayerParts) -> None:
    """Initialise every reusable piece of ``module`` from encoder layer k (docs/paper.md §7)."""
    subs = [sub for sub in module.modules() if sub is not module] + [module]
    for sub in subs:
        reuse = getattr(sub, "reuse_", None)
        if callable(reuse):
            reuse(parts)


# --------------------------------------------------------------------------------------------
# Post-ViT connector (docs/paper.md §4)
# --------------------------------------------------------------------------------------------


class DownsampleMLP(nn.Module):
    """One 2x2 stage: unshuffle -> LayerNorm(4d) -> Linear(4d,4d) -> GELU(erf) -> Linear(4d,out)."""

    def __init__(self, d: int, out: int, eps: float = 1e-6):
        super().__init__()
        self.pre_norm = nn.LayerNorm(4 * d, eps=eps)
        self.linear_1 = nn.Linear(4 * d, 4 * d)
        self.linear_2 = nn.Linear(4 * d, out)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        return self.linear_2(F.gelu(self.linear_1(self.pre_norm(unshuffle(x, grid)))))


class Connector(nn.Module):
    """Chained 2x2 stages: ratio 4 is one stage, 16 is two (intermediate width d, last ``out``).

    The paper does not charge the connector (``_uhd_paper = "exclude"``).
    """

    _uhd_paper = "exclude"

    def __init__(self, d: int, out: int, ratio: int):
        super().__init__()
        stages = {4: 1, 16: 2}[ratio]
        self.stages = nn.ModuleList(DownsampleMLP(d, out if i == stages - 1 else d) for i in range(stages))

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x, grid)
            grid = (grid[0] // 2, grid[1] // 2)
        return x


class Projector(nn.Module):
    """The ratio-1 connector of a pipeline: a projector that merges nothing, LLaVA-1.5's two-layer
    MLP (``mlp2x_gelu``): Linear(d, out) -> GELU(erf) -> Linear(out, out), token by token.

    Like ``Connector``, the paper's convention does not charge it (``_uhd_paper = "exclude"``).
    A variant at ``post_ratio`` 1 is the ViT alone; only a pipeline (``uhd_profile.model.pipeline``)
    adds this projector, so variant counts are unchanged by it.
    """

    _uhd_paper = "exclude"

    def __init__(self, d: int, out: int):
        super().__init__()
        self.linear_1 = nn.Linear(d, out)
        self.linear_2 = nn.Linear(out, out)

    def forward(self, x: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor:
        return self.linear_2(F.gelu(self.linear_1(x)))


CONNECTOR_KINDS = {
    1: "projector (LLaVA-1.5 two-layer MLP, merges nothing)",
    4: "pixel-unshuffle MLP, one 2x2 stage",
    16: "pixel-unshuffle MLP, two 2x2 stages",
}
"""Post-ViT ratio -> the connector a pipeline runs at that ratio."""


def make_connector(d: int, out: int, ratio: int) -> nn.Module:
    """The pipeline connector from width ``d`` to the LLM's width ``out`` at post-ViT ``ratio``:
    ``Projector`` at 1, ``Connector`` (chained 2x2 pixel-unshuffle stages) at 4 and 16."""
    if ratio not in CONNECTOR_KINDS:
        raise UhdProfileError(f"connector ratio {ratio!r} is not valid; valid: {', '.join(map(str, CONNECTOR_KINDS))}")
    return Projector(d, out) if ratio == 1 else Connector(d, out, ratio)
