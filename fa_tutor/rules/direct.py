"""Filled in by the direct issue."""
