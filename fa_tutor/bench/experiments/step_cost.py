"""step-cost: seconds per training step of every rule, as a ratio to backprop, in one run.

Per model, every rule is built on the same weights and timed in interleaved
rounds (rule A, rule B, …, then again), so slow drifts of the machine hit every
rule alike; the reported cost is the median over rounds of the mean step time.
A step is ``zero_grad → rule.step(x, y) → optimizer.step()``.
"""
from __future__ import annotations

import copy
import statistics
import time

import torch

from ...rules import available_rules, make_rule, rule_spec
from ...training import MODELS
from ...data import Dataset
from ..registry import Cell, experiment

#: model name -> (input shape, classes, batch size on CPU, model options)
SETTINGS = {
    "mlp": ((784,), 10, 128, {"hidden": [512, 512], "activation": "relu"}),
    "lenet": ((3, 32, 32), 10, 64, {}),
    "resnet18": ((3, 32, 32), 10, 32, {}),
    "localmixer": ((3, 32, 32), 10, 64, {"config": "M/8/16"}),
}
TARGETS = {"layer-wise feedback": 1.10, "direct feedback": 1.05, "forward gradient": 1.20,
           "local loss": 1.20, "backprop": 1.0}
FDFA_TARGET = 1.30


def target(rule: str) -> float:
    return FDFA_TARGET if rule == "fdfa" else TARGETS.get(rule_spec(rule).family, float("nan"))


def _fake_data(shape: tuple, classes: int) -> Dataset:
    x = torch.zeros(2, *shape)
    y = torch.zeros(2, dtype=torch.long)
    return Dataset("synthetic", x, y, x, y, classes)


def measure(cell: Cell, device: str, _: object) -> list[tuple[str, dict]]:
    """Time every rule that runs on ``cell.model``; one (rule, metrics) pair each."""
    shape, classes, batch, options = SETTINGS[cell.model]
    rounds, steps = cell.options["rounds"], cell.options["steps"]
    batch = cell.options.get("batch", batch)
    torch.manual_seed(cell.seed)
    base = MODELS[cell.model](_fake_data(shape, classes), **options).to(device)
    x = torch.randn(batch, *shape, device=device)
    y = torch.randint(0, classes, (batch,), device=device)
    runs: dict[str, tuple] = {}
    skipped: dict[str, str] = {}
    for name in available_rules():
        model = copy.deepcopy(base)
        try:
            extra = {"input_shape": shape} if rule_spec(name).family == "direct feedback" else {}
            rule = make_rule(name, model, seed=cell.seed, **extra)
            params = [*model.parameters(), *rule.parameters()]
            opt = torch.optim.SGD(params, lr=1e-4)
            for _ in range(2):  # warm-up (lazy shapes, allocator, caches)
                opt.zero_grad(set_to_none=True)
                rule.step(x, y)
                opt.step()
        except ValueError as err:
            skipped[name] = str(err).splitlines()[0]
            continue
        runs[name] = (rule, opt)
    times: dict[str, list[float]] = {n: [] for n in runs}
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for _ in range(rounds):
        for name, (rule, opt) in runs.items():
            sync()
            t0 = time.perf_counter()
            for _ in range(steps):
                opt.zero_grad(set_to_none=True)
                rule.step(x, y)
                opt.step()
            sync()
            times[name].append((time.perf_counter() - t0) / steps)
    bp = statistics.median(times["bp"])
    out = []
    for name, ts in times.items():
        med = statistics.median(ts)
        out.append((name, {"seconds_per_step": med, "ratio_to_bp": med / bp, "target": target(name),
                           "batch_size": batch, "rounds": rounds, "steps_per_round": steps,
                           "threads": torch.get_num_threads()}))
    for name, why in skipped.items():
        out.append((name, {"unsupported": why}))
    return out


@experiment("step-cost", "Seconds per training step of each rule as a ratio to bp, on MLP, LeNet, "
            "ResNet-18 and LocalMixer, measured in one run per model.",
            runners={"measure": measure}, source="performance targets of the project")
def cells(quick: bool) -> list[Cell]:
    scale = "quick" if quick else "full"
    opts = {"rounds": 2, "steps": 2} if quick else {"rounds": 7, "steps": 10}
    models = ["mlp", "lenet"] if quick else list(SETTINGS)
    return [Cell("step-cost", "all", m, "synthetic", 0, scale,
                 setting={"batch": SETTINGS[m][2]}, options={**opts, "model": m}, runner="measure")
            for m in models]
