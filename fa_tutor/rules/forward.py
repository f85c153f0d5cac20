"""Forward gradients: an unbiased gradient estimate from one forward-mode pass, no backprop.

FG-W (Baydin et al. 2022) perturbs every parameter with one random direction v
and scales v by the directional derivative ∇L·v.  FG-A (Ren et al. 2023)
perturbs each hidden layer's pre-activation z instead, estimates ∂L/∂z the
same way, and turns it into weight gradients with the layer's own local
backward.  :class:`PerturbMode` and the two helpers below are shared with the
local-loss rules in :mod:`.local`.

Random draws (all from the rule's ``generator`` through :func:`.noise.gaussian`, so a
seed fixes them): FG-W draws
v ~ N(0, I) for each trainable parameter in ``model.named_parameters()`` order;
FG-A draws u ~ N(0, I) for each hidden layer in forward order, of the shape of
that layer's pre-activation (``(1, ...)`` when shared across the batch).
"""
from __future__ import annotations

import warnings
from typing import Any, Callable

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, jvp, vmap

from .base import Rule, check_batch, register
from .dual import tangent, written_out_dual
from .intercept import _CONV2D, _LINEAR, Layer, find_layers
from .noise import gaussian
from .tracking import Activation, ActivityMode, is_relu

PERTURBATIONS = ("independent", "shared")  # the perturbation option's choices
#: the layers that couple the examples of a batch (training mode)
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm,
               nn.LazyBatchNorm1d, nn.LazyBatchNorm2d, nn.LazyBatchNorm3d)
Credit = Callable[[str, Tensor], Tensor]


class PerturbMode(ActivityMode):
    """Run a model under forward AD with perturbed activities or weights and local reverse graphs.

    * ``activity=True``: each hidden pre-activation z (after its normalization and
      residual, just before the activation) of a layer with trainable parameters
      gets the tangent ũ = u ⊙ [σ'(z) ≠ 0]; ``(layer name, z, ũ)`` is appended to
      ``records``.
    * ``weights``: layer name -> (v_W, v_b): those layers run with tangent v on
      their weight and bias (their reverse graph is dropped).
    * After every activation the reverse graph is cut (the activity becomes a fresh
      leaf that keeps its tangent), so a backward from z reaches only its own
      layer's weights and normalization.

    Weight layers compute their tangent explicitly, ż = W ẋ (+ v_W x + v_b), and
    tensors without a tangent that meet one get a zero tangent: PyTorch would
    otherwise route those ops through slow Python "zero tensor" kernels.
    """

    def __init__(self, layers: list[Layer], generator: torch.Generator, *,
                 activity: bool = True, shared: bool = False,
                 weights: dict[str, tuple[Tensor, Tensor | None]] | None = None):
        super().__init__(layers)
        self.generator, self.activity, self.shared = generator, activity, shared
        self.weights = weights or {}
        self.records: list[tuple[str, Tensor, Tensor]] = []

    def _layer(self, layer: Layer, op: Callable, x: Tensor, W: Tensor, b: Tensor | None):
        xp, xt = fwAD.unpack_dual(x)
        v = self.weights.get(layer.name)
        if v is not None:  # weight perturbation: no reverse graph needed
            W, b = W.detach(), None if b is None else b.detach()
        z = op(xp, W, b)  # primal, with the layer's own reverse graph
        t = None if xt is None else op(xt, W.detach(), None)  # J_x ẋ
        if v is not None:
            tw = op(xp.detach(), v[0], v[1])  # (∂z/∂W) v_W + v_b
            t = tw if t is None else t + tw
        return z if t is None else fwAD.make_dual(z, t)

    def linear(self, layer, x, W, b):
        return self._layer(layer, F.linear, x, W, b)

    def conv2d(self, layer, x, W, b, stride, padding, dilation, groups):
        op = lambda x, W, b: F.conv2d(x, W, b, stride, padding, dilation, groups)
        return self._layer(layer, op, x, W, b)

    def hidden(self, layers: list[Layer], z: Tensor, act: Activation) -> Tensor:
        zp, zt = fwAD.unpack_dual(z)
        perturb = self.activity and any(p.requires_grad for p in layers[0].module.parameters())
        if not perturb and zt is None:  # frozen layers are not perturbed
            return act(zp.detach()).requires_grad_()
        if perturb and is_relu(act):  # s = [z > 0] is the mask itself: ũ = u ⊙ s, ḣ = s ⊙ ż + ũ
            s = (zp > 0).to(zp.dtype)
            u = self._draw(zp).mul_(s) if not self.shared else self._draw(zp) * s
            self.records.append((layers[0].name, zp, u))
            h = torch.relu(zp.detach()).requires_grad_()  # cut: a fresh leaf
            return fwAD.make_dual(h, u if zt is None else torch.addcmul(u, zt, s))
        hp, s = fwAD.unpack_dual(act(fwAD.make_dual(zp.detach(), torch.ones_like(zp))))
        # hp = f(a), s = f'(a): one forward-mode step with tangent 1
        if perturb:
            u = self._draw(zp).masked_fill(s == 0, 0.0)  # inactive units: no perturbation
            self.records.append((layers[0].name, zp, u))
            zt = u if zt is None else zt + u  # ȧ ← ȧ + ũ
        h = hp.detach().requires_grad_()  # cut: a fresh leaf, the next layer's input
        return fwAD.make_dual(h, zt * s)  # ḣ = f'(a) ȧ

    def _draw(self, z: Tensor) -> Tensor:
        """u ~ N(0, I) of z's shape, or one (1, ...) draw broadcast over the batch (shared)."""
        shape = (1, *z.shape[1:]) if self.shared else z.shape
        u = gaussian(shape, self.generator, device=z.device, dtype=z.dtype)
        return u.expand_as(z) if self.shared else u

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        in_place = name.startswith(("__i", "__set")) or (name[-1:] == "_" and name[-2:] != "__")
        dual = written_out_dual(func, args)
        if dual is not func:
            func = dual  # a normalization with its tangent written out; tags still follow
        elif func is not _LINEAR and func is not _CONV2D and not in_place:
            args = tuple(self._zero_tangent(a, args) for a in args)
        return super().__torch_function__(func, types, args, kwargs)

    def _zero_tangent(self, a: Any, args: tuple) -> Any:
        """A float tensor without tangent, next to one with a tangent, gets a zero tangent."""
        if not isinstance(a, Tensor) or not a.is_floating_point() or tangent(a) is not None:
            return a
        if not any(isinstance(o, Tensor) and tangent(o) is not None for o in args):
            return a
        dual = fwAD.make_dual(a, torch.zeros_like(a))
        if a in self.tags:
            self.tags[dual] = self.tags[a]
        return dual


