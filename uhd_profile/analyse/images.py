"""Real images: what encoding each one costs, sliced vs global, per compression plan.

* ``image_size(path)`` reads an image's (width, height) from its header: as stored, like the
  MiniCPM-V 4.6 image processor sees a PIL image (no EXIF transpose); ``exif_transpose=True`` gives
  the size as displayed (EXIF orientations 5-8 swap the sides).
* ``cost_image(w, h, ...)`` -> ``ImageCost``: for each encoding its views (sizes, token grids), the
  tokens into the ViT and to the LLM, and FLOPs per view and in total for each plan.
* ``cost_dataset(paths, ...)`` -> (per-image rows, skipped files); ``summarize(rows)`` the mean,
  median, p90 and total per encoding, plan and metric; ``histogram(rows)`` a matplotlib Figure.
* ``draw_slicing(path, slicing)`` the image with its slice grid and its thumbnail (PIL).

FLOPs depend only on the view sizes, so counts are cached per (encoder, plan, view size, views in
the call): each is counted once, with ``count_flops`` on ``meta`` (shapes only), exactly as the
variant runs its views batched (the thumbnail in one call, the equal-sized slices in one batch).
The totals are therefore exactly ``count_flops`` of the global/sliced ``VariantSpec``
(tests check it). A view's FLOPs are its share of its call (the call's count / views in the call).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from uhd_profile.count.conventions import CONVENTIONS, get_convention
from uhd_profile.count.flops import count_flops
from uhd_profile.count.llm import count_llm
from uhd_profile.count.memory_model import (
    check_attn_path,
    check_device_kind,
    combine,
    llm_stages,
    predict_memory,
    predict_pipeline_memory,
    vision_stage,
)
from uhd_profile.errors import UhdProfileError
from uhd_profile.model.encoders import DEFAULT_ENCODER, get_encoder
from uhd_profile.model.llms import get_llm
from uhd_profile.model.policies import DEFAULT_POLICY, get_policy
from uhd_profile.model.slicing import MAX_SLICE_NUMS, SCALE_RESOLUTION, Slicing, check_image_size, check_params
from uhd_profile.model.variants import ALIASES, VariantSpec
from uhd_profile.units import Size, parse_dtype

PLANS = ALIASES
IMAGE_ENCODINGS = ("global", "sliced")
COUNT_COLUMNS = tuple(c.column for c in CONVENTIONS.values())
"""Count columns of per-image rows: the record schema's names (``macs``, ``flops``, ``paper_flops``)."""
METRICS = ("vit_tokens", "llm_tokens", *COUNT_COLUMNS)


# --------------------------------------------------------------------------------------------
# Reading images
# --------------------------------------------------------------------------------------------


def image_size(path: str | os.PathLike, exif_transpose: bool = False) -> Size:
    """(width, height) in pixels of the image at ``path``: as stored (the default, what the MiniCPM-V
    4.6 image processor in ``transformers`` slices: it does no EXIF transpose), or with
    ``exif_transpose`` as displayed (an EXIF orientation of 5-8, a 90/270 degree turn, swaps the sides).

    Only the header is read. Raises ``UhdProfileError`` for a missing, unreadable or non-image file.
    """
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise UhdProfileError(f"{p}: no such file; give image files (PNG, JPEG, WebP, ... anything PIL reads)")
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # only the header is read: a huge image is no decompression bomb here
    try:
        with Image.open(p) as im:
            w, h = im.size
            orientation = im.getexif().get(0x0112, 1)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UhdProfileError(
            f"{p}: not a readable image ({reason}); give image files (PNG, JPEG, WebP, ... anything PIL reads)"
        ) from None
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    if exif_transpose and orientation in (5, 6, 7, 8):  # rotated by 90 or 270 degrees when displayed
        w, h = h, w
    if w < 1 or h < 1:
        raise UhdProfileError(f"{p}: image size {w}x{h} is not valid; both sides must be positive")
    return Size(w, h)


# --------------------------------------------------------------------------------------------
# Costing
# --------------------------------------------------------------------------------------------


def plan_spec(plan: str, encoder: str, resolution: Size, depth: int | None = None, **kw) -> VariantSpec:
    """The VariantSpec of ``plan`` (baseline or v4; the design's own 16x in total) at ``resolution``
    (width x height); ``depth`` moves v4's compressor (None: layer index 6, the paper's)."""
    if plan not in ALIASES:
        raise UhdProfileError(f"variant {plan!r} is not valid; valid: {', '.join(ALIASES)}")
    try:
        return VariantSpec.alias(plan, depth=depth if plan == "v4" else None, encoder=encoder, resolution=resolution, **kw)
    except UhdProfileError as exc:
        if plan == "v4" and depth is None and "depth" in str(exc):  # the user gave no depth: say whose it is
            raise UhdProfileError(
                f"the v4 plan (one of the default plans) puts its compressor after layer 6, the paper's: {exc}; "
                "choose a depth with --depth K, or leave v4 out with --variant baseline"
            ) from None
        raise


