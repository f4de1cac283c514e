"""The command line (``uhd-profile``): thin commands over the Python API."""

from uhd_profile.cli.main import main

__all__ = ["main"]
