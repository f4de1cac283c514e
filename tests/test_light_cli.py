"""A light command line: help, usage errors and ``list`` import neither torch nor transformers.

Each case runs the CLI entry point in a fresh interpreter (this process has torch already: conftest)
and reports, on its last stderr line, which heavy modules were imported by the time it exited.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest

from uhd_profile.cli.main import COMMANDS, LazyCommand, LazyGroup

ROOT = Path(__file__).parents[1]
HEAVY = ("torch", "transformers")
MARK = "heavy modules imported: "

_PROBE = f"""
import json, sys
from uhd_profile.cli.main import main
try:
    main(json.loads(sys.argv[1]))
finally:
    sys.stderr.write({MARK!r} + json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)) + "\\n")
"""


def _run(*args: str) -> tuple[int, str, list[str], list[str]]:
    """exit code, stdout, stderr lines (without the probe's) and the heavy modules imported."""
    p = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(list(args))], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    lines = p.stderr.splitlines()
    assert lines and lines[-1].startswith(MARK), p.stderr
    return p.returncode, p.stdout, lines[:-1], json.loads(lines[-1][len(MARK) :])


LIGHT_CASES = {
    "help": (("--help",), "Commands:"),
    "list": (("list",), "what uhd-profile can list"),
    "list-policies": (("list", "policies"), "image policies"),
    "list-encoders": (("list", "encoders"), "encoder presets"),
    "list-conventions": (("list", "conventions"), "counting conventions"),
    "list-llms": (("list", "llms"), "qwen3-8b"),
    "list-help": (("list", "--help"), "--markdown"),
    "version": (("--version",), "version"),
}


@pytest.mark.parametrize("args, expected", list(LIGHT_CASES.values()), ids=list(LIGHT_CASES))
def test_light_commands_import_no_torch(args, expected):
    code, out, err, heavy = _run(*args)
    assert code == 0, err
    assert expected in out
    assert heavy == [], f"uhd-profile {' '.join(args)} imported {heavy}"


def test_no_arguments_is_the_help_as_a_usage_error_and_light():
    code, out, err, heavy = _run()
    assert code == 2 and out == ""
    assert err[0].startswith("error: Usage: uhd-profile") and "  list " in "\n".join(err)
    assert heavy == []


NOT_YET_LIGHT = {
    "list-metrics": (
        ("list", "metrics"),
        "uhd_profile.measure.schema builds METRICS from model.pipeline.STAGES; model.pipeline imports torch",
    ),
    "list-recipes": (
        ("list", "recipes"),
        "expanding a recipe asks torch for this machine's device and calibrates dtype 'auto' with matmuls",
    ),
}


@pytest.mark.parametrize(
    "args",
    [pytest.param(a, marks=pytest.mark.xfail(strict=True, reason=r)) for a, r in NOT_YET_LIGHT.values()],
    ids=list(NOT_YET_LIGHT),
)
def test_lists_that_still_import_torch(args):
    """Strict xfail: when one of these becomes light, drop its entry (it belongs in LIGHT_CASES)."""
    code, _, err, heavy = _run(*args)
    assert code == 0, err
    assert heavy == [], f"uhd-profile {' '.join(args)} imported {heavy}"


@pytest.mark.parametrize(
    "args, fragment",
    [
        (("--bogus",), "No such option '--bogus'"),
        (("nope",), "No such command 'nope'"),
        (("list", "nope"), "cannot list 'nope'"),
        (("list", "encoders", "--markdown"), "--markdown applies to `list metrics`"),
        (("list", "--bogus"), "No such option '--bogus'"),
    ],
    ids=["unknown-option", "unknown-command", "unknown-list", "markdown-elsewhere", "list-unknown-option"],
)
def test_usage_errors_are_one_line_and_light(args, fragment):
    code, out, err, heavy = _run(*args)
    assert code == 2
    assert out == ""
    assert len(err) == 1 and err[0].startswith("error: ") and fragment in err[0], err
    assert heavy == []


def test_a_heavy_command_is_imported_when_it_runs():
    code, out, err, heavy = _run("flops", "--help")
    assert code == 0, err
    assert "--convention" in out
    assert "torch" in heavy


def test_every_registered_command_is_the_one_its_module_defines():
    """The registry's first help line is the command's own (``--help`` lists it without importing)."""
    for name, (module, attribute, first_line) in COMMANDS.items():
        command = LazyCommand(name, module, attribute, first_line).load()
        assert command.name == name
        assert command.short_help is None, f"{name}: --help shows the registered line, not short_help"
        assert (command.help or "").strip().splitlines()[0].strip() == first_line, name


@pytest.mark.parametrize("width", [40, 50, 60, 72, 80])
def test_the_command_list_in_help_is_clicks_own(width):
    """``uhd-profile --help`` from the registry alone reads exactly as click lists the real commands
    (click formats help at most 80 columns wide, whatever the terminal: the first help line is enough)."""
    lazy = LazyGroup("uhd-profile")
    real = click.Group("uhd-profile")
    for name, (module, attribute, first_line) in COMMANDS.items():
        stub = LazyCommand(name, module, attribute, first_line)
        lazy.add_command(stub)
        real.add_command(stub.load(), name)

    def listing(group: click.Group) -> str:
        ctx = click.Context(group, terminal_width=width)
        formatter = ctx.make_formatter()
        group.format_commands(ctx, formatter)
        return formatter.getvalue()

    text = listing(lazy)
    assert all(isinstance(c, LazyCommand) for c in lazy.commands.values()), "listing loaded a command"
    assert text == listing(real)
    assert set(COMMANDS) == {line.split()[0] for line in text.splitlines()[1:] if line.startswith("  ") and line[2] != " "}
