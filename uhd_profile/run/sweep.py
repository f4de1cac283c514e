"""Run a recipe's points, one record each, appended at once: resumable, shardable, failure-tolerant.

Flow: recipe -> points -> (select: resume / shard / --only) -> for each point: count FLOPs, and
where the recipe asks, measure latency, memory and energy (``bench``) -> one record appended to the
run directory's results file the moment it exists. A point that fails (out of memory, an error) is
recorded with its status and message and the sweep goes on; a killed sweep loses at most the point
in flight, and ``resume`` skips every recorded point.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import torch

from uhd_profile.count.flops import count_flops
from uhd_profile.count.memory_model import predict_memory
from uhd_profile.errors import UhdProfileError, WriteError, first_line
from uhd_profile.measure.bench import BenchSettings, bench, precount
from uhd_profile.measure.env import fingerprint
from uhd_profile.measure.limits import WontFit
from uhd_profile.measure.pipeline import point_metrics as pipeline_metrics
from uhd_profile.measure.schema import Point, count_metrics, make_record, predicted_memory_metrics
from uhd_profile.measure.timing import TimingSettings
from uhd_profile.model.variants import build_variant
from uhd_profile.run.executors import check_executor, error_record, run_local, run_ray
from uhd_profile.run.store import ResultStore


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, (torch.OutOfMemoryError, WontFit)):  # WontFit: refused before allocating
        return True
    if isinstance(exc, MemoryError):
        return True
    # the CPU allocator reports exhaustion as a RuntimeError
    return isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc)


def measure_point(point: dict, precounted: dict | None = None) -> dict:
    """The metrics of one point, named by the record schema (raises on failure; ``run_point``
    turns that into a record). ``precounted``: a measured point's counts and memory prediction,
    computed beforehand (``bench.precount``)."""
    p = Point.from_dict(point)
    if p.pipeline is not None:  # a point with an LLM: every stage counted, and timed when measured
        return {**pipeline_metrics(p), **p.dtype_metrics()}
    if not p.measured:
        metrics = count_metrics(count_flops(p.spec, batch=p.batch))
        # the memory model's prediction costs about what the count does: for a GPU, SDPA
        metrics.update(predicted_memory_metrics(predict_memory(p.spec, p.dtype, p.batch, "sdpa", "cuda")))
        return {**metrics, **p.dtype_metrics()}
    settings = BenchSettings(
        device=p.device,
        dtype=p.dtype,
        batch=p.batch,
        timing=TimingSettings(**p.timing),
        telemetry="energy" in p.measure,
        memory="memory" in p.measure,
    )
    return {**bench(p.spec, settings, counted=precounted).metrics, **p.dtype_metrics()}


def run_point(point: dict, recipe_hash: str = "", recipe_name: str = "", precounted: dict | None = None) -> dict:
    """Measure one point and return its record; never raises for the point's own failure.

    Out-of-memory is recorded as ``oom``; anything else that goes wrong at this point (a user
    error in the spec, a library error) as ``error`` with its first line. Both are data: the sweep
    goes on. Catching broadly here is the point of the function.
    """
    started, t0 = _utc_now(), time.perf_counter()
    status, metrics, error = "ok", None, None
    try:
        metrics = measure_point(point, precounted) if precounted is not None else measure_point(point)
    except Exception as exc:  # noqa: BLE001 - a failing point becomes a record, see docstring
        status = "oom" if _is_oom(exc) else "error"
        error = first_line(exc)
        if not isinstance(exc, UhdProfileError) and status == "error":
            frames = traceback.extract_tb(exc.__traceback__)
            if frames:  # where it broke, for a bug report
                error += f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno} in {frames[-1].name})"
        if status == "oom" and torch.cuda.is_available():
            torch.cuda.empty_cache()
    env = fingerprint(point.get("device", "cpu"))
    return make_record(point, status, metrics, error, env, recipe_hash, recipe_name, started, time.perf_counter() - t0)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the measuring child gets SIGKILL when the sweep dies, so a killed sweep leaves no
    orphan measuring in the background (and contaminating the next run)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (the kernel's out-of-memory killer sends SIGKILL)" if -code == signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    return f"exit code {code}"


def run_point_isolated(point: dict, recipe_hash: str = "", recipe_name: str = "", precounted: dict | None = None) -> dict:
    """``run_point`` in a fresh Python process for points that run on a device.

    Each measurement then starts from a clean process: its peak RSS is its own (no model of an
    earlier point still resident), allocator and thread-pool state do not carry over, and a crash
    (segfault, the OOM killer) costs that point only. Count-only points run here (no device work).
    """
    if point.get("device", "meta") == "meta":
        return run_point(point, recipe_hash, recipe_name, precounted)
    started, t0 = _utc_now(), time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="uhd-point-") as tmp:
        job, result = Path(tmp, "point.json"), Path(tmp, "record.json")
        job.write_text(
            json.dumps({"point": point, "recipe_hash": recipe_hash, "recipe_name": recipe_name, "precounted": precounted})
        )
        proc = subprocess.run(
            [sys.executable, "-m", "uhd_profile.run.sweep", str(job), str(result)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        if proc.returncode == 0 and result.exists():
            return json.loads(result.read_text())
    tail = [line for line in (proc.stderr or "").strip().splitlines() if line.strip()]
    msg = f"measuring process {_describe_exit(proc.returncode)}" + (f": {tail[-1].strip()}" if tail else "")
    return make_record(point, "error", None, msg, fingerprint("cpu"), recipe_hash, recipe_name, started, time.perf_counter() - t0)


def _child_main(job_path: str, result_path: str) -> None:
    job = json.loads(Path(job_path).read_text())
    rec = run_point(job["point"], job["recipe_hash"], job["recipe_name"], job.get("precounted"))
    tmp = Path(result_path + ".tmp")
    tmp.write_text(json.dumps(rec, default=str))
    tmp.replace(result_path)


# --------------------------------------------------------------------------------------------
# Selection
# --------------------------------------------------------------------------------------------


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``I/N`` with 0 <= I < N (0-based, like Slurm's default array indices)."""
    if text is None:
        return None
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        i, n = -1, 0
    if n < 1 or not 0 <= i < n:
        raise UhdProfileError(f"--shard {text!r} is not valid; give I/N with 0 <= I < N, e.g. 0/4")
    return (i, n)


