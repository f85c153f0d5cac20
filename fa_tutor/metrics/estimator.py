"""A learning rule's update as an estimator of the gradient: bias, variance, alignment.

:func:`estimator_stats` samples any rule's update on one batch and compares it
with the true gradient.  :func:`variance_theory` gives Ren et al.'s Table 1 for
forward gradients, and :func:`check_variance_theory` measures the four cells of
that table on a one-hidden-layer MLP next to exact predictions for that batch.
"""
from __future__ import annotations

import copy
import math
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, jvp, vmap
from tqdm.auto import tqdm

from ..rules.base import Rule, make_rule, rule_spec


def estimator_stats(model: nn.Module, rule: str | Rule, x: Tensor, y: Tensor,
                    n_samples: int = 100, *, reference: str | None = None, loss_fn=None,
                    seed: int = 0, resample: str = "step", feedback_lr: float | None = None,
                    progress: bool = False, **options: Any) -> pd.DataFrame:
    r"""Statistics of ``n_samples`` updates of ``rule`` on one batch, per parameter and in total.

    With ĝ_s the s-th update (``rule.step`` writes it into ``.grad``), ḡ their mean
    and g the reference gradient (``bp``; ``lg_bp`` for ``lg_*`` rules, whose target
    is the local-loss gradient), each row has:

    * ``bias`` = ‖ḡ − g‖, and ``bias_se`` = √(var_total / M), the bias an unbiased
      estimator shows from sampling alone (E‖ḡ − g‖² = var_total / M);
    * ``var_total`` = Σ_i Var(ĝ_i) (unbiased sample variance), ``var_mean`` = var_total
      / numel (Table 1's dimension-wise variance);
    * ``snr`` = ‖g‖² / var_total (∞ for a deterministic update);
    * ``cosine`` = mean_s cos(ĝ_s, g) with its standard error ``cosine_se``, and
      ``cosine_of_mean`` = cos(ḡ, g).

    What varies between samples: with ``resample="step"`` (default) one rule takes
    all steps, so samples differ only by what the rule draws during ``step``: the
    perturbations of ``fg_*``/``lg_fg_*``, brSF's magnitudes.  FA, uSF, KP, DFA, DKP
    give variance 0 and their bias; FDFA's weight update is deterministic given its
    feedback B (its forward-gradient draws only enter B's gradient), so pass a
    trained rule instance to measure it at that B.  ``resample="rule"`` builds a
    fresh rule with seed ``seed + s`` per sample, so fixed random feedback is
    redrawn too.  ``feedback_lr`` samples learned feedback the way it varies in
    training: after each sample the feedback takes an SGD step,
    :math:`B \leftarrow B - \lambda\,\nabla_B` (for FDFA the EMA
    :math:`B \leftarrow (1-\lambda)B + \lambda\hat J`), with the weights frozen;
    B is restored afterwards.  The model's weights, ``.grad`` and buffers are left
    unchanged.  ``progress=True`` shows a tqdm bar over the samples once they have
    taken 2 s (and removes it at the end), for interactive use.
    """
    if resample not in ("step", "rule"):
        raise ValueError(f"resample={resample!r}; choose 'step' or 'rule'")
    if not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples={n_samples!r}; choose a positive integer")
    if feedback_lr is not None and (resample != "step" or feedback_lr <= 0):
        raise ValueError(f"feedback_lr={feedback_lr!r}: a positive rate, with resample='step'")
    if isinstance(rule, Rule):
        if options or resample != "step":
            raise ValueError("pass options and resample='rule' with a rule name, not an instance")
        name, build = rule.name, (lambda s: rule)
    else:
        name = rule_spec(rule).name
        build = lambda s: make_rule(name, model, loss_fn=loss_fn, seed=seed + s, **options)
    if reference is None:
        reference = "lg_bp" if rule_spec(name).needs_local_losses else "bp"
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    with _preserved(model, rule if isinstance(rule, Rule) else None):
        make_rule(reference, model, loss_fn=loss_fn).step(x, y)
        true = [p.grad.detach().double().flatten() for _, p in named]
        mean = [torch.zeros_like(g) for g in true]  # Welford: running mean and Σ(ĝ − mean)²
        m2 = [torch.zeros_like(g) for g in true]
        cos = torch.zeros(n_samples, len(named) + 1, dtype=torch.float64)
        current = build(0)
        feedback: list[Tensor] = []
        saved: list[Tensor] = []
        for s in tqdm(range(n_samples), desc=f"{name} samples", disable=not progress, delay=2,
                      leave=False):
            if resample == "rule" and s > 0:
                current = build(s)
            current.step(x, y)
            if s == 0 and feedback_lr is not None:  # shapes are known after the first step
                feedback = list(current.parameters())
                saved = [B.detach().clone() for B in feedback]
            with torch.no_grad():
                for B in feedback:  # learned feedback keeps averaging at frozen weights
                    if B.grad is not None:
                        B.sub_(B.grad, alpha=feedback_lr)
            est = [p.grad.detach().double().flatten() for _, p in named]
            dots = torch.stack([e @ g for e, g in zip(est, true)])
            sq = torch.stack([e @ e for e in est])
            cos[s, :-1] = dots / (sq.sqrt() * torch.stack([g.norm() for g in true]))
            cos[s, -1] = dots.sum() / (sq.sum().sqrt() * torch.cat(true).norm())
            for mu, sq2, e in zip(mean, m2, est):
                delta = e - mu
                mu += delta / (s + 1)
                sq2 += delta * (e - mu)
        with torch.no_grad():
            for B, b in zip(feedback, saved):
                B.copy_(b)
    rows = []
    M = n_samples
    var = [sq2 / (M - 1) if M > 1 else torch.zeros_like(sq2) for sq2 in m2]
    groups = [(n, [i]) for i, (n, _) in enumerate(named)] + [("total", list(range(len(named))))]
    for col, (label, idx) in enumerate(groups):
        g, m, v = (torch.cat([t[i] for i in idx]) for t in (true, mean, var))
        vt = v.sum().item()
        c = cos[:, col]
        rows.append(dict(
            param=label, numel=g.numel(), true_norm=g.norm().item(), mean_norm=m.norm().item(),
            bias=(m - g).norm().item(), bias_se=math.sqrt(vt / M),
            rel_bias=((m - g).norm() / g.norm()).item(), var_mean=vt / g.numel(),
            var_total=vt, snr=g.dot(g).item() / vt if vt > 0 else math.inf,
            cosine=c.mean().item(), cosine_se=(c.std() / math.sqrt(M)).item() if M > 1 else 0.0,
            cosine_of_mean=F.cosine_similarity(m, g, dim=0).item()))
    df = pd.DataFrame(rows)
    df.attrs.update(rule=name, reference=reference, n_samples=M, resample=resample)
    return df


