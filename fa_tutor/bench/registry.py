"""Benchmark experiments, declared as data: a name, a description and a grid of cells.

A *cell* is one independent unit of work (a training run, or one timing
session); it is identified by its key — (experiment, rule, model, dataset,
seed, scale, the settings that vary) — so a rerun skips finished cells.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Callable

from ..training import RunConfig

#: A cell runner gets the cell and the device, and returns one metrics dict, or a list of
#: (rule, metrics) pairs when one cell measures several rules in one run (step-cost).
CellRunner = Callable[["Cell", str, Any], "dict | list[tuple[str, dict]]"]


@dataclass(frozen=True)
class Cell:
    experiment: str
    rule: str
    model: str
    dataset: str
    seed: int
    scale: str  # "full", "quick" or "substituted" (CONTRACT.md)
    config: RunConfig | None = None  # training cells
    setting: dict = field(default_factory=dict)  # the settings that vary in this experiment
    options: dict = field(default_factory=dict)  # extra inputs of custom runners (not part of the key)
    runner: str = "train"  # "train" or the name of a custom runner in the experiment module

    @property
    def key(self) -> str:
        ident = {"experiment": self.experiment, "rule": self.rule, "model": self.model,
                 "dataset": self.dataset, "seed": self.seed, "scale": self.scale, "setting": self.setting}
        return hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]

    def label(self) -> str:
        extra = " ".join(f"{k}={v}" for k, v in self.setting.items())
        return f"{self.rule}/{self.model}/{self.dataset}/s{self.seed} {extra}".strip()


@dataclass(frozen=True)
class Experiment:
    name: str
    description: str
    cells: Callable[[bool], list[Cell]]  # quick -> the grid
    offline: bool = True  # runs without downloads
    runners: dict[str, CellRunner] = field(default_factory=dict)
    source: str = ""  # the paper / setting it reproduces


EXPERIMENTS: dict[str, Experiment] = {}


def experiment(name: str, description: str, *, offline: bool = True, source: str = "",
               runners: dict[str, CellRunner] | None = None) -> Callable:
    """Decorator: register ``fn(quick) -> list[Cell]`` as experiment ``name``."""
    def decorate(fn: Callable[[bool], list[Cell]]) -> Callable[[bool], list[Cell]]:
        EXPERIMENTS[name] = Experiment(name, description, fn, offline, dict(runners or {}), source)
        return fn
    return decorate


def get_experiment(name: str) -> Experiment:
    from . import experiments  # noqa: F401  (runs the @experiment lines)

    if name not in EXPERIMENTS:
        raise ValueError(f"Unknown experiment {name!r}; choose one of: {', '.join(sorted(EXPERIMENTS))}")
    return EXPERIMENTS[name]


def list_experiments() -> list[Experiment]:
    from . import experiments  # noqa: F401

    return [EXPERIMENTS[k] for k in sorted(EXPERIMENTS)]
