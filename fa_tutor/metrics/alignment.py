r"""How well a rule's feedback and its updates line up with backprop.

Three measurements, all cosines of flattened tensors,
:math:`\cos\angle(a, b) = \langle \mathrm{vec}\,a, \mathrm{vec}\,b\rangle /
(\|a\|_F \|b\|_F)`:

* :func:`weight_alignment`: forward weights :math:`W_l` against feedback
  :math:`B_l` (layer-wise rules), or a direct rule's :math:`B_l` against the
  linearised output Jacobian :math:`W_L \cdots W_{l+1}`;
* :func:`update_alignment`: the rule's update :math:`g` against the true
  gradient :math:`\nabla L` on the same batch, the :math:`\cos\varphi_t` of
  :math:`-\dot L = \|\nabla L\|\,\|g\|\cos\varphi_t`;
* :func:`sign_alignment_bound` and :func:`dale_statistics`: the sign-FA lower
  bound (Prop. 5.3) and the sign structure behind Lemma 5.4.

Taught in: {ref}`alignment-dominance`.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import pandas as pd
import torch
from torch import Tensor, nn

__all__ = [
    "cosine", "angle_degrees", "weight_alignment", "update_alignment",
    "sign_alignment_bound", "sign_agreement", "dale_statistics",
]

_WEIGHT_LAYERS = (nn.Linear, nn.Conv2d)


def cosine(a: Tensor, b: Tensor) -> float:
    r""":math:`\langle \mathrm{vec}\,a, \mathrm{vec}\,b\rangle / (\|a\|_F\|b\|_F)` in float64.

    Returns ``nan`` when either tensor is all zeros (the angle is undefined).
    """
    if a.numel() != b.numel():
        raise ValueError(f"cosine needs tensors of equal size, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    a64, b64 = a.detach().reshape(-1).double(), b.detach().reshape(-1).double()
    denom = a64.norm() * b64.norm()
    if denom == 0:
        return math.nan
    return float((a64 @ b64 / denom).clamp(-1.0, 1.0))


def angle_degrees(cos: float) -> float:
    r"""The angle :math:`\frac{180}{\pi}\arccos(\cos)` in degrees (biotorch's alignment)."""
    return math.degrees(math.acos(max(-1.0, min(1.0, cos)))) if not math.isnan(cos) else math.nan


def _feedback_of(rule: Any) -> Mapping[str, Tensor]:
    if isinstance(rule, Mapping):
        return rule
    fb = getattr(rule, "feedback", None)
    if not isinstance(fb, Mapping):
        raise TypeError(f"expected a rule (with .feedback) or a dict of feedback tensors, "
                        f"got {type(rule).__name__}")
    return fb


def _rule_kind(rule: Any) -> str | None:
    """'direct' / 'layer-wise' from the registry entry, or None if unknown."""
    name = getattr(rule, "name", None)
    if not isinstance(name, str):
        return None
    from ..rules import rule_spec
    try:
        family = rule_spec(name).family
    except ValueError:
        return None
    return "direct" if "direct" in family else "layer-wise"


def _linear_chain(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    """The model's weight layers in forward order, if they form a plain chain of Linear layers."""
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, _WEIGHT_LAYERS)]
    bad = [n for n, m in layers if not isinstance(m, nn.Linear)]
    chained = not bad and all(a.out_features == b.in_features
                              for (_, a), (_, b) in zip(layers[:-1], layers[1:]))
    if bad or not chained or not layers:
        raise ValueError(
            "the Jacobian reference W_L ⋯ W_{l+1} of a direct rule needs a model whose weight "
            "layers are a chain of nn.Linear layers (like fa_tutor.models.MLP); "
            f"got {type(model).__name__} with layers "
            f"{[f'{n} ({type(m).__name__})' for n, m in layers]}"
        )
    return layers


def _jacobian_reference(model: nn.Module, weight_name: str) -> Tensor:
    r""":math:`J_l = W_L W_{L-1} \cdots W_{l+1}`, shape (n_out, d_l), activations ignored."""
    layers = _linear_chain(model)
    names = [f"{n}.weight" if n else "weight" for n, _ in layers]
    if weight_name not in names:
        raise ValueError(f"{weight_name!r} is not a Linear weight of the model; "
                         f"choose one of: {', '.join(names)}")
    k = names.index(weight_name)
    J = torch.eye(layers[k][1].out_features, dtype=torch.float64,
                  device=layers[k][1].weight.device)
    for _, layer in layers[k + 1:]:
        J = layer.weight.detach().double() @ J  # (d_next, d_l)
    return J


