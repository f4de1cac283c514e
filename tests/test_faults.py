"""Faults a probe of bad inputs found (each reproduced here first): every one is a single error
line and exit 2, answered quickly, never a traceback or a hang."""

from __future__ import annotations

import time

import pytest

from uhd_profile.errors import UhdProfileError
from uhd_profile.model.policies import get_policy
from uhd_profile.model.policies.internvl import candidate_grids


@pytest.mark.parametrize(
    ("args", "match"),
    [
        # a huge tile count used to search max_tiles^2 grids (no answer in 120 s at 100000)
        (("image", "640x480", "--policy", "internvl", "--policy-param", "max_tiles=100000"), "at most 1024 tiles"),
        (("image", "640x480", "--max-slices", "100000"), "max slices 100000 is not valid"),
        # a size whose input tensor cannot exist used to end in 'Storage size calculation overflowed'
        (("flops", "--encoder", "tiny", "--resolution", "1000000000", "--post-ratio", "1"), "cannot be built"),
        (("e2e", "--encoder", "tiny", "--llm", "tiny-llm", "--resolution", "1000000000"), "cannot be built"),
        # a depth is checked whatever the budget (it used to be ignored with --max-llm-tokens)
        (("plan", "--max-llm-tokens", "1000", "--depth", "99"), "depth 99 is out of range"),
        (("plan", "--max-llm-tokens", "1000", "--depth", "-1"), "depth -1 is out of range"),
        # repeats are said, not silently merged
        (("plan", "--max-llm-tokens", "1000", "--ratios", "1:1,1:1"), "give each ratio once"),
        (("plan", "--max-llm-tokens", "1000", "--ratios", "1:1,2:2"), "2:2 is the ratio 1:1 again"),
    ],
)
def test_bad_input_is_one_line_and_quick(args, match, cli_error):
    t0 = time.perf_counter()
    assert match in cli_error(*args)
    assert time.perf_counter() - t0 < 30


def test_the_tile_search_grows_gently_and_finds_the_same_grids():
    def every(lo: int, hi: int) -> list:
        grids = [(c, r) for c in range(1, hi + 1) for r in range(1, hi + 1) if lo <= c * r <= hi]
        return sorted(grids, key=lambda g: g[0] * g[1])

    for lo, hi in ((1, 12), (3, 40), (5, 5), (7, 100), (1, 400)):
        assert candidate_grids(lo, hi) == every(lo, hi)
    t0 = time.perf_counter()
    assert len(get_policy("internvl").views(640, 480, max_tiles=1024).views) > 1
    assert time.perf_counter() - t0 < 5  # 1024 tiles: ~7,000 candidate grids, not a million


def test_dataset_never_reads_its_own_outputs(cli, tmp_path):
    from PIL import Image

    src = tmp_path / "imgs"
    src.mkdir()
    Image.new("RGB", (640, 480)).save(src / "a.png")
    for _ in range(2):  # the second run reads the folder the first one wrote into
        code, _, err = cli("dataset", str(src), "--out", str(src), "--policy", "llava-1.5")
        assert code == 0 and "skipped" not in err, err
    import csv

    rows = list(csv.DictReader((src / "per_image.csv").open()))
    assert [r["path"].rsplit("/", 1)[-1] for r in rows] == ["a.png"]


def test_a_policy_refuses_a_parameter_past_its_limit_in_python_too():
    with pytest.raises(UhdProfileError, match="at most 1024 tiles"):
        get_policy("internvl").views(100, 100, max_tiles=5000)
