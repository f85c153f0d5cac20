"""fa_tutor's FA and DFA against biotorch 0.0.16's, side by side on LeNet-5 / Fashion-MNIST.

What it measures (results/biotorch-side-by-side.json, read by the benchmarks chapter):

1. FA's gradients on one batch, with identical weights and feedback matrices (biotorch's
   ``weight_backward`` copied into fa_tutor's ``B``): the largest absolute difference per
   parameter.
2. Training, FA and DFA, at η = 0.01 and η = 0.001 (SGD, momentum 0.9, weight decay 1e-3,
   batch 64, standardised 32×32 inputs, the same batches in the same order): the mean loss
   of every 100 steps, for both libraries, from the same initial forward weights (FA also
   the same B; DFA's feedback shapes differ between the two libraries, see below).

biotorch is not a dependency of fa_tutor: install it into a scratch folder and point
``BIOTORCH_PATH`` at it, never into the project's environment::

    .venv/bin/pip install --no-deps --target /tmp/bt biotorch==0.0.16
    BIOTORCH_PATH=/tmp/bt .venv/bin/python tools/biotorch_side_by_side.py [--steps 4000]

DFA on convolutions differs by construction: biotorch's ``dfa_backward_hook`` replaces a
convolution's *input* gradient by ``conv2d_input(weight_backward, e)`` with the output
error e repeated over the output positions (its B has the shape
(classes, in_channels, k, k)); fa_tutor's DFA adds B_lᵀe at the layer's output activity
(B_l of shape (classes, activity size)), so the two DFA rules have different feedback
matrices and only their training behaviour can be compared.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import fa_tutor as ft
from fa_tutor.training import RunConfig, build_data
from fa_tutor.utils import provenance

OUT = Path(__file__).resolve().parents[1] / "results" / "biotorch-side-by-side.json"


def biotorch_lenet(mode: str):
    sys.path.insert(0, os.environ["BIOTORCH_PATH"])
    module = __import__(f"biotorch.models.{mode}.le_net", fromlist=["le_net_mnist"])
    config = {"type": mode, "options": {"init": "xavier", "constrain_weights": False,
                                        "gradient_clip": False}}
    with contextlib.redirect_stdout(io.StringIO()):  # biotorch prints on conversion
        return module.le_net_mnist(layer_config=config)


def pair(mode: str, seed: int = 0):
    """biotorch's LeNet-5 in ``mode`` and fa_tutor's LeNet5 + rule with the same weights."""
    torch.manual_seed(seed)
    bt = biotorch_lenet(mode)
    ours = ft.models.LeNet5(10, 1)
    bt_params = dict(bt.module.named_parameters())
    with torch.no_grad():
        for name, p in ours.named_parameters():
            p.copy_(bt_params[name])
    rule = ft.make_rule(mode, ours, seed=seed)
    if mode == "fa":
        with torch.no_grad():
            for name, B in rule.feedback.items():
                layer = name.rsplit(".", 1)[0]
                B.copy_(bt_params[f"{layer}.weight_backward"])
    return bt, ours, rule


def bt_step(bt, mode, x, y):
    out = bt(x, targets=y, loss_function=F.cross_entropy) if mode == "dfa" else bt(x)
    loss = F.cross_entropy(out, y)
    loss.backward()
    return loss


def gradient_check(x, y) -> dict:
    bt, ours, rule = pair("fa")
    bt.train()
    bt.zero_grad()
    bt_step(bt, "fa", x, y)
    ours.zero_grad()
    rule.step(x, y)
    bt_grads = dict(bt.module.named_parameters())
    return {name: float((p.grad - bt_grads[name].grad).abs().max())
            for name, p in ours.named_parameters()}


def train_pair(mode: str, lr: float, batches, every: int = 100) -> dict:
    bt, ours, rule = pair(mode)
    bt.train()
    bt_params = [p for n, p in bt.module.named_parameters() if p.requires_grad]
    opts = {"bt": torch.optim.SGD(bt_params, lr=lr, momentum=0.9, weight_decay=1e-3),
            "ours": torch.optim.SGD(ours.parameters(), lr=lr, momentum=0.9, weight_decay=1e-3)}
    losses: dict[str, list[float]] = {"bt": [], "ours": []}
    for x, y in batches:
        for lib in ("bt", "ours"):
            opts[lib].zero_grad(set_to_none=True)
            try:
                loss = bt_step(bt, mode, x, y) if lib == "bt" else rule.step(x, y)
                value = float(loss)
            except ft.NonFiniteLossError:
                value = math.inf
            losses[lib].append(value if math.isfinite(value) else math.inf)
            if math.isfinite(value):
                opts[lib].step()
    out = {}
    for lib, values in losses.items():
        means = [sum(values[i:i + every]) / len(values[i:i + every])
                 for i in range(0, len(values), every)]
        out[lib] = {"loss_per_100_steps": [round(m, 4) if math.isfinite(m) else None for m in means],
                    "max_loss": max(values), "first_100": means[0]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    cfg = RunConfig(model="lenet5", dataset="fashion_mnist", data_options={"resize": 32},
                    normalize=True)
    data = build_data(cfg)
    mean, std = data.x_train.float().mean(), data.x_train.float().std()
    x_all = (ft.data.as_float(data.x_train) - mean) / std
    order = torch.randperm(len(x_all), generator=torch.Generator().manual_seed(0))
    batches = [(x_all[i], data.y_train[i]) for i in order.split(64)]
    batches = (batches * (args.steps // len(batches) + 1))[:args.steps]
    result = {"gradient_max_abs_diff": gradient_check(*batches[0]), "steps": args.steps,
              "setting": "LeNet-5, Fashion-MNIST 32x32 standardised, SGD momentum 0.9, "
                         "weight decay 1e-3, batch 64, same batches, same initial weights",
              "runs": {}}
    for mode in ("fa", "dfa"):
        for lr in (0.01, 0.001):
            result["runs"][f"{mode} lr={lr:g}"] = train_pair(mode, lr, batches)
            print(mode, lr, {k: v["max_loss"] for k, v in result["runs"][f"{mode} lr={lr:g}"].items()},
                  flush=True)
    result["provenance"] = provenance("cpu", wall_s=time.perf_counter() - started)
    result["provenance"]["biotorch"] = "0.0.16"
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    print("wrote", OUT)


if __name__ == "__main__":
    main()
