"""analyse layer."""