class _preserved:
    """Restore the model's ``.grad`` and buffers (and a rule's feedback grads) on exit."""

    def __init__(self, model: nn.Module, rule: Rule | None):
        self.tensors = [*model.parameters(), *(rule.parameters() if rule is not None else [])]
        self.buffers = list(model.buffers())

    def __enter__(self) -> None:
        self.grads = [None if t.grad is None else t.grad.clone() for t in self.tensors]
        self.values = [b.clone() for b in self.buffers]

    def __exit__(self, *exc: Any) -> None:
        for t, g in zip(self.tensors, self.grads):
            t.grad = g
        with torch.no_grad():
            for b, v in zip(self.buffers, self.values):
                b.copy_(v)


def variance_theory(p: int, q: int, N: int, S: float, V: float, *,
                    conditional: bool = False) -> pd.DataFrame:
    r"""Ren et al. (2023) Table 1: dimension-wise average variance of FG-W and FG-A for one layer.

    For a layer of fan-in p and fan-out q, batch size N, S = the dimension-wise
    average squared gradient ‖E∇ℓ‖²/(pq) and V = the dimension-wise average
    per-example gradient variance (https://arxiv.org/abs/2210.03310, §3.4):

    =========  =============================  ===============================
    estimator  shared perturbation            independent perturbation
    =========  =============================  ===============================
    FG-W       (pq+2)/N·V + (pq+1)·S          (pq+2)/N·V + (pq+1)/N·S
    FG-A       (q+2)/N·V + (q+1)·S            (q+2)/N·V + (q+1)/N·S
    =========  =============================  ===============================

    These are variances around the population gradient (over batches and
    perturbations).  ``conditional=True`` gives the variance over perturbations
    only, for a fixed batch whose own S and V (the batch mean gradient and the
    per-example variance about it) are passed: (n+1)·S shared and (n+1)/N·(S+V)
    independent, n = pq (FG-W) or q (FG-A).  Table 1 is its average over batches
    plus the batch-sampling variance V/N (our derivation, notes §1.4).
    """
    rows = []
    for est, n in (("fg_w", p * q), ("fg_a", q)):
        if conditional:
            shared, indep = (n + 1) * S, (n + 1) / N * (S + V)
        else:
            shared, indep = (n + 2) / N * V + (n + 1) * S, (n + 2) / N * V + (n + 1) / N * S
        rows += [dict(estimator=est, perturbation="shared", p=p, q=q, N=N, variance=shared),
                 dict(estimator=est, perturbation="independent", p=p, q=q, N=N, variance=indep)]
    return pd.DataFrame(rows)


