"""``uhd-profile image`` and ``uhd-profile dataset``: what real images cost, sliced vs global.

Thin: parse, call ``uhd_profile.analyse.images``, render. User mistakes raise ``UhdProfileError`` (one
line, exit 2, printed by ``cli.main``).
"""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from uhd_profile.analyse.images import (
    PLANS,
    cost_dataset,
    cost_image,
    draw_slicing,
    frame,
    histogram,
    image_size,
    list_files,
    summarize,
)
from uhd_profile.cli.console import err, out, warn
from uhd_profile.cli.options import convention_option, encoder_option
from uhd_profile.count.conventions import CONVENTIONS, get_convention
from uhd_profile.errors import UhdProfileError
from uhd_profile.files import check_output_dir, check_output_file, output_error
from uhd_profile.model.encoders import get_encoder
from uhd_profile.model.slicing import (
    MAX_SLICE_NUMS,
    SCALE_RESOLUTION,
    check_image_size,
    check_params,
    global_resize,
    slice_image,
)
from uhd_profile.units import Size

_SIZE = re.compile(r"(-?\d+)x(-?\d+)")


def _choices(encoding: str) -> tuple[str, ...]:
    valid = {"sliced": ("sliced",), "global": ("global",), "both": ("global", "sliced")}
    if encoding not in valid:
        raise UhdProfileError(f"--encoding {encoding!r} is not valid; valid: sliced, global, both")
    return valid[encoding]


def _plans(variants: tuple[str, ...]) -> tuple[str, ...]:
    plans = tuple(dict.fromkeys(variants)) or PLANS
    for p in plans:
        if p not in PLANS:
            raise UhdProfileError(f"--variant {p!r} is not valid; valid: {', '.join(PLANS)} (repeat the option for several)")
    return plans


def _target(arg: str, exif_transpose: bool = False) -> tuple[str | None, Size]:
    """An image file -> (path, its size); a size ``WxH`` that is not a file -> (None, that size)."""
    m = _SIZE.fullmatch(arg)
    if m and not Path(arg).exists():
        return None, check_image_size(int(m.group(1)), int(m.group(2)))
    return arg, image_size(arg, exif_transpose)


def _g(v: float) -> str:
    return f"{v:,.1f}"


def image_reading_options(f):
    """--exif-transpose and --depth, shared by ``image`` and ``dataset``."""
    f = click.option(
        "--depth",
        default=None,
        type=int,
        help="layer index after which v4's compressor runs [default: 6, the paper's]",
    )(f)
    return click.option(
        "--exif-transpose",
        is_flag=True,
        help="size images as displayed (EXIF rotation applied) [default: as stored, like the MiniCPM-V 4.6 processor]",
    )(f)