@lru_cache(maxsize=4096)
def count_call(encoder: str, plan: str, size: Size, views: int, depth: int | None = None) -> dict[str, int]:
    """Counts (``COUNT_COLUMNS`` -> int) of one forward call over ``views`` equal views of ``size``
    (counted on meta)."""
    fc = count_flops(plan_spec(plan, encoder, size, depth), batch=views)
    if fc.uncounted_ops:
        raise UhdProfileError(f"{encoder} at {size}: ops with no FLOPs formula {fc.uncounted_ops}; counts would be incomplete")
    return {c.column: fc.get(c.name) for c in CONVENTIONS.values()}


@dataclass
class ViewCost:
    """One view: ``role`` thumbnail/slice/global; ``size`` width x height px; ``grid`` patch grid
    (rows, cols); tokens into the ViT; per plan, tokens to the LLM and counts (its share of its
    call, per count column: floats because a call's count is split evenly over its views)."""

    role: str
    size: Size
    grid: tuple[int, int]
    vit_tokens: int
    llm_tokens: dict[str, int] = field(default_factory=dict)
    counts: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass
class EncodingCost:
    """One encoding of one image. Sizes width x height px; ``grid`` (cols, rows) or None; counts
    per plan are exact integers (sum over the encoding's forward calls) per count column."""

    encoding: str
    views: list[ViewCost]
    vit_tokens: int
    llm_tokens: dict[str, int]
    counts: dict[str, dict[str, int]]
    variant_ids: dict[str, str]
    grid: tuple[int, int] | None = None
    thumbnail: Size | None = None
    slices: list[Size] = field(default_factory=list)


@dataclass
class ImageCost:
    path: str | None
    size: Size  # width x height px
    encoder: str
    plans: tuple[str, ...]
    encodings: dict[str, EncodingCost]

    def to_json(self, convention: str = "macs") -> dict:
        """JSON-ready. Sizes are [width, height] px, ``grid`` and ``patch_grid`` [cols, rows];
        ``gflops`` values are counts / 1e9 in ``convention`` (named in the dict: with ``macs`` they
        are GMACs); ``counts`` hold the raw integers per count column (``macs``, ``flops``,
        ``paper_flops``)."""
        conv = get_convention(convention)
        col = conv.column
        d: dict = {
            "path": self.path,
            "size": list(self.size),
            "encoder": self.encoder,
            "plans": list(self.plans),
            "convention": convention,
            "convention_help": conv.meaning,
        }
        for name, e in self.encodings.items():
            entry: dict = {}
            if name == "sliced":
                entry.update(
                    grid=list(e.grid) if e.grid else None,
                    thumbnail=list(e.thumbnail) if e.thumbnail else None,
                    slices=[list(s) for s in e.slices],
                )
            else:
                entry["view"] = list(e.views[0].size)
            entry.update(
                views=[
                    {
                        "role": v.role,
                        "size": list(v.size),
                        "patch_grid": [v.grid[1], v.grid[0]],
                        "vit_tokens": v.vit_tokens,
                        "llm_tokens": v.llm_tokens,
                        "gflops": {p: v.counts[p][col] / 1e9 for p in self.plans},
                    }
                    for v in e.views
                ],
                vit_tokens=e.vit_tokens,
                llm_tokens=e.llm_tokens,
                gflops={p: e.counts[p][col] / 1e9 for p in self.plans},
                counts=e.counts,
                variant_ids=e.variant_ids,
            )
            d[name] = entry
        return d


def _llm_tokens(spec, grid: tuple[int, int]) -> int:
    """Tokens one view of patch grid ``grid`` sends to the LLM under ``spec``'s plan."""
    h, w = spec._after_vit(grid)
    return h * w // spec.ratio + (spec.enc.prefix_tokens if spec.ratio == 1 else 0)


