"""Filled in by the local issue."""
