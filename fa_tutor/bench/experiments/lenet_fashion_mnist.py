"""lenet-fashion-mnist: biotorch's published LeNet-5 Fashion-MNIST row, plus adaFA, KP and DKP.

Setting of biotorch's ``Benchmarks.md`` MNIST / Fashion-MNIST rows (Sanfiz & Akrout
2021): LeNet-5 (conv 6/16/120, fc 84) on 32×32 inputs (the 28×28 images bilinearly
resized), SGD with momentum 0.9 and weight decay 1e-3, batch 64, 100 epochs, the
best-validation epoch's model evaluated on the 10k test set. Validation: 10 % of
the 60k training images (``val_fraction=0.1``; biotorch's exact split is not
published). Inputs are standardised (``normalize=True``: the training set's mean
0.286 and std 0.353, the constants of biotorch's Fashion-MNIST data set class).
Learned feedback (kp, dkp) uses the same optimizer as the forward weights. The
training set is not evaluated again after each epoch (``eval_train=False``, as in the
selection): the lines keep each epoch's running training loss (what the blow-up check
reads), and a pass over the 54k images would add about a third to every epoch.

Learning rates, one per rule (biotorch's published configurations also set one per
method; the Fashion-MNIST ones are not published). They are chosen by the
``lenet-fashion-mnist-lr`` experiment with the same budget for every rule
(:data:`LR_GRID` × 5 epochs, seed 0, on the validation split, never on test; see
:func:`select_learning_rates`) and written into :data:`LEARNING_RATES`; a test checks
that they equal the selection that the committed lines give. Five epochs cannot see a
blow-up that starts later: a rate at which a full-scale run of any seed blew up is listed
in :data:`BLEW_UP_AT_FULL_SCALE` (its lines stay committed) and the rule's full-scale cells
run at the next lower rate of the grid (adaFA: 0.003 blew up in epoch 9, so 0.001; DFA:
0.001 blew up for seed 2 in epoch 6, so 0.0003; a test checks each entry against its
committed lines). The first committed
grid used one assumed η = 0.01 for every rule and unnormalised inputs: FA, adaFA
and DFA blew up there and DKP's loss became NaN (lines with ``setting == {}``,
kept as the record of that finding).

Offline: the Debian package ``dataset-fashion-mnist`` (or ``python -m fa_tutor data
fetch fashion_mnist``).
"""
from __future__ import annotations

from ...rules import rule_spec
from ...training import RunConfig, blew_up, blow_up_epoch
from ..registry import Cell, experiment
from ._common import grid, pick, scale_of

NAME = "lenet-fashion-mnist"
SELECTION = "lenet-fashion-mnist-lr"
#: biotorch's published rows first, then the rules biotorch lacks.
RULES = ["bp", "fa", "usf", "brsf", "frsf", "dfa", "adafa", "kp", "dkp"]
#: three seeds for the rules biotorch reports, one for the others
SEEDS = {"bp": [0, 1, 2], "fa": [0, 1, 2], "usf": [0, 1, 2], "brsf": [0, 1, 2],
         "frsf": [0, 1, 2], "dfa": [0, 1, 2], "adafa": [0], "kp": [0], "dkp": [0]}
BASE = RunConfig(model="lenet5", dataset="fashion_mnist", data_options={"resize": 32},
                 optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=1e-3, epochs=100,
                 batch_size=64, val_fraction=0.1, init="xavier", eval_every=1, normalize=True)
#: the learning-rate grid of the selection, the same for every rule
LR_GRID = [1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4]
#: the selection's budget per (rule, lr): epochs of the full training split
SELECTION_EPOCHS = 5
#: the rates :func:`select_learning_rates` chose from the committed selection lines
LEARNING_RATES: dict[str, float] = {"bp": 0.01, "fa": 0.001, "usf": 0.03, "brsf": 0.03, "frsf": 0.01, "dfa": 0.001, "adafa": 0.003, "kp": 0.003}
#: rates at which a full-scale run (of any seed) blew up after the selection's 5 epochs (the
#: committed lines are kept): the rule's full-scale cells run at the next lower rate of
#: :data:`LR_GRID` instead (:func:`full_scale_rate`). A choice made on the training loss,
#: never on test data. adaFA 0.003: seed 0 in epoch 9; DFA 0.001: seed 2 in epoch 6
#: (seeds 0 and 1 trained stably at it).
BLEW_UP_AT_FULL_SCALE: dict[str, list[float]] = {"adafa": [0.003], "dfa": [0.001]}
SELECTION_NOTE = (f"Learning-rate selection: {SELECTION_EPOCHS} epochs on the 54k training "
                  "split, scored on the 6k validation split (best-validation epoch); not a "
                  "result to compare with the published 100-epoch errors.")
