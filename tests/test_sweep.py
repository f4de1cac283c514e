"""Sweeps: end to end on the smoke recipe, failure isolation, resume after SIGKILL, shards + merge."""

from __future__ import annotations

import fnmatch
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from uhd_profile.run import sweep as sweep_mod
from uhd_profile.run.recipe import load_recipe
from uhd_profile.run.store import RESULTS_FILE, load
from uhd_profile.run.sweep import in_shard, parse_shard, run_point, run_sweep


@pytest.fixture(scope="module")
def smoke():
    return load_recipe("smoke", device="cpu")


def _ids(run_dir) -> list[str]:
    """Point ids recorded in a run directory, read straight from the file (duplicates included)."""
    lines = Path(run_dir, RESULTS_FILE).read_text().splitlines()[1:]
    return [json.loads(line)["point_id"] for line in lines if line.strip()]


def test_smoke_sweep_end_to_end(smoke_sweep, smoke):
    s, run = smoke_sweep.summary, smoke_sweep.run  # run_sweep over the smoke recipe, once per session
    assert s.total == len(smoke.points) and s.failed == 0 and s.counts == {"ok": len(smoke.points)}
    df = load(str(run))
    assert len(df) == len(smoke.points) and set(df["status"]) == {"ok"}
    assert (df["macs"] > 0).all()
    measured = df[df["latency_median_s"].notna()]
    assert len(measured) > 0 and (measured["latency_n"] >= 3).all()
    assert (run / "recipe.toml").read_text() == smoke.text


def test_failure_at_one_point_is_recorded_and_the_sweep_goes_on(tmp_path, smoke, monkeypatch, cli):
    # the count-only points at connector ratio 1: the failure path without measuring (test_smoke_sweep_end_to_end measures)
    only = "*/post1"
    chosen = [p for p in smoke.points if p.spec.id.endswith("/post1")]
    victim = chosen[1].point_id
    real = sweep_mod.measure_point

    def flaky(point):
        if point["point_id"] == victim:
            raise RuntimeError("planted failure")
        return real(point)

    monkeypatch.setattr(sweep_mod, "measure_point", flaky)
    code, out, err = cli("sweep", "smoke", "--out", str(tmp_path / "run"), "--device", "cpu", "--only", only)
    assert code == 1  # the exit code says a point failed
    df = load(str(tmp_path / "run")).set_index("point_id")
    assert len(df) == len(chosen) >= 3
    assert df.loc[victim, "status"] == "error" and "planted failure" in df.loc[victim, "error"]
    assert (df.drop(victim)["status"] == "ok").all()
    # the sweep ends with its report, failed point and all
    report = tmp_path / "run" / "report"
    assert (report / "report.md").exists() and (report / "report.html").exists()
    assert "report.md" in out


def test_out_of_memory_is_a_status(tmp_path, smoke, monkeypatch):
    def oom(point):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20 GiB")

    monkeypatch.setattr(sweep_mod, "measure_point", oom)
    s = run_sweep(smoke, str(tmp_path / "run"), only=smoke.points[0].spec.id)
    assert s.counts == {"oom": 1}


