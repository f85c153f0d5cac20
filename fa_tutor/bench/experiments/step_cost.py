r"""step-cost: seconds per training step of every rule, as a ratio to plain PyTorch backprop, in one run.

Per model, every rule is built on the same weights and timed in interleaved
rounds (rule A, rule B, …, then again in reverse order), so slow drifts of the machine
hit every rule alike and no rule always runs after the same one; the reported cost is the median over rounds of the mean step time.
A step is ``zero_grad → rule.step(x, y) → optimizer.step()``. The reference is
plain PyTorch on the same model, timed in the same rounds: ``zero_grad →
F.cross_entropy(model(x), y).backward() → optimizer.step()`` — what a user compares
against. ``ratio_to_plain`` is each rule's step over that one (the targets apply to
it); ``ratio_to_bp``, over the package's own ``bp`` rule, stays as a second column
(their quotient is the rule wrapper's cost). One inference
forward pass (no grad) is timed in the same rounds, so each step is also
reported in forward-pass units (``forward_passes``), and one profiled run per
rule measures the share of its step spent drawing random numbers (``draw_share``;
``ratio_without_draws`` is the ratio with that share taken out): where the cost goes.

Some rules do work beyond their base rule by definition, work whose cost is the same in
any implementation. For them a **floor** is timed in the same rounds: the base rule's step
(FA's or DFA's) plus only that work, on scratch tensors of the same shapes
(``floor_ratio``, over plain PyTorch; ``floor``, what it adds). Kolen–Pollack and DKP
learn their feedback, so the optimizer updates a second set of tensors (``B``'s shapes);
Kolen–Pollack's :math:`\nabla_{B_l}` is :math:`\nabla_{W_l}`, copied into a tensor of its own
first (the optimizer, ``clip_grad_norm_`` or a ``GradScaler`` may change a ``.grad`` in
place, so the two cannot share one); DKP computes its own;
uSF, frSF and brSF write :math:`B_l \leftarrow M_l \odot \operatorname{sign}(W_l)` for
every layer whose :math:`B_l` the step uses (brSF's draw is measured by ``draw_share``).
A rule at its floor has no overhead left to remove; a floor above the target says the
target cannot be met on that model and device by any implementation of the rule built
on that base.
"""
from __future__ import annotations

import copy
import functools
import math
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F

from ...rules import BatchShapeError, Rule, available_rules, make_rule, rule_spec
from ...rules.noise import PROFILER_RANGE
from ...training import MODELS
from ...data import Dataset
from ..registry import Cell, experiment

#: model name -> (input shape, classes, batch size on CPU, model options)
SETTINGS = {
    "mlp": ((784,), 10, 128, {"hidden": [512, 512], "activation": "relu"}),
    "lenet": ((3, 32, 32), 10, 64, {}),
    "resnet18": ((3, 32, 32), 10, 16, {}),
    "localmixer": ((3, 32, 32), 10, 32, {"config": "M/8/16"}),
}
#: targets of the ratio to plain PyTorch backprop; the bp rule's wrapper may cost 3 %
TARGETS = {"layer-wise feedback": 1.10, "direct feedback": 1.05, "forward gradient": 1.20,
           "local loss": 1.20, "backprop": 1.03}
FDFA_TARGET = 1.30
FORWARD = "(forward pass)"  # the unit timed alongside the rules
PLAIN = "(plain backprop)"  # the reference: loss.backward() on the same model, no rule


#: rule -> (its base rule, what it adds by definition): see :class:`FloorStep`
FLOORS = {"kp": ("fa", "copied"), "dkp": ("dfa", "learned"),
          "usf": ("fa", "sign"), "frsf": ("fa", "sign"), "brsf": ("fa", "sign")}
FLOOR_PREFIX = "(floor) "


def floor_name(rule: str) -> str:
    """The timed entry of ``rule``'s floor."""
    return FLOOR_PREFIX + rule