def weight_alignment(model: nn.Module, rule: Any, *, kind: str | None = None) -> pd.DataFrame:
    r"""Cosine and angle between each feedback tensor and its forward reference.

    * Layer-wise rules (B has W's shape): :math:`\cos\angle(W_l, B_l)`.
    * Direct rules (B has shape (n_out, d_l)): :math:`\cos\angle(J_l, B_l)` with
      :math:`J_l = W_L W_{L-1}\cdots W_{l+1}`, the output Jacobian
      :math:`\partial a_L/\partial h_l` of the network *with its activations
      replaced by the identity*. Backprop would send the error as
      :math:`e J_l` in a linear network; DFA sends :math:`e B_l`. We use the
      linearised Jacobian because it needs no data and is the reference of the
      DFA alignment analyses (Nøkland 2016; Launay et al. 2019). It is formed
      for chains of ``nn.Linear`` layers only (e.g. ``MLP``); other models get
      a ``ValueError``.

    Args:
        model: the trained network.
        rule: a rule (its ``.feedback`` is read) or a dict ``{weight name: B}``.
        kind: ``"layer-wise"``, ``"direct"`` or None (from the rule's registry
            family, else from the shapes).

    Returns:
        One row per feedback tensor: ``layer`` (weight name), ``kind``,
        ``cosine``, ``angle`` (degrees), ``numel`` and ``norm_ratio``
        :math:`\|B\|_F / \|\mathrm{ref}\|_F`.

    Example:
        >>> import fa_tutor as ft
        >>> model = ft.models.MLP(4, [8], 3)
        >>> rule = ft.make_rule("adafa", model)  # B = W(0): perfectly aligned at the start
        >>> weight_alignment(model, rule)[["layer", "cosine"]]
                     layer  cosine
        0  layers.0.weight     1.0
        1  layers.1.weight     1.0
    """
    if kind not in (None, "layer-wise", "direct"):
        raise ValueError(f"kind={kind!r}; choose 'layer-wise', 'direct' or None")
    feedback = _feedback_of(rule)
    kind = kind or _rule_kind(rule)
    params = dict(model.named_parameters())
    rows = []
    for name, B in feedback.items():
        if name not in params:
            raise ValueError(f"feedback key {name!r} is not a parameter of the model")
        W = params[name].detach()
        row_kind = kind or ("layer-wise" if B.shape == W.shape else "direct")
        if row_kind == "layer-wise":
            if B.shape != W.shape:
                raise ValueError(f"feedback {name!r} has shape {tuple(B.shape)}, but a layer-wise "
                                 f"rule's B must have W's shape {tuple(W.shape)}")
            ref = W
        else:
            ref = _jacobian_reference(model, name)
            if B.shape != ref.shape:
                raise ValueError(f"direct feedback {name!r} has shape {tuple(B.shape)}; expected "
                                 f"(n_outputs, hidden) = {tuple(ref.shape)}")
        c = cosine(ref, B)
        ratio = float(B.detach().double().norm() / ref.double().norm())
        rows.append({"layer": name, "kind": row_kind, "cosine": c, "angle": angle_degrees(c),
                     "numel": B.numel(), "norm_ratio": ratio})
    return pd.DataFrame(rows, columns=["layer", "kind", "cosine", "angle", "numel", "norm_ratio"])


