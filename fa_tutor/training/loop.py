"""The one training loop: build, then per batch ``zero_grad → rule.step → optimizer.step``."""
from __future__ import annotations

import itertools
import logging
import os
import signal
import threading
import time
import contextlib
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

#: Seconds between checkpoints when ``train`` is not told (``$FA_TUTOR_CHECKPOINT_EVERY``).
CHECKPOINT_EVERY_S = 60.0


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during a checkpointed run: the checkpoint was saved; rerunning resumes it."""

    def __init__(self, checkpoint: Path, epoch: int, batch: int):
        self.checkpoint, self.epoch, self.batch = checkpoint, epoch, batch
        where = f"epoch {epoch + 1}, after step {batch}" if batch else f"after epoch {epoch}"
        super().__init__(f"interrupted in {where}; checkpoint saved to {checkpoint}")


class StopRequest:
    """While active, Ctrl-C (SIGINT) only sets ``requested``; the loop reads it between
    steps, so the checkpoint it then writes is consistent. A second Ctrl-C stops at once.
    Installed only in the main thread, and not where SIGINT is ignored."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            previous = signal.getsignal(signal.SIGINT)
            if previous is not signal.SIG_IGN:
                self._previous = previous if previous is not None else signal.default_int_handler
                signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, self._previous)
        log.warning("interrupt: saving a checkpoint after this step (Ctrl-C again to stop now)")

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
        if self.requested and exc_type is None:  # the run just ended: the caller still stops
            raise KeyboardInterrupt


def checkpoint_interval(seconds: float | None) -> float:
    """``seconds``, else ``$FA_TUTOR_CHECKPOINT_EVERY``, else :data:`CHECKPOINT_EVERY_S`."""
    if seconds is not None:
        return float(seconds)
    raw = os.environ.get("FA_TUTOR_CHECKPOINT_EVERY")
    try:
        return float(raw) if raw else CHECKPOINT_EVERY_S
    except ValueError:
        raise ValueError(f"FA_TUTOR_CHECKPOINT_EVERY must be seconds, got {raw!r}") from None


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


def evaluation(model: nn.Module, rule: Rule, splits: dict, device: torch.device,
               transform: Callable[[Tensor], Tensor] | None) -> dict[str, float]:
    """``{split}_loss`` and accuracy of each split given (``train_eval``: ``train_accuracy``)."""
    row: dict[str, float] = {}
    for name, xy in splits.items():
        if xy is not None:
            acc = "train_accuracy" if name == "train_eval" else f"{name}_accuracy"
            row[f"{name}_loss"], row[acc] = evaluate(model, *xy, rule.loss_fn, device,
                                                     transform=transform)
    return row


