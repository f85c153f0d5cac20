"""The one interface every learning rule shares, and the registry behind ``make_rule``.

A rule is to a model what a ``torch.optim`` optimizer is to its parameters: it
is built once, then ``rule.step(x, y)`` writes the rule's update direction into
``p.grad`` of every trainable parameter (gradient convention, overwritten,
never accumulated) and returns the detached batch loss.  Any optimizer then
applies it::

    rule = make_rule("fa", model, seed=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    optimizer.zero_grad(set_to_none=True)
    loss = rule.step(x, y)
    optimizer.step()

Adding a rule is one class plus one ``@register`` line.
"""
from __future__ import annotations

import abc
import hashlib
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._torch_compat import OutOfMemoryError, quiet_forward_ad

log = logging.getLogger(__name__)

LossFn = Callable[[Tensor, Tensor], Tensor]


class BatchShapeError(ValueError):
    """A batch whose shapes the model's layers or the loss cannot take (PyTorch's message attached)."""


class NonFiniteLossError(ValueError, FloatingPointError):
    """Raised when a rule's batch loss is NaN or infinite (a diverged run, or bad data)."""


@dataclass(frozen=True)
class RuleSpec:
    """One registry entry: data the tests, the CLI and the book enumerate."""

    name: str
    cls: type["Rule"]
    family: str  # "backprop", "layer-wise feedback", "direct feedback", "forward gradient", "local loss"
    summary: str
    learned_feedback: bool = False  # True when rule.parameters() is non-empty
    needs_local_losses: bool = False  # lg_* rules: the model must define local losses
    stochastic: bool = False  # the update is a random estimate (forward gradients)
    #: every option the rule takes, with its default; an option's type is its default's
    defaults: dict[str, Any] = field(default_factory=dict)
    #: the allowed values of the options that take one of a few
    choices: dict[str, tuple] = field(default_factory=dict)
    #: the name as the papers write it (tables, figures): "uSF", "FG-W"; set by :func:`register`
    label: str = ""


_REGISTRY: dict[str, RuleSpec] = {}


def register(name: str, *, family: str, summary: str, label: str | None = None,
             **flags: Any) -> Callable[[type], type]:
    """Class decorator adding a rule to the registry under ``name``.

    ``label``: the rule's name as the papers write it; by default ``name`` in capitals
    with hyphens (``fg_w`` -> ``FG-W``).
    """
    label = label or name.upper().replace("_", "-")

    def decorate(cls: type) -> type:
        if name in _REGISTRY:
            raise RuntimeError(f"rule {name!r} registered twice")
        cls.name = name
        _REGISTRY[name] = RuleSpec(name=name, cls=cls, family=family, summary=summary,
                                   label=label, **flags)
        return cls

    return decorate


def available_rules() -> list[str]:
    """The names ``make_rule`` accepts, sorted."""
    _load_rule_modules()
    return sorted(_REGISTRY)


def rule_spec(name: str) -> RuleSpec:
    """The registry entry of ``name``; a clear ``ValueError`` for an unknown name."""
    _load_rule_modules()
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"Unknown rule {name!r}; choose one of: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def make_rule(
    name: str,
    model: nn.Module,
    *,
    loss_fn: LossFn | None = None,
    seed: int | None = None,
    **options: Any,
) -> "Rule":
    """Build learning rule ``name`` for ``model``.

    Validates eagerly: an unknown name, a model the rule cannot run or an
    unknown option raises ``ValueError`` naming the problem and the choices.
    """
    spec = rule_spec(name)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if spec.needs_local_losses and not callable(getattr(model, "local_losses", None)):
        raise ValueError(
            f"Rule {name!r} trains local losses, but {type(model).__name__} defines none "
            "(it needs a `local_losses(x, y)` method, like fa_tutor.models.LocalMixer); "
            f"for a global loss use {name.removeprefix('lg_')!r}."
        )
    check_options(spec, options)
    merged = {**spec.defaults, **options}
    return spec.cls(model, loss_fn=loss_fn, seed=seed, **merged)


