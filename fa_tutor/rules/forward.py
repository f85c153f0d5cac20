"""Filled in by the forward issue."""
