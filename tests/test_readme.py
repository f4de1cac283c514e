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
