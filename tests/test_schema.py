"""The record schema: one name per metric everywhere, derived columns and gate fields, schema-1 and
schema-2 upgrades, sizes written width x height everywhere."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from uhd_profile import load
from uhd_profile.analyse.gate import baseline_from_run, check_run, load_baseline, write_baseline
from uhd_profile.errors import UhdProfileError
from uhd_profile.measure.schema import (
    METRICS,
    Point,
    columns,
    gated,
    make_record,
    register_metric,
    unregister_metric,
    upgrade_point_v1,
)
from uhd_profile.model.pipeline import PipelineSpec
from uhd_profile.model.variants import VariantSpec
from uhd_profile.run.recipe import load_recipe
from uhd_profile.run.store import ResultStore, merge, read_header, records

GOLDEN = Path(__file__).parent / "golden"


def _point(spec: VariantSpec) -> dict:
    return Point(spec=spec).to_dict()


def _store(run_dir, pts, metrics):
    store = ResultStore(run_dir, "h", "test")
    for p, m in zip(pts, metrics):
        store.append(make_record(p, "ok", m, None, {"hostname": "x"}, "h", "test", "2026-11-30T00:00:00+00:00", 0.1))
    return str(run_dir)


@pytest.fixture
def extra_metric():
    """A metric added the way a contributor adds one: a single register_metric call."""
    register_metric("widgets_per_image", "Int64", "count", "exact", "a planted test metric")
    yield "widgets_per_image"
    unregister_metric("widgets_per_image")


def test_a_new_metric_is_a_column_of_load_and_a_field_of_the_gate(tmp_path, extra_metric):
    pts = [_point(VariantSpec(encoder="tiny", resolution=r)) for r in (64, 128)]
    base = {"macs": 10, "flops": 21, "paper_flops": 11}
    run = _store(tmp_path / "a", pts, [{**base, extra_metric: 7}, {**base, extra_metric: 9}])
    df = load(run)
    assert extra_metric in df.columns and str(df[extra_metric].dtype) == "Int64"
    assert list(df[extra_metric]) == [7, 9]
    assert extra_metric in gated("exact")
    b = baseline_from_run(run)
    assert all(e["metrics"][extra_metric] in (7, 9) for e in b["points"].values())
    changed = _store(tmp_path / "b", pts, [{**base, extra_metric: 7}, {**base, extra_metric: 10}])
    result = check_run(changed, b)
    assert result.verdict == "fail"
    bad = [p for p in result.points if p.regression]
    assert len(bad) == 1 and bad[0].metric(extra_metric).mark == "changed"


def test_an_unknown_metric_name_is_refused_when_recorded(tmp_path):
    p = _point(VariantSpec(encoder="tiny"))
    with pytest.raises(ValueError, match="not in the record schema"):
        make_record(p, "ok", {"latency_median": 0.1}, None, {}, "h", "t", "", 0.0)


def test_every_baseline_metric_is_a_load_column_with_the_same_name(tmp_path, smoke_sweep):
    d = smoke_sweep.run
    path = tmp_path / "baseline.json"
    write_baseline(baseline_from_run(d), path)
    names = {k for e in json.loads(path.read_text())["points"].values() for k in e["metrics"]}
    assert names and names <= set(load(d).columns)
    assert {"macs", "paper_flops", "latency_median_s", "latency_samples_s", "peak_mem_bytes"} <= names


def test_columns_are_derived_from_the_schema():
    cols = columns()
    assert set(METRICS) <= set(cols)
    assert cols["paper_flops"] == "Int64" and cols["latency_median_s"] == "Float64"
    assert cols["width_px"] == "Int64" and cols["height_px"] == "Int64" and "resolution_h_px" not in cols
    assert "paper" not in cols  # the paper convention's count is paper_flops, everywhere


def test_docs_schema_table_is_the_registry():
    """docs/schema.md lists every metric (regenerate the table with `uhd-profile list metrics --markdown`)."""
    from uhd_profile.measure.schema import markdown_table

    text = (Path(__file__).parents[1] / "docs" / "schema.md").read_text()
    assert markdown_table() in text


# --------------------------------------------------------------------------------------------
# schema 1 (uhd-profile 0.1) is read, upgraded


def test_schema_1_run_loads_with_current_names_and_ids():
    df = load(GOLDEN / "paper-counts")
    assert len(df) == 11 and df["paper_flops"].notna().all() and (df["width_px"] == 980).all()
    recs = records(GOLDEN / "paper-counts")
    for r in recs:
        assert r["point_id"] == Point.from_dict(r["point"]).point_id  # recomputed in the current form
        assert "paper" not in r["metrics"] and "post_ratio" not in r["metrics"]
    base = df[df["compressor"].isna()].iloc[0]
    assert int(base["paper_flops"]) == 3_555_066_110_400  # what the paper-convention count was, now under its name


def test_schema_1_point_turns_height_width_into_width_height():
    v1 = {
        "point_id": "x",
        "variant_id": "y",
        "measure": ["flops"],
        "dtype": "fp32",
        "batch": 1,
        "device": "meta",
        "timing": {},
        "spec": {
            "encoder": "siglip2-so400m-p14",
            "resolution": [756, 1344],
            "compressor": None,
            "depth": None,
            "post_ratio": 16,
            "llm_hidden": 4096,
            "encoding": "sliced",
        },
    }
    p = upgrade_point_v1(v1)
    assert (p["spec"]["width_px"], p["spec"]["height_px"]) == (1344, 756)
    assert p["variant_id"] == "siglip2-so400m-p14@1344x756/sliced/baseline/post16"


def test_schema_1_baseline_is_upgraded(tmp_path):
    v1 = json.loads(
        (Path(__file__).parents[1] / "tests" / "golden" / "paper-counts" / "results.jsonl").read_text().splitlines()[1]
    )
    point = v1["point"]
    old = {
        "schema": "uhd-profile/baseline",
        "schema_version": 1,
        "points": {
            point["point_id"]: {
                "variant_id": v1["variant_id"],
                "status": "ok",
                "error": None,
                "point": point,
                "env_key": None,
                "counts": {"macs": v1["metrics"]["macs"], "paper": v1["metrics"]["paper"]},
                "latency": {"median_s": 0.5, "samples_s": [0.5]},
            }
        },
    }
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    b = load_baseline(path)
    ((pid, entry),) = b["points"].items()
    assert pid == Point.from_dict(entry["point"]).point_id
    assert entry["metrics"] == {
        "macs": v1["metrics"]["macs"],
        "paper_flops": v1["metrics"]["paper"],
        "latency_median_s": 0.5,
        "latency_samples_s": [0.5],
    }


def test_resume_into_a_schema_1_run_is_refused_with_the_way_out(tmp_path):
    import shutil

    run = tmp_path / "old"
    shutil.copytree(GOLDEN / "paper-counts", run)
    with pytest.raises(UhdProfileError, match="merge .* --out NEW_DIR"):
        ResultStore(run, "h", "paper", resume=True)


# --------------------------------------------------------------------------------------------
# schema 2 (development builds of 0.2: a pipeline's drop was called "plan") is read, upgraded


def _v2_points() -> tuple[list[dict], list[dict]]:
    """Current points (one plain, one with an LLM and a FastV drop) and the same in the version-2
    form: ``pipeline.plan`` for ``pipeline.drop``, the point id hashed from that form."""
    plain = Point(spec=VariantSpec(encoder="tiny", resolution=128)).to_dict()
    pipe = PipelineSpec(VariantSpec(encoder="tiny", resolution=128), llm="tiny-llm", prompt_tokens=8, drop="fastv:1:0.5")
    piped = Point(spec=pipe.variant, pipeline=pipe).to_dict()
    old = {**piped, "pipeline": {("plan" if k == "drop" else k): v for k, v in piped["pipeline"].items()}}
    identity = {k: old[k] for k in ("spec", "measure", "dtype", "batch", "device", "timing", "pipeline")}
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":")).encode()
    old["point_id"] = hashlib.sha256(blob).hexdigest()[:16]
    return [plain, piped], [plain, old]


def _v2_run(run_dir: Path, points: list[dict]) -> Path:
    run_dir.mkdir()
    head = {"schema": "uhd-profile/results", "schema_version": 2, "recipe_hash": "h", "recipe_name": "old"}
    lines = [json.dumps({**head, "uhd_profile_version": "0.2.0"})]
    for p in points:
        rec = make_record(p, "ok", {"macs": 1}, None, {"hostname": "x"}, "h", "old", "2026-11-30T00:00:00+00:00", 0.1)
        lines.append(json.dumps({**rec, "schema_version": 2}))
    (run_dir / "results.jsonl").write_text("\n".join(lines) + "\n")
    return run_dir


def test_schema_2_run_loads_with_the_drop_renamed(tmp_path):
    (plain, piped), old = _v2_points()
    assert old[1]["point_id"] != piped["point_id"]  # the renamed key is part of the id
    run = _v2_run(tmp_path / "old", old)
    recs = records(run)
    assert [r["point_id"] for r in recs] == [plain["point_id"], piped["point_id"]]
    assert [r["variant_id"] for r in recs] == [plain["variant_id"], piped["variant_id"]]  # ids keep their form
    assert piped["variant_id"].endswith("/tiny-llm/p8/d0/fastv:1:0.5")
    assert recs[1]["point"]["pipeline"] == {"llm": "tiny-llm", "prompt_tokens": 8, "decode_tokens": 0, "drop": "fastv:1:0.5"}
    assert all(r["schema_version"] == 3 for r in recs)
    df = load(run)
    assert "llm_plan" not in df.columns and df["llm_drop"].isna().tolist() == [True, False]
    assert df["llm_drop"].iloc[1] == "fastv:1:0.5"
    assert merge([str(run)], str(tmp_path / "new")) == 2  # the way to a current run directory
    assert read_header(tmp_path / "new")["schema_version"] == 3
    assert [r["point_id"] for r in records(tmp_path / "new")] == [plain["point_id"], piped["point_id"]]


def test_schema_2_baseline_is_upgraded_and_passes_against_a_current_run(tmp_path):
    new, old = _v2_points()
    run = _store(tmp_path / "run", new, [{"macs": 1}, {"macs": 1}])
    current = baseline_from_run(run)
    entries = [current["points"][p["point_id"]] for p in new]
    v2 = {
        **current,
        "schema_version": 2,
        "points": {o["point_id"]: {**e, "point": o} for o, e in zip(old, entries)},
    }
    path = tmp_path / "old.json"
    path.write_text(json.dumps(v2))
    b = load_baseline(path)
    assert b["upgraded_from"] == 2 and set(b["points"]) == set(current["points"])
    assert b["points"][new[1]["point_id"]]["point"]["pipeline"]["drop"] == "fastv:1:0.5"
    assert check_run(run, b).verdict == "pass"


def test_resume_into_a_schema_2_run_is_refused_with_the_way_out(tmp_path):
    run = _v2_run(tmp_path / "old", _v2_points()[1])
    with pytest.raises(UhdProfileError, match="schema-2 results .* merge .* --out NEW_DIR"):
        ResultStore(run, "h", "old", resume=True)


# --------------------------------------------------------------------------------------------
# one orientation: width x height


def test_a_recipe_size_string_is_width_by_height(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text('[[grid]]\nencoders = ["siglip2-so400m-p14"]\nencodings = ["sliced"]\nresolutions = ["1344x756"]\n')
    (p,) = load_recipe(str(path), device="cpu").points
    assert p.spec.size == (1344, 756) and p.spec.id.startswith("siglip2-so400m-p14@1344x756/")
    run = _store(tmp_path / "run", [p.to_dict()], [{"macs": 1}])
    row = load(run).iloc[0]
    assert (row["width_px"], row["height_px"]) == (1344, 756)


def test_a_toml_table_size_is_accepted(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text('[[grid]]\nencoders = ["tiny"]\nresolutions = [{width = 128, height = 64}]\n')
    (p,) = load_recipe(str(path), device="cpu").points
    assert p.spec.size == (128, 64) and p.spec.id == "tiny@128x64/baseline/post16"


def test_image_json_size_is_width_first(cli):
    code, out, _ = cli("image", "1344x756", "--json")
    d = json.loads(out)[0]
    assert code == 0 and d["size"] == [1344, 756] and d["encoding"] == "sliced" and d["views"][0]["size"] == [616, 336]


# --------------------------------------------------------------------------------------------
# towers whose patch embedding floors take any size, like the real tower


@pytest.mark.parametrize(
    "encoder,size,grid",
    [
        ("siglip-so400m-p14-384", "384x384", (27, 27)),  # 384 / 14 = 27.4: the stride-14 conv floors to 27
        ("clip-vit-l14-336", "340x300", (21, 24)),
        ("internvit-300m-448", "450x230", (16, 32)),
    ],
)
def test_a_floored_grid_counts_what_a_real_forward_of_the_tower_runs(monkeypatch, encoder, size, grid):
    """On a reduced-depth copy (2 layers) of the real tower: the real forward takes the size, yields the
    floored grid, and the meta count equals the count of that real execution."""
    from dataclasses import replace

    import torch

    from uhd_profile.count.flops import count_flops
    from uhd_profile.model import encoders

    small = replace(encoders.get_encoder(encoder), name="reduced", layers=2)
    monkeypatch.setitem(encoders.ENCODERS, "reduced", small)
    spec = VariantSpec(encoder="reduced", resolution=size, post_ratio=1)
    assert spec.grid == grid and spec.tokens_in == grid[0] * grid[1] + small.prefix_tokens
    meta = count_flops(spec)
    real = count_flops(spec, shape_only=False)
    assert meta.total == real.total and not meta.uncounted_ops
    from uhd_profile.model.variants import build_variant, example_input

    with torch.no_grad():
        out = build_variant(spec)(example_input(spec))
    assert out.shape[1] == spec.tokens_llm
