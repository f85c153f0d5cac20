r"""Layer-wise feedback rules: the shared machinery, fa, adafa and kp (usf, frsf, brsf: :mod:`.sign_feedback`).

Each rule is backprop with one change: the error sent from layer :math:`l` to
the layer below goes through a feedback tensor :math:`B_l` (the shape of
:math:`W_l`) where backprop uses :math:`W_l` itself,

.. math::
    \delta_l \leftarrow (B_{l+1}^\top \delta_{l+1}) \odot f'(a_l), \qquad
    \nabla_{W_l} \leftarrow \delta_l h_{l-1}^\top .

The rules differ only in how :math:`B_l` is made (``init_feedback``) and
whether it follows :math:`W_l` (``feedback_for``, ``start_step``).  The backward itself is
here: ``FeedbackLinear``/``FeedbackConv2d``, whose input gradient uses
:math:`B_l`.  The model is never converted: while a rule runs the forward pass,
a ``WeightOpMode`` (:mod:`.intercept`) hands every ``F.linear``/``F.conv2d``
call on a converted weight to them together with that layer's :math:`B_l`
(after the first pass, through the layers' own ``forward``: ``WeightOpMode.routing``).
"""
from __future__ import annotations

import abc
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._torch_compat import apply_fn, cache_forward_signature, conv2d_backward
from .base import Rule, check_batch, fill_doc, register, rule_spec, xavier_bound
from .intercept import Layer, WeightOpMode, as_pair, find_layers

#: Shared Args text of every layer-wise rule docstring.
_COMMON_ARGS = """model: an ``nn.Module`` built from ``nn.Linear``/``nn.Conv2d``
            layers (normalization layers keep their exact local gradient).
        loss_fn: ``loss_fn(logits, y) -> scalar``; defaults to mean cross-entropy.
        seed: seeds the rule's generator (feedback draws); None draws one.
        unsupported: ``"error"`` (default): a layer with trainable weights the
            rule cannot convert raises ``ValueError``; ``"warn"``: it warns, and
            that layer keeps its exact gradient."""
DEFAULTS: dict[str, Any] = {"unsupported": "error"}
CHOICES: dict[str, tuple] = {"unsupported": ("error", "warn")}
FAMILY = "layer-wise feedback"


# -----------------------------------------------------------------------------
# The functional core: a weight layer whose input gradient uses B instead of W.
# -----------------------------------------------------------------------------
class FeedbackLinear(torch.autograd.Function):
    r"""``y = x Wᵀ + b``; backward: ``∂x ← δ B`` (B replaces W), ``∂W ← δᵀx`` exact.

    Works for any input rank ``(..., in)``, with ``torch.func`` (``jvp``, ``vmap``).
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, W: Tensor, b: Tensor | None, B: Tensor) -> Tensor:
        return F.linear(x, W, b)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        x, W, b, B = inputs
        ctx.save_for_backward(x, B)
        ctx.save_for_forward(x, W)
        ctx.has_bias = b is not None

    @staticmethod
    def backward(ctx: Any, delta: Tensor):  # delta: (..., out)
        x, B = ctx.saved_tensors
        need_x, need_W, need_b, _ = ctx.needs_input_grad
        grad_x = delta @ B if need_x else None  # (..., in)  the rule: B where backprop uses W
        if delta.dim() != 2:  # any leading dims: (N, out) and (N, in)
            delta, x = delta.reshape(-1, delta.shape[-1]), x.reshape(-1, x.shape[-1])
        grad_W = delta.mT @ x if need_W else None  # (out, in)
        grad_b = delta.sum(0) if ctx.has_bias and need_b else None  # (out,)
        return grad_x, grad_W, grad_b, None

    @staticmethod
    def jvp(ctx: Any, x_t: Tensor | None, W_t: Tensor | None, b_t: Tensor | None, B_t: Any) -> Tensor:
        x, W = ctx.saved_tensors
        out = torch.zeros(())
        if x_t is not None:
            out = out + F.linear(x_t, W)
        if W_t is not None:
            out = out + F.linear(x, W_t)
        if b_t is not None:
            out = out + b_t
        return out


class FeedbackConv2d(torch.autograd.Function):
    r"""``y = conv2d(x, W) + b``; backward: ``∂x ← conv2dᵀ(δ, B)`` (B replaces W), ``∂W`` exact.

    ``padding`` must be numeric here (string paddings are resolved by the caller).
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x, W, b, B, stride, padding, dilation, groups):
        return F.conv2d(x, W, b, stride, padding, dilation, groups)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, W, b, B, stride, padding, dilation, groups = inputs
        ctx.save_for_backward(x, B)
        ctx.save_for_forward(x, W)
        ctx.conv = (stride, padding, dilation, groups)
        ctx.bias_sizes = None if b is None else [b.shape[0]]

    @staticmethod
    def backward(ctx, delta):
        x, B = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conv
        need = ctx.needs_input_grad
        # One fused kernel: the input gradient is computed with B (the rule), the weight
        # gradient from δ and x only (it never reads the weight values), as in backprop.
        grad_x, grad_W, grad_b = conv2d_backward(
            delta, x, B, ctx.bias_sizes is not None, as_pair(stride), as_pair(padding),
            as_pair(dilation), groups,
            [need[0], need[1], ctx.bias_sizes is not None and need[2]],
        )
        return grad_x, grad_W, grad_b, None, None, None, None, None

    @staticmethod
    def jvp(ctx, x_t, W_t, b_t, B_t, *_):
        x, W = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conv
        out = torch.zeros(())
        if x_t is not None:
            out = out + F.conv2d(x_t, W, None, stride, padding, dilation, groups)
        if W_t is not None:
            out = out + F.conv2d(x, W_t, None, stride, padding, dilation, groups)
        if b_t is not None:
            out = out + b_t[:, None, None]
        return out


