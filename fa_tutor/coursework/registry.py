"""The registry of exercise checks, keyed by exercise label."""
from __future__ import annotations

from typing import Callable

CHECKS: dict[str, Callable[..., str]] = {}


def check(label: str) -> Callable[[Callable[..., str]], Callable[..., str]]:
    """Register a check under the exercise label ``<chapter>_ex<N>``."""
    def decorate(fn: Callable[..., str]) -> Callable[..., str]:
        CHECKS[label] = fn
        return fn
    return decorate
