"""Checks for the coding exercises of the chapter {ref}`conservation-law`."""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from ..metrics import ConservationTracker
from ..models import MLP
from ..rules import make_rule
from .registry import check, require

Ratios = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor], Tensor]


def _trained_pair(rule_name: str, seed: int, steps: int = 5
                  ) -> tuple[list[Tensor], Tensor]:
    """Train a 6-5-3 leaky-ReLU net a few FA-type steps; return the states and the tracker's R_i.

    Returns ``[W1_0, W2_0, B_0, W1, W2, B]`` (float64 copies) and
    ``ConservationTracker.neuron_ratios()`` at the end.
    """
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = MLP(6, [5], 3, bias=False).double()
    rule = make_rule(rule_name, net, seed=seed, **({"scale": False} if rule_name == "usf" else {}))
    x = torch.randn(20, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (20,), generator=g)
    key = "layers.1.weight"
    start = [net.layers[0].weight.detach().clone(), net.layers[1].weight.detach().clone(),
             rule.feedback[key].detach().clone()]
    tracker = ConservationTracker(net, rule, min_rel_denominator=0.0, max_condition=math.inf)
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        rule.step(x, y)
        opt.step()
    rule.forward(x)  # refreshes uSF's B = sign(W2) from the final weights
    tracker.snapshot()
    end = [net.layers[0].weight.detach().clone(), net.layers[1].weight.detach().clone(),
           rule.feedback[key].detach().clone()]
    return start + end, tracker.neuron_ratios()


@check("conservation_law_ex3", function="neuron_ratios")
def conservation_law_ex3(neuron_ratios: Ratios) -> str:
    """Exercise: per-neuron conservation ratios R_i from the weights at time 0 and t."""
    # usf with seed 3 runs 20 steps: four entries of W2 change sign, so B differs from B_0
    for rule_name, seed, steps in [("fa", 0, 5), ("adafa", 1, 5), ("usf", 3, 20), ("fa", 4, 5)]:
        tensors, expected = _trained_pair(rule_name, seed, steps)
        got = neuron_ratios(*[t.clone() for t in tensors])
        got = torch.as_tensor(got, dtype=torch.float64).reshape(-1)
        require(got.shape == expected.shape, (
            f"expected one ratio per hidden neuron, shape {tuple(expected.shape)}, got "
            f"{tuple(got.shape)}. Hint: neuron i's incoming weights are the row W1[i, :], its "
            "outgoing weights the column W2[:, i]."))
        ok = ~expected.isnan()
        require(torch.allclose(got[ok], expected[ok], rtol=1e-6, atol=1e-9), (
            f"rule {rule_name!r}: expected R_i = {expected.numpy().round(4)}, got "
            f"{got.detach().numpy().round(4)}. Hint: R_i = ½Δ‖W1[i,:]‖² / "
            "Δ⟨W2[:,i], B[:,i]⟩ with Δ the change since time 0 (mind the ½, and use B_0 "
            "at time 0)."))
    return "conservation_law_ex3: all checks passed"


@check("conservation_law_ex4", function="step_drift")
def conservation_law_ex4(step_drift: Callable[[Tensor, float], Tensor]) -> str:
    """Exercise: the exact change of C_i in one plain SGD step of FA with fixed B."""
    for seed, lr in [(0, 0.1), (1, 0.7), (2, 0.02)]:
        g = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        net = MLP(7, [6], 4, bias=False).double()
        rule = make_rule("fa", net, seed=seed)
        B = rule.feedback["layers.1.weight"]
        x = torch.randn(30, 7, generator=g, dtype=torch.float64)
        y = torch.randint(0, 4, (30,), generator=g)
        W1, W2 = net.layers[0].weight, net.layers[1].weight

        def conserved() -> Tensor:  # C_i = ½‖W1[i,:]‖² − ⟨W2[:,i], B[:,i]⟩
            return (0.5 * W1.detach().pow(2).sum(1) - (W2.detach() * B).sum(0))

        before = conserved()
        opt = torch.optim.SGD(net.parameters(), lr=lr)
        opt.zero_grad(set_to_none=True)
        rule.step(x, y)
        g_W1 = W1.grad.detach().clone()
        opt.step()
        expected = conserved() - before
        got = torch.as_tensor(step_drift(g_W1.clone(), lr), dtype=torch.float64).reshape(-1)
        require(got.shape == expected.shape, (
            f"expected one value per hidden neuron, shape {tuple(expected.shape)}, got "
            f"{tuple(got.shape)}"))
        require(torch.allclose(got, expected, rtol=1e-6, atol=1e-12), (
            f"lr={lr}: the measured change of C_i is {expected.numpy()}, you returned "
            f"{got.detach().numpy()}. Hint: expand ½‖W1[i,:] − lr·g[i,:]‖² − "
            "½‖W1[i,:]‖²; the first-order terms cancel against the outgoing side."))
    return "conservation_law_ex4: all checks passed"
