r"""lenet-cifar100-subsets and resnet18-tinyimagenet-subsets: Robertson & Koyejo's Tables 1 and 2.

Random k-class subsets (k = 10, 25, 50) of CIFAR-100 (LeNet, 6 repetitions) and
Tiny-ImageNet (ResNet-18, 4 repetitions), trained by FA, adaFA, sign-FA (uSF) and
GD (bp) with the settings of App. A: Xavier init, mean/std normalisation, SGD
with momentum 0.9 and weight decay 1e-4, the learning rate halved at two
milestones. The seed picks the k classes (``class_subset``), the initialisation
and the data order, so each repetition is a fresh random subset, as in the paper.
The paper's numbers are lost; these experiments produce ours.

Every epoch the recorder measures each layer's alignment on a fixed probe batch
(what the paper's appendix figure plots per layer): the weight alignment
:math:`\cos\angle(W_l, B_l)` (``weight_cos/<layer>``; GD has no feedback and
records none) and the update alignment :math:`\cos\angle(g_l, \nabla_{W_l} L)`
(``update_cos/<weight>``), so each line's history holds the per-layer curves.

Both need downloads: ``python -m fa_tutor data fetch cifar100`` (or
``tiny_imagenet``) once, then ``python -m fa_tutor bench run NAME --device cuda``.
Offline, the first cell stops with the loader's ``DatasetNotAvailable`` message.

``lenet-fashion-mnist-subsets`` is the offline proxy (scale ``substituted``): the same
LeNet, rules and recorders on Fashion-MNIST subsets of k ∈ {2, 5, 10} classes (the
first k classes would favour some; the seed draws them), 30 epochs with the lr halved
at epochs 6 and 15 (App. A's milestones at the same fractions of the run), 2 seeds —
alignment against the number of classes, the question Tables 1 and 2 ask.
"""
from __future__ import annotations

import math
from pathlib import Path

from torch import nn

from ...metrics import update_alignment, weight_alignment
from ...training import RunConfig
from ..registry import Cell, experiment
from .conservation_noisy_mnist import RULE_NAMES
from ._common import config_cell, grid, pick, recorded_train, scale_of, summarize

RULES = ["fa", "adafa", "usf", "bp"]
#: The rules with feedback weights B, compared with GD (``bp``) in the readings below.
FEEDBACK_RULES = [r for r in RULES if r != "bp"]
CLASSES = [10, 25, 50]

#: App. A, LeNet on CIFAR-100: batch 1024, 500 epochs, lr 0.01 halved at 100 and 250.
LENET = RunConfig(model="lenet", dataset="cifar100", optimizer="sgd", lr=0.01, momentum=0.9,
                  weight_decay=1e-4, schedule="step", milestones=(100, 250), gamma=0.5,
                  epochs=500, batch_size=1024, normalize=True, init="xavier", eval_every=1)
#: App. A, ResNet-18 on Tiny-ImageNet: batch 512, 50 epochs, lr 0.01 halved at 20 and 40.
RESNET = RunConfig(model="resnet18", dataset="tiny_imagenet", optimizer="sgd", lr=0.01,
                   momentum=0.9, weight_decay=1e-4, schedule="step", milestones=(20, 40),
                   gamma=0.5, epochs=50, batch_size=512, normalize=True, init="xavier",
                   eval_every=1)
#: The offline proxy: App. A's LeNet setting on Fashion-MNIST (32x32), 30 epochs.
FASHION = LENET.replace(dataset="fashion_mnist", epochs=30, milestones=(6, 15))
FASHION_CLASSES = [2, 5, 10]
FASHION_NOTE = ("Substituted data: Fashion-MNIST k-class subsets (k = 2, 5, 10; offline, "
                "resized to 32x32) in place of CIFAR-100's k = 10, 25, 50; 30 epochs with the "
                "lr halved at 6 and 15 instead of 500 (100, 250); 2 seeds.")
