"""Reliability (issue 11, docs/reliability.md): every failure of the issue planted for real -- two
concurrent writers, a torn line, a kill mid-report, a full disk, read-only targets, files in the
way, extreme sizes and thread counts -- and nothing lost, doubled or stale, each one line with its
documented exit code, never a traceback.

Real processes where the failure needs them (two sweeps at once, SIGKILL of a report, a closed
pipe); a real tmpfs for the full disk where this machine lets the test mount one (else an injected
ENOSPC); a real non-root user for read-only targets where the test runs as root (a forked child
drops to ``nobody``; else the test's own user, to whom permissions apply).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest

from uhd_profile.analyse.report import write_report
from uhd_profile.analyse.report.render import REPORT_MARKER
from uhd_profile.cli import main
from uhd_profile.errors import EXIT_USAGE, EXIT_WRITE
from uhd_profile.measure.limits import lower_bound_bytes, usable_cores
from uhd_profile.measure.schema import Point, make_record
from uhd_profile.model.slicing import global_resize
from uhd_profile.model.variants import VariantSpec
from uhd_profile.run.lock import LOCK_FILE, Holder, RunLock, RunLocked, active_writer, stale_note
from uhd_profile.run.recipe import load_recipe
from uhd_profile.run.store import RESULTS_FILE, PartialRunWarning, ResultStore, load, records
from uhd_profile.run.sweep import run_point
from uhd_profile.units import Size, format_bytes

UHD = [sys.executable, "-m", "uhd_profile.cli"]
ENV = {**os.environ, "MPLBACKEND": "Agg", "PYTHONWARNINGS": "ignore::DeprecationWarning"}

COUNTS_RECIPE = """\
[recipe]
name = "smoke-counts"
description = "The smoke recipe's count-only grid (the tiny preset)."

[defaults]
encoders = ["tiny"]
resolutions = [128]

[[grid]]
name = "counts"
compressors = ["none", "avg-pool", "window-attn-reused-mlp", "cross-attn-mean"]
depths = [1]
post_ratios = [1, "auto"]
"""


def one_line_error(code, err: str, expected: int = EXIT_USAGE) -> str:
    """The error line, after checking the exit code, a single ``error:`` line and no traceback."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("sweep ")]  # not the progress bar
    assert code == expected and len(lines) == 1 and lines[0].startswith("error: "), (code, err)
    return lines[0]


def results_ids(run_dir: Path) -> list[str]:
    """Point ids of every record line, checking each line is whole JSON and the file ends cleanly."""
    data = (run_dir / RESULTS_FILE).read_text()
    assert data.endswith("\n")
    return [json.loads(line)["point_id"] for line in data.splitlines()[1:]]


