"""Save and resume a run: weights, learned feedback, optimizers, random states and history."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..rules import Rule
from .config import RunConfig


def save_checkpoint(path: Path, cfg: RunConfig, epoch: int, model: nn.Module, rule: Rule,
                    optimizers: list, order: torch.Generator, rows: list, best: dict | None) -> None:
    """Write atomically (temp file + rename), so a run killed mid-save keeps the last good one."""
    state = {
        "config": cfg.to_dict(),
        "epoch": epoch,
        "model": model.state_dict(),
        "feedback": {k: v.detach().cpu().clone() for k, v in rule.feedback.items()},
        "rule_generator": rule.generator.get_state(),
        "optimizers": [o.state_dict() for o in optimizers],
        "data_order": order.get_state(),
        "torch_rng": torch.get_rng_state(),
        "rows": rows,
        "best": best,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, cfg: RunConfig, model: nn.Module, rule: Rule, optimizers: list,
                    order: torch.Generator) -> dict[str, Any]:
    """Restore everything ``save_checkpoint`` wrote; refuse a checkpoint of another config."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    saved = RunConfig.from_dict(state["config"])
    if saved != cfg:
        raise ValueError(f"checkpoint {path} belongs to another config; delete it or use another path.\n"
                         f"  saved:   {saved}\n  current: {cfg}")
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
    order.set_state(state["data_order"])
    torch.set_rng_state(state["torch_rng"])
    return state
