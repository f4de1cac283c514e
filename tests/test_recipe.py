"""Recipes: expansion of the shipped grids, device overrides, and validation before anything runs."""

from __future__ import annotations

import textwrap

import pytest

from uhd_profile.errors import UhdProfileError
from uhd_profile.measure.schema import Point
from uhd_profile.run.recipe import load_recipe, shipped_recipes


def _write(tmp_path, text: str, name: str = "r.toml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return str(p)


def test_shipped_recipes_all_load():
    assert {"paper", "depth-sweep", "encoders", "smoke"} <= set(shipped_recipes())
    for name in shipped_recipes():
        r = load_recipe(name, device="cpu")
        assert r.points and len({p.point_id for p in r.points}) == len(r.points)


def test_paper_recipe_covers_the_papers_configurations():
    r = load_recipe("paper", device="cpu")
    # end-to-end points: test_pipeline.py; whole images (global vs sliced): test_main_job.py
    counted = [p for p in r.points if not p.measured and p.pipeline is None and p.spec.encoding == "view"]
    measured = [p for p in r.points if p.measured]
    # 1 baseline + 7 designs at depth 6 + the depth sweep's other three depths (3, 9, 15); on a CPU
    # the headline pair (baseline and v4) is measured
    assert len(counted) == 11 and len(measured) == 2
    assert {p.spec.size for p in counted} == {(980, 980)} and {p.spec.ratio for p in counted} == {1}
    plans = {(p.spec.compressor, p.spec.depth) for p in counted}
    assert (None, None) in plans and ("window-attn-reused-mlp", 15) in plans
    assert len({c for c, _ in plans if c}) == 7
    # on a CPU the measured pair runs at 224 px with short timing in the dtype that is faster
    # there (auto), on CUDA every design at the paper's 980 px
    assert {p.spec.size for p in measured} == {(224, 224)} and {p.device for p in measured} == {"cpu"}
    assert {(p.spec.compressor, p.spec.depth) for p in measured} == {(None, None), ("window-attn-reused-mlp", 6)}
    assert measured[0].timing["min_samples"] == 3 and measured[0].timing["warmup_iters"] == 0
    assert measured[0].dtype in ("fp32", "bf16") and measured[0].dtype_reason.startswith("auto: ")
    assert {p.device for p in counted} == {"meta"}


def test_when_cuda_selects_the_gpu_grid(monkeypatch):
    import uhd_profile.run.recipe as recipe_mod

    monkeypatch.setattr(recipe_mod, "_device_kind", lambda device: "cuda")
    r = load_recipe("paper", device="cuda")
    measured = [p for p in r.points if p.measured]
    assert {p.spec.size for p in measured} == {(980, 980)} and {p.device for p in measured} == {"cuda"}
    assert measured[0].timing["min_samples"] == 10  # [when.cpu.timing] does not apply
    cpu = load_recipe("paper", device="cpu")
    # counts-only points are the same points on every device; the recipe hash is not
    assert {p.point_id for p in r.points if not p.measured} == {p.point_id for p in cpu.points if not p.measured}
    assert r.hash != cpu.hash


def test_depth_sweep_expands_every_depth():
    r = load_recipe("depth-sweep", device="cpu")
    assert len(r.points) == 1 + 7 * 27  # baseline + 7 designs x depths 0..26
    assert sorted({p.spec.depth for p in r.points if p.spec.compressor}) == list(range(27))


def test_point_id_is_stable_and_round_trips():
    r = load_recipe("smoke", device="cpu")
    again = load_recipe("smoke", device="cpu")
    assert [p.point_id for p in r.points] == [p.point_id for p in again.points]
    for p in r.points:
        d = p.to_dict()
        q = Point.from_dict(d)
        assert q.point_id == p.point_id == d["point_id"] and q.spec.id == p.spec.id and d["variant_id"] == p.variant_id
        assert q.variant_id == p.variant_id and p.variant_id == (p.pipeline.id if p.pipeline else p.spec.id)


def test_point_id_changes_with_what_defines_the_point():
    p = load_recipe("smoke", device="cpu").points[-1]
    assert p.measured
    ids = {
        p.point_id,
        Point(p.spec, p.measure, "bf16", p.batch, p.device, p.timing).point_id,
        Point(p.spec, p.measure, p.dtype, 2, p.device, p.timing).point_id,
        Point(p.spec, p.measure, p.dtype, p.batch, p.device, {**p.timing, "min_samples": 9}).point_id,
        Point(p.spec.with_(depth=2), p.measure, p.dtype, p.batch, p.device, p.timing).point_id,
    }
    assert len(ids) == 5


GOOD = """
[defaults]
encoders = ["tiny"]
resolutions = [128]
[[grid]]
compressors = ["none", "avg-pool"]
depths = [0, 1]
"""


def test_a_small_recipe_expands_as_a_cross_product(tmp_path):
    r = load_recipe(_write(tmp_path, GOOD), device="cpu")
    assert r.name == "r" and [p.spec.id for p in r.points] == [
        "tiny@128x128/baseline/post16",
        "tiny@128x128/avg-pool@0/post4",
        "tiny@128x128/avg-pool@1/post4",
    ]


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("[defaults]\nencoder = ['tiny']\n", "defaults.encoder: unknown key; valid: encoders, resolutions"),
        ("[sweep]\nx = 1\n", "sweep: unknown key; valid: recipe, defaults"),
        ("[[grid]]\nencoders = ['nope']\n", "unknown encoder 'nope'; valid: siglip2-so400m-p14"),
        (
            "[[grid]]\nencoders = ['tiny']\nresolutions = [128]\ncompressors = ['magic']\n",
            "unknown compressor 'magic'; valid: none, avg-pool",
        ),
        ("[[grid]]\nencoders = ['tiny']\nresolutions = []\n", "resolutions: is an empty list, so the grid is empty"),
        (
            "[[grid]]\nencoders = ['tiny']\nresolutions = [128]\nbatches = ['two']\n",
            "batches: 'two' is not valid; valid: integers >= 1",
        ),
        (
            "[[grid]]\nencoders = ['tiny']\nresolutions = [128]\ndtypes = ['fp8']\n",
            "dtypes: 'fp8' is not valid; valid: fp32, bf16, fp16",
        ),
        (
            "[[grid]]\nencoders = ['tiny']\nresolutions = [128]\nmeasure = ['joules']\n",
            "measure: 'joules' is not valid; valid: flops, latency",
        ),
        (
            "[[grid]]\nencoders = ['siglip2-so400m-p16']\nresolutions = [100]\n",
            "100 is not a multiple of siglip2-so400m-p16's patch size 16",
        ),
        ("[[grid]]\nencoders = ['tiny']\nresolutions = [[64, 128]]\n", "resolution [64, 128] is ambiguous"),
        (
            "[[grid]]\nencoders = ['tiny']\nresolutions = [128]\n[[grid]]\nencoders = ['tiny']\nresolutions = [128]\n",
            "duplicate point tiny@128x128/baseline/post16",
        ),
        ("[[grid]]\nwhen = 'tpu'\n", "when: 'tpu' is not valid; valid: any, cpu, cuda"),
        ("[[grid]]\nwhen = 'cuda'\nencoders = ['tiny']\nresolutions = [128]\n", "expands to no points on a cpu device"),
        ("[timing]\nmin_samples = 0\n", "timing: TimingSettings.min_samples = 0: must be an integer >= 1"),
        ("[timing]\nwarmup = 3\n", "timing.warmup: unknown key; valid: warmup_iters"),
        ("[[grid]]\nencoders = ['tiny']\nresolutions = ['big']\n", "resolution 'big' is not valid"),
        ("[[grid]\n", "not valid TOML"),
    ],
)
def test_bad_recipes_fail_before_anything_runs(tmp_path, cli, text, fragment):
    path = _write(tmp_path, text)
    with pytest.raises(UhdProfileError) as info:
        load_recipe(path, device="cpu")
    msg = str(info.value)
    assert msg.startswith(path) and fragment in msg, msg
    code, out, err = cli("sweep", path, "--device", "cpu", "--out", str(tmp_path / "never"))
    assert code == 2 and len(err.strip().splitlines()) == 1 and fragment in err
    assert not (tmp_path / "never").exists()


def test_unknown_recipe_name(cli):
    code, out, err = cli("sweep", "no-such-recipe", "--device", "cpu", "--dry-run")
    assert code == 2 and "shipped: " in err and "paper" in err
