"""A run, fully described by one frozen dataclass (nanoGPT-style: plain config, no framework)."""
from __future__ import annotations

import dataclasses
import inspect
import json
import math
import numbers
import re
import types
from dataclasses import dataclass, field
from typing import Any, Union, get_args, get_origin, get_type_hints

#: The fixed choices of a few fields (model, rule and dataset names live in their registries).
CHOICES: dict[str, tuple[str, ...]] = {
    "optimizer": ("sgd", "adam"),
    "feedback_optimizer": ("sgd", "adam"),
    "schedule": ("constant", "step", "exponential", "linear", "cosine"),
    "init": ("default", "xavier"),
}


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a training run; stored with every result and checkpoint."""

    model: str = "mlp"  # a name in fa_tutor.training.build.MODELS
    model_options: dict = field(default_factory=dict)  # e.g. {"hidden": [256], "activation": "relu"}
    rule: str = "bp"  # a name in fa_tutor.available_rules()
    rule_options: dict = field(default_factory=dict)  # passed to make_rule, e.g. {"scale": False}
    dataset: str = "mnist5k"  # a name in fa_tutor.data.DATASETS
    data_options: dict = field(default_factory=dict)  # resize, classes (k-subset), label_noise, n_train, n_test
    optimizer: str = "sgd"  # "sgd" or "adam"
    lr: float = 0.05  # learning rate of the forward weights
    momentum: float = 0.0  # SGD momentum
    weight_decay: float = 0.0  # L2 weight decay (also applied to learned feedback: KP)
    feedback_optimizer: str | None = None  # optimizer of learned feedback (kp, dkp, fdfa); None = same
    feedback_lr: float | None = None  # its learning rate; None = lr
    schedule: str = "constant"  # constant, step (milestones × gamma), exponential (gamma/epoch),
    #                            linear (to 0 over the run) or cosine
    milestones: tuple = ()  # epochs at which "step" multiplies the lr by gamma
    gamma: float = 0.1  # decay factor
    epochs: int = 10  # passes over the training set
    batch_size: int = 64  # examples per step; 0 = full batch
    normalize: bool = False  # standardise inputs with the training set's per-channel mean/std
    init: str = "default"  # "default" (PyTorch) or "xavier" (Xavier-uniform weights, zero biases)
    val_fraction: float = 0.0  # held-out share of the training set; > 0 selects the best-val epoch
    eval_every: int = 1  # evaluate (and record metrics) every this many epochs
    eval_train: bool = True  # also measure accuracy on the whole training set
    seed: int = 0  # seeds data order, initialisation and the rule's generator
    device: str = "auto"  # "auto", "cpu" or "cuda"

    def __post_init__(self) -> None:
        if isinstance(self.milestones, list):  # JSON gives lists; the field is a tuple
            object.__setattr__(self, "milestones", tuple(self.milestones))
        hints = get_type_hints(type(self))
        for f in dataclasses.fields(self):
            _check_type(f.name, getattr(self, f.name), hints[f.name])
        _check_values(self)

    def replace(self, **changes: Any) -> "RunConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["milestones"] = list(self.milestones)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"Unknown config key(s) {sorted(unknown)}; valid keys: "
                             f"{', '.join(f.name for f in dataclasses.fields(cls))}")
        d = dict(d)
        if "milestones" in d:
            d["milestones"] = tuple(d["milestones"])
        return cls(**d)

    def with_overrides(self, pairs: list[str]) -> "RunConfig":
        """Apply ``key=value`` strings (CLI ``--set``), checked against the fields and their types.

        >>> RunConfig().with_overrides(["lr=0.1", "milestones=[5, 8]"]).milestones
        (5, 8)
        >>> RunConfig().with_overrides(["lr=abc"])
        Traceback (most recent call last):
        ...
        ValueError: lr must be a float, got 'abc'
        """
        hints = get_type_hints(type(self))
        changes: dict[str, Any] = {}
        for pair in pairs:
            key, sep, raw = pair.partition("=")
            if not sep or key not in hints:
                raise ValueError(f"Unknown config key {key!r}; valid keys: {', '.join(hints)}")
            changes[key] = parse_value(key, raw, hints[key])
        return self.replace(**changes)

    def differences(self, other: "RunConfig") -> dict[str, tuple[Any, Any]]:
        """``{field: (self's value, other's value)}`` for every field that differs."""
        return {f.name: (getattr(self, f.name), getattr(other, f.name))
                for f in dataclasses.fields(self)
                if getattr(self, f.name) != getattr(other, f.name)}


def _unwrap(hint: Any) -> tuple[Any, bool]:
    """``(base type, optional)`` of a field's type hint (``float | None`` -> ``(float, True)``)."""
    if get_origin(hint) in (Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        return args[0], True
    return hint, False


_TYPE_NAMES = {float: "a float", int: "an int", bool: "true or false", str: "a string",
               dict: "a JSON object, e.g. {\"hidden\": [32]}", tuple: "a list of ints, e.g. [5, 8]"}


def _type_error(key: str, expected: Any, value: Any) -> ValueError:
    return ValueError(f"{key} must be {_TYPE_NAMES.get(expected, expected)}, got {value!r}")


def parse_value(key: str, raw: str, hint: Any) -> Any:
    """The value of field ``key`` written as the string ``raw`` (``--set key=raw``)."""
    base, optional = _unwrap(hint)
    if optional and raw.strip().lower() in ("none", "null"):
        return None
    if base is float or base is int:
        try:
            return base(raw)
        except ValueError:
            raise _type_error(key, base, raw) from None
    if base is bool:
        words = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
        if raw.strip().lower() not in words:
            raise _type_error(key, bool, raw)
        return words[raw.strip().lower()]
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        if base is str:
            return raw
        raise _type_error(key, base, raw) from None
    return tuple(value) if base is tuple and isinstance(value, list) else value


def _check_type(key: str, value: Any, hint: Any) -> None:
    base, optional = _unwrap(hint)
    if value is None and optional:
        return
    if base is float:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    elif base is int:
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    elif base is tuple:
        ok = isinstance(value, tuple) and all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value)
    else:
        ok = isinstance(value, base)
    if not ok:
        raise _type_error(key, base, value)


