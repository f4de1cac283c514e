"""The report's figures: pure functions, a table (DataFrame) in, a matplotlib ``Figure`` out.

matplotlib is imported inside the functions: importing the report must not cost a plotting stack.
"""

from __future__ import annotations

import functools
import io
from typing import Any

import numpy as np
import pandas as pd

from uhd_profile.analyse.report.format import (
    CATEGORIES,
    CATEGORY_COLOURS,
    FIGURE_CONVENTION,
    FLAG_MARK,
    OKABE_ITO,
    STYLE,
    count_column,
    style_of,
    unit_of,
)

MAX_WIDTH_IN = 12.0
"""Widest figure, inches: at 110 dpi it fits a 1280 px window's page without being shrunk much."""

#: matplotlib settings of every report figure (applied per figure, never to the global rcParams)
RC = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "svg.fonttype": "none",
    "svg.hashsalt": "uhd-profile",
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
}


def styled(fn):
    """Run a figure function under ``RC`` (no pyplot state: figures are plain ``Figure`` objects)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import matplotlib

        with matplotlib.rc_context(RC):
            return fn(*args, **kwargs)

    return wrapper


def _subplots(nrows: int, ncols: int, figsize: tuple[float, float], **kw):
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=figsize, layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=False, **kw)


def _scaled(values, convention: str) -> tuple[list[float], str]:
    vals = [float(v) for v in values]
    big = max(vals, default=0) >= 1e9
    f = 1e9 if big else 1e6
    return [v / f for v in vals], f"{'G' if big else 'M'}{unit_of(convention)}"


def _log_if_wide(ax, axis: str, values) -> None:
    vals = [float(v) for v in values if float(v) > 0]
    if vals and max(vals) / min(vals) > 20:
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")


def _renderer(fig: Any) -> Any:
    """An Agg renderer for ``fig`` (report figures are plain Figures without a canvas of their own)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    return fig.canvas.get_renderer()


def _label_points(ax, xs, ys, labels, fontsize=7, lines: list | None = None) -> None:
    """Label points without overlaps: labels of coincident points are merged, then each label takes
    the first free spot among candidates around its point (right, left, then further up/down with
    a leader line), measured with the real text extents once the figure's layout is settled.
    The labels stay out of the layout, so placing them cannot move the axes. Call last."""
    fig = ax.figure
    renderer = _renderer(fig)
    fig.draw_without_rendering()  # settle the constrained layout: transforms below are final
    groups: dict[tuple[float, float], list[str]] = {}
    for x, y, lab in zip(xs, ys, labels):
        groups.setdefault((float(x), float(y)), []).append(lab)
    k = fig.dpi / 72.0  # display pixels per point
    box = ax.get_window_extent(renderer)
    pts = {xy: tuple(ax.transData.transform(xy)) for xy in groups}
    taken = [(px - 6 * k, py - 6 * k, px + 6 * k, py + 6 * k) for px, py in pts.values()]  # the markers
    for line_x, line_y in lines or []:  # axis-parallel polylines (Pareto fronts) labels must not cover
        for a, b in zip(zip(line_x, line_y), list(zip(line_x, line_y))[1:]):
            (ax_, ay), (bx, by) = ax.transData.transform(a), ax.transData.transform(b)
            taken.append((min(ax_, bx) - 2 * k, min(ay, by) - 2 * k, max(ax_, bx) + 2 * k, max(ay, by) + 2 * k))
    for other in fig.legends + ([ax.get_legend()] if ax.get_legend() else []):
        lb = other.get_window_extent(renderer)
        taken.append((lb.x0, lb.y0, lb.x1, lb.y1))

    def free(r):
        inside = r[0] >= box.x0 and r[2] <= box.x1 and r[1] >= box.y0 and r[3] <= box.y1
        return inside and not any(r[0] < t[2] and r[2] > t[0] and r[1] < t[3] and r[3] > t[1] for t in taken)

    for xy, labs in sorted(groups.items(), key=lambda kv: (pts[kv[0]][0], pts[kv[0]][1])):
        text = ", ".join(dict.fromkeys(labs))
        probe = ax.text(0, 0, text, fontsize=fontsize)
        ext = probe.get_window_extent(renderer)
        probe.remove()
        w, h = ext.width + 2 * k, ext.height + 2 * k
        px, py = pts[xy]
        choice = None
        for dy in [0] + [s * j * h for j in range(1, 14) for s in (1, -1)]:
            for side in (1, -1):
                x0 = px + 6 * k if side == 1 else px - 6 * k - w
                r = (x0, py + dy - h / 2, x0 + w, py + dy + h / 2)
                if free(r):
                    choice = (side, dy, r)
                    break
            if choice:
                break
        if choice is None:  # nowhere free: put it to the right and accept the overlap
            choice = (1, 0.0, (px + 6 * k, py - h / 2, px + 6 * k + w, py + h / 2))
        side, dy, r = choice
        taken.append(r)
        ann = ax.annotate(
            text,
            xy,
            xytext=(6 * side, dy / k),
            textcoords="offset points",
            fontsize=fontsize,
            color="#333333",
            ha="left" if side == 1 else "right",
            va="center",
            arrowprops=dict(arrowstyle="-", lw=0.5, color="#888888", shrinkA=0, shrinkB=3) if abs(dy) > 0 else None,
        )
        ann.set_in_layout(False)


