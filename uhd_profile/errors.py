"""User-facing errors, rendered by the CLI as one line ``error: ...``, and the command line's exit codes.

Exit codes (docs/reliability.md): 0 ok; 1 a point failed or the gate found a regression; 2 a usage
mistake (``UhdProfileError``: bad value, unknown name, unusable target, a run directory another
writer holds); 3 an output could not be written mid-way (``WriteError``: disk full, I/O error),
with everything written before it left valid.
"""

EXIT_OK = 0
EXIT_FAILED = 1  # a sweep point failed (oom / error), or `check` found a regression
EXIT_USAGE = 2  # UhdProfileError
EXIT_WRITE = 3  # WriteError


def first_line(exc: BaseException) -> str:
    """``Type: first non-blank line of the message`` (just ``Type`` for an empty message): how a
    caught exception is quoted in one-line errors and failure records."""
    for line in str(exc).splitlines():
        if line.strip():
            return f"{type(exc).__name__}: {line.strip()}"
    return type(exc).__name__


class UhdProfileError(Exception):
    """A mistake in what the user asked for (bad value, unknown name, missing path).

    The message names the value, the rule it broke and what is valid; the CLI prints it
    as a single line without a traceback and exits with status 2 (``exit_code``).
    """

    exit_code: int = EXIT_USAGE


class WriteError(UhdProfileError):
    """An output could not be written although the target was usable when checked (the disk filled
    up, an I/O error): exit status 3. The message says what was left intact and how to continue."""

    exit_code: int = EXIT_WRITE
