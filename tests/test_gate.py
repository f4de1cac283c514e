"""The regression gate (`uhd-profile baseline` / `check`) driven with planted regressions.

Run directories are written with the real results store (``ResultStore`` + ``make_record``) from the
smoke recipe's points, with planted metrics: no model runs, except one real smoke sweep (module
fixture) that checks the real record layout and the committed CI baseline.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest

from uhd_profile.analyse.gate import (
    SCHEMA,
    SCHEMA_VERSION,
    GateSettings,
    baseline_from_run,
    compare,
    load_baseline,
    mann_whitney_u,
)
from uhd_profile.errors import UhdProfileError
from uhd_profile.measure.env import FIELDS, fingerprint_key
from uhd_profile.measure.schema import gated
from uhd_profile.run.recipe import load_recipe
from uhd_profile.run.store import ResultStore, make_record

REPO = Path(__file__).resolve().parents[1]
CI_BASELINE = REPO / ".ci" / "smoke-baseline.json"

# ---------------------------------------------------------------------------------------------
# the rank test


def _brute_force_p(x, y):
    """Two-sided exact p by enumerating every split of the pooled values (no ties)."""
    pooled = list(x) + list(y)
    n1, n2 = len(x), len(y)

    def u_of(xs):
        return sum(1 for a in xs for b in pooled if b not in xs and a > b)

    u_obs = u_of(x)
    lo = min(u_obs, n1 * n2 - u_obs)
    us = [u_of([pooled[i] for i in idx]) for idx in itertools.combinations(range(n1 + n2), n1)]
    return min(1.0, 2 * sum(1 for u in us if u <= lo) / len(us))


@pytest.mark.parametrize(
    "x,y",
    [
        ([1, 2, 3], [4, 5, 6]),  # complete separation, 3 vs 3: p = 2 / C(6,3) = 0.1
        ([1, 5, 9, 13], [2, 3, 4, 6, 7]),
        ([0.1, 0.7, 0.3, 0.9, 0.5, 0.2], [0.4, 0.6, 0.8, 1.0]),
        ([10.0], [1.0, 2.0, 3.0]),
    ],
)
def test_mann_whitney_exact_equals_enumeration(x, y):
    t = mann_whitney_u(x, y)
    assert t.method == "exact"
    assert t.p == pytest.approx(_brute_force_p(x, y), abs=1e-12)
    # U counts the pairs where x wins
    assert t.u == sum(1 for a in x for b in y if a > b)


def test_mann_whitney_three_vs_three_cannot_reach_five_percent():
    assert mann_whitney_u([1, 2, 3], [4, 5, 6]).p == pytest.approx(0.1)


def test_mann_whitney_normal_approximation_with_ties():
    # pooled sorted: 1x 2x 2x 2y 3x 3y 4y 5y -> ranks 1, 3, 3, 3, 5.5, 5.5, 7, 8
    # R_x = 1 + 3 + 3 + 5.5 = 12.5, U_x = 12.5 - 4*5/2 = 2.5, mean 8
    # ties: one group of 3, one of 2: sum(t^3 - t) = 24 + 6 = 30; n = 8
    # var = 4*4/12 * (9 - 30/56) = 11.285714..., z = (|2.5 - 8| - 0.5) / sqrt(var) = 1.48837
    # p = erfc(z / sqrt 2) = 0.136658
    t = mann_whitney_u([1, 2, 2, 3], [2, 3, 4, 5])
    assert t.method == "normal"
    assert t.u == 2.5
    z = 5.0 / math.sqrt(16 / 12 * (9 - 30 / 56))
    assert t.p == pytest.approx(math.erfc(z / math.sqrt(2)), rel=1e-12)
    assert t.p == pytest.approx(0.136658, abs=1e-6)


def test_mann_whitney_large_separated_samples_are_significant_and_equal_ones_are_not():
    a = [0.010 + 0.0001 * i for i in range(30)]
    b = [v * 1.3 for v in a]
    assert mann_whitney_u(b, a).method == "normal"  # n1 + n2 = 60 > 50
    assert mann_whitney_u(b, a).p < 1e-6
    assert mann_whitney_u([1.0] * 6, [1.0] * 6).p == 1.0
    with pytest.raises(ValueError):
        mann_whitney_u([], [1.0])


# ---------------------------------------------------------------------------------------------
# planted runs

BASE_SAMPLES = [0.010 + 0.0001 * i for i in range(20)]  # median 0.01095 s


def _env(**over):
    env = dict.fromkeys(FIELDS)
    env.update(
        python="3.11.7",
        cpu_model="Test CPU 9000",
        cpu_cores_logical=2,
        cpu_cores_physical=2,
        cpu_affinity=2,
        torch_threads=2,
        torch="2.13.0+cpu",
        transformers="5.24.0",
        device="cpu",
        float32_matmul_precision="highest",
        hostname="testbox",
    )
    env.update(over)
    return env


@pytest.fixture(scope="module")
def points():
    pts = [p.to_dict() for p in load_recipe("smoke", device="cpu").points]
    assert any(p["measure"] != ["flops"] for p in pts) and any(p["measure"] == ["flops"] for p in pts)
    return pts


def _measured(point):
    return point["measure"] != ["flops"]


def _metrics(point, i, samples=None, peak=400 * 2**20, act=8 * 2**20, **over):
    m = {
        "macs": 1_000_000 + 1000 * i,
        "flops": 2_000_000 + 2100 * i,
        "paper_flops": 1_100_000 + 1000 * i,
        "params": 5000 + i,
        "tokens_in": 256,
        "tokens_llm": 16 * (i + 1),
    }
    if _measured(point):
        s = list(BASE_SAMPLES if samples is None else samples)
        med = sorted(s)[len(s) // 2]
        m.update(
            latency_samples_s=s,
            latency_median_s=med,
            latency_p10_s=min(s),
            latency_p90_s=max(s),
            latency_iqr_over_median=0.01,
            latency_n=len(s),
            noise_flag="ok",
            stop_reason="target_iqr",
            threads=2,
            peak_mem_bytes=peak,
            activation_mem_bytes=act,
            weights_bytes=4 * (5000 + i),
        )
    m.update(over)
    return m


def write_run(run_dir, points, plant=None, status=None, drop=(), extra=(), env=None):
    """A run directory of the smoke points. ``plant``: index -> metric overrides; ``status``:
    index -> status; ``drop``: indices left out; ``extra``: additional point dicts."""
    plant, status = plant or {}, status or {}
    store = ResultStore(run_dir, "h1", "smoke")
    for i, p in enumerate(list(points) + list(extra)):
        if i in drop:
            continue
        st = status.get(i, "ok")
        m = _metrics(p, i, **plant.get(i, {})) if st == "ok" else None
        e = env or _env(device=p["device"] if _measured(p) else "meta")
        store.append(
            make_record(p, st, m, None if st == "ok" else f"{st}: planted", e, "h1", "smoke", "2026-11-25T00:00:00+00:00", 0.1)
        )
    return str(run_dir)


@pytest.fixture
def base_file(tmp_path, points, cli):
    run = write_run(tmp_path / "base", points)
    path = tmp_path / "baseline.json"
    code, out, err = cli("baseline", run, "--out", str(path))
    assert code == 0, err
    return str(path)


def _measured_index(points):
    return next(i for i, p in enumerate(points) if _measured(p))


def _flops_index(points):
    return next(i for i, p in enumerate(points) if not _measured(p))


def _check_json(cli, run, base, *args):
    code, out, err = cli("check", run, "--baseline", base, "--json", *args)
    return code, json.loads(out), err


def _point(result, point_id):
    return next(p for p in result["points"] if p["point_id"] == point_id)


# ---------------------------------------------------------------------------------------------
# baseline file


def test_baseline_file_is_committable_and_complete(tmp_path, points, base_file):
    text = Path(base_file).read_text()
    data = json.loads(text)
    assert text == json.dumps(data, indent=2, sort_keys=True) + "\n"  # indented, sorted, stable
    assert (data["schema"], data["schema_version"]) == (SCHEMA, SCHEMA_VERSION)
    assert data["recipe_name"] == "smoke" and data["recipe_hash"] == "h1" and data["counts_only"] is False
    assert set(data["points"]) == {p["point_id"] for p in points}
    i = _measured_index(points)
    e = data["points"][points[i]["point_id"]]
    assert e["status"] == "ok" and e["variant_id"] == points[i]["variant_id"]
    # every compared metric under its schema name: the counts, the latency median and its samples, memory
    assert e["metrics"] == {
        "macs": 1_000_000 + 1000 * i,
        "flops": 2_000_000 + 2100 * i,
        "paper_flops": 1_100_000 + 1000 * i,
        "params": 5000 + i,
        "weights_bytes": 4 * (5000 + i),
        "tokens_in": 256,
        "tokens_llm": 16 * (i + 1),
        "latency_samples_s": BASE_SAMPLES,
        "latency_median_s": sorted(BASE_SAMPLES)[10],
        "peak_mem_bytes": 400 * 2**20,
        "activation_mem_bytes": 8 * 2**20,
    }
    key = fingerprint_key(_env(device="cpu"))
    assert e["env_key"] == key and data["environments"][key]["cpu_model"] == "Test CPU 9000"
    j = _flops_index(points)
    assert "latency_median_s" not in data["points"][points[j]["point_id"]]["metrics"]


def test_counts_only_baseline_has_no_time_or_memory(tmp_path, points, cli):
    run = write_run(tmp_path / "r", points)
    code, out, _ = cli("baseline", run, "--out", str(tmp_path / "b.json"), "--counts-only")
    assert code == 0 and "counts only" in out
    data = json.loads((tmp_path / "b.json").read_text())
    assert data["counts_only"] is True
    assert all(set(e["metrics"]) <= set(gated("exact")) and e["metrics"]["macs"] for e in data["points"].values())


# ---------------------------------------------------------------------------------------------
# verdicts


def test_identical_run_passes_with_every_point_same(tmp_path, points, base_file, cli):
    run = write_run(tmp_path / "new", points)
    code, res, _ = _check_json(cli, run, base_file)
    assert code == 0 and res["verdict"] == "pass" and res["exit_code"] == 0
    assert res["marks"] == {"same": len(points)}
    i = _measured_index(points)
    p = _point(res, points[i]["point_id"])
    lat = next(m for m in p["metrics"] if m["name"] == "latency_median_s")
    assert lat["baseline"] == lat["run"] == pytest.approx(0.01095) and lat["rel_change"] == 0.0
    # and the table: every point, its mark, the verdict
    code, out, _ = cli("check", run, "--baseline", base_file)
    assert code == 0 and "PASS" in out and out.count("same") >= len(points)


@pytest.mark.parametrize(
    "key,delta", [("macs", +1), ("macs", -1), ("paper_flops", -5000), ("params", +1), ("tokens_llm", -1), ("weights_bytes", +4)]
)
def test_any_count_change_fails_in_both_directions(tmp_path, points, base_file, cli, key, delta):
    i = _measured_index(points)
    planted = _metrics(points[i], i)[key] + delta
    run = write_run(tmp_path / "new", points, plant={i: {key: planted}})
    code, res, _ = _check_json(cli, run, base_file)
    assert code == 1 and res["verdict"] == "fail"
    p = _point(res, points[i]["point_id"])
    assert p["mark"] == "changed" and p["regression"] is True
    m = next(m for m in p["metrics"] if m["name"] == key)
    assert (m["mark"], m["run"] - m["baseline"]) == ("changed", delta)
    assert sum(x["mark"] == "same" for x in res["points"]) == len(points) - 1
    code, out, _ = cli("check", run, "--baseline", base_file)
    assert code == 1 and "changed" in out and "FAIL" in out


def test_flops_tolerance_is_relative(tmp_path, points, base_file, cli):
    j = _flops_index(points)
    macs = _metrics(points[j], j)["macs"]
    run = write_run(tmp_path / "new", points, plant={j: {"macs": int(macs * 1.005)}})  # +0.5%
    assert cli("check", run, "--baseline", base_file)[0] == 1  # exact by default
    assert cli("check", run, "--baseline", base_file, "--flops-tolerance", "0.01")[0] == 0
    assert cli("check", run, "--baseline", base_file, "--flops-tolerance", "0.004")[0] == 1
    down = write_run(tmp_path / "down", points, plant={j: {"macs": int(macs * 0.98)}})  # -2%
    assert cli("check", down, "--baseline", base_file, "--flops-tolerance", "0.01")[0] == 1


def test_new_uncounted_op_is_a_count_change(tmp_path, points, base_file, cli):
    j = _flops_index(points)
    run = write_run(tmp_path / "new", points, plant={j: {"uncounted_ops": {"aten.foo.default": 2}}})
    code, res, _ = _check_json(cli, run, base_file)
    assert code == 1 and _point(res, points[j]["point_id"])["mark"] == "changed"


def test_significant_latency_regression_fails_and_improvement_passes(tmp_path, points, base_file, cli):
    i = _measured_index(points)
    slow = write_run(tmp_path / "slow", points, plant={i: {"samples": [v * 1.3 for v in BASE_SAMPLES]}})
    code, res, _ = _check_json(cli, slow, base_file)
    p = _point(res, points[i]["point_id"])
    lat = next(m for m in p["metrics"] if m["name"] == "latency_median_s")
    assert code == 1 and p["mark"] == "worse" and lat["rel_change"] == pytest.approx(0.3)
    # 20 vs 20, complete separation, no ties: exact p = 2 / C(40, 20)
    assert lat["p_value"] == pytest.approx(2 / math.comb(40, 20)) and "exact" in lat["test"]
    # the same change under a 50% threshold is within it
    assert cli("check", slow, "--baseline", base_file, "--time-threshold", "0.5")[0] == 0

    fast = write_run(tmp_path / "fast", points, plant={i: {"samples": [v * 0.7 for v in BASE_SAMPLES]}})
    code, res, _ = _check_json(cli, fast, base_file)
    assert code == 0 and res["verdict"] == "pass" and _point(res, points[i]["point_id"])["mark"] == "better"


def test_latency_over_threshold_but_not_significant_is_noisy(tmp_path, points, cli):
    i = _measured_index(points)
    # three samples a side: even complete separation gives p = 0.1 (see the rank test above)
    base = write_run(tmp_path / "b", points, plant={i: {"samples": [0.010, 0.011, 0.012]}})
    cli("baseline", base, "--out", str(tmp_path / "b.json"))
    run = write_run(tmp_path / "r", points, plant={i: {"samples": [0.013, 0.014, 0.015]}})  # median +27.3%
    code, res, _ = _check_json(cli, run, str(tmp_path / "b.json"))
    p = _point(res, points[i]["point_id"])
    lat = next(m for m in p["metrics"] if m["name"] == "latency_median_s")
    assert code == 0 and res["verdict"] == "noisy" and p["mark"] == "noisy" and p["regression"] is False
    assert lat["p_value"] == pytest.approx(0.1) and lat["rel_change"] == pytest.approx(0.014 / 0.011 - 1)
    code, out, _ = cli("check", run, "--baseline", str(tmp_path / "b.json"))
    assert code == 0 and "NOISY" in out and "noisy" in out
    # a bimodal run: the median jumps by 50% but the samples overlap almost entirely
    base2 = write_run(tmp_path / "b2", points, plant={i: {"samples": [0.010] * 10 + [0.030] * 10}})
    cli("baseline", base2, "--out", str(tmp_path / "b2.json"))
    run2 = write_run(tmp_path / "r2", points, plant={i: {"samples": [0.010] * 9 + [0.030] * 11}})
    code, res, _ = _check_json(cli, run2, str(tmp_path / "b2.json"))
    lat = next(m for m in _point(res, points[i]["point_id"])["metrics"] if m["name"] == "latency_median_s")
    assert code == 0 and lat["mark"] == "noisy" and lat["rel_change"] == pytest.approx(0.5) and lat["p_value"] > 0.5


def test_significant_but_small_latency_change_is_same(tmp_path, points, base_file, cli):
    i = _measured_index(points)
    run = write_run(tmp_path / "r", points, plant={i: {"samples": [v + 0.0005 for v in BASE_SAMPLES]}})  # +4.6%
    res = compare(load_baseline(base_file), _records(run))
    assert res.verdict == "pass"
    assert mann_whitney_u([v + 0.0005 for v in BASE_SAMPLES], BASE_SAMPLES).p < 0.05  # significant, yet small


def _records(run):
    from uhd_profile.run.store import records

    return records(run)


@pytest.mark.parametrize(
    "peak,act,mark,code",
    [
        (480 * 2**20, 8 * 2**20, "worse", 1),  # peak +20%
        (400 * 2**20, 12 * 2**20, "worse", 1),  # activations +50% (+4 MiB)
        (320 * 2**20, 8 * 2**20, "better", 0),  # peak -20%
        (420 * 2**20, 8 * 2**20, "same", 0),  # peak +5%: under the 10% threshold
        (400 * 2**20, 8 * 2**20 + 2**19, "same", 0),  # activations +6.25%, +0.5 MiB
    ],
)
def test_memory_threshold_and_floor(tmp_path, points, base_file, cli, peak, act, mark, code):
    i = _measured_index(points)
    run = write_run(tmp_path / "r", points, plant={i: {"peak": peak, "act": act}})
    got, res, _ = _check_json(cli, run, base_file)
    assert (got, _point(res, points[i]["point_id"])["mark"]) == (code, mark)


def test_memory_floor_ignores_tiny_absolute_changes(tmp_path, points, cli):
    i = _measured_index(points)
    base = write_run(tmp_path / "b", points, plant={i: {"act": 0}})
    cli("baseline", base, "--out", str(tmp_path / "b.json"))
    run = write_run(tmp_path / "r", points, plant={i: {"act": 32768}})  # 0 -> 32 KiB: infinite relative change
    assert _check_json(cli, run, str(tmp_path / "b.json"))[0] == 0
    assert _check_json(cli, run, str(tmp_path / "b.json"), "--memory-floor", "0")[0] == 1


@pytest.mark.parametrize(
    "before,after,mark,code",
    [
        ("ok", "oom", "failed", 1),
        ("ok", "error", "failed", 1),
        ("ok", "skipped", "missing", 1),
        ("oom", "error", "failed", 1),
        ("error", "ok", "better", 0),
        ("oom", "oom", "same", 0),
    ],
)
def test_status_changes(tmp_path, points, cli, before, after, mark, code):
    i = _measured_index(points)
    base = write_run(tmp_path / "b", points, status={i: before})
    cli("baseline", base, "--out", str(tmp_path / "b.json"))
    run = write_run(tmp_path / "r", points, status={i: after})
    got, res, _ = _check_json(cli, run, str(tmp_path / "b.json"))
    p = _point(res, points[i]["point_id"])
    assert (got, p["mark"], p["status_baseline"], p["status_run"]) == (code, mark, before, after)


def test_missing_points_on_either_side_fail(tmp_path, points, base_file, cli):
    j = _flops_index(points)
    run = write_run(tmp_path / "less", points, drop={j})
    code, res, _ = _check_json(cli, run, base_file)
    p = _point(res, points[j]["point_id"])
    assert code == 1 and p["mark"] == "missing" and p["status_run"] is None and "not in the run" in p["notes"][0]

    extra = dict(points[j], point_id="feedfacecafebeef", variant_id="tiny@999x999/planted")
    run = write_run(tmp_path / "more", points, extra=[extra])
    code, res, _ = _check_json(cli, run, base_file)
    p = _point(res, "feedfacecafebeef")
    assert code == 1 and p["mark"] == "missing" and p["status_baseline"] is None
    code, out, _ = cli("check", run, "--baseline", base_file)
    assert code == 1 and "missing" in out and "tiny@999x999/planted" in out


def test_other_machine_refuses_time_and_memory_but_compares_counts(tmp_path, points, base_file, cli):
    i = _measured_index(points)
    other = _env(cpu_model="Other CPU 1", torch_threads=4)
    slow = {i: {"samples": [v * 2 for v in BASE_SAMPLES], "peak": 800 * 2**20}}
    run = write_run(tmp_path / "r", points, plant=slow, env=other)
    code, res, err = _check_json(cli, run, base_file)
    assert code == 0 and res["verdict"] == "pass"  # refusing is not a failure
    p = _point(res, points[i]["point_id"])
    assert p["time_compared"] is False and "another machine" in p["notes"][0]
    assert {m["kind"] for m in p["metrics"]} == {"count"}
    refused = [r for r in res["refused"] if r["env_key_baseline"] == fingerprint_key(_env(device="cpu"))]
    assert refused and refused[0]["differences"]["cpu_model"] == ["Test CPU 9000", "Other CPU 1"]
    assert refused[0]["differences"]["torch_threads"] == [2, 4]
    code, out, err = cli("check", run, "--baseline", base_file)
    assert code == 0 and "not compared" in err and "cpu_model" in err and "torch_threads" in err

    code, res, _ = _check_json(cli, run, base_file, "--allow-cross-machine")
    assert code == 1 and _point(res, points[i]["point_id"])["mark"] == "worse" and not res["refused"]

    counts = write_run(tmp_path / "c", points, plant={i: {"macs": 1}}, env=other)
    assert cli("check", counts, "--baseline", base_file)[0] == 1  # counts still compare


def test_counts_only_check_ignores_time(tmp_path, points, base_file, cli):
    i = _measured_index(points)
    run = write_run(tmp_path / "r", points, plant={i: {"samples": [v * 2 for v in BASE_SAMPLES]}})
    assert cli("check", run, "--baseline", base_file)[0] == 1
    assert cli("check", run, "--baseline", base_file, "--counts-only")[0] == 0


@pytest.mark.parametrize(
    "content,fragment",
    [
        (None, "no such file"),
        ("{not json", "not valid JSON"),
        (json.dumps({"schema": "something-else", "schema_version": 1}), "not a uhd-profile/baseline file"),
        (json.dumps({"schema": SCHEMA, "schema_version": 99, "points": {}}), "schema version 99 is not supported"),
        (json.dumps({"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "points": []}), "'points' must map"),
    ],
)
def test_bad_baseline_is_a_usage_error(tmp_path, points, cli, content, fragment):
    run = write_run(tmp_path / "r", points)
    path = tmp_path / "b.json"
    if content is not None:
        path.write_text(content)
    code, out, err = cli("check", run, "--baseline", str(path))
    assert code == 2 and fragment in err and err.count("\n") == 1 and "Traceback" not in err
    with pytest.raises(UhdProfileError):
        load_baseline(path)


@pytest.mark.parametrize(
    "args,fragment",
    [
        (("--time-threshold", "-0.1"), "--time-threshold"),
        (("--flops-tolerance", "nan"), "--flops-tolerance"),
        (("--memory-threshold", "inf"), "--memory-threshold"),
        (("--alpha", "1.5"), "--alpha"),
        (("--memory-floor", "-1"), "--memory-floor"),
        (("--time-threshold", "ten"), "ten"),
    ],
)
def test_bad_thresholds_are_usage_errors(tmp_path, points, base_file, cli, args, fragment):
    run = write_run(tmp_path / "r", points)
    code, _, err = cli("check", run, "--baseline", base_file, *args)
    assert code == 2 and fragment in err and err.count("\n") == 1


def test_missing_arguments_and_run_dir_are_usage_errors(tmp_path, base_file, cli):
    assert cli("check", str(tmp_path / "nowhere"), "--baseline", base_file)[0] == 2
    assert cli("check", str(tmp_path))[0] == 2  # no --baseline
    assert cli("baseline", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.json"))[0] == 2
    with pytest.raises(UhdProfileError):
        GateSettings(alpha=0)


def test_update_writes_a_baseline_that_then_passes(tmp_path, points, base_file, cli):
    i = _measured_index(points)
    run = write_run(tmp_path / "r", points, plant={i: {"macs": 42}})
    new = tmp_path / "ci" / "new.json"
    code, out, err = cli("check", run, "--baseline", base_file, "--update", str(new))
    assert code == 1 and "wrote the new baseline" in err  # the verdict is still the verdict
    data = json.loads(new.read_text())
    assert data["points"][points[i]["point_id"]]["metrics"]["macs"] == 42 and data["counts_only"] is False
    assert cli("check", run, "--baseline", str(new))[0] == 0

    # a counts-only baseline stays counts-only when updated
    cli("baseline", run, "--out", str(tmp_path / "co.json"), "--counts-only")
    cli("check", run, "--baseline", str(tmp_path / "co.json"), "--update", str(tmp_path / "co2.json"))
    assert json.loads((tmp_path / "co2.json").read_text())["counts_only"] is True


def test_compare_api_result(tmp_path, points, base_file):
    i = _measured_index(points)
    run = write_run(tmp_path / "r", points, plant={i: {"samples": [v * 1.3 for v in BASE_SAMPLES]}})
    res = compare(load_baseline(base_file), _records(run), GateSettings(time_threshold=0.2))
    assert res.verdict == "fail" and res.exit_code == 1
    bad = [p for p in res.points if p.regression]
    assert [p.point_id for p in bad] == [points[i]["point_id"]] and bad[0].metric("latency_median_s").mark == "worse"
    assert res.marks() == {"worse": 1, "same": len(points) - 1}


# ---------------------------------------------------------------------------------------------
# a real smoke sweep, and the committed CI baseline


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, smoke_sweep):
    assert smoke_sweep.summary.failed == 0
    return str(smoke_sweep.copy(tmp_path_factory.mktemp("smoke") / "run"))


def test_real_run_against_its_own_baseline(smoke_run, tmp_path, cli):
    b = baseline_from_run(smoke_run)
    measured = [e["metrics"] for e in b["points"].values() if "latency_median_s" in e["metrics"]]
    assert measured and all(m["latency_samples_s"] and m["peak_mem_bytes"] > 0 for m in measured)
    assert all(
        e["metrics"]["macs"] > 0 and e["metrics"]["paper_flops"] > 0 and e["metrics"]["params"] > 0 for e in b["points"].values()
    )
    cli("baseline", smoke_run, "--out", str(tmp_path / "b.json"))
    code, res, _ = _check_json(cli, smoke_run, str(tmp_path / "b.json"))
    assert code == 0 and res["verdict"] == "pass" and not res["refused"]
    assert any(p["time_compared"] for p in res["points"])


def test_committed_ci_baseline_matches_the_smoke_counts(smoke_run, cli):
    """.ci/smoke-baseline.json must match what the code counts today. If a change of counts is
    intended: uhd-profile sweep smoke --out /tmp/x --device cpu &&
    uhd-profile baseline /tmp/x --out .ci/smoke-baseline.json --counts-only"""
    code, res, err = _check_json(cli, smoke_run, str(CI_BASELINE))
    bad = {p["variant_id"]: p["mark"] for p in res["points"] if p["regression"]}
    assert code == 0 and not bad, f"{bad}: regenerate .ci/smoke-baseline.json (see this test's docstring)"
    assert load_baseline(CI_BASELINE)["counts_only"] is True
