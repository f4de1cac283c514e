"""The results store: round trip, schema version, torn-write repair, duplicates, DataFrame types, merge."""

from __future__ import annotations

import json

import pytest

from uhd_profile import load as api_load
from uhd_profile.errors import UhdProfileError
from uhd_profile.measure.schema import columns
from uhd_profile.run.recipe import load_recipe
from uhd_profile.run.store import (
    RESULTS_FILE,
    SCHEMA_VERSION,
    PartialRunError,
    PartialRunWarning,
    ResultStore,
    load,
    make_record,
    merge,
    read_header,
)


@pytest.fixture(scope="module")
def points():
    return [p.to_dict() for p in load_recipe("smoke", device="cpu").points]


def _rec(point, status="ok", macs=1000, recipe_hash="h1", **metrics):
    m = (
        None
        if status != "ok"
        else {
            "macs": macs,
            "flops": 2 * macs + 7,
            "paper_flops": macs + 1,
            "tokens_in": 256,
            "tokens_llm": 16,
            "params": 12345,
            **metrics,
        }
    )
    return make_record(
        point,
        status,
        m,
        None if status == "ok" else "boom",
        {"hostname": "x"},
        recipe_hash,
        "smoke",
        "2026-11-25T00:00:00+00:00",
        0.5,
    )


def test_round_trip_and_typed_columns(tmp_path, points):
    store = ResultStore(tmp_path, "h1", "smoke", recipe_text="# recipe\n")
    store.append(_rec(points[0], macs=3_511_178_496_000))  # above 2**31: must stay an exact integer
    store.append(
        _rec(
            points[-1],
            latency_median_s=0.25,
            latency_samples_s=[0.2, 0.25, 0.3],
            latency_n=3,
            peak_mem_bytes=10_000,
            noise_flag="ok",
        )
    )
    store.append(_rec(points[1], status="oom"))
    df = load(tmp_path)
    assert list(df.columns) == list(columns()) and len(df) == 3
    assert df.loc[0, "macs"] == 3_511_178_496_000 and str(df["macs"].dtype) == "Int64"
    assert str(df["latency_median_s"].dtype) == "Float64" and df.loc[1, "latency_samples_s"] == [0.2, 0.25, 0.3]
    assert df.loc[2, "status"] == "oom" and df.loc[2, "error"] == "boom" and df["macs"].isna()[2]
    assert df.loc[0, "height_px"] == 128 and df.loc[0, "width_px"] == 128 and df.loc[0, "encoder"] == "tiny"
    assert (tmp_path / "recipe.toml").read_text() == "# recipe\n"
    assert api_load is load  # uhd_profile.load is the public name
    # a second store on the directory sees the same records
    again = ResultStore(tmp_path, "h1", "smoke", resume=True)
    assert again.completed_ids() == {points[0]["point_id"], points[-1]["point_id"], points[1]["point_id"]}


def test_header_is_checked(tmp_path, points):
    ResultStore(tmp_path, "h1", "smoke")
    head = read_header(tmp_path)
    assert head["schema_version"] == SCHEMA_VERSION and head["recipe_hash"] == "h1"
    path = tmp_path / RESULTS_FILE
    lines = path.read_text().splitlines(keepends=True)
    lines[0] = json.dumps({**head, "schema_version": SCHEMA_VERSION + 1}) + "\n"
    path.write_text("".join(lines))
    with pytest.raises(UhdProfileError, match=f"schema version {SCHEMA_VERSION + 1} is not supported"):
        load(tmp_path)
    path.write_text("not a header\n")
    with pytest.raises(UhdProfileError, match="not a uhd-profile results file"):
        load(tmp_path)
    with pytest.raises(UhdProfileError, match="no results.jsonl here"):
        load(tmp_path / "elsewhere")


def test_a_torn_last_line_is_dropped_and_repaired(tmp_path, points):
    store = ResultStore(tmp_path, "h1", "smoke")
    store.append(_rec(points[0]))
    store.append(_rec(points[1]))
    path = tmp_path / RESULTS_FILE
    data = path.read_bytes()
    path.write_bytes(data[:-40])  # the second record cut mid-write (what kill -9 can leave)
    store.close()
    with pytest.warns(PartialRunWarning, match=r"results.jsonl: line 3 is torn .*; 1 readable record$"):
        assert len(load(tmp_path)) == 1
    with pytest.raises(PartialRunError, match="line 3 is torn"):
        load(tmp_path, allow_partial=False)
    resumed = ResultStore(tmp_path, "h1", "smoke", resume=True)
    assert resumed.completed_ids() == {points[0]["point_id"]}
    assert [(i.line, i.kind) for i in resumed.repaired] == [(3, "torn")]
    resumed.append(_rec(points[1]))  # lands on a clean line
    assert [json.loads(line)["point_id"] for line in path.read_text().splitlines()[1:]] == [
        points[0]["point_id"],
        points[1]["point_id"],
    ]


def test_corruption_in_the_middle_is_an_error(tmp_path, points):
    store = ResultStore(tmp_path, "h1", "smoke")
    for p in points[:3]:
        store.append(_rec(p))
    path = tmp_path / RESULTS_FILE
    lines = path.read_text().splitlines(keepends=True)
    lines[2] = lines[2][:20] + "\n"
    path.write_text("".join(lines))
    store.close()
    # readers skip it and say so; a reader that needs every record, and a resume, refuse
    with pytest.warns(PartialRunWarning, match="line 3 is not a valid JSON record"):
        assert len(load(tmp_path)) == 2
    with pytest.raises(PartialRunError, match="line 3 is not a valid JSON record"):
        load(tmp_path, allow_partial=False)
    with pytest.raises(PartialRunError, match="--allow-partial"):
        ResultStore(tmp_path, "h1", "smoke", resume=True)


def test_duplicates_and_other_recipes_are_refused(tmp_path, points):
    store = ResultStore(tmp_path, "h1", "smoke")
    store.append(_rec(points[0]))
    with pytest.raises(UhdProfileError, match="already recorded"):
        store.append(_rec(points[0]))
    with pytest.raises(UhdProfileError, match="belongs to recipe hash h2"):
        store.append(_rec(points[1], recipe_hash="h2"))
    with pytest.raises(UhdProfileError, match="add --resume"):
        ResultStore(tmp_path, "h1", "smoke")
    with pytest.raises(UhdProfileError, match="--resume continues only the same recipe"):
        ResultStore(tmp_path, "h2", "other", resume=True)


def test_merge_refuses_mismatched_recipes_and_used_targets(tmp_path, points):
    a, b, c = (ResultStore(tmp_path / n, h, "smoke") for n, h in (("a", "h1"), ("b", "h1"), ("c", "h2")))
    a.append(_rec(points[0]))
    b.append(_rec(points[1]))
    c.append(_rec(points[2], recipe_hash="h2"))
    assert merge([str(tmp_path / "a"), str(tmp_path / "b")], str(tmp_path / "ab")) == 2
    assert len(load(tmp_path / "ab")) == 2
    with pytest.raises(UhdProfileError, match="merge only shards of one recipe"):
        merge([str(tmp_path / "a"), str(tmp_path / "c")], str(tmp_path / "ac"))
    with pytest.raises(UhdProfileError, match="already holds results"):
        merge([str(tmp_path / "a")], str(tmp_path / "ab"))
    assert not (tmp_path / "ac").exists()
