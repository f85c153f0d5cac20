"""Turn a RunConfig into data, a model, a rule and optimizers."""
from __future__ import annotations

import functools
import math
from typing import Callable

import torch
from torch import nn

from .. import models
from ..data import Dataset, load_dataset
from ..rules import Rule, make_rule, rule_spec
from .config import RunConfig


def _mlp(data: Dataset, hidden=(256,), activation="leaky_relu", bias=True) -> nn.Module:
    return models.MLP(data.in_features, list(hidden), data.num_classes, activation=activation, bias=bias)


def _named(cls_name: str) -> Callable[..., nn.Module]:
    def build(data: Dataset, **options) -> nn.Module:
        cls = getattr(models, cls_name)
        channels = data.feature_shape[0]
        if cls_name in ("LeNet", "LeNet5", "resnet18"):
            options.setdefault("in_channels", channels)
        if cls_name == "FDFAConvNet":
            options.setdefault("image_size", data.feature_shape[-1])
            return cls(options.pop("in_channels", channels), data.num_classes, **options)
        if cls_name == "FDFANet":
            return cls(data.in_features, data.num_classes, **options)
        if cls_name == "LocalMixer":
            config = options.pop("config", "S/1/1")
            return cls.from_config(config, in_channels=channels, image_size=data.feature_shape[-1],
                                   num_classes=data.num_classes, **options)
        return cls(data.num_classes, **options)
    return build


MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp": _mlp,
    "lenet": _named("LeNet"),
    "lenet5": _named("LeNet5"),
    "resnet18": _named("resnet18"),
    "localmixer": _named("LocalMixer"),
    "fdfa_fc": _named("FDFANet"),
    "fdfa_cnn": _named("FDFAConvNet"),
}


def build_data(cfg: RunConfig) -> Dataset:
    """Load ``cfg.dataset`` and apply ``cfg.data_options`` (k-class subset, label noise, size...)."""
    opts = dict(cfg.data_options)
    allowed = {"classes", "label_noise", "n_train", "n_test", "resize", "root", "download"}
    unknown = set(opts) - allowed
    if unknown:
        raise ValueError(f"Unknown data option(s) {sorted(unknown)}; choose from {sorted(allowed)}")
    data = load_dataset(cfg.dataset, root=opts.get("root"), download=opts.get("download", False))
    if "classes" in opts:
        from ..data.subsets import class_subset

        data = class_subset(data, int(opts["classes"]), seed=cfg.seed)
    if "n_train" in opts or "n_test" in opts:
        data = data.subset(opts.get("n_train"), opts.get("n_test"), seed=cfg.seed)
    if "label_noise" in opts:
        from dataclasses import replace

        from ..data.subsets import label_noise

        noisy, _ = label_noise(data.y_train, opts["label_noise"], data.num_classes, seed=cfg.seed)
        data = replace(data, y_train=noisy,
                       note=f"{data.note} {opts['label_noise']:.0%} training labels flipped.".strip())
    if "resize" in opts:
        data = data.resized(int(opts["resize"]))
    return data


#: Models whose constructor takes ``init`` (and defaults to Xavier, the seed benchmarks')
_INIT_ARG = ("lenet", "lenet5", "resnet18")


def check_names(cfg: RunConfig, *, data: bool = True, model: bool = True) -> None:
    """Unknown rule (and, when they are to be built, model and data set) names fail here,
    before any data is loaded."""
    from ..data import DATASETS

    if model and cfg.model not in MODELS:
        raise ValueError(f"Unknown model {cfg.model!r}; choose one of: {', '.join(MODELS)}")
    rule_spec(cfg.rule)
    if data and cfg.dataset not in DATASETS:
        raise ValueError(f"Unknown dataset {cfg.dataset!r}; choose one of: {', '.join(DATASETS)}")


def build_model(cfg: RunConfig, data: Dataset) -> nn.Module:
    """``cfg.model`` for ``data``; ``cfg.init`` "default" is PyTorch's init, "xavier" Xavier's.

    (For ``init="xavier"`` the weights are drawn as they always were: the
    constructor's Xavier draw, then :func:`xavier_init` again, so results stay
    reproducible.)
    """
    if cfg.model not in MODELS:
        raise ValueError(f"Unknown model {cfg.model!r}; choose one of: {', '.join(MODELS)}")
    options = dict(cfg.model_options)
    if cfg.model in _INIT_ARG and cfg.init == "default":
        options.setdefault("init", "default")
    model = MODELS[cfg.model](data, **options)
    if cfg.init == "xavier":
        xavier_init(model)
    elif cfg.init != "default":
        raise ValueError(f"Unknown init {cfg.init!r}; choose 'default' or 'xavier'")
    return model