#: --quick: the same configs on 512 training / 256 test images for one epoch.
QUICK = {"epochs": 1, "batch_size": 128, "milestones": ()}
QUICK_DATA = {"n_train": 512, "n_test": 256}


def layer_alignment(model: nn.Module, rule, probe) -> dict[str, float]:
    """Per layer: cos∠(W_l, B_l) (rules with feedback) and cos∠(update, true gradient)."""
    out = {}
    if rule.feedback:
        for row in weight_alignment(model, rule).itertuples():
            out[f"weight_cos/{row.layer}"] = float(row.cosine)
    for row in update_alignment(model, rule, *probe).itertuples():
        if row.parameter == "total" or row.parameter.endswith(".weight"):
            out[f"update_cos/{row.parameter}"] = float(row.cosine)
    return out


def run(cell: Cell, device: str, checkpoint: Path | None = None) -> dict:
    """Train with the per-layer alignment recorder; the final row keeps the last values."""
    history, final, _ = recorded_train(cell, device, checkpoint,
                                       lambda cfg, model: {"alignment": layer_alignment})
    return summarize(history, final)


def subset_cells(name: str, base: RunConfig, seeds: list[int], quick: bool,
                 classes: list[int] = CLASSES, scale: str = "full", note: str = "",
                 data: dict | None = None) -> list[Cell]:
    """One recorded training cell per (k, rule, seed); the setting that varies is k."""
    out = []
    for p in grid(classes=classes, rule=RULES, seed=pick(seeds, quick)):
        opts = {**(data or {}), "classes": p["classes"], **(QUICK_DATA if quick else {})}
        cfg = base.replace(rule=p["rule"], seed=p["seed"], data_options=opts,
                           **(QUICK if quick else {}))
        out.append(config_cell(name, cfg, model=base.model, scale=scale_of(quick, scale),
                               setting={"classes": p["classes"]}, runner="train_recorded",
                               note=note))
    return out


@experiment("lenet-cifar100-subsets", "LeNet on random 10/25/50-class subsets of CIFAR-100, "
            "FA/adaFA/uSF/GD, 6 repetitions, per-layer alignment recorded (Robertson & Koyejo "
            "Table 1). Needs the CIFAR-100 download.", offline=False,
            runners={"train_recorded": run}, source="Robertson & Koyejo 2024, Table 1 and App. A")
def lenet_cells(quick: bool) -> list[Cell]:
    return subset_cells("lenet-cifar100-subsets", LENET, list(range(6)), quick)


@experiment("resnet18-tinyimagenet-subsets", "ResNet-18 on random 10/25/50-class subsets of "
            "Tiny-ImageNet (validation set as test set), FA/adaFA/uSF/GD, 4 repetitions "
            "(Robertson & Koyejo Table 2), per-layer alignment recorded. Needs the Tiny-ImageNet "
            "download.", offline=False, runners={"train_recorded": run},
            source="Robertson & Koyejo 2024, Table 2 and App. A")
def resnet_cells(quick: bool) -> list[Cell]:
    return subset_cells("resnet18-tinyimagenet-subsets", RESNET, list(range(4)), quick)


@experiment("lenet-fashion-mnist-subsets", "Offline proxy of the class-subset tables: LeNet "
            "on Fashion-MNIST 2/5/10-class subsets, FA/adaFA/uSF/GD, 2 seeds, 30 epochs, "
            "per-layer weight and update alignment vs the number of classes.", offline=True,
            runners={"train_recorded": run},
            source="Robertson & Koyejo 2024, Tables 1-2 setting (App. A), substituted data")
def fashion_cells(quick: bool) -> list[Cell]:
    return subset_cells("lenet-fashion-mnist-subsets", FASHION, [0, 1], quick,
                        classes=FASHION_CLASSES, scale="substituted", note=FASHION_NOTE,
                        data={"resize": 32})


#: Each model's output layer (the last layer with a B; a test checks it against ``find_layers``).
OUTPUT_LAYER = {"lenet": "fc2.weight", "resnet18": "fc.weight"}


