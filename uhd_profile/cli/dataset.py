"""``uhd-profile dataset``: what every image of a folder costs, under one or more policies
(``uhd_profile.analyse.dataset``).

Thin: parse, call the API, write the four files, render. User mistakes raise ``UhdProfileError``
(one line, exit 2; a failed write exit 3).
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from uhd_profile.analyse.dataset import cost_dataset, frame, histogram, list_files, summarize, summary_json
from uhd_profile.cli.console import err, out
from uhd_profile.cli.options import convention_option
from uhd_profile.cli.policy_options import item_options, llm_options, llm_settings, policy_choices
from uhd_profile.cli.render import print_dataset_llm, summary_table
from uhd_profile.count.conventions import get_convention
from uhd_profile.errors import UhdProfileError
from uhd_profile.files import atomic_write_bytes, check_output_dir


@contextlib.contextmanager
def progress_bar(what: str, total: int):
    """A transient progress bar on stderr; yields ``advance(item)``, called once per item done."""
    with Progress(TextColumn(what), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err, transient=True) as bar:
        task = bar.add_task(what, total=total)
        yield lambda _item: bar.advance(task)


@click.command()
@click.argument("directory")
@click.option("--out", "out_dir", default=None, help="output folder [default: ./dataset-<DIRECTORY name>]")
@item_options(several_policies=True)
@convention_option
@llm_options
def dataset(directory, out_dir, convention, llm, prompt_tokens, decode_tokens, **item):
    """Per-image cost of every image in DIRECTORY under each --policy (default minicpm-v-4.6, global
    and sliced, under baseline and v4): per_image.csv, summary.csv/summary.json (mean, median, p90,
    total per policy, encoding and variant) and histogram.png. Unreadable files are listed and
    skipped; the tool's own output files are never read as images."""
    items = policy_choices(**item)
    stages = llm_settings(llm, prompt_tokens, decode_tokens)
    files = list_files(directory)
    if not files:
        raise UhdProfileError(f"{directory}: holds no files; give a folder of images")
    dest = check_output_dir(Path(out_dir) if out_dir else Path(f"dataset-{Path(directory).resolve().name}"), "--out")
    with progress_bar("costing images", len(files)) as advance:
        rows, skipped = cost_dataset(files, items, item["exif_transpose"], stages, advance)
    summary = summarize(rows)
    meta = summary_json(str(directory), items, rows, skipped, summary, stages)
    # every file is rendered first, then each written whole (a temporary file renamed over it): a
    # killed or failed write leaves each file as it was or as it is now, never torn
    figure = io.BytesIO()
    histogram(rows, convention).savefig(figure, format="png", dpi=110)
    files = {
        "per_image.csv": frame(rows).to_csv(index=False).encode(),
        "summary.csv": summary.to_csv(index=False).encode(),
        "summary.json": json.dumps(meta, indent=1).encode(),
        "histogram.png": figure.getvalue(),
    }
    for name, data in files.items():
        atomic_write_bytes(dest / name, data, "--out", kept="the files already there are whole")
    unit = get_convention(convention).giga
    names = ", ".join(dict.fromkeys(it.policy for it in items))
    title = f"{meta['images']} images in {directory} under {names} ({unit}, {convention} convention)"
    out.print(summary_table(summary, title, convention))
    out.print(f"wrote {dest}/per_image.csv, summary.csv, summary.json, histogram.png")
    if stages is not None:
        print_dataset_llm(summary, stages, convention)
    for s in skipped:
        err.print(f"skipped: {s['reason']}", markup=False, highlight=False)
