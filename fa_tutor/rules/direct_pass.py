r"""The forward pass of the direct rules (dfa, dkp, fdfa): cut after each hidden activity.

:class:`DirectPassMode` (an :class:`~fa_tutor.rules.tracking.ActivityMode`) finds each
hidden activity :math:`h_l = f(a_l)`, keeps it and hands the rest of the network
``h_l.detach()`` (a graph cut: no backward from layer :math:`l+1` into :math:`l`); for
fdfa it also perturbs the activity's tangent with :math:`u_l`.  The rule's backward,
``DirectFeedback`` in :mod:`.direct`, then sends :math:`e` to the output layer and
:math:`e B_l` to each kept :math:`h_l`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch import Tensor

from .dual import written_out_dual
from .intercept import Layer
from .noise import gaussian
from .tracking import Activation, ActivityMode


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