def gradient_moments(per_example: Tensor) -> tuple[float, float]:
    """(S, V) of per-example gradients (N, d): S = ‖mean‖²/d, V = mean_i Var_n(∇_{n,i}) (ddof 0)."""
    g = per_example.flatten(1).double()
    mean = g.mean(0)
    return (mean @ mean).item() / mean.numel(), g.var(0, unbiased=False).mean().item()


def _one_hidden_mlp(model: nn.Module, caller: str) -> None:
    from ..models.mlp import MLP
    if not isinstance(model, MLP) or len(model.layers) != 2:
        raise ValueError(f"{caller} needs a one-hidden-layer fa_tutor MLP, got {model!r}")


def variance_prediction(model: nn.Module, x: Tensor, y: Tensor, *,
                        loss_fn=None) -> pd.DataFrame:
    r"""Predicted variance of FG-W and FG-A on this batch, hidden layer of a one-hidden-layer MLP.

    One row per estimator × perturbation × trainable hidden-layer tensor I, with
    the variance over perturbations (average over I's coordinates).  ``predicted``
    is exact for this batch, with per-example gradients ∇_n of ℓ_n/N,
    δ_n = ∂L/∂a_n, layer inputs x_n (1 for the bias) and masks m_n = [f'(a_n) ≠ 0]:

    * FG-W shared: ‖g‖² + ‖g_I‖²/|I| (v spans all trainable parameters);
      independent: Σ_n (‖∇_n‖² + ‖∇_{n,I}‖²/|I|);
    * FG-A shared: (Σ_{n,n'} (x_n·x_{n'})(δ_n·δ_{n'})(m_n·m_{n'}) + ‖g_I‖²)/|I|;
      independent: Σ_n ‖x_n‖² (|m_n| + 1) ‖δ_n‖² / |I|;

    ``table1`` is :func:`variance_theory` (conditional) for this tensor alone: it
    equals ``predicted`` when the layer is the only trainable one and f' never
    vanishes (tanh, leaky ReLU).  Both are for one tangent; K averaged tangents
    divide them by K.  Assumes ``loss_fn`` averages per-example losses.  No draws:
    :func:`check_variance_theory` measures the same rows.
    """
    _one_hidden_mlp(model, "variance_prediction")
    loss_fn = loss_fn if loss_fn is not None else F.cross_entropy
    model = copy.deepcopy(model).double()
    x, N = x.double().flatten(1), len(x)
    names, params = zip(*[(n, p) for n, p in model.named_parameters() if p.requires_grad])
    one = lambda ps, xn, yn: loss_fn(functional_call(model, dict(zip(names, ps)), (xn[None],)),
                                     yn[None])
    per = vmap(grad(one), in_dims=(None, 0, 0))(tuple(p.detach() for p in params), x, y)
    per = {n: t.flatten(1) for n, t in zip(names, per)}  # ∇ℓ_n (unscaled), (N, numel)
    g_all = torch.cat([t.mean(0) for t in per.values()])
    scaled_sq = sum((t / N).pow(2).sum(1) for t in per.values())  # ‖∇_n‖², (N,)
    a = model.layers[0](x).detach().requires_grad_()
    (delta,) = torch.autograd.grad(loss_fn(model.layers[1](model.act(a)), y), a)  # (N, q)
    m = (jvp(model.act, (a.detach(),), (torch.ones_like(a),))[1] != 0).double()
    q, p_in = model.layers[0].weight.shape
    rows = []
    for est in ("fg_w", "fg_a"):
        for pert in ("shared", "independent"):
            for n in (n for n in ("layers.0.weight", "layers.0.bias") if n in per):
                size = per[n].shape[1]
                g_I, per_I = per[n].mean(0), per[n] / N
                xx = x @ x.T if n.endswith("weight") else torch.ones(N, N, dtype=x.dtype)
                if est == "fg_w":
                    pred = (g_all @ g_all + g_I @ g_I / size if pert == "shared" else
                            (scaled_sq + per_I.pow(2).sum(1) / size).sum())
                elif pert == "shared":
                    pred = ((xx * (delta @ delta.T) * (m @ m.T)).sum() + g_I @ g_I) / size
                else:
                    dd = delta.pow(2).sum(1)
                    pred = (xx.diagonal() * (m.sum(1) + 1) * dd).sum() / size
                S, V = gradient_moments(per[n])
                fan = p_in if n.endswith("weight") else 1
                t1 = variance_theory(fan, q, N, S, V, conditional=True)
                t1 = t1[(t1.estimator == est) & (t1.perturbation == pert)].variance.item()
                rows.append(dict(estimator=est, perturbation=pert, param=n,
                                 predicted=float(pred), table1=t1))
    return pd.DataFrame(rows)