FLOOR_WHAT = {"learned": "{base} + the optimizer's update of B",
              "copied": "{base} + W's gradient copied into B's + the optimizer's update of B",
              "sign": "{base} + B ← M ⊙ sign(W) for the layers used"}


def target(rule: str) -> float:
    return FDFA_TARGET if rule == "fdfa" else TARGETS.get(rule_spec(rule).family, float("nan"))


def _fake_data(shape: tuple, classes: int) -> Dataset:
    x = torch.zeros(2, *shape)
    y = torch.zeros(2, dtype=torch.long)
    return Dataset("synthetic", x, y, x, y, classes)


#: ATen ops that draw random numbers (their self time is the cost of the draws)
RANDOM_OPS = frozenset({"aten::normal_", "aten::normal", "aten::uniform_", "aten::bernoulli_",
                        "aten::bernoulli", "aten::random_", "aten::randn", "aten::rand",
                        "aten::randint", "aten::randperm"})


def draw_share(call: Callable[[], None], steps: int, device: str) -> float:
    r"""Fraction of a step's op time spent drawing random numbers, from one profiled run.

    .. math:: s = \frac{\sum_{\text{op} \in \text{RANDOM\_OPS}} t_\text{self}(\text{op})}
                       {\sum_\text{op} t_\text{self}(\text{op})}

    with self times on the CPU, or on the GPU for CUDA runs (where a draw's CPU
    time is only its launch); on the CPU a draw of :func:`fa_tutor.rules.noise.gaussian`
    counts with its wall time in the calling thread. The profiler's own overhead
    makes this an estimate.
    """
    from torch.profiler import ProfilerActivity, profile

    cuda = device.startswith("cuda")
    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]
    with profile(activities=activities) as prof:
        for _ in range(steps):
            call()
        if cuda:
            torch.cuda.synchronize()
    if not cuda:
        return _cpu_draw_share(prof.events())
    # GPU time is listed under each op and again under its kernels: count the ops
    events = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    total = sum(e.self_device_time_total for e in events)
    drawn = sum(e.self_device_time_total for e in events if e.key in RANDOM_OPS)
    return drawn / total if total > 0 else math.nan


def _cpu_draw_share(events: list) -> float:
    """CPU: a ``gaussian`` range counts with its whole wall time (its chunks are drawn in
    worker threads the profiler does not see), other random ops with their self time."""
    total = drawn = 0.0
    for e in events:
        total += e.self_cpu_time_total
        if e.name == PROFILER_RANGE:
            drawn += e.cpu_time_total
        elif e.name in RANDOM_OPS and not _inside_range(e):
            drawn += e.self_cpu_time_total
    return drawn / total if total > 0 else math.nan


def _inside_range(event) -> bool:
    parent = event.cpu_parent
    while parent is not None:
        if parent.name == PROFILER_RANGE:
            return True
        parent = parent.cpu_parent
    return False


