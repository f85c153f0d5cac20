"""Coursework: exercise checks, student-notebook export, and grading runs."""
from . import checks
from .registry import CHECKS

__all__ = ["CHECKS", "checks"]
