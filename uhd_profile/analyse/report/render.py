"""Rendering a :class:`~uhd_profile.analyse.report.sections.Report` to Markdown and self-contained
HTML, and ``write_report``: the one place the report writes files."""

from __future__ import annotations

import base64
import contextlib
import html
import os
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from uhd_profile.analyse.report.figures import save_figure
from uhd_profile.analyse.report.format import FLAG_MARK, isna
from uhd_profile.analyse.report.sections import Figure, Report, Table, build_report
from uhd_profile.errors import UhdProfileError
from uhd_profile.files import check_output_dir, clean_staged, output_error, staging_dir, swap_dir, write_synced
from uhd_profile.run.lock import RunLock
from uhd_profile.run.store import PartialRunWarning

FORMATS = ("md", "html")


REPORT_DIR = "report"  # default output, inside the run directory


def _md_cell(x: Any) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")


def table_markdown(t: pd.DataFrame) -> str:
    cols = [str(c) for c in t.columns]
    lines = ["| " + " | ".join(_md_cell(c) for c in cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in t.itertuples(index=False):
        lines.append("| " + " | ".join(_md_cell("" if isna(v) else v) for v in row) + " |")
    return "\n".join(lines)


def sections(rep: Report) -> list[tuple[int, str, str]]:
    """(number, title, anchor) of every level-2 heading, in order: the table of contents."""
    out: list[tuple[int, str, str]] = []
    for b in rep.blocks:
        if isinstance(b, tuple) and b[0] == "h" and b[1] == 2:
            n = len(out) + 1
            out.append((n, b[2], f"{n}-{_slug(b[2])}"))
    return out


def _slug(text: str) -> str:
    """A GitHub-style heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    kept = "".join(c for c in text.lower() if c.isalnum() or c in " -")
    return kept.strip().replace(" ", "-")


def render_markdown(rep: Report) -> str:
    out = [f"# {rep.title}", ""]
    out += [f"> **Warning:** {w}" for w in rep.warnings] + ([""] if rep.warnings else [])
    toc = sections(rep)
    numbers = iter(toc)
    first_h2 = True
    for b in rep.blocks:
        if isinstance(b, tuple) and b[0] == "h" and b[1] == 2 and first_h2:
            out += ["Contents: " + " · ".join(f"[{n}. {title}](#{anchor})" for n, title, anchor in toc), ""]
            first_h2 = False
        if isinstance(b, tuple) and b[0] == "h" and b[1] == 2:
            n, title, _ = next(numbers)
            out += [f"## {n}. {title}", ""]
            continue
        if isinstance(b, Table):
            out += [
                table_markdown(b.shown),
                "",
                (f"*{b.caption}* " if b.caption else "") + f"Data: [tables/{b.name}.csv](tables/{b.name}.csv)",
                "",
            ]
        elif isinstance(b, Figure):
            out += [
                f"![{b.name}](figures/{b.name}.png)",
                "",
                f"*{b.caption}* Data: [figures/{b.name}.csv](figures/{b.name}.csv), vector: "
                f"[figures/{b.name}.svg](figures/{b.name}.svg)",
                "",
            ]
        elif b[0] == "h":
            out += ["#" * b[1] + " " + b[2], ""]
        else:
            out += [b[1], ""]
    return "\n".join(out).rstrip() + "\n"


def _inline(text: str) -> str:
    """Markdown-ish inline code (`x`) and emphasis-free text to HTML."""
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


CSS = """body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;max-width:1200px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}table{border-collapse:collapse;margin:.6em 0;font-size:.86em}
th,td{border:1px solid #ccc;padding:.25em .55em;text-align:left;vertical-align:top}th{background:#f3f3f3}
tr:nth-child(even) td{background:#fafafa}figure{margin:1.2em 0}figure img{max-width:100%;height:auto;
border:1px solid #eee}figcaption,.caption{font-size:.88em;color:#444}code{background:#f3f3f3;padding:0 .2em}
.flag{color:#D55E00;font-weight:600}nav.toc{background:#f7f7f7;border:1px solid #e3e3e3;padding:.5em 1em;
margin:1em 0;font-size:.92em}nav.toc ol{margin:.3em 0;padding-left:1.6em}.warning{background:#fff4e5;
border:1px solid #D55E00;padding:.6em 1em;margin:1em 0}.table{overflow-x:auto}h2 a.anchor,h3 a.anchor{color:#bbb;
text-decoration:none;margin-left:.3em;font-size:.8em}"""


def render_html(rep: Report, images: dict[str, bytes]) -> str:
    """A self-contained page: every figure embedded as a base64 SVG data URI."""
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(rep.title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(rep.title)}</h1>",
    ]
    out += [f'<div class="warning" role="alert"><strong>Warning:</strong> {_inline(w)}</div>' for w in rep.warnings]
    toc = sections(rep)
    numbers = iter(toc)
    first_h2 = True
    for b in rep.blocks:
        if isinstance(b, tuple) and b[0] == "h" and b[1] == 2:
            if first_h2:
                items = "".join(f'<li><a href="#{a}">{html.escape(title)}</a></li>' for _, title, a in toc)
                out.append(f'<nav class="toc" aria-label="Contents"><strong>Contents</strong><ol>{items}</ol></nav>')
                first_h2 = False
            n, title, anchor = next(numbers)
            if n > 1:
                out.append("</section>")
            out.append(f'<section id="{anchor}"><h2>{n}. {html.escape(title)}<a class="anchor" href="#{anchor}">#</a></h2>')
            continue
        if isinstance(b, Table):
            rows = [
                "<table><thead><tr>"
                + "".join(f"<th>{html.escape(str(c))}</th>" for c in b.shown.columns)
                + "</tr></thead><tbody>"
            ]
            for row in b.shown.itertuples(index=False):
                cells = []
                for v in row:
                    s = html.escape("" if isna(v) else str(v))
                    cells.append(f"<td>{s.replace(FLAG_MARK, f'<span class=flag>{FLAG_MARK}</span>')}</td>")
                rows.append("<tr>" + "".join(cells) + "</tr>")
            rows.append("</tbody></table>")
            out.append(
                f'<div class="table" id="table-{b.name}">'
                + "".join(rows)
                + (f'<p class="caption">{_inline(b.caption)}</p>' if b.caption else "")
                + "</div>"
            )
        elif isinstance(b, Figure):
            data = base64.b64encode(images[b.name]).decode()
            out.append(
                f'<figure id="fig-{b.name}"><img alt="{html.escape(b.name)}" src="data:image/svg+xml;base64,{data}">'
                f"<figcaption>{_inline(b.caption)}</figcaption></figure>"
            )
        elif b[0] == "h":
            out.append(f"<h{b[1]}>{html.escape(b[2])}</h{b[1]}>")
        else:
            out.append(f"<p>{_inline(b[1])}</p>")
    if toc:
        out.append("</section>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def parse_formats(formats: Any) -> tuple[str, ...]:
    """``"md,html"`` or a sequence -> a tuple of formats; a one-line error names a bad one."""
    items = [f.strip() for f in formats.split(",")] if isinstance(formats, str) else [str(f).strip() for f in formats]
    items = [f for f in items if f]
    if not items:
        raise UhdProfileError(f"--format {formats!r} is empty; valid: {', '.join(FORMATS)} (comma-separated)")
    for f in items:
        if f not in FORMATS:
            raise UhdProfileError(f"--format {f!r} is not valid; valid: {', '.join(FORMATS)} (comma-separated, e.g. md,html)")
    return tuple(dict.fromkeys(items))


REPORT_MARKER = ".uhd-profile-report"
"""A file in every report directory: what lets a later report replace the directory whole."""
_REPORT_ENTRIES = frozenset({"report.md", "report.html", "figures", "tables", REPORT_MARKER})


def _check_target(out: Path) -> None:
    """A report replaces its directory whole, so the target must be new, empty or a report."""
    check_output_dir(out, "--out")
    if out.is_dir():
        entries = sorted(e.name for e in out.iterdir())
        if entries and REPORT_MARKER not in entries and not set(entries) <= _REPORT_ENTRIES:
            some = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
            raise UhdProfileError(
                f"--out {out}: is a directory holding other files ({some}); a report replaces its directory whole: "
                "give a new or empty directory, or an earlier report's"
            )


def _write_files(dest: Path, rep: Report, fmts: tuple[str, ...]) -> dict[str, str]:
    """Every file of the report into ``dest`` (fsynced); ``{key: path relative to dest}``."""
    (dest / "figures").mkdir(parents=True)
    (dest / "tables").mkdir()
    written: dict[str, str] = {}
    svgs: dict[str, bytes] = {}
    for f in rep.figures:
        for fmt in ("png", "svg"):
            blob = save_figure(f.fig, fmt)
            write_synced(dest / "figures" / f"{f.name}.{fmt}", blob)
            written[f"figures/{f.name}.{fmt}"] = f"figures/{f.name}.{fmt}"
            if fmt == "svg":
                svgs[f.name] = blob
        write_synced(dest / "figures" / f"{f.name}.csv", f.data.to_csv(index=False).encode())
        written[f"figures/{f.name}.csv"] = f"figures/{f.name}.csv"
    for t in rep.tables:
        write_synced(dest / "tables" / f"{t.name}.csv", t.data.to_csv(index=False).encode())
        written[f"tables/{t.name}.csv"] = f"tables/{t.name}.csv"
    if "md" in fmts:
        write_synced(dest / "report.md", render_markdown(rep).encode("utf-8"))
        written["md"] = "report.md"
    if "html" in fmts:
        write_synced(dest / "report.html", render_html(rep, svgs).encode("utf-8"))
        written["html"] = "report.html"
    write_synced(dest / REPORT_MARKER, b"written by uhd-profile report; the directory is replaced whole by the next one\n")
    return written


def _build(run_dir: Path, recount: bool, quality: Sequence[str | os.PathLike]) -> tuple[Report, list[str]]:
    """``build_report``, and the one-line messages of any torn or corrupt results line it met
    (other warnings pass through)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rep = build_report(run_dir, recount=recount, quality=quality)
    partial: list[str] = []
    for w in caught:
        if issubclass(w.category, PartialRunWarning):
            partial.append(str(w.message))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return rep, list(dict.fromkeys(partial))


def write_report(
    run_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    formats: Any = FORMATS,
    recount: bool = True,
    quality: Sequence[str | os.PathLike] = (),
) -> dict[str, str]:
    """Build the report of ``run_dir`` and write it to ``out_dir`` (default ``RUN_DIR/report``):
    report.md / report.html (``formats``), figures as PNG + SVG + CSV, tables as CSV.

    The report is built in a fresh directory beside ``out_dir`` and swapped in whole, so ``out_dir``
    holds exactly one report's files -- the previous one's or this one's, never a mix (a kill, a full
    disk). Writing into the run directory takes its writer lock (``uhd_profile.run.lock``). A torn
    or corrupt line of the results shows in the warning banner at the top of the report (and as a
    ``PartialRunWarning``).

    ``recount``: count paper figures the run does not hold (seconds each on the CPU); ``quality``:
    score files joined to the run (``analyse.quality.read_quality``). Returns
    ``{name: path}`` of every file written: ``md``, ``html``, ``figures/NAME.png|svg|csv``,
    ``tables/NAME.csv``."""
    fmts = parse_formats(formats)
    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir / REPORT_DIR
    _check_target(out)
    inside = run_dir.is_dir() and out.absolute().resolve().is_relative_to(run_dir.resolve())
    with RunLock(run_dir, "report", what="--out") if inside else contextlib.nullcontext():
        rep, partial = _build(run_dir, recount, quality)
        rep.warnings[:0] = [
            f"this run's results file is incomplete -- {msg}. This report shows the readable records only." for msg in partial
        ]
        clean_staged(out)
        tmp = staging_dir(out, "new")
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            written = _write_files(tmp, rep, fmts)
            swap_dir(tmp, out)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise output_error(exc, out, "report", kept="the previous report there, if any, is unchanged") from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    for msg in partial:
        warnings.warn(msg, PartialRunWarning, stacklevel=2)
    return {k: str(out / rel) for k, rel in written.items()}
