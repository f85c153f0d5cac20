"""Route a model's weight layers to a rule's own handlers — without changing the model.

Layer-wise and direct rules never copy or convert the user's model.  While a
rule computes its update, a :class:`WeightOpMode` (a ``TorchFunctionMode``) is
active: every ``F.linear`` / ``F.conv2d`` call whose weight belongs to a
converted layer is handed to the rule's handler, which returns the same forward
value through an autograd Function whose backward is the rule's (the Functions
live with their rules: ``FeedbackLinear``/``FeedbackConv2d`` in :mod:`.feedback`,
``DirectFeedback`` in :mod:`.direct`).  This module only routes.  Outside that
context the model is plain PyTorch.  No module hooks, no re-created
Parameters, any input rank, every Conv2d option (``padding_mode`` pads before
``F.conv2d`` is called, so it is handled for free).

Layers the mechanism cannot see (a weight used through anything other than
``F.linear``/``F.conv2d``, e.g. inside ``nn.MultiheadAttention``) are found by
:func:`find_layers` before training, or by :meth:`WeightOpMode.check_all_seen`
after the first forward pass, and reported — never silently left as backprop.
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from ._torch_compat import leaves_reachable

log = logging.getLogger(__name__)

#: Layers whose weights a rule converts (their backward becomes the rule's).
CONVERTIBLE: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv2d)
#: Layers with elementwise (per-unit) parameters only: their exact local gradient
#: needs no weight transport, so every rule keeps it (as biotorch and the papers do).
ELEMENTWISE: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm,
    nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.RMSNorm,
)


@dataclass
class Layer:
    """A converted layer: its module name, the module and its weight's parameter name."""

    name: str
    module: nn.Module

    @property
    def weight_name(self) -> str:
        return f"{self.name}.weight" if self.name else "weight"

    @property
    def weight(self) -> Tensor:
        return self.module.weight


def find_layers(model: nn.Module, *, rule: str, unsupported: str = "error") -> list[Layer]:
    """The ``nn.Linear``/``nn.Conv2d`` layers of ``model`` in registration order.

    A module holding trainable parameters that is neither convertible nor
    elementwise raises ``ValueError`` (``unsupported="error"``) or warns and keeps
    its exact gradient (``unsupported="warn"``).
    """
    if unsupported not in ("error", "warn"):
        raise ValueError(f"unsupported={unsupported!r}; choose 'error' or 'warn'")
    layers: list[Layer] = []
    for name, module in model.named_modules():
        own = [p for p in module.parameters(recurse=False) if p.requires_grad]
        if type(module) in CONVERTIBLE:
            # frozen layers too: their W must not carry errors backwards either
            layers.append(Layer(name, module))
        elif own and not isinstance(module, ELEMENTWISE):
            kinds = ", ".join(t.__name__ for t in CONVERTIBLE)
            msg = (
                f"rule {rule!r} cannot convert layer {name!r} ({type(module).__name__}): "
                f"supported weight layers are {kinds} (normalization layers keep their exact "
                "local gradient). Pass unsupported='warn' to keep this layer's exact gradient "
                "with a warning, or freeze its parameters."
            )
            if unsupported == "error":
                raise ValueError(msg)
            warnings.warn(msg + " It keeps its exact (backprop) gradient.", stacklevel=3)
    if not layers:
        raise ValueError(f"rule {rule!r}: the model has no nn.Linear or nn.Conv2d layer")
    return layers


def as_pair(v: Any) -> list[int]:
    """An int or pair of ints (a conv option) as a list of two ints."""
    return [v, v] if isinstance(v, int) else list(v)


def conv_args(args: tuple, kwargs: dict) -> tuple[Tensor, Tensor, Tensor | None, Any, Any, Any, int]:
    """Bind an ``F.conv2d`` call to (x, W, b, stride, padding, dilation, groups)."""
    names = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
    defaults = (None, None, None, 1, 0, 1, 1)
    bound = dict(zip(names, defaults))
    bound.update(zip(names, args))
    bound.update(kwargs)
    return tuple(bound[n] for n in names)  # type: ignore[return-value]