def directional_derivatives(losses: list[Tensor], reads: list[Tensor],
                            tangents: list[Tensor | None], params: list[Tensor],
                            keep: int | None = None) -> tuple[list[Tensor], list]:
    """Exact part and pairing: δ_r = ∂ΣL/∂r for each tensor r the losses read, and d = Σ δ_r ⊙ ṙ.

    The same backward gives the exact gradient of the parameters between the reads
    and the losses (output layer, heads).  ``d`` keeps the first ``keep`` axes of
    each read (1: one value per example; default all but the last: per copy).
    Call it after leaving the dual level (``tangents`` saved before): a backward
    through tensors that still carry tangents runs slow forward-over-reverse code.
    """
    ones = [torch.ones_like(loss) for loss in losses]
    grads = torch.autograd.grad(losses, [*reads, *params], ones, allow_unused=True)
    d = []
    for delta, r, t in zip(grads, reads, tangents):
        k = r.dim() - 1 if keep is None else keep
        if delta is None or t is None:
            d.append(r.new_zeros(r.shape[:k]))
        else:
            d.append((delta * t).flatten(k).sum(-1))  # (N, *copies)
    return d, list(grads[len(reads):])


def activity_grads(records: list[tuple[str, Tensor, Tensor]], credit: Credit,
                   params: list[Tensor]) -> list:
    """ĝ_z ← credit(layer) ⊙ ũ for every perturbed layer, then each layer's local backward."""
    records = [r for r in records if r[1].requires_grad]  # layers with trainable weights
    if not records or not params:
        return [None] * len(params)
    zs = [z for _, z, _ in records]
    g_z = [credit(name, z) * u for name, z, u in records]  # same shapes as z
    return list(torch.autograd.grad(zs, params, g_z, allow_unused=True))


def accumulate(total: list, *parts: list) -> list:
    """Entry-wise sum of gradient lists (``None`` = no contribution)."""
    for part in parts:
        total = [t if g is None else g if t is None else t + g for t, g in zip(total, part)]
    return total


