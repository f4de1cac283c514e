"""The package version (one place; the build reads it from pyproject.toml too)."""

__version__ = "0.2.0"
