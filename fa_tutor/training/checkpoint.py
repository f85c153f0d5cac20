"""Save and resume a run: weights, feedback, optimizers, schedulers, random states, history.

A checkpoint is written at the end of an epoch, or mid-epoch when the run is
interrupted (``batch`` > 0: the steps of the current epoch already taken, with
the data-order state at the epoch's start and the losses so far), so a resumed
run continues exactly where the interrupted one stopped.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..rules import Rule
from .config import RunConfig


def save_checkpoint(path: Path, cfg: RunConfig, epoch: int, model: nn.Module, rule: Rule,
                    optimizers: list, order: torch.Generator, rows: list, best: dict | None, *,
                    schedulers: list | None = None, batch: int = 0,
                    epoch_order: torch.Tensor | None = None,
                    losses: list[torch.Tensor] | None = None) -> None:
    """Write atomically (temp file + rename), so a run killed mid-save keeps the last good one.

    ``epoch`` counts finished epochs; ``batch`` the steps taken in the next one.
    """
    state = {
        "config": cfg.to_dict(),
        "epoch": epoch,
        "model": model.state_dict(),
        "feedback": {k: v.detach().cpu().clone() for k, v in rule.feedback.items()},
        "rule_generator": rule.generator.get_state(),
        "optimizers": [o.state_dict() for o in optimizers],
        "schedulers": [s.state_dict() for s in schedulers or []],
        "data_order": order.get_state(),
        "torch_rng": torch.get_rng_state(),
        "rows": rows,
        "best": best,
        "batch": batch,
        "epoch_order": epoch_order,
        "losses": torch.stack(losses).cpu() if losses else None,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def config_mismatch(path: Path, saved: dict, cfg: RunConfig) -> str | None:
    """Why the checkpoint's config is not ``cfg`` (the differing fields), or None."""
    try:
        old = RunConfig.from_dict(saved)
    except (TypeError, ValueError) as err:
        return f"checkpoint {path} holds a config this version cannot read ({err})"
    diff = old.differences(cfg)
    if not diff:
        return None
    fields = "; ".join(f"{k}: {a!r} in the checkpoint, {b!r} now" for k, (a, b) in diff.items())
    return f"checkpoint {path} belongs to another config ({fields})"


def load_checkpoint(path: Path, cfg: RunConfig, model: nn.Module, rule: Rule, optimizers: list,
                    order: torch.Generator, schedulers: list | None = None) -> dict[str, Any]:
    """Restore everything ``save_checkpoint`` wrote; refuse a checkpoint of another config.

    A checkpoint written before the schedulers were saved gets them fast-forwarded
    to its epoch (the learning rate is a function of the epoch alone).
    """
    state = torch.load(path, map_location="cpu", weights_only=False)
    problem = config_mismatch(path, state["config"], cfg)
    if problem:
        raise ValueError(f"{problem}. Delete it, or give another checkpoint path to start anew.")
    model.load_state_dict(state["model"])
    missing = set(state["feedback"]) - set(rule.feedback)
    if missing:
        raise ValueError(f"checkpoint {path} has feedback for {sorted(missing)} which the rule lacks")
    with torch.no_grad():
        for k, v in state["feedback"].items():
            rule.feedback[k].copy_(v)
    rule.generator.set_state(state["rule_generator"])
    for opt, s in zip(optimizers, state["optimizers"]):
        opt.load_state_dict(s)
    _restore_schedulers(schedulers or [], state.get("schedulers"), state["epoch"])
    order.set_state(state["data_order"])
    torch.set_rng_state(state["torch_rng"])
    return state


def _restore_schedulers(schedulers: list, saved: list | None, epoch: int) -> None:
    import warnings

    if saved:
        for sched, s in zip(schedulers, saved):
            sched.load_state_dict(s)
        return
    for sched in schedulers:  # an older checkpoint: step to the epoch it stopped at
        with warnings.catch_warnings():  # "lr_scheduler.step() before optimizer.step()"
            warnings.simplefilter("ignore", UserWarning)
            for _ in range(epoch):
                sched.step()
