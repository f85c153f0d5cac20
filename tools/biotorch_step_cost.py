"""Step cost of fa_tutor's layer-wise and direct rules beside biotorch 0.0.16's, in one run.

What it measures (results/biotorch-step-cost.json, read by the benchmarks chapter): on the
step-cost experiment's MLP and LeNet (same input shapes and batch sizes), seconds per
training step as a ratio to plain PyTorch backprop (``zero_grad``, ``loss.backward()``,
``step``) for fa_tutor's rule and biotorch's converted model, every one built from the same
initial weights and timed in the same interleaved rounds (plain, fa_tutor fa, biotorch fa,
...; rounds alternate direction), medians over rounds. The rules both libraries have: fa,
usf, frsf, brsf, dfa. biotorch's DFA runs through its ``BioModule`` (which computes the
output error with ``autograd.grad`` before the backward), the others through
``ModuleConverter`` as biotorch's models do.

biotorch is not a dependency of fa_tutor: install it into a scratch folder and point
``BIOTORCH_PATH`` at it, never into the project's environment::

    .venv/bin/pip install --no-deps --target /tmp/bt biotorch==0.0.16
    BIOTORCH_PATH=/tmp/bt .venv/bin/python tools/biotorch_step_cost.py [--rounds 15] [--threads 2]

A benchmark, not a test: run it on a machine doing nothing else.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

import fa_tutor as ft
from fa_tutor.bench.experiments.step_cost import SETTINGS, _fake_data, time_interleaved
from fa_tutor.training import MODELS
from fa_tutor.utils import provenance

OUT = Path(__file__).resolve().parents[1] / "results" / "biotorch-step-cost.json"
RULES = ["fa", "usf", "frsf", "brsf", "dfa"]


def biotorch_model(base: torch.nn.Module, mode: str, classes: int) -> torch.nn.Module:
    """``base`` converted by biotorch (its weights copied), every layer in ``mode``."""
    sys.path.insert(0, os.environ["BIOTORCH_PATH"])
    from biotorch.module.biomodule import BioModule

    config = {"type": mode, "options": {"init": "xavier", "constrain_weights": False,
                                        "gradient_clip": False}}
    with contextlib.redirect_stdout(io.StringIO()):  # biotorch prints on conversion
        return BioModule(copy.deepcopy(base), mode=mode, layer_config=config, output_dim=classes)


def step_calls(model_name: str, seed: int = 0) -> dict[str, Callable[[], None]]:
    """One training step per entry: plain PyTorch, then fa_tutor and biotorch per rule."""
    shape, classes, batch, options = SETTINGS[model_name]
    torch.manual_seed(seed)
    base = MODELS[model_name](_fake_data(shape, classes), **options)
    x, y = torch.randn(batch, *shape), torch.randint(0, classes, (batch,))
    calls: dict[str, Callable[[], None]] = {}
    plain_model = copy.deepcopy(base)
    plain_opt = torch.optim.SGD(plain_model.parameters(), lr=1e-4)

    def plain() -> None:
        plain_opt.zero_grad(set_to_none=True)
        F.cross_entropy(plain_model(x), y).backward()
        plain_opt.step()

    calls["plain"] = plain
    for name in RULES:
        model = copy.deepcopy(base)
        extra = {"input_shape": shape} if name == "dfa" else {}
        rule = ft.make_rule(name, model, seed=seed, **extra)
        opt = torch.optim.SGD(model.parameters(), lr=1e-4)

        def ours(rule=rule, opt=opt) -> None:
            opt.zero_grad(set_to_none=True)
            rule.step(x, y)
            opt.step()

        bio = biotorch_model(base, name, classes)
        bio_opt = torch.optim.SGD([p for n, p in bio.named_parameters() if "backward" not in n],
                                  lr=1e-4)

        def theirs(bio=bio, bio_opt=bio_opt, name=name) -> None:
            bio_opt.zero_grad(set_to_none=True)
            out = bio(x, targets=y, loss_function=F.cross_entropy) if name == "dfa" else bio(x)
            F.cross_entropy(out, y).backward()
            bio_opt.step()

        calls[f"fa_tutor {name}"], calls[f"biotorch {name}"] = ours, theirs
    return calls


def measure(model_name: str, rounds: int, min_round_s: float = 0.25) -> dict:
    calls = step_calls(model_name)
    for call in calls.values():  # warm-up: lazy shapes, allocator, caches
        for _ in range(3):
            call()
    t0 = time.perf_counter()
    calls["plain"]()
    steps = max(2, round(min_round_s / (time.perf_counter() - t0)))
    times = time_interleaved(calls, rounds, steps, alternate=True)
    plain = statistics.median(times["plain"])
    return {"plain_seconds": plain, "steps_per_round": steps, "rounds": rounds,
            "batch_size": SETTINGS[model_name][2],
            "ratio_to_plain": {k: statistics.median(v) / plain for k, v in times.items()
                               if k != "plain"}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)  # as step-cost
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (step-cost: 2)")
    parser.add_argument("--models", nargs="+", default=["mlp", "lenet"], choices=list(SETTINGS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    result = {"models": {m: measure(m, args.rounds) for m in args.models}, "threads": args.threads}
    result["provenance"] = provenance("cpu", wall_s=time.perf_counter() - started)
    result["provenance"]["biotorch"] = "0.0.16"
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    for m, r in result["models"].items():
        print(m, " ".join(f"{k}={v:.3f}" for k, v in r["ratio_to_plain"].items()))


if __name__ == "__main__":
    main()