def xavier_init(model: nn.Module) -> None:
    """Xavier-uniform weights and zero biases for every Linear/Conv2d (biotorch's 'xavier' init)."""
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def build_rule(cfg: RunConfig, model: nn.Module, data: Dataset) -> Rule:
    options = dict(cfg.rule_options)
    if rule_spec(cfg.rule).family == "direct feedback":
        options.setdefault("input_shape", data.feature_shape)
    return make_rule(cfg.rule, model, seed=cfg.seed, **options)


def _optimizer(kind: str, params: list, lr: float, cfg: RunConfig) -> torch.optim.Optimizer:
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"Unknown optimizer {kind!r}; choose 'sgd' or 'adam'")


def build_optimizers(cfg: RunConfig, model: nn.Module, rule: Rule) -> list[torch.optim.Optimizer]:
    """The forward weights' optimizer, plus one for learned feedback when the rule has any.

    Kolen–Pollack's "same update, same weight decay" holds when the feedback
    optimizer is the forward one's kind and rate (the defaults).
    """
    opts = [_optimizer(cfg.optimizer, list(model.parameters()), cfg.lr, cfg)]
    fb = list(rule.parameters())
    if fb:
        kind = cfg.feedback_optimizer or cfg.optimizer
        opts.append(_optimizer(kind, fb, cfg.feedback_lr if cfg.feedback_lr is not None else cfg.lr, cfg))
    return opts


def lr_factor(cfg: RunConfig, epoch: int) -> float:
    """Multiplier of the base lr during ``epoch`` (0-based), in closed form.

    The same factors as torch's ``MultiStepLR``, ``ExponentialLR``,
    ``LinearLR(1, 0, epochs)`` and ``CosineAnnealingLR(epochs)``, computed from the
    epoch rather than multiplied up epoch by epoch (the chainable form drifts in
    the last bits, e.g. 0.95 ** e, which would change committed results).
    """
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "step":
        return cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    if cfg.schedule == "exponential":
        return cfg.gamma ** epoch
    if cfg.schedule == "linear":  # Ren et al.'s default: linear decay to 0 over the run
        return 1.0 - epoch / cfg.epochs
    if cfg.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * epoch / cfg.epochs))
    raise ValueError(f"Unknown schedule {cfg.schedule!r}; choose constant, step, exponential, "
                     "linear or cosine")


def build_schedulers(cfg: RunConfig, optimizers: list[torch.optim.Optimizer],
                     ) -> list[torch.optim.lr_scheduler.LambdaLR]:
    """One ``LambdaLR`` per optimizer: lr = base lr × :func:`lr_factor` (cfg, epoch).

    Call ``scheduler.step()`` once after each epoch; its state goes into the checkpoint.
    """
    factor = functools.partial(lr_factor, cfg)
    return [torch.optim.lr_scheduler.LambdaLR(opt, factor) for opt in optimizers]


def check_fits(cfg: RunConfig, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    """A :class:`~fa_tutor.rules.BatchShapeError` when the model cannot take the data's
    examples, with the fix for images that are too small (``data_options={"resize": 32}``)."""
    from ..rules.base import BatchShapeError, batch_misfit, misfit_message

    err = batch_misfit(model, x, y)
    if err is None:
        return
    message = misfit_message(cfg.rule, x, y, err, model=cfg.model)
    if x.dim() == 4 and min(x.shape[-2:]) < 32:
        message += (f" The images are {x.shape[-2]}×{x.shape[-1]}: resize them with "
                    "data_options={\"resize\": 32} (on the command line: "
                    "--set 'data_options={\"resize\": 32}').")
    raise BatchShapeError(message) from err


def standardizer(data: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of the training inputs (shape broadcastable to a batch)."""
    x = data.x_train.float()
    dims = [0, *range(2, x.dim())] if x.dim() > 2 else [0]
    mean, std = x.mean(dims, keepdim=True)[0], x.std(dims, keepdim=True)[0]
    return mean, std.clamp_min(1e-6)
