"""The registry of exercise checks, keyed by exercise label."""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

CHECKS: dict[str, Callable[..., str]] = {}


def check(label: str) -> Callable[[Callable[..., str]], Callable[..., str]]:
    """Register a check under the exercise label ``<chapter>_ex<N>``."""
    def decorate(fn: Callable[..., str]) -> Callable[..., str]:
        CHECKS[label] = fn
        return fn
    return decorate


def expect_close(got: object, want: Tensor, where: str, expected_shape: str, differs: str, *,
                 rtol: float, atol: float) -> None:
    """AssertionError unless ``got`` has ``want``'s shape and values (allclose).

    The messages start with ``where``; a wrong shape names ``expected_shape``
    (e.g. "(the shape of W)"), wrong values say ``differs`` (what and a hint).
    """
    got = torch.as_tensor(got)
    if got.shape != want.shape:
        raise AssertionError(f"{where}: shape {tuple(got.shape)}, expected {tuple(want.shape)} "
                             f"{expected_shape}")
    if not torch.allclose(got.to(want.dtype), want, rtol=rtol, atol=atol):
        raise AssertionError(f"{where}: {differs}")
