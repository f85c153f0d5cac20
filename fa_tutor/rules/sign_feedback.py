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
from .base import fill_doc, register, xavier_bound, xavier_std
from .feedback import _COMMON_ARGS, CHOICES, DEFAULTS, FAMILY, LayerwiseFeedbackRule
from .intercept import Layer

_SCALE_ARG = r"""scale: ``True`` (default): :math:`c_l` is the layer's Xavier std
            :math:`\sqrt{2/(\text{fan\_in}+\text{fan\_out})}` (biotorch's uSF);
            ``False``: :math:`c_l = 1`, the theory's sign-FA."""


class SignedFeedback:
    r"""What usf, frsf and brsf share: :math:`B_l = M_l \odot \operatorname{sign}(W_l)`,
    written in place when :math:`B_l` is used or read and :math:`W_l` or :math:`M_l`
    changed since its last write.

    A mixin (listed before :class:`LayerwiseFeedbackRule` in a rule's bases); each rule
    sets its magnitude :math:`M_l` (``init_magnitude``): a scalar :math:`c_l` (usf) or a
    tensor (frsf, brsf), kept in ``rule.magnitude``. The forward pass asks for a
    :math:`B_l` only where an error goes below layer :math:`l`, so the input layer's is
    written only when ``rule.feedback`` is read. Only ``out=`` ops write B, so this
    also runs inside ``torch.func`` transforms; skipping the write while nothing
    changed keeps graphs that saved B valid.
    """

    def __init__(self, model: nn.Module, **options: Any):
        super().__init__(model, **options)  # the layers, one (unwritten) B per weight
        self.magnitude = {k: self.init_magnitude(B) for k, B in self._feedback.items()}
        self.written: dict[str, tuple[int | None, int | None]] = {}  # versions of W_l, M_l at the write

    def init_feedback(self, W: Tensor) -> Tensor:
        return torch.empty_like(W)  # written by write()

    def write(self, layer: Layer) -> None:
        name = layer.weight_name
        B, M = self._feedback[name], self.magnitude[name]
        torch.sign(layer.weight, out=B)  # (out, in, ...), no new tensor
        torch.mul(B, M, out=B)  # B ← M ⊙ sign(W)

    def current(self, layer: Layer) -> Tensor:
        """Layer's B, rewritten first if W_l or M_l changed (always, if torch cannot tell)."""
        M = self.magnitude[layer.weight_name]
        stamp = (version(layer.weight), version(M) if isinstance(M, Tensor) else 0)
        if stamp != self.written.get(layer.weight_name) or stamp[0] is None:
            with torch.no_grad():
                self.write(layer)
            self.written[layer.weight_name] = stamp
        return self._feedback[layer.weight_name]

    def start_step(self) -> None:
        self.written.clear()  # a step rewrites every B it uses, whatever the version counters say

    feedback_for = current  # the forward pass asks for B_l only where an error goes below l

    def refresh_feedback(self) -> None:
        for layer in self.layers:  # a read only writes: it never draws (brsf)
            self.current(layer)


@register("usf", family=FAMILY, label="uSF", defaults={**DEFAULTS, "scale": True},
          choices=CHOICES,
          summary="sign feedback B = c·sign(W), recomputed every step")
@fill_doc(common_args=_COMMON_ARGS, scale_arg=_SCALE_ARG)
class UniformSignFeedback(SignedFeedback, LayerwiseFeedbackRule):
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
       :math:`W_l`, into the same tensor, whenever it is used or read after
       :math:`W_l` changed (every ``step``), so ``rule.feedback`` stays live;
       :math:`\operatorname{sign}(0) = 0`.

    Taught in: {ref}`fa-family`.
    """

    def init_magnitude(self, W: Tensor) -> float:
        return xavier_std(W.shape) if self.options["scale"] else 1.0


@register("frsf", family=FAMILY, label="frSF", defaults=DEFAULTS, choices=CHOICES,
          summary="fixed random magnitudes with the signs of W")
@fill_doc(common_args=_COMMON_ARGS)
class FixedRandomSignFeedback(SignedFeedback, LayerwiseFeedbackRule):
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

    .. note:: :math:`B_l` is rewritten in place from the current :math:`W_l`
       whenever it is used or read after :math:`W_l` changed (every ``step``), so
       a write into ``rule.feedback`` lasts until then; the magnitudes
       :math:`|B_l^{(0)}|` are ``rule.magnitude`` (write there to change them).

    Taught in: {ref}`fa-family`.
    """

    def init_magnitude(self, W: Tensor) -> Tensor:
        return self.xavier_uniform(W).abs_()  # |B_l^(0)|, drawn once


@register("brsf", family=FAMILY, label="brSF", defaults=DEFAULTS, choices=CHOICES,
          summary="random magnitudes redrawn every step, signs of W")
@fill_doc(common_args=_COMMON_ARGS)
class BatchRandomSignFeedback(SignedFeedback, LayerwiseFeedbackRule):
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
       ``rule.generator`` once in every ``step``, into the same
       tensors; a bare ``forward`` keeps them and only follows the signs. Each
       :math:`|R_l|` is drawn when the step first uses :math:`B_l`, so a layer
       whose :math:`B_l` the step never uses (the input layer, which sends no
       error below it) costs no draw.

    Taught in: {ref}`fa-family`.
    """

    def __init__(self, model: nn.Module, **options: Any):
        super().__init__(model, **options)
        self.due: set[str] = set()  # the layers whose |R_l| this step has not drawn yet

    def init_magnitude(self, W: Tensor) -> Tensor:
        return self.draw_magnitude(torch.empty_like(W))

    def draw_magnitude(self, M: Tensor) -> Tensor:
        """|R_l| into ``M``: one draw from U(0, √3·c_l), the law of |U(-√3·c_l, √3·c_l)|."""
        return M.uniform_(0.0, xavier_bound(M.shape), generator=self.generator)

    def start_step(self) -> None:
        super().start_step()
        self.due = set(self.magnitude)  # brSF: a fresh |R_l| per layer, drawn when the step first uses B_l

    def feedback_for(self, layer: Layer) -> Tensor:
        if layer.weight_name in self.due:
            self.draw_magnitude(self.magnitude[layer.weight_name])
            self.due.discard(layer.weight_name)
        return self.current(layer)