def check_options(spec: RuleSpec, options: dict[str, Any]) -> None:
    """The one check of a rule's options, against its registry entry (``ValueError``).

    Names: those of ``spec.defaults``.  Values: one of ``spec.choices[key]`` where
    given; else by the default's type: a bool default takes ``True``/``False``, an
    int default a positive int; a ``None`` default (``input_shape``) is the rule's to check.
    """
    unknown = sorted(set(options) - set(spec.defaults))
    if unknown:
        raise ValueError(f"rule {spec.name!r}: unknown option(s) {unknown}; valid options: "
                         f"{', '.join(sorted(spec.defaults)) or 'none (it takes no options)'}")
    for key, value in options.items():
        default, choices = spec.defaults[key], spec.choices.get(key)
        if choices is not None and (not isinstance(value, str) or value not in choices):
            allowed = " or ".join(repr(c) for c in choices)
            raise ValueError(f"rule {spec.name!r}: {key}={value!r}; choose {allowed}")
        if isinstance(default, bool) and not isinstance(value, bool):
            raise ValueError(f"rule {spec.name!r}: {key}={value!r}; choose True or False")
        if (isinstance(default, int) and not isinstance(default, bool)
                and (isinstance(value, bool) or not isinstance(value, int) or value < 1)):
            raise ValueError(f"rule {spec.name!r}: {key}={value!r}; choose a positive integer")


def fill_doc(**texts: str) -> Callable[[type], type]:
    """Class decorator: each ``{key}`` in the docstring becomes ``texts[key]``.

    The one docstring-templating helper: shared Args text lives once, as module
    constants of the family's module (``feedback._COMMON_ARGS``, ``direct._ARGS``).
    """

    def decorate(cls: type) -> type:
        doc = cls.__doc__
        for key, text in texts.items():
            doc = doc.replace("{" + key + "}", text)
        cls.__doc__ = doc
        return cls

    return decorate


def rule_generator_seed(seed: int) -> int:
    """The seed of a rule's own generator, derived from ``seed``.

    Derived rather than equal, so that ``torch.manual_seed(s)`` for the model and
    ``make_rule(..., seed=s)`` do not draw the same numbers (B would copy W(0)).
    """
    digest = hashlib.sha256(f"fa_tutor.rule:{int(seed)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % (2**63)


def _load_rule_modules() -> None:
    # Importing the family modules runs their @register lines.
    from . import backprop, direct, fdfa, feedback, forward, local, sign_feedback  # noqa: F401


class Rule(abc.ABC):
    """Base class: state lives here, each rule's maths in ``_compute_grads``."""

    name: ClassVar[str] = "rule"

    def __init__(self, model: nn.Module, *, loss_fn: LossFn | None = None, seed: int | None = None):
        quiet_forward_ad()  # forward mode (the rules' tangents, torch.func.jvp) without its warning
        self.model = model
        self.loss_fn: LossFn = loss_fn if loss_fn is not None else F.cross_entropy
        # seed=None: a fresh seed from a throwaway generator (torch's global one untouched)
        self.seed = seed if seed is not None else int(torch.Generator().seed() % (2**31))
        device = _model_device(model)
        self.generator = torch.Generator(device=device).manual_seed(rule_generator_seed(self.seed))
        self._feedback: dict[str, Tensor] = {}
        self.options: dict[str, Any] = {}

    # -- the public interface -------------------------------------------------
    @property
    def feedback(self) -> dict[str, Tensor]:
        """The feedback tensors by weight name, up to date: read (and written into) by
        metrics, checkpoints and the book. The sign rules write a B when it is used or
        read (:meth:`refresh_feedback`); the dict and its tensors stay the same objects."""
        self.refresh_feedback()
        return self._feedback

    def refresh_feedback(self) -> None:
        """Bring every B that a rule writes on demand up to date; most rules: nothing."""

    def step(self, x: Tensor, y: Tensor) -> Tensor:
        """Write the rule's update into ``.grad`` of every trainable parameter; return the loss."""
        try:
            loss = self._compute_grads(x, y)
        except RuntimeError as err:
            if isinstance(err, OutOfMemoryError):
                raise
            misfit = batch_misfit(self.model, x, y, self.loss_fn)
            if misfit is None:  # the plain model takes the batch: a fault of the rule itself
                raise
            raise BatchShapeError(misfit_message(self.name, x, y, misfit)) from err
        loss = loss.detach()
        value = loss.item() if loss.numel() == 1 else loss.sum().item()  # one host read, no extra op
        if not math.isfinite(value):
            raise NonFiniteLossError(
                f"rule {self.name!r}: the batch loss is {value} (not finite). "
                "Lower the learning rate, check the inputs for NaN/inf, or check loss_fn."
            )
        return loss

    def parameters(self) -> list[Tensor]:
        """The learned feedback tensors (kp, dkp, fdfa); empty for the other rules."""
        return []

    def forward(self, x: Tensor) -> Tensor:
        """The model's output computed with this rule's backward path attached."""
        return self.model(x)

    def __call__(self, x: Tensor) -> Tensor:
        return self.forward(x)

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{type(self).__name__}(name={self.name!r}, seed={self.seed}{', ' if opts else ''}{opts})"

    # -- for subclasses ------------------------------------------------------------
    @abc.abstractmethod
    def _compute_grads(self, x: Tensor, y: Tensor) -> Tensor:
        """Fill ``p.grad`` of every trainable parameter with the rule's update; return the loss."""

    def _trainable(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]

    def _write_grads(self, loss: Tensor, params: Iterable[Tensor]) -> None:
        """``p.grad ← ∂loss/∂p`` through whatever graph the rule built (overwrites); zeros
        for a parameter the loss does not reach. ``backward(inputs=...)`` onto cleared
        ``.grad``, as plain PyTorch training does (cheaper than ``autograd.grad`` plus
        assigning each result); other leaves of the graph are left alone."""
        params = list(params)
        for p in params:
            p.grad = None
        loss.backward(inputs=params)
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)