def test_resume_after_sigkill_loses_at_most_the_point_in_flight(tmp_path, smoke):
    run_dir = tmp_path / "run"
    only = "tiny@128x128/baseline/*"  # six points: four counted, then two measured (slow enough to be killed among)
    chosen = [p for p in smoke.points if fnmatch.fnmatch(p.to_dict()["variant_id"], only)]
    cmd = [sys.executable, "-m", "uhd_profile.cli", "sweep", "smoke", "--out", str(run_dir), "--device", "cpu", "--only", only]
    child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = run_dir / RESULTS_FILE
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until some, but not all, points are recorded
        if results.exists() and len(results.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    before = _ids(run_dir)
    assert 2 <= len(before) < len(chosen), "the child finished before it could be killed"
    s = run_sweep(smoke, str(run_dir), resume=True, only=only, runner=run_point)  # the rest in-process: resume is tested
    after = _ids(run_dir)
    assert s.already_done == len(before)
    assert sorted(after) == sorted(p.point_id for p in chosen)  # every point once, none twice
    assert len(after) == len(set(after))


def test_resume_refuses_another_recipe(tmp_path, smoke, cli):
    run_sweep(smoke, str(tmp_path / "run"), only=smoke.points[0].spec.id)
    code, out, err = cli("sweep", "depth-sweep", "--out", str(tmp_path / "run"), "--resume", "--device", "cpu")
    assert code == 2 and "recipe" in err and len(err.strip().splitlines()) == 1


def test_shards_merge_to_the_unsharded_run(tmp_path, smoke, cli):
    # in-process measurement: sharding does not depend on where a point is measured, and it is faster
    full = run_sweep(smoke, str(tmp_path / "full"), runner=run_point)
    for i in range(3):
        run_sweep(smoke, str(tmp_path / f"s{i}"), shard=(i, 3), runner=run_point)
    code, out, err = cli("merge", *(str(tmp_path / f"s{i}") for i in range(3)), "--out", str(tmp_path / "merged"))
    assert code == 0, err
    a = load(str(tmp_path / "full")).set_index("point_id").sort_index()
    b = load(str(tmp_path / "merged")).set_index("point_id").sort_index()
    assert list(a.index) == list(b.index) and len(a) == full.total
    for col in ("variant_id", "status", "macs", "flops", "paper_flops", "tokens_llm"):
        assert a[col].tolist() == b[col].tolist()
    # merging a shard twice is refused
    code, _, err = cli("merge", str(tmp_path / "s0"), str(tmp_path / "s0"), "--out", str(tmp_path / "twice"))
    assert code == 2 and "duplicate" in err.lower()


def test_shards_partition_deterministically(smoke):
    ids = [p.point_id for p in smoke.points]
    owners = [[i for i in range(4) if in_shard(pid, (i, 4))] for pid in ids]
    assert all(len(o) == 1 for o in owners)
    assert parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "-1/2", "x", "1/0"):
        with pytest.raises(Exception, match="--shard"):
            parse_shard(bad)


def test_dry_run_lists_points(cli):
    code, out, err = cli("sweep", "smoke", "--dry-run", "--device", "cpu")
    smoke = load_recipe("smoke", device="cpu")
    assert code == 0 and f"{len(smoke.points)} points" in out


def test_bad_sweep_usage(cli, tmp_path):
    for args, fragment in (
        (["--executor", "slurm"], "valid: local, ray"),
        (["--shard", "3/2"], "--shard"),
        (["--resume"], "--resume needs --out"),
        (["--ray-address", "auto"], "needs --executor ray"),
    ):
        code, out, err = cli("sweep", "smoke", "--device", "cpu", *args)
        assert code == 2 and fragment in err and len(err.strip().splitlines()) == 1, (args, err)


def test_sweep_on_a_local_ray_instance(tmp_path, smoke):
    if not os.environ.get("CI"):  # CI installs the [ray] extra: there a missing Ray is a failure, not a skip
        pytest.importorskip("ray")
    # the executor is what is tested: the baseline's six points (counted, end to end and measured) of the fifteen
    only = "*/baseline/post1*"
    chosen = [p for p in smoke.points if fnmatch.fnmatch(p.to_dict()["variant_id"], only)]
    s = run_sweep(smoke, str(tmp_path / "ray"), executor="ray", runner=run_point, only=only)
    assert s.counts == {"ok": len(chosen)} and len(chosen) >= 1
    assert sorted(_ids(tmp_path / "ray")) == sorted(p.point_id for p in chosen)


def test_a_measuring_process_that_dies_costs_only_its_point(tmp_path, smoke, monkeypatch):
    # a sitecustomize that SIGKILLs every new interpreter: the measuring child dies at start-up,
    # as it would under the kernel's OOM killer; count-only points (run in this process) are unaffected
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "site"))
    s = run_sweep(smoke, str(tmp_path / "run"))
    df = load(str(tmp_path / "run")).set_index("point_id")
    measured = [p.point_id for p in smoke.points if p.measured]
    assert s.counts == {"ok": len(smoke.points) - len(measured), "error": len(measured)}
    for pid in measured:
        assert df.loc[pid, "status"] == "error" and "killed by SIGKILL" in df.loc[pid, "error"]


def test_measured_points_run_in_their_own_process(tmp_path, smoke):
    s = run_sweep(smoke, str(tmp_path / "run"), only="*window-attn*")
    recs = {r["point_id"]: r for r in s.records}
    measured = [p for p in smoke.points if p.measured and "window-attn" in p.spec.id]
    assert measured and all(recs[p.point_id]["status"] == "ok" for p in measured)
    import os as _os

    # the fingerprint's process id is not ours: the point ran in a child
    pids = {recs[p.point_id]["metrics"].get("pid") for p in measured}
    assert None not in pids and _os.getpid() not in pids
