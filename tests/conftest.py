"""Shared test helpers."""

from __future__ import annotations

import pytest

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
