"""Checks for the coding exercises of the chapter {ref}`weight-transport`."""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ..rules.feedback import FeedbackLinear
from .registry import CheckFailed, check, require

Backward = Callable[[Tensor, Tensor, Tensor, Tensor], tuple[Tensor, Tensor, Tensor]]


def _reference(delta: Tensor, x: Tensor, W: Tensor, b: Tensor, B: Tensor) -> tuple[Tensor, ...]:
    """``fa_tutor``'s FA layer: autograd through ``FeedbackLinear`` with feedback ``B``."""
    x, W, b = (t.detach().clone().requires_grad_(True) for t in (x, W, b))
    out = FeedbackLinear.apply(x, W, b, B)
    return torch.autograd.grad(out, (x, W, b), delta)


@check("weight_transport_ex2", function="fa_linear_backward")
def weight_transport_ex2(fa_linear_backward: Backward) -> str:
    r"""Exercise: the FA backward of one linear layer, ``(δB, δᵀx, Σδ)``.

    Compared with ``FeedbackLinear``'s backward on random float64 inputs where
    ``B ≠ W``, so an answer that uses ``W`` for ``grad_x`` (backprop) fails.
    """
    g = torch.Generator().manual_seed(0)
    for n, d_in, d_out in [(5, 4, 3), (64, 20, 10), (1, 7, 2)]:
        x = torch.randn(n, d_in, generator=g, dtype=torch.float64)
        W = torch.randn(d_out, d_in, generator=g, dtype=torch.float64)
        b = torch.randn(d_out, generator=g, dtype=torch.float64)
        B = torch.randn(d_out, d_in, generator=g, dtype=torch.float64)
        delta = torch.randn(n, d_out, generator=g, dtype=torch.float64)
        want = _reference(delta, x, W, b, B)
        got = fa_linear_backward(delta.clone(), x.clone(), W.clone(), B.clone())
        if not isinstance(got, (tuple, list)) or len(got) != 3:
            raise CheckFailed("return a tuple (grad_x, grad_W, grad_b)")
        for name, w, a in zip(("grad_x", "grad_W", "grad_b"), want, got):
            a = torch.as_tensor(a, dtype=torch.float64)
            require(a.shape == w.shape, (
                f"{name} has shape {tuple(a.shape)}, expected {tuple(w.shape)} "
                f"(batch {n}, in {d_in}, out {d_out})"))
            if not torch.allclose(a, w, rtol=1e-9, atol=1e-10):
                hint = {
                    "grad_x": "the error for the layer below is delta @ B (B replaces W)"
                    + (" — you used W, which is backprop" if torch.allclose(a, delta @ W) else ""),
                    "grad_W": "the weight gradient is the outer product delta.T @ x, summed "
                              "over the batch",
                    "grad_b": "the bias gradient is delta summed over the batch",
                }[name]
                raise CheckFailed(f"{name} is wrong (batch {n}, in {d_in}, out {d_out}). "
                                     f"Hint: {hint}.")
    return "weight_transport_ex2: all checks passed"
