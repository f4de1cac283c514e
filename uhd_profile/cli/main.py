"""The ``uhd-profile`` command group: every command registered here, explicitly; one-line errors.

A light command line: a command's module (and with it torch and transformers) is imported only
when that command runs or its own ``--help`` is asked for. ``uhd-profile --help``, usage errors and
``list`` import neither (tests/test_light_cli.py).
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings

import click

from uhd_profile.cli.console import fail, warn
from uhd_profile.errors import EXIT_USAGE, EXIT_WRITE, UhdProfileError
from uhd_profile.files import USAGE_ERRNOS, os_reason

COMMANDS: dict[str, tuple[str, str, str]] = {
    "flops": (
        "uhd_profile.cli.count",
        "flops",
        "Count a variant's FLOPs by executing its module graph (shapes only: no arithmetic).",
    ),
    "reproduce": (
        "uhd_profile.cli.count",
        "reproduce",
        "Every FLOPs figure the paper prints next to what uhd-profile counts (exit 1 if any is off by >0.1%).",
    ),
    "bench": ("uhd_profile.cli.measure", "bench", "Measure one variant on one device: latency, memory, energy, roofline."),
    "sweep": (
        "uhd_profile.cli.run",
        "sweep",
        "Run a recipe (a shipped name such as paper, smoke, depth-sweep, encoders, or a TOML path).",
    ),
    "merge": (
        "uhd_profile.cli.run",
        "merge",
        "Combine shard run directories into one (refuses duplicate points, mismatched recipes and, unless",
    ),
    "report": (
        "uhd_profile.cli.report",
        "report",
        "Write the report of RUN_DIR (a `uhd-profile sweep` run directory): headline, paper reproduction",
    ),
    "baseline": (
        "uhd_profile.cli.gate",
        "baseline",
        "Write a baseline of RUN_DIR for `uhd-profile check`: counts, latency samples, memory, environment.",
    ),
    "check": (
        "uhd_profile.cli.gate",
        "check",
        "Compare RUN_DIR with a baseline: exit 0 clean, 1 on a regression, 2 on a usage error.",
    ),
    "image": (
        "uhd_profile.cli.image",
        "image",
        "Views, tokens and FLOPs of each image (PATH: an image file, or a size WxH) under an image",
    ),
    "dataset": (
        "uhd_profile.cli.dataset",
        "dataset",
        "Per-image cost of every image in DIRECTORY under each --policy (default minicpm-v-4.6, global",
    ),
    "list": (
        "uhd_profile.cli.listing",
        "list_",
        "List presets: `encoders`, `compressors`, `conventions`, `metrics` (the record schema), `recipes`,",
    ),
    "e2e": (
        "uhd_profile.cli.e2e",
        "e2e",
        "What one image costs the whole model: vision, connector, LLM prefill and decode, counted",
    ),
    "plan": (
        "uhd_profile.cli.plan",
        "plan",
        "What fits a budget: for a policy, the largest image per aspect ratio, the largest setting",
    ),
}
"""Every command: name -> (its module, the command's name there, the first line of its help), so
that the group and its help are made without importing any command (``--help`` shows the line as
click shortens it; tests/test_light_cli.py keeps each line equal to the command's own)."""
LIGHT = frozenset({"list"})
"""Commands that do not read run directories (whose torn lines ``main`` reports one line each)."""


class LazyCommand(click.Command):
    """Stands for a registered command until it is run or its help is asked for: its name and the
    first line of its help, and where it is defined."""

    def __init__(self, name: str, module: str, attribute: str, first_line: str) -> None:
        super().__init__(name, help=first_line)
        self.module, self.attribute = module, attribute

    def load(self) -> click.Command:
        command = getattr(importlib.import_module(self.module), self.attribute)
        if not isinstance(command, click.Command) or command.name != self.name:
            raise TypeError(f"{self.module}.{self.attribute} is not the click command {self.name!r}")
        return command


class LazyGroup(click.Group):
    """A group that imports a command's module when the command is looked up to run (or for its
    own help), and makes its list of commands from the registered first lines alone."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = self.commands.get(cmd_name)
        if isinstance(command, LazyCommand):
            command = command.load()
            self.commands[cmd_name] = command
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """click's own listing, from the registered commands as they are (not loading any)."""
        commands = [(name, cmd) for name in self.list_commands(ctx) if (cmd := self.commands.get(name)) and not cmd.hidden]
        if commands:
            limit = formatter.width - 6 - max(len(name) for name, _ in commands)
            with formatter.section("Commands"):
                formatter.write_dl([(name, cmd.get_short_help_str(limit)) for name, cmd in commands])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="uhd-profile")
def cli() -> None:
    """uhd-profile: what high-resolution visual encoding costs in multimodal LLMs."""
    if warnings.showwarning is _show_warning and click.get_current_context().invoked_subcommand not in LIGHT:
        from uhd_profile.run.store import PartialRunWarning  # inside main(): its torn-line warnings, every one

        warnings.simplefilter("always", PartialRunWarning)  # every command says it, not only the first in a process


for _name, (_module, _attribute, _first_line) in COMMANDS.items():
    cli.add_command(LazyCommand(_name, _module, _attribute, _first_line))


_shown: set[str] = set()


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A torn or corrupt results line: one ``warning: ...`` line (once per command, however many
    readers met it), not Python's two-line format."""
    store = sys.modules.get("uhd_profile.run.store")  # no command can warn it before importing it
    if store is not None and issubclass(category, store.PartialRunWarning):
        if str(message) not in _shown:
            _shown.add(str(message))
            warn(str(message))
    else:
        _python_show_warning(message, category, filename, lineno, file, line)


_python_show_warning = warnings.showwarning


def _reader_went_away() -> None:
    """stdout's reader closed the pipe (``| head``): what it wanted is printed. Point stdout at
    /dev/null so the interpreter's final flush does not fail again, and exit 0."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    sys.exit(0)


def _invoke(args: list[str]):
    """Run the command for ``args``. Not ``cli.main``: click turns a closed stdout pipe into exit 1,
    and a reader that stopped reading (``| head``) is not a failure."""
    try:
        with cli.make_context("uhd-profile", args) as ctx:
            return cli.invoke(ctx)
    except click.exceptions.Exit as exc:  # --help, --version
        return exc.exit_code
    except (EOFError, KeyboardInterrupt):
        raise click.exceptions.Abort() from None


def main(argv: list[str] | None = None) -> None:
    """Console entry point: one-line errors and the documented exit codes (``uhd_profile.errors``;
    docs/reliability.md): 2 for usage mistakes, 3 when an output could not be written."""
    _shown.clear()
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning  # the group's callback then shows every PartialRunWarning (cli)
        _run(sys.argv[1:] if argv is None else list(argv))


def _run(args: list[str]) -> None:
    try:
        rv = _invoke(args)
        sys.stdout.flush()  # inside the try: a closed pipe is noticed here, not at interpreter exit
    except UhdProfileError as exc:
        fail(str(exc), exc.exit_code)
    except BrokenPipeError:
        _reader_went_away()
    except click.exceptions.NoSuchOption as exc:
        fail(exc.format_message())
    except click.ClickException as exc:
        fail(exc.format_message(), exc.exit_code)
    except click.exceptions.Abort:
        fail("aborted", 130)
    except OSError as exc:  # a file operation no command anticipated: still one line, never a traceback
        where = f"{exc.filename}: " if exc.filename else ""
        fail(f"{where}{os_reason(exc)}", EXIT_USAGE if exc.errno in USAGE_ERRNOS else EXIT_WRITE)
    else:
        if isinstance(rv, int) and rv:
            sys.exit(rv)


if __name__ == "__main__":
    main()
