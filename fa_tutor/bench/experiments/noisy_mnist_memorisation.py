"""noisy-mnist-memorisation: the noisy-label sweep run until the networks memorise the labels.

Robertson & Koyejo's Fig. 4 asks what happens to generalisation when a network fits
*all* of its noisy labels, FA against GD. With App. A's schedule (lr 0.05 divided by
10 every 1,000 of 6,000 full-batch epochs, ``conservation-noisy-mnist``) no rule gets
past the ~75 % train accuracy that fitting the clean labels gives: training
stalls at the first drop of the step size, so the claim is never tested.

This experiment changes only what App. A leaves open to the schedule: the same
networks, data (4,000 mnist5k digits, 20 % of the labels flipped per seed),
initialisation, lr 0.05 and momentum 0.05, but a **constant** step size and
**12,000** epochs. A pilot run by hand (not a committed result) at width 200 (seed 0,
constant lr, 6,000 epochs) reached
91.0 % train accuracy for GD and 84.3 % for FA, still rising, with the test
accuracy falling from its peak (89.8 → 82.7 % for GD); at that rate twice the epochs
should put every rule past :data:`MEMORISED` at the widest width, and the committed
lines say whether it did. The recorders (conservation ratio, alignment,
update cosine) are those of ``conservation-noisy-mnist``, every 10 epochs.

Data: scale ``substituted`` (mnist5k's fixed 4k/1k split in place of a random 4k of
MNIST's 60k and its 10k test set), as in ``conservation-noisy-mnist``.
"""
from __future__ import annotations

import math

from ...training import RunConfig
from ..registry import Cell, experiment
from ._common import config_cell, grid, pick, scale_of
from .conservation_noisy_mnist import NOTE, RULES, run

NAME = "noisy-mnist-memorisation"
WIDTHS = [15, 60, 200]
SEEDS = [0, 1]
EPOCHS = 12000
MEMORISED = 90.0  # train accuracy (%) on the noisy labels that counts as memorised


def schedule_note(epochs: int) -> str:
    """What the cells change from App. A's schedule (in every line's ``config.note``)."""
    return ("Schedule changed from App. A so the nets memorise: constant lr 0.05 (no "
            f"division by 10 every 1,000 epochs), {epochs:,} full-batch epochs.")


SCHEDULE_NOTE = schedule_note(EPOCHS)
#: The widest nets again with a third more epochs for every rule: in 12,000 epochs adaFA
#: ended at 87 % train accuracy (both seeds), still rising ~1.3 points per 1,000 epochs
LONG = "noisy-mnist-memorisation-long"
LONG_WIDTH = 200
LONG_EPOCHS = 16000


def base_config(quick: bool, epochs: int = EPOCHS) -> RunConfig:
    """App. A's network and optimizer with a constant step size and ``epochs`` (12,000)."""
    return RunConfig(
        model="mlp", model_options={"activation": "leaky_relu", "bias": False},
        dataset="mnist5k", data_options={"label_noise": 0.2},
        optimizer="sgd", lr=0.05, momentum=0.05, weight_decay=0.0, schedule="constant",
        epochs=30 if quick else epochs, batch_size=0, eval_every=5 if quick else 10,
        init="default")


@experiment(NAME, "The noisy-label width sweep (widths 15/60/200, FA/adaFA/uSF/GD, 2 seeds) "
            "with a constant step size and 12,000 full-batch epochs, so the nets memorise "
            "the noisy labels: test accuracy and alignment under memorisation.",
            offline=True, runners={"train_recorded": run},
            source="Robertson & Koyejo 2024, Fig. 4 (memorisation of noisy labels), App. A")
def cells(quick: bool) -> list[Cell]:
    return sweep_cells(NAME, WIDTHS, EPOCHS, quick)


def sweep_cells(name: str, widths: list[int], epochs: int, quick: bool) -> list[Cell]:
    """One recorded cell per (seed, width, rule): App. A's nets, constant lr, ``epochs``."""
    base = base_config(quick, epochs)
    out = []
    for p in grid(seed=pick(SEEDS, quick), width=pick(widths, quick, "ends"), rule=RULES):
        cfg = base.replace(rule=p["rule"], seed=p["seed"],
                           model_options={**base.model_options, "hidden": [p["width"]]})
        out.append(config_cell(name, cfg, model="mlp", scale=scale_of(quick, "substituted"),
                               setting={"width": p["width"]}, runner="train_recorded",
                               note=f"{NOTE} {schedule_note(epochs)}",
                               history_every=1 if quick else 10))
    return out