def output_alignment_cap(k: int) -> float:
    r"""How far FA's output layer can align with its fixed random :math:`B_L` on k classes.

    Softmax cross-entropy's error :math:`e = \mathrm{softmax}(a_L) - \mathrm{onehot}(y)`
    sums to zero over the k classes (:math:`\mathbf 1^\top e = 0`), so every update
    :math:`-\eta\, e\, h_{L-1}^\top` of :math:`W_L` has zero column sums: what learning adds
    to :math:`W_L` lies in the subspace :math:`P = I - \tfrac1k \mathbf 1 \mathbf 1^\top`
    projects on (weight decay only shrinks the initial part). Its cosine with :math:`B_L` is
    therefore at most :math:`\|P B_L\|_F / \|B_L\|_F`, and for a :math:`B_L` of i.i.d.
    zero-mean entries

    .. math:: \frac{\mathbb E\,\|P B_L\|_F^2}{\mathbb E\,\|B_L\|_F^2} = \frac{k-1}{k},
        \qquad \text{cap}(k) = \sqrt{\frac{k-1}{k}}

    (0.71 at k = 2, 0.89 at 5, 0.95 at 10; 0.98 and 0.99 at 25 and 50). adaFA's
    :math:`B_L = W_L(0)` and uSF's :math:`B_L = M \odot \mathrm{sign}(W_L)` are not
    independent of :math:`W_L`, so no such cap applies to them.
    """
    if k < 2:
        raise ValueError(f"the cap needs k >= 2 classes, got {k}")
    return math.sqrt((k - 1) / k)


def alignment_by_classes(lines: "pd.DataFrame") -> "pd.DataFrame":
    """One row per (rule, classes, seed): the final weight alignment averaged over the
    layers that have a B (``weight_alignment``, mean of ``weight_cos/*``; nan for GD), split
    into the output layer's (``output_alignment``, :data:`OUTPUT_LAYER` of the line's
    ``model``) and the mean of the layers below it (``hidden_alignment``), the alignment of
    the whole update with the true gradient (``update_alignment``, ``update_cos/total``),
    ``test_accuracy`` and ``gap_to_gd``, the test accuracy minus GD's on the same classes
    (same k and seed: the seed draws the classes; nan for GD and where GD's line is missing),
    and the same two on the training set (``train_accuracy``, ``train_gap_to_gd``; nan where
    a line has no train accuracy). ``lines``: ``report.load`` of a subset experiment."""
    import pandas as pd

    cols = ["rule", "classes", "seed", "weight_alignment", "output_alignment",
            "hidden_alignment", "update_alignment", "test_accuracy", "gap_to_gd",
            "train_accuracy", "train_gap_to_gd"]
    if lines.empty:
        return pd.DataFrame(columns=cols)
    weight = [c for c in lines.columns if c.startswith("weight_cos/")]
    out = lines[["rule", "classes", "seed", "test_accuracy"]].copy()
    nan = float("nan")
    out["train_accuracy"] = lines.get("train_accuracy", nan)
    out["weight_alignment"] = lines[weight].mean(axis=1) if weight else nan
    out["output_alignment"], out["hidden_alignment"] = nan, nan
    models = lines["model"] if "model" in lines else pd.Series(None, index=lines.index)
    for model, rows in lines.groupby(models).groups.items():
        output = f"weight_cos/{OUTPUT_LAYER.get(model, '')}"
        if output in weight:
            out.loc[rows, "output_alignment"] = lines.loc[rows, output]
            hidden = [c for c in weight if c != output]
            if hidden:
                out.loc[rows, "hidden_alignment"] = lines.loc[rows, hidden].mean(axis=1)
    out["update_alignment"] = lines.get("update_cos/total", nan)
    for accuracy, gap in (("test_accuracy", "gap_to_gd"), ("train_accuracy", "train_gap_to_gd")):
        out[gap] = _minus_gd(out, accuracy, ["classes", "seed"])
    return out[cols].reset_index(drop=True)


