r"""Direct feedback rules: the shared :class:`DirectRule`, dfa and dkp (fdfa: :mod:`.fdfa`).

Each hidden layer gets the output error :math:`e = \partial L/\partial y` through its
own :math:`B_l`: :math:`\delta_l \leftarrow (B_l^\top e) \odot f'(a_l)`; the output
layer gets its true gradient. The rules differ only in :math:`B_l`.

Mechanism (no hooks, no model copy): a ``DirectPassMode`` (:mod:`.direct_pass`) keeps
each hidden activity :math:`h_l = f(a_l)` and cuts the graph after it; one Function on
the logits, ``DirectFeedback`` (below), sends :math:`e` to the output layer and
:math:`e B_l` to each kept :math:`h_l`; autograd carries it through the layer's own
activation and normalization to its weights.

:math:`B_l` has shape ``(*out_shape, *hidden_shape)`` (``(K, *hidden_shape)`` for
``(N, K)`` logits), known only after a forward pass: the rule runs one dry pass (eval
mode, no grad, zeros) at construction when it knows one example's shape (option
``input_shape``, a model attribute ``input_shape``, an ``MLP``'s ``in_features``);
otherwise B is created at the first ``step`` and ``rule.parameters()`` raises until then.
"""
from __future__ import annotations

import contextlib
import math
from typing import Any

import torch
import torch.autograd.forward_ad as fwAD
from torch import Tensor, nn

from ._torch_compat import apply_fn, cache_forward_signature
from .base import (BatchShapeError, Rule, batch_misfit, check_batch, fill_doc, misfit_message,
                   register, rule_spec)
from .direct_pass import DirectPass, DirectPassMode
from .intercept import find_layers

_ARGS = """model: an ``nn.Module`` built from ``nn.Linear``/``nn.Conv2d`` layers whose last
            weight layer produces the logits (normalization layers keep their exact local
            gradient).
        loss_fn: ``loss_fn(logits, y) -> scalar``; defaults to mean cross-entropy.
        seed: seeds the rule's own generator (feedback init, perturbations); None draws one.
        input_shape: shape of one input example, e.g. ``(1, 28, 28)``; lets the rule create
            its feedback at construction (default None: ``model.input_shape``, an MLP's
            ``in_features``, or else at the first step).
        unsupported: ``"error"`` (default) or ``"warn"`` for a layer with trainable
            weights the rule cannot convert."""
_INIT_ARG = """feedback_init: ``"zeros"`` (default, the reference code) or ``"random"``
            (the dfa draw)."""


class DirectFeedback(torch.autograd.Function):
    r"""Identity on the logits; backward: ``∂y ← e``, ``∂h_l ← e B_l``, ``∂B_l ← eᵀh_l``.

    Called as ``DirectFeedback.apply(y, B_1, …, B_k, h_1, …, h_k)``. The output
    layer sees the true error; each hidden activity :math:`h_l` gets the error
    projected through :math:`B_l`. The gradient for :math:`B_l` (computed only
    when :math:`B_l` requires grad, i.e. dkp) is the one a direct forward weight
    from :math:`h_l` to :math:`y` would get.
    """

    @staticmethod
    def forward(y: Tensor, *tensors: Tensor) -> Tensor:
        return y.view_as(y)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        ctx.k = (len(inputs) - 1) // 2
        ctx.save_for_backward(*inputs[1:])

    @staticmethod
    def backward(ctx: Any, e: Tensor):  # e: (N, *out_shape)
        Bs, hs = ctx.saved_tensors[:ctx.k], ctx.saved_tensors[ctx.k:]
        e2 = e.flatten(1)  # (N, K)
        grad_B, grad_h = [], []
        for i, (B, h) in enumerate(zip(Bs, hs)):
            B2 = B.reshape(e2.shape[1], -1)  # (K, n_l)
            # DFA: B_l where backprop would use the chain of weights above h_l
            grad_h.append((e2 @ B2).view_as(h))  # (N, *hidden)
            if ctx.needs_input_grad[1 + i]:  # dkp: a direct weight's gradient
                grad_B.append((e2.mT @ h.flatten(1)).view_as(B))  # (K, n_l)
            else:
                grad_B.append(None)
        return (e, *grad_B, *grad_h)  # the output layer gets the true error