@click.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--encoding", default="both", show_default=True, help="sliced | global | both")
@click.option(
    "--max-slices",
    default=MAX_SLICE_NUMS,
    type=int,
    show_default=True,
    help="most slices per image (M); the global view has at most M x S^2 px",
)
@click.option(
    "--scale-resolution",
    default=SCALE_RESOLUTION,
    type=int,
    show_default=True,
    help="slice size S in px (area S^2), a multiple of patch x 4",
)
@click.option("--variant", "variants", multiple=True, help=f"{' | '.join(PLANS)}; repeat for several [default: all]")
@encoder_option
@convention_option
@image_reading_options
@click.option("--json", "as_json", is_flag=True, help="print a JSON list, one object per image")
@click.option(
    "--draw",
    "draw_path",
    default=None,
    help="write the image with its slice grid and thumbnail to this PNG "
    "(several images: -<image name> is added before the suffix)",
)
def image(
    paths, encoding, max_slices, scale_resolution, variants, encoder, convention, exif_transpose, depth, as_json, draw_path
):
    """Views, tokens and FLOPs of each image (PATH: an image file, or a size WxH) encoded sliced
    (thumbnail + grid of slices) and globally (one resized view), per compression plan."""
    conv = get_convention(convention)
    col = conv.column
    encodings = _choices(encoding)
    plans = _plans(variants)
    align = get_encoder(encoder).patch * 4  # VariantSpec.align
    check_params(max_slices, scale_resolution, align)
    if draw_path is not None:
        check_output_file(draw_path, "--draw")
    targets = [_target(p, exif_transpose) for p in paths]
    if draw_path is not None:
        sizes_only = [str(size) for p, size in targets if p is None]
        if sizes_only:
            raise UhdProfileError(f"--draw needs image files, but {sizes_only[0]} is a size; give the image's path")
    results = [
        cost_image(w, h, encoder, plans, encodings, max_slices, scale_resolution, path=p, depth=depth) for p, (w, h) in targets
    ]
    if "global" in encodings:  # an image too thin for aligned views: its global view was cut to the cap
        for _, (w, h) in targets:
            capped = global_resize(w, h, max_slices, scale_resolution, align).note
            if capped:
                warn(capped)
    if draw_path is not None:
        base = Path(draw_path)
        seen: dict[str, int] = {}
        for p, (w, h) in targets:
            dest = base
            if len(targets) > 1:
                stem = Path(p).stem
                seen[stem] = seen.get(stem, 0) + 1
                tag = stem if seen[stem] == 1 else f"{stem}-{seen[stem]}"
                dest = base.with_name(f"{base.stem}-{tag}{base.suffix or '.png'}")
            sl = slice_image(w, h, max_slices, scale_resolution, align)
            gv = global_resize(w, h, max_slices, scale_resolution, align) if "global" in encodings else None
            try:
                picture = draw_slicing(p, sl, gv, exif_transpose=exif_transpose)
                dest.parent.mkdir(parents=True, exist_ok=True)
                picture.save(dest, format="PNG")
            except OSError as exc:
                raise UhdProfileError(f"--draw: could not draw {p} into {dest}: {str(exc).splitlines()[0]}") from None
            err.print(f"wrote {dest}", markup=False, highlight=False)
    if as_json:
        click.echo(json.dumps([r.to_json(convention) for r in results]))
        return
    unit = conv.giga
    for r in results:
        name = r.path or "(size only)"
        t = Table(
            title=f"{name}: {r.size} px (w x h), {r.encoder}; {unit} in the {convention} convention ({conv.meaning})",
            title_justify="left",
        )
        for title in (
            "encoding",
            "view",
            "size (w x h)",
            "patches (w x h)",
            "ViT tokens",
            *(f"LLM tokens {p}" for p in plans),
            *(f"{unit} {p}" for p in plans),
        ):
            t.add_column(title, justify="left" if title in ("encoding", "view") else "right")
        for enc, e in r.encodings.items():
            for i, v in enumerate(e.views):
                label = v.role if v.role != "slice" else f"slice {i}"
                t.add_row(
                    enc,
                    label,
                    str(v.size),
                    f"{v.grid[1]}x{v.grid[0]}",
                    f"{v.vit_tokens:,}",
                    *(f"{v.llm_tokens[p]:,}" for p in plans),
                    *(_g(v.counts[p][col] / 1e9) for p in plans),
                )
            n = f"{len(e.views)} view" + ("s" if len(e.views) > 1 else "")
            what = f"{n}, grid {e.grid[0]}x{e.grid[1]} (cols x rows)" if e.grid else (f"{n}, no grid" if enc == "sliced" else n)
            t.add_row(
                f"[b]{enc} total[/]",
                what,
                "",
                "",
                f"[b]{e.vit_tokens:,}[/]",
                *(f"[b]{e.llm_tokens[p]:,}[/]" for p in plans),
                *(f"[b]{_g(e.counts[p][col] / 1e9)}[/]" for p in plans),
                end_section=True,
            )
        out.print(t)
        if len(r.encodings) == 2:
            g, s = r.encodings["global"], r.encodings["sliced"]
            for p in plans:
                ratio = s.counts[p][col] / g.counts[p][col]
                out.print(
                    f"{p}: sliced / global = {ratio:.2f}x the {unit}, {s.llm_tokens[p] / g.llm_tokens[p]:.2f}x the LLM tokens"
                )