def batch_misfit(model: nn.Module, x: Tensor, y: Tensor,
                 loss_fn: LossFn | None = None) -> RuntimeError | None:
    """The error the plain ``model`` (then ``loss_fn``) raises on the batch, or None if it fits.

    Run without gradients, in eval mode and with the random states restored, so
    it changes nothing: a rule's failure counts as a shape mismatch only when the
    model itself cannot take the batch.
    """
    was_training = model.training
    cuda = [x.device] if x.device.type == "cuda" else []
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=cuda):
            model.eval()
            out = model(x)
            if loss_fn is not None:
                loss_fn(out, y)
    except RuntimeError as err:
        if isinstance(err, OutOfMemoryError):
            raise
        return err
    finally:
        model.train(was_training)
    return None


def misfit_message(rule: str, x: Tensor, y: Tensor, err: Exception, model: str = "") -> str:
    """The "does not fit the model" message (``BatchShapeError``) for a batch and the error."""
    what = f"model {model!r}" if model else "the model"
    return (f"rule {rule!r}: the batch (x of shape {tuple(x.shape)}, y of shape "
            f"{tuple(y.shape)}) does not fit {what} or the loss: {str(err).strip()}. Give x as "
            "(batch, *one example's shape the model takes) and y as loss_fn expects "
            "((batch,) class indices for cross-entropy).")


def _model_device(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def check_batch(x: Tensor, y: Tensor) -> None:
    """Shape checks at the boundary of ``step``: a clear error instead of a deep one."""
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise TypeError("step(x, y) takes tensors")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"batch size mismatch: x has {x.shape[0]} examples, y has {y.shape[0]}")


def xavier_std(weight_shape: torch.Size) -> float:
    """c = √(2 / (fan_in + fan_out)), the std of Xavier-uniform (conv fans include k×k)."""
    receptive = math.prod(weight_shape[2:]) if len(weight_shape) > 2 else 1
    fan_out, fan_in = weight_shape[0] * receptive, weight_shape[1] * receptive
    return math.sqrt(2.0 / (fan_in + fan_out))


def xavier_bound(weight_shape: torch.Size) -> float:
    """a = √3·c, the half-width of Xavier-uniform U(−a, a) (std c = :func:`xavier_std`)."""
    return math.sqrt(3.0) * xavier_std(weight_shape)

