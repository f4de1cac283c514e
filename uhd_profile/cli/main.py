"""The ``uhd-profile`` command group: every command registered here, explicitly; one-line errors."""

from __future__ import annotations

import os
import sys
import warnings

import click

from uhd_profile.cli.console import fail, warn
from uhd_profile.cli.count import flops, list_, reproduce
from uhd_profile.cli.dataset import dataset
from uhd_profile.cli.e2e import e2e
from uhd_profile.cli.gate import baseline, check
from uhd_profile.cli.image import image
from uhd_profile.cli.measure import bench
from uhd_profile.cli.plan import plan
from uhd_profile.cli.report import report
from uhd_profile.cli.run import merge, sweep
from uhd_profile.errors import EXIT_USAGE, EXIT_WRITE, UhdProfileError
from uhd_profile.files import USAGE_ERRNOS, os_reason
from uhd_profile.run.store import PartialRunWarning


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="uhd-profile")
def cli() -> None:
    """uhd-profile: what high-resolution visual encoding costs in multimodal LLMs."""


COMMANDS = (flops, reproduce, bench, sweep, merge, report, baseline, check, image, dataset, list_, e2e, plan)
for _command in COMMANDS:
    cli.add_command(_command)


_shown: set[str] = set()


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A torn or corrupt results line: one ``warning: ...`` line (once per command, however many
    readers met it), not Python's two-line format."""
    if issubclass(category, PartialRunWarning):
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
        warnings.simplefilter("always", PartialRunWarning)  # every command says it, not only the first in a process
        warnings.showwarning = _show_warning
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