@contextlib.contextmanager
def _writing(dest: Path):
    """An ``OSError`` while writing the dataset's files, as one line (exit 2 or 3)."""
    try:
        yield
    except OSError as exc:
        raise output_error(exc, dest, "--out", kept="files written there before may be incomplete") from None


@click.command()
@click.argument("directory")
@click.option("--out", "out_dir", default=None, help="output folder [default: ./dataset-<DIRECTORY name>]")
@click.option("--max-slices", default=MAX_SLICE_NUMS, type=int, show_default=True, help="most slices per image (M)")
@click.option(
    "--scale-resolution",
    default=SCALE_RESOLUTION,
    type=int,
    show_default=True,
    help="slice size S in px, a multiple of patch x 4",
)
@click.option("--variant", "variants", multiple=True, help=f"{' | '.join(PLANS)}; repeat for several [default: all]")
@encoder_option
@convention_option
@image_reading_options
def dataset(directory, out_dir, max_slices, scale_resolution, variants, encoder, convention, exif_transpose, depth):
    """Per-image cost of every image in DIRECTORY, global vs sliced, per plan: per_image.csv,
    summary.csv/summary.json (mean, median, p90, total) and histogram.png. Unreadable files are
    listed and skipped."""
    conv = get_convention(convention)
    plans = _plans(variants)
    check_params(max_slices, scale_resolution, get_encoder(encoder).patch * 4)
    files = list_files(directory)
    if not files:
        raise UhdProfileError(f"{directory}: holds no files; give a folder of images")
    dest = check_output_dir(Path(out_dir) if out_dir else Path(f"dataset-{Path(directory).resolve().name}"), "--out")
    with Progress(
        TextColumn("costing images"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err, transient=True
    ) as bar:
        task = bar.add_task("images", total=len(files))
        rows, skipped = cost_dataset(
            files, encoder, plans, max_slices, scale_resolution, lambda p: bar.advance(task), depth, exif_transpose
        )
    with _writing(dest):
        dest.mkdir(parents=True, exist_ok=True)
        frame(rows).to_csv(dest / "per_image.csv", index=False)
    summary = summarize(rows)
    with _writing(dest):
        summary.to_csv(dest / "summary.csv", index=False)
    meta = {
        "directory": str(directory),
        "encoder": encoder,
        "plans": list(plans),
        "max_slices": max_slices,
        "scale_resolution": scale_resolution,
        "images": len({r["path"] for r in rows}),
        "skipped": skipped,
        "units": {
            "vit_tokens": "tokens",
            "llm_tokens": "tokens",
            **{c.column: f"{c.unit} ({c.name} convention)" for c in CONVENTIONS.values()},
        },
        "conventions": {c.name: c.meaning for c in CONVENTIONS.values()},
        "summary": summary.to_dict(orient="records"),
    }
    fig = histogram(rows, convention)
    with _writing(dest):
        (dest / "summary.json").write_text(json.dumps(meta, indent=1))
        fig.savefig(dest / "histogram.png", dpi=110)
    unit = conv.giga
    t = Table(title=f"{meta['images']} images in {directory} ({encoder}; {unit}, {convention} convention)", title_justify="left")
    for title in ("encoding", "plan", "LLM tokens mean", "median", "p90", f"{unit} mean", "median", "p90", f"{unit} total"):
        t.add_column(title, justify="left" if title in ("encoding", "plan") else "right")
    if not summary.empty:
        for (enc, plan), g in summary.groupby(["encoding", "plan"], sort=True):
            tok = g[g.metric == "llm_tokens"].iloc[0]
            fl = g[g.metric == conv.column].iloc[0]
            t.add_row(
                enc,
                plan,
                f"{tok['mean']:,.0f}",
                f"{tok['median']:,.0f}",
                f"{tok['p90']:,.0f}",
                _g(fl["mean"] / 1e9),
                _g(fl["median"] / 1e9),
                _g(fl["p90"] / 1e9),
                _g(fl["total"] / 1e9),
            )
    out.print(t)
    out.print(f"wrote {dest}/per_image.csv, summary.csv, summary.json, histogram.png")
    for s in skipped:
        err.print(f"skipped: {s['reason']}", markup=False, highlight=False)
