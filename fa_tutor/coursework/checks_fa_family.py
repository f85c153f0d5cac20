"""Checks for the coding exercises of the chapter {ref}`fa-family`."""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from ..metrics.alignment import cosine
from ..models.mlp import MLP
from ..rules.base import make_rule
from .registry import CheckFailed, check, expect_close


@check("fa_family_ex2", function="alignment")
def fa_family_ex2(alignment: Callable[[Tensor, Tensor], float]) -> str:
    r"""Exercise: :math:`\cos\angle(W, B) = \langle W, B\rangle / (\|W\|_F \|B\|_F)`.

    Compared with ``fa_tutor.metrics.cosine`` on matrices, a conv-shaped pair,
    a nearly aligned pair and an exactly opposite pair.
    """
    g = torch.Generator().manual_seed(0)
    W = torch.randn(10, 32, generator=g)
    cases = [
        ("random (10, 32) matrices", W, torch.randn(10, 32, generator=g)),
        ("conv kernels (4, 3, 3, 3)", torch.randn(4, 3, 3, 3, generator=g),
         torch.randn(4, 3, 3, 3, generator=g)),
        ("B = W + small noise", W, W + 0.1 * torch.randn(10, 32, generator=g)),
        ("B = -2 W", W, -2 * W),
        ("B = sign(W)", W, torch.sign(W)),
    ]
    for what, a, b in cases:
        want = cosine(a, b)
        got = float(alignment(a.clone(), b.clone()))
        if not math.isclose(got, want, rel_tol=1e-5, abs_tol=1e-6):
            raise CheckFailed(
                f"{what}: expected cosine {want:.6f}, got {got:.6f}. Hint: flatten both "
                "tensors, take the dot product and divide by the product of the two norms "
                "(the cosine is scale-free: B = -2W must give -1).")
    return "fa_family_ex2: all checks passed"


@check("fa_family_ex3", function="sign_feedback")
def fa_family_ex3(sign_feedback: Callable[[Tensor], Tensor]) -> str:
    r"""Exercise: uSF's feedback :math:`B = c\,\mathrm{sign}(W)`, :math:`c = \sqrt{2/(n_{in}+n_{out})}`.

    Compared with the live ``rule.feedback`` of ``make_rule("usf", model)`` for
    every layer of two MLPs, including a weight with exact zeros.
    """
    for widths in ([6], [20, 12]):
        with torch.random.fork_rng():  # leave the caller's global RNG untouched
            torch.manual_seed(len(widths))
            model = MLP(8, widths, 3)
        with torch.no_grad():
            model.layers[0].weight[0, :3] = 0.0  # sign(0) = 0
        rule = make_rule("usf", model, seed=0)
        for name, p in model.named_parameters():
            if name not in rule.feedback:
                continue
            want = rule.feedback[name]
            expect_close(
                sign_feedback(p.detach().clone()), want, f"{name} (B)", "(the shape of W)",
                f"B differs from uSF's feedback for W of shape {tuple(p.shape)}. Hint: "
                "B = c * torch.sign(W) with c = sqrt(2 / (fan_in + fan_out)), where W "
                "has shape (fan_out, fan_in).", rtol=1e-5, atol=1e-7)
    return "fa_family_ex3: all checks passed"