def _legend_outside(ax) -> None:
    """Legend right of the axes; compressor markers drawn plain (not with a front point's outline)."""
    from matplotlib.collections import PathCollection
    from matplotlib.lines import Line2D

    handles, labels = ax.get_legend_handles_labels()
    out: dict[str, Any] = {}
    for hd, lb in zip(handles, labels):
        if isinstance(hd, PathCollection) and lb in STYLE:
            colour, marker = style_of(lb)
            hd = Line2D([], [], ls="none", marker=marker, color=colour, mec="white", ms=7)
        out.setdefault(lb, hd)
    ax.legend(out.values(), out.keys(), loc="upper left", bbox_to_anchor=(1.01, 1.0), framealpha=0.9, borderaxespad=0)


def _mark_flagged(ax, xs, ys) -> None:
    if len(xs):
        ax.scatter(
            xs,
            ys,
            s=230,
            facecolors="none",
            edgecolors=OKABE_ITO["vermillion"],
            linewidths=1.5,
            linestyles="--",
            zorder=4,
            label=f"{FLAG_MARK} flagged latency (noisy, throttled or slow outlier)",
        )


@styled
def pareto_figure(table: pd.DataFrame, y: str, convention: str = FIGURE_CONVENTION):
    """Scatter of FLOPs (x) vs ``y``, one panel per ``panel`` of ``pareto_table``, each setting's
    Pareto front drawn as the boundary of the region it dominates and its points outlined; points
    labelled by variant, coloured and shaped by compressor; flagged points ringed."""
    col = count_column(convention)
    panels = list(dict.fromkeys(table["panel"]))
    fig, axes = _subplots(len(panels), 1, (9.0, 4.4 * len(panels)))
    ylab = {"latency_median_s": "latency, median per forward (ms)", "tokens_llm": "tokens reaching the LLM per view"}[y]
    yscale = 1e3 if y == "latency_median_s" else 1.0
    xs, xunit = _scaled(table[col], convention)
    table = table.assign(_x=xs, _y=[float(v) * yscale for v in table[y]])
    dashes = ["--", ":", "-.", (0, (5, 1, 1, 1))]
    for ax, panel in zip(axes[:, 0], panels):
        g = table[table["panel"] == panel]
        for comp, gc in g.groupby("compressor", sort=False):
            colour, marker = style_of(comp)
            ax.scatter(
                gc["_x"],
                gc["_y"],
                color=colour,
                marker=marker,
                s=46,
                zorder=3,
                edgecolors=["black" if f else "white" for f in gc["on_front"]],
                linewidths=[1.4 if f else 0.5 for f in gc["on_front"]],
                label=comp,
            )
        flagged = g[g["flagged"].astype(bool)]
        _mark_flagged(ax, flagged["_x"], flagged["_y"])
        _log_if_wide(ax, "x", g["_x"])
        _log_if_wide(ax, "y", g["_y"])
        ax.margins(x=0.12, y=0.15)
        ax.autoscale_view()
        x0, x1 = ax.get_xlim()
        y0, y1 = ax.get_ylim()
        settings = list(dict.fromkeys(g["setting"]))
        front_lines = []
        for si, setting in enumerate(settings):
            front = g[(g["setting"] == setting) & g["on_front"]].sort_values(["_x", "_y"])
            fx, fy = list(front["_x"]), list(front["_y"])
            px, py = [fx[0]], [y1]
            for i in range(len(fx)):
                px += [fx[i], fx[i + 1] if i + 1 < len(fx) else x1]
                py += [fy[i], fy[i]]
            name = "Pareto front (outlined points)" + (f": {setting}" if len(settings) > 1 else "")
            ax.plot(px, py, color="#444444", ls=dashes[si % len(dashes)], lw=1.1, zorder=2, label=name)
            front_lines.append((px, py))
        ax.set_xlim(x0, x1)
        ax.set_ylim(y0, y1)
        ax.set_xlabel(f"visual-encoding compute per view ({xunit}, {convention} convention)")
        ax.set_ylabel(ylab)
        ax.set_title(panel, loc="left")
        _label_points(ax, list(g["_x"]), list(g["_y"]), list(g["label"]), lines=front_lines)
        _legend_outside(ax)
    return fig


