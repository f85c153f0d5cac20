"""The registry of exercise checks, keyed by exercise label.

A check is registered with the exercise label ``<chapter>_ex<N>`` and the name of the
function the student writes (``accuracy``, ``loss_bound``, ...).  Grading takes a
chapter's expected checks and these names from here, never from the submitted notebook.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor


class CheckFailed(Exception):
    """A student's answer is wrong; the message says where and gives a hint.

    Checks raise this (never ``assert``), so they also work under ``python -O``.
    """


@dataclass(frozen=True)
class CheckSpec:
    """One registered check: its exercise label, the student's function name and the check."""
    label: str
    chapter: str
    function: str
    run: Callable[..., str]


CHECKS: dict[str, Callable[..., str]] = {}
SPECS: dict[str, CheckSpec] = {}


def check(label: str, function: str) -> Callable[[Callable[..., str]], Callable[..., str]]:
    """Register a check under the exercise label ``<chapter>_ex<N>``; ``function`` is the
    name of the student's function it grades."""
    chapter, sep, number = label.rpartition("_ex")
    if not (sep and number.isdigit() and chapter):
        raise ValueError(f"check label {label!r} is not of the form <chapter>_ex<N>")

    def decorate(fn: Callable[..., str]) -> Callable[..., str]:
        CHECKS[label] = fn
        SPECS[label] = CheckSpec(label, chapter, function, fn)
        return fn
    return decorate


def chapter_checks(chapter: str) -> list[CheckSpec]:
    """The checks a chapter's notebook is graded on, in exercise order."""
    specs = [s for s in SPECS.values() if s.chapter == chapter]
    return sorted(specs, key=lambda s: int(s.label.rpartition("_ex")[2]))


def require(condition: object, message: str) -> None:
    """Raise :class:`CheckFailed` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise CheckFailed(message)


def expect_close(got: object, want: Tensor, where: str, expected_shape: str, differs: str, *,
                 rtol: float, atol: float) -> None:
    """CheckFailed unless ``got`` has ``want``'s shape and values (allclose).

    The messages start with ``where``; a wrong shape names ``expected_shape``
    (e.g. "(the shape of W)"), wrong values say ``differs`` (what and a hint).
    """
    got = torch.as_tensor(got)
    if got.shape != want.shape:
        raise CheckFailed(f"{where}: shape {tuple(got.shape)}, expected {tuple(want.shape)} "
                          f"{expected_shape}")
    if not torch.allclose(got.to(want.dtype), want, rtol=rtol, atol=atol):
        raise CheckFailed(f"{where}: {differs}")