def cost_image(
    w: int,
    h: int,
    encoder: str | None = None,
    plans=PLANS,
    encodings=IMAGE_ENCODINGS,
    max_slices: int = MAX_SLICE_NUMS,
    scale_resolution: int = SCALE_RESOLUTION,
    path: str | None = None,
    depth: int | None = None,
) -> ImageCost:
    """Views, tokens and FLOPs of a w x h image for each encoding and plan (see module docstring);
    ``depth`` moves v4's compressor (None: the paper's layer index 6)."""
    encoder = encoder or DEFAULT_ENCODER
    size = check_image_size(w, h)
    plans = tuple(dict.fromkeys(plans))
    if not plans:
        raise UhdProfileError(f"no variant given; valid: {', '.join(PLANS)}")
    out: dict[str, EncodingCost] = {}
    for enc in encodings:
        if enc not in IMAGE_ENCODINGS:
            raise UhdProfileError(f"encoding {enc!r} is not valid for images; valid: {', '.join(IMAGE_ENCODINGS)}")
        specs = {
            p: plan_spec(p, encoder, size, depth, encoding=enc, max_slices=max_slices, scale_resolution=scale_resolution)
            for p in plans
        }
        first = next(iter(specs.values()))
        views: list[ViewCost] = []
        counts = {p: dict.fromkeys(COUNT_COLUMNS, 0) for p in plans}
        patch = first.enc.patch
        for gi, (k, view) in enumerate(first.groups):
            role = "global" if enc == "global" else ("thumbnail" if gi == 0 else "slice")
            grid = (view.height // patch, view.width // patch)
            vit = grid[0] * grid[1] + first.enc.prefix_tokens
            per_plan = {}
            for p in specs:
                call = count_call(encoder, p, view, k, depth)
                for c in COUNT_COLUMNS:
                    counts[p][c] += call[c]
                per_plan[p] = {c: call[c] / k for c in COUNT_COLUMNS}
            llm = {p: _llm_tokens(spec, grid) for p, spec in specs.items()}
            for _ in range(k):
                views.append(ViewCost(role, view, grid, vit, dict(llm), {p: dict(v) for p, v in per_plan.items()}))
        sl = first.slicing
        ec = EncodingCost(
            encoding=enc,
            views=views,
            vit_tokens=first.tokens_in,
            llm_tokens={p: s.tokens_llm for p, s in specs.items()},
            counts=counts,
            variant_ids={p: s.id for p, s in specs.items()},
        )
        if isinstance(sl, Slicing):
            ec.grid, ec.thumbnail, ec.slices = sl.grid, sl.thumbnail, list(sl.slices)
        out[enc] = ec
    return ImageCost(path=path, size=size, encoder=encoder, plans=plans, encodings=out)


# --------------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------------


def list_files(directory: str | os.PathLike) -> list[Path]:
    """Regular files directly in ``directory`` (hidden files skipped), sorted by name."""
    d = Path(directory)
    if not d.is_dir():
        raise UhdProfileError(f"{d}: not a directory; give a folder of images")
    return sorted(p for p in d.iterdir() if p.is_file() and not p.name.startswith("."))


def cost_rows(cost: ImageCost) -> list[dict]:
    """Flat rows (one per encoding x plan) of one image, for a DataFrame/CSV."""
    rows = []
    for enc, e in cost.encodings.items():
        for p in cost.plans:
            rows.append(
                {
                    "path": cost.path,
                    "width": cost.size[0],
                    "height": cost.size[1],
                    "encoding": enc,
                    "plan": p,
                    "views": len(e.views),
                    "grid_cols": e.grid[0] if e.grid else None,
                    "grid_rows": e.grid[1] if e.grid else None,
                    "vit_tokens": e.vit_tokens,
                    "llm_tokens": e.llm_tokens[p],
                    **e.counts[p],
                    "variant_id": e.variant_ids[p],
                }
            )
    return rows


def cost_dataset(
    paths,
    encoder: str | None = None,
    plans=PLANS,
    max_slices: int = MAX_SLICE_NUMS,
    scale_resolution: int = SCALE_RESOLUTION,
    progress=None,
    depth: int | None = None,
    exif_transpose: bool = False,
) -> tuple[list[dict], list[dict]]:
    """Rows (``cost_rows``) for every readable image in ``paths``, and the skipped files as
    ``{"path", "reason"}``. ``progress(path)`` is called after each file; ``depth`` moves v4's
    compressor; ``exif_transpose`` sizes images as displayed (see ``image_size``). Files but no
    readable image among them is a one-line ``UhdProfileError`` (nothing to cost is not a result)."""
    # bad parameters fail once, here, not as a skipped file per image
    check_params(max_slices, scale_resolution, get_encoder(encoder or DEFAULT_ENCODER).patch * 4)
    rows: list[dict] = []
    skipped: list[dict] = []
    for p, w, h in _sized(paths, exif_transpose, skipped, progress):
        cost = cost_image(w, h, encoder, plans, IMAGE_ENCODINGS, max_slices, scale_resolution, path=str(p), depth=depth)
        rows.extend(cost_rows(cost))
    return _readable(rows, skipped)


def _sized(paths, exif_transpose: bool, skipped: list[dict], progress=None):
    """(path, width, height) of each readable image in ``paths``; an unreadable file is appended to
    ``skipped`` as ``{"path", "reason"}``. ``progress(path)`` is called once each file is done."""
    for p in paths:
        try:
            w, h = image_size(p, exif_transpose)
        except UhdProfileError as exc:
            skipped.append({"path": str(p), "reason": str(exc)})
        else:
            yield p, w, h
        if progress is not None:
            progress(p)


def _readable(rows: list[dict], skipped: list[dict]) -> tuple[list[dict], list[dict]]:
    """(rows, skipped) of a dataset; files but no readable image among them is a one-line error
    (nothing to cost is not a result)."""
    if skipped and not rows:
        which = "the one file is not" if len(skipped) == 1 else f"none of the {len(skipped)} files is"
        raise UhdProfileError(f"{which} a readable image (first: {skipped[0]['reason']})")
    return rows, skipped


def frame(rows: list[dict]):
    """Per-image rows as a DataFrame (integer columns stay integers, a missing grid is <NA>)."""
    import pandas as pd

    df = pd.DataFrame(rows)
    for col in ("grid_cols", "grid_rows"):
        if col in df:
            df[col] = df[col].astype("Int64")
    return df


def _p90(values) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(values, dtype=float), 90)) if len(values) else math.nan


def summarize(rows: list[dict]):
    """DataFrame: per encoding, plan and metric (tokens, FLOPs in each convention) over images:
    n, mean, median, p90 (linear interpolation) and total."""
    import pandas as pd

    df = pd.DataFrame(rows)
    out = []
    if df.empty:
        return pd.DataFrame(columns=["encoding", "plan", "metric", "n", "mean", "median", "p90", "total"])
    extra = [m for m in ("llm_input_tokens", *LLM_COLUMNS, *(f"total_{c}" for c in COUNT_COLUMNS)) if m in df]
    for (enc, plan), g in df.groupby(["encoding", "plan"], sort=True):
        for m in (*METRICS, *extra):
            v = g[m].astype(float)
            out.append(
                {
                    "encoding": enc,
                    "plan": plan,
                    "metric": m,
                    "n": int(len(v)),
                    "mean": float(v.mean()),
                    "median": float(v.median()),
                    "p90": _p90(v.tolist()),
                    "total": int(g[m].sum()),
                }
            )
    return pd.DataFrame(out)