@styled
def depth_figure(table: pd.DataFrame, convention: str = FIGURE_CONVENTION):
    """Depth (x) vs FLOPs and vs latency (two panels); one line per compressor and setting, the
    setting's baseline as a horizontal line."""
    col = count_column(convention)
    has_lat = table["latency_median_s"].notna().any()
    fig, axes = _subplots(1, 2 if has_lat else 1, (11.0 if has_lat else 7.5, 5.6))
    settings = list(dict.fromkeys(table["setting"]))
    dashes = ["-", "--", ":", "-."]
    _, unit = _scaled(table[col], convention)
    f = 1e9 if unit.startswith("G") else 1e6
    panels = [(axes[0][0], col, f, f"visual-encoding compute per view ({unit}, {convention} convention)")]
    if has_lat:
        panels.append((axes[0][1], "latency_median_s", 1e-3, "latency, median per forward (ms)"))
    for ax, ycol, scale, ylabel in panels:
        d = table[table[ycol].notna()]
        if ycol == "latency_median_s":
            d = d.assign(setting=[f"{s} | {dev} {dt}" for s, dev, dt in zip(d["setting"], d["device"], d["dtype"])])
        else:
            d = d.drop_duplicates(subset=["variant_id"])
        for si, setting in enumerate(dict.fromkeys(d["setting"])):
            g = d[d["setting"] == setting]
            for comp, gc in g[g["compressor"] != "none"].groupby("compressor", sort=False):
                gc = gc.sort_values("depth")
                colour, marker = style_of(comp)
                ax.plot(
                    gc["depth"].astype(int),
                    gc[ycol].astype(float) / scale,
                    color=colour,
                    marker=marker,
                    ms=4,
                    ls=dashes[si % 4],
                    lw=1.3,
                    label=f"{comp} | {setting}" if len(settings) > 1 or ycol != col else comp,
                )
                fl = gc[gc["flagged"].astype(bool)]
                _mark_flagged(ax, fl["depth"].astype(int), fl[ycol].astype(float) / scale)
            for _, b in g[g["compressor"] == "none"].iterrows():
                ax.axhline(
                    float(b[ycol]) / scale,
                    color=OKABE_ITO["black"],
                    ls=dashes[si % 4],
                    lw=1.0,
                    alpha=0.7,
                    label=f"post-ViT baseline | {setting}" if len(settings) > 1 or ycol != col else "post-ViT baseline",
                )
        ax.set_xlabel("compressor depth k (0-based encoder layer after which it runs)")
        ax.set_ylabel(ylabel)
        _log_if_wide(ax, "y", d[ycol].astype(float))
        handles, labels = ax.get_legend_handles_labels()
        uniq = dict(zip(labels, handles))
        ax.legend(uniq.values(), uniq.keys(), fontsize=7, framealpha=0.9, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=1)
    return fig