def check_variance_theory(model: nn.Module, x: Tensor, y: Tensor, *, n_samples: int = 2000,
                          seed: int = 0, loss_fn=None) -> pd.DataFrame:
    r"""Measured vs predicted variance of FG-W and FG-A, hidden layer of a one-hidden-layer MLP.

    The rows of :func:`variance_prediction` (``predicted``, ``table1``) with
    ``measured``: the average variance over the tensor's coordinates of
    ``n_samples`` draws of each estimator on this batch, and its standard error ``se``.
    """
    _one_hidden_mlp(model, "check_variance_theory")
    prediction = variance_prediction(model, x, y, loss_fn=loss_fn)
    loss_fn = loss_fn if loss_fn is not None else F.cross_entropy
    model = copy.deepcopy(model).double()
    x = x.double().flatten(1)
    measured = []
    for (est, pert), rows in prediction.groupby(["estimator", "perturbation"], sort=False):
        extra = {"exact_readout": False} if est == "fg_w" else {}  # Table 1: every weight
        rule = make_rule(est, model, loss_fn=loss_fn, seed=seed, perturbation=pert, **extra)
        draws: dict[str, list[Tensor]] = {n: [] for n in rows.param}
        for _ in range(n_samples):
            rule.step(x, y)
            for n in draws:
                draws[n].append(model.get_parameter(n).grad.flatten().clone())
        for n, d in draws.items():
            d = torch.stack(d)  # (M, |I|)
            dev = ((d - d.mean(0)) ** 2).mean(1)  # q_s
            M = len(d)
            measured.append(dict(estimator=est, perturbation=pert, param=n,
                                 measured=dev.sum().item() / (M - 1),
                                 se=(dev.std() * math.sqrt(M) / (M - 1)).item()))
    out = pd.DataFrame(measured).merge(prediction, on=["estimator", "perturbation", "param"])
    return out[["estimator", "perturbation", "param", "measured", "se", "predicted", "table1"]]