def _minus_gd(frame: "pd.DataFrame", column: str, keys: list[str]) -> "pd.Series":
    """``frame[column]`` minus GD's (rule ``bp``) on the rows with the same ``keys``; nan
    for GD's own rows and where GD's row is missing."""
    import pandas as pd

    gd = frame[frame.rule == "bp"].set_index(keys)[column]
    paired = gd.reindex(pd.MultiIndex.from_frame(frame[keys])).to_numpy()
    return pd.Series(frame[column].to_numpy() - paired, index=frame.index).where(frame.rule != "bp")


def _gap_change(gaps: "pd.core.groupby.SeriesGroupBy", lo, hi) -> str | None:
    """:func:`_change` in a gap's words: a gap that falls below zero ``widens``, one that
    rises toward it ``narrows``."""
    change = _change(gaps, lo, hi)
    return {"falls": "widens", "rises": "narrows"}.get(change, change)


def _change(values: "pd.core.groupby.SeriesGroupBy", lo, hi) -> str | None:
    """``rises``/``falls``/``stays within the seeds' spread`` from group lo to group hi (two
    class counts, or two epoch windows); None unless both ends have two seeds (a spread to
    judge the change by)."""
    if min(values.count().get(lo, 0), values.count().get(hi, 0)) < 2:
        return None
    mean, std = values.mean(), values.std()
    drop, spread = mean[lo] - mean[hi], max(std[lo], std[hi])
    return "falls" if drop > spread else "rises" if -drop > spread else \
        "stays within the seeds' spread"


def _per_group(values: "pd.core.groupby.SeriesGroupBy", keys: list, digits: int) -> str:
    """``"mean ± std"`` over the seeds in each group (a k, or an epoch window), comma-separated;
    the mean alone for one seed."""
    from .. import report

    return ", ".join(report.mean_std(values.get_group(key), digits) for key in keys)


def fa_output_reading(per_seed: "pd.DataFrame") -> str:
    """FA's alignment per layer group against k, read from :func:`alignment_by_classes`: the
    output layer's cosine beside its cap (:func:`output_alignment_cap`) and as a fraction of
    it, and the mean of the layers below; a change counts only beyond the seeds' spread
    (two seeds at both ends)."""
    fa = per_seed[per_seed.rule == "fa"].dropna(subset=["output_alignment"])
    ks = sorted(fa.classes.unique())
    if len(ks) < 2:
        return "FA's output-layer alignment needs lines at two class counts."
    fa = fa.assign(cap=fa.classes.map(output_alignment_cap))
    fa = fa.assign(of_cap=fa.output_alignment / fa.cap)
    by = fa.groupby("classes")
    lo, hi = ks[0], ks[-1]
    text = (f"FA's output layer: cos∠(W_L, B_L) = {_per_group(by.output_alignment, ks, 3)} at "
            f"k = {', '.join(str(k) for k in ks)}, under caps of "
            f"{', '.join(f'{output_alignment_cap(k):.3f}' for k in ks)}; "
            f"as a fraction of its cap {_per_group(by.of_cap, ks, 3)}")
    changes = [_change(by.of_cap, lo, hi)]
    if changes[0] is None:
        return text + " (one seed at one end: no spread to judge the change by yet)."
    text += f", which {changes[0]} from k = {lo} to k = {hi}."
    hidden = _change(by.hidden_alignment, lo, hi)
    if hidden is not None:
        changes.append(hidden)
        text += (f" The layers below it average {_per_group(by.hidden_alignment, ks, 3)} "
                 f"(their mean {hidden} from k = {lo} to k = {hi}).")
    if all(c.startswith("stays") for c in changes):
        text += " Beyond the cap, nothing moves FA's alignment by more than the seeds' spread."
    return text