def write_grads(params: list[Tensor], total: list, num_tangents: int) -> None:
    """p.grad ← the average over the tangents (zeros where nothing reached p)."""
    for p, g in zip(params, total):
        g = torch.zeros_like(p) if g is None else g.detach()
        p.grad = g / num_tangents if num_tangents > 1 else g


def readout_names(model: nn.Module) -> set[str]:
    """Parameters that FG-W's ``exact_readout`` leaves unperturbed (they get exact gradients).

    A model with the local-loss protocol (``local_layers()``, e.g. ``LocalMixer``): every
    parameter outside its body layers (the heads and the classifier). Any other model:
    the parameters of its last ``nn.Linear`` in ``model.modules()`` order (the classifier).
    That is registration order, which is forward order in ``fa_tutor``'s models but need not
    be in yours: a model that registers its classifier before another ``nn.Linear`` would
    get the wrong readout, so define ``local_layers()`` there or pass ``exact_readout=False``.
    """
    if callable(getattr(model, "local_layers", None)):
        body = tuple(f"{name}." for name in model.local_layers())
        return {n for n, _ in model.named_parameters() if not n.startswith(body)}
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"fg_w: exact_readout=True needs an nn.Linear readout, and "
                         f"{type(model).__name__} has none; pass exact_readout=False")
    name, last = linears[-1]
    return {f"{name}.{n}" if name else n for n, _ in last.named_parameters()}


@register("fg_w", family="forward gradient", stochastic=True,
          summary="weight-perturbed forward gradient (Baydin et al.): g = (∇L·v) v",
          defaults={"perturbation": "shared", "num_tangents": 1, "exact_readout": True},
          choices={"perturbation": PERTURBATIONS})
