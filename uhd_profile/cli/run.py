"""``uhd-profile sweep`` and ``uhd-profile merge``: run recipes into run directories."""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from uhd_profile.analyse.report import write_report
from uhd_profile.cli.console import err, note, out, say
from uhd_profile.errors import EXIT_FAILED, EXIT_WRITE, UhdProfileError, WriteError
from uhd_profile.files import atomic_write_text, check_output_dir
from uhd_profile.measure.dtypes import DtypeChoice
from uhd_profile.run.executors import check_executor
from uhd_profile.run.lock import RunLock, stale_note
from uhd_profile.run.recipe import load_recipe
from uhd_profile.run.store import RESULTS_FILE, read_header
from uhd_profile.run.store import merge as merge_dirs
from uhd_profile.run.sweep import PHASES_FILE, SweepSummary, parse_shard, run_point, run_point_isolated, run_sweep, select
from uhd_profile.units import format_bytes


@click.command()
@click.argument("recipe", required=False, default="paper")
@click.option("--out", "out_dir", default=None, help="run directory [default: runs/<recipe>-<UTC time>]")
@click.option(
    "--device", default="auto", show_default=True, help="auto | cpu | cuda | cuda:N (selects the recipe's [when.*] settings)"
)
@click.option("--resume", is_flag=True, help="continue the run in --out: skip recorded points")
@click.option("--shard", default=None, help="run the deterministic I/N share of the points (0 <= I < N)")
@click.option("--executor", default="local", show_default=True, help="local | ray")
@click.option(
    "--ray-address", default=None, help="an existing Ray cluster (auto, host:port, ray://host:port) [default: a local one]"
)
@click.option("--only", default=None, help="run only points whose variant id or point id matches this glob")
@click.option("--dry-run", is_flag=True, help="list the points and their count, run nothing")
@click.option("--in-process", is_flag=True, help="measure in this process, not a fresh one per measured point (debugging)")
@click.option("--no-report", is_flag=True, help="do not write RUN_DIR/report at the end (`uhd-profile report` does it later)")
def sweep(
    recipe: str,
    out_dir: str | None,
    device: str,
    resume: bool,
    shard: str | None,
    executor: str,
    ray_address: str | None,
    only: str | None,
    dry_run: bool,
    in_process: bool,
    no_report: bool,
) -> None:
    """Run a recipe (a shipped name such as paper, smoke, depth-sweep, encoders, or a TOML path).

    With no RECIPE it runs paper.toml. Exit code 1 if any point failed (oom or error).
    """
    started_s, t_start = process_age_s(), time.perf_counter()
    check_executor(executor)
    if ray_address is not None and executor != "ray":
        raise UhdProfileError("--ray-address needs --executor ray")
    shard_t = parse_shard(shard)
    if resume and out_dir is None and not dry_run:
        raise UhdProfileError("--resume needs --out DIR (the run directory to continue)")
    if out_dir is not None and not dry_run:
        check_output_dir(out_dir, "--out")  # a file or a read-only place fails now, not after the expansion
    recorded = _recorded_dtype_choice(out_dir) if resume and out_dir is not None else None
    with ExpansionProgress() as expanding:
        rec = load_recipe(recipe, device=device, progress=expanding.update, dtype_choice=recorded)
    if rec.dtype_choice is not None and not dry_run:
        note(
            f"dtype auto -> {rec.dtype_choice.dtype}"
            + (" (recorded in the run)" if recorded else "")
            + f": {rec.dtype_choice.reason}"
        )
    if dry_run:
        _dry_run(rec, select([p.to_dict() for p in rec.points], shard_t, only), shard)
        return
    if out_dir is None:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        out_dir = os.path.join("runs", f"{rec.name}-{stamp}")
    code = 0
    setup_s = time.perf_counter() - t_start + started_s
    # one lock over the sweep and its report: no other writer gets in between
    with RunLock(out_dir, "sweep", what="--out") as lock:
        stale = stale_note(lock)
        if stale:
            note(stale)
        summary = run_sweep(
            rec,
            out_dir,
            resume=resume,
            shard=shard_t,
            executor=executor,
            ray_address=ray_address,
            only=only,
            runner=run_point if in_process else run_point_isolated,
            progress=ProgressBar(),
        )
        _render_summary(summary)
        for n in summary.notes:
            note(n)
        if summary.failed:
            code = EXIT_FAILED
        phases = {"setup_s": round(setup_s, 3), **summary.phases}
        if not no_report:
            t_report = time.perf_counter()
            code = _sweep_report(out_dir) or code
            phases["report_s"] = round(time.perf_counter() - t_report, 3)
        phases["wall_s"] = round(time.perf_counter() - t_start + started_s, 3)
        _write_phases(out_dir, phases)
    if code:
        sys.exit(code)


