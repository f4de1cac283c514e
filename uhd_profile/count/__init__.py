"""count layer."""
