"""Shared test helpers."""

from __future__ import annotations

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


def pytest_collection_modifyitems(config, items):
    """GPU-marked tests skip here, in one place, on a machine without CUDA."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device; this machine has none")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
