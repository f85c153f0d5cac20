"""lenet-cifar100-subsets and resnet18-tinyimagenet-subsets: Robertson & Koyejo's Tables 1 and 2.

Random k-class subsets (k = 10, 25, 50) of CIFAR-100 (LeNet, 6 repetitions) and
Tiny-ImageNet (ResNet-18, 4 repetitions), trained by FA, adaFA, sign-FA (uSF) and
GD (bp) with the settings of App. A: Xavier init, mean/std normalisation, SGD
with momentum 0.9 and weight decay 1e-4, the learning rate halved at two
milestones. The seed picks the k classes (``class_subset``), the initialisation
and the data order, so each repetition is a fresh random subset, as in the paper.
The paper's numbers are lost; these experiments produce ours.

Both need downloads: ``python -m fa_tutor data fetch cifar100`` (or
``tiny_imagenet``) once, then ``python -m fa_tutor bench run NAME --device cuda``.
Offline, the first cell stops with the loader's ``DatasetNotAvailable`` message.
"""
from __future__ import annotations

from ...training import RunConfig
from ..registry import Cell, experiment
from ._common import grid, pick, scale_of

RULES = ["fa", "adafa", "usf", "bp"]
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
#: --quick: the same configs on 512 training / 256 test images for one epoch.
QUICK = {"epochs": 1, "batch_size": 128, "milestones": ()}
QUICK_DATA = {"n_train": 512, "n_test": 256}


def subset_cells(name: str, base: RunConfig, seeds: list[int], quick: bool) -> list[Cell]:
    """One training cell per (k, rule, seed); the setting that varies is k."""
    out = []
    for p in grid(classes=CLASSES, rule=RULES, seed=pick(seeds, quick)):
        data = {"classes": p["classes"], **(QUICK_DATA if quick else {})}
        cfg = base.replace(rule=p["rule"], seed=p["seed"], data_options=data,
                           **(QUICK if quick else {}))
        out.append(Cell(name, p["rule"], base.model, base.dataset, p["seed"], scale_of(quick),
                        cfg, setting={"classes": p["classes"]}))
    return out


@experiment("lenet-cifar100-subsets", "LeNet on random 10/25/50-class subsets of CIFAR-100, "
            "FA/adaFA/uSF/GD, 6 repetitions (Robertson & Koyejo Table 1). Needs the CIFAR-100 "
            "download.", offline=False, source="Robertson & Koyejo 2024, Table 1 and App. A")
def lenet_cells(quick: bool) -> list[Cell]:
    return subset_cells("lenet-cifar100-subsets", LENET, list(range(6)), quick)


@experiment("resnet18-tinyimagenet-subsets", "ResNet-18 on random 10/25/50-class subsets of "
            "Tiny-ImageNet (validation set as test set), FA/adaFA/uSF/GD, 4 repetitions "
            "(Robertson & Koyejo Table 2). Needs the Tiny-ImageNet download.", offline=False,
            source="Robertson & Koyejo 2024, Table 2 and App. A")
def resnet_cells(quick: bool) -> list[Cell]:
    return subset_cells("resnet18-tinyimagenet-subsets", RESNET, list(range(4)), quick)