def resolve_padding(x: Tensor, W: Tensor, padding: Any, stride: Any, dilation: Any) -> tuple[Tensor, Any]:
    """Turn ``'valid'``/``'same'`` into numbers, pre-padding ``x`` where 'same' is uneven.

    PyTorch pads an odd total ``dilation·(k−1)`` with the extra row/column at the
    bottom/right; so do we, so the forward value is identical to ``F.conv2d``.
    """
    if not isinstance(padding, str):
        return x, padding
    if padding == "valid":
        return x, 0
    if padding != "same":
        raise ValueError(f"conv padding {padding!r}; choose 'same', 'valid' or numbers")
    pads, sym = [], []
    for k, d in zip(W.shape[2:], as_pair(dilation)):
        total = d * (k - 1)
        sym.append(total // 2)
        pads.append(total - 2 * (total // 2))
    if any(pads):
        x = F.pad(x, [0, pads[1], 0, pads[0]])
    return x, sym


# -----------------------------------------------------------------------------
# The context that routes the model's weight ops through the handlers.
# -----------------------------------------------------------------------------
LinearHandler = Callable[[Layer, Tensor, Tensor, "Tensor | None"], Tensor]
ConvHandler = Callable[[Layer, Tensor, Tensor, "Tensor | None", Any, Any, Any, int], Tensor]

_LINEAR = F.linear
_CONV2D = F.conv2d


class WeightOpMode(TorchFunctionMode):
    """While active, ``F.linear``/``F.conv2d`` on a converted weight call ``self.linear``/``self.conv2d``.

    Subclasses (``_FeedbackMode``, ``lg_fa``'s) override the handlers; the
    defaults compute the plain op.  ``tracking.ActivityMode`` shares these
    methods and :func:`route` without subclassing.
    """

    def __init__(self, layers: list[Layer]):
        super().__init__()
        self.layers = {id(l.weight): l for l in layers}
        self.seen: set[str] = set()

    # default handlers: the ordinary ops (subclasses / rules override)
    def linear(self, layer: Layer, x: Tensor, W: Tensor, b: Tensor | None) -> Tensor:
        return F.linear(x, W, b)

    def conv2d(self, layer: Layer, x, W, b, stride, padding, dilation, groups) -> Tensor:
        return F.conv2d(x, W, b, stride, padding, dilation, groups)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        return route(self, func, args, kwargs or {})

    def check_all_seen(self, rule: str, outputs: list[Tensor],
                       required: set[str] | frozenset = frozenset()) -> bool:
        """After a forward pass: every converted layer the outputs depend on went through the rule.

        A layer never called through ``F.linear``/``F.conv2d`` is an error when its
        weight still reaches ``outputs`` through autograd (it was used another way,
        e.g. ``h @ fc.weight.T`` or inside ``nn.MultiheadAttention``); a layer the
        outputs don't depend on at all (an unused head) is fine: it gets a zero
        update, as under backprop.  Layers named in ``required`` (weight-perturbed
        layers, whose perturbation only a call through the rule applies) must be
        seen whatever the graph.  Returns whether the check could be made: False
        when a layer was not seen and the outputs carry no autograd graph (a pass
        under ``torch.no_grad()``), so the rule checks again on its next pass.
        Known gap: a *frozen* weight (``requires_grad=False``) used that way leaves
        no leaf in the graph and is not detected.
        """
        missing = [l for l in self.layers.values() if l.name not in self.seen]
        if not missing:
            return True
        graphs = [t for t in outputs if isinstance(t, Tensor) and t.grad_fn is not None]
        if not graphs and not any(l.name in required for l in missing):
            return False
        reachable = leaves_reachable(graphs, [l.weight for l in missing])
        missing = [l for l in missing if id(l.weight) in reachable or l.name in required]
        if missing:
            raise ValueError(
                f"rule {rule!r}: layer(s) {[l.name for l in missing]} were not called through "
                "F.linear/F.conv2d during the forward pass (e.g. used as `h @ layer.weight.T`, "
                "or a Linear inside nn.MultiheadAttention), so the rule cannot replace their "
                "backward. Restructure the model so its weight layers are called as modules."
            )
        return True


def route(mode: Any, func: Any, args: tuple, kwargs: dict) -> Any:
    """``F.linear``/``F.conv2d`` on a converted weight -> ``mode.linear``/``mode.conv2d``.

    The routing of every mode here (``WeightOpMode``, ``tracking.ActivityMode``):
    ``mode`` has ``layers`` (id of a weight -> Layer), ``seen`` and the two
    handlers; anything else runs unchanged.
    """
    if func is _LINEAR:
        W = args[1] if len(args) > 1 else kwargs["weight"]
        layer = mode.layers.get(id(W))
        if layer is not None:
            mode.seen.add(layer.name)
            x = args[0] if args else kwargs["input"]
            b = args[2] if len(args) > 2 else kwargs.get("bias")
            return mode.linear(layer, x, W, b)
    elif func is _CONV2D:
        x, W, b, stride, padding, dilation, groups = conv_args(args, kwargs)
        layer = mode.layers.get(id(W))
        if layer is not None:
            mode.seen.add(layer.name)
            x, padding = resolve_padding(x, W, padding, stride, dilation)
            return mode.conv2d(layer, x, W, b, stride, padding, dilation, groups)
    return func(*args, **kwargs)