# torch.autograd.Function.apply inspects the signature of forward on every call; caching
# it removes ~40 µs of Python overhead per layer per step. Outside torch.func transforms
# the eager twins (same code, combined forward; apply_fn) skip even the argument binding.
for _fn in (FeedbackLinear, FeedbackConv2d):
    cache_forward_signature(_fn)


def feedback_of(B: Tensor, layer: Layer, W: Tensor) -> Tensor:
    """Layer's B, checked against its weight W (shape, dtype, device), detached.

    The one check every mode that runs ``FeedbackLinear``/``FeedbackConv2d`` uses
    (the layer-wise rules here, ``lg_fa`` in :mod:`.local`).
    """
    if B.shape != W.shape or B.device != W.device or B.dtype != W.dtype:
        raise ValueError(
            f"feedback {layer.weight_name!r} is {tuple(B.shape)} {B.dtype} on "
            f"{B.device}, its weight {tuple(W.shape)} {W.dtype} on {W.device}; "
            "build the rule after moving the model (model.to(...))."
        )
    return B.detach()  # kp's B is a leaf: step writes its .grad, not autograd


class _FeedbackMode(WeightOpMode):
    """Runs each converted layer's op through the Function that uses its B.

    A layer whose input takes no gradient (the input layer: no error is sent below
    it) runs the plain op: its weight's gradient δᵀx is the same either way, and its
    B is neither needed nor asked for (the sign rules then skip writing it).
    """

    def __init__(self, layers: list[Layer], feedback_for: Callable[[Layer], Tensor]):
        super().__init__(layers)
        self.feedback_for = feedback_for

    def linear(self, layer, x, W, b):
        if not x.requires_grad:  # no error goes below this layer: nothing for B to do
            return F.linear(x, W, b)
        B = feedback_of(self.feedback_for(layer), layer, W)
        return apply_fn(FeedbackLinear, x, W, b, B)  # B replaces W

    def conv2d(self, layer, x, W, b, stride, padding, dilation, groups):
        if not x.requires_grad:
            return F.conv2d(x, W, b, stride, padding, dilation, groups)
        B = feedback_of(self.feedback_for(layer), layer, W)  # B replaces W in the backward pass
        return apply_fn(FeedbackConv2d, x, W, b, B, stride, padding, dilation, groups)