def histogram(rows: list[dict], convention: str = "macs"):
    """Figure: per-image cost (G, in ``convention``) and LLM tokens, global vs sliced, per plan."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import pandas as pd

    conv = get_convention(convention)
    col = conv.column
    df = pd.DataFrame(rows)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    unit = f"{conv.giga} ({convention} convention)"
    if not df.empty:
        # shared bins, so the series compare bar for bar
        bins = np.linspace(0, max(float(df[col].max()) / 1e9, 1e-9) * 1.02, 31)
        for (enc, plan), g in df.groupby(["encoding", "plan"], sort=True):
            axes[0].hist(g[col] / 1e9, bins=bins, alpha=0.5, label=f"{enc}, {plan}")
        first = df[df["plan"] == df["plan"].iloc[0]]
        bins = np.linspace(0, max(float(first["llm_tokens"].max()), 1.0) * 1.02, 31)
        for enc, g in first.groupby("encoding", sort=True):
            axes[1].hist(g["llm_tokens"], bins=bins, alpha=0.5, label=f"{enc} ({df['plan'].iloc[0]})")
    axes[0].set(xlabel=f"visual encoding per image, {unit}", ylabel="images", title="cost per image")
    axes[1].set(xlabel="visual tokens to the LLM per image", ylabel="images", title="LLM tokens per image")
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    n = df["path"].nunique() if not df.empty else 0
    fig.suptitle(f"{n} images: global vs sliced encoding")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------------------------


def draw_slicing(path: str | os.PathLike, slicing, global_view=None, max_side: int = 1600, exif_transpose: bool = False):
    """A PIL image: the picture (scaled to at most ``max_side`` px) with its slice grid and each
    slice's size, and beside it the thumbnail at the same scale; the global view's size in the caption.
    The picture is drawn as stored, or as displayed with ``exif_transpose`` (as it was sized)."""
    from PIL import Image, ImageDraw, ImageOps

    with Image.open(path) as im:
        pic = (ImageOps.exif_transpose(im) if exif_transpose else im).convert("RGB")
    w, h = pic.size
    scale = min(1.0, max_side / max(w, h))
    dw, dh = max(1, round(w * scale)), max(1, round(h * scale))
    pic = pic.resize((dw, dh))
    tw, th = slicing.thumbnail
    tdw, tdh = max(1, round(tw * scale)), max(1, round(th * scale))  # the thumbnail at the picture's scale
    thumb = pic.resize((tdw, tdh))
    pad, caption = 12, 44
    canvas = Image.new("RGB", (dw + pad * 3 + tdw, max(dh, tdh) + pad * 2 + caption), "white")
    canvas.paste(pic, (pad, pad))
    canvas.paste(thumb, (dw + 2 * pad, pad))
    d = ImageDraw.Draw(canvas)
    line = max(2, round(min(dw, dh) / 200))
    if slicing.grid is not None:
        cols, rows = slicing.grid
        sw, sh = slicing.slice_size
        for c in range(1, cols):
            x = pad + round(c * dw / cols)
            d.line([(x, pad), (x, pad + dh)], fill=(255, 40, 40), width=line)
        for r in range(1, rows):
            y = pad + round(r * dh / rows)
            d.line([(pad, y), (pad + dw, y)], fill=(255, 40, 40), width=line)
        for r in range(rows):
            for c in range(cols):
                x, y = pad + round(c * dw / cols) + 4, pad + round(r * dh / rows) + 4
                label = f"{r * cols + c + 1}: {sw}x{sh}"
                d.rectangle([x, y, x + 7 * len(label), y + 12], fill=(0, 0, 0))
                d.text((x + 2, y), label, fill=(255, 255, 255))
    d.rectangle([pad - 1, pad - 1, pad + dw, pad + dh], outline=(255, 40, 40), width=line)
    d.rectangle([dw + 2 * pad - 1, pad - 1, dw + 2 * pad + tdw, pad + tdh], outline=(40, 90, 255), width=line)
    label = f"thumbnail {tw}x{th}"
    d.rectangle([dw + 2 * pad + 3, pad + 3, dw + 2 * pad + 5 + 7 * len(label), pad + 15], fill=(0, 0, 0))
    d.text((dw + 2 * pad + 5, pad + 3), label, fill=(255, 255, 255))
    grid = (
        f"grid {slicing.grid[0]}x{slicing.grid[1]} (cols x rows) of {slicing.slice_size[0]}x{slicing.slice_size[1]}"
        if slicing.grid
        else "no grid (thumbnail only)"
    )
    text = f"image {w}x{h}: thumbnail {tw}x{th} (blue), {grid}"
    if global_view is not None:
        text += f"; global encoding: one {global_view.size[0]}x{global_view.size[1]} view"
    d.text((pad, max(dh, tdh) + pad + 8), text, fill=(0, 0, 0))
    return canvas


# --------------------------------------------------------------------------------------------
# Image policies of other families (issue 13): views from the policy, FLOPs from the engine
# --------------------------------------------------------------------------------------------

VIT_PLAN = "vit"
"""The plan other families are counted under: their tower alone (post-ratio 1). The paper's 16x
plans (baseline, v4) do not fit most other towers' token grids (Qwen2.5-VL's 28 px multiples,
class tokens), and each family has its own merge/connector: their LLM tokens come from the policy."""

FAMILY_LLMS = {
    "minicpm-v-4.6": "qwen3-8b",
    "qwen2.5-vl": "qwen2.5-7b",
    "llava-next": "llama-2-7b",
    "internvl": "qwen2.5-7b",
    "llava-1.5": "llama-2-7b",
}
"""The LLM preset (``uhd_profile.model.llms``) each family's memory and planning use by default:
the LLaVA-UHD v4 paper's Qwen3-8B for MiniCPM-V 4.6 (the released checkpoint's LLM is smaller),
Qwen2.5-VL-7B's own text model, Vicuna-7B (Llama-2-7B geometry) for LLaVA-1.5/NeXT-7B, and
Qwen2.5-7B for InternVL (InternVL3-8B's LLM; InternVL2.5-8B's InternLM2.5-7B is close in size)."""


def policy_encoder(policy: str, encoder: str | None = None) -> str:
    """The tower a policy's views are counted on: ``minicpm-v-4.6`` keeps uhd-profile's choice
    (``encoder``, default the paper's SigLIP-2 so400m/14, run with our plans); every other family
    uses its own preset, and a different ``encoder`` is refused in one line."""
    pol = get_policy(policy)
    if policy == DEFAULT_POLICY:
        return encoder or DEFAULT_ENCODER
    if encoder is not None and encoder != pol.encoder:
        raise UhdProfileError(
            f"--encoder {encoder} conflicts with --policy {policy}, whose tower is {pol.encoder}; "
            f"drop --encoder (other towers are compared under the {DEFAULT_POLICY} policy)"
        )
    return pol.encoder


def policy_plans(policy: str, plans: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """The plans a policy is counted under: the paper's (``plans``, default baseline and v4) for
    ``minicpm-v-4.6``; ``("vit",)`` for the other families (``plans`` other than that refused)."""
    if policy == DEFAULT_POLICY:
        plans = tuple(dict.fromkeys(plans or PLANS))
        for p in plans:
            if p not in PLANS:
                raise UhdProfileError(f"variant {p!r} is not valid; valid: {', '.join(PLANS)}")
        return plans
    if plans and tuple(plans) != (VIT_PLAN,):
        raise UhdProfileError(
            f"--variant {plans[0]} applies to the {DEFAULT_POLICY} policy (the paper's designs); {policy} is counted "
            f"as its own tower alone (plan {VIT_PLAN!r})"
        )
    return (VIT_PLAN,)


def view_spec(encoder: str, plan: str, size: Size, depth: int | None = None) -> VariantSpec:
    """The one-view spec a call of ``plan`` over views of ``size`` runs: the paper's plans as
    ``plan_spec`` builds them, ``vit`` as the tower alone (post-ratio 1)."""
    if plan == VIT_PLAN:
        return VariantSpec(encoder=encoder, resolution=size, post_ratio=1)
    return plan_spec(plan, encoder, size, depth)


@lru_cache(maxsize=4096)
def count_views(encoder: str, plan: str, size: Size, views: int, depth: int | None = None) -> dict[str, int]:
    """Counts (``COUNT_COLUMNS`` -> int) of one forward call over ``views`` equal views of ``size``
    under ``plan`` (``baseline``, ``v4`` or ``vit``), counted on meta."""
    if plan != VIT_PLAN:
        return count_call(encoder, plan, size, views, depth)
    fc = count_flops(view_spec(encoder, plan, size), batch=views)
    if fc.uncounted_ops:
        raise UhdProfileError(f"{encoder} at {size}: ops with no FLOPs formula {fc.uncounted_ops}; counts would be incomplete")
    return {c.column: fc.get(c.name) for c in CONVENTIONS.values()}


def view_groups(views) -> list[tuple[int, Size]]:
    """The forward calls of a policy's views: equal sizes batched into one call (first
    appearance first), as ``count_call`` and the variants' batched layout run them."""
    groups: dict[Size, int] = {}
    for v in views.views:
        size = Size(*v.size)
        groups[size] = groups.get(size, 0) + 1
    return [(k, size) for size, k in groups.items()]