@styled
def breakdown_figure(parts: dict[str, pd.DataFrame], convention: str = FIGURE_CONVENTION):
    """Side-by-side stacked bars per block (embedding, layers, compressor, post-norm, connector),
    stacked by category, one panel per variant, shared y axis."""
    n = len(parts)
    widths = [max(1, parts[k]["block"].nunique()) for k in parts]
    fig, axes = _subplots(1, n, (12.0, 4.8), sharey=True, gridspec_kw={"width_ratios": widths})
    allvals = pd.concat([p.groupby("block")[convention].sum() for p in parts.values()])
    _, unit = _scaled(allvals, convention)
    f = 1e9 if unit.startswith("G") else 1e6
    for ax, (label, bd) in zip(axes[0], parts.items()):
        blocks = list(bd.sort_values("order")["block"].drop_duplicates())
        bottom = [0.0] * len(blocks)
        for cat in CATEGORIES:
            vals = [float(bd.loc[(bd["block"] == b) & (bd["category"] == cat), convention].sum()) / f for b in blocks]
            if not any(vals):
                continue
            ax.bar(
                range(len(blocks)),
                vals,
                bottom=bottom,
                color=CATEGORY_COLOURS[cat],
                label=cat,
                width=0.8,
                edgecolor="#333333",
                linewidth=0.3,
            )
            bottom = [b + v for b, v in zip(bottom, vals)]
        ticks = [
            b.replace("layer ", "")
            .replace("embedding", "emb")
            .replace("compressor", "comp")
            .replace("post-norm", "norm")
            .replace("connector", "conn")
            for b in blocks
        ]
        ax.set_xticks(range(len(blocks)), ticks, fontsize=7, rotation=90)
        ax.set_xlim(-0.7, len(blocks) - 0.3)
        ax.set_title(f"{label}: {sum(bottom):,.1f} {unit} in total", loc="left")
        ax.set_xlabel("block, in execution order (emb, encoder layer index, comp = in-ViT compressor)")
    axes[0][0].set_ylabel(f"compute per view ({unit}, {convention} convention)")
    handles: dict[str, Any] = {}
    for ax in axes[0]:
        for hd, lb in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lb, hd)
    axes[0][-1].legend(handles.values(), handles.keys(), loc="upper right", framealpha=0.9)
    return fig


@styled
def encoding_figure(table: pd.DataFrame, convention: str = FIGURE_CONVENTION):
    """Global vs sliced encoding: compute (and, in a second row, latency where measured) vs the
    image size, one column of panels per aspect ratio (so each line is one image shape scaled up)."""
    col = count_column(convention)
    has_lat = table["latency_median_s"].notna().any()
    aspects = list(dict.fromkeys(table.sort_values("megapixels")["aspect"]))
    if len(aspects) > 3:  # more panels than a page holds side by side: one panel for all shapes
        table, aspects = table.assign(aspect="all"), ["all"]
    rows = 2 if has_lat else 1
    fig, axes = _subplots(rows, len(aspects), (min(MAX_WIDTH_IN, max(7.5, 4.6 * len(aspects))), 4.4 * rows))
    _, unit = _scaled(table[col], convention)
    f = 1e9 if unit.startswith("G") else 1e6
    metrics = [(col, f, f"compute per image ({unit}, {convention} conv.)")]
    if has_lat:
        metrics.append(("latency_median_s", 1e-3, "latency, median per image (ms)"))
    for r, (ycol, scale, ylabel) in enumerate(metrics):
        for c, aspect in enumerate(aspects):
            ax = axes[r][c]
            d = table[(table["aspect"] == aspect) & table[ycol].notna()]
            if ycol == col:
                d = d.drop_duplicates(subset=["variant_id"])
            for (enc, label, comp), g in d.groupby(["encoding", "label", "compressor"], sort=False):
                g = g.sort_values("megapixels")
                colour, marker = style_of(comp)
                how = label.split(" [")[1].rstrip("]") if " [" in label else enc  # "sliced" or "sliced, packed"
                ax.plot(
                    g["megapixels"],
                    g[ycol].astype(float) / scale,
                    color=colour,
                    marker=marker,
                    ms=5,
                    ls="-" if enc == "global" else "--",
                    label=f"{how}: {label.split(' [')[0]}",
                )
                fl = g[g["flagged"].astype(bool)]
                _mark_flagged(ax, fl["megapixels"], fl[ycol].astype(float) / scale)
            ax.set_title(f"aspect {aspect} (W:H)" if aspect != "all" else "all aspect ratios", loc="left")
            ax.set_xlabel("input image size (megapixels, W x H)")
            ax.set_ylabel(ylabel)
    uniq: dict = {}
    for ax in axes.flat:
        for hd, lb in zip(*ax.get_legend_handles_labels()):
            uniq.setdefault(lb, hd)
    fig.legend(uniq.values(), uniq.keys(), loc="outside lower center", ncol=min(3, len(uniq)), framealpha=0.9)
    return fig


