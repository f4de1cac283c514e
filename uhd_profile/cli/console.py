"""The one console of the command line: data and tables to stdout, notes and errors to stderr."""

from __future__ import annotations

import sys
from typing import NoReturn

from rich.console import Console

# Wide enough for the tables when piped (rich would otherwise assume 80 columns).
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, soft_wrap=True)


def say(text: str) -> None:
    """One plain line on stdout (no rich markup or highlighting)."""
    out.print(text, markup=False, highlight=False)


def note(text: str) -> None:
    """One plain ``note: ...`` line on stderr."""
    err.print(f"note: {text}", markup=False, highlight=False)


def warn(text: str) -> None:
    """One plain ``warning: ...`` line on stderr."""
    err.print(f"warning: {text}", markup=False, highlight=False)


def fail(message: str, code: int = 2) -> NoReturn:
    """``error: message`` on stderr, then exit ``code`` (2: a usage mistake)."""
    err.print(f"error: {message}", markup=False, highlight=False)
    sys.exit(code)