def in_shard(point_id: str, shard: tuple[int, int] | None) -> bool:
    """Deterministic 1/N split by the point's own hash: independent of order and of other points."""
    if shard is None:
        return True
    i, n = shard
    return int(hashlib.sha256(point_id.encode()).hexdigest(), 16) % n == i


def select(points: list[dict], shard: tuple[int, int] | None = None, only: str | None = None) -> list[dict]:
    """The points this run is responsible for: its shard, matching ``only`` (a glob over
    variant_id or point_id)."""
    chosen = [p for p in points if in_shard(p["point_id"], shard)]
    if only:
        chosen = [p for p in chosen if fnmatch.fnmatch(p["variant_id"], only) or fnmatch.fnmatch(p["point_id"], only)]
    return chosen


# --------------------------------------------------------------------------------------------
# Counting in parallel
# --------------------------------------------------------------------------------------------

PHASES_FILE = "phases.json"
"""Where a sweep writes its phase split (the last invocation's) in the run directory."""


def default_count_workers() -> int:
    """Processes that count points at once: the cores this process may use (counting on ``meta``
    is single-threaded Python; measured points never run beside it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _count_group_key(point: dict) -> str:
    """Points that share counting work stay in one process (its memo): an image's pipelines share
    their LLM stage; a point without an LLM shares nothing."""
    pipe = point.get("pipeline")
    if not pipe:
        return point["point_id"]
    spec = point["spec"]
    keys = ("encoder", "width_px", "height_px", "encoding", "max_slices", "scale_resolution_px", "packing")
    return json.dumps([[spec.get(k) for k in keys], pipe], sort_keys=True, default=str)


def _prewarm(points: list[dict]) -> None:
    """Build each distinct tower and LLM of ``points`` once on ``meta`` here, before the counting
    processes fork: the modules they import (seconds each) are then imported once, not once per
    process, and the report after the sweep finds them imported too. Anything that fails here
    fails again, with its message, in the point's own record."""
    seen: set[str] = set()
    for d in points:
        try:
            p = Point.from_dict(d)
            key = p.spec.encoder + "|" + (p.pipeline.llm if p.pipeline is not None else "")
            if key in seen:
                continue
            seen.add(key)
            build_variant(p.spec, device="meta")
            if p.pipeline is not None:
                p.pipeline.llm_spec.build("meta", attn="sdpa")
        except Exception:  # noqa: BLE001, S112 - only a warm-up: the point's own run reports the error
            continue


def _count_worker_init() -> None:  # runs in each counting process
    _die_with_parent()  # a killed sweep leaves no counting process behind
    torch.set_num_threads(1)


def _count_group(points: list[dict], recipe_hash: str, recipe_name: str) -> list[tuple[dict, float]]:
    out = []
    for p in points:
        t0 = time.perf_counter()
        rec = run_point(p, recipe_hash, recipe_name)
        out.append((rec, time.perf_counter() - t0))
    return out


