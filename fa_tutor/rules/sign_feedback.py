r"""Sign-feedback rules: usf, frsf, brsf (B = M ⊙ sign(W), following W's signs).

Layer-wise feedback (:mod:`.feedback`) whose :math:`B_l = M_l \odot \operatorname{sign}(W_l)`
is rewritten whenever :math:`W_l` changes; the rules differ in the magnitude
:math:`M_l`: a scalar :math:`c_l` (usf), a fixed random tensor (frsf) or a fresh one
every step (brsf).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ._torch_compat import version
from .base import fill_doc, register, xavier_std
from .feedback import _COMMON_ARGS, CHOICES, DEFAULTS, FAMILY, LayerwiseFeedbackRule
from .intercept import Layer

_SCALE_ARG = r"""scale: ``True`` (default): :math:`c_l` is the layer's Xavier std
            :math:`\sqrt{2/(\text{fan\_in}+\text{fan\_out})}` (biotorch's uSF);
            ``False``: :math:`c_l = 1`, the theory's sign-FA."""


class SignedFeedback:
    """B_l = M_l ⊙ sign(W_l), rewritten in place whenever W_l or M_l changed.

    The part usf, frsf and brsf share (each rule owns one, ``rule.signs``):
    ``magnitude[name]`` is M_l, the scalar c_l (usf) or a tensor (frsf, brsf).
    Only ``out=`` ops write B, so this also runs inside ``torch.func``
    transforms; skipping the write while nothing changed keeps graphs that
    saved B valid.
    """

    def __init__(self, layers: list[Layer], feedback: dict[str, Tensor],
                 magnitude: dict[str, Tensor | float]):
        self.layers, self.feedback, self.magnitude = layers, feedback, magnitude
        with torch.no_grad():
            self.write()

    def versions(self) -> list[tuple[int | None, int | None]]:
        """In-place version counters of every W_l and M_l (None: unknown, see changed)."""
        magnitudes = (self.magnitude[l.weight_name] for l in self.layers)
        return [(version(l.weight), version(M) if isinstance(M, Tensor) else 0)
                for l, M in zip(self.layers, magnitudes)]

    def changed(self) -> bool:
        """Whether a W_l or M_l changed since B was written (always, if torch cannot tell)."""
        current = self.versions()
        return current != self.written or current[0][0] is None

    def write(self) -> None:
        for layer in self.layers:
            name = layer.weight_name
            B, M = self.feedback[name], self.magnitude[name]
            torch.sign(layer.weight, out=B)  # (out, in, ...), no new tensor
            torch.mul(B, M, out=B)  # B ← M ⊙ sign(W)
        self.written = self.versions()

    def update(self, new_step: bool) -> None:
        if new_step or self.changed():  # else B is current
            self.write()


@register("usf", family=FAMILY, defaults={**DEFAULTS, "scale": True}, choices=CHOICES,
          summary="sign feedback B = c·sign(W), recomputed every step")
@fill_doc(common_args=_COMMON_ARGS, scale_arg=_SCALE_ARG)
class UniformSignFeedback(LayerwiseFeedbackRule):
    r"""Sign symmetry (uSF): the feedback has the forward weights' signs only.

    .. math::
        B_l \leftarrow c_l \operatorname{sign}(W_l) \text{ every step}, \qquad
        \delta_l \leftarrow (B_{l+1}^\top \delta_{l+1}) \odot f'(a_l), \qquad
        \nabla_{W_l} \leftarrow \delta_l h_{l-1}^\top

    Liao, Leibo & Poggio (2016), "How important is weight symmetry in
    backpropagation?", https://arxiv.org/abs/1510.05067; the uSF/frSF/brSF
    variants as in Moskovitz, Litwin-Kumar & Abbott (2018),
    https://arxiv.org/abs/1812.06488.

    Args:
        {common_args}
        {scale_arg}

    Example:
        >>> import torch, fa_tutor as ft
        >>> model = ft.models.MLP(4, [8], 3)
        >>> rule = ft.make_rule("usf", model, scale=False)
        >>> W, B = model.layers[1].weight, rule.feedback["layers.1.weight"]
        >>> bool((B == torch.sign(W)).all())
        True

    .. note:: :math:`c_l > 0` changes the error's size, never its direction.
       The theory's sign-FA is ``scale=False`` (:math:`c_l = 1`); the default
       follows biotorch's uSF. :math:`B_l` is rewritten from the current
       :math:`W_l` at every ``step`` (and in ``forward`` whenever :math:`W_l`
       has changed) into the same tensor, so ``rule.feedback`` stays live;
       :math:`\operatorname{sign}(0) = 0`.

    Taught in: {ref}`fa-family`.
    """

    def __init__(self, model: nn.Module, **options: Any):
        super().__init__(model, **options)
        self.magnitude = {k: self.init_magnitude(B) for k, B in self.feedback.items()}
        self.signs = SignedFeedback(self.layers, self.feedback, self.magnitude)

    def init_feedback(self, W: Tensor) -> Tensor:
        return torch.empty_like(W)  # written by self.signs

    def init_magnitude(self, W: Tensor) -> float:
        return xavier_std(W.shape) if self.options["scale"] else 1.0

    def update_feedback(self, new_step: bool) -> None:
        self.signs.update(new_step)  # B ← M_l ⊙ sign(W_l): every step, or W_l changed


@register("frsf", family=FAMILY, defaults=DEFAULTS, choices=CHOICES,
          summary="fixed random magnitudes with the signs of W")
@fill_doc(common_args=_COMMON_ARGS)
class FixedRandomSignFeedback(LayerwiseFeedbackRule):
    r"""Fixed-random-magnitude sign feedback (frSF): fixed random sizes, W's signs.

    .. math::
        B_l \leftarrow |B_l^{(0)}| \odot \operatorname{sign}(W_l)
        \text{ every step}, \qquad
        \delta_l \leftarrow (B_{l+1}^\top \delta_{l+1}) \odot f'(a_l), \qquad
        \nabla_{W_l} \leftarrow \delta_l h_{l-1}^\top

    with :math:`B_l^{(0)}` Xavier-uniform, drawn once. Moskovitz, Litwin-Kumar &
    Abbott (2018), "Feedback alignment in deep convolutional networks",
    https://arxiv.org/abs/1812.06488.

    Args:
        {common_args}

    Example:
        >>> import torch, fa_tutor as ft
        >>> model = ft.models.MLP(4, [8], 3)
        >>> rule = ft.make_rule("frsf", model, seed=0)
        >>> W, B = model.layers[1].weight, rule.feedback["layers.1.weight"]
        >>> bool((torch.sign(B) == torch.sign(W)).all())
        True

    .. note:: :math:`B_l` is rewritten in place from the current :math:`W_l` at
       every ``step`` (and in ``forward`` whenever :math:`W_l` has changed), so
       a write into ``rule.feedback`` lasts until then; the magnitudes
       :math:`|B_l^{(0)}|` are ``rule.magnitude`` (write there to change them).

    Taught in: {ref}`fa-family`.
    """

    def __init__(self, model: nn.Module, **options: Any):
        super().__init__(model, **options)
        self.magnitude = {k: self.init_magnitude(B) for k, B in self.feedback.items()}
        self.signs = SignedFeedback(self.layers, self.feedback, self.magnitude)

    def init_feedback(self, W: Tensor) -> Tensor:
        return torch.empty_like(W)  # written by self.signs

    def init_magnitude(self, W: Tensor) -> Tensor:
        return self.xavier_uniform(W).abs_()  # |B_l^(0)|, drawn once

    def update_feedback(self, new_step: bool) -> None:
        self.signs.update(new_step)  # B ← M_l ⊙ sign(W_l): every step, or W_l changed


@register("brsf", family=FAMILY, defaults=DEFAULTS, choices=CHOICES,
          summary="random magnitudes redrawn every step, signs of W")
@fill_doc(common_args=_COMMON_ARGS)
class BatchRandomSignFeedback(LayerwiseFeedbackRule):
    r"""Batch-random-magnitude sign feedback (brSF): new random sizes every step.

    .. math::
        R_l \sim \mathcal{U}(-\sqrt{3}\,c_l, \sqrt{3}\,c_l), \quad
        B_l \leftarrow |R_l| \odot \operatorname{sign}(W_l) \text{ every step},
        \quad \delta_l \leftarrow (B_{l+1}^\top \delta_{l+1}) \odot f'(a_l),
        \quad \nabla_{W_l} \leftarrow \delta_l h_{l-1}^\top

    with :math:`c_l` the layer's Xavier std. Moskovitz, Litwin-Kumar & Abbott
    (2018), https://arxiv.org/abs/1812.06488.

    Args:
        {common_args}

    Example:
        >>> import torch, fa_tutor as ft
        >>> model = ft.models.MLP(4, [8], 3)
        >>> rule = ft.make_rule("brsf", model, seed=0)
        >>> B0 = rule.feedback["layers.1.weight"].clone()
        >>> loss = rule.step(torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1]))
        >>> bool((B0 == rule.feedback["layers.1.weight"]).all())
        False

    .. note:: The magnitudes ``rule.magnitude`` are redrawn from
       ``rule.generator`` once at the start of every ``step``, into the same
       tensors; a bare ``forward`` keeps them and only follows the signs.

    Taught in: {ref}`fa-family`.
    """

    def __init__(self, model: nn.Module, **options: Any):
        super().__init__(model, **options)
        self.magnitude = {k: self.init_magnitude(B) for k, B in self.feedback.items()}
        self.signs = SignedFeedback(self.layers, self.feedback, self.magnitude)

    def init_feedback(self, W: Tensor) -> Tensor:
        return torch.empty_like(W)  # written by self.signs

    def init_magnitude(self, W: Tensor) -> Tensor:
        return self.xavier_uniform(W).abs_()

    def update_feedback(self, new_step: bool) -> None:
        if new_step:  # brSF: fresh |R_l|, drawn into the same tensors
            for M in self.magnitude.values():
                self.xavier_uniform(M, out=M).abs_()
        self.signs.update(new_step)  # B ← |R_l| ⊙ sign(W_l)