#: --quick: 1,024 training / 512 test images, one epoch.
QUICK = {"epochs": 1}
QUICK_DATA = {"resize": 32, "n_train": 1024, "n_test": 512}


def stable(history_train_loss: list[float]) -> bool:
    """No NaN/inf epoch and no epoch above ``fa_tutor.training.BLOWUP_FACTOR`` (10) × the first
    epoch's loss (:func:`fa_tutor.training.blew_up`, the criterion the book's sweeps use too)."""
    return not blew_up(history_train_loss)


def unstable(line: dict) -> bool:
    """Whether a result line's run diverged (``diverged_epoch``) or blew up."""
    m = line["metrics"]
    return "diverged_epoch" in m or not stable(m.get("history", {}).get("train_loss", []))


def full_scale_rate(rule: str) -> float | None:
    """The rate of ``rule``'s full-scale cells: the selected one (:data:`LEARNING_RATES`), or,
    where a full-scale run at it blew up (:data:`BLEW_UP_AT_FULL_SCALE`), the next lower rate
    of :data:`LR_GRID` that has not; None while the selection has not chosen one."""
    lr = LEARNING_RATES.get(rule)
    if lr is None:
        return None
    blown = BLEW_UP_AT_FULL_SCALE.get(rule, [])
    return next((r for r in sorted(LR_GRID, reverse=True) if r <= lr and r not in blown), None)


def selection_lines() -> list[dict]:
    """The committed, current ``lenet-fashion-mnist-lr`` lines (scale ``substituted``)."""
    from ..report import current_lines
    return current_lines(SELECTION, scale="substituted")


def rules_without_a_stable_rate(lines: list[dict]) -> list[str]:
    """Rules whose every rate of :data:`LR_GRID` has a selection line, all of them unstable."""
    tried: dict[str, list[bool]] = {}
    for line in lines:
        tried.setdefault(line["rule"], []).append(unstable(line))
    return [r for r in RULES if len(tried.get(r, [])) == len(LR_GRID) and all(tried[r])]


def given_up_reading(lines: list[dict]) -> str:
    """What the full-scale lines at each rate of :data:`BLEW_UP_AT_FULL_SCALE` show: the seed(s)
    that blew up (epoch, losses, best-validation test error), the seeds that trained stably
    at that rate, and, beside the latter, the mean test error at the rate now used.

    ``lines``: the committed ``lenet-fashion-mnist`` lines (:func:`..report.current_lines`).
    """
    full = [line for line in lines if line["scale"] == "full" and "lr" in line["setting"]]
    parts = []
    for rule, rates in BLEW_UP_AT_FULL_SCALE.items():
        new_rate = full_scale_rate(rule)
        now = [line["metrics"]["test_error"] for line in full
               if line["rule"] == rule and line["setting"]["lr"] == new_rate]
        for lr in rates:
            blew, calm, calm_errors = [], [], []
            for line in sorted((x for x in full if x["rule"] == rule and x["setting"]["lr"] == lr),
                               key=lambda x: x["seed"]):
                losses = line["metrics"].get("history", {}).get("train_loss", [])
                epoch, error = blow_up_epoch(losses), line["metrics"]["test_error"]
                if epoch is None:
                    calm.append(f"{line['seed']} ({error:.2f} % test error)")
                    calm_errors.append(error)
                else:
                    blew.append(f"in epoch {epoch} for seed {line['seed']} (the epoch's mean "
                                f"training loss {losses[epoch - 1]:.3g} against {losses[0]:.3g} in "
                                f"epoch 1, {max(losses):.3g} at the worst; best-validation test "
                                f"error {error:.2f} %)")
            if not blew:
                continue
            calm_text = ("seed " + calm[0] if len(calm) == 1 else
                         "seeds " + ", ".join(calm[:-1]) + " and " + calm[-1] if calm else "")
            parts.append(
                f"{rule_spec(rule).label}'s selected η = {lr:g} blew up {' and '.join(blew)}, after "
                f"the {SELECTION_EPOCHS} epochs of the selection"
                + (f", while {calm_text} trained stably at it" if calm else "")
                + f". Its cells run at the next rate down, η = {new_rate:g} (the lines at "
                f"η = {lr:g} stay committed)"
                + (f"; there its {len(now)} seed(s) average {sum(now) / len(now):.2f} % against "
                   f"{sum(calm_errors) / len(calm_errors):.2f} % for the stable seed(s) at {lr:g}: "
                   "the price of a rate every seed survives." if calm and now else "."))
    return " ".join(parts) or "No full-scale run at a selected rate has blown up."