class LayerwiseFeedbackRule(Rule):
    """Find the layers, make one B per weight once, run the forward with the B's.

    A subclass defines ``init_feedback(W) -> B`` (once per layer, at
    construction) and, if B follows W, ``feedback_for(layer)``, which brings
    that layer's B up to date in place when the forward pass uses it, and
    ``start_step()`` for what each step must redo (the sign rules).
    """

    def __init__(self, model: nn.Module, *, loss_fn=None, seed: int | None = None,
                 **options: Any):  # checked by make_rule against the registry's defaults
        super().__init__(model, loss_fn=loss_fn, seed=seed)
        self.options = {**rule_spec(self.name).defaults, **options}
        self.layers = find_layers(model, rule=self.name,
                                  unsupported=self.options["unsupported"])
        with torch.no_grad():
            for layer in self.layers:
                W = layer.weight.detach()
                self._feedback[layer.weight_name] = self.init_feedback(W)
        self._mode = _FeedbackMode(self.layers, self.feedback_for)

    @abc.abstractmethod
    def init_feedback(self, W: Tensor) -> Tensor:
        """B_l for a layer with weight ``W`` (called once per layer, at construction)."""

    def start_step(self) -> None:
        """Called at the start of every ``step``, for B's that follow W (written when the
        forward pass uses them, :meth:`feedback_for`). Fixed-B rules: nothing to do."""

    def feedback_for(self, layer: Layer) -> Tensor:
        """The B the forward pass uses for ``layer`` (asked only where an error goes below it)."""
        return self._feedback[layer.weight_name]

    def xavier_uniform(self, W: Tensor, out: Tensor | None = None) -> Tensor:
        """A U(-a, a) draw, a = √3·c (:func:`.base.xavier_bound`), by ``self.generator``."""
        a = xavier_bound(W.shape)
        out = torch.empty_like(W) if out is None else out
        return out.uniform_(-a, a, generator=self.generator)

    def forward(self, x: Tensor) -> Tensor:
        """The model's output; its backward sends the errors down through the B's."""
        with self._mode.routing():
            out = self.model(x)
        self._mode.check_all_seen(self.name, [out])  # every converted layer went through B? (once)
        return out

    __call__ = forward

    def _compute_grads(self, x: Tensor, y: Tensor) -> Tensor:
        check_batch(x, y)
        self.start_step()
        loss = self.loss_fn(self.forward(x), y)
        self._write_grads(loss, [p for _, p in self._trainable()])
        return loss


@register("fa", family=FAMILY, defaults=DEFAULTS, choices=CHOICES,
          summary="fixed random feedback B (Lillicrap et al. 2016)")
@fill_doc(common_args=_COMMON_ARGS)
class FeedbackAlignment(LayerwiseFeedbackRule):
    r"""Feedback alignment: a fixed random matrix carries the error backwards.

    .. math::
        B_l \sim \mathcal{U}(-\sqrt{3}\,c_l, \sqrt{3}\,c_l) \text{ once}, \qquad
        \delta_l \leftarrow (B_{l+1}^\top \delta_{l+1}) \odot f'(a_l), \qquad
        \nabla_{W_l} \leftarrow \delta_l h_{l-1}^\top

    with :math:`c_l = \sqrt{2/(\text{fan\_in}+\text{fan\_out})}` (Xavier-uniform).
    Lillicrap, Cownden, Tweed & Akerman (2016), "Random synaptic feedback weights
    support error backpropagation for deep learning",
    https://arxiv.org/abs/1411.0247.

    Args:
        {common_args}

    Example:
        >>> import torch, fa_tutor as ft
        >>> model = ft.models.MLP(4, [8], 3)
        >>> rule = ft.make_rule("fa", model, seed=0)
        >>> rule
        FeedbackAlignment(name='fa', seed=0, unsupported='error')
        >>> loss = rule.step(torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1]))
        >>> sorted(rule.feedback)
        ['layers.0.weight', 'layers.1.weight']

    .. note:: Every converted layer gets a :math:`B_l`, the first one too (it
       only shapes the gradient with respect to the input). The output layer's
       own update is its exact gradient; biases and normalization parameters
       keep their exact local gradients.

    Taught in: {ref}`fa-family`.
    """

    def init_feedback(self, W: Tensor) -> Tensor:
        return self.xavier_uniform(W)


@register("adafa", family=FAMILY, label="adaFA", defaults=DEFAULTS, choices=CHOICES,
          summary="feedback fixed at the initial weights, B = W(0)")
