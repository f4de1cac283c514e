"""Shared test helpers."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from uhd_profile.cli import main


@pytest.fixture
def cli(capsys):
    """Run the CLI in-process: ``code, stdout, stderr = cli("flops", "--json")``."""

    def run(*args):
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code
        cap = capsys.readouterr()
        return code, cap.out, cap.err

    return run


@pytest.fixture
def cli_json(cli):
    """Run the CLI, require exit 0 and return its stdout parsed as JSON."""

    def run(*args):
        code, out, err = cli(*args)
        assert code == 0, err
        return json.loads(out)

    return run


@pytest.fixture
def cli_error(cli):
    """Run the CLI, require exit 2 with exactly one line ``error: ...`` on stderr; return that line."""

    def run(*args) -> str:
        code, out, err = cli(*args)
        assert code == 2, (out, err)
        lines = [line for line in err.strip().splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), err
        return lines[0]

    return run


@dataclass(frozen=True)
class SmokeRun:
    """One real sweep of the shipped smoke recipe (every kind of point, measured ones in their own
    processes), shared by the tests that only read a run. ``copy(dest)`` gives a test its own copy
    to write into; never write into ``run``."""

    run: Path
    summary: object
    recipe: object

    def copy(self, dest: Path) -> Path:
        shutil.copytree(self.run, dest)
        return dest


@pytest.fixture(scope="session")
def smoke_sweep(tmp_path_factory) -> SmokeRun:
    """The smoke recipe swept once per test session (about half a minute on 2 cores)."""
    from uhd_profile.run.recipe import load_recipe
    from uhd_profile.run.sweep import run_sweep

    recipe = load_recipe("smoke", device="cpu")
    run = tmp_path_factory.mktemp("smoke-session") / "run"
    summary = run_sweep(recipe, str(run))
    return SmokeRun(run, summary, recipe)


def pytest_collection_modifyitems(config, items):
    """GPU-marked tests skip here, in one place, on a machine without CUDA."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device; this machine has none")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