class ForwardGradientWeights(Rule):
    r"""Weight-perturbed forward gradient: one JVP along a random direction of all parameters.

    .. math::
        v \sim \mathcal N(0, I_{|\theta|}), \qquad
        d \leftarrow \nabla_\theta L \cdot v \ \text{(forward mode)}, \qquad
        \nabla_\theta \leftarrow \tfrac1K \textstyle\sum_{k=1}^K d_k v_k,
        \qquad \nabla_{\theta_{\mathrm{out}}} \leftarrow \nabla_{\theta_{\mathrm{out}}} L
        \ \text{(exact readout)}

    Baydin, Pearlmutter, Syme, Wood & Torr (2022), "Gradients without
    Backpropagation", https://arxiv.org/abs/2202.08587.  Unbiased because
    E[v vᵀ] = I; its variance grows with the number of parameters (Ren et al. 2023,
    Table 1: (pq+1)·S per coordinate of a p×q layer when v is shared by the batch).

    Args:
        model: any ``nn.Module`` (``torch.func.functional_call`` runs it).
        loss_fn: ``loss_fn(logits, y) -> scalar``; defaults to mean cross-entropy.
        seed: seeds the rule's own generator (feedback init, perturbations); None draws one.
        perturbation: ``"shared"`` (default): one v for the whole batch; d = ∇L·v is
            the tangent of the batch loss after one forward pass with dual
            parameters (``torch.autograd.forward_ad``): this is weight perturbation.
            ``"independent"``: example n gets its own v_n,
            :math:`\nabla_\theta \leftarrow \sum_n (\nabla_\theta L_n\cdot v_n)\, v_n`
            (Table 1's independent column), computed with ``vmap`` over examples: N
            copies of v in memory, and no batch-coupled layers (BatchNorm).
        num_tangents: K, the number of directions averaged (default 1).
        exact_readout: ``True`` (default, Ren et al.'s FG-W): θ is the body's weights
            only; the readout θ_out (the last ``nn.Linear``; for a local-loss model
            such as ``LocalMixer`` every parameter outside ``local_layers()``, i.e. the
            classifier and the heads) gets its exact gradient, as in FG-A. ``False``
            (Baydin et al.'s): every parameter is perturbed (:func:`readout_names`).

    Example:
        >>> import torch, fa_tutor as ft
        >>> model = ft.models.MLP(4, [8], 3)
        >>> rule = ft.make_rule("fg_w", model, seed=0)
        >>> loss = rule.step(torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1]))

    .. note:: With mean-reduced losses L = (1/N)Σ_n ℓ_n, the independent variant uses
       the per-example terms ∇(ℓ_n/N)·v_n = e_n·J_n v_n, with e = ∂L/∂logits taken
       at the output (the loss function's own derivative, no backprop through the
       network).

    Taught in: {ref}`forward-gradients`.
    """

    def __init__(self, model: nn.Module, *, loss_fn=None, seed: int | None = None,
                 perturbation: str = "shared", num_tangents: int = 1, exact_readout: bool = True):
        super().__init__(model, loss_fn=loss_fn, seed=seed)  # options: checked by make_rule
        self.options = {"perturbation": perturbation, "num_tangents": num_tangents,
                        "exact_readout": exact_readout}
        self.readout = readout_names(model) if exact_readout else set()
        if exact_readout and all(n in self.readout for n, _ in model.named_parameters()):
            raise ValueError(f"fg_w: {type(model).__name__}'s only layer is its readout, so "
                             "exact_readout=True leaves nothing to perturb; pass "
                             "exact_readout=False")

    def _compute_grads(self, x: Tensor, y: Tensor) -> Tensor:
        check_batch(x, y)
        named = self._trainable()
        names = [n for n, _ in named]
        body = [(n, p) for n, p in named if n not in self.readout]  # θ: perturbed
        exact = [(n, p) for n, p in named if n in self.readout]  # θ_out: exact gradient
        primals = tuple(p.detach() for _, p in body)

        def run(*ps: Tensor, inputs: Tensor = x) -> Tensor:
            weights = {**dict(zip([n for n, _ in body], ps)), **dict(exact)}
            return functional_call(self.model, weights, (inputs,))

        total: dict[str, Tensor | None] = dict.fromkeys(names)
        for _ in range(self.options["num_tangents"]):
            if self.options["perturbation"] == "shared":
                v = [self._randn(p.shape, p) for p in primals]
                with fwAD.dual_level():  # one forward pass with tangent v on the body's weights
                    out = run(*map(fwAD.make_dual, primals, v))
                    out_t = tangent(out)  # J_θ v
                leaf = out.detach().requires_grad_()  # the tangents are gone: plain autograd
                loss = self.loss_fn(leaf, y)
                (e,) = torch.autograd.grad(loss, leaf)  # output error ∂L/∂logits
                d = (e * out_t).sum()  # ∇_θ L·v
                grads = [d * vi for vi in v]  # g = (∇L·v) v
                g_out = (torch.autograd.grad(out, [p for _, p in exact], e, allow_unused=True)
                         if exact else [])  # unused (heads of a local-loss model): None
            else:
                v = [self._randn((x.shape[0], *p.shape), p) for p in primals]  # v_n
                one = lambda xn, *vn: jvp(lambda *ps: run(*ps, inputs=xn[None]), primals, vn)
                out, out_t = (o.squeeze(1) for o in vmap(one)(x, *v))  # (N, K)
                leaf = out.detach().requires_grad_()
                loss = self.loss_fn(leaf, y)
                (e,) = torch.autograd.grad(loss, leaf)  # output error ∂L/∂logits
                d = (e * out_t).flatten(1).sum(1)  # (N,): ∇(ℓ_n/N)·v_n
                grads = [torch.tensordot(d, vi, dims=1) for vi in v]
                g_out = (torch.autograd.grad(run(*primals), [p for _, p in exact], e,
                                             allow_unused=True)
                         if exact else [])  # exact readout gradient, e back through θ_out
            new = {**dict(zip([n for n, _ in body], grads)),
                   **dict(zip([n for n, _ in exact], g_out))}
            total = dict(zip(names, accumulate(list(total.values()),
                                                [new[n] for n in names])))
        write_grads([p for _, p in named], list(total.values()), self.options["num_tangents"])
        return loss.detach()

    def _randn(self, shape: tuple, like: Tensor) -> Tensor:
        return gaussian(shape, self.generator, device=like.device, dtype=like.dtype)


@register("fg_a", family="forward gradient", stochastic=True,
          summary="activity-perturbed forward gradient (Ren et al.): ĝ_z = (∇_z L·u) u, local W",
          defaults={"perturbation": "independent", "num_tangents": 1},
          choices={"perturbation": PERTURBATIONS})