def process_age_s() -> float:
    """Seconds since this process started (Linux: /proc; 0 elsewhere): the imports before a
    command runs are part of its wall time."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


def _recorded_dtype_choice(out_dir: str) -> DtypeChoice | None:
    """The dtype ``auto`` resolved to in a run being resumed (its header), so a resumed run
    measures in the same dtype; None for a new directory or a run without ``auto``."""
    if not Path(out_dir, RESULTS_FILE).is_file():
        return None
    recorded = read_header(out_dir).get("dtype_auto")
    return DtypeChoice.from_dict(recorded) if recorded is not None else None


PHASE_LABELS = (
    ("setup_s", "setup (imports, recipe, dtype choice)"),
    ("counting_s", "counting"),
    ("measuring_s", "measuring"),
    ("report_s", "report"),
)


def format_phases(phases: dict[str, float]) -> str:
    """One line: where the sweep's wall time went."""
    parts = []
    for key, label in PHASE_LABELS:
        if key not in phases:
            continue
        text = f"{label} {phases[key]:.1f} s"
        if key == "counting_s" and phases.get("count_workers", 1) > 1:
            text += f" ({int(phases['count_workers'])} processes)"
        if key == "measuring_s":
            split = [
                ("measure_start_s", "process start"),
                ("measure_build_s", "model builds"),
                ("measure_count_s", "counts"),
                ("measure_time_s", "timing and memory"),
            ]
            text += " (" + ", ".join(f"{lab} {phases.get(k, 0.0):.1f} s" for k, lab in split) + ")"
        parts.append(text)
    return f"wall {phases.get('wall_s', 0.0):.1f} s: " + "; ".join(parts)


def _write_phases(out_dir: str, phases: dict[str, float]) -> None:
    out.print(format_phases(phases), markup=False, highlight=False, soft_wrap=True)  # one line, for grep
    try:
        atomic_write_text(Path(out_dir, PHASES_FILE), json.dumps(phases, indent=1, sort_keys=True) + "\n", what="--out")
    except WriteError as exc:  # the results are safe; the split is a convenience
        err.print(f"phase split not written: {exc}", markup=False)


DRY_RUN_TABLE_MAX = 1000
"""Above this many points --dry-run prints plain tab-separated lines (a table of 10^5 rows takes minutes)."""


def _dry_run(rec, pts: list[dict], shard: str | None) -> None:
    title = f"{rec.name} ({rec.path}): {len(pts)} points" + (f", shard {shard}" if shard else "")
    cols = ("#", "point_id", "variant_id", "measure", "dtype", "batch", "device")
    rows = (
        (str(i), p["point_id"], p["variant_id"], "+".join(p["measure"]), p["dtype"], str(p["batch"]), p["device"])
        for i, p in enumerate(pts)
    )
    if len(pts) > DRY_RUN_TABLE_MAX:
        say(title)
        write = sys.stdout.write
        write("\t".join(cols) + "\n")
        for row in rows:
            write("\t".join(row) + "\n")
    else:
        t = Table(title=title, title_justify="left")
        for col in cols:
            t.add_column(col)
        for row in rows:
            t.add_row(*row)
        out.print(t)
    say(f"{len(pts)} points")


