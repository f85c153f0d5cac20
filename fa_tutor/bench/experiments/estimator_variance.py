r"""estimator-variance: how noisy and how well aimed each rule's update is, over training.

Every rule that runs on an MLP trains the same small network (784-128-128-10,
ReLU) on the offline ``mnist5k`` digits with the same optimizer. At
initialisation and after every epoch, on a fixed probe batch, the recorder
draws the rule's update :math:`g` several times and compares it with the true
gradient :math:`\nabla L` (``fa_tutor.metrics.estimator_stats``): the cosine
:math:`\cos\angle(g, \nabla L)` of single draws and of their mean, and the
variance of the draws relative to :math:`\|\nabla L\|^2`. Deterministic rules
(bp, the FA family except brSF, DFA, DKP) have zero variance on a fixed batch;
forward gradients trade variance for locality, and FDFA's moving average is
meant to lower it (Bacho & Chu). Rules that need local losses (``lg_*``) cannot
run on an MLP and are left out of the grid.
"""
from __future__ import annotations

from pathlib import Path

from torch import nn

from ...rules import available_rules, rule_spec
from ...training import RunConfig
from ..registry import Cell, experiment
from ._common import config_cell, pick, recorded_train, scale_of, summarize

NAME = "estimator-variance"
SEEDS = [0]
BASE = RunConfig(model="mlp", model_options={"hidden": [128, 128], "activation": "relu"},
                 dataset="mnist5k", optimizer="sgd", lr=0.02, momentum=0.9, batch_size=64,
                 epochs=8, eval_every=1)
DRAWS = 16
#: --quick: 512 training digits, one epoch, 4 draws per measurement.
QUICK = {"epochs": 1, "data_options": {"n_train": 512, "n_test": 256}}
QUICK_DRAWS = 4


def stats_recorder(draws: int):
    """Recorder: ``estimator_stats`` of the rule on the probe batch, numeric fields only."""
    from ...metrics import estimator_stats

    def record(model: nn.Module, rule, probe) -> dict[str, float]:
        stats = estimator_stats(model, rule, *probe, draws=draws)
        return {f"est_{k}": float(v) for k, v in dict(stats).items()
                if isinstance(v, (int, float))}
    return record


def run(cell: Cell, device: str, checkpoint: Path | None = None) -> dict:
    from ...rules import make_rule

    draws = cell.options["draws"]
    record = stats_recorder(draws)
    initial: dict[str, float] = {}

    def recorders(cfg: RunConfig, model: nn.Module) -> dict:
        initial.update(record(model, make_rule(cfg.rule, model, seed=cfg.seed,
                                               **_direct(cfg)), _probe(cfg, model)))
        return {"estimator": record}

    history, final, _ = recorded_train(cell, device, checkpoint, recorders)
    metrics = summarize(history, final)
    metrics.update({f"initial_{k}": v for k, v in initial.items()})
    return metrics


def _direct(cfg: RunConfig) -> dict:
    return {"input_shape": (1, 28, 28)} if rule_spec(cfg.rule).family == "direct feedback" \
        else {}


def _probe(cfg: RunConfig, model: nn.Module):
    """The loop's probe batch: the first 256 training examples, in order."""
    from ...data import batches
    from ._common import cached_data

    data = cached_data(cfg)
    device = next(model.parameters()).device
    return next(batches(data.x_train, data.y_train, 256, device=device))


@experiment(NAME, "Cosine to the true gradient and relative variance of every rule's update, "
            "over training, on a 784-128-128-10 MLP on mnist5k.", offline=True,
            runners={"estimator": run}, source="Baydin 2022; Ren et al. 2023; Bacho & Chu 2024")
def cells(quick: bool) -> list[Cell]:
    out = []
    rules = [r for r in available_rules() if not rule_spec(r).needs_local_losses]
    for rule in rules:
        for seed in pick(SEEDS, quick):
            cfg = BASE.replace(rule=rule, seed=seed, **(QUICK if quick else {}))
            out.append(config_cell(NAME, cfg, model="mlp", scale=scale_of(quick), setting={},
                                   runner="estimator", draws=QUICK_DRAWS if quick else DRAWS))
    return out
