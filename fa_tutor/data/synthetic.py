r"""Synthetic data with the structure the FA convergence results assume (Prop. 5.7).

* :math:`\gamma`-orthogonally separable (Def. 5.5):
  :math:`y_j y_k\langle x_j, x_k\rangle \ge \gamma` for **all** pairs :math:`j, k`
  (including :math:`j = k`): every example is positively correlated with every
  example of its own class and negatively with every example of the other.
* :math:`\gamma`-nearly orthogonal (Def. 5.6, after Frei et al. 2022):
  :math:`R_{\min}^2 \ge \gamma\, n\, \rho_{\max}` with
  :math:`R_{\min}^2 = \min_j\|x_j\|^2` and
  :math:`\rho_{\max} = \max_{j\ne k}|\langle x_j, x_k\rangle|`:
  the examples are long compared with their overlaps, as random vectors are in
  high dimension (:math:`d \gg n^2`).

Labels are :math:`y \in \{-1, +1\}` (float) by default, the convention of the
exponential margin loss :math:`\ell(y f(x)) = e^{-y f(x)}`; ``labels="01"``
gives int64 classes :math:`\{0, 1\}` (class 1 ↔ :math:`y = +1`) for cross-entropy.

Taught in: {ref}`alignment-dominance`.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn

__all__ = [
    "OrthogonalData", "NearlyOrthogonalData", "NearOrthogonality",
    "orthogonally_separable", "nearly_orthogonal", "measure_orthogonal_separability",
    "measure_near_orthogonality", "teacher_student",
]
_LABELS = ("pm1", "01")


class OrthogonalData(NamedTuple):
    x: Tensor  # (n, d) float32
    y: Tensor  # (n,) ±1 float32, or {0,1} int64
    gamma: float  # measured min_{j,k} y_j y_k ⟨x_j, x_k⟩


class NearOrthogonality(NamedTuple):
    r_min2: float  # min_j ‖x_j‖²
    rho_max: float  # max_{j≠k} |⟨x_j, x_k⟩|
    gamma: float  # R_min² / (n ρ_max), the largest γ with R_min² ≥ γ n ρ_max


class NearlyOrthogonalData(NamedTuple):
    x: Tensor
    y: Tensor
    r_min2: float
    rho_max: float
    gamma: float


def _pm1(y: Tensor) -> Tensor:
    """Labels as ±1 float64: {0,1} classes map 0 → −1, 1 → +1; ±1 stay."""
    y = y.detach().double().reshape(-1)
    vals = set(y.unique().tolist())
    if vals <= {-1.0, 1.0}:
        return y
    if vals <= {0.0, 1.0}:
        return 2 * y - 1
    raise ValueError(f"binary labels must be ±1 or {{0, 1}}, got values {sorted(vals)}")


def _labels_out(y_pm: Tensor, labels: str) -> Tensor:
    if labels not in _LABELS:
        raise ValueError(f"labels={labels!r}; choose one of: {', '.join(_LABELS)}")
    return y_pm.float() if labels == "pm1" else ((y_pm + 1) / 2).long()


def measure_orthogonal_separability(x: Tensor, y: Tensor) -> float:
    r""":math:`\min_{j,k} y_j y_k\langle x_j, x_k\rangle` (Def. 5.5): the data is
    :math:`\gamma`-orthogonally separable for every :math:`0 < \gamma \le` this value.

    ``x`` is flattened per example; ``y`` is ±1 or {0, 1}. Computed in float64.
    """
    x64 = x.detach().double().reshape(len(x), -1)
    ypm = _pm1(y)
    if len(ypm) != len(x64):
        raise ValueError(f"x has {len(x64)} examples, y has {len(ypm)}")
    z = ypm[:, None] * x64  # y_j x_j
    return float((z @ z.T).min())


def measure_near_orthogonality(x: Tensor) -> NearOrthogonality:
    r"""Def. 5.6's :math:`R_{\min}^2`, :math:`\rho_{\max}` and
    :math:`\gamma = R_{\min}^2 / (n\rho_{\max})` (``inf`` if all overlaps are 0)."""
    x64 = x.detach().double().reshape(len(x), -1)
    n = len(x64)
    if n < 2:
        raise ValueError(f"near-orthogonality needs at least 2 examples, got {n}")
    gram = x64 @ x64.T
    r_min2 = float(gram.diagonal().min())
    off = gram - torch.diag(gram.diagonal())
    rho_max = float(off.abs().max())
    gamma = r_min2 / (n * rho_max) if rho_max > 0 else math.inf
    return NearOrthogonality(r_min2, rho_max, gamma)


def orthogonally_separable(n: int, d: int, gamma: float = 0.1, *, noise: float = 1.0,
                           seed: int = 0, labels: str = "pm1") -> OrthogonalData:
    r"""Binary data that is :math:`\gamma`-orthogonally separable, with the measured :math:`\gamma`.

    Construction: a random unit direction :math:`u`, labels :math:`y_j = \pm1`
    (balanced, shuffled), noise :math:`z_j \perp u` with entries of std
    ``noise``/:math:`\sqrt d`, and :math:`x_j = a\,y_j u + z_j`. Then
    :math:`y_j y_k\langle x_j, x_k\rangle = a^2 + y_j y_k\langle z_j, z_k\rangle`,
    so choosing :math:`a^2 = \gamma + \max(0, -\min_{j,k} y_j y_k\langle z_j, z_k\rangle)`
    guarantees every pair clears :math:`\gamma` (times :math:`1 + 10^{-5}`, a
    margin for float32 rounding). The returned ``gamma`` is the minimum measured
    on the returned float32 data, ≥ the requested one.
    """
    if n < 2 or d < 2:
        raise ValueError(f"need n ≥ 2 and d ≥ 2, got n={n}, d={d}")
    if gamma <= 0:
        raise ValueError(f"gamma must be positive, got {gamma}")
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(d, generator=g, dtype=torch.float64)
    u = u / u.norm()
    y = torch.ones(n, dtype=torch.float64)
    y[: n // 2] = -1
    y = y[torch.randperm(n, generator=g)]
    z = torch.randn(n, d, generator=g, dtype=torch.float64) * (noise / math.sqrt(d))
    z = z - (z @ u)[:, None] * u  # project out u
    yz = y[:, None] * z
    worst = float((yz @ yz.T).min())
    a = math.sqrt((gamma + max(0.0, -worst)) * (1 + 1e-5))  # margin for float32 rounding
    x = (a * y[:, None] * u + z).float()
    return OrthogonalData(x, _labels_out(y, labels), measure_orthogonal_separability(x, y))


def nearly_orthogonal(n: int, d: int, *, seed: int = 0, labels: str = "pm1",
                      min_gamma: float | None = None) -> NearlyOrthogonalData:
    r"""Random Gaussian examples :math:`x_j \sim \mathcal N(0, I_d/d)` with random ±1 labels.

    In high dimension :math:`\|x_j\|^2 \approx 1` and
    :math:`|\langle x_j, x_k\rangle| \approx \sqrt{2\log(n^2)/d}`, so
    :math:`\gamma = R_{\min}^2/(n\rho_{\max})` grows like :math:`\sqrt d / n`; take
    :math:`d \gtrsim n^2` for :math:`\gamma > 1`. Returns the measured
    :math:`R_{\min}^2, \rho_{\max}, \gamma`; with ``min_gamma`` set, a draw below
    it raises ``ValueError`` (increase ``d``).
    """
    if n < 2 or d < 1:
        raise ValueError(f"need n ≥ 2 and d ≥ 1, got n={n}, d={d}")
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(n, d, generator=g, dtype=torch.float64) / math.sqrt(d)).float()
    y = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0).double()
    stats = measure_near_orthogonality(x)
    if min_gamma is not None and stats.gamma < min_gamma:
        raise ValueError(f"nearly_orthogonal(n={n}, d={d}) drew gamma={stats.gamma:.3g} < "
                         f"min_gamma={min_gamma}; increase d (about n² or more)")
    return NearlyOrthogonalData(x, _labels_out(y, labels), *stats)


def teacher_student(n: int, d: int, hidden: int = 16, out_features: int = 1, *,
                    task: str = "regression", noise: float = 0.0, seed: int = 0
                    ) -> tuple[Tensor, Tensor, nn.Module]:
    r"""Data labelled by a random teacher network :math:`y = f^\star(x)`.

    :math:`x \sim \mathcal N(0, I_d)`; the teacher is a
    ``MLP(d, [hidden], out_features, activation="tanh")`` with PyTorch's default
    init. ``task="regression"``: :math:`y = f^\star(x) + \text{noise}\cdot\varepsilon`,
    float ``(n, out_features)``. ``task="classification"``: :math:`y =
    \arg\max_c f^\star(x)_c` (needs ``out_features ≥ 2``), int64 ``(n,)``.
    Returns ``(x, y, teacher)``.
    """
    from ..models import MLP

    if task not in ("regression", "classification"):
        raise ValueError(f"task={task!r}; choose 'regression' or 'classification'")
    if task == "classification" and out_features < 2:
        raise ValueError(f"classification needs out_features ≥ 2, got {out_features}")
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        teacher = MLP(d, [hidden], out_features, activation="tanh")
    x = torch.randn(n, d, generator=g)
    with torch.no_grad():
        f = teacher(x)
    if task == "classification":
        return x, f.argmax(1), teacher
    return x, f + noise * torch.randn(f.shape, generator=g), teacher