QUALITY_AXES = {
    "paper_flops": "visual-encoding compute per 980 px view (GFLOPs, paper convention)",
    "macs": "visual-encoding compute per 980 px view (GMACs, as executed)",
    "latency_median_s": "measured latency, median per forward (ms)",
}
_QUALITY_SCALE = {"paper_flops": 1e-9, "macs": 1e-9, "latency_median_s": 1e3}
#: a score this far below the best sits off the axis, drawn at its edge with its value: one
#: collapsed training run (the paper's k = 3) must not flatten every other point into one line
OFF_SCALE_POINTS = 10.0


def _step_front(xs: list[float], ys: list[float], x_hi: float, y_lo: float) -> tuple[list[float], list[float]]:
    """The boundary of the region a quality front (max y, min x) dominates: from each front point
    right to the next one's x, then up; out to the axes' edges."""
    pts = sorted(zip(xs, ys))
    px, py = [pts[0][0]], [y_lo]
    for i, (x, y) in enumerate(pts):
        px += [x, pts[i + 1][0] if i + 1 < len(pts) else x_hi]
        py += [y, y]
    return px, py


def quality_axes(table: pd.DataFrame, user: pd.DataFrame | None = None) -> list[str]:
    """The cost axes (``QUALITY_AXES``) on which some design has both a cost and a score."""
    frames = [table] + ([user] if user is not None else [])
    return [c for c in QUALITY_AXES if any((d[c].notna() & d["avg"].notna()).any() for d in frames)]


@styled
def quality_figure(table: pd.DataFrame, user: pd.DataFrame | None = None):
    """Average score (y) against cost (x), one panel per cost axis the data has (``QUALITY_AXES``).

    ``table``: ``tables.quality_cost_table`` of the paper's reported scores (hollow markers,
    "paper-reported"); ``user``: the same for the user's own scores (filled markers). Each
    source's Pareto front (most score for the least cost) is drawn as the boundary of the region
    it dominates; dominated points are faded. Scores far below the rest sit at the bottom edge
    with their value (``OFF_SCALE_POINTS``)."""
    sources = [("paper-reported", table, False)] + ([("your scores", user, True)] if user is not None and len(user) else [])
    axes_used = quality_axes(table, user)
    if not axes_used:
        raise ValueError("no design has both a score and a cost: nothing to draw")
    ncols = min(2, len(axes_used))
    nrows = -(-len(axes_used) // ncols)
    fig, axes = _subplots(nrows, ncols, (6.0 * ncols, 4.5 * nrows))
    for ax in axes.flat[len(axes_used) :]:
        ax.set_visible(False)
    for ax, cost in zip(axes.flat, axes_used):
        scale = _QUALITY_SCALE[cost]
        all_y = [float(v) for _, d, _ in sources for v in d["avg"].dropna()]
        top = max(all_y)
        lo = min((v for v in all_y if v >= top - OFF_SCALE_POINTS), default=min(all_y)) - 0.6
        labels, lx, ly = [], [], []
        for _name, d, filled in sources:
            g = d[d[cost].notna() & d["avg"].notna()]
            if not len(g):
                continue
            xs = [float(v) * scale for v in g[cost]]
            ys = [max(float(v), lo + 0.25) for v in g["avg"]]
            front = [bool(f) if not pd.isna(f) else False for f in g[f"pareto_{cost}"]]
            for comp, x, y, on, raw in zip(g["compressor"], xs, ys, front, g["avg"]):
                colour, marker = style_of(str(comp))
                off = float(raw) < lo
                ax.scatter(
                    [x],
                    [y],
                    marker="v" if off else marker,
                    s=48,
                    zorder=3,
                    linewidths=1.4,
                    facecolors=colour if filled else "white",
                    edgecolors=colour,
                    alpha=1.0 if on else 0.45,
                )
            lx += xs
            ly += ys
            labels += [
                f"{lab} ({float(raw):.1f}, off scale)" if float(raw) < lo else str(lab) for lab, raw in zip(g["design"], g["avg"])
            ]
        ax.margins(x=0.14, y=0.12)
        ax.autoscale_view()
        x0, x1 = ax.get_xlim()
        y0, y1 = ax.get_ylim()
        y0 = min(y0, lo)
        fronts = []
        for si, (name, d, _filled) in enumerate(sources):
            g = d[d[cost].notna() & d["avg"].notna() & d[f"pareto_{cost}"].fillna(False).astype(bool)]
            g = g[g["avg"].astype(float) >= lo]
            if not len(g):
                continue
            px, py = _step_front([float(v) * scale for v in g[cost]], [float(v) for v in g["avg"]], x1, y0)
            ax.plot(px, py, color="#444444", ls="--" if si == 0 else ":", lw=1.1, zorder=2, label=f"Pareto front, {name}")
            fronts.append((px, py))
        ax.set_xlim(x0, x1)
        ax.set_ylim(y0, y1)
        if cost == "latency_median_s":
            settings = sorted({s for _, d, _ in sources for s in d["latency_setting"].dropna()})
            ax.set_title("measured on " + "; ".join(settings), loc="left", fontsize=8)
        ax.set_xlabel(QUALITY_AXES[cost])
        ax.set_ylabel("average score over the eight benchmarks")
        _label_points(ax, lx, ly, labels, lines=fronts)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], ls="none", marker="o", mfc="white", mec="#555555", ms=7, label="paper-reported (hollow)")]
    if len(sources) > 1:
        handles.append(Line2D([], [], ls="none", marker="o", mfc="#555555", mec="#555555", ms=7, label="your scores (filled)"))
    handles.append(Line2D([], [], ls="none", marker="o", mfc="white", mec="#555555", alpha=0.45, ms=7, label="dominated (faded)"))
    for si, (name, _, _) in enumerate(sources):
        handles.append(Line2D([], [], color="#444444", ls="--" if si == 0 else ":", label=f"Pareto front, {name}"))
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), framealpha=0.9)
    return fig


