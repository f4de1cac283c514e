"""The ``uhd-profile`` command group: every command registered here, explicitly; one-line errors."""

from __future__ import annotations

import sys

import click

from uhd_profile.cli.console import fail
from uhd_profile.cli.count import flops, list_, reproduce
from uhd_profile.cli.gate import baseline, check
from uhd_profile.cli.images import dataset, image
from uhd_profile.cli.measure import bench
from uhd_profile.cli.plan import plan
from uhd_profile.cli.report import report
from uhd_profile.cli.run import merge, sweep
from uhd_profile.errors import UhdProfileError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="uhd-profile")
def cli() -> None:
    """uhd-profile: what high-resolution visual encoding costs in multimodal LLMs."""


COMMANDS = (flops, reproduce, bench, sweep, merge, report, baseline, check, image, dataset, list_, plan)
for _command in COMMANDS:
    cli.add_command(_command)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: one-line errors, exit 2 for usage mistakes."""
    try:
        rv = cli.main(args=argv, prog_name="uhd-profile", standalone_mode=False)
    except UhdProfileError as exc:
        fail(str(exc))
    except click.exceptions.NoSuchOption as exc:
        fail(exc.format_message())
    except click.ClickException as exc:
        fail(exc.format_message(), exc.exit_code)
    except click.exceptions.Abort:
        fail("aborted", 130)
    else:
        if isinstance(rv, int) and rv:
            sys.exit(rv)


if __name__ == "__main__":
    main()
