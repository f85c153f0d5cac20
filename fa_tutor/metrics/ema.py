r"""The variance/bias trade-off of an exponential moving average: FDFA's "momentum".

Convention (used throughout): the moving average of estimates :math:`X_t` is

.. math::
    B_t = \alpha B_{t-1} + (1-\alpha) X_t, \qquad \lambda = 1 - \alpha ,

where :math:`\lambda` is the rate: SGD at learning rate :math:`\lambda` on the
"gradient" :math:`B - X_t` (what the ``fdfa`` rule writes into ``B.grad``) is
exactly this update. Unrolled, :math:`B_t = (1-\alpha)\sum_{k\ge0}\alpha^k X_{t-k}`
(+ the decaying start :math:`\alpha^t B_0`), so for i.i.d. :math:`X_t` with
variance :math:`\sigma^2`

.. math::
    \operatorname{Var}[B_\infty] = (1-\alpha)^2 \sigma^2 \sum_{k\ge0} \alpha^{2k}
    = \frac{1-\alpha}{1+\alpha}\,\sigma^2 .

The price is bias: the start decays only as :math:`\alpha^t`, and when the mean
of :math:`X_t` drifts by :math:`d` per step the average lags behind it by
:math:`d\,\alpha/(1-\alpha)` (its samples' mean age in steps).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


def _check_alpha(alpha: float) -> float:
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"alpha={alpha!r}; the EMA weight must satisfy 0 ≤ alpha < 1 "
                         "(alpha = 1 - rate)")
    return float(alpha)


def ema_stationary_variance(alpha: float, sigma2: float | Tensor) -> float | Tensor:
    r""":math:`\frac{1-\alpha}{1+\alpha}\sigma^2`: the stationary variance of the EMA of
    i.i.d. estimates with variance ``sigma2`` (elementwise for a tensor)."""
    alpha = _check_alpha(alpha)
    return (1.0 - alpha) / (1.0 + alpha) * sigma2


def ema_mean_age(alpha: float) -> float:
    r""":math:`\alpha/(1-\alpha)`: the mean age (in steps) of the samples in the average,
    i.e. the lag behind a target drifting linearly (the bias side of the trade-off)."""
    alpha = _check_alpha(alpha)
    return alpha / (1.0 - alpha)


def ema(estimates: Tensor, alpha: float, init: Tensor | None = None) -> Tensor:
    r"""The trajectory :math:`B_t = \alpha B_{t-1} + (1-\alpha) X_t` for ``estimates``
    of shape ``(T, ...)``; :math:`B_0` = ``init`` (default zeros). Returns ``(T, ...)``."""
    alpha = _check_alpha(alpha)
    B = torch.zeros_like(estimates[0]) if init is None else init.clone()
    out = torch.empty_like(estimates)
    for t, X in enumerate(estimates):
        B = alpha * B + (1.0 - alpha) * X
        out[t] = B
    return out


@dataclass(frozen=True)
class EMAVariance:
    """A measured stationary EMA variance next to the formula's prediction.

    ``sigma2``, ``measured`` and ``predicted`` are means over the tensor's entries.
    """

    alpha: float
    sigma2: float  # per-step variance of the raw estimates X_t
    measured: float  # variance of B_t over the steps after burn-in
    predicted: float  # (1 - alpha) / (1 + alpha) * sigma2
    steps: int  # steps used for `measured`

    @property
    def ratio(self) -> float:
        """measured / predicted (1 when the formula holds)."""
        return self.measured / self.predicted


def default_burn_in(alpha: float) -> int:
    """Steps until the start has decayed to below e⁻¹⁰ (α^t < 4.5e-5)."""
    return math.ceil(10.0 / (1.0 - _check_alpha(alpha)) - 1e-9)


def measure_ema_variance(estimates: Tensor, alpha: float,
                         burn_in: int | None = None) -> EMAVariance:
    """Run the EMA over i.i.d. ``estimates`` (shape ``(T, ...)``) and compare its variance
    after ``burn_in`` steps (default :func:`default_burn_in`) with the formula."""
    burn_in = default_burn_in(alpha) if burn_in is None else burn_in
    if not 0 <= burn_in < estimates.shape[0] - 2:
        raise ValueError(f"burn_in={burn_in} leaves too few of the {estimates.shape[0]} steps")
    X = estimates.double()
    B = ema(X, alpha)[burn_in:]
    sigma2 = X.var(0).mean().item()
    return EMAVariance(alpha, sigma2, B.var(0).mean().item(),
                       float(ema_stationary_variance(alpha, sigma2)), B.shape[0])


def fdfa_feedback_variance(rule: Any, x: Tensor, y: Tensor, *, rate: float, steps: int,
                           burn_in: int | None = None) -> dict[str, EMAVariance]:
    r"""FDFA's feedback on a frozen network: measured vs predicted variance, per layer.

    Runs ``rule.step(x, y)`` on the same batch ``steps`` times, applying only
    :math:`B \leftarrow B - \lambda\,\nabla_B` (plain SGD, ``rate`` = λ, so
    α = 1 − λ) and never changing a forward weight. Each step's
    :math:`\hat J_t = B_t - \nabla_{B_t}` is then an i.i.d. draw, :math:`\sigma^2`
    is its per-entry variance over all steps, and the measured variance of
    :math:`B_t` after ``burn_in`` steps is compared with
    :math:`\frac{1-\alpha}{1+\alpha}\sigma^2`. The rule's feedback and the
    model's buffers (BatchNorm statistics) are restored at the end; the
    weights' ``.grad`` are left as the last step wrote them.
    """
    if not 0.0 < rate <= 1.0:
        raise ValueError(f"rate={rate!r}; the SGD rate on B must be in (0, 1]")
    alpha = 1.0 - rate
    burn_in = default_burn_in(alpha) if burn_in is None else burn_in
    if not 0 <= burn_in < steps - 2:
        raise ValueError(f"burn_in={burn_in} leaves too few of the {steps} steps")
    saved_B = {k: B.detach().clone() for k, B in rule.feedback.items()}
    saved_buffers = {k: b.clone() for k, b in rule.model.named_buffers()}
    stats: dict[str, list[Tensor]] = {}  # key -> [ΣĴ, ΣĴ², ΣB, ΣB²] (float64)
    try:
        for t in range(steps):
            rule.step(x, y)
            with torch.no_grad():
                for key, B in rule.feedback.items():
                    J = (B - B.grad).double()
                    B -= rate * B.grad
                    s = stats.setdefault(key, [torch.zeros_like(J) for _ in range(4)])
                    s[0] += J
                    s[1] += J * J
                    if t >= burn_in:
                        s[2] += B.double()
                        s[3] += B.double() ** 2
    finally:
        with torch.no_grad():
            for key, B in rule.feedback.items():
                B.copy_(saved_B[key])
                B.grad = None
            for key, b in rule.model.named_buffers():
                b.copy_(saved_buffers[key])
    n = steps - burn_in
    out = {}
    for key, (sJ, sJ2, sB, sB2) in stats.items():
        sigma2 = ((sJ2 - sJ**2 / steps) / (steps - 1)).mean().item()
        measured = ((sB2 - sB**2 / n) / (n - 1)).mean().item()
        out[key] = EMAVariance(alpha, sigma2, measured,
                               float(ema_stationary_variance(alpha, sigma2)), n)
    return out
