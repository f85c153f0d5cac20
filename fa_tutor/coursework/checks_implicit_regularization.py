"""Checks for the coding exercises of the chapter {ref}`implicit-regularization`."""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from ..metrics import ConservationTracker
from ..models import MLP
from .registry import CheckFailed, check

Sides = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor], tuple[float, float]]


def _random_state(g: torch.Generator, d: int, m: int, k: int) -> list[Tensor]:
    """W1(0), W2(0), B2, W1(t), W2(t) of a d-m-k net, float64."""
    W1_0, W2_0 = torch.randn(m, d, generator=g, dtype=torch.float64), torch.randn(
        k, m, generator=g, dtype=torch.float64)
    B = torch.randn(k, m, generator=g, dtype=torch.float64)
    W1, W2 = (W1_0 + 0.3 * torch.randn(m, d, generator=g, dtype=torch.float64),
              W2_0 + 0.3 * torch.randn(k, m, generator=g, dtype=torch.float64))
    return [W1_0, W2_0, B, W1, W2]


def _reference(W1_0: Tensor, W2_0: Tensor, B0: Tensor, W1: Tensor, W2: Tensor, B: Tensor
               ) -> tuple[float, float]:
    """Both sums from ``ConservationTracker`` on an MLP holding the given weights."""
    k, m = W2.shape
    net = MLP(W1.shape[1], [m], k, bias=False).double()
    with torch.no_grad():
        net.layers[0].weight.copy_(W1_0)
        net.layers[1].weight.copy_(W2_0)
    feedback = {"layers.1.weight": B0.clone()}
    tracker = ConservationTracker(net, feedback, min_rel_denominator=0.0, max_condition=math.inf)
    with torch.no_grad():
        net.layers[0].weight.copy_(W1)
        net.layers[1].weight.copy_(W2)
    feedback["layers.1.weight"] = B
    tracker.snapshot()
    row = tracker.ratios().iloc[-1]
    return float(row["numerator"]), float(row["denominator"])


@check("implicit_regularization_ex2", function="conservation_sides")
def implicit_regularization_ex2(conservation_sides: Sides) -> str:
    r"""Exercise: both sides of the conservation law, summed over the hidden neurons.

    ``conservation_sides(W1_0, W2_0, B0, W1, W2, B)`` must return
    :math:`(\sum_i \tfrac12\Delta\|W_1[i,:]\|^2,\ \sum_i \Delta\langle W_2[:,i], B[:,i]\rangle)`,
    compared with ``ConservationTracker`` on random float64 weights (B changing too,
    as for sign-FA, so an answer that ignores B's change fails).
    """
    g = torch.Generator().manual_seed(0)
    for d, m, k in [(5, 3, 2), (20, 15, 10), (1, 1, 1)]:
        W1_0, W2_0, B0, W1, W2 = _random_state(g, d, m, k)
        B = B0 + 0.1 * torch.randn(k, m, generator=g, dtype=torch.float64)
        want = _reference(W1_0, W2_0, B0, W1, W2, B)
        got = conservation_sides(W1_0, W2_0, B0, W1, W2, B)
        if len(got) != 2:
            raise CheckFailed("return a pair (numerator, denominator)")
        num, den = float(got[0]), float(got[1])
        if not math.isclose(num, want[0], rel_tol=1e-9, abs_tol=1e-12):
            hint = (" — you left out the ½" if math.isclose(num, 2 * want[0], rel_tol=1e-9)
                    else "")
            raise CheckFailed(
                f"numerator for a {d}-{m}-{k} net: expected {want[0]:.6g}, got {num:.6g}{hint}. "
                "Hint: ½(‖W1(t)‖² − ‖W1(0)‖²), row norms summed over the hidden "
                "neurons.")
        if not math.isclose(den, want[1], rel_tol=1e-9, abs_tol=1e-12):
            raise CheckFailed(
                f"denominator for a {d}-{m}-{k} net: expected {want[1]:.6g}, got {den:.6g}. "
                "Hint: ⟨W2(t), B(t)⟩ − ⟨W2(0), B(0)⟩, each B with its own time.")
    return "implicit_regularization_ex2: all checks passed"
