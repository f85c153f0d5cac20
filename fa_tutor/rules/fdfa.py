r"""fdfa: direct feedback whose B tracks a forward-mode estimate of the output Jacobian.

Bacho & Chu's FDFA is DFA (:mod:`.direct`) plus one forward-mode pass per step in
which every hidden activity is perturbed (``DirectPassMode`` with a generator);
the output tangent gives :math:`\hat J_l`, and ``B.grad = B - \hat J_l``.
"""
from __future__ import annotations

import torch

from .base import fill_doc, register
from .direct import _ARGS, _INIT_ARG, CHOICES, DEFAULTS, FAMILY, DirectRule
from .direct_pass import DirectPass


@register("fdfa", family=FAMILY, learned_feedback=True, stochastic=True,
          defaults={**DEFAULTS, "feedback_init": "zeros"}, choices=CHOICES,
          summary="DFA whose B tracks a forward-mode estimate of ∂y/∂h_l (Bacho & Chu)")
@fill_doc(args=_ARGS, init_arg=_INIT_ARG)
class ForwardDirectFeedbackAlignment(DirectRule):
    r"""Forward DFA: B follows forward-gradient estimates of ∂y/∂h_l (a moving average under SGD).

    .. math::
        u_l \sim \mathcal{N}(0, I), \quad
        \dot y \leftarrow \textstyle\sum_l J_l u_l \ \text{(one forward-mode pass)}, \quad
        \hat J_l \leftarrow \tfrac1N \textstyle\sum_n \dot y_n u_{l,n}^\top, \quad
        \nabla_{B_l} \leftarrow B_l - \hat J_l,

    .. math::
        \delta_l \leftarrow (B_l^\top e) \odot f'(a_l), \qquad
        \nabla_{W_l} \leftarrow \delta_l h_{l-1}^\top, \qquad B_l(0) = 0

    with :math:`J_l = \partial y/\partial h_l` and :math:`\mathbb{E}[\hat J_l]` its
    batch mean, since the :math:`u_l` are independent with
    :math:`\mathbb{E}[u u^\top] = I`. SGD at rate :math:`\lambda` on
    :math:`B_l` is the moving average
    :math:`B_l \leftarrow (1-\lambda) B_l + \lambda \hat J_l`. Bacho & Chu,
    "Low-variance forward gradients using direct feedback alignment and
    momentum", https://arxiv.org/abs/2212.07282.

    Args:
        {args}
        {init_arg}

    Example:
        >>> import torch, fa_tutor as ft
        >>> model = ft.models.FDFANet(4, 3, hidden=8)
        >>> rule = ft.make_rule("fdfa", model, seed=0)
        >>> opt_B = torch.optim.Adam(rule.parameters(), lr=1e-4)
        >>> loss = rule.step(torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1]))
        >>> opt_B.step()

    .. note:: The released code optimises :math:`B_l` with Adam (lr 1e-4); plain
       SGD gives the moving-average form above (the form the authors' later
       spiking-network code uses), see :mod:`fa_tutor.metrics.ema`. Under Adam (the
       experiments' setting) B is not a moving average of the estimates: Adam keeps
       moving averages :math:`m, v` of the gradient :math:`g = B_l - \hat J_l` and of
       :math:`g^2`, and moves each entry of :math:`B_l` by the learning rate times
       :math:`m/\sqrt v`, a normalised, sign-like step of at most about the learning
       rate. B still settles where the averaged gradient vanishes,
       :math:`B_l = \mathbb E[\hat J_l]`, but it approaches it at a constant speed per
       entry rather than geometrically, and its noise there is set by the learning
       rate, not by :math:`\lambda\sigma^2/(2-\lambda)`. Each :math:`u_l` has the shape
       of :math:`h_l` and is drawn per example from the rule's generator, in forward
       order of the layers, and one tangent per step is used (the released code's
       setting). With BatchNorm in training mode,
       :math:`J_l` includes the batch statistics' coupling; :math:`\hat J_l`
       estimates the batch mean of the per-example Jacobians.

    Taught in: {ref}`fdfa`.
    """

    perturb = True

    def feedback_grads(self, run: DirectPass) -> None:
        ydot = run.ydot if run.ydot is not None else torch.zeros_like(run.logits)  # (N, K)
        with torch.no_grad():
            for key, u in run.u.items():
                B = self.feedback[key]
                J = ydot.flatten(1).mT @ u.flatten(1) / u.shape[0]  # (K, n_l)
                B.grad = B.detach() - J.view_as(B)  # SGD at rate λ: B ← (1-λ)B + λĴ