cache_forward_signature(DirectFeedback)  # as feedback.py's Functions: no inspection per call


class DirectRule(Rule):
    """Shared machinery of dfa, dkp and fdfa; subclasses set how B starts and learns."""

    perturb: bool = False  # fdfa: forward-mode tangents on every hidden activity
    autograd_feedback: bool = False  # dkp: B's gradient comes out of DirectFeedback

    def __init__(self, model: nn.Module, *, loss_fn=None, seed: int | None = None,
                 **options: Any):  # checked by make_rule against the registry's defaults
        super().__init__(model, loss_fn=loss_fn, seed=seed)
        self.options = {**rule_spec(self.name).defaults, **options}
        self.layers = find_layers(model, rule=self.name, unsupported=self.options["unsupported"])
        self._checked = False
        shape = self._input_shape()
        if shape is not None:
            self._dry_run(shape)

    # -- feedback tensors --------------------------------------------------------------
    def parameters(self) -> list[Tensor]:
        if not self.learned_feedback:
            return []
        if not self.feedback:
            raise RuntimeError(
                f"rule {self.name!r}: the feedback shapes are not known yet. Pass "
                "input_shape=(...) (one example's shape) to make_rule, or call rule.step once "
                "before building the feedback optimizer.")
        return list(self.feedback.values())

    @property
    def learned_feedback(self) -> bool:
        return rule_spec(self.name).learned_feedback

    def init_feedback(self, shape: tuple[int, ...], n_hidden: int, like: Tensor) -> Tensor:
        """``U(-1/√n_l, 1/√n_l)`` (``n_l`` units in ``h_l``) or zeros (``feedback_init``)."""
        if self.options.get("feedback_init", "random") == "zeros":
            B = torch.zeros(shape, device=like.device, dtype=like.dtype)
        else:  # PyTorch's Linear(n_l, K) init (kaiming_uniform_ with a=0 is √6× wider)
            bound = 1.0 / math.sqrt(n_hidden)
            B = torch.empty(shape, device=like.device, dtype=like.dtype)
            B.uniform_(-bound, bound, generator=self.generator)
        return B.requires_grad_(self.learned_feedback)

    def _feedback_for(self, key: str, out_shape: torch.Size, h: Tensor) -> Tensor:
        shape = (*out_shape, *h.shape[1:])
        B = self.feedback.get(key)
        if B is None:
            with torch.no_grad():
                B = self.feedback[key] = self.init_feedback(shape, h[0].numel(), h)
        elif tuple(B.shape) != shape or B.device != h.device or B.dtype != h.dtype:
            raise ValueError(
                f"rule {self.name!r}: feedback for {key!r} is {tuple(B.shape)} {B.dtype} on "
                f"{B.device}, but this batch needs {shape} {h.dtype} on {h.device}. Hidden "
                "shapes must stay fixed (give input_shape= matching the data) and the rule "
                "must be built after model.to(...).")
        return B

    def _input_shape(self) -> tuple[int, ...] | None:
        from ..models.mlp import MLP
        shape = self.options["input_shape"] or getattr(self.model, "input_shape", None)
        if shape is None and isinstance(self.model, MLP):
            shape = (self.model.widths[0],)
        if shape is None:
            return None
        shape = (shape,) if isinstance(shape, int) else shape
        if not isinstance(shape, (tuple, list, torch.Size)) or not all(
                isinstance(s, int) and s > 0 for s in shape):
            raise ValueError(f"rule {self.name!r}: input_shape={shape!r}; give one example's "
                             "shape as positive ints, e.g. (1, 28, 28)")
        return tuple(shape)

    def _dry_run(self, shape: tuple[int, ...]) -> None:
        """Run zeros of ``shape`` once (eval mode) to create every B and check the model.

        With gradients enabled, so the structure check can follow the graph and a
        weight used outside ``F.linear``/``F.conv2d`` is reported here.
        """
        p = next(self.model.parameters())
        modes = {m: m.training for m in self.model.modules()}
        self.model.eval()
        x = torch.zeros((1, *shape), device=p.device, dtype=p.dtype)
        try:
            with torch.enable_grad():
                self._run(x)
        except RuntimeError as err:
            misfit = batch_misfit(self.model, x, x.new_zeros(1, dtype=torch.long))
            if misfit is None:
                raise
            raise BatchShapeError(f"input_shape={shape}: " + misfit_message(
                self.name, x, x.new_zeros(1, dtype=torch.long), misfit)) from err
        finally:
            for m, training in modes.items():
                m.train(training)

    # -- the rule ------------------------------------------------------------------------
    def _run(self, x: Tensor, perturb: bool = False) -> DirectPass:
        mode = DirectPassMode(self.layers, self.generator if perturb else None)
        with fwAD.dual_level() if perturb else contextlib.nullcontext():
            with mode:
                out = self.model(x)
            if not isinstance(out, Tensor):
                raise ValueError(f"rule {self.name!r} needs a model returning one tensor of "
                                 f"logits, got {type(out).__name__}")
            if not self._checked:
                self._check_structure(mode, out)
            out, ydot = fwAD.unpack_dual(out) if perturb else (out, None)
            ydot = None if ydot is None else ydot.detach()  # (N, *out_shape)
        Bs = [self._feedback_for(k, out.shape[1:], h) for k, h in mode.h.items()]
        Bs = [B if self.autograd_feedback else B.detach() for B in Bs]
        logits = apply_fn(DirectFeedback, out, *Bs, *mode.h.values()) if Bs else out
        return DirectPass(logits, mode.h, mode.u, ydot)

    def _check_structure(self, mode: DirectPassMode, out: Tensor) -> None:
        """Once: every converted layer went through the rule, the output is a layer's."""
        seen_checked = mode.check_all_seen(self.name, [out, *mode.h.values()])
        outputs = {layer.name for layer in mode.output_layers(out)}
        if not outputs:
            raise ValueError(
                f"rule {self.name!r}: the model's output is not the pre-activation of a weight "
                "layer (does it end with an activation?); direct rules need the logits, "
                "so the output layer can get the true error.")
        covered = outputs | {l.name for group in mode.groups.values() for l in group}
        missing = [l.name for l in self.layers if l.name not in covered and l.name in mode.seen]
        if missing:
            raise ValueError(f"rule {self.name!r}: layer(s) {missing} neither form a hidden "
                             "activity nor produce the output; the rule cannot train them")
        self._checked = seen_checked  # False: a pass without a graph, check again

    def forward(self, x: Tensor) -> Tensor:
        """The model's logits; their backward is the direct feedback of this rule."""
        return self._run(x).logits

    __call__ = forward

    def _compute_grads(self, x: Tensor, y: Tensor) -> Tensor:
        check_batch(x, y)
        run = self._run(x, perturb=self.perturb)
        loss = self.loss_fn(run.logits, y)
        params = [p for _, p in self._trainable()]
        learned = list(self.feedback.values()) if self.autograd_feedback else []
        self._write_grads(loss, params + learned)
        self.feedback_grads(run)
        return loss

    def feedback_grads(self, run: DirectPass) -> None:
        """Write ``B.grad`` from the pass (fdfa); the fixed and autograd cases do nothing."""


