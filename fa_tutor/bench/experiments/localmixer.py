"""localmixer: Ren et al.'s supervised Table 3 rows on the LocalMixer, plus Fashion-MNIST offline.

Rules: BP, LG-BP, LG-FA, FG-W, FG-A, LG-FG-W, LG-FG-A and DFA (ours is Nøkland's
DFA on the true output error, not the paper's random local readout, see the
notes). Models and data: S/1/1 on MNIST and M/8/16 on CIFAR-10 (the paper's
columns; downloads), and the same two models on Fashion-MNIST (offline; resized
to 32×32 for M/8/16, whose 8×8 patches need a side divisible by 8).

Settings: the paper's MNIST/CIFAR-10 hyperparameters are not published; these are
the flag defaults of the released ``train_mixer_supervised.py`` — SGD lr 0.1, no
momentum, weight decay 1e-4, batch 100, 200 epochs, no augmentation — except: the
lr is divided by 10 at epochs 100 and 150 instead of the released linear decay to 0
(``schedule="linear"`` exists now; the committed cells predate it and keep the step
decay), PyTorch's default init, and one learning rate for every layer (the code's
``last_layer_lr`` = 0.1 multiplier of the heads and classifier is not applied). One
seed per cell.

The Fashion-MNIST cells are scale ``substituted`` (the paper has no Fashion-MNIST
column). ``--quick`` runs the offline Fashion-MNIST cells only (512 training images, one
epoch); the full grid needs ``python -m fa_tutor data fetch mnist`` and ``cifar10``.
"""
from __future__ import annotations

from ...training import RunConfig
from ..registry import Cell, experiment
from ._common import grid, pick, scale_of

NAME = "localmixer"
RULES = ["bp", "lg_bp", "lg_fa", "fg_w", "fg_a", "lg_fg_w", "lg_fg_a", "dfa"]
#: (LocalMixer config, dataset, data options); offline ones first.
SETTINGS = [
    ("S/1/1", "fashion_mnist", {}),
    ("M/8/16", "fashion_mnist", {"resize": 32}),
    ("S/1/1", "mnist", {}),
    ("M/8/16", "cifar10", {}),
]
OFFLINE = {"fashion_mnist"}
#: Ren et al. report no Fashion-MNIST: those cells are the paper's setting on other data
SUBSTITUTE_NOTE = ("Substituted data: Fashion-MNIST (60k/10k, offline) in place of the paper's "
                   "MNIST / CIFAR-10; same models and trainer settings, nothing to compare "
                   "value for value with Table 3.")
SEEDS = [0]
BASE = RunConfig(model="localmixer", optimizer="sgd", lr=0.1, momentum=0.0, weight_decay=1e-4,
                 schedule="step", milestones=(100, 150), gamma=0.1, epochs=200,
                 batch_size=100, eval_every=1)
QUICK = {"epochs": 1, "milestones": ()}
QUICK_DATA = {"n_train": 512, "n_test": 256}


@experiment(NAME, "LocalMixer S/1/1 and M/8/16: BP, LG-BP, LG-FA, FG-W, FG-A, LG-FG-W, "
            "LG-FG-A, DFA on Fashion-MNIST (offline) and MNIST / CIFAR-10 (downloads), "
            "Ren et al. Table 3 setting.", offline=False,
            source="Ren, Kornblith, Liao & Hinton 2023, Table 3 (supervised)")
def cells(quick: bool) -> list[Cell]:
    settings = [s for s in SETTINGS if s[1] in OFFLINE] if quick else SETTINGS
    out = []
    for p in grid(setting=settings, rule=RULES, seed=pick(SEEDS, quick)):
        mixer, dataset, data = p["setting"]
        cfg = BASE.replace(rule=p["rule"], seed=p["seed"], dataset=dataset,
                           model_options={"config": mixer},
                           data_options={**data, **(QUICK_DATA if quick else {})},
                           **(QUICK if quick else {}))
        substituted = dataset in OFFLINE
        out.append(Cell(NAME, p["rule"], "localmixer", dataset, p["seed"],
                        scale_of(quick, "substituted" if substituted else "full"), cfg,
                        setting={"mixer": mixer},
                        options={"note": SUBSTITUTE_NOTE} if substituted else {}))
    return out
