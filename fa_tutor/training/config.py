"""A run, fully described by one frozen dataclass (nanoGPT-style: plain config, no framework)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, get_type_hints


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
        """Apply ``key=value`` strings (CLI ``--set``), checked against the fields and their types."""
        import json

        hints = get_type_hints(type(self))
        changes: dict[str, Any] = {}
        for pair in pairs:
            key, sep, raw = pair.partition("=")
            if not sep or key not in hints:
                raise ValueError(f"Unknown config key {key!r}; valid keys: {', '.join(hints)}")
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                value = raw
            if key == "milestones":
                value = tuple(value)
            changes[key] = value
        return self.replace(**changes)
