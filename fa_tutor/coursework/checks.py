"""Automatic checks for the book's coding exercises: ``ft.checks.<label>(student_fn)``.

Each check compares a student's function with the package's implementation on
random inputs and returns a short report; it raises :class:`CheckFailed` with a
hint when the answer is wrong (never a bare ``assert``, so checks hold under ``python -O``).
"""
from __future__ import annotations

from typing import Callable

import torch

from .registry import CheckFailed, check, require

__all__ = ["CheckFailed"]  # and every registered check, by label (module __getattr__)


@check("getting_started_ex2", function="accuracy")
def getting_started_ex2(accuracy: Callable[[torch.Tensor, torch.Tensor], float]) -> str:
    """Exercise: accuracy (%) of logits against integer labels."""
    g = torch.Generator().manual_seed(0)
    for n, k in [(10, 3), (257, 10), (1, 2)]:
        logits = torch.randn(n, k, generator=g)
        y = torch.randint(0, k, (n,), generator=g)
        expected = 100.0 * float((logits.argmax(-1) == y).float().mean())
        got = float(accuracy(logits, y))
        require(abs(got - expected) < 1e-6, (
            f"accuracy on {n} examples, {k} classes: expected {expected:.4f} %, got {got:.4f}. "
            "Hint: compare logits.argmax(-1) with y and report a percentage."))
    return "getting_started_ex2: all checks passed"


def __getattr__(name: str) -> Callable[..., str]:
    """``ft.checks.<label>`` finds every registered check, whichever module defines it."""
    from . import registry

    if name in registry.CHECKS:
        return registry.CHECKS[name]
    raise AttributeError(f"no check {name!r}; registered: {', '.join(sorted(registry.CHECKS))}")
