"""lenet-fashion-mnist: biotorch's published LeNet-5 Fashion-MNIST row, plus adaFA, KP and DKP.

Setting of biotorch's ``Benchmarks.md`` MNIST / Fashion-MNIST rows (Sanfiz & Akrout
2021): LeNet-5 (conv 6/16/120, fc 84) on 32×32 inputs (the 28×28 images bilinearly
resized), SGD with momentum 0.9 and weight decay 1e-3, batch 64, 100 epochs, the
best-validation epoch's model evaluated on the 10k test set. Validation: 10 % of
the 60k training images (``val_fraction=0.1``; biotorch's exact split is not
published). The learning rate is not in the published notes; 0.01 is assumed.
Learned feedback (kp, dkp) uses the same optimizer as the forward weights.

Offline: the Debian package ``dataset-fashion-mnist`` (or ``python -m fa_tutor data
fetch fashion_mnist``).
"""
from __future__ import annotations

from ...training import RunConfig
from ..registry import Cell, experiment
from ._common import grid, pick, scale_of

NAME = "lenet-fashion-mnist"
#: biotorch's published rows first, then the rules biotorch lacks.
RULES = ["bp", "fa", "usf", "brsf", "frsf", "dfa", "adafa", "kp", "dkp"]
SEEDS = [0]
BASE = RunConfig(model="lenet5", dataset="fashion_mnist", data_options={"resize": 32},
                 optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=1e-3, epochs=100,
                 batch_size=64, val_fraction=0.1, init="xavier", eval_every=1)
#: --quick: 1,024 training / 512 test images, one epoch.
QUICK = {"epochs": 1}
QUICK_DATA = {"resize": 32, "n_train": 1024, "n_test": 512}


@experiment(NAME, "LeNet-5 on Fashion-MNIST (32x32), BP/FA/uSF/brSF/frSF/DFA (biotorch's "
            "published row) and adaFA/KP/DKP: SGD momentum 0.9, wd 1e-3, batch 64, 100 epochs, "
            "best-val model on test.", offline=True,
            source="Sanfiz & Akrout 2021 (biotorch Benchmarks.md), Fashion-MNIST row")
def cells(quick: bool) -> list[Cell]:
    out = []
    for p in grid(rule=RULES, seed=pick(SEEDS, quick)):
        cfg = BASE.replace(rule=p["rule"], seed=p["seed"], **(QUICK if quick else {}),
                           data_options=QUICK_DATA if quick else BASE.data_options)
        out.append(Cell(NAME, p["rule"], "lenet5", "fashion_mnist", p["seed"], scale_of(quick),
                        cfg))
    return out