def update_alignment(model: nn.Module, rule: Any, x: Tensor, y: Tensor) -> pd.DataFrame:
    r"""Cosine between the rule's update :math:`g` and the true gradient :math:`\nabla L`.

    .. math::
        \cos\varphi = \frac{\langle \nabla L(\theta), g(\theta)\rangle}
                           {\|\nabla L(\theta)\|\,\|g(\theta)\|},\qquad
        -\frac{dL}{dt} = \langle \nabla L, g\rangle \ \text{(flow } \dot\theta = -g)

    per trainable parameter and over all of them (row ``"total"``). The true
    gradient is backprop of ``rule.loss_fn(model(x), y)`` at the same weights;
    ``g`` is what ``rule.step(x, y)`` writes into ``.grad``.

    The weights are not changed, the ``.grad`` fields are left as ``rule.step``
    set them, and the model's buffers (e.g. BatchNorm statistics) are restored
    to their values before the call. ``rule.step`` is called once, so a
    stochastic rule's generator advances (and ``usf``/``brsf`` refresh B) as in
    a training step.

    Returns:
        Columns ``parameter``, ``cosine``, ``inner`` :math:`\langle\nabla L, g\rangle`,
        ``norm_update`` :math:`\|g\|`, ``norm_grad`` :math:`\|\nabla L\|`. The
        ``inner`` of the ``"total"`` row is :math:`-dL/dt` per unit learning rate.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("the model has no trainable parameters")
    buffers = [b.detach().clone() for b in model.buffers()]
    with torch.enable_grad():
        loss = rule.loss_fn(model(x), y)
        true = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
    rule.step(x, y)
    for b, saved in zip(model.buffers(), buffers):
        b.data.copy_(saved)
    rows, g_all, u_all = [], [], []
    for (name, p), g in zip(named, true):
        g = torch.zeros_like(p) if g is None else g.detach()
        u = torch.zeros_like(p) if p.grad is None else p.grad.detach()
        g_all.append(g.reshape(-1).double())
        u_all.append(u.reshape(-1).double())
        rows.append(_update_row(name, g_all[-1], u_all[-1]))
    rows.append(_update_row("total", torch.cat(g_all), torch.cat(u_all)))
    return pd.DataFrame(rows)


def _update_row(name: str, g: Tensor, u: Tensor) -> dict[str, Any]:
    return {"parameter": name, "cosine": cosine(g, u), "inner": float(g @ u),
            "norm_update": float(u.norm()), "norm_grad": float(g.norm())}


def sign_alignment_bound(W: Tensor | torch.Size | tuple[int, ...]) -> float:
    r"""Prop. 5.3: under sign-FA, :math:`\cos\angle(W, \mathrm{sign}\,W) \ge 1/\sqrt{\#W}`.

    :math:`\langle W, \mathrm{sign} W\rangle = \|W\|_1 \ge \|W\|_F` and
    :math:`\|\mathrm{sign} W\|_F \le \sqrt{\#W}`; a scale :math:`c>0` (uSF) cancels.
    Accepts a tensor or a shape.
    """
    numel = W.numel() if isinstance(W, Tensor) else math.prod(W)
    if numel <= 0:
        raise ValueError(f"sign_alignment_bound needs a non-empty tensor, got {numel} entries")
    return 1.0 / math.sqrt(numel)


def sign_agreement(W: Tensor, B: Tensor) -> float:
    r"""Share of entries with :math:`\mathrm{sign}\,W = \mathrm{sign}\,B`.

    Lemma 5.4's conclusion: under its initialization the output weights keep
    the signs of their fixed feedback, so this stays 1.
    """
    if W.shape != B.shape:
        raise ValueError(f"W {tuple(W.shape)} and B {tuple(B.shape)} must have the same shape")
    return float((torch.sign(W.detach()) == torch.sign(B.detach())).double().mean())


def _dale_row(name: str, W_next: Tensor) -> dict[str, Any]:
    out = W_next.detach().transpose(0, 1).reshape(W_next.shape[1], -1)  # (neurons, outgoing)
    exc = (out >= 0).all(1)
    inh = (out <= 0).all(1)
    n = out.shape[0]
    return {"layer": name, "neurons": n, "excitatory": int(exc.sum()),
            "inhibitory": int(inh.sum()), "dale_share": float((exc | inh).double().mean())}


def dale_statistics(model_or_weight: nn.Module | Tensor) -> pd.DataFrame:
    r"""Share of neurons whose outgoing weights all have one sign (Dale's principle).

    Neuron :math:`i` feeding :math:`W_{l+1}` has outgoing weights
    :math:`W_{l+1}[:, i]` (for a conv kernel, :math:`K_{l+1}[:, i, \ldots]`);
    it obeys Dale's principle when they are all :math:`\ge 0` (excitatory) or
    all :math:`\le 0` (inhibitory). Lemma 5.4: under FA with
    :math:`b_i w_i(0) \ge \frac12\|W_1[i,:](0)\|^2` the output weights keep the
    signs of the feedback for all t (sign(W₂(t)) = sign(B₂)), so each neuron's
    outgoing sign is fixed by B (Dale's principle).

    Args:
        model_or_weight: a model (every ``nn.Linear``/``nn.Conv2d`` weight after
            the first, in registration order, i.e. the weights leaving hidden
            neurons) or one weight tensor ``W_next``.

    Returns:
        One row per weight: ``layer``, ``neurons``, ``excitatory``,
        ``inhibitory``, ``dale_share``. (A neuron whose outgoing weights are all
        zero counts as both.)
    """
    if isinstance(model_or_weight, Tensor):
        if model_or_weight.dim() < 2:
            raise ValueError(f"W_next must have ≥ 2 dims (out, in, ...), got "
                             f"{tuple(model_or_weight.shape)}")
        return pd.DataFrame([_dale_row("W", model_or_weight)])
    if not isinstance(model_or_weight, nn.Module):
        raise TypeError(f"expected an nn.Module or a Tensor, got {type(model_or_weight).__name__}")
    layers = [(n, m) for n, m in model_or_weight.named_modules() if isinstance(m, _WEIGHT_LAYERS)]
    if len(layers) < 2:
        raise ValueError("dale_statistics needs a model with at least two weight layers "
                         "(a hidden layer and the weights leaving it)")
    return pd.DataFrame([_dale_row(f"{n}.weight", m.weight) for n, m in layers[1:]])