FAMILY = "direct feedback"
DEFAULTS = {"input_shape": None, "unsupported": "error"}
CHOICES = {"unsupported": ("error", "warn"), "feedback_init": ("zeros", "random")}


@register("dfa", family=FAMILY, learned_feedback=False, defaults=DEFAULTS, choices=CHOICES,
          summary="fixed random feedback from the output error to each hidden layer (Nøkland)")
@fill_doc(args=_ARGS)
class DirectFeedbackAlignment(DirectRule):
    r"""Direct feedback alignment: a fixed random matrix sends the output error to each layer.

    .. math::
        B_l \sim \mathcal{U}\big(-\tfrac{1}{\sqrt{n_l}}, \tfrac{1}{\sqrt{n_l}}\big)
        \text{ once}, \qquad
        \delta_l \leftarrow (B_l^\top e) \odot f'(a_l), \qquad
        \nabla_{W_l} \leftarrow \delta_l h_{l-1}^\top, \qquad
        \nabla_{W_L} \leftarrow e\, h_{L-1}^\top

    with :math:`e = \partial L/\partial y` the output error, :math:`B_l` of shape
    :math:`K \times n_l` (``(K, *hidden_shape)``, :math:`n_l` the units of
    :math:`h_l`), and sums over the batch. Nøkland (2016), "Direct feedback
    alignment provides learning in deep neural networks",
    https://arxiv.org/abs/1609.01596.

    Args:
        {args}

    Example:
        >>> import torch, fa_tutor as ft
        >>> model = ft.models.MLP(4, [8, 8], 3)
        >>> rule = ft.make_rule("dfa", model, seed=0)
        >>> {k: tuple(B.shape) for k, B in rule.feedback.items()}
        {'layers.0.weight': (3, 8), 'layers.1.weight': (3, 8)}
        >>> loss = rule.step(torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1]))

    .. note:: :math:`B_l \sim U(\pm 1/\sqrt{n_l})` is PyTorch's default init of a
       ``Linear(n_l, K)`` weight, i.e. the distribution of a fresh output layer.
       The released FDFA code uses ``kaiming_uniform_``, which with its default
       :math:`a = 0` draws :math:`U(\pm\sqrt{6/n_l})`, √6 times wider; other codes use
       other scales (TinyDFA: :math:`1/\sqrt{\max_l n_l}`). The scale only
       rescales each hidden layer's effective learning rate. The output layer and all
       biases and normalization parameters get their exact local gradients.

    Taught in: {ref}`fa-family`.
    """


