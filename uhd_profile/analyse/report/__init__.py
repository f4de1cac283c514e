"""Reports: a run directory's records -> tables, Pareto fronts, figures, Markdown and self-contained HTML.

The report is built in layers, each a module:

* ``tables``: pure functions, DataFrame in (``uhd_profile.load``), DataFrame out;
* ``figures``: pure functions, a table in, a matplotlib ``Figure`` out;
* ``sections``: the document (headings, paragraphs, tables, figures) section by section;
* ``render``: Markdown and HTML, and ``write_report``, the one place that writes files.

Layout of a report directory::

    report.md, report.html          the report (the HTML embeds every figure: no network needed)
    figures/NAME.png|svg|csv        each figure, and the data drawn in it
    tables/NAME.csv                 each table, raw SI numbers (FLOPs as integers, seconds, bytes)

Sections leave out what the run holds no data for, with a sentence saying so.
"""

from uhd_profile.analyse.report.render import FORMATS, REPORT_DIR, parse_formats, render_html, render_markdown, write_report
from uhd_profile.analyse.report.sections import Report, build_report
from uhd_profile.analyse.report.tables import (
    breakdown,
    breakdown_summary,
    depth_table,
    encoding_table,
    headline,
    measurement_table,
    pareto_front,
    pareto_table,
    prepare,
    reproduction_table,
)

__all__ = [
    "FORMATS",
    "REPORT_DIR",
    "Report",
    "breakdown",
    "breakdown_summary",
    "build_report",
    "depth_table",
    "encoding_table",
    "headline",
    "measurement_table",
    "pareto_front",
    "pareto_table",
    "parse_formats",
    "prepare",
    "render_html",
    "render_markdown",
    "reproduction_table",
    "write_report",
]