def _check_values(cfg: RunConfig) -> None:
    """Ranges and choices: a clear ``ValueError`` before any work is done."""
    for key, choices in CHOICES.items():
        value = getattr(cfg, key)
        if value is not None and value not in choices:
            raise ValueError(f"Unknown {key} {value!r}; choose one of: {', '.join(choices)}")
    for key in ("lr", "momentum", "weight_decay", "feedback_lr"):
        value = getattr(cfg, key)
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{key} must be a finite number >= 0, got {value!r}")
    if not (math.isfinite(cfg.gamma) and cfg.gamma > 0):
        raise ValueError(f"gamma must be a finite number > 0, got {cfg.gamma!r}")
    if not 0 <= cfg.val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {cfg.val_fraction!r}")
    for key, low, note in (("epochs", 1, ""), ("eval_every", 1, ""),
                           ("batch_size", 0, " (0 = the full batch)")):
        if getattr(cfg, key) < low:
            raise ValueError(f"{key} must be an int >= {low}{note}, got {getattr(cfg, key)!r}")
    if any(m < 1 for m in cfg.milestones):
        raise ValueError(f"milestones must be epochs >= 1, got {list(cfg.milestones)}")


def field_help() -> dict[str, str]:
    """Each field's comment in the class source (the ``train --help`` text); {} without source."""
    try:
        lines = inspect.getsource(RunConfig).splitlines()
    except (OSError, TypeError):
        return {}
    docs: dict[str, str] = {}
    last = None
    for line in lines:
        m = re.match(r"\s{4}(\w+): [^=]+=.*?  # (.*)$", line)
        if m:
            last, docs[m.group(1)] = m.group(1), m.group(2).strip()
        elif last and re.match(r"\s{4}#\s", line):
            docs[last] += " " + line.strip().lstrip("#").strip()
        else:
            last = None
    return docs
