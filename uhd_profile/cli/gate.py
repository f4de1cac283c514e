"""``uhd-profile baseline`` and ``uhd-profile check``: the CI regression gate (``uhd_profile.analyse.gate``).

Thin: parse, call ``uhd_profile.analyse.gate``, render.
Exit codes of ``check``: 0 clean (pass, or only noisy changes), 1 regression, 2 usage error.
"""

from __future__ import annotations

import dataclasses
import json
import sys

import click
from rich.table import Table

from uhd_profile.analyse import gate
from uhd_profile.cli.console import err, out
from uhd_profile.files import check_output_file
from uhd_profile.units import format_bytes

_STYLE = {
    "missing": "bold red",
    "failed": "bold red",
    "changed": "bold red",
    "worse": "red",
    "noisy": "yellow",
    "better": "green",
    "same": "dim",
}


_SETTINGS = {f.name: f for f in dataclasses.fields(gate.GateSettings)}


def _tunable(flag: str, text: str, field: str | None = None):
    """A ``check`` option for one threshold of ``gate.GateSettings`` (the field named like the
    option, or ``field``), with that field's default and type."""
    default = _SETTINGS[field or flag[2:].replace("-", "_")].default
    return click.option(flag, default=default, type=type(default), show_default=True, help=text)


@click.command()
@click.argument("run_dir")
@click.option("--out", "out_file", required=True, help="baseline file to write (JSON, meant to be committed)")
@click.option(
    "--counts-only",
    is_flag=True,
    help="keep statuses and counts only, no latency or memory (a baseline that does not churn across machines)",
)
@click.option(
    "--allow-partial", is_flag=True, help="write a baseline of a run with a torn or corrupt line (its readable records)"
)
def baseline(run_dir, out_file, counts_only, allow_partial):
    """Write a baseline of RUN_DIR for `uhd-profile check`: counts, latency samples, memory, environment.
    A run with a torn or corrupt results line is refused unless --allow-partial."""
    check_output_file(out_file, "--out")  # before reading the run
    b = gate.baseline_from_run(run_dir, counts_only=counts_only, allow_partial=allow_partial)
    gate.write_baseline(b, out_file)
    statuses: dict[str, int] = {}
    for p in b["points"].values():
        statuses[p["status"]] = statuses.get(p["status"], 0) + 1
    timed = sum(1 for p in b["points"].values() if "latency" in p or "memory" in p)
    kinds = ", ".join(f"{v} {k}" for k, v in sorted(statuses.items()))
    out.print(
        f"wrote {out_file}: {len(b['points'])} points ({kinds}), {timed} with latency/memory"
        f"{' (counts only)' if counts_only else ''}, recipe {b['recipe_name']} ({b['recipe_hash']}), "
        f"{len(b['environments'])} environment(s)",
        markup=False,
        highlight=False,
    )


@click.command()
@click.argument("run_dir")
@click.option("--baseline", "baseline_file", required=True, help="the baseline file (from `uhd-profile baseline`)")
@_tunable("--flops-tolerance", "relative change of a count (FLOPs, params, tokens) still taken as the same")
@_tunable("--time-threshold", "relative change of the median latency that fails when significant")
@_tunable("--memory-threshold", "relative change of peak / activation memory that fails (when above --memory-floor too)")
@_tunable("--memory-floor", "absolute memory change, bytes, below which memory is the same", "memory_floor_bytes")
@_tunable("--alpha", "significance level of the Mann-Whitney U test on the latency samples")
@click.option("--allow-cross-machine", is_flag=True, help="compare time and memory even when the environment fingerprints differ")
@click.option("--counts-only", is_flag=True, help="compare statuses and counts only")
@click.option(
    "--update",
    "update_file",
    default=None,
    help="also write this run as a new baseline to this file (commit it when the change is intended)",
)
@click.option("--allow-partial", is_flag=True, help="let --update write a baseline of a run with a torn or corrupt line")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object instead of the table")
def check(run_dir, baseline_file, memory_floor, update_file, allow_partial, as_json, **thresholds):
    """Compare RUN_DIR with a baseline: exit 0 clean, 1 on a regression, 2 on a usage error.

    Counts must match exactly (or within --flops-tolerance) in both directions. Latency fails when
    the median moved over --time-threshold and a rank test on the raw samples finds it
    significant; over the threshold but not significant is reported as noisy. Memory fails over
    --memory-threshold and --memory-floor. A point that newly fails is a regression, a point on one
    side only is missing. Time and memory are not compared across machines (fingerprints) unless
    --allow-cross-machine.
    """
    settings = gate.GateSettings(memory_floor_bytes=memory_floor, **thresholds)
    if update_file is not None:
        check_output_file(update_file, "--update")
    base = gate.load_baseline(baseline_file)
    result = gate.check_run(run_dir, base, settings)
    if update_file is not None:
        new = gate.baseline_from_run(
            run_dir, counts_only=bool(base.get("counts_only")) or settings.counts_only, allow_partial=allow_partial
        )
        gate.write_baseline(new, update_file, what="--update")
    if as_json:
        d = result.to_json()
        d.update(run_dir=str(run_dir), baseline=str(baseline_file), updated=update_file)
        click.echo(json.dumps(d, sort_keys=True))
    else:
        _render(result, run_dir, baseline_file)
        if update_file is not None:
            err.print(
                f"wrote the new baseline to {update_file}: review and commit it if the change is intended",
                markup=False,
                highlight=False,
            )
    if result.exit_code:
        sys.exit(result.exit_code)


