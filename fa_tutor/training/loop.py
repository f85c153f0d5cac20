"""The one training loop: build, then per batch ``zero_grad → rule.step → optimizer.step``."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..data import Dataset, batches
from ..rules import NonFiniteLossError, Rule
from ..utils import resolve_device, seed_everything
from . import build
from .checkpoint import load_checkpoint, save_checkpoint
from .config import RunConfig

log = logging.getLogger(__name__)

#: A recorder measures something every ``eval_every`` epochs: (model, rule, probe batch) -> values.
Recorder = Callable[[nn.Module, Rule, tuple[Tensor, Tensor]], "dict[str, float] | float"]


@dataclass
class TrainResult:
    """What ``train`` returns: the history table and the trained objects."""

    config: RunConfig
    history: pd.DataFrame  # one row per evaluation: epoch, lr, losses, accuracies, recorded metrics
    model: nn.Module
    rule: Rule
    data: Dataset
    wall_s: float
    final: dict[str, float] = field(default_factory=dict)  # the last row (or the best-val row)


@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor, y: Tensor, loss_fn: Callable, device: torch.device,
             batch_size: int = 2048, transform: Callable[[Tensor], Tensor] | None = None) -> tuple[float, float]:
    """Mean loss and accuracy (%) of ``model`` on ``(x, y)`` in eval mode."""
    was_training = model.training
    model.eval()
    total_loss, correct = 0.0, 0
    for xb, yb in batches(x, y, batch_size, device=device):
        out = model(transform(xb) if transform else xb)
        total_loss += float(loss_fn(out, yb)) * len(yb)
        correct += int((out.argmax(-1) == yb).sum())
    model.train(was_training)
    return total_loss / len(y), 100.0 * correct / len(y)


def train(cfg: RunConfig, *, data: Dataset | None = None, model: nn.Module | None = None,
          recorders: dict[str, Recorder] | None = None, checkpoint: str | Path | None = None,
          checkpoint_every_s: float = 60.0, progress: bool = True) -> TrainResult:
    """Train ``cfg.model`` with learning rule ``cfg.rule``; resume from ``checkpoint`` if it exists.

    Every ``cfg.eval_every`` epochs a row is added to the history: train loss
    (mean over the epoch's steps), test (and train/val) loss and accuracy, the
    learning rate, and whatever each recorder returns on a fixed probe batch.

    A non-finite batch loss raises :class:`~fa_tutor.NonFiniteLossError` carrying
    ``epoch`` (the epoch it happened in), ``history`` (the rows before it) and
    ``best`` (the best-validation row so far, or None).
    """
    t0 = time.perf_counter()
    device = resolve_device(cfg.device)
    order = seed_everything(cfg.seed)
    # 1. data, model, rule, optimizers
    data = data if data is not None else build.build_data(cfg)
    x_train, y_train, x_val, y_val = data.x_train, data.y_train, None, None
    if cfg.val_fraction > 0:
        n_val = int(round(cfg.val_fraction * len(y_train)))
        perm = torch.randperm(len(y_train), generator=torch.Generator().manual_seed(cfg.seed))
        x_val, y_val = x_train[perm[:n_val]], y_train[perm[:n_val]]
        x_train, y_train = x_train[perm[n_val:]], y_train[perm[n_val:]]
    x_test, y_test = data.x_test, data.y_test
    if device.type == "cuda":  # the data sets here fit on a GPU: copy once, not per batch
        x_train, y_train, x_test, y_test = (t.to(device) for t in (x_train, y_train, x_test, y_test))
        if x_val is not None:
            x_val, y_val = x_val.to(device), y_val.to(device)
    transform = None
    if cfg.normalize:
        mean, std = (t.to(device) for t in build.standardizer(data))
        transform = lambda t: (t - mean) / std  # noqa: E731
    model = (model if model is not None else build.build_model(cfg, data)).to(device)
    rule = build.build_rule(cfg, model, data)
    optimizers = build.build_optimizers(cfg, model, rule)
    base_lrs = [[g["lr"] for g in o.param_groups] for o in optimizers]
    probe = next(batches(x_train, y_train, 256, device=device))
    rows: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    start_epoch = 0
    # 2. resume
    ckpt_path = Path(checkpoint) if checkpoint else None
    if ckpt_path and ckpt_path.exists():
        state = load_checkpoint(ckpt_path, cfg, model, rule, optimizers, order)
        start_epoch, rows, best = state["epoch"], state["rows"], state.get("best")
        log.info("resumed %s at epoch %d", ckpt_path, start_epoch)
    last_save = time.perf_counter()
    bar = tqdm(range(start_epoch, cfg.epochs), desc=f"{cfg.rule} {cfg.model}", disable=not progress,
               initial=start_epoch, total=cfg.epochs, leave=False)
    # 3. epochs
    for epoch in bar:
        factor = build.lr_factor(cfg, epoch)
        for opt, lrs in zip(optimizers, base_lrs):
            for group, lr in zip(opt.param_groups, lrs):
                group["lr"] = lr * factor
        model.train()
        losses = []
        try:
            for xb, yb in batches(x_train, y_train, cfg.batch_size, shuffle=True, generator=order,
                                  device=device):
                for opt in optimizers:
                    opt.zero_grad(set_to_none=True)
                losses.append(rule.step(transform(xb) if transform else xb, yb))
                for opt in optimizers:
                    opt.step()
        except NonFiniteLossError as err:  # keep what was learned before the divergence
            err.epoch, err.history, err.best = epoch + 1, pd.DataFrame(rows), best
            raise
        train_loss = float(torch.stack(losses).mean())
        done = epoch + 1
        # 4. evaluation and recorders
        if done % cfg.eval_every == 0 or done == cfg.epochs:
            row: dict[str, Any] = {"epoch": done, "lr": cfg.lr * factor, "train_loss": train_loss}
            row["test_loss"], row["test_accuracy"] = evaluate(model, x_test, y_test,
                                                              rule.loss_fn, device, transform=transform)
            if cfg.eval_train:
                row["train_eval_loss"], row["train_accuracy"] = evaluate(
                    model, x_train, y_train, rule.loss_fn, device, transform=transform)
            if x_val is not None:
                row["val_loss"], row["val_accuracy"] = evaluate(model, x_val, y_val, rule.loss_fn,
                                                                device, transform=transform)
                if best is None or row["val_accuracy"] > best["val_accuracy"]:
                    best = dict(row)
            for name, recorder in (recorders or {}).items():
                value = recorder(model, rule, probe)
                row.update(value if isinstance(value, dict) else {name: value})
            rows.append(row)
            bar.set_postfix(loss=f"{train_loss:.3f}", test_acc=f"{row['test_accuracy']:.1f}")
        # 5. checkpoint
        if ckpt_path and (time.perf_counter() - last_save > checkpoint_every_s or done == cfg.epochs):
            save_checkpoint(ckpt_path, cfg, done, model, rule, optimizers, order, rows, best)
            last_save = time.perf_counter()
    history = pd.DataFrame(rows)
    final = dict(best if best is not None else (rows[-1] if rows else {}))
    return TrainResult(cfg, history, model, rule, data, time.perf_counter() - t0, final)
