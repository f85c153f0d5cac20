r"""The forward pass of the direct rules (dfa, dkp, fdfa): cut after each hidden activity.

:class:`DirectPassMode` (an :class:`~fa_tutor.rules.tracking.ActivityMode`) finds each
hidden activity :math:`h_l = f(a_l)`, keeps it and hands the rest of the network
``h_l.detach()`` (a graph cut: no backward from layer :math:`l+1` into :math:`l`); for
fdfa it also perturbs the activity's tangent with :math:`u_l`.  :class:`DirectFeedback`,
one Function on the logits, then sends :math:`e` to the output layer and :math:`e B_l`
to each kept :math:`h_l`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch import Tensor

from .dual import written_out_dual
from .intercept import Layer
from .noise import gaussian
from .tracking import Activation, ActivityMode


class DirectFeedback(torch.autograd.Function):
    r"""Identity on the logits; backward: ``∂y ← e``, ``∂h_l ← e B_l``, ``∂B_l ← eᵀh_l``.

    Called as ``DirectFeedback.apply(y, B_1, …, B_k, h_1, …, h_k)``. The output
    layer sees the true error; each hidden activity :math:`h_l` gets the error
    projected through :math:`B_l`. The gradient for :math:`B_l` (computed only
    when :math:`B_l` requires grad, i.e. dkp) is the one a direct forward weight
    from :math:`h_l` to :math:`y` would get.
    """

    @staticmethod
    def forward(y: Tensor, *tensors: Tensor) -> Tensor:
        return y.view_as(y)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        ctx.k = (len(inputs) - 1) // 2
        ctx.save_for_backward(*inputs[1:])

    @staticmethod
    def backward(ctx: Any, e: Tensor):  # e: (N, *out_shape)
        Bs, hs = ctx.saved_tensors[:ctx.k], ctx.saved_tensors[ctx.k:]
        e2 = e.flatten(1)  # (N, K)
        grad_B, grad_h = [], []
        for i, (B, h) in enumerate(zip(Bs, hs)):
            B2 = B.reshape(e2.shape[1], -1)  # (K, n_l)
            # DFA: B_l where backprop would use the chain of weights above h_l
            grad_h.append((e2 @ B2).view_as(h))  # (N, *hidden)
            if ctx.needs_input_grad[1 + i]:  # dkp: a direct weight's gradient
                grad_B.append((e2.mT @ h.flatten(1)).view_as(B))  # (K, n_l)
            else:
                grad_B.append(None)
        return (e, *grad_B, *grad_h)  # the output layer gets the true error


class DirectPassMode(ActivityMode):
    """Keeps each hidden activity, cuts the graph after it, (fdfa) perturbs its tangent."""

    def __init__(self, layers: list[Layer], generator: torch.Generator | None):
        super().__init__(layers)
        self.generator = generator  # None: no perturbation (dfa, dkp, fdfa's forward)
        self.groups: dict[str, list[Layer]] = {}
        self.h: dict[str, Tensor] = {}  # key -> h_l, attached to layer l's graph
        self.u: dict[str, Tensor] = {}  # key -> u_l (fdfa)

    # fdfa: the weight ops' tangents by hand. PyTorch's own forward-mode formula also
    # multiplies by the (absent) weight tangent, which doubles the cost of the tangent.
    def linear(self, layer: Layer, x: Tensor, W: Tensor, b: Tensor | None) -> Tensor:
        x, x_t = fwAD.unpack_dual(x)
        out = F.linear(x, W, b)
        if x_t is None:
            return out
        return fwAD.make_dual(out, F.linear(x_t, W.detach()))

    def conv2d(self, layer: Layer, x, W, b, stride, padding, dilation, groups) -> Tensor:
        x, x_t = fwAD.unpack_dual(x)
        out = F.conv2d(x, W, b, stride, padding, dilation, groups)
        if x_t is None:
            return out
        return fwAD.make_dual(out, F.conv2d(x_t, W.detach(), None, stride, padding,
                                            dilation, groups))

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if self.generator is not None:  # a tangent pass: written-out normalization duals
            func = written_out_dual(func, args)
        return super().__torch_function__(func, types, args, kwargs)

    def hidden(self, layers: list[Layer], z: Tensor, act: Activation) -> Tensor:
        key = layers[0].weight_name
        if key in self.h:
            raise ValueError(
                f"layer {layers[0].name!r} forms two activities in one forward pass "
                "(a layer used twice); direct rules need one per layer")
        h = act(z)  # (N, *hidden)
        self.groups[key], self.h[key] = layers, h
        if self.generator is None:
            return h.detach()  # the cut: no backward from layer l+1 into layer l
        primal, tangent = fwAD.unpack_dual(h)
        u = gaussian(h.shape, self.generator, device=h.device, dtype=h.dtype)  # (N, *hidden)
        self.u[key] = u
        t = u if tangent is None else tangent.detach() + u  # ẏ = Σ_l J_l u_l
        return fwAD.make_dual(primal.detach(), t)


@dataclass
class DirectPass:
    logits: Tensor
    h: dict[str, Tensor]
    u: dict[str, Tensor] = field(default_factory=dict)
    ydot: Tensor | None = None
