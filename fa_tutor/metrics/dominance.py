r"""Alignment dominance (Robertson & Koyejo 2024, Def. 4.2 and Thm 5.1).

A rule satisfies :math:`\beta`-alignment dominance with parameter :math:`\mu>0` if along
its trajectory

.. math::
    -\frac{dL}{dt} = \|\nabla L\|\,\|g\|\cos\varphi_t \;\ge\; \mu\,(L(\theta_t) - L^*)^\beta,
    \qquad \beta \ge 1,

a PL-type inequality for the rule's update :math:`g` instead of the gradient.
Integrating it (Thm 5.1) bounds the loss:

.. math::
    \beta = 1:\; L_t - L^* \le (L_0 - L^*)\,e^{-\mu t}, \qquad
    \beta > 1:\; L_t - L^* \le \big[(L_0 - L^*)^{1-\beta} + (\beta - 1)\mu t\big]^{-1/(\beta-1)}.

:func:`fit_alignment_dominance` estimates :math:`(\mu, \beta)` from a recorded
loss curve; :func:`dominance_bound` draws the bound. Time is the flow's time:
for SGD with learning rate :math:`\eta`, step :math:`k` is :math:`t = \eta k`.

Taught in: {ref}`alignment-dominance`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = ["DominanceFit", "fit_alignment_dominance", "dominance_bound",
           "exponential_bound", "power_bound"]

ArrayLike = Sequence[float] | np.ndarray


@dataclass(frozen=True)
class DominanceFit:
    """Result of :func:`fit_alignment_dominance`."""

    mu: float  # μ = exp(intercept)
    beta: float  # the slope β
    r2: float  # coefficient of determination of the log-log fit
    n_points: int  # points used (those with −dL/dt > 0 and L > L*)


def fit_alignment_dominance(t: ArrayLike, loss: ArrayLike, loss_star: float = 0.0
                            ) -> DominanceFit:
    r"""Fit :math:`\log(-\dot L) = \log\mu + \beta\log(L - L^*)` by least squares.

    :math:`-\dot L` is estimated by finite differences (``numpy.gradient``:
    second-order central differences inside, one-sided at the ends, any
    spacing of ``t``). Points where :math:`-\dot L \le 0` or
    :math:`L \le L^*` (no dominance information) are dropped.

    Args:
        t: increasing times (e.g. ``lr * step``).
        loss: the training loss at those times.
        loss_star: :math:`L^*`, the optimal loss (0 for a separable problem).

    Example:
        >>> import numpy as np
        >>> t = np.linspace(0, 10, 201)
        >>> fit = fit_alignment_dominance(t, 1 / (1 + 0.5 * t))  # −L' = 0.5 L²
        >>> round(fit.beta, 2), round(fit.mu, 2)
        (2.0, 0.5)
    """
    t_arr = np.asarray(t, dtype=np.float64)
    l_arr = np.asarray(loss, dtype=np.float64)
    if t_arr.ndim != 1 or t_arr.shape != l_arr.shape:
        raise ValueError(f"t and loss must be 1-D of equal length, got {t_arr.shape} and "
                         f"{l_arr.shape}")
    if len(t_arr) < 3 or not np.all(np.diff(t_arr) > 0):
        raise ValueError("t needs at least 3 strictly increasing times")
    rate = -np.gradient(l_arr, t_arr)  # −dL/dt
    gap = l_arr - loss_star
    keep = (rate > 0) & (gap > 0) & np.isfinite(rate) & np.isfinite(gap)
    if keep.sum() < 2:
        raise ValueError("fewer than 2 points with decreasing loss above loss_star; "
                         "check loss_star and the trajectory")
    X, Y = np.log(gap[keep]), np.log(rate[keep])
    beta, log_mu = np.polyfit(X, Y, 1)
    resid = Y - (log_mu + beta * X)
    ss_tot = float(((Y - Y.mean()) ** 2).sum())
    r2 = 1.0 - float((resid**2).sum()) / ss_tot if ss_tot > 0 else 1.0
    return DominanceFit(mu=float(np.exp(log_mu)), beta=float(beta), r2=r2, n_points=int(keep.sum()))


def exponential_bound(t: ArrayLike, loss0: float, mu: float, loss_star: float = 0.0) -> np.ndarray:
    r"""Thm 5.1, :math:`\beta = 1`: :math:`L^* + (L_0 - L^*)\,e^{-\mu t}`."""
    t_arr = np.asarray(t, dtype=np.float64)
    return loss_star + (loss0 - loss_star) * np.exp(-mu * t_arr)


def power_bound(t: ArrayLike, loss0: float, mu: float, beta: float, loss_star: float = 0.0
                ) -> np.ndarray:
    r"""Thm 5.1 for :math:`\beta > 1`.

    .. math::
        L^* + \big[(L_0-L^*)^{1-\beta} + (\beta-1)\mu t\big]^{-1/(\beta-1)}

    For :math:`\beta = 2`, :math:`L^*=0`: :math:`L_0 / (1 + \mu L_0 t)`.
    """
    if beta <= 1:
        raise ValueError(f"power_bound needs beta > 1, got {beta}; use exponential_bound for 1")
    t_arr = np.asarray(t, dtype=np.float64)
    base = (loss0 - loss_star) ** (1.0 - beta) + (beta - 1.0) * mu * t_arr
    return loss_star + base ** (-1.0 / (beta - 1.0))


def dominance_bound(t: ArrayLike, loss0: float, mu: float, beta: float,
                    loss_star: float = 0.0) -> np.ndarray:
    r"""The Thm 5.1 bound on :math:`L(\theta_t)` at times ``t`` for any :math:`\beta \ge 1`."""
    if mu <= 0:
        raise ValueError(f"mu must be positive, got {mu}")
    if loss0 <= loss_star:
        raise ValueError(f"loss0 ({loss0}) must exceed loss_star ({loss_star})")
    if beta < 1:
        raise ValueError(f"beta must be ≥ 1 (Def. 4.2), got {beta}")
    if beta == 1:
        return exponential_bound(t, loss0, mu, loss_star)
    return power_bound(t, loss0, mu, beta, loss_star)