def layout_problems(fig: Any) -> list[str]:
    """What makes a figure hard to read, found from the drawn artists: a legend over a data
    marker, text boxes (titles, axis labels, annotations, legend entries) overlapping each other,
    and text outside the figure. Empty when the figure is clean."""
    from matplotlib.collections import PathCollection
    from matplotlib.lines import Line2D
    from matplotlib.text import Annotation, Text

    renderer = _renderer(fig)
    fig.canvas.draw()
    fbox = fig.bbox
    problems: list[str] = []
    legends = [lg for lg in [*fig.legends, *(ax.get_legend() for ax in fig.axes)] if lg is not None]
    for ax in fig.axes:
        markers = []
        for coll in ax.collections:
            offsets = np.asarray(coll.get_offsets()) if isinstance(coll, PathCollection) else np.empty((0, 2))
            if len(offsets):
                markers += [tuple(p) for p in coll.get_offset_transform().transform(offsets)]
        for line in ax.lines:
            if isinstance(line, Line2D) and line.get_marker() not in (None, "", "None", " "):
                markers += [tuple(p) for p in line.get_transform().transform(line.get_xydata())]
        for lg in legends:
            box = lg.get_window_extent(renderer)
            inside = [m for m in markers if box.x0 <= m[0] <= box.x1 and box.y0 <= m[1] <= box.y1]
            if inside:
                problems.append(f"legend covers {len(inside)} data marker(s) in axes {ax.get_title(loc='left')!r}")
    texts = []
    for t in fig.findobj(Text):
        if not t.get_visible() or not t.get_text().strip() or t.figure is None:
            continue
        if (
            isinstance(t, Annotation)
            or t in [a.title for a in fig.axes]
            or t.get_gid() == "uhd-label"
            or any(t in (a.xaxis.label, a.yaxis.label, a._left_title, a._right_title) for a in fig.axes)
        ):
            texts.append(t)
    # the text itself (an Annotation's own extent would include its leader line)
    boxes = [(t.get_text(), Text.get_window_extent(t, renderer)) for t in texts]
    for i, (a, ba) in enumerate(boxes):
        if ba.x0 < fbox.x0 - 1 or ba.x1 > fbox.x1 + 1 or ba.y0 < fbox.y0 - 1 or ba.y1 > fbox.y1 + 1:
            problems.append(f"text {a!r} reaches outside the figure")
        for b, bb in boxes[i + 1 :]:
            inter = ba.intersection(ba, bb) if ba.overlaps(bb) else None
            if inter is not None and inter.width > 1 and inter.height > 1:
                problems.append(f"text {a!r} overlaps {b!r}")
    return problems


@styled
def save_figure(fig: Any, fmt: str) -> bytes:
    """``fig`` as PNG or SVG bytes, without timestamps (so reports are reproducible)."""
    buf = io.BytesIO()
    meta = {"Date": None} if fmt == "svg" else {"Software": None}
    fig.savefig(buf, format=fmt, dpi=110 if fmt == "png" else None, metadata=meta)
    return buf.getvalue()