def alignment_verdict(per_seed: "pd.DataFrame") -> str:
    """Robertson & Koyejo's App. B.2 claim read from :func:`alignment_by_classes`: does each
    feedback rule's weight alignment fall from the fewest to the most classes by more than
    the seeds' spread, and in which order of size (the paper: most for FA, then adaFA, least
    for sign-FA)?"""
    if per_seed.empty:
        return "No line is committed yet."
    ks = sorted(per_seed.classes.unique())
    if len(ks) < 2:
        return f"Only k = {ks[0]} is committed; the claim needs at least two class counts."
    lo, hi = ks[0], ks[-1]
    drops, out = {}, []
    for rule in [r for r in FEEDBACK_RULES if r in set(per_seed.rule)]:
        at = per_seed[per_seed.rule == rule].groupby("classes").weight_alignment
        if lo not in at.groups or hi not in at.groups:
            continue
        mean, std = at.mean(), at.std()
        drop, spread = mean[lo] - mean[hi], max(std[lo], std[hi])
        seeds = int(min(at.count()[lo], at.count()[hi]))
        what = _change(at, lo, hi)
        if what is None:  # a spread needs two seeds at both ends: report the values, no verdict
            out.append(f"{RULE_NAMES[rule]}'s mean weight alignment goes from {mean[lo]:.3f} at "
                       f"k = {lo} to {mean[hi]:.3f} at k = {hi} (one seed at one end: no spread "
                       "to judge the change by yet).")
            continue
        drops[rule] = drop
        out.append(f"{RULE_NAMES[rule]}'s mean weight alignment {what} from "
                   f"k = {lo} to k = {hi} ({mean[lo]:.3f} → {mean[hi]:.3f}, "
                   f"spread {spread:.3f}, {seeds} seeds).")
    if len(drops) > 1:
        order = sorted(drops, key=drops.get, reverse=True)
        paper = [r for r in ("fa", "adafa", "usf") if r in drops]
        out.append("Largest fall first: " + ", ".join(RULE_NAMES[r] for r in order) + " — "
                   + ("the paper's order." if order == paper else
                      "the paper's order is " + ", ".join(RULE_NAMES[r] for r in paper) + "."))
    return " ".join(out)


def gap_reading(per_seed: "pd.DataFrame") -> str:
    """Each feedback rule's test accuracy minus GD's on the same classes, per k (mean ± std
    over seeds, from :func:`alignment_by_classes`), whether uSF's gap changes from the
    fewest to the most classes by more than the seeds' spread, how often uSF is nearer GD
    than adaFA (the paper: sign-FA stays competitive with GD as k grows, more robustly than
    adaFA), and whether the gaps are in fitting the training set or in generalising."""
    gaps = per_seed.dropna(subset=["gap_to_gd"])
    if gaps.empty:
        return "No rule has a GD line on the same classes yet."
    parts = []
    for rule in [r for r in FEEDBACK_RULES if r in set(gaps.rule)]:
        by = gaps[gaps.rule == rule].groupby("classes").gap_to_gd
        ks = sorted(by.groups)
        parts.append(f"{RULE_NAMES[rule]} {_per_group(by, ks, 2)} at k = {', '.join(map(str, ks))}")
    text = ("Test accuracy minus GD's on the same classes, in points: " + "; ".join(parts) + ".")
    usf = gaps[gaps.rule == "usf"].groupby("classes").gap_to_gd
    ks = sorted(usf.groups)
    change = _gap_change(usf, ks[0], ks[-1]) if len(ks) >= 2 else None
    if change is not None:
        text += f" uSF's gap to GD {change} from k = {ks[0]} to k = {ks[-1]}."
    return " ".join([text] + [t for t in (_nearer_gd(gaps, "usf", "adafa"),
                                          _fitting_or_generalising(per_seed)) if t])


