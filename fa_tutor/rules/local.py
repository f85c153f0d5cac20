"""Local greedy losses (Ren et al. 2023): each block learns from its own loss, never from above.

The local-loss protocol.  A model trained by an ``lg_*`` rule defines

* ``local_losses(x, y, loss_fn) -> LocalLosses`` with fields ``losses`` (one
  scalar per local module), ``features`` (the tensor each of those losses reads,
  ``(N, *copies, width)``), ``logits`` and ``loss`` (the final classifier and its
  loss, the value ``step`` returns).  Stop-gradients (``detach``) between modules
  stop gradients and forward-mode tangents alike, so ``sum(losses) + loss``
  differentiates into the local-greedy update;
* for the forward-gradient variants, also ``local_layers()`` (the body layers, the
  ones trained through the features; every other parameter reads a loss and gets
  its exact gradient) and ``local_credit(name, d, weight=False)`` (which copy's
  directional derivative pairs with each unit of a body layer).

Copy c of loss b passes gradient and tangent only through ``features[b][:, c]``
(the replicated, stop-gradient aggregator of eqs. (4)–(5)), so its directional
derivative for example n is ``d_b[n, c] = (∂L_b/∂f_b ⊙ ḟ_b)[n, c].sum()``.
:class:`fa_tutor.models.LocalMixer` implements the protocol (copies = patch × group).

Random draws: ``lg_fg_a`` draws like ``fg_a`` (one u per perturbed layer, forward
order); ``lg_fg_w`` draws v for the weight, then the bias, of each trainable body
layer in registration order.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Rule, check_batch, register
from .dual import tangent
from .forward import (PERTURBATIONS, PerturbMode, accumulate, activity_grads,
                      directional_derivatives, write_grads)
from .feedback import FeedbackConv2d, FeedbackLinear, apply_fn, feedback_of
from .intercept import Layer, WeightOpMode, find_layers
from .noise import gaussian


def check_protocol(rule: Rule, needs: tuple[str, ...] = ("local_losses",)) -> None:
    """The shared check of the ``lg_*`` rules: the model speaks the local-loss protocol."""
    missing = [m for m in needs if not callable(getattr(rule.model, m, None))]
    if missing:
        raise ValueError(f"rule {rule.name!r} needs a model with {', '.join(missing)} "
                         f"(the local-loss protocol of fa_tutor.rules.local, e.g. "
                         f"LocalMixer); {type(rule.model).__name__} has none")


@register("lg_bp", family="local loss", needs_local_losses=True,
          summary="backprop inside each block on its local losses, stop-gradient between blocks")
class LocalBackprop(Rule):
    r"""LG-BP: backprop of the local losses, with a stop-gradient between blocks.

    .. math::
        \nabla_\theta \leftarrow \nabla_\theta \Big(\textstyle\sum_b L_b + L_{\mathrm{out}}
        \Big) \quad \text{with } \mathrm{SG}(h_b) \text{ entering block } b+1

    Ren, Kornblith, Liao & Hinton (2023), https://arxiv.org/abs/2210.03310 (Table 3,
    "LG-BP").  Each block's weights see only their own block's loss; the final
    classifier reads the stop-gradient last block.

    Args:
        model: a model with ``local_losses`` (e.g. ``LocalMixer``).
        loss_fn: ``loss_fn(logits, y) -> scalar``; defaults to mean cross-entropy.
        seed: unused (kept for the uniform interface).

    Example:
        >>> import torch, fa_tutor as ft
        >>> model = ft.models.LocalMixer(1, 8, 10, num_blocks=2, num_patches=2,
        ...                              channels=8, groups=2)
        >>> rule = ft.make_rule("lg_bp", model)
        >>> loss = rule.step(torch.randn(5, 1, 8, 8), torch.tensor([0, 1, 2, 3, 4]))

    Taught in: {ref}`local-losses`.
    """

    def __init__(self, model: nn.Module, *, loss_fn=None, seed: int | None = None):
        super().__init__(model, loss_fn=loss_fn, seed=seed)
        check_protocol(self)

    def _compute_grads(self, x: Tensor, y: Tensor) -> Tensor:
        check_batch(x, y)
        out = self.model.local_losses(x, y, self.loss_fn)
        self._write_grads(sum(out.losses) + out.loss, [p for _, p in self._trainable()])
        return out.loss


class _FixedFeedback(WeightOpMode):
    """FA in every layer: the input gradient uses the fixed random B (feedback.py's check).

    ``released_heads``: the layers named ``heads.*`` compute their value with B,
    x Bᵀ + b, as the released LG-FA code does; their gradients stay FA's (δ B down,
    δ xᵀ into W), so W learns from the error of B's logits.
    """

    def __init__(self, layers: list[Layer], feedback: dict[str, Tensor],
                 released_heads: bool = False):
        super().__init__(layers)
        self.feedback, self.released_heads = feedback, released_heads

    def linear(self, layer, x, W, b):
        B = feedback_of(self.feedback[layer.weight_name], layer, W)
        z = apply_fn(FeedbackLinear, x, W, b, B)
        if self.released_heads and layer.name.startswith("heads."):
            z = z + (F.linear(x, B) - F.linear(x, W)).detach()  # value x Bᵀ + b, FA's gradients
        return z

    def conv2d(self, layer, x, W, b, stride, padding, dilation, groups):
        B = feedback_of(self.feedback[layer.weight_name], layer, W)
        return apply_fn(FeedbackConv2d, x, W, b, B, stride, padding, dilation, groups)


@register("lg_fa", family="local loss", needs_local_losses=True,
          summary="feedback alignment inside each block on its local losses",
          defaults={"released_heads": False})
class LocalFeedbackAlignment(Rule):
    r"""LG-FA: the local losses, with feedback alignment inside each block.

    .. math::
        \delta_l \leftarrow (B_{l+1}^\top \delta_{l+1}) \odot f'(a_l), \qquad
        \nabla_{W_l} \leftarrow \delta_l h_{l-1}^\top, \qquad \text{errors from }
        \textstyle\sum_b L_b + L_{\mathrm{out}} \text{, stop-gradient between blocks}

    Ren et al. (2023), https://arxiv.org/abs/2210.03310 (Table 3, "LG-FA"); FA from
    Lillicrap et al. (2016).  Every ``nn.Linear``/``nn.Conv2d`` (token mixing,
    dense, grouped, heads) sends its error down through a fixed random B.

    Args:
        model: a model with ``local_losses`` (e.g. ``LocalMixer``).
        loss_fn: ``loss_fn(logits, y) -> scalar``; defaults to mean cross-entropy.
        seed: seeds the rule's own generator (feedback init, perturbations); None draws one.
        released_heads: ``False`` (default): head b's error is
            :math:`e_b = \mathrm{softmax}(\bar x_b W_{H_b}^\top + c_b) - y`. ``True``: the
            released code's LG-FA, :math:`e_b = \mathrm{softmax}(\bar x_b B_{H_b}^\top + c_b)
            - y` — the head computes its logits with its feedback matrix, and that error
            drives both what it sends down (:math:`e_b B_{H_b}`) and W's update
            (:math:`e_b^\top \bar x_b`).

    Example:
        >>> import torch, fa_tutor as ft
        >>> model = ft.models.LocalMixer(1, 8, 10, num_blocks=2, num_patches=2,
        ...                              channels=8, groups=2)
        >>> rule = ft.make_rule("lg_fa", model, seed=0)
        >>> sorted(rule.feedback)[:2]
        ['blocks.0.dense.weight', 'blocks.0.grouped.weight']

    .. note:: B_l ~ U(−1/√fan_in, 1/√fan_in), the distribution of PyTorch's default
       weight initialization (the released code draws B like W).

    Taught in: {ref}`local-losses`.
    """

    def __init__(self, model: nn.Module, *, loss_fn=None, seed: int | None = None,
                 released_heads: bool = False):
        super().__init__(model, loss_fn=loss_fn, seed=seed)  # options: checked by make_rule
        check_protocol(self)
        self.options = {"released_heads": released_heads}
        self.layers = find_layers(model, rule="lg_fa")
        for layer in self.layers:
            W = layer.weight
            bound = 1.0 / math.sqrt(math.prod(W.shape[1:]))
            B = torch.rand(W.shape, generator=self.generator, device=W.device, dtype=W.dtype)
            self.feedback[layer.weight_name] = (2 * B - 1) * bound
        self._mode = _FixedFeedback(self.layers, self.feedback, released_heads)

    def _compute_grads(self, x: Tensor, y: Tensor) -> Tensor:
        check_batch(x, y)
        with self._mode.routing():
            out = self.model.local_losses(x, y, self.loss_fn)
        self._mode.check_all_seen(self.name, [*out.losses, out.loss])  # every layer through B? (once)
        self._write_grads(sum(out.losses) + out.loss, [p for _, p in self._trainable()])
        return out.loss


class LocalForwardGradient(Rule):
    """LG-FG-A / LG-FG-W: forward gradients of the local losses, one tangent per copy."""

    activity = True

    def __init__(self, model: nn.Module, *, loss_fn=None, seed: int | None = None,
                 perturbation: str | None = None, num_tangents: int = 1):
        super().__init__(model, loss_fn=loss_fn, seed=seed)  # options: checked by make_rule
        check_protocol(self, ("local_losses", "local_layers", "local_credit"))
        perturbation = perturbation or ("independent" if self.activity else "shared")
        self.options = {"perturbation": perturbation, "num_tangents": num_tangents}
        self.layers = find_layers(model, rule=self.name)
        body = set(model.local_layers())
        self.body = [layer for layer in self.layers if layer.name in body]
        self._all_seen = False

    def _compute_grads(self, x: Tensor, y: Tensor) -> Tensor:
        check_batch(x, y)
        params = [p for _, p in self._trainable()]
        total: list = [None] * len(params)
        K, shared = self.options["num_tangents"], self.options["perturbation"] == "shared"
        for _ in range(K):
            v = {} if self.activity else {l.name: self._draw(l.module) for l in self.body
                                          if any(p.requires_grad for p in l.module.parameters())}
            with fwAD.dual_level():
                with PerturbMode(self.layers, self.generator, activity=self.activity,
                                 shared=shared, weights=v) as mode:
                    out = self.model.local_losses(x, y, self.loss_fn)
                tangents = [tangent(f) for f in out.features]
            if not self._all_seen:  # once: no weight escaped the rule (losses, local graphs)
                outs = [*out.losses, out.loss, *(z for _, z, _ in mode.records)]
                self._all_seen = mode.check_all_seen(self.name, outs, required=set(v))
            d, exact = directional_derivatives([*out.losses, out.loss], out.features,
                                               tangents, params)  # d[b]: (N, *copies)
            credit = lambda name, z: self.model.local_credit(name, d)
            total = accumulate(total, exact, activity_grads(mode.records, credit, params),
                               self._weight_grads(v, d, params))
        write_grads(params, total, K)
        return out.loss.detach()

    def _draw(self, module: nn.Module) -> tuple[Tensor, Tensor | None]:
        W, b = module.weight, module.bias
        draw = lambda t: gaussian(t.shape, self.generator, device=t.device, dtype=t.dtype)
        return draw(W), None if b is None else draw(b)

    def _weight_grads(self, v: dict, d: list[Tensor], params: list[Tensor]) -> list:
        """The weight-perturbed parameters' gradients (LG-FG-W); none for activity rules."""
        return [None] * len(params)


@register("lg_fg_a", family="local loss", needs_local_losses=True, stochastic=True,
          summary="activity-perturbed forward gradient of the local losses (Ren et al.)",
          defaults={"perturbation": "independent", "num_tangents": 1},
          choices={"perturbation": PERTURBATIONS})
class LocalForwardGradientActivities(LocalForwardGradient):
    r"""LG-FG-A: perturb every body pre-activation, pair each unit with its own local loss.

    .. math::
        d_{b}[n,p,g] \leftarrow \nabla L_{b,p,g} \cdot \dot x_{b}[n,p,g]
        \ \text{(one forward pass, eqs. 4–5)}, \qquad
        \hat\delta_l \leftarrow c_l(d_b) \odot \tilde u_l, \qquad
        \nabla_{W_l} \leftarrow \text{local backward of } \hat\delta_l,

        \nabla_{H_b} \leftarrow \nabla_{H_b} L_b \ \text{(heads and classifier exact)}

    c_l pairs unit (n, p, j) of a channel layer with copy (p, group of j) and a
    token-mixing unit at patch p with the sum over the groups of p
    (``local_credit``).  Ren et al. (2023), https://arxiv.org/abs/2210.03310, the
    main method (Table 3: 30.68% test error, CIFAR-10 M/8/16).  Unbiased for LG-BP's
    update.

    Args:
        model: a model with the full local-loss protocol (``LocalMixer``).
        loss_fn: ``loss_fn(logits, y) -> scalar``; defaults to mean cross-entropy.
        seed: seeds the rule's own generator (feedback init, perturbations); None draws one.
        perturbation: ``"independent"`` (default) or ``"shared"`` across the batch.
        num_tangents: K perturbations averaged (the code's ``num_passes``), default 1.

    Example:
        >>> import torch, fa_tutor as ft
        >>> model = ft.models.LocalMixer(1, 8, 10, num_blocks=2, num_patches=2,
        ...                              channels=8, groups=2)
        >>> rule = ft.make_rule("lg_fg_a", model, seed=0)
        >>> loss = rule.step(torch.randn(5, 1, 8, 8), torch.tensor([0, 1, 2, 3, 4]))

    .. note:: The local heads' and classifier's learning-rate multipliers of the code
       (``head_lr``, ``last_layer_lr`` = 0.1) are optimizer parameter groups here.

    Taught in: {ref}`local-losses`.
    """

    activity = True


@register("lg_fg_w", family="local loss", needs_local_losses=True, stochastic=True,
          summary="weight-perturbed forward gradient of the local losses (Ren et al.)",
          defaults={"perturbation": "shared", "num_tangents": 1, "released_pairing": False},
          choices={"perturbation": ("shared",)})  # a weight is shared by the batch
class LocalForwardGradientWeights(LocalForwardGradient):
    r"""LG-FG-W: perturb every body weight (shared by the batch), pair rows with their losses.

    .. math::
        v \sim \mathcal N(0, I), \qquad d_b[n,p,g] \leftarrow \nabla L_{b,p,g}\cdot
        \dot x_b[n,p,g], \qquad \nabla_{W_l[j,:]} \leftarrow
        \Big(\textstyle\sum_{n,p} d_b[n,p,g(j)]\Big)\, v_{W_l[j,:]}
        \ \text{(grouped layers; dense rows: } \textstyle\sum_{n,p,g} d_b
        \text{; token row } p\text{: } \textstyle\sum_{n,g} d_b[n,p,g])

    Row j of a grouped layer feeds group g(j) only; a dense row reaches every
    group of every patch (its noise enters before a LayerNorm over all channels)
    and gets the block total; token-mixing row p makes token p only and gets the
    sum over the groups of patch p (``local_credit(weight=True)``).  Heads and the
    classifier get exact gradients, with zero tangents.  Ren et al. (2023),
    https://arxiv.org/abs/2210.03310 (Table 3, "LG-FG-W").

    Args:
        model: a model with the full local-loss protocol (``LocalMixer``).
        loss_fn: ``loss_fn(logits, y) -> scalar``; defaults to mean cross-entropy.
        seed: seeds the rule's own generator (feedback init, perturbations); None draws one.
        perturbation: only ``"shared"`` (weights are shared by the batch).
        num_tangents: K perturbations averaged, default 1.
        released_pairing: ``False`` (default): the unbiased pairing above. ``True``: the
            released code's, a dense row with its own group only and a token row with the
            block total (``local_credit(released=True)``): biased, lower variance, and
            what Table 3's LG-FG-W rows ran.

    Example:
        >>> import torch, fa_tutor as ft
        >>> model = ft.models.LocalMixer(1, 8, 10, num_blocks=2, num_patches=2,
        ...                              channels=8, groups=2)
        >>> rule = ft.make_rule("lg_fg_w", model, seed=0)
        >>> loss = rule.step(torch.randn(5, 1, 8, 8), torch.tensor([0, 1, 2, 3, 4]))

    .. note:: The released code (``update_forward_grad_weights``) pairs dense rows with
       their own group g(j) only, which leaves out the other groups' share of the
       gradient (a bias, measurable with ``fa_tutor.metrics.estimator_stats``); we
       pair them with the block total, which is unbiased for LG-BP's update.  It pairs
       token rows with the block total too; their own patch is unbiased as well and
       leaves out the other patches' noise.

    Taught in: {ref}`local-losses`.
    """

    activity = False

    def __init__(self, model: nn.Module, *, released_pairing: bool = False, **options: Any):
        super().__init__(model, **options)
        self.options["released_pairing"] = released_pairing

    def _weight_grads(self, v: dict, d: list[Tensor], params: list[Tensor]) -> list:
        """∇_W ← c ⊙ v_W row by row, c = the summed derivative of the copies each row feeds."""
        grads: dict[int, Tensor] = {}
        for layer in self.body:
            if layer.name not in v:
                continue
            c = self.model.local_credit(layer.name, d, weight=True,  # (rows,)
                                        released=self.options["released_pairing"])
            vW, vb = v[layer.name]
            grads[id(layer.module.weight)] = c.reshape(-1, *[1] * (vW.dim() - 1)) * vW
            if vb is not None:
                grads[id(layer.module.bias)] = c * vb
        return [grads.get(id(p)) for p in params]