def snapshot(directory: Path) -> dict[str, str]:
    """Every file under ``directory``: relative path -> sha256 of its bytes."""
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def counts_recipe(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("recipe") / "smoke-counts.toml"
    p.write_text(COUNTS_RECIPE)
    return p


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """Two ``sweep smoke --resume`` started together on one directory (real processes)."""
    run = tmp_path_factory.mktemp("concurrent") / "R"
    cmd = [*UHD, "sweep", "smoke", "--out", str(run), "--resume", "--no-report", "--in-process", "--device", "cpu"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    return SimpleNamespace(run=run, procs=procs, codes=[p.returncode for p in procs], errs=[e for _, e in outs])


# ---------------------------------------------------------------------------------------------
# Data lost or doubled (issue items 1-4)


def test_two_concurrent_resumes_one_runs_the_other_is_refused_and_each_point_is_recorded_once(smoke_run):
    assert sorted(smoke_run.codes) == [0, EXIT_USAGE], smoke_run.errs
    winner = smoke_run.procs[smoke_run.codes.index(0)]
    loser = smoke_run.codes.index(EXIT_USAGE)
    line = one_line_error(smoke_run.codes[loser], smoke_run.errs[loser])
    assert f"{smoke_run.run} is being written by PID {winner.pid} on {socket.gethostname()} (sweep, since " in line
    ids = results_ids(smoke_run.run)
    assert sorted(ids) == sorted(p.point_id for p in load_recipe("smoke", device="cpu").points)  # each point once
    assert not (smoke_run.run / LOCK_FILE).exists()  # released


def test_a_stale_lock_of_a_dead_process_is_taken_over_and_named(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()  # its PID is gone: what a sweep killed by SIGKILL leaves in its lock file
    run = tmp_path / "R"
    run.mkdir()
    (run / LOCK_FILE).write_bytes(Holder(dead.pid, socket.gethostname(), "2026-01-01T00:00:00+00:00", "sweep", "x").to_bytes())
    with RunLock(run, "sweep") as lock:
        assert lock.took_over is not None and lock.took_over.pid == dead.pid
        assert f"PID {dead.pid} on {socket.gethostname()}" in stale_note(lock) and "no longer running" in stale_note(lock)
        assert Holder.parse((run / LOCK_FILE).read_bytes()).pid == os.getpid()
    assert not (run / LOCK_FILE).exists()


def test_two_takers_of_one_stale_lock_race_and_exactly_one_wins(tmp_path):
    """flock arbitrates: two open file descriptions race for the same stale lock file."""
    run = tmp_path / "R"
    run.mkdir()
    (run / LOCK_FILE).write_bytes(Holder(999_999_999, socket.gethostname(), "then", "sweep", "x").to_bytes())
    barrier, results = threading.Barrier(2), []

    def take():
        lock = RunLock(run, "sweep")
        barrier.wait()
        try:
            results.append(("won", lock._flock()))
        except RunLocked as exc:
            results.append(("refused", str(exc)))

    threads = [threading.Thread(target=take) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(kind for kind, _ in results) == ["refused", "won"]
    for kind, value in results:
        if kind == "won":
            os.close(value)


def test_a_live_writers_unfinished_line_is_not_torn_but_a_dead_ones_is(tmp_path, counts_recipe):
    recipe = load_recipe(str(counts_recipe), device="cpu")
    store = ResultStore(tmp_path, recipe.hash, recipe.name)
    point = recipe.points[0].to_dict()
    store.append(make_record(point, "ok", {}, None, {}, recipe.hash, recipe.name, "2026-01-01T00:00:00+00:00", 0.0))
    store.close()
    with (tmp_path / RESULTS_FILE).open("ab") as fh:
        fh.write(b'{"point_id": "half a rec')  # a write in flight
    other = os.open(tmp_path / LOCK_FILE, os.O_RDWR | os.O_CREAT)  # another process's writer lock
    fcntl.flock(other, fcntl.LOCK_EX)
    try:
        assert active_writer(tmp_path) is not None
        with warnings.catch_warnings():
            warnings.simplefilter("error", PartialRunWarning)
            assert len(records(tmp_path)) == 1  # in flight: not reported
    finally:
        os.close(other)
    with pytest.warns(PartialRunWarning, match="line 3 is torn"):
        assert len(records(tmp_path)) == 1


def test_a_torn_run_is_refused_by_merge_and_baseline_and_reported_by_every_reader(smoke_run, tmp_path, cli):
    torn = tmp_path / "torn"
    shutil.copytree(smoke_run.run, torn)
    head, *recs = (torn / RESULTS_FILE).read_text().splitlines()
    recs.sort(key=lambda line: json.loads(line)["point"]["device"] == "meta")  # a quick count point last: resumed below
    data = "\n".join([head, *recs]).encode() + b"\n"
    (torn / RESULTS_FILE).write_bytes(data[:-50])  # the last record cut mid-write, as kill -9 leaves it
    torn_line, kept = len(recs) + 1, len(recs) - 1  # the header is line 1
    where = f"{torn / RESULTS_FILE}: line {torn_line} is torn"

    code, _, err = cli("merge", str(torn), "--out", str(tmp_path / "m"))
    assert where in one_line_error(code, err) and "--allow-partial" in err and not (tmp_path / "m").exists()
    code, _, err = cli("baseline", str(torn), "--out", str(tmp_path / "b.json"))
    assert where in one_line_error(code, err) and not (tmp_path / "b.json").exists()

    code, out, err = cli("merge", str(torn), "--out", str(tmp_path / "m"), "--allow-partial")
    assert code == 0 and err.strip().startswith("warning: ") and where in err and len(err.strip().splitlines()) == 1
    assert len(results_ids(tmp_path / "m")) == kept
    code, out, err = cli("baseline", str(torn), "--out", str(tmp_path / "b.json"), "--allow-partial")
    assert code == 0 and where in err and len(json.loads((tmp_path / "b.json").read_text())["points"]) == kept
    with pytest.warns(PartialRunWarning, match=f"line {torn_line} is torn"):
        assert len(load(torn)) == kept

    # check: the torn point is missing from the run, so the gate fails, and says why in one line
    assert cli("baseline", str(smoke_run.run), "--out", str(tmp_path / "full.json"), "--counts-only")[0] == 0
    code, out, err = cli("check", str(torn), "--baseline", str(tmp_path / "full.json"))
    assert code == 1 and where in err and "Traceback" not in err and "missing" in out

    # report: a warning line, and the banner at the top of the report itself
    code, out, err = cli("report", str(torn), "--no-recount", "--format", "md")
    assert code == 0 and where in err and "Traceback" not in err
    md = (torn / "report" / "report.md").read_text().split("\n\n")
    assert (
        md[1].startswith("> **Warning:**")
        and "this run's results file is incomplete" in md[1]
        and f"line {torn_line} is torn" in md[1]
    )

    # resume (under the lock) cuts the torn line and runs that point again: each point once
    code, out, err = cli("sweep", "smoke", "--out", str(torn), "--resume", "--no-report", "--in-process", "--device", "cpu")
    assert code == 0 and f"line {torn_line} is torn" in err and "that point runs again" in err, err
    assert sorted(results_ids(torn)) == sorted(results_ids(smoke_run.run))


def test_a_report_killed_while_writing_leaves_the_old_report_whole(smoke_run, tmp_path):
    run = tmp_path / "R"
    shutil.copytree(smoke_run.run, run)
    write_report(run, formats=("md",), recount=False)  # the old report: Markdown only
    old = snapshot(run / "report")
    proc = subprocess.Popen(
        [*UHD, "report", str(run), "--no-recount"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV
    )
    deadline, killed = time.monotonic() + 300, False
    while time.monotonic() < deadline and proc.poll() is None:
        staged = list(run.glob(".report.new-*/figures/*"))
        if staged:  # the new report is being written beside the old one
            proc.send_signal(signal.SIGKILL)
            killed = True
            break
        time.sleep(0.01)
    proc.wait()
    assert killed, "the report finished before it could be killed mid-write"
    assert snapshot(run / "report") == old  # whole, and not mixed with any new file
    new = write_report(run, recount=False)  # the next report cleans what the killed one left
    assert not list(run.glob(".report.*"))
    assert set(snapshot(run / "report")) == {str(Path(p).relative_to(run / "report")) for p in new.values()} | {REPORT_MARKER}


def test_report_twice_over_a_changed_run_leaves_exactly_the_second_reports_files(smoke_run, tmp_path):
    run = tmp_path / "R"
    shutil.copytree(smoke_run.run, run)
    first = write_report(run, recount=False)
    lines = (run / RESULTS_FILE).read_text().splitlines()
    kept = [line for line in lines[1:] if json.loads(line)["point"]["device"] == "meta"]  # drop the measured points
    (run / RESULTS_FILE).write_text("\n".join([lines[0], *kept]) + "\n")
    second = write_report(run, recount=False)
    assert set(first) - set(second)  # the first report had files the second has not ...
    files = set(snapshot(run / "report"))
    assert files == {str(Path(p).relative_to(run / "report")) for p in second.values()} | {REPORT_MARKER}  # ... gone


def test_the_directory_swap_without_rename_exchange_and_its_repair(tmp_path, monkeypatch):
    import uhd_profile.files as files

    def tree(name: str, content: str) -> Path:
        d = tmp_path / name
        (d / "figures").mkdir(parents=True)
        (d / "figures" / f"{content}.png").write_text(content)
        return d

    target = tree("report", "old")
    monkeypatch.setattr(files, "_rename_exchange", lambda a, b: False)  # a system without renameat2
    files.swap_dir(tree("new", "new"), target)
    assert snapshot(target) == snapshot(tmp_path / "report") and set(snapshot(target)) == {"figures/new.png"}
    # a writer killed between the fallback's two renames: the old directory is put back whole
    dead = subprocess.Popen(["true"])
    dead.wait()
    target.rename(tmp_path / f".report.old-{dead.pid}-abc")
    (tmp_path / f".report.new-{dead.pid}-abc").mkdir()
    files.clean_staged(target)
    assert set(snapshot(target)) == {"figures/new.png"} and not list(tmp_path.glob(".report.*"))


@pytest.fixture
def tiny_fs(tmp_path):
    """An 8 MiB tmpfs (None where this machine does not let the test mount one)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        yield None
        return
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _fill(mnt: Path, leave: int) -> Path:
    """Fill the file system but ``leave`` bytes."""
    st = os.statvfs(mnt)
    filler = mnt / "filler"
    with filler.open("wb") as fh:
        fh.write(b"\0" * max(0, st.f_bavail * st.f_frsize - leave))
    return filler


def test_a_full_disk_stops_the_sweep_in_one_line_and_the_run_resumes(tiny_fs, tmp_path, cli, counts_recipe, monkeypatch):
    recipe = load_recipe(str(counts_recipe), device="cpu")
    if tiny_fs is not None:
        run = tiny_fs / "R"
        filler = _fill(tiny_fs, 16 * 1024)
    else:  # no mount here: inject ENOSPC at the results file's write, after two records
        run, filler = tmp_path / "R", None
        real_write, calls = os.write, []

        def write(fd, data):
            if os.readlink(f"/proc/self/fd/{fd}").endswith(RESULTS_FILE):
                calls.append(1)
                if len(calls) > 2:
                    real_write(fd, bytes(data[:100]))  # a short write, then the disk is full
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_write(fd, data)

        monkeypatch.setattr(os, "write", write)
    code, out, err = cli("sweep", str(counts_recipe), "--out", str(run), "--no-report", "--in-process")
    line = one_line_error(code, err, EXIT_WRITE)
    assert f"could not write {run / RESULTS_FILE}: No space left on device (ENOSPC)" in line
    assert "records written before are intact" in line and "--resume" in line
    written = results_ids(run)  # every line whole, the file ends on a newline
    assert 0 < len(written) < len(recipe.points)
    if filler is not None:
        filler.unlink()
    else:
        monkeypatch.undo()
    code, out, err = cli("sweep", str(counts_recipe), "--out", str(run), "--resume", "--no-report", "--in-process")
    assert code == 0, err
    assert sorted(results_ids(run)) == sorted(p.point_id for p in recipe.points)
    if tiny_fs is None:
        return
    # a report on a full disk: one line, exit 3, the previous report there unchanged, nothing left behind
    assert cli("report", str(run), "--no-recount", "--format", "md")[0] == 0
    old = snapshot(run / "report")
    filler = _fill(tiny_fs, 8 * 1024)
    code, out, err = cli("report", str(run), "--no-recount")
    assert "could not write" in one_line_error(code, err, EXIT_WRITE) and "unchanged" in err
    assert snapshot(run / "report") == old and not list(run.glob(".report.*"))


def _run_cli_as(commands: list[list[str]], uid: int | None, inject_ro: str | None = None) -> list[tuple] | str:
    """Run CLI commands in a forked child (optionally as ``uid``); [(code, stderr)] per command."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        results = []
        try:
            os.close(rfd)
            if uid is not None:
                try:
                    os.setgid(uid)
                    os.setuid(uid)
                except OSError:
                    results = "no-setuid"
                    return
            if inject_ro is not None:  # cannot drop root here: pretend the kernel refuses writes there
                real_access = os.access
                os.access = lambda p, m, **kw: False if str(p).startswith(inject_ro) else real_access(p, m, **kw)
            for argv in commands:
                out, err = io.StringIO(), io.StringIO()
                try:
                    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                        main(argv)
                    code = 0
                except SystemExit as exc:
                    code = exc.code
                except BaseException:
                    code, _ = "traceback", err.write(traceback.format_exc())
                results.append((code, err.getvalue()))
        finally:
            os.write(wfd, json.dumps(results).encode())
            os._exit(0)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as fh:
        data = fh.read()
    os.waitpid(pid, 0)
    results = json.loads(data)
    return results if results == "no-setuid" else [tuple(r) for r in results]


def test_read_only_targets_and_files_in_the_way_are_one_line_errors(smoke_run, counts_recipe, tmp_path):
    from PIL import Image

    base = Path(tempfile.mkdtemp(prefix="uhd-ro-"))
    try:
        base.chmod(0o755)
        shutil.copytree(smoke_run.run, base / "R")
        shutil.copy(counts_recipe, base / "c.toml")
        (base / "imgs").mkdir()
        Image.new("RGB", (64, 48)).save(base / "imgs" / "a.png")
        (base / "afile").write_text("in the way\n")
        ro = base / "ro"
        ro.mkdir()
        for p in [base, *base.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        ro.chmod(0o555)
        b, r = str(base), str(ro)
        commands = [
            ["sweep", f"{b}/c.toml", "--out", f"{r}/x"],
            ["report", f"{b}/R", "--out", f"{r}/rep"],
            ["baseline", f"{b}/R", "--out", f"{r}/b.json"],
            ["merge", f"{b}/R", "--out", f"{r}/m"],
            ["dataset", f"{b}/imgs", "--out", f"{r}/d", "--encoder", "tiny", "--variant", "baseline"],
            ["bench", "--encoder", "tiny", "--resolution", "64", "--trace", f"{r}/t"],
            ["image", f"{b}/imgs/a.png", "--encoder", "tiny", "--variant", "baseline", "--draw", f"{r}/d.png"],
            ["check", f"{b}/R", "--baseline", f"{b}/none.json", "--update", f"{r}/u.json"],
        ]
        in_the_way = [
            ["sweep", f"{b}/c.toml", "--out", f"{b}/afile"],
            ["sweep", f"{b}/c.toml", "--out", f"{b}/afile/sub"],
            ["report", f"{b}/R", "--out", f"{b}/afile"],
            ["report", f"{b}/R", "--out", f"{b}/imgs"],  # a directory of other files: never replaced
            ["baseline", f"{b}/R", "--out", f"{b}/imgs"],
            ["dataset", f"{b}/imgs", "--out", f"{b}/afile", "--encoder", "tiny"],
            ["bench", "--encoder", "tiny", "--resolution", "64", "--trace", f"{b}/afile"],
        ]
        if os.geteuid() == 0:
            results = _run_cli_as(commands + in_the_way, uid=65534)  # nobody: permissions apply
            if results == "no-setuid":  # a root that cannot drop its rights: inject the refusal instead
                results = _run_cli_as(commands + in_the_way, uid=None, inject_ro=r)
        else:
            results = _run_cli_as(commands + in_the_way, uid=None)
        assert len(results) == len(commands + in_the_way)
        for argv, (code, err) in zip(commands + in_the_way, results):
            line = one_line_error(code, err)
            flag = next(f for f in ("--out", "--trace", "--draw", "--update") if f in argv)
            assert f"{flag} {argv[argv.index(flag) + 1]}" in line, (argv, line)
        for argv, (_, err) in zip(commands, results):
            assert "permission denied (EACCES)" in err, (argv, err)
        assert list(ro.iterdir()) == [] and (base / "afile").read_text() == "in the way\n"
        assert sorted(p.name for p in (base / "imgs").iterdir()) == ["a.png"]
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_a_read_only_file_system_is_a_one_line_error(tmp_path, cli, counts_recipe):
    mnt = tmp_path / "rofs"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("this machine does not let the test mount a read-only tmpfs")
    try:
        code, _, err = cli("sweep", str(counts_recipe), "--out", str(mnt / "R"))
        assert "read-only file system (EROFS)" in one_line_error(code, err)
        code, _, err = cli("baseline", "x", "--out", str(mnt / "b.json"))
        assert "read-only file system (EROFS)" in one_line_error(code, err)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


# ---------------------------------------------------------------------------------------------
# Crashes instead of errors (items 5-7)


def test_extreme_thread_counts_and_sizes_are_refused_before_allocating(cli):
    code, _, err = cli("bench", "--encoder", "tiny", "--resolution", "64", "--threads", "100000")
    assert f"--threads 100000 is more than the {usable_cores()} CPU cores" in one_line_error(code, err)
    code, _, err = cli("bench", "--encoder", "tiny", "--resolution", "100000x100000")
    line = one_line_error(code, err)
    spec = VariantSpec(encoder="tiny", resolution=Size(100000, 100000), post_ratio=16)
    need = 3 * 100000 * 100000 * 4 + spec.tokens_in * 64 * 4  # pixels + one hidden state (width 64), fp32
    assert lower_bound_bytes(spec, 1, "fp32")["total"] == need
    assert "needs at least 149.01 GiB" in line and "available (" in line
    # in a sweep the same point is recorded as oom, with the estimate, and the sweep goes on
    point = Point(spec=spec, measure=("flops", "latency"), device="cpu", timing={"max_time_s": 1.0, "min_time_s": 0.0})
    rec = run_point(point.to_dict(), "h", "r")
    assert rec["status"] == "oom" and "needs at least" in rec["error"]


def test_a_memory_bound_above_the_free_memory_is_refused(monkeypatch, cli):
    import uhd_profile.measure.limits as limits

    monkeypatch.setattr(limits, "available_bytes", lambda device: (50_000, "a test limit"))
    code, _, err = cli("bench", "--encoder", "tiny", "--resolution", "64", "--dtype", "bf16", "--batch", "2")
    spec = VariantSpec(encoder="tiny", resolution=Size(64, 64), post_ratio=16)
    need = 2 * 3 * 64 * 64 * 2 + 2 * spec.tokens_in * 64 * 2  # batch 2, bf16: pixels + one hidden state (width 64)
    assert need == 65_536 > 50_000
    line = one_line_error(code, err)
    assert (
        f"needs at least {format_bytes(need)}" in line
        and f"more than the {format_bytes(50_000)} available (a test limit)" in line
    )


# ---------------------------------------------------------------------------------------------
# Wrong or misleading numbers (items 8-10)


def test_the_global_view_keeps_its_cap_at_extreme_aspect_ratios(cli):
    cap = 9 * 448 * 448
    for w, h in ((1, 100000), (100000, 1), (3, 250000), (20, 90000)):
        g = global_resize(w, h)
        assert g.size.area <= cap and g.size.width % 56 == 0 and g.size.height % 56 == 0 and g.note
    assert global_resize(1, 100000).size == (56, 32256)  # was 56 x 100016: 3.1x the cap
    assert global_resize(1920, 1080).note is None and global_resize(1920, 1080).size == (1792, 1008)
    code, out, err = cli("image", "1x100000", "--encoding", "global", "--encoder", "tiny", "--variant", "baseline", "--json")
    assert code == 0 and err.startswith("warning: the 1x100000 image is too thin") and len(err.strip().splitlines()) == 1
    (g,) = json.loads(out)
    assert g["views"][0]["size"] == [32, 56448] and g["warnings"]  # tiny: 32 px alignment, cap 1,806,336 px


def test_an_exif_rotated_jpeg_is_costed_as_the_processor_sees_it_unless_asked(tmp_path, cli):
    from PIL import Image
    from transformers.models.minicpmv4_6.image_processing_pil_minicpmv4_6 import MiniCPMV4_6ImageProcessorPil

    exif = Image.Exif()
    exif[0x0112] = 6  # stored 800 x 400, displayed turned by 90 degrees
    Image.new("RGB", (800, 400), (90, 20, 160)).save(tmp_path / "r.jpg", exif=exif)
    with Image.open(tmp_path / "r.jpg") as im:
        rows, cols = MiniCPMV4_6ImageProcessorPil()(images=[im])["grids"][0]
    code, out, err = cli("image", str(tmp_path / "r.jpg"), "--encoding", "sliced", "--variant", "baseline", "--json")
    assert code == 0, err
    stored = json.loads(out)[0]
    assert stored["size"] == [800, 400] and stored["grid"] == [cols, rows] == [2, 1]
    code, out, err = cli(
        "image", str(tmp_path / "r.jpg"), "--encoding", "sliced", "--variant", "baseline", "--json", "--exif-transpose"
    )
    shown = json.loads(out)[0]
    assert code == 0 and shown["size"] == [400, 800] and shown["grid"] == [1, 2]


def test_a_folder_of_unreadable_files_is_an_error_not_zero_images(tmp_path, cli):
    (tmp_path / "a.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "b.png").write_text("nor a png")
    code, _, err = cli("dataset", str(tmp_path), "--out", str(tmp_path / "o"), "--encoder", "tiny")
    assert "none of the 2 files is a readable image" in one_line_error(code, err) and not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------------------------
# Unclear or slow (items 11-15)


def test_a_huge_recipe_is_refused_at_once_and_a_big_one_expands_with_progress(tmp_path, cli):
    huge = tmp_path / "huge.toml"  # 100 resolutions x 100 batches x 100 depths = 10^6 points
    hundred = [64 + 8 * i for i in range(100)]
    huge.write_text(
        f"[defaults]\nencoders = ['tiny']\nresolutions = {hundred}\nbatches = {hundred}\n"
        f"compressors = ['avg-pool']\ndepths = {list(range(100))}\npost_ratios = [1]\n"
    )
    t0 = time.perf_counter()
    code, _, err = cli("sweep", str(huge), "--dry-run")
    assert "expands to 1,000,000 points, more than the 100,000 a recipe may hold" in one_line_error(code, err)
    assert time.perf_counter() - t0 < 30  # refused from the lists' lengths, before building any point
    big = tmp_path / "big.toml"
    big.write_text(
        f"[defaults]\nencoders = ['tiny']\nresolutions = [64]\npost_ratios = [1]\nbatches = {list(range(1, 12_001))}\n"
    )
    seen = []
    assert len(load_recipe(str(big), device="cpu", progress=lambda done, total: seen.append((done, total))).points) == 12_000
    assert seen[-1] == (12_000, 12_000) and len(seen) > 2
    code, out, err = cli("sweep", str(big), "--dry-run")
    assert code == 0 and "expanding the recipe" in err and out.rstrip().endswith("12000 points")
    assert len(out.splitlines()) == 12_000 + 3  # title, header, the points, the count: plain lines, not a table


def test_recipe_mistakes_are_one_line_errors(tmp_path, cli):
    for text, fragment in (
        ("", "is empty; a recipe says what to run in a [defaults] table and/or [[grid]] blocks"),
        ("# nothing but a comment\n[recipe]\nname = 'x'\n", "has no [defaults] and no [[grid]]"),
        (
            '[defaults]\nencoders = "tiny"\n',
            "defaults.encoders: 'tiny' is a str, not a list; valid: a list, e.g. encoders = [\"tiny\"]",
        ),
        ("[[grid]]\nresolutions = 448\n", "resolutions: 448 is an int, not a list"),
    ):
        p = tmp_path / "r.toml"
        p.write_text(text)
        code, _, err = cli("sweep", str(p), "--dry-run")
        assert fragment in one_line_error(code, err), err
    code, _, err = cli("sweep", "smoke", "--only", "no-such-*", "--out", str(tmp_path / "o"))
    line = one_line_error(code, err)
    n = len(load_recipe("smoke", device="cpu").points)
    assert f"recipe smoke has {n} points, none of them matching --only 'no-such-*'" in line and "None" not in line
    assert not (tmp_path / "o").exists()  # nothing left behind


def test_bench_names_its_flags_and_reports_every_bad_one_at_once(cli):
    from uhd_profile.cli.measure import _timing

    code, _, err = cli("bench", "--encoder", "tiny", "--resolution", "64", "--min-time", "2", "--max-time", "0.5")
    assert "--min-time 2.0 is more than --max-time 0.5" in one_line_error(code, err)
    assert _timing(None, 0.5, None, None, False).min_time_s == 0.5  # --max-time alone lowers the default minimum
    code, _, err = cli(
        "bench", "--encoder", "tiny", "--batch", "0", "--threads", "0", "--dtype", "fp8", "--attn", "x", "--min-time", "-1"
    )
    line = one_line_error(code, err)
    assert line.startswith("error: 5 problems: ")
    for flag in ("--min-time -1.0", "--batch 0", "--threads 0", "--dtype 'fp8'", "--attn 'x'"):
        assert flag in line


def test_the_default_plan_error_says_where_its_depth_comes_from(cli):
    code, _, err = cli("image", "640x480", "--encoder", "tiny")
    line = one_line_error(code, err)
    assert "the v4 variant (one of the default variants) puts its compressor after layer 6" in line and "--depth K" in line
    code, out, err = cli("image", "640x480", "--encoder", "tiny", "--depth", "1", "--json")
    assert code == 0 and json.loads(out)[0]["calls"][1]["variant_ids"]["v4"].endswith("window-attn-reused-mlp@1/post4")


def test_a_closed_pipe_ends_the_command_with_exit_0(tmp_path):
    big = tmp_path / "big.toml"
    big.write_text(f'[defaults]\nencoders = ["tiny"]\nresolutions = [64]\npost_ratios = [1]\nbatches = {list(range(1, 5001))}\n')
    proc = subprocess.Popen([*UHD, "sweep", str(big), "--dry-run"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    first = proc.stdout.readline()  # what `| head -1` reads, then it closes the pipe
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0 and b"5000 points" in first and err == ""


def test_the_environment_fingerprint_never_takes_gits_index_lock(monkeypatch):
    import uhd_profile.measure.env as env

    calls = []
    monkeypatch.setattr(
        env.subprocess, "run", lambda args, **kw: calls.append(args) or subprocess.CompletedProcess(args, 1, "", "")
    )
    env.git_state()
    assert calls and all(a[:2] == ["git", "--no-optional-locks"] for a in calls)