class FloorStep:
    r"""A step of ``base`` (its own model copy and optimizer) plus only the work ``rule`` adds
    by definition (:data:`FLOORS`), on scratch tensors shaped like ``rule``'s (``scratch``).

    ``learned``: an optimizer like ``base_opt`` (same class and settings) updates tensors
    shaped like ``rule.parameters()`` with a fixed gradient of ones. ``copied``: the same,
    with each gradient first copied from the base's weight of that shape (Kolen–Pollack's
    :math:`\nabla_{B_l} \leftarrow \nabla_{W_l}`, layer by layer). ``sign``: for every layer
    whose :math:`B_l` a step of ``rule`` wrote (``rule.written``, after a warm-up step),
    ``sign(W_l)`` then ``× M_l`` into a scratch tensor (the two ops of ``rule.write``).
    """

    def __init__(self, rule: Rule, base: Rule, base_opt: torch.optim.Optimizer, kind: str,
                 x: torch.Tensor, y: torch.Tensor):
        if kind not in FLOOR_WHAT:
            raise ValueError(f"unknown floor kind {kind!r}; choose {', '.join(FLOOR_WHAT)}")
        self.base, self.base_opt, self.kind, self.x, self.y = base, base_opt, kind, x, y
        self.scratch: list[torch.Tensor] = []
        self.signs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | float]] = []
        self.extra_opt: torch.optim.Optimizer | None = None
        self.copies: list[tuple[torch.Tensor, torch.Tensor]] = []  # (W, B's scratch) by layer
        if kind in ("learned", "copied"):
            self.scratch = [torch.zeros_like(p) for p in rule.parameters()]
            for t in self.scratch:
                t.grad = torch.ones_like(t)
            if kind == "copied":
                self.copies = [(layer.weight, t) for layer, t in zip(base.layers, self.scratch)]
                if any(W.shape != t.shape for W, t in self.copies):
                    raise ValueError("a 'copied' floor needs one B per base layer, of its weight's shape")
            defaults = {k: v for k, v in base_opt.defaults.items() if k != "params"}
            self.extra_opt = type(base_opt)(self.scratch, **defaults)
        else:
            for layer in base.layers:
                if layer.weight_name in rule.written:
                    scratch = torch.empty_like(layer.weight)
                    self.scratch.append(scratch)
                    self.signs.append((layer.weight, scratch, rule.magnitude[layer.weight_name]))

    def __call__(self) -> None:
        self.base_opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            for W, scratch, M in self.signs:
                torch.sign(W, out=scratch)
                torch.mul(scratch, M, out=scratch)
        self.base.step(self.x, self.y)
        for W, scratch in self.copies:  # kp: B's gradient is W's, in a tensor of its own
            scratch.grad.copy_(W.grad)
        self.base_opt.step()
        if self.extra_opt is not None:
            self.extra_opt.step()


