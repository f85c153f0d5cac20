"""Checks for the coding exercises of the chapter {ref}`forward-gradients`."""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch.func import functional_call

from ..metrics.estimator import variance_theory
from ..models.mlp import MLP
from ..rules.base import make_rule
from .registry import CheckFailed, check, expect_close


@check("forward_gradients_ex2", function="fg_w")
def forward_gradients_ex2(fg_w: Callable) -> str:
    r"""Exercise: FG-W's estimate :math:`g = (\nabla L\cdot v)\,v` from one JVP.

    The student's ``fg_w(loss_of, params, v)`` is compared with the ``.grad`` that
    ``make_rule("fg_w", model, seed=s)`` writes, for the same tangents v (drawn from
    a copy of the rule's generator, in ``named_parameters`` order), on two MLPs.
    """
    for seed, hidden in [(0, [5]), (3, [7, 4])]:
        with torch.random.fork_rng():  # leave the caller's global RNG untouched
            torch.manual_seed(seed)
            model = MLP(6, hidden, 3, activation="tanh").double()
            x = torch.randn(9, 6, dtype=torch.float64)
            y = torch.randint(0, 3, (9,))
        rule = make_rule("fg_w", model, seed=seed, exact_readout=False)  # v on every parameter
        gen = torch.Generator().set_state(rule.generator.get_state())  # the rule's stream
        rule.step(x, y)
        names, params = zip(*model.named_parameters())
        want = [p.grad.clone() for p in params]
        v = tuple(torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params)

        def loss_of(*ps: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(functional_call(model, dict(zip(names, ps)), (x,)), y)

        got = fg_w(loss_of, tuple(p.detach() for p in params), v)
        got = list(got)
        if len(got) != len(want):
            raise CheckFailed(f"expected {len(want)} tensors (one per parameter), "
                                 f"got {len(got)}")
        for name, g, w in zip(names, got, want):
            expect_close(g, w, name, "(the parameter's shape)",
                         "the estimate differs from fa_tutor's fg_w. Hint: "
                         "_, d = torch.func.jvp(loss_of, params, v) gives d = ∇L·v; "
                         "multiply every tangent by that one number.", rtol=1e-6, atol=1e-9)
    return "forward_gradients_ex2: all checks passed"


@check("forward_gradients_ex3", function="table1")
def forward_gradients_ex3(table1: Callable) -> str:
    r"""Exercise: Ren et al.'s Table 1, compared with ``fa_tutor.metrics.variance_theory``.

    FG-W shared :math:`\frac{pq+2}{N}V + (pq+1)S`, independent
    :math:`\frac{pq+2}{N}V + \frac{pq+1}{N}S`; FG-A the same with q in place of pq.
    """
    for p, q, N, S, V in [(784, 256, 64, 1e-4, 3e-3), (3, 5, 1, 0.5, 0.0), (10, 1, 7, 0.0, 2.0),
                          (64, 32, 32, 2e-3, 1e-2)]:
        got = table1(p, q, N, S, V)
        want = variance_theory(p, q, N, S, V)
        for row in want.itertuples():
            key = (row.estimator, row.perturbation)
            if key not in got:
                raise CheckFailed(f"missing key {key}; expected the keys ('fg_w', 'shared'), "
                                     "('fg_w', 'independent'), ('fg_a', 'shared'), "
                                     "('fg_a', 'independent')")
            if not math.isclose(float(got[key]), row.variance, rel_tol=1e-9, abs_tol=1e-15):
                raise CheckFailed(
                    f"{key} with p={p}, q={q}, N={N}, S={S}, V={V}: expected "
                    f"{row.variance:.6g}, got {float(got[key]):.6g}. Hint: FG-W perturbs "
                    "n = p·q numbers, FG-A n = q; (n+2)/N·V + (n+1)·S, and the independent "
                    "column divides the S term by N too.")
    return "forward_gradients_ex3: all checks passed"