@dataclass
class PolicyCost:
    """One image under one policy: ``views`` (the policy's ``ImageViews``: views, tokens, extras),
    the tower and plans it is counted with, its forward ``calls`` ((views, size) per call), the
    exact counts per plan and count column, each view's share of its call, the variant ids per
    call, and notes on what is counted."""

    path: str | None
    size: Size
    policy: str
    encoder: str
    plans: tuple[str, ...]
    views: Any
    calls: list[tuple[int, Size]]
    counts: dict[str, dict[str, int]]
    view_counts: list[dict[str, dict[str, float]]]
    variant_ids: dict[str, list[str]]
    notes: list[str] = field(default_factory=list)

    @property
    def llm_tokens(self) -> int:
        """Everything the LLM sees for the image (visual tokens and extras), from the policy."""
        return self.views.llm_tokens

    def to_json(self, convention: str = "macs") -> dict:
        """The ``policy_views`` object of ``image --json``: the policy's views with ``patch_grid``
        [cols, rows] and ``gflops`` per plan (count / 1e9 in ``convention``), extras, notes, token
        totals, ``calls`` (views, size, variant id per plan), and ``gflops`` / ``counts`` per plan."""
        col = get_convention(convention).column
        d = self.views.to_dict()
        views = []
        for v, vc in zip(d["views"], self.view_counts):
            v = dict(v)
            v["patch_grid"] = v.pop("patches")
            v["gflops"] = {p: vc[p][col] / 1e9 for p in self.plans}
            views.append(v)
        out = {k: d[k] for k in ("grid", "canvas", "content")}
        out.update(
            views=views,
            extras=d["extras"],
            notes=d["notes"] + self.notes,
            vit_tokens=d["vit_tokens"],
            view_llm_tokens=d["view_llm_tokens"],
            extra_tokens=d["extra_tokens"],
            llm_tokens=d["llm_tokens"],
            processor_tokens=d["processor_tokens"],
            calls=[
                {"views": k, "size": list(size), "variant_ids": {p: self.variant_ids[p][i] for p in self.plans}}
                for i, (k, size) in enumerate(self.calls)
            ],
            gflops={p: self.counts[p][col] / 1e9 for p in self.plans},
            counts=self.counts,
        )
        return out