class ExpansionProgress:
    """Progress of a big recipe's expansion on stderr (``load_recipe(progress=)``); silent for
    recipes small enough to expand at once."""

    def __init__(self) -> None:
        self.bar: Progress | None = None

    def update(self, done: int, total: int) -> None:
        if self.bar is None:
            self.bar = Progress(
                TextColumn("expanding the recipe"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err
            )
            self.task = self.bar.add_task("points", total=total)
            self.bar.start()
        self.bar.update(self.task, completed=done)

    def __enter__(self) -> ExpansionProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


class ProgressBar:
    """A rich progress bar with ETA and the current point, on stderr (a ``run.sweep.Progress``)."""

    def __init__(self) -> None:
        self.bar = Progress(
            TextColumn("[bold]sweep"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.description}"),
            console=err,
            transient=False,
        )
        self.task = self.bar.add_task("", total=0)
        self.started = False

    def start(self, total: int) -> None:
        if total > 0:
            self.bar.update(self.task, total=total)
            self.bar.start()
            self.started = True

    def current(self, point: dict) -> None:
        self.bar.update(self.task, description=point["variant_id"])

    def advance(self, record: dict) -> None:
        mark = "" if record["status"] == "ok" else f" [{record['status']}]"
        self.bar.update(self.task, advance=1, description=record["point"]["variant_id"] + mark)

    def close(self) -> None:
        if self.started:
            self.bar.stop()


def _sweep_report(run_dir: str) -> int:
    """The report at the end of a sweep; returns the exit code it adds. The results are already
    safe on disk, so a report that cannot be built is one line on stderr, not a failed sweep
    (`uhd-profile report` retries it); one that could not be *written* (a full disk) is exit 3."""
    try:
        written = write_report(run_dir, recount=False)
    except WriteError as exc:
        err.print(f"error: {exc}; the results are complete: retry with `uhd-profile report {run_dir}`", markup=False)
        return EXIT_WRITE
    except (UhdProfileError, ValueError) as exc:
        err.print(f"report not written: {exc}; retry with `uhd-profile report {run_dir}`", markup=False)
        return 0
    for key in ("md", "html"):
        if key in written:
            say(f"report: {written[key]}")
    return 0


def _render_summary(summary: SweepSummary) -> None:
    t = Table(title=f"sweep results ({summary.run_dir})", title_justify="left")
    for col in ("variant", "dtype", "device", "status", "GMACs", "paper G", "latency median", "IQR/median", "peak mem"):
        t.add_column(col, justify="left" if col in ("variant", "status", "dtype", "device") else "right")
    for r in summary.records:
        m, p = r.get("metrics") or {}, r["point"]
        status = {"ok": "[green]ok[/]", "oom": "[red]oom[/]", "error": "[red]error[/]"}.get(r["status"], r["status"])
        lat = m.get("latency_median_s")
        iqr = m.get("latency_iqr_over_median")
        flag = "" if m.get("noise_flag") in (None, "ok") else f" {m['noise_flag']}"
        t.add_row(
            p["variant_id"],
            p["dtype"],
            p["device"],
            status,
            f"{m['macs'] / 1e9:,.2f}" if m.get("macs") is not None else "",
            f"{m['paper_flops'] / 1e9:,.2f}" if m.get("paper_flops") is not None else "",
            f"{lat * 1e3:,.1f} ms" if lat is not None else "",
            (f"{iqr:.1%}" + flag) if iqr is not None else "",
            format_bytes(m.get("peak_mem_bytes")) if m.get("peak_mem_bytes") is not None else "",
        )
    out.print(t)
    counts = ", ".join(f"{v} {k}" for k, v in sorted(summary.counts.items())) or "nothing new"
    out.print(
        f"{summary.total} points: {summary.already_done} already recorded, this run: {counts}; "
        f"{summary.wall_s:.1f} s. Results: {summary.run_dir} (uhd_profile.load(dir) -> DataFrame)"
    )
    for r in summary.records:
        if r["status"] != "ok":
            err.print(f"{r['status']}: {r['point']['variant_id']}: {r.get('error')}", markup=False)


@click.command()
@click.argument("run_dirs", nargs=-1, required=True)
@click.option("--out", "out_dir", required=True, help="the merged run directory (must not hold results)")
@click.option("--allow-partial", is_flag=True, help="merge the readable records of runs with a torn or corrupt line")
def merge(run_dirs: tuple[str, ...], out_dir: str, allow_partial: bool) -> None:
    """Combine shard run directories into one (refuses duplicate points, mismatched recipes and, unless
    --allow-partial, torn or corrupt lines). Also converts a run directory written by an older
    uhd-profile to the current schema."""
    n = merge_dirs(list(run_dirs), out_dir, allow_partial=allow_partial)
    out.print(f"merged {len(run_dirs)} run directories into {out_dir}: {n} records")