def _nearer_gd(gaps: "pd.DataFrame", rule: str, other: str) -> str | None:
    """On how many of the (k, seed) pairs where both have a gap to GD ``rule`` is nearer
    GD than ``other``; None where they share no pair."""
    pair = gaps[gaps.rule.isin([rule, other])].pivot_table(
        index=["classes", "seed"], columns="rule", values="gap_to_gd").dropna()
    if rule not in pair or other not in pair or pair.empty:
        return None
    nearer = int((pair[rule] > pair[other]).sum())
    return (f"{RULE_NAMES[rule]} is nearer GD than {RULE_NAMES[other]} on {nearer} of the "
            f"{len(pair)} (k, seed) pairs.")


def _fitting_or_generalising(per_seed: "pd.DataFrame", most: float = 0.8) -> str | None:
    """At the most classes, each rule's gap to GD on the training set and its share of the
    gap on the test set (means over seeds); where every rule is behind GD and every share
    is at least ``most``, the rules fall behind GD in fitting the data, not in generalising
    from it. Also how much of that training set GD itself fits. None without train
    accuracies."""
    both = per_seed.dropna(subset=["gap_to_gd", "train_gap_to_gd"])
    gd = per_seed[per_seed.rule == "bp"].dropna(subset=["train_accuracy"])
    if both.empty or gd.empty:
        return None
    from .. import report

    hi = max(both.classes)
    at = both[both.classes == hi].groupby("rule")[["gap_to_gd", "train_gap_to_gd"]].mean()
    rules = [r for r in FEEDBACK_RULES if r in at.index]
    share = at.train_gap_to_gd / at.gap_to_gd
    text = (f"At k = {hi} the gap on the training set is "
            + ", ".join(f"{at.train_gap_to_gd[r]:.2f}" for r in rules) + " points for "
            + ", ".join(RULE_NAMES[r] for r in rules) + " ("
            + ", ".join(f"{100 * share[r]:.0f} %" for r in rules) + " of the test-set gap)")
    if all(at.gap_to_gd[r] < 0 and share[r] >= most for r in rules):
        text += ": the rules fall behind GD in fitting the data, not in generalising from it"
    fits = report.mean_std(gd[gd.classes == hi].train_accuracy, 1)
    return text + f"; GD itself fits {fits} % of that training set in this budget."


def gap_over_run(histories: "pd.DataFrame", window: int = 5) -> str:
    """Whether the gaps to GD at the most classes close or widen late in training: each
    feedback rule's test accuracy minus GD's (same classes and seed, epoch by epoch), averaged
    over the ``window`` epochs up to half-way and over the last ``window`` epochs, mean ± std
    over seeds; a change counts only beyond the seeds' spread. ``histories``:
    ``report.histories`` of a subset experiment."""
    import pandas as pd

    if histories.empty or "bp" not in set(histories.rule):
        return "The gap over the run needs GD's history beside the rules'."
    hi = int(histories.classes.max())
    at = histories[histories.classes == hi]
    runs = at.assign(gap=_minus_gd(at, "test_accuracy", ["seed", "epoch"])).dropna(subset=["gap"])
    last = int(runs.epoch.max()) if not runs.empty else 0
    mid = last // 2
    if mid < window:
        return f"The gap over the run needs at least {2 * window} epochs of history."
    windows = {f"epochs {mid - window + 1}–{mid}": (mid - window, mid),
               f"epochs {last - window + 1}–{last}": (last - window, last)}
    early, late = windows
    parts = []
    for rule in [r for r in FEEDBACK_RULES if r in set(runs.rule)]:
        one = runs[runs.rule == rule]
        means = pd.concat([one[(one.epoch > a) & (one.epoch <= b)].groupby("seed").gap.mean()
                           .rename(name) for name, (a, b) in windows.items()], axis=1)
        long = means.melt(var_name="window", value_name="gap").groupby("window").gap
        change = _gap_change(long, early, late)
        parts.append(f"{RULE_NAMES[rule]} {_per_group(long, [early, late], 2)}"
                     + (f" ({change})" if change else ""))
    return (f"At k = {hi}, the gap to GD averaged over {early} and over {late}: "
            + "; ".join(parts) + ".")
