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

from uhd_profile.count.conventions import CONVENTIONS, get_convention
from uhd_profile.count.flops import count_flops
from uhd_profile.errors import UhdProfileError
from uhd_profile.model.encoders import DEFAULT_ENCODER, get_encoder
from uhd_profile.model.slicing import MAX_SLICE_NUMS, SCALE_RESOLUTION, Slicing, check_image_size, check_params
from uhd_profile.model.variants import ALIASES, VariantSpec
from uhd_profile.units import Size

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
    for p in paths:
        try:
            w, h = image_size(p, exif_transpose)
        except UhdProfileError as exc:
            skipped.append({"path": str(p), "reason": str(exc)})
        else:
            cost = cost_image(w, h, encoder, plans, IMAGE_ENCODINGS, max_slices, scale_resolution, path=str(p), depth=depth)
            rows.extend(cost_rows(cost))
        if progress is not None:
            progress(p)
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
    for (enc, plan), g in df.groupby(["encoding", "plan"], sort=True):
        for m in METRICS:
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
