"""Checks for the coding exercises of the chapter {ref}`alignment-dominance`."""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..metrics import dominance_bound
from .registry import check, require

Bound = Callable[..., np.ndarray]


@check("alignment_dominance_ex2", function="loss_bound")
def alignment_dominance_ex2(loss_bound: Bound) -> str:
    """Exercise: the Thm 5.1 bound on the loss for beta = 1 and beta > 1."""
    t = np.linspace(0.0, 20.0, 41)
    cases = [  # (loss0, mu, beta, loss_star)
        (1.0, 0.5, 1.0, 0.0), (2.3, 0.1, 1.0, 0.4), (1.0, 0.3, 2.0, 0.0),
        (0.7, 2.0, 1.5, 0.1), (5.0, 0.05, 3.0, 1.0),
    ]
    for loss0, mu, beta, loss_star in cases:
        expected = dominance_bound(t, loss0, mu, beta, loss_star)
        got = np.asarray(loss_bound(t, loss0, mu, beta, loss_star=loss_star), dtype=float)
        require(got.shape == expected.shape, (
            f"expected one value per time, shape {expected.shape}, got {got.shape}"))
        require(np.allclose(got, expected, rtol=1e-9, atol=1e-12), (
            f"loss0={loss0}, mu={mu}, beta={beta}, loss_star={loss_star}: expected "
            f"{expected[[0, 10, 40]].round(5)} at t = 0, 5, 20, got {got[[0, 10, 40]].round(5)}. "
            "Hint: integrate du/dt <= -mu u^beta for u = L - L*; for beta > 1 use "
            "d(u^(1-beta))/dt, and return L = L* + u, not the gap."))
        require(abs(got[0] - loss0) < 1e-9, "at t = 0 the bound must equal loss0")
    return "alignment_dominance_ex2: all checks passed"
