"""Find, inside any model, where each weight layer's activity ``h_l = σ(a_l)`` is formed.

Direct rules (DFA, DKP, FDFA) inject an error at each hidden layer's activity,
and activity-perturbed forward gradients perturb each layer's pre-activation.
Both need to know, for an arbitrary ``nn.Module``, which tensor is layer
``l``'s pre-activation and which its activity.  :class:`ActivityMode` follows
the output of every converted ``F.linear``/``F.conv2d`` through the operations
that come after it (normalization, residual additions, reshapes) and, at the
first activation function applied to it, hands the pre-activation ``z`` and
the activation to :meth:`ActivityMode.hidden`, which decides what the rest of
the network sees.  A tagged tensor that enters the next weight layer with no
activation in between is treated as passing through the identity activation.
The tags left on the model's output name the output layer(s).

Subclasses override :meth:`hidden`; the default computes the plain activation,
so the forward value is always the model's own.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

from ._torch_compat import weak_id_key_dict
from .intercept import _CONV2D, _LINEAR, Layer, WeightOpMode, route

#: activation functions as the mode sees them (Python-level F.* and tensor methods)
ACTIVATIONS: frozenset = frozenset({
    F.relu, torch.relu, Tensor.relu, F.leaky_relu, torch.tanh, F.tanh, Tensor.tanh,
    torch.sigmoid, F.sigmoid, Tensor.sigmoid, F.gelu, F.elu, F.selu, F.silu, F.softplus,
    F.hardtanh, F.relu6, F.mish, F.hardswish,
})
#: in-place variants mapped to their out-of-place twins (the rule must see z intact)
IN_PLACE: dict[Any, Any] = {
    F.relu_: F.relu, torch.relu_: torch.relu, Tensor.relu_: Tensor.relu,
    F.leaky_relu_: F.leaky_relu, torch.tanh_: torch.tanh, Tensor.tanh_: Tensor.tanh,
    torch.sigmoid_: torch.sigmoid, Tensor.sigmoid_: Tensor.sigmoid, F.elu_: F.elu,
}
_INPLACE_ARG = {F.relu: 1, F.leaky_relu: 2, F.elu: 2, F.selu: 1, F.silu: 1, F.hardtanh: 3,
                F.relu6: 1, F.mish: 1, F.hardswish: 1}

Activation = Callable[[Tensor], Tensor]
#: Activations whose derivative is the 0/1 mask [z > 0] (PyTorch's relu'(0) = 0).
RELUS: frozenset = frozenset({F.relu, torch.relu, Tensor.relu})


def is_relu(act: Activation) -> bool:
    """Whether ``act`` (as passed to ``hidden``) is a plain ReLU."""
    return getattr(act, "base", None) in RELUS


def _out_of_place(func: Any, args: tuple, kwargs: dict) -> tuple[Any, tuple, dict]:
    func = IN_PLACE.get(func, func)
    if kwargs.get("inplace"):
        kwargs = {**kwargs, "inplace": False}
    pos = _INPLACE_ARG.get(func)
    if pos is not None and len(args) > pos and args[pos] is True:
        args = (*args[:pos], False, *args[pos + 1:])
    return func, args, kwargs


class ActivityMode(TorchFunctionMode):
    """Tags each converted layer's output and calls :meth:`hidden` where its activation is applied.

    It routes the weight ops exactly as ``WeightOpMode`` does (the same methods and
    :func:`~fa_tutor.rules.intercept.route`), without subclassing it, so that the
    modes built on it are one level below it, two below ``TorchFunctionMode``.
    """

    def __init__(self, layers: list[Layer]):
        super().__init__()
        self.layers = {id(l.weight): l for l in layers}
        self.seen: set[str] = set()
        self.checked = False  # check_all_seen has passed
        self.tags = weak_id_key_dict()  # tensor -> [Layer, ...], keys held weakly
        self.order: list[str] = []  # hidden layers in the order their activity formed

    # the weight-op handlers (overridden by the modes built on this one) and the check
    linear = WeightOpMode.linear
    conv2d = WeightOpMode.conv2d
    check_all_seen = WeightOpMode.check_all_seen

    def saw(self, layer: Layer) -> None:
        """:func:`~fa_tutor.rules.intercept.route` hands ``layer``'s op to a handler."""
        self.seen.add(layer.name)

    # -- to override ------------------------------------------------------------
    def hidden(self, layers: list[Layer], z: Tensor, act: Activation) -> Tensor:
        """Layer(s) ``layers`` have pre-activation ``z``; return what the network continues with.

        ``act`` is the activation (identity when the next weight layer came first).
        ``layers[0]`` is the layer that owns the activity (the first executed).
        """
        return act(z)

    # -- bookkeeping ------------------------------------------------------------
    def output_layers(self, out: Tensor) -> list[Layer]:
        """The layer(s) whose pre-activation is the model output (they get the true error)."""
        return list(self.tags.get(out, []))

    def _tags_of(self, args: tuple, kwargs: dict) -> list[Layer]:
        found: list[Layer] = []
        for a in (*args, *kwargs.values()):
            items = a if isinstance(a, (list, tuple)) else (a,)
            for t in items:
                if isinstance(t, Tensor):
                    for layer in self.tags.get(t, ()):
                        if layer not in found:
                            found.append(layer)
        return found

    def _close(self, layers: list[Layer], z: Tensor, act: Activation) -> Tensor:
        self.order.append(layers[0].name)
        return self.hidden(layers, z, act)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is _LINEAR or func is _CONV2D:
            x = args[0] if args else kwargs["input"]
            pending = self.tags.get(x) if isinstance(x, Tensor) else None
            if pending:  # previous layer had no activation: identity
                x = self._close(list(pending), x, lambda z: z)
                args = (x, *args[1:]) if args else args
                if not args:
                    kwargs = {**kwargs, "input": x}
            out = route(self, func, args, kwargs)
            W = args[1] if len(args) > 1 else kwargs["weight"]
            layer = self.layers.get(id(W))
            if layer is not None and isinstance(out, Tensor):
                self.tags[out] = [layer]
            return out
        base = IN_PLACE.get(func, func)
        tagged = self._tags_of(args, kwargs)
        if base in ACTIVATIONS and tagged:
            f, a, k = _out_of_place(func, args, kwargs)
            z, rest = a[0], a[1:]
            act = lambda t: f(t, *rest, **k)  # noqa: E731
            act.base = base  # type: ignore[attr-defined]  (lets hidden() special-case ReLU)
            return self._close(tagged, z, act)
        out = func(*args, **kwargs)
        if tagged:
            if isinstance(out, Tensor):
                self.tags[out] = tagged
            elif isinstance(out, (list, tuple)):
                for o in out:
                    if isinstance(o, Tensor):
                        self.tags[o] = tagged
        return out