@fill_doc(common_args=_COMMON_ARGS)
class AdaptiveFeedbackAlignment(LayerwiseFeedbackRule):
    r"""adaFA: feedback alignment whose fixed B starts equal to the forward weights.

    .. math::
        B_l \leftarrow W_l(0) \text{ once}, \qquad
        \delta_l \leftarrow (B_{l+1}^\top \delta_{l+1}) \odot f'(a_l), \qquad
        \nabla_{W_l} \leftarrow \delta_l h_{l-1}^\top

    so the first step is exactly backprop, and later steps drift from it as
    :math:`W_l(t)` moves away from :math:`W_l(0)`. Boopathy & Fiete (2022), "How
    to train your wide neural network without backprop: an input-weight
    alignment perspective", https://arxiv.org/abs/2106.06651; called adaFA by
    Robertson & Koyejo (2024), following Boopathy & Fiete, https://arxiv.org/abs/2306.01870.

    Args:
        {common_args}

    Example:
        >>> import torch, fa_tutor as ft
        >>> model = ft.models.MLP(4, [8], 3)
        >>> rule = ft.make_rule("adafa", model)
        >>> W, B = model.layers[1].weight, rule.feedback["layers.1.weight"]
        >>> bool((B == W).all())
        True

    .. note:: :math:`B_l` copies the weights when the rule is built: build the
       rule right after initialising the model.

    Taught in: {ref}`fa-family`.
    """

    def init_feedback(self, W: Tensor) -> Tensor:
        return W.clone()


@register("kp", family=FAMILY, defaults=DEFAULTS, choices=CHOICES, learned_feedback=True,
          summary="Kolen–Pollack: B gets W's update and weight decay")
@fill_doc(common_args=_COMMON_ARGS)
class KolenPollack(LayerwiseFeedbackRule):
    r"""Kolen–Pollack: B gets the same update (and weight decay) as W, so they meet.

    .. math::
        \delta_l \leftarrow (B_{l+1}^\top \delta_{l+1}) \odot f'(a_l), \qquad
        \nabla_{W_l} \leftarrow \delta_l h_{l-1}^\top, \qquad
        \nabla_{B_l} \leftarrow \nabla_{W_l}

    With SGD at rate :math:`\eta` and weight decay :math:`\lambda` on both,
    :math:`W_l - B_l \leftarrow (1 - \eta\lambda)(W_l - B_l)`: the difference
    decays and B becomes W without a weight ever being copied. Akrout, Wilson,
    Humphreys, Lillicrap & Tweed (2019), "Deep learning without weight
    transport", https://arxiv.org/abs/1904.05391.

    Args:
        {common_args}

    Example:
        >>> import torch, fa_tutor as ft
        >>> model = ft.models.MLP(4, [8], 3)
        >>> rule = ft.make_rule("kp", model, seed=0)
        >>> opt = torch.optim.SGD([*model.parameters(), *rule.parameters()],
        ...                       lr=0.1, weight_decay=1e-3)
        >>> loss = rule.step(torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1]))
        >>> W, B = model.layers[1].weight, rule.feedback["layers.1.weight"]
        >>> bool((B.grad == W.grad).all())
        True
        >>> opt.step()

    .. note:: :math:`B_l` starts Xavier-uniform random. ``step`` only writes
       ``B.grad``; the optimizer applies it, so give ``rule.parameters()`` to
       the model's optimizer (same learning rate, same weight decay).

    Taught in: {ref}`fa-family`.
    """

    def __init__(self, model: nn.Module, **options: Any):
        super().__init__(model, **options)
        self._grad_buffers: dict[str, Tensor] = {}  # B's gradients, kept between steps

    def init_feedback(self, W: Tensor) -> Tensor:
        return self.xavier_uniform(W).requires_grad_(True)

    def parameters(self) -> list[Tensor]:
        return list(self._feedback.values())

    def _compute_grads(self, x: Tensor, y: Tensor) -> Tensor:
        loss = super()._compute_grads(x, y)
        for layer in self.layers:  # KP: B's gradient is W's (none for a frozen W)
            g, name = layer.weight.grad, layer.weight_name
            self._feedback[name].grad = None if g is None else self._copy_of(name, g)
        return loss

    def _copy_of(self, name: str, g: Tensor) -> Tensor:
        """``g`` copied into a buffer kept for B's gradient (as ``.grad`` itself is kept
        by ``zero_grad(set_to_none=False)``): no fresh weight-sized memory every step."""
        buffer = self._grad_buffers.get(name)
        if buffer is None or buffer.shape != g.shape or buffer.dtype != g.dtype:
            buffer = self._grad_buffers[name] = torch.empty_like(g)
        return buffer.copy_(g)
