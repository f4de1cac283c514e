"""``uhd-profile report``: a run directory -> Markdown and self-contained HTML report (see uhd_profile.analyse.report)."""

from __future__ import annotations

from pathlib import Path

import click

from uhd_profile.analyse.quality import read_quality
from uhd_profile.analyse.report import parse_formats, write_report
from uhd_profile.cli.console import out


@click.command()
@click.argument("run_dir")
@click.option("--out", "out_dir", default=None, help="report directory [default: RUN_DIR/report]")
@click.option("--format", "formats", default="md,html", show_default=True, help="comma-separated: md, html")
@click.option(
    "--quality",
    "quality",
    multiple=True,
    help="scores to join to the run: a CSV keyed by variant_id or encoder/compressor/depth/encoding, or an lmms-eval "
    "results JSON as PATH=VARIANT (a variant id, baseline, v4 or COMPRESSOR@DEPTH); repeat for several",
)
@click.option(
    "--no-recount",
    is_flag=True,
    help="do not count paper figures the run lacks (they show as 'not in run'); the per-layer breakdown is still counted",
)
def report(run_dir: str, out_dir: str | None, formats: str, quality: tuple[str, ...], no_recount: bool) -> None:
    """Write the report of RUN_DIR (a `uhd-profile sweep` run directory): headline, paper reproduction
    table, quality against cost, Pareto fronts, per-layer breakdown, global vs sliced, measurement
    quality, conventions; figures as PNG + SVG + CSV."""
    fmts = parse_formats(formats)  # a bad --format fails before any work
    if quality:
        read_quality(quality)  # a bad score file fails before any work, in one line
    written = write_report(run_dir, out_dir, fmts, recount=not no_recount, quality=quality)
    where = Path(out_dir) if out_dir is not None else Path(run_dir) / "report"
    n_fig = sum(1 for k in written if k.startswith("figures/") and k.endswith(".png"))
    n_tab = sum(1 for k in written if k.startswith("tables/"))
    out.print(
        f"report of {run_dir}: {n_fig} figure{'s' if n_fig != 1 else ''} (PNG + SVG + CSV), "
        f"{n_tab} table{'s' if n_tab != 1 else ''} (CSV) in {where}",
        markup=False,
        highlight=False,
    )
    for key in ("md", "html"):
        if key in written:
            out.print(written[key], markup=False, highlight=False)