def time_interleaved(calls: dict[str, Callable[[], None]], rounds: int, steps: int,
                     sync: Callable[[], None] = lambda: None,
                     alternate: bool = False) -> dict[str, list[float]]:
    """Seconds per call of each entry, one value per round: every round runs each call
    ``steps`` times in turn (A, B, C, A, B, C, …; ``alternate``: every other round in reverse
    order), so slow drifts of the machine hit every entry alike. ``sync`` waits for the device."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for r in range(rounds):
        order = list(calls.items())
        for name, call in (order[::-1] if alternate and r % 2 else order):
            sync()
            t0 = time.perf_counter()
            for _ in range(steps):
                call()
            sync()
            times[name].append((time.perf_counter() - t0) / steps)
    return times


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
    failed: dict[str, str] = {}

    def build(name: str) -> tuple[Rule, torch.optim.Optimizer]:
        """``name`` on a copy of the model, with its optimizer, warmed up."""
        model = copy.deepcopy(base)
        extra = {"input_shape": shape} if rule_spec(name).family == "direct feedback" else {}
        rule = make_rule(name, model, seed=cell.seed, **extra)
        opt = torch.optim.SGD([*model.parameters(), *rule.parameters()], lr=1e-4)
        for _ in range(cell.options.get("warmup", 2)):  # lazy shapes, allocator, caches
            opt.zero_grad(set_to_none=True)
            rule.step(x, y)
            opt.step()
        return rule, opt

    for name in available_rules():
        try:
            rule, opt = build(name)
        except (BatchShapeError, RuntimeError) as err:  # the rule fails on this model (a batch
            # that does not fit is a failure, not a refusal): report it, time the others
            failed[name] = f"{type(err).__name__}: {str(err).splitlines()[0]}"
            continue
        except ValueError as err:  # the rule refuses this model (e.g. lg_* without local losses)
            skipped[name] = str(err).splitlines()[0]
            continue
        runs[name] = (rule, opt)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def forward() -> None:  # the unit of "where the cost goes": one inference pass
        with torch.no_grad():
            base(x)

    def step(rule: Rule, opt: torch.optim.Optimizer) -> None:
        opt.zero_grad(set_to_none=True)
        rule.step(x, y)
        opt.step()

    plain_model = copy.deepcopy(base)
    plain_opt = torch.optim.SGD(plain_model.parameters(), lr=1e-4)

    def plain() -> None:  # what a user writes: the reference of every ratio
        plain_opt.zero_grad(set_to_none=True)
        F.cross_entropy(plain_model(x), y).backward()
        plain_opt.step()

    for _ in range(cell.options.get("warmup", 2)):
        plain()
    calls = {name: functools.partial(step, *run) for name, run in runs.items()}
    calls[FORWARD] = forward
    calls[PLAIN] = plain
    floors = {name: FLOORS[name] for name in runs if name in FLOORS and FLOORS[name][0] in runs}
    for name, (base_rule, kind) in floors.items():
        calls[floor_name(name)] = FloorStep(runs[name][0], *build(base_rule), kind, x, y)
    # fast models: enough steps per round that each round lasts min_round_s (timer noise)
    sync()
    t0 = time.perf_counter()
    calls["bp"]()
    sync()
    t_bp = time.perf_counter() - t0
    steps = max(steps, math.ceil(cell.options.get("min_round_s", 0.0) / max(t_bp, 1e-6)))
    times = time_interleaved(calls, rounds, steps, sync, alternate=True)
    bp, fwd = statistics.median(times["bp"]), statistics.median(times[FORWARD])
    ref = statistics.median(times[PLAIN])
    out = []
    for name, ts in times.items():
        if name in (FORWARD, PLAIN) or name.startswith(FLOOR_PREFIX):
            continue
        med = statistics.median(ts)
        share = draw_share(calls[name], steps, device)
        floor = {}
        if name in floors:
            base_rule, kind = floors[name]
            floor = {"floor_ratio": statistics.median(times[floor_name(name)]) / ref,
                     "floor": FLOOR_WHAT[kind].format(base=base_rule)}
        out.append((name, {**floor, "seconds_per_step": med, "ratio_to_plain": med / ref,
                           "ratio_to_bp": med / bp, "target": target(name),
                           "plain_seconds": ref, "forward_seconds": fwd,
                           "forward_passes": med / fwd, "draw_share": share,
                           "ratio_without_draws": med * (1 - share) / ref,
                           "batch_size": batch, "rounds": rounds, "steps_per_round": steps,
                           "threads": torch.get_num_threads()}))
    for name, why in skipped.items():
        out.append((name, {"unsupported": why}))
    for name, why in failed.items():
        out.append((name, {"failed": why}))
    return out


@experiment("step-cost", "Seconds per training step of each rule as a ratio to plain PyTorch "
            "backprop (loss.backward()) and to the bp rule, on MLP, LeNet, "
            "ResNet-18 and LocalMixer, measured in one run per model.",
            runners={"measure": measure}, source="performance targets of the project")
def cells(quick: bool) -> list[Cell]:
    scale = "quick" if quick else "full"
    # full: 15 interleaved rounds per rule, every other one in reverse order (no rule always
    # follows the same one), each ≥ 2 steps and ≥ 0.25 s (minutes on a 2-core CPU);
    # quick: one step per rule at batch 8 on the MLP and LeNet (a smoke test, not a timing)
    opts = ({"rounds": 1, "steps": 1, "warmup": 1, "batch": 8} if quick
            else {"rounds": 15, "steps": 2, "warmup": 2, "min_round_s": 0.25})
    models = ["mlp", "lenet"] if quick else list(SETTINGS)
    return [Cell("step-cost", "all", m, "synthetic", 0, scale,
                 setting={"batch": opts.get("batch", SETTINGS[m][2])},
                 options={**opts, "model": m}, runner="measure")
            for m in models]
