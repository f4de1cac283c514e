"""The README stays true: its commands are what CI runs, and its reproduction snapshot equals what
the code counts (so no number in it is typed in without being checked)."""

from __future__ import annotations

import re
from pathlib import Path

from uhd_profile.count.paper import reproduce

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_ci_runs_the_readme_test_command():
    blocks = re.findall(r"```bash\n(.*?)\n```", README, flags=re.S)
    assert len(blocks) >= 2
    main_job, tests = blocks[0].strip(), blocks[1].strip()
    assert main_job.endswith("uhd-profile sweep") and "pip install torch==2.13.0" in main_job
    assert tests in (ROOT / ".ci" / "run").read_text()


def test_readme_snapshot_matches_counted_values():
    r = reproduce()
    for row in r.rows:
        assert f"{row.counted_gflops:.2f}" in README, row.figure
        assert f"{row.executed_gflops:.2f}" in README, row.figure
    assert f"{r.reduction['executed']:.2%}".replace("%", " %") in README
    assert f"{r.reduction['counted']:.2%}".replace("%", " %") in README


def test_readme_image_llm_example_is_counted():
    # "A 3840x2160 image through Qwen3-8B": the LLM prefill over what the LLM sees (sliced: 578 visual
    # tokens + 22 extras; global: 576), counted by the engine; the vision figures are the table's
    from uhd_profile.analyse.images import llm_stage_counts

    sliced = llm_stage_counts("qwen3-8b", 600, 64, 0).prefill["macs"] / 1e9
    global_ = llm_stage_counts("qwen3-8b", 576, 64, 0).prefill["macs"] / 1e9
    assert f"{2178.2 + sliced:,.1f}" in README and f"{sliced:,.1f}" in README
    assert f"{9162.7 + global_:,.1f}" in README and f"{3605.2 + global_:,.1f}" in README
    assert f"{100 * 2178.2 / (2178.2 + sliced):.1f} %" in README
