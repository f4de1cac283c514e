"""User-facing errors: one type, rendered by the CLI as one line and exit code 2."""


class UhdProfileError(Exception):
    """A mistake in what the user asked for (bad value, unknown name, missing path).

    The message names the value, the rule it broke and what is valid; the CLI prints it
    as a single line without a traceback and exits with status 2.
    """
