"""Shared pieces of the experiment declarations: grids, cached data, a recording runner.

Every experiment module declares its grid as data (``grid(rule=..., seed=...)``,
an ``itertools.product`` of named axes) and builds one :class:`Cell` per point.
``--quick`` keeps the same axes, the same config and the same code path; it only
takes a slice of the long axes (:func:`pick`) and a tiny budget.
"""
from __future__ import annotations

import functools
import itertools
import json
from pathlib import Path
from typing import Any, Callable

import pandas as pd
from torch import nn

from ...data import Dataset
from ...training import RunConfig, build_data, train
from ..registry import Cell
from ..runner import diverged_metrics, summarize  # noqa: F401  (re-exported for the experiment modules)

#: Called once with the config and the freshly initialised model, before training;
#: returns the recorders ``{name: fn(model, rule, probe batch) -> dict | float}``.
RecorderFactory = Callable[[RunConfig, nn.Module], dict[str, Callable]]


def grid(**axes: list) -> list[dict[str, Any]]:
    """All combinations of the named axes, in order: ``grid(a=[1, 2], b=["x"])``.

    >>> grid(rule=["bp", "fa"], seed=[0])
    [{'rule': 'bp', 'seed': 0}, {'rule': 'fa', 'seed': 0}]
    """
    names = list(axes)
    return [dict(zip(names, values)) for values in itertools.product(*axes.values())]


def pick(values: list, quick: bool, keep: int | str = 1) -> list:
    """The axis itself, or for ``--quick`` its first ``keep`` values ("ends": first and last)."""
    if not quick:
        return list(values)
    if keep == "ends":
        return [values[0], values[-1]] if len(values) > 1 else list(values)
    return list(values)[: int(keep)]


def scale_of(quick: bool, full: str = "full") -> str:
    """``"quick"`` for ``--quick``, else ``full`` (``"full"`` or ``"substituted"``)."""
    return "quick" if quick else full


@functools.lru_cache(maxsize=4)
def _cached(key: str) -> Dataset:
    return build_data(RunConfig.from_dict(json.loads(key)))


def cached_data(cfg: RunConfig) -> Dataset:
    """``build_data(cfg)``, cached per (dataset, data options, seed) within one process."""
    key = {"dataset": cfg.dataset, "data_options": cfg.data_options, "seed": cfg.seed}
    return _cached(json.dumps(key, sort_keys=True))


def config_cell(experiment: str, cfg: RunConfig, *, model: str, scale: str,
                setting: dict, runner: str, note: str = "", **extra: Any) -> Cell:
    """A cell for a custom runner: the resolved config travels flat in ``options``.

    The result line's ``config`` is then ``cfg.to_dict()`` plus ``note`` (what
    was substituted) and ``extra`` (runner settings), e.g. history thinning.
    """
    options = {**cfg.to_dict(), **extra}
    if note:
        options["note"] = note
    return Cell(experiment, cfg.rule, model, cfg.dataset, cfg.seed, scale, None,
                setting=setting, options=options, runner=runner)


def cell_config(cell: Cell) -> RunConfig:
    """The RunConfig stored flat in a :func:`config_cell`'s options (runner keys dropped)."""
    fields = RunConfig.__dataclass_fields__
    return RunConfig.from_dict({k: v for k, v in cell.options.items() if k in fields})


def recorded_train(cell: Cell, device: str, checkpoint: Path | None,
                   recorders: RecorderFactory) -> tuple[pd.DataFrame, dict, Any]:
    """Train a :func:`config_cell` with recorders; resume from ``checkpoint`` if given.

    ``recorders(cfg, model)`` is called once before training with the freshly
    initialised model, already on the run's device (so a recorder can keep the
    initial state, e.g. the conservation law's reference, next to the live
    weights, and a rule it builds draws the same feedback as the run's rule);
    the recorders it returns run every
    ``eval_every`` epochs. Every recorded value lives in the history rows, which
    the checkpoint stores, so a resumed run gives the same history.
    """
    from ...training import build_model
    from ...utils import resolve_device, seed_everything

    cfg = cell_config(cell).replace(device=device)
    data = cached_data(cfg)
    seed_everything(cfg.seed)
    model = build_model(cfg, data).to(resolve_device(cfg.device))
    recs = recorders(cfg, model)
    result = train(cfg, data=data, model=model, recorders=recs, checkpoint=checkpoint,
                   progress=False)
    return result.history, result.final, result
