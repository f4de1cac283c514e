"""Shared test helpers."""

from __future__ import annotations

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
