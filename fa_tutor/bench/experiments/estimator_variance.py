r"""estimator-variance: how noisy and how well aimed each rule's update is, over training.

Every rule that runs on an MLP trains the same small network (784-128-128-10,
ReLU) on the offline ``mnist5k`` digits with the same optimizer. At
initialisation and after every epoch, on a fixed probe batch, the recorder
draws the rule's update :math:`g` several times and compares it with the true
gradient :math:`\nabla L` (``fa_tutor.metrics.estimator_stats``, passed the live
rule, so learned feedback is measured as trained): the cosine
:math:`\cos\angle(g, \nabla L)` of single draws and of their mean, the bias
:math:`\|\bar g - \nabla L\| / \|\nabla L\|` and the variance of the draws relative
to :math:`\|\nabla L\|^2`. Deterministic rules (bp, the FA family except brSF,
DFA, DKP) have zero variance on a fixed batch and show only their bias; forward
gradients are unbiased and pay with variance. FDFA's weight update is
deterministic given its feedback B: its forward-gradient noise enters B, averaged
over steps (Bacho & Chu), so here it shows as bias, not variance. Rules that
need local losses (``lg_*``) cannot run on an MLP and are left out of the grid.
"""
from __future__ import annotations

from pathlib import Path

from torch import Tensor, nn

from ...data import batches
from ...rules import NonFiniteLossError, available_rules, rule_spec
from ...training import RunConfig
from ..registry import Cell, experiment
from ._common import (cached_data, config_cell, diverged_metrics, pick, recorded_train, scale_of,
                      summarize)

NAME = "estimator-variance"
SEEDS = [0]
BASE = RunConfig(model="mlp", model_options={"hidden": [128, 128], "activation": "relu"},
                 dataset="mnist5k", optimizer="sgd", lr=0.02, momentum=0.9, batch_size=64,
                 epochs=8, eval_every=1)
DRAWS = 16  # samples of the update per measurement
#: --quick: 512 training digits, one epoch, 4 draws per measurement.
QUICK = {"epochs": 1, "data_options": {"n_train": 512, "n_test": 256}}
QUICK_DRAWS = 4
#: FG-W as Baydin et al. define it (every weight perturbed, the readout too), as committed
RULE_OPTIONS = {"fg_w": {"exact_readout": False}}


def total_stats(model: nn.Module, rule, x: Tensor, y: Tensor, draws: int, **kw) -> dict:
    r"""The "total" row of ``estimator_stats``: cosines, relative bias and variance.

    ``rel_var`` is :math:`\sum_i \mathrm{Var}(\hat g_i) / \|\nabla L\|^2` (the inverse
    signal-to-noise ratio; 0 for a deterministic update on a fixed batch).
    """
    from ...metrics import estimator_stats

    tot = estimator_stats(model, rule, x, y, n_samples=draws, **kw).set_index("param")
    tot = tot.loc["total"]
    return {"est_cosine": float(tot["cosine"]), "est_cosine_se": float(tot["cosine_se"]),
            "est_cosine_of_mean": float(tot["cosine_of_mean"]),
            "est_rel_bias": float(tot["rel_bias"]),
            "est_rel_var": float(tot["var_total"]) / float(tot["true_norm"]) ** 2}


def run(cell: Cell, device: str, checkpoint: Path | None = None) -> dict:
    """Train with a recorder that samples the live rule's update every epoch."""
    draws = cell.options["draws"]
    initial: dict[str, float] = {}

    def record(model: nn.Module, rule, probe) -> dict[str, float]:
        return total_stats(model, rule, *probe, draws)

    def recorders(cfg: RunConfig, model: nn.Module) -> dict:
        # at initialisation: a rule built like the run's (same name, seed and options)
        x, y = probe_batch(cfg, model)
        initial.update(total_stats(model, cfg.rule, x, y, draws, seed=cfg.seed,
                                   **cfg.rule_options))
        return {"estimator": record}

    try:
        history, final, _ = recorded_train(cell, device, checkpoint, recorders)
    except NonFiniteLossError as err:  # a result too: this rule diverges with this optimizer
        metrics = diverged_metrics(err)  # as a training cell: the measurements before it
        metrics["diverged"] = str(err).splitlines()[0]
        metrics.update({f"initial_{k}": v for k, v in initial.items()})
        return metrics
    metrics = summarize(history, final)
    metrics.update({f"initial_{k}": v for k, v in initial.items()})
    return metrics


def probe_batch(cfg: RunConfig, model: nn.Module) -> tuple[Tensor, Tensor]:
    """The training loop's probe batch: the first 256 training examples, in order."""
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
            cfg = BASE.replace(rule=rule, seed=seed, rule_options=RULE_OPTIONS.get(rule, {}),
                               **(QUICK if quick else {}))
            out.append(config_cell(NAME, cfg, model="mlp", scale=scale_of(quick), setting={},
                                   runner="estimator", draws=QUICK_DRAWS if quick else DRAWS))
    return out