class ForwardGradientActivities(Rule):
    r"""Activity-perturbed forward gradient: perturb every hidden pre-activation at once.

    .. math::
        u_l \sim \mathcal N(0, I), \quad \tilde u_l \leftarrow u_l \odot [f'(a_l) \neq 0],
        \quad d_n \leftarrow \textstyle\sum_l \nabla_{a_{l,n}} L \cdot \tilde u_{l,n}
        \ \text{(one forward-mode pass)},

        \hat\delta_l \leftarrow d \odot \tilde u_l, \qquad
        \nabla_{W_l} \leftarrow \hat\delta_l\, h_{l-1}^\top \ \text{(through the layer's
        own normalization)}, \qquad \nabla_{W_L} \leftarrow e\, h_{L-1}^\top

    Ren, Kornblith, Liao & Hinton (2023), "Scaling Forward Gradient With Local
    Losses", https://arxiv.org/abs/2210.03310, eq. (3).  a_l is the pre-activation
    after the layer's normalization (and residual), where the released code adds
    its noise; d_n is example n's own directional derivative, d_n = e_n·ẏ_n with
    e = ∂L/∂logits (mean reduction: e carries the 1/N).  Unbiased; a factor of
    fan-in fewer perturbed numbers than FG-W (Table 1: (q+1)·S instead of (pq+1)·S).

    Args:
        model: a model of ``nn.Linear`` / ``nn.Conv2d`` layers (normalization and
            elementwise layers allowed), e.g. ``MLP`` or ``LocalMixer``.
        loss_fn: ``loss_fn(logits, y) -> scalar``; defaults to mean cross-entropy.
        seed: seeds the rule's own generator (feedback init, perturbations); None draws one.
        perturbation: ``"independent"`` (default, the paper's): u drawn per example;
            ``"shared"``: one u for the whole batch (still paired with each example's
            own d_n; Table 1's shared column).
        num_tangents: K, the number of perturbations averaged (default 1).

    Example:
        >>> import torch, fa_tutor as ft
        >>> model = ft.models.MLP(4, [8], 3, activation="relu")
        >>> rule = ft.make_rule("fg_a", model, seed=0)
        >>> loss = rule.step(torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1]))

    .. note:: The output layer gets its exact gradient (the released code does the
       same for its classifier).  Units with f'(a) = 0 (inactive ReLU) get no
       perturbation and no update, as in the paper; units of activations with
       nonzero slope (leaky ReLU, tanh) are all perturbed.  Examples must not
       interact (no BatchNorm in training mode): d_n leaves out cross-example terms.

    Taught in: {ref}`forward-gradients`.
    """

    def __init__(self, model: nn.Module, *, loss_fn=None, seed: int | None = None,
                 perturbation: str = "independent", num_tangents: int = 1):
        super().__init__(model, loss_fn=loss_fn, seed=seed)  # options: checked by make_rule
        self.options = {"perturbation": perturbation, "num_tangents": num_tangents}
        self.layers = find_layers(model, rule="fg_a")
        self._all_seen = False  # checked after the first forward pass with a graph
        if any(isinstance(m, BATCH_NORMS) for m in model.modules()):
            warnings.warn("fg_a: BatchNorm couples the examples of a batch; the per-example "
                          "derivative d_n misses the cross-example terms (biased estimate).",
                          stacklevel=3)

    def _compute_grads(self, x: Tensor, y: Tensor) -> Tensor:
        check_batch(x, y)
        params = [p for _, p in self._trainable()]
        total: list = [None] * len(params)
        shared = self.options["perturbation"] == "shared"
        for _ in range(self.options["num_tangents"]):
            with fwAD.dual_level():
                with PerturbMode(self.layers, self.generator, shared=shared) as mode:
                    out = self.model(x)
                out_t = tangent(out)  # ẏ = Σ_l J_l ũ_l
            if not self._all_seen:  # once: no weight escaped the rule (outputs, local graphs)
                pre = [z for _, z, _ in mode.records]
                self._all_seen = mode.check_all_seen(self.name, [out, *pre])
            loss = self.loss_fn(out, y)  # the tangents are gone: plain backward from here
            (d,), exact = directional_derivatives([loss], [out], [out_t], params, keep=1)
            per_example = lambda name, z: d.reshape(-1, *[1] * (z.dim() - 1))  # d: (N,)
            total = accumulate(total, exact, activity_grads(mode.records, per_example, params))
        write_grads(params, total, self.options["num_tangents"])
        return loss.detach()
