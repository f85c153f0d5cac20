"""Backpropagation: the exact gradient every other rule is measured against."""
from __future__ import annotations

from torch import Tensor

from .base import Rule, check_batch, register


@register("bp", family="backprop", summary="exact gradient by reverse-mode autodiff (weight transport)")
class Backprop(Rule):
    r"""Backpropagation: the chain rule run backwards, reusing the forward weights.

    .. math::
        \delta_L \leftarrow \partial \ell / \partial a_L, \qquad
        \delta_l \leftarrow (W_{l+1}^\top \delta_{l+1}) \odot f'(a_l), \qquad
        \nabla_{W_l} \leftarrow \delta_l h_{l-1}^\top

    Rumelhart, Hinton & Williams (1986). The transpose :math:`W_{l+1}^\top` in the
    backward pass is the *weight transport* the other rules avoid.

    Args:
        model: any ``nn.Module``.
        loss_fn: ``loss_fn(logits, y) -> scalar``; defaults to mean cross-entropy.
        seed: unused by backprop (kept for the uniform interface).

    Example:
        >>> import torch, fa_tutor as ft
        >>> model = ft.models.MLP(4, [8], 3)
        >>> rule = ft.make_rule("bp", model)
        >>> loss = rule.step(torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1]))

    Taught in: {ref}`weight-transport`.
    """

    def _compute_grads(self, x: Tensor, y: Tensor) -> Tensor:
        check_batch(x, y)
        loss = self.loss_fn(self.model(x), y)
        self._write_grads(loss, [p for _, p in self._trainable()])
        return loss