@register("dkp", family=FAMILY, learned_feedback=True,
          defaults={**DEFAULTS, "feedback_init": "zeros"}, choices=CHOICES,
          summary="direct feedback learned like a direct forward weight (Webster et al.)")
@fill_doc(args=_ARGS, init_arg=_INIT_ARG)
class DirectKolenPollack(DirectRule):
    r"""Direct Kolen–Pollack: each B learns the update of a direct output weight.

    .. math::
        \delta_l \leftarrow (B_l^\top e) \odot f'(a_l), \qquad
        \nabla_{W_l} \leftarrow \delta_l h_{l-1}^\top, \qquad
        \nabla_{B_l} \leftarrow e\, h_l^\top, \qquad B_l(0) = 0

    (sums over the batch). :math:`e\,h_l^\top` is the gradient a weight taking
    :math:`h_l` straight to the logits would get, so SGD moves :math:`B_l` like
    such a weight; for the last hidden layer it is exactly the output layer's
    :math:`\nabla_{W_L}`, so :math:`B_{L-1}` and :math:`W_L` receive the same update
    and, with the same weight decay, converge (Kolen–Pollack). Webster, Choi &
    Ahn, "Learning the connections in direct feedback alignment" (ICLR 2021
    submission, OpenReview; reference code ``webstah/dkp-gist``).

    Args:
        {args}
        {init_arg}

    Example:
        >>> import torch, fa_tutor as ft
        >>> model = ft.models.MLP(4, [8], 3)
        >>> rule = ft.make_rule("dkp", model, seed=0)
        >>> opt = torch.optim.SGD([*model.parameters(), *rule.parameters()], lr=0.1,
        ...                       weight_decay=1e-6)
        >>> loss = rule.step(torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1]))
        >>> opt.step()

    .. note:: Feedback weight decay is the optimizer's job (the reference code
       recommends 1e-6 with Adam). :math:`B_l` starts at zero, so the hidden
       layers get no update on the first step.

    Taught in: {ref}`fa-family`.
    """

    autograd_feedback = True