def cost_policy_image(
    w: int,
    h: int,
    policy: str = DEFAULT_POLICY,
    params: dict | None = None,
    plans: tuple[str, ...] | None = None,
    encoder: str | None = None,
    depth: int | None = None,
    path: str | None = None,
) -> PolicyCost:
    """Views and tokens of a w x h image under ``policy`` (``params`` override its defaults), and
    FLOPs per view and in total, counted by the engine: equal view sizes as one batched call on
    the policy's tower (``policy_encoder``), under ``policy_plans``."""
    size = check_image_size(w, h)
    pol = get_policy(policy)
    encoder = policy_encoder(policy, encoder)
    plans = policy_plans(policy, plans)
    views = pol.views(size.width, size.height, **(params or {}))
    calls = view_groups(views)
    counts = {p: dict.fromkeys(COUNT_COLUMNS, 0) for p in plans}
    per_size: dict[Size, dict[str, dict[str, float]]] = {}
    ids: dict[str, list[str]] = {p: [] for p in plans}
    for k, vsize in calls:
        per_size[vsize] = {}
        for p in plans:
            call = count_views(encoder, p, vsize, k, depth)
            for c in COUNT_COLUMNS:
                counts[p][c] += call[c]
            per_size[vsize][p] = {c: call[c] / k for c in COUNT_COLUMNS}
            ids[p].append(view_spec(encoder, p, vsize, depth).id)
    notes = []
    if policy != DEFAULT_POLICY:
        notes.append(
            f"FLOPs are {encoder}'s tower alone (post-ratio 1): the paper's 16x plans do not fit this family's token grids; "
            f"the family's own {pol.merge}:1 merge/projector is not counted, its LLM tokens come from the policy"
        )
    return PolicyCost(
        path=path,
        size=size,
        policy=policy,
        encoder=encoder,
        plans=plans,
        views=views,
        calls=calls,
        counts=counts,
        view_counts=[per_size[Size(*v.size)] for v in views.views],
        variant_ids=ids,
        notes=notes,
    )


def policy_rows(cost: PolicyCost) -> list[dict]:
    """Flat rows (one per plan) of one image under a non-default policy, with the columns of
    ``cost_rows`` (``encoding`` is ``"policy"``: the family's own views) plus ``policy`` and
    ``extra_tokens``; ``llm_tokens`` are visual tokens, as in ``cost_rows``."""
    v = cost.views
    return [
        {
            "path": cost.path,
            "width": cost.size[0],
            "height": cost.size[1],
            "policy": cost.policy,
            "encoding": "policy",
            "plan": p,
            "views": len(v.views),
            "grid_cols": v.grid[0] if v.grid else None,
            "grid_rows": v.grid[1] if v.grid else None,
            "vit_tokens": v.vit_tokens,
            "llm_tokens": v.view_llm_tokens,
            "extra_tokens": v.extra_tokens,
            **cost.counts[p],
            "variant_id": ";".join(cost.variant_ids[p]),
        }
        for p in cost.plans
    ]


# --------------------------------------------------------------------------------------------
# The LLM stages of an image (image/dataset --llm)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LlmStages:
    """The LLM stages of one image, counted by the engine (``count_llm`` on ``meta``): the prefill
    over ``visual_tokens`` (everything the LLM sees for the image) plus ``prompt_tokens``, then
    ``decode_tokens`` generated with a KV cache. Counts per count column (``macs``, ``flops``,
    ``paper_flops``); causal attention as each convention charges it (docs/llm.md)."""

    llm: str
    visual_tokens: int
    prompt_tokens: int
    decode_tokens: int
    prefill: dict[str, int]
    decode: dict[str, int]
    kv_cache_bf16_bytes: int

    def to_json(self) -> dict:
        return {
            "llm": self.llm,
            "visual_tokens": self.visual_tokens,
            "prompt_tokens": self.prompt_tokens,
            "decode_tokens": self.decode_tokens,
            "prefill": dict(self.prefill),
            "decode": dict(self.decode),
            "kv_cache_bf16_bytes": self.kv_cache_bf16_bytes,
        }