# ---------------------------------------------------------------------------------------------
# rendering


def _pct(rel) -> str:
    if rel is None:
        return "n/a"
    if rel in (float("inf"), float("-inf")):
        return "+inf" if rel > 0 else "-inf"
    return f"{rel:+.1%}"


def _counts_cell(p: gate.PointDiff) -> str:
    counts = [m for m in p.metrics if m.kind == "count"]
    if not counts:
        return ""
    changed = [m for m in counts if m.mark != "same"]
    if not changed:
        macs = p.metric("macs")
        return "same" if macs is None else f"same ({macs.run / 1e9:,.3f} GMACs)"
    parts = []
    for m in changed:
        if m.name == "uncounted_ops":
            parts.append(f"uncounted ops {m.baseline} -> {m.run}")
        elif m.baseline is None or m.run is None:
            parts.append(f"{m.name} {m.baseline} -> {m.run}")
        else:
            parts.append(f"{m.name} {m.baseline:,} -> {m.run:,} ({_pct(m.rel_change)})")
    return "; ".join(parts)


def _latency_cell(p: gate.PointDiff) -> str:
    m = p.metric("latency_median_s")
    if m is None:
        return ""
    text = f"{m.baseline * 1e3:,.2f} -> {m.run * 1e3:,.2f} ms ({_pct(m.rel_change)})"
    if m.p_value is not None:
        text += f" p={m.p_value:.3g}"
    return text


def _memory_cell(p: gate.PointDiff) -> str:
    parts = []
    for m in p.metrics:
        if m.kind == "memory" and (m.name == "peak_mem_bytes" or m.baseline or m.run):
            label = "peak" if m.name == "peak_mem_bytes" else "act."
            parts.append(f"{label} {format_bytes(m.baseline)} -> {format_bytes(m.run)} ({_pct(m.rel_change)})")
    return "; ".join(parts)


def _render(result: gate.GateResult, run_dir, baseline_file) -> None:
    s = result.settings
    t = Table(title=f"{run_dir} vs {baseline_file}", title_justify="left")
    for col in ("variant", "device", "status", "counts", "latency median", "memory", "mark", "note"):
        t.add_column(col, no_wrap=col in ("variant", "mark"), overflow="fold")
    for p in result.points:
        status = p.status_run if p.status_baseline == p.status_run else f"{p.status_baseline} -> {p.status_run}"
        mark = f"[{_STYLE[p.mark]}]{p.mark}[/]"
        t.add_row(
            p.variant_id,
            p.device or "",
            status or "",
            _counts_cell(p),
            _latency_cell(p),
            _memory_cell(p),
            mark,
            "; ".join(p.notes),
        )
    out.print(t)
    for r in result.refused:
        diffs = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in r["differences"].items()) or "unknown fields"
        err.print(
            f"note: time and memory of {r['points']} point(s) not compared: the environment differs from the "
            f"baseline's ({diffs}); counts were compared. --allow-cross-machine compares them anyway.",
            markup=False,
            highlight=False,
        )
    for n in result.notes:
        err.print(f"note: {n}", markup=False, highlight=False)
    for p in result.points:
        if p.regression:
            why = "; ".join(p.notes) or ", ".join(f"{m.name} {_pct(m.rel_change)}" for m in p.metrics if m.mark == p.mark)
            out.print(f"{p.mark}: {p.variant_id} ({p.device}, {p.point_id}): {why}", markup=False, highlight=False)
    marks = ", ".join(f"{v} {k}" for k, v in result.marks().items())
    rules = (
        f"counts tolerance {s.flops_tolerance:g}, time threshold {s.time_threshold:.0%} at alpha {s.alpha:g}, "
        f"memory threshold {s.memory_threshold:.0%} and {s.memory_floor_bytes:,} B"
    )
    style = {"pass": "green", "noisy": "yellow", "fail": "bold red"}[result.verdict]
    out.print(f"[{style}]{result.verdict.upper()}[/]: {len(result.points)} points: {marks} ({rules})")
