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

Once a pass has shown that every such call came from the weight's own module
(and :meth:`WeightOpMode.check_all_seen` passed), :meth:`WeightOpMode.routing`
routes the later passes more cheaply: it sets each converted module's ``forward``
to the handler for the duration of the pass (an instance attribute, removed
afterwards), so the handlers run without a mode's dispatch on every op of the
model. Where a converted weight is also used outside its module (weight tying
through ``F.linear``), every pass stays under the mode.

Layers the mechanism cannot see (a weight used through anything other than
``F.linear``/``F.conv2d``, e.g. inside ``nn.MultiheadAttention``) are found by
:func:`find_layers` before training, or by :meth:`WeightOpMode.check_all_seen`
after the first forward pass, and reported — never silently left as backprop.
"""
from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Callable, Iterator

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
        self.checked = False  # check_all_seen has passed
        #: layers whose weight went through F.linear/F.conv2d outside its own module's
        #: forward (or whose module already has an instance ``forward``): no direct routing
        self.foreign: set[str] = set()
        self._inside: Layer | None = None  # the layer whose own forward runs (recording)

    # default handlers: the ordinary ops (subclasses / rules override)
    def linear(self, layer: Layer, x: Tensor, W: Tensor, b: Tensor | None) -> Tensor:
        return F.linear(x, W, b)

    def conv2d(self, layer: Layer, x, W, b, stride, padding, dilation, groups) -> Tensor:
        return F.conv2d(x, W, b, stride, padding, dilation, groups)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        return route(self, func, args, kwargs or {})

    def saw(self, layer: Layer) -> None:
        """:func:`route` hands ``layer``'s op to a handler: mark it seen and, while
        recording, note a call from outside the layer's own module."""
        self.seen.add(layer.name)
        if not self.checked and layer is not self._inside:
            self.foreign.add(layer.name)

    @property
    def direct(self) -> bool:
        """Whether :meth:`routing` sets the modules' ``forward`` instead of entering the mode."""
        return self.checked and not self.foreign

    @contextmanager
    def routing(self) -> Iterator["WeightOpMode"]:
        """The context in which the model's forward pass runs through the handlers.

        Until :meth:`check_all_seen` has passed, the mode itself routes (every
        ``F.linear``/``F.conv2d`` on a converted weight, wherever it is called) and
        records which calls came from outside the weight's own module. After that,
        if none did, each converted module's ``forward`` is set to its handler for
        the duration of the pass: the same handlers and values, without the mode's
        dispatch on every op of the model.
        """
        layers = list(self.layers.values())
        # a forward the user set on a module is theirs: those passes stay under the mode
        self.foreign.update(l.name for l in layers if "forward" in vars(l.module))
        if self.direct:
            # made per pass (not stored): a deep copy of the rule then routes its own layers
            patches, context = {l.module: _direct_forward(self, l) for l in layers}, nullcontext()
        elif not self.checked:  # recording: mark each module's own calls
            patches = {l.module: _recording_forward(self, l) for l in layers
                       if l.name not in self.foreign}
            context = self
        else:
            patches, context = {}, self
        for module, forward in patches.items():  # plain instance attributes: skip
            vars(module)["forward"] = forward      # nn.Module.__setattr__'s checks
        try:
            with context:
                yield self
        finally:
            for module in patches:
                del vars(module)["forward"]

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
        under ``torch.no_grad()``), so the rule checks again on its next pass;
        once it has passed, it returns True at once (rules call it after every pass).
        Known gap: a *frozen* weight (``requires_grad=False``) used that way leaves
        no leaf in the graph and is not detected.
        """
        if self.checked:  # it passed once: a later pass runs the same layers
            return True
        missing = [l for l in self.layers.values() if l.name not in self.seen]
        if not missing:
            self.checked = True
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
        self.checked = True
        return True


def route(mode: Any, func: Any, args: tuple, kwargs: dict) -> Any:
    """``F.linear``/``F.conv2d`` on a converted weight -> ``mode.linear``/``mode.conv2d``.

    The routing of every mode here (``WeightOpMode``, ``tracking.ActivityMode``):
    ``mode`` has ``layers`` (id of a weight -> Layer), ``saw(layer)`` (called for each
    routed op) and the two handlers; anything else runs unchanged.
    """
    if func is _LINEAR:
        W = args[1] if len(args) > 1 else kwargs["weight"]
        layer = mode.layers.get(id(W))
        if layer is not None:
            mode.saw(layer)
            x = args[0] if args else kwargs["input"]
            b = args[2] if len(args) > 2 else kwargs.get("bias")
            return mode.linear(layer, x, W, b)
    elif func is _CONV2D:
        x, W, b, stride, padding, dilation, groups = conv_args(args, kwargs)
        layer = mode.layers.get(id(W))
        if layer is not None:
            mode.saw(layer)
            x, padding = resolve_padding(x, W, padding, stride, dilation)
            return mode.conv2d(layer, x, W, b, stride, padding, dilation, groups)
    return func(*args, **kwargs)


def _recording_forward(mode: WeightOpMode, layer: Layer) -> Callable[[Tensor], Tensor]:
    """``layer``'s own class forward, run with ``mode._inside`` set to it (recording passes)."""
    module, own = layer.module, type(layer.module).forward

    def forward(x: Tensor) -> Tensor:
        outer, mode._inside = mode._inside, layer
        try:
            return own(module, x)
        finally:
            mode._inside = outer

    return forward


def _direct_forward(mode: WeightOpMode, layer: Layer) -> Callable[[Tensor], Tensor]:
    """``nn.Linear.forward`` / ``nn.Conv2d.forward`` with the op handed to ``mode``'s handler.

    The same arguments the module's own forward passes to ``F.linear``/``F.conv2d``
    (a non-zero ``padding_mode`` pads first, then convolves with padding 0), then
    what :func:`route` does with them.
    """
    module = layer.module
    if isinstance(module, nn.Linear):
        def forward(x: Tensor) -> Tensor:
            return mode.linear(layer, x, module.weight, module.bias)
        return forward

    def forward(x: Tensor) -> Tensor:  # nn.Conv2d
        W, padding = module.weight, module.padding
        if module.padding_mode != "zeros":
            x = F.pad(x, module._reversed_padding_repeated_twice, mode=module.padding_mode)
            padding = 0
        x, padding = resolve_padding(x, W, padding, module.stride, module.dilation)
        return mode.conv2d(layer, x, W, module.bias, module.stride, padding, module.dilation,
                           module.groups)
    return forward
