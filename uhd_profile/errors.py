"""User-facing errors: one type, rendered by the CLI as one line and exit code 2."""


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
    as a single line without a traceback and exits with status 2.
    """
