"""Real image files: their size as a processor sees it, and a picture of the views a policy makes.

* ``image_size(path)`` reads an image's (width, height) from its header: as stored, like the
  ``transformers`` image processors see a PIL image (no EXIF transpose); ``exif_transpose=True``
  gives the size as displayed (EXIF orientations 5-8 swap the sides).
* ``draw_views(path, views)`` the image with the policy's grid of slices or tiles and each one's
  size, and beside it the whole-image views (a thumbnail, a base view) at the same scale (PIL).

What an image costs is ``uhd_profile.analyse.cost``; a folder of images ``uhd_profile.analyse.dataset``.
"""

from __future__ import annotations

import os
from pathlib import Path

from uhd_profile.errors import UhdProfileError
from uhd_profile.model.policies import ImageViews
from uhd_profile.units import Size

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


def draw_views(path: str | os.PathLike, views: ImageViews, max_side: int = 1600, exif_transpose: bool = False):
    """A PIL image: the picture (scaled to at most ``max_side`` px) with the policy's grid of
    slices or tiles and each one's size, and beside it the first whole-image view (a thumbnail, a
    base or global view) at the same scale; the views in the caption. The picture is drawn as
    stored, or as displayed with ``exif_transpose`` (as it was sized)."""
    from PIL import Image, ImageDraw, ImageOps

    with Image.open(path) as im:
        pic = (ImageOps.exif_transpose(im) if exif_transpose else im).convert("RGB")
    w, h = pic.size
    scale = min(1.0, max_side / max(w, h))
    dw, dh = max(1, round(w * scale)), max(1, round(h * scale))
    pic = pic.resize((dw, dh))
    whole = next((v for v in views.views if v.position is None), views.views[0])
    tw, th = whole.size
    tdw, tdh = max(1, round(tw * scale)), max(1, round(th * scale))  # the whole view at the picture's scale
    thumb = pic.resize((tdw, tdh))
    pad, caption = 12, 44
    canvas = Image.new("RGB", (dw + pad * 3 + tdw, max(dh, tdh) + pad * 2 + caption), "white")
    canvas.paste(pic, (pad, pad))
    canvas.paste(thumb, (dw + 2 * pad, pad))
    d = ImageDraw.Draw(canvas)
    line = max(2, round(min(dw, dh) / 200))
    tiles = {v.position: v.size for v in views.views if v.position is not None}
    if views.grid is not None:
        cols, rows = views.grid
        for c in range(1, cols):
            x = pad + round(c * dw / cols)
            d.line([(x, pad), (x, pad + dh)], fill=(255, 40, 40), width=line)
        for r in range(1, rows):
            y = pad + round(r * dh / rows)
            d.line([(pad, y), (pad + dw, y)], fill=(255, 40, 40), width=line)
        for r in range(rows):
            for c in range(cols):
                x, y = pad + round(c * dw / cols) + 4, pad + round(r * dh / rows) + 4
                size = tiles.get((c, r))
                label = f"{r * cols + c + 1}: {Size(*size)}" if size else f"{r * cols + c + 1}"
                d.rectangle([x, y, x + 7 * len(label), y + 12], fill=(0, 0, 0))
                d.text((x + 2, y), label, fill=(255, 255, 255))
    d.rectangle([pad - 1, pad - 1, pad + dw, pad + dh], outline=(255, 40, 40), width=line)
    d.rectangle([dw + 2 * pad - 1, pad - 1, dw + 2 * pad + tdw, pad + tdh], outline=(40, 90, 255), width=line)
    label = f"{whole.role} {tw}x{th}"
    d.rectangle([dw + 2 * pad + 3, pad + 3, dw + 2 * pad + 5 + 7 * len(label), pad + 15], fill=(0, 0, 0))
    d.text((dw + 2 * pad + 5, pad + 3), label, fill=(255, 255, 255))
    grid = f"grid {views.grid[0]}x{views.grid[1]} (cols x rows)" if views.grid else "no grid"
    text = f"image {w}x{h} under {views.policy}: {whole.role} {tw}x{th} (blue), {grid}, {len(views.views)} views"
    d.text((pad, max(dh, tdh) + pad + 8), text, fill=(0, 0, 0))
    return canvas


__all__ = ["draw_views", "image_size"]
