r"""The conservation law of feedback alignment (Robertson & Koyejo 2024, Thm 5.2).

For a (leaky-)ReLU network trained by the flow of FA, adaFA or sign-FA, every
hidden neuron :math:`i` of layer :math:`l` keeps

.. math::
    \tfrac12\,\Delta\|W_l[i,:]\|^2 \;=\; \Delta\langle W_{l+1}[:,i],\, B_{l+1}[:,i]\rangle,

with :math:`\Delta` the change since a reference time; for gradient descent
(:math:`B = W`) it is the balancedness of Du et al. (2018),
:math:`\tfrac12\Delta\|W_l[i,:]\|^2 = \tfrac12\Delta\|W_{l+1}[:,i]\|^2`.
:class:`ConservationTracker` measures the ratio of the two sides,

.. math::
    R_i(t) = \frac{\tfrac12\Delta\|W_l[i,:]\|^2}{\Delta\langle W_{l+1}[:,i], B_{l+1}[:,i]\rangle},
    \qquad
    R(t) = \frac{\sum_i \tfrac12\Delta\|W_l[i,:]\|^2}{\sum_i \Delta\langle W_{l+1}[:,i],
    B_{l+1}[:,i]\rangle},

and App. B.1's deviation :math:`\frac1K\sum_k |R(t_k) - 1|` over snapshots.

What breaks the law (and what the tracker lets you show): a hidden bias left
out of the incoming norm (``count_bias=False``), weight decay, normalization
layers, finite step sizes (error :math:`O(\text{lr})`), and putting
:math:`\langle W, W\rangle` (no ½) in the GD denominator (ratio 0.5). It
applies to layer-wise rules whose B is fixed or changes only where W crosses
zero (``fa``, ``adafa``, ``usf``, ``frsf``); ``brsf`` redraws B and has no such
law, and ``kp`` (B moves with W) obeys another form,
:math:`\tfrac12\Delta\|W_l[i,:]\|^2 = \Delta\langle W_{l+1}[:,i], B_{l+1}[:,i]\rangle -
\tfrac12\Delta\|W_{l+1}[:,i]\|^2` (no weight decay), which this tracker does
not compute. For conv layers the weight-sharing form holds per channel
:math:`c`: :math:`\tfrac12\Delta\|K_l[c,\ldots]\|^2 =
\Delta\langle K_{l+1}[:,c,\ldots], B_{l+1}[:,c,\ldots]\rangle`.

Taught in: {ref}`conservation-law`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import pandas as pd
import torch
from torch import Tensor, nn

__all__ = ["ConservationTracker"]

_WEIGHT_LAYERS = (nn.Linear, nn.Conv2d)
_FORMS = ("auto", "feedback", "balanced")


@dataclass
class _Pair:
    lower: str  # weight name of layer l (incoming weights of the hidden neurons)
    upper: str  # weight name of layer l+1 (their outgoing weights)
    bias: str | None  # bias name of layer l, if it is counted


class ConservationTracker:
    r"""Record both sides of Thm 5.2 at snapshots and report their ratio.

    Args:
        model: the network being trained.
        rule: a rule (its live ``.feedback`` is read at each snapshot, so uSF's
            scale :math:`c` is included automatically) or a dict
            ``{weight name: B}``. A rule without feedback (``bp``) gets the
            balancedness form.
        layer_pairs: ``[(lower weight name, upper weight name), ...]``; default:
            every two consecutive ``nn.Linear``/``nn.Conv2d`` layers in
            registration order.
        form: ``"feedback"`` (denominator :math:`\Delta\langle W_{l+1}[:,i],
            B_{l+1}[:,i]\rangle`), ``"balanced"`` (GD:
            :math:`\tfrac12\Delta\|W_{l+1}[:,i]\|^2`) or ``"auto"`` (balanced
            when the rule has no feedback).
        count_bias: count layer :math:`l`'s bias as an incoming weight,
            :math:`\|W_l[i,:]\|^2 + b_l[i]^2` (the law then holds with biases).
            ``False`` leaves it out, which breaks the law once the bias trains.
        min_rel_denominator: rounding guard. A snapshot (or neuron) with
            :math:`|\text{den}| < \text{min\_rel\_denominator}\cdot S` is
            skipped, :math:`S` the reference magnitude
            :math:`\sum_i (\tfrac12\|W_l[i,:](0)\|^2 + |\text{den-side}_i(0)|)`
            (per neuron: that neuron's terms): at that level the change is
            rounding noise and :math:`R` is 0/0. Default 1e-6.
        max_condition: cancellation guard for the layer-wise ratio. The
            per-neuron changes have both signs, so :math:`\sum_i \text{den}_i`
            crosses zero during training; near a crossing :math:`R` amplifies
            the per-neuron errors by :math:`\kappa = \sum_i|\text{den}_i| /
            |\sum_i \text{den}_i|`. Snapshots with :math:`\kappa >`
            ``max_condition`` are skipped in :meth:`deviation`. Default 1000.

    The reference for :math:`\Delta` is the state at construction (or at
    :meth:`reset`). B is read when :meth:`snapshot` is called; ``usf``/``frsf``
    refresh it at the start of ``rule.step``, so after ``optimizer.step()`` it
    is one step old, which matters only for entries that just changed sign
    (:math:`|W| = O(\text{lr})`).

    Example:
        >>> import torch, fa_tutor as ft
        >>> _ = torch.manual_seed(0)
        >>> model = ft.models.MLP(20, [30], 5, bias=False).double()
        >>> rule = ft.make_rule("fa", model, seed=0)
        >>> opt = torch.optim.SGD(model.parameters(), lr=2e-3)
        >>> x, y = torch.randn(64, 20, dtype=torch.float64), torch.randint(0, 5, (64,))
        >>> tracker = ConservationTracker(model, rule)
        >>> for step in range(1, 201):
        ...     opt.zero_grad(); loss = rule.step(x, y); opt.step()
        ...     if step % 20 == 0: tracker.snapshot(step)
        >>> tracker.deviation() < 0.02  # mean |R - 1| over the 10 snapshots
        True
    """

    def __init__(self, model: nn.Module, rule: Any,
                 layer_pairs: Sequence[tuple[str, str]] | None = None, *,
                 form: str = "auto", count_bias: bool = True,
                 min_rel_denominator: float = 1e-6, max_condition: float = 1e3):
        if form not in _FORMS:
            raise ValueError(f"form={form!r}; choose one of: {', '.join(_FORMS)}")
        self.model = model
        self._feedback_src = rule
        feedback = self._feedback()
        self.form = form if form != "auto" else ("feedback" if feedback else "balanced")
        self.count_bias = count_bias
        self.min_rel_denominator = float(min_rel_denominator)
        self.max_condition = float(max_condition)
        self.pairs = self._resolve_pairs(layer_pairs)
        self.reset()

    # -- public ---------------------------------------------------------------
    def reset(self) -> None:
        """Take the current state as the reference (Δ = 0) and drop all snapshots."""
        self._ref = [self._measure(p) for p in self.pairs]
        self._snaps: list[tuple[Any, list[tuple[Tensor, Tensor]]]] = []

    def snapshot(self, step: Any = None) -> None:
        """Record both sides for every layer pair; ``step`` labels it (default: a counter)."""
        label = len(self._snaps) + 1 if step is None else step
        self._snaps.append((label, [self._measure(p) for p in self.pairs]))

    def neuron_ratios(self, snapshot: int = -1, pair: int = 0) -> Tensor:
        r"""Per-neuron :math:`R_i` at one snapshot, float64 (``nan`` where the denominator is tiny).

        ``snapshot`` and ``pair`` index the recorded snapshots and ``self.pairs``.
        """
        num, den, scale = self._deltas(snapshot, pair)
        ok = den.abs() >= self.min_rel_denominator * scale
        return torch.where(ok, num / den, torch.full_like(num, math.nan))

    def ratios(self) -> pd.DataFrame:
        r"""One row per (snapshot, layer pair).

        Columns: ``step``, ``lower``, ``upper``, ``numerator`` (:math:`\sum_i
        \tfrac12\Delta\|W_l[i,:]\|^2`), ``denominator``, ``ratio`` :math:`R`,
        ``condition`` :math:`\kappa`, ``valid`` (both guards passed), and over
        the neurons with a valid denominator: ``neuron_median`` of :math:`R_i`, ``neuron_mean_dev``
        :math:`\mathrm{mean}_i|R_i-1|`, ``neuron_max_dev``, ``neurons_used``.
        """
        rows = []
        for k, (label, _) in enumerate(self._snaps):
            for j, p in enumerate(self.pairs):
                num, den, scale = self._deltas(k, j)
                n_sum, d_sum = float(num.sum()), float(den.sum())
                cond = float(den.abs().sum()) / abs(d_sum) if d_sum != 0 else math.inf
                valid = (abs(d_sum) >= self.min_rel_denominator * float(scale.sum())
                         and cond <= self.max_condition)
                r_i = self.neuron_ratios(k, j)
                r_i = r_i[~r_i.isnan()]
                dev = (r_i - 1).abs()
                rows.append({
                    "step": label, "lower": p.lower, "upper": p.upper,
                    "numerator": n_sum, "denominator": d_sum,
                    "ratio": n_sum / d_sum if d_sum != 0 else math.nan,
                    "condition": cond, "valid": valid,
                    "neuron_median": float(r_i.median()) if len(r_i) else math.nan,
                    "neuron_mean_dev": float(dev.mean()) if len(r_i) else math.nan,
                    "neuron_max_dev": float(dev.max()) if len(r_i) else math.nan,
                    "neurons_used": int(len(r_i)),
                })
        return pd.DataFrame(rows)

    def deviation(self, pair: int | None = None) -> float:
        r"""App. B.1's metric :math:`\frac1K\sum_k |R(t_k) - 1|` over valid snapshots.

        ``pair`` selects one layer pair (index into ``self.pairs``); None averages
        over all pairs. ``nan`` if no snapshot is valid.
        """
        df = self.ratios()
        if df.empty:
            raise ValueError("no snapshots recorded; call tracker.snapshot() during training")
        if pair is not None:
            if not 0 <= pair < len(self.pairs):
                raise ValueError(f"pair={pair}; choose 0..{len(self.pairs) - 1}")
            df = df[(df.lower == self.pairs[pair].lower) & (df.upper == self.pairs[pair].upper)]
        df = df[df.valid]
        return float((df.ratio - 1).abs().mean()) if len(df) else math.nan

    def state_dict(self) -> dict[str, Any]:
        """The reference and the snapshots (per-neuron vectors, small) for a checkpoint."""
        return {"pairs": [(p.lower, p.upper, p.bias) for p in self.pairs], "form": self.form,
                "reference": [tuple(t.clone() for t in r) for r in self._ref],
                "snapshots": [(label, [tuple(t.clone() for t in m) for m in ms])
                              for label, ms in self._snaps]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume from :meth:`state_dict` (same layer pairs, form and bias choice)."""
        mine = [(p.lower, p.upper, p.bias) for p in self.pairs]
        theirs = [tuple(p) for p in state["pairs"]]
        if theirs != mine or state["form"] != self.form:
            raise ValueError(f"state is for pairs {theirs} (form {state['form']!r}); this "
                             f"tracker has {mine} (form {self.form!r})")
        self._ref = [tuple(t.clone() for t in r) for r in state["reference"]]
        self._snaps = [(label, [tuple(t.clone() for t in m) for m in ms])
                       for label, ms in state["snapshots"]]

    def __repr__(self) -> str:
        pairs = ", ".join(f"{p.lower}→{p.upper}" for p in self.pairs)
        return (f"ConservationTracker(form={self.form!r}, count_bias={self.count_bias}, "
                f"pairs=[{pairs}], snapshots={len(self._snaps)})")

    # -- internals ------------------------------------------------------------
    def _feedback(self) -> Mapping[str, Tensor]:
        src = self._feedback_src
        fb = src if isinstance(src, Mapping) else getattr(src, "feedback", None)
        if not isinstance(fb, Mapping):
            raise TypeError("rule must be a rule with .feedback or a dict {weight name: B}, "
                            f"got {type(src).__name__}")
        return fb

    def _resolve_pairs(self, layer_pairs: Sequence[tuple[str, str]] | None) -> list[_Pair]:
        modules = {f"{n}.weight" if n else "weight": m for n, m in self.model.named_modules()
                   if isinstance(m, _WEIGHT_LAYERS)}
        if layer_pairs is None:
            names = list(modules)
            layer_pairs = list(zip(names[:-1], names[1:]))
            if not layer_pairs:
                raise ValueError("the model needs at least two nn.Linear/nn.Conv2d layers")
        params = dict(self.model.named_parameters())
        feedback = self._feedback()
        pairs = []
        for lower, upper in layer_pairs:
            for name in (lower, upper):
                if name not in modules:
                    raise ValueError(f"{name!r} is not an nn.Linear/nn.Conv2d weight; choose "
                                     f"from: {', '.join(modules)}")
            W_lo, W_up = params[lower], params[upper]
            n = W_lo.shape[0]
            if W_up.shape[1] % n != 0:
                raise ValueError(
                    f"{upper!r} (shape {tuple(W_up.shape)}) does not read the {n} neurons of "
                    f"{lower!r} channel by channel (grouped conv?); the law needs the outgoing "
                    "weights of each neuron")
            if self.form == "feedback":
                if upper not in feedback:
                    raise ValueError(f"the rule has no feedback for {upper!r}; it has: "
                                     f"{', '.join(feedback) or 'none'} "
                                     "(use form='balanced' for bp)")
                if feedback[upper].shape != W_up.shape:
                    raise ValueError(
                        f"feedback for {upper!r} has shape {tuple(feedback[upper].shape)}, not "
                        f"W's {tuple(W_up.shape)}: the conservation law is for layer-wise rules "
                        "(fa, adafa, usf, frsf), not direct ones")
            bias_mod = modules[lower].bias
            use_bias = self.count_bias and bias_mod is not None
            bias = lower[: -len("weight")] + "bias" if use_bias else None
            pairs.append(_Pair(lower, upper, bias))
        return pairs

    @torch.no_grad()
    def _measure(self, p: _Pair) -> tuple[Tensor, Tensor]:
        r"""Per neuron: (½‖incoming‖², denominator side) at the current time, float64."""
        params = dict(self.model.named_parameters())
        W_lo = params[p.lower].double()
        n = W_lo.shape[0]
        half_in = 0.5 * W_lo.reshape(n, -1).pow(2).sum(1)  # (n,)
        if p.bias is not None:
            half_in = half_in + 0.5 * params[p.bias].double().pow(2)
        W_up = params[p.upper].double()
        out = W_up.reshape(W_up.shape[0], n, -1)  # (out, n, fan per neuron)
        if self.form == "balanced":
            side = 0.5 * out.pow(2).sum((0, 2))  # ½‖W_{l+1}[:, i]‖²
        else:
            B = self._feedback()[p.upper].detach().double().reshape(out.shape)
            side = (out * B).sum((0, 2))  # ⟨W_{l+1}[:, i], B_{l+1}[:, i]⟩
        return half_in.cpu(), side.cpu()

    def _deltas(self, snapshot: int, pair: int) -> tuple[Tensor, Tensor, Tensor]:
        (in0, side0) = self._ref[pair]
        (in_t, side_t) = self._snaps[snapshot][1][pair]
        scale = in0 + side0.abs()
        return in_t - in0, side_t - side0, scale