def train(cfg: RunConfig, *, data: Dataset | None = None, model: nn.Module | None = None,
          recorders: dict[str, Recorder] | None = None, checkpoint: str | Path | None = None,
          checkpoint_every_s: float | None = None, progress: bool = True) -> TrainResult:
    """Train ``cfg.model`` with learning rule ``cfg.rule``; resume from ``checkpoint`` if it exists.

    Every ``cfg.eval_every`` epochs a row is added to the history: train loss
    (mean over the epoch's steps), test (and train/val) loss and accuracy, the
    learning rate, and whatever each recorder returns on a fixed probe batch.

    A non-finite batch loss raises :class:`~fa_tutor.NonFiniteLossError` carrying
    ``epoch`` (the epoch it happened in), ``history`` (the rows before it) and
    ``best`` (the best-validation row so far, or None).

    With a ``checkpoint``, the run is saved every ``checkpoint_every_s`` seconds
    (default 60, or ``$FA_TUTOR_CHECKPOINT_EVERY``), at the end, and on Ctrl-C,
    which then raises :class:`TrainingInterrupted` (a ``KeyboardInterrupt``).
    """
    t0 = time.perf_counter()
    build.check_names(cfg, data=data is None, model=model is None)
    every_s = checkpoint_interval(checkpoint_every_s)
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
    splits = {"test": (x_test, y_test),
              "train_eval": (x_train, y_train) if cfg.eval_train else None,
              "val": (x_val, y_val) if x_val is not None else None}
    transform = None
    if cfg.normalize:
        mean, std = (t.to(device) for t in build.standardizer(data))
        transform = lambda t: (t - mean) / std  # noqa: E731
    model = (model if model is not None else build.build_model(cfg, data)).to(device)
    probe = next(batches(x_train, y_train, 256, device=device))
    xb, yb = (t[:cfg.batch_size or None] for t in probe)  # a training batch's shape
    build.check_fits(cfg, model, transform(xb) if transform else xb, yb)
    rule = build.build_rule(cfg, model, data)
    optimizers = build.build_optimizers(cfg, model, rule)
    schedulers = build.build_schedulers(cfg, optimizers)  # lr = base lr × lr_factor(cfg, epoch)
    rows: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    start_epoch, skip, resumed_losses = 0, 0, []
    # 2. resume (at an epoch's end, or mid-epoch after an interrupt)
    ckpt_path = Path(checkpoint) if checkpoint else None
    if ckpt_path and ckpt_path.exists():
        state = load_checkpoint(ckpt_path, cfg, model, rule, optimizers, order, schedulers)
        start_epoch, rows, best = state["epoch"], state["rows"], state.get("best")
        skip = state.get("batch", 0)
        if skip:  # replay the epoch's shuffle, skip the steps already taken
            order.set_state(state["epoch_order"])
            resumed_losses = [t.to(device) for t in state["losses"]]
        log.info("resumed %s at epoch %d (+%d steps)", ckpt_path, start_epoch, skip)
    last_save = time.perf_counter()
    bar = tqdm(range(start_epoch, cfg.epochs), desc=f"{cfg.rule} {cfg.model}", disable=not progress,
               initial=start_epoch, total=cfg.epochs, leave=False)
    stop = StopRequest()

    def save(epoch: int, **mid_epoch: Any) -> None:
        save_checkpoint(ckpt_path, cfg, epoch, model, rule, optimizers, order, rows, best,
                        schedulers=schedulers, **mid_epoch)

    # 3. epochs
    with stop if ckpt_path else contextlib.nullcontext():  # Ctrl-C: save, then stop
        for epoch in bar:
            lr = optimizers[0].param_groups[0]["lr"]
            epoch_order = order.get_state()  # before the shuffle: a mid-epoch save replays it
            model.train()
            losses, steps = (resumed_losses, skip) if epoch == start_epoch else ([], 0)
            data_iter = batches(x_train, y_train, cfg.batch_size, shuffle=True, generator=order,
                                device=device)
            try:
                for xb, yb in itertools.islice(data_iter, steps, None):
                    for opt in optimizers:
                        opt.zero_grad(set_to_none=True)
                    losses.append(rule.step(transform(xb) if transform else xb, yb))
                    for opt in optimizers:
                        opt.step()
                    steps += 1
                    if stop.requested:
                        save(epoch, batch=steps, epoch_order=epoch_order, losses=losses)
                        raise TrainingInterrupted(ckpt_path, epoch, steps)
            except NonFiniteLossError as err:  # keep what was learned before the divergence
                err.epoch, err.history, err.best = epoch + 1, pd.DataFrame(rows), best
                raise
            done = epoch + 1
            # 4. evaluation and recorders
            if done % cfg.eval_every == 0 or done == cfg.epochs:
                row = {"epoch": done, "lr": lr, "train_loss": float(torch.stack(losses).mean()),
                       **evaluation(model, rule, splits, device, transform)}
                if "val_accuracy" in row and (best is None or
                                              row["val_accuracy"] > best["val_accuracy"]):
                    best = dict(row)
                for name, recorder in (recorders or {}).items():
                    value = recorder(model, rule, probe)
                    row.update(value if isinstance(value, dict) else {name: value})
                rows.append(row)
                bar.set_postfix(loss=f"{row['train_loss']:.3f}",
                                test_acc=f"{row['test_accuracy']:.1f}")
                log.info("epoch %d/%d: train loss %.4f, test accuracy %.2f %%", done,
                         cfg.epochs, row["train_loss"], row["test_accuracy"])
            # 5. the next epoch's learning rate, checkpoint
            for sched in schedulers:
                sched.step()
            if ckpt_path and (time.perf_counter() - last_save > every_s or done == cfg.epochs
                              or stop.requested):
                save(done)
                last_save = time.perf_counter()
                if stop.requested:  # (at the last epoch, a rerun just reads the result)
                    raise TrainingInterrupted(ckpt_path, done, 0)
    history = pd.DataFrame(rows)
    final = dict(best if best is not None else (rows[-1] if rows else {}))
    return TrainResult(cfg, history, model, rule, data, time.perf_counter() - t0, final)