@experiment(LONG, "noisy-mnist-memorisation's widest nets (width 200, FA/adaFA/uSF/GD, 2 seeds) "
            "with 16,000 instead of 12,000 constant-lr full-batch epochs, the same budget for "
            "every rule, so the slowest rule (adaFA) also memorises.",
            offline=True, runners={"train_recorded": run},
            source="Robertson & Koyejo 2024, Fig. 4 (memorisation of noisy labels), App. A")
def long_cells(quick: bool) -> list[Cell]:
    return sweep_cells(LONG, [LONG_WIDTH], LONG_EPOCHS, quick)


#: training accuracies (%) on the noisy labels at which runs are compared with each other
MATCHED_LEVELS = (85.0, 90.0)


def at_matched_memorisation(curves: "pd.DataFrame",
                            levels: tuple[float, ...] = MATCHED_LEVELS) -> "pd.DataFrame":
    """Each run's clean test accuracy at the first recorded epoch whose training accuracy on
    the noisy labels reaches each of ``levels``: rules compared at equal memorisation, not
    at the end of a budget that some of them use to memorise more.

    ``curves``: :func:`fa_tutor.bench.report.histories` of this experiment. One row per
    (width, rule, seed, level) that the run reached, with ``epoch`` and ``test_accuracy``.
    """
    import pandas as pd

    rows = []
    for (width, rule, seed), run in curves.groupby(["width", "rule", "seed"]):
        run = run.sort_values("epoch")
        for level in levels:
            hit = run[run.train_accuracy >= level]
            if len(hit):
                rows.append({"width": width, "rule": rule, "seed": seed, "level": level,
                             "epoch": int(hit.epoch.iloc[0]),
                             "test_accuracy": float(hit.test_accuracy.iloc[0])})
    return pd.DataFrame(rows, columns=["width", "rule", "seed", "level", "epoch", "test_accuracy"])


def long_budget_runs(short: "pd.DataFrame", long: "pd.DataFrame",
                     long_curves: "pd.DataFrame") -> "pd.DataFrame":
    """One row per (rule, seed) of :data:`LONG` beside the same seed's 12,000-epoch run.

    ``short``: :func:`fa_tutor.bench.report.load` of :data:`NAME`; ``long`` and
    ``long_curves``: ``load`` and ``histories`` of :data:`LONG`. Columns: the long run's
    train accuracy on the noisy labels at epoch :data:`EPOCHS` (``train_at_short``) and at
    the end, its final and best test accuracy, the epoch at which it first reaches
    :data:`MEMORISED` and its test accuracy there (nan where it never does), and
    ``short_train``, the 12,000-epoch line's final train accuracy for the same rule and seed.
    The schedule is constant, so up to epoch 12,000 the two runs are the same run:
    ``train_at_short - short_train`` measures how exactly a run repeats.
    """
    import pandas as pd

    cols = ["rule", "seed", "train_at_short", "short_train", "train_accuracy", "test_accuracy",
            "peak_test", "memorised_epoch", "test_at_memorised"]
    if long.empty:
        return pd.DataFrame(columns=cols)
    wide = short[short.width == LONG_WIDTH].set_index(["rule", "seed"]) if not short.empty \
        else pd.DataFrame()
    matched = at_matched_memorisation(long_curves, levels=(MEMORISED,))
    rows = []
    for _, line in long.iterrows():
        key = (line.rule, line.seed)
        run = long_curves[(long_curves.rule == line.rule) & (long_curves.seed == line.seed)]
        at_short = run[run.epoch == EPOCHS].train_accuracy
        hit = matched[(matched.rule == line.rule) & (matched.seed == line.seed)]
        rows.append({"rule": line.rule, "seed": int(line.seed),
                     "train_at_short": float(at_short.iloc[0]) if len(at_short) else math.nan,
                     "short_train": float(wide.train_accuracy[key]) if key in wide.index
                     else math.nan,
                     "train_accuracy": float(line.train_accuracy),
                     "test_accuracy": float(line.test_accuracy),
                     "peak_test": float(run.test_accuracy.max()) if len(run) else math.nan,
                     "memorised_epoch": float(hit.epoch.iloc[0]) if len(hit) else math.nan,
                     "test_at_memorised": float(hit.test_accuracy.iloc[0]) if len(hit)
                     else math.nan})
    return pd.DataFrame(rows, columns=cols)
