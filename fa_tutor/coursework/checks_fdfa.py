"""Checks for the coding exercises of the chapter {ref}`fdfa`."""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ..metrics.ema import ema
from ..models.mlp import MLP
from ..rules.base import make_rule
from .registry import CheckFailed, check, expect_close


def _one_hidden(seed: int, width: int, batch: int):
    """A float64 MLP 6 → width → 3 (ReLU), a batch, and an fdfa rule seeded with ``seed``."""
    with torch.random.fork_rng():  # leave the caller's global RNG untouched
        torch.manual_seed(seed)
        model = MLP(6, [width], 3, activation="relu").double()
        x = torch.randn(batch, 6, dtype=torch.float64)
        y = torch.randint(0, 3, (batch,))
    return model, x, y, make_rule("fdfa", model, seed=seed)


@check("fdfa_ex2", function="jacobian_estimate")
def fdfa_ex2(jacobian_estimate: Callable[[Tensor, Tensor], Tensor]) -> str:
    r"""Exercise: :math:`\hat J = \frac1N \sum_n \dot y_n u_n^\top`, FDFA's Jacobian estimate.

    On a one-hidden-layer MLP the fdfa rule draws :math:`u_1` (shape of h_1, per
    example) from its own generator, and :math:`\dot y = u_1 W_2^\top`; its
    estimate is :math:`\hat J = B - \nabla_B` (B.grad = B − Ĵ).  The student's
    function gets the same u and ẏ and must return that Ĵ.
    """
    for seed, width, batch in [(0, 5, 7), (3, 9, 1), (5, 4, 32)]:
        model, x, y, rule = _one_hidden(seed, width, batch)
        gen = torch.Generator().set_state(rule.generator.get_state())  # the rule's stream
        rule.step(x, y)
        B = rule.feedback["layers.0.weight"]
        want = B.detach() - B.grad
        u = torch.randn((batch, width), generator=gen, dtype=torch.float64)  # the rule's u_1
        ydot = u @ model.layers[1].weight.detach().T  # ẏ = J_1 u_1 with J_1 = W_2
        expect_close(
            jacobian_estimate(ydot.clone(), u.clone()), want,
            f"batch {batch}, width {width}: Ĵ", "= (K, d)",
            "Ĵ differs from the fdfa rule's estimate. Hint: the outer product of each "
            "example's ẏ_n (K) with its u_n (d), averaged over the N examples: ydot.T @ u / N.",
            rtol=1e-8, atol=1e-12)
    return "fdfa_ex2: all checks passed"


@check("fdfa_ex3", function="ema_update")
def fdfa_ex3(ema_update: Callable[[Tensor, Tensor, float], Tensor]) -> str:
    r"""Exercise: :math:`B \leftarrow \alpha B + (1-\alpha)\hat J`.

    Compared, over several steps, with ``torch.optim.SGD(rule.parameters(),
    lr=1-α)`` on the fdfa rule (whose B.grad is B − Ĵ), and with
    ``fa_tutor.metrics.ema`` on a sequence of estimates.
    """
    for alpha in (0.0, 0.5, 0.9):
        model, x, y, rule = _one_hidden(1, 6, 16)
        B = rule.feedback["layers.0.weight"]
        opt = torch.optim.SGD(rule.parameters(), lr=1.0 - alpha)
        mine = B.detach().clone()
        for step in range(4):
            opt.zero_grad(set_to_none=True)
            rule.step(x, y)
            J_hat = B.detach() - B.grad
            mine = torch.as_tensor(ema_update(mine.clone(), J_hat.clone(), alpha))
            opt.step()
            if not torch.allclose(mine.to(B.dtype), B.detach(), rtol=1e-8, atol=1e-12):
                raise CheckFailed(
                    f"alpha={alpha}, step {step + 1}: your B differs from the fdfa rule's B "
                    "after SGD at rate 1 − alpha. Hint: α weights the old B, 1 − α the new "
                    "estimate.")
    g = torch.Generator().manual_seed(0)
    X = torch.randn(6, 3, 2, generator=g, dtype=torch.float64)
    B = torch.zeros(3, 2, dtype=torch.float64)
    want = ema(X, 0.7)
    for t in range(len(X)):
        B = torch.as_tensor(ema_update(B, X[t], 0.7))
        if not torch.allclose(B, want[t]):
            raise CheckFailed(f"step {t + 1}: differs from fa_tutor.metrics.ema(X, 0.7)")
    return "fdfa_ex3: all checks passed"