def select_learning_rates(lines: list[dict]) -> dict[str, float]:
    """Per rule, the lr of the best validation accuracy among the stable selection runs.

    ``lines``: result lines of ``lenet-fashion-mnist-lr`` (scale ``substituted``). A run that
    diverged (``diverged_epoch``) or blew up (:func:`stable`) is never chosen; a rule with no
    stable rate is left out. Ties go to the larger rate (fewer epochs to the same point).
    """
    best: dict[str, tuple[float, float]] = {}
    for line in lines:
        if line.get("scale") != "substituted":
            continue
        m = line["metrics"]
        if "val_accuracy" not in m or unstable(line):
            continue
        rule, lr = line["rule"], float(line["setting"]["lr"])
        score = (float(m["val_accuracy"]), lr)
        if rule not in best or score > best[rule]:
            best[rule] = score
    return {rule: lr for rule, (_, lr) in sorted(best.items())}


@experiment(SELECTION, "Learning-rate selection for lenet-fashion-mnist: every rule x lr in "
            "{1e-1 ... 1e-4}, 5 epochs, seed 0, scored on the validation split.",
            offline=True, source="the lenet-fashion-mnist setting, shortened (selection only)")
def selection_cells(quick: bool) -> list[Cell]:
    out = []
    for p in grid(rule=RULES, lr=pick(LR_GRID, quick, "ends")):
        cfg = BASE.replace(rule=p["rule"], lr=p["lr"], seed=0, eval_train=False,
                           epochs=QUICK["epochs"] if quick else SELECTION_EPOCHS,
                           data_options=QUICK_DATA if quick else BASE.data_options)
        out.append(Cell(SELECTION, p["rule"], "lenet5", "fashion_mnist", 0,
                        scale_of(quick, "substituted"), cfg, setting={"lr": p["lr"]},
                        options={"note": SELECTION_NOTE}))
    return out


@experiment(NAME, "LeNet-5 on Fashion-MNIST (32x32, standardised), BP/FA/uSF/brSF/frSF/DFA "
            "(biotorch's published row, 3 seeds) and adaFA/KP/DKP (1 seed): SGD momentum 0.9, "
            "wd 1e-3, batch 64, 100 epochs, a validated lr per rule, best-val model on test.",
            offline=True, source="Sanfiz & Akrout 2021 (biotorch Benchmarks.md), Fashion-MNIST row")
def cells(quick: bool) -> list[Cell]:
    out = []
    for rule in RULES:
        lr = full_scale_rate(rule)
        if lr is None:  # not selected yet: its cells wait for lenet-fashion-mnist-lr
            continue
        for seed in pick(SEEDS[rule], quick):
            cfg = BASE.replace(rule=rule, seed=seed, lr=lr, eval_train=False,
                               **(QUICK if quick else {}),
                               data_options=QUICK_DATA if quick else BASE.data_options)
            out.append(Cell(NAME, rule, "lenet5", "fashion_mnist", seed, scale_of(quick), cfg,
                            setting={"lr": lr}))
    return out