def _precount(point: dict) -> tuple[str, dict | None]:
    """A measured point's counts and memory prediction (``bench.precount``); None when that fails
    (the point then counts in its own process, which records the error)."""
    try:
        p = Point.from_dict(point)
        settings = BenchSettings(device=p.device, dtype=p.dtype, batch=p.batch, memory=False, telemetry=False)
        kind = "cuda" if p.device.startswith("cuda") else "cpu"
        return point["point_id"], precount(p.spec, settings, kind)
    except Exception:  # noqa: BLE001 - the point's own run reports it
        return point["point_id"], None


def _run_counts_parallel(
    points: list[dict],
    workers: int,
    recipe_hash: str,
    recipe_name: str,
    on_record: Callable[[dict], None],
    measured: Sequence[dict] = (),
) -> tuple[list[dict], dict[str, dict]]:
    """Count ``points`` (count-only: nothing runs on a device) in ``workers`` forked processes,
    grouped by ``_count_group_key``, the largest groups first; ``on_record`` hears of each record in
    this process. The ``measured`` points (without an LLM) are counted there too, for their own
    process to use (``precount``). Returns the points it could not count (a worker died: the caller
    counts them) and the precounted metrics by point id."""
    groups: dict[str, list[dict]] = {}
    for p in points:
        groups.setdefault(_count_group_key(p), []).append(p)
    ordered = sorted(groups.values(), key=len, reverse=True)
    left = {p["point_id"]: p for p in points}
    pre: dict[str, dict] = {}
    _prewarm([*points, *measured])
    ctx = multiprocessing.get_context("fork")
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_count_worker_init) as pool:
            pending: set[Future[Any]] = {pool.submit(_count_group, g, recipe_hash, recipe_name) for g in ordered}
            pending |= {pool.submit(_precount, p) for p in measured if not p.get("pipeline")}
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    result = fut.result()
                    if isinstance(result, tuple):  # a precount
                        if result[1] is not None:
                            pre[result[0]] = result[1]
                        continue
                    for rec, _ in result:
                        left.pop(rec["point_id"], None)
                        on_record(rec)
    except BrokenProcessPool:  # a counting process died (the OOM killer): the rest count here
        pass
    return list(left.values()), pre


def phase_split(records: list[dict], point_wall: dict[str, float]) -> dict[str, float]:
    """Where measured points' time went, from their records and the wall time each took here:
    ``measure_start_s`` (a fresh process and its imports), ``measure_build_s`` (building the model
    with random weights), ``measure_count_s`` (counting its FLOPs and predicting its memory is part
    of this), ``measure_time_s`` (the timing and memory forwards and the rest)."""
    out = {"measure_start_s": 0.0, "measure_build_s": 0.0, "measure_count_s": 0.0, "measure_time_s": 0.0}
    for r in records:
        if r["point"].get("device", "meta") == "meta":
            continue
        wall = point_wall.get(r["point_id"], r.get("duration_s") or 0.0)
        m = r.get("metrics") or {}
        inner = float(r.get("duration_s") or 0.0)
        build, count = float(m.get("build_s") or 0.0), float(m.get("count_s") or 0.0)
        out["measure_start_s"] += max(0.0, wall - inner)
        out["measure_build_s"] += build
        out["measure_count_s"] += count
        out["measure_time_s"] += max(0.0, inner - build - count)
    return {k: round(v, 3) for k, v in out.items()}


# --------------------------------------------------------------------------------------------
# The sweep
# --------------------------------------------------------------------------------------------


class Progress(Protocol):
    """What a sweep reports as it goes (the command line draws a progress bar from it)."""

    def start(self, total: int) -> None: ...
    def current(self, point: dict) -> None: ...
    def advance(self, record: dict) -> None: ...
    def close(self) -> None: ...


class NoProgress:
    """Reports nothing (the API's default)."""

    def start(self, total: int) -> None:
        pass

    def current(self, point: dict) -> None:
        pass

    def advance(self, record: dict) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class SweepSummary:
    run_dir: str
    total: int  # points this run is responsible for (after shard / --only)
    already_done: int  # skipped because the store holds them (resume)
    counts: dict[str, int] = field(default_factory=dict)  # status -> points recorded by this run
    wall_s: float = 0.0
    records: list[dict] = field(default_factory=list)  # the records this run appended
    notes: list[str] = field(default_factory=list)  # what the user should know (a repaired torn line)
    phases: dict[str, float] = field(default_factory=dict)  # where the wall time went (``phase_split``)

    @property
    def failed(self) -> int:
        return self.counts.get("oom", 0) + self.counts.get("error", 0)