@lru_cache(maxsize=4096)
def llm_stage_counts(llm: str, visual_tokens: int, prompt_tokens: int = 64, decode_tokens: int = 0) -> LlmStages:
    """``LlmStages`` of an image the LLM sees as ``visual_tokens`` tokens (cached per token count:
    the LLM's cost depends on the image only through it)."""
    get_llm(llm)  # an unknown preset is one line before anything is built
    c = count_llm(llm, visual_tokens, prompt_tokens, decode_tokens)
    cols = {conv.column: conv.name for conv in CONVENTIONS.values()}
    return LlmStages(
        llm=llm,
        visual_tokens=visual_tokens,
        prompt_tokens=prompt_tokens,
        decode_tokens=decode_tokens,
        prefill={col: c.prefill_total(name) for col, name in cols.items()},
        decode={col: c.decode_total(name) for col, name in cols.items()},
        kv_cache_bf16_bytes=c.cache_after_decode.bytes("bf16"),
    )


LLM_COLUMNS = tuple(f"llm_{stage}_{col}" for stage in ("prefill", "decode") for col in COUNT_COLUMNS)
"""Per-image row columns ``dataset --llm`` adds (the LLM stages, per count column)."""


def add_llm_stages(
    rows: list[dict],
    llm: str,
    prompt_tokens: int = 64,
    decode_tokens: int = 0,
    max_slices: int = MAX_SLICE_NUMS,
    scale_resolution: int = SCALE_RESOLUTION,
) -> list[dict]:
    """``rows`` (``cost_rows`` / ``policy_rows``) with the LLM stages of each: ``llm``,
    ``llm_input_tokens`` (visual tokens and the policy's extras, as ``image --llm`` counts them),
    ``llm_prefill_<col>``, ``llm_decode_<col>`` and ``total_<col>`` (vision and connector plus both
    LLM stages)."""
    out = []
    for r in rows:
        extra = r.get("extra_tokens")
        if extra is None or extra != extra:  # minicpm rows of plain ``dataset``: extras of its sliced views
            extra = 0
            if r["encoding"] == "sliced":
                views = get_policy(DEFAULT_POLICY).views(
                    r["width"], r["height"], max_slice_nums=max_slices, scale_resolution=scale_resolution
                )
                extra = views.extra_tokens
        st = llm_stage_counts(llm, int(r["llm_tokens"]) + int(extra), prompt_tokens, decode_tokens)
        row = {**r, "llm": llm, "llm_input_tokens": st.visual_tokens}
        for col in COUNT_COLUMNS:
            row[f"llm_prefill_{col}"] = st.prefill[col]
            row[f"llm_decode_{col}"] = st.decode[col]
            row[f"total_{col}"] = r[col] + st.prefill[col] + st.decode[col]
        out.append(row)
    return out


def cost_policies_dataset(
    paths,
    policies: list[tuple[str, dict]],
    encoder: str | None = None,
    plans: tuple[str, ...] | None = None,
    max_slices: int = MAX_SLICE_NUMS,
    scale_resolution: int = SCALE_RESOLUTION,
    progress=None,
    depth: int | None = None,
    exif_transpose: bool = False,
) -> tuple[list[dict], list[dict]]:
    """Rows for every readable image in ``paths`` under each of ``policies`` ((name, params)),
    side by side: ``minicpm-v-4.6`` as ``cost_rows`` (global and sliced, the paper's plans; its
    params are ``max_slices``/``scale_resolution``), the others as ``policy_rows``. Every row has a
    ``policy`` column. Skipped files as ``{"path", "reason"}``."""
    for name, params in policies:  # bad names and parameters fail once, here, not per image
        get_policy(name).views(1024, 1024, **(params or {}))
    rows: list[dict] = []
    skipped: list[dict] = []
    for p, w, h in _sized(paths, exif_transpose, skipped, progress):
        for name, params in policies:
            if name == DEFAULT_POLICY:
                params = {"max_slice_nums": max_slices, "scale_resolution": scale_resolution, **(params or {})}
                m, s = params["max_slice_nums"], params["scale_resolution"]
                cost = cost_image(w, h, encoder, policy_plans(name, plans), IMAGE_ENCODINGS, m, s, path=str(p), depth=depth)
                extra = get_policy(name).views(w, h, **params).extra_tokens
                for r in cost_rows(cost):
                    rows.append({**r, "policy": name, "extra_tokens": extra if r["encoding"] == "sliced" else None})
            else:
                rows.extend(policy_rows(cost_policy_image(w, h, name, params, None, None, path=str(p), depth=depth)))
    return _readable(rows, skipped)


def summarize_policies(rows: list[dict]):
    """``summarize`` per policy too: one row per policy, encoding, plan and metric."""
    import pandas as pd

    df = pd.DataFrame(rows)
    if df.empty or "policy" not in df:
        out = summarize(rows)
        out.insert(0, "policy", pd.Series(dtype="string"))
        return out
    parts = []
    for name, g in df.groupby("policy", sort=False):
        s = summarize(g.to_dict(orient="records"))
        s.insert(0, "policy", name)
        parts.append(s)
    return pd.concat(parts, ignore_index=True)


