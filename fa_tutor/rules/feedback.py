"""Filled in by the feedback issue."""