def run_sweep(
    recipe,
    out_dir: str,
    resume: bool = False,
    shard: tuple[int, int] | None = None,
    executor: str = "local",
    ray_address: str | None = None,
    only: str | None = None,
    progress: Progress | None = None,
    runner: Callable[..., dict] = run_point_isolated,
    count_workers: int | None = None,
) -> SweepSummary:
    """Run ``recipe``'s points into ``out_dir`` (see module docstring); ``progress`` hears of each
    point as it starts and as its record is written.

    Locally, count-only points run first, in ``count_workers`` processes at once (None: one per
    core; 1: in this process, one after another; only with the default runners), then the measured
    points one after another, each alone on the machine. ``summary.phases`` (also written to
    ``RUN_DIR/phases.json``) says where the wall time went: ``counting_s``, ``measuring_s`` and its
    split (``phase_split``)."""
    check_executor(executor)
    points = select([p.to_dict() for p in recipe.points], shard, only)
    if not points:
        where = [f"in shard {shard[0]}/{shard[1]}"] if shard else []
        where += [f"matching --only {only!r}"] if only else []
        scope = " and ".join(where)
        raise UhdProfileError(
            f"no points to run: recipe {recipe.name} has {len(recipe.points)} points, none of them {scope}; "
            "`uhd-profile sweep RECIPE --dry-run` lists the points with their variant and point ids"
        )
    dtype_auto = recipe.dtype_choice.as_dict() if getattr(recipe, "dtype_choice", None) is not None else None
    with ResultStore(out_dir, recipe.hash, recipe.name, recipe_text=recipe.text, resume=resume, dtype_auto=dtype_auto) as store:
        done = store.completed_ids()
        todo = [p for p in points if p["point_id"] not in done]
        summary = SweepSummary(run_dir=out_dir, total=len(points), already_done=len(points) - len(todo))
        summary.notes += [
            f"{i.path}: {i.describe()}; cut it off: that point runs again" for i in store.repaired if i.kind == "torn"
        ]
        t0 = time.perf_counter()
        bar: Progress = progress or NoProgress()
        bar.start(len(todo))

        def on_record(rec: dict) -> None:
            if "recipe_hash" not in rec or "env" not in rec:  # a bare error record from the executor
                rec = make_record(
                    rec["point"],
                    rec["status"],
                    rec.get("metrics"),
                    rec.get("error"),
                    {},
                    recipe.hash,
                    recipe.name,
                    _utc_now(),
                    0.0,
                )
            store.append(rec)
            summary.records.append(rec)
            summary.counts[rec["status"]] = summary.counts.get(rec["status"], 0) + 1
            bar.advance(rec)

        work = partial(runner, recipe_hash=recipe.hash, recipe_name=recipe.name)
        point_wall: dict[str, float] = {}
        phases: dict[str, float] = {}
        try:
            if executor == "ray":
                run_ray(todo, work, on_record, address=ray_address)
            else:

                def guarded(point: dict, precounted: dict | None = None) -> dict:
                    bar.current(point)
                    t_point = time.perf_counter()
                    try:
                        return work(point) if precounted is None else work(point, precounted=precounted)
                    except Exception as exc:  # noqa: BLE001 - a runner that raises still yields a record
                        return error_record(point, first_line(exc))
                    finally:
                        point_wall[point["point_id"]] = time.perf_counter() - t_point

                counts = [p for p in todo if p.get("device", "meta") == "meta"]
                measured = [p for p in todo if p.get("device", "meta") != "meta"]
                workers = default_count_workers() if count_workers is None else count_workers
                t_phase = time.perf_counter()
                parallel = workers > 1 and len(counts) + len(measured) > 1 and runner in (run_point, run_point_isolated)
                pre: dict[str, dict] = {}
                if parallel:
                    n = min(workers, len(counts) + len(measured))
                    counts, pre = _run_counts_parallel(counts, n, recipe.hash, recipe.name, on_record, measured)
                run_local(counts, guarded, on_record)
                phases["counting_s"] = time.perf_counter() - t_phase
                phases["count_workers"] = float(workers if parallel else 1)
                t_phase = time.perf_counter()

                run_local(measured, lambda point: guarded(point, pre.get(point["point_id"])), on_record)
                phases["measuring_s"] = time.perf_counter() - t_phase
        except WriteError as exc:
            raise WriteError(
                f"{exc}; free some space, then continue with `uhd-profile sweep {recipe.path} --out {out_dir} --resume`"
            ) from None
        finally:
            bar.close()
    summary.wall_s = time.perf_counter() - t0
    if phases:
        phases.update(phase_split(summary.records, point_wall))
        summary.phases = {k: round(v, 3) for k, v in phases.items()}
    return summary


if __name__ == "__main__":  # the measuring child of run_point_isolated
    _child_main(sys.argv[1], sys.argv[2])