def policies_histogram(rows: list[dict], convention: str = "macs"):
    """Figure: per-image cost (G, in ``convention``) per policy, encoding and plan, and visual
    tokens to the LLM per policy and encoding (its first plan), for ``cost_policies_dataset`` rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import pandas as pd

    conv = get_convention(convention)
    df = pd.DataFrame(rows)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    if not df.empty:
        bins = np.linspace(0, max(float(df[conv.column].max()) / 1e9, 1e-9) * 1.02, 31)
        for (pol, enc, plan), g in df.groupby(["policy", "encoding", "plan"], sort=False):
            axes[0].hist(g[conv.column] / 1e9, bins=bins, alpha=0.5, label=f"{pol} {enc}, {plan}")
        bins = np.linspace(0, max(float(df["llm_tokens"].max()), 1.0) * 1.02, 31)
        for (pol, enc), g in df.groupby(["policy", "encoding"], sort=False):
            first = g[g["plan"] == g["plan"].iloc[0]]
            axes[1].hist(first["llm_tokens"], bins=bins, alpha=0.5, label=f"{pol} {enc}")
    axes[0].set(
        xlabel=f"visual encoding per image, {conv.giga} ({convention} convention)", ylabel="images", title="cost per image"
    )
    axes[1].set(xlabel="visual tokens to the LLM per image", ylabel="images", title="LLM tokens per image")
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    n = df["path"].nunique() if not df.empty else 0
    fig.suptitle(f"{n} images under {', '.join(dict.fromkeys(df['policy'])) if not df.empty else 'no policy'}")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# Memory of an image (the memory model: uhd_profile.count.memory_model)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemorySettings:
    """How an image's memory is predicted: ``dtype``, attention path ``attn`` (sdpa | eager),
    ``device_kind`` (cpu | cuda), the ``llm`` preset of the LLM stage (None: the vision stage
    only), ``prompt_tokens`` after the image and ``decode_tokens`` generated."""

    dtype: str = "bf16"
    attn: str = "sdpa"
    device_kind: str = "cuda"
    llm: str | None = None
    prompt_tokens: int = 64
    decode_tokens: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", parse_dtype(self.dtype))
        check_attn_path(self.attn)
        check_device_kind(self.device_kind)
        if self.llm is not None:
            get_llm(self.llm)
        for name in ("prompt_tokens", "decode_tokens"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise UhdProfileError(f"{name} {v!r} is not valid; it must be an integer >= 0")


def spec_memory(spec: VariantSpec, settings: MemorySettings, llm_tokens: int | None = None):
    """The ``MemoryPrediction`` of one image encoded as ``spec`` (its vision stage, per call too)
    and, with ``settings.llm``, the LLM stage over ``llm_tokens`` (default ``spec.tokens_llm``)."""
    s = settings
    if s.llm is None:
        return predict_memory(spec, s.dtype, 1, s.attn, s.device_kind)
    return predict_pipeline_memory(
        spec, s.llm, s.prompt_tokens, s.decode_tokens, s.dtype, s.attn, s.device_kind, visual_tokens=llm_tokens
    )


def policy_memory(cost: PolicyCost, plan: str, settings: MemorySettings, depth: int | None = None):
    """The ``MemoryPrediction`` of one image under its policy and ``plan`` (``depth`` moves v4's
    compressor): ``views_memory`` of the cost's views."""
    return views_memory(cost.policy, cost.encoder, cost.size, cost.views, plan, settings, depth)


def views_memory(policy: str, encoder: str, size: Size, views, plan: str, settings: MemorySettings, depth: int | None = None):
    """The ``MemoryPrediction`` of a ``size`` image whose ``views`` (the policy's ``ImageViews``)
    run on ``encoder`` under ``plan``, with no FLOPs counted: the vision stage as the family runs its
    views (``minicpm-v-4.6``: the whole sliced image, thumbnail and slices as two calls; the
    others: their equal views as one batched call), then with ``settings.llm`` the LLM stage over
    everything the LLM sees for the image (visual tokens and extras) plus the prompt."""
    s = settings
    if policy == DEFAULT_POLICY:
        p = views.params
        spec = plan_spec(
            plan,
            encoder,
            size,
            depth,
            encoding="sliced",
            max_slices=p["max_slice_nums"],
            scale_resolution=p["scale_resolution"],
        )
        return spec_memory(spec, s, views.llm_tokens)
    groups = view_groups(views)
    calls = tuple(vision_stage(view_spec(encoder, plan, vsize, depth), s.dtype, k, s.attn, s.device_kind) for k, vsize in groups)
    # the current families run all their views in one call; should one run several, the largest is the stage
    vision = max(calls, key=lambda c: c.held_bytes + c.activation_bytes)
    stages = [vision]
    if s.llm is not None:
        stages += llm_stages(s.llm, views.llm_tokens, s.prompt_tokens, s.decode_tokens, s.dtype, s.attn, s.device_kind)
    what = f"{size} under {policy} ({plan})" + (f" + {s.llm}" if s.llm else "")
    return combine(what, stages, calls if len(calls) > 1 else (), s.dtype, 1, s.attn, s.device_kind)
