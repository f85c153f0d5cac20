"""LocalMixer (Ren, Kornblith, Liao & Hinton 2023): an MLP-Mixer built for local losses.

The image is cut into P non-overlapping patches (tokens) of C channels split
into G groups.  Every linear layer is followed by a LayerNorm without gain or
bias, then a ReLU:

* block 0: per-patch dense layer (patch → C), then a grouped layer;
* blocks ≥ 1: token mixing (one linear layer [P, P] shared over channels), a
  dense channel layer [C, C] and a grouped channel layer plus the residual.

A grouped layer (G blocks of [C/G, C/G]) is an ``nn.Conv2d(C, C, 1, groups=G)``
run on a channels-last view of the tokens: the same weights and flops, and every
rule that converts ``nn.Conv2d`` (FA, DFA, activity tracking) handles it.

Local losses.  Each block b has a linear head on its token-averaged output, and a
final classifier reads the last block through a stop-gradient.  By eqs. (4)–(5)
of the paper, block b's loss is replicated into P×G copies, one per patch-group
(p, g); copy (p, g) sees the features of the other patch-groups through a
stop-gradient, so only x_{p,g} passes it gradient or tangent.  All copies have
the block loss's value, and their summed gradient is the block loss's gradient,
so the model computes each block loss once and returns its features shaped
``(N, P, G, C/G)``: a rule gets copy (p, g)'s directional derivative as
``(∂L_b/∂x ⊙ ẋ)[:, p, g].sum(-1)`` (see :func:`replicated_losses`, the explicit
form the tests compare against).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Table 2 of Ren et al.: blocks, patches per side, channels, groups, and the dataset's
#: (in_channels, image_size, num_classes) used as defaults by ``from_config``.
CONFIGS: dict[str, dict[str, int]] = {
    "S/1/1": dict(num_blocks=1, num_patches=1, channels=256, groups=1),
    "M/1/16": dict(num_blocks=1, num_patches=1, channels=512, groups=16),
    "M/8/16": dict(num_blocks=4, num_patches=8, channels=512, groups=16),
    "L/8/64": dict(num_blocks=4, num_patches=8, channels=2048, groups=64),
    "L/32/64": dict(num_blocks=4, num_patches=32, channels=2048, groups=64),
}
_DATA = {"S/1/1": (1, 28, 10), "M/1/16": (1, 28, 10), "M/8/16": (3, 32, 10),
         "L/8/64": (3, 32, 10), "L/32/64": (3, 224, 1000)}


@dataclass
class LocalLosses:
    """What ``LocalMixer.local_losses`` returns (the protocol the ``lg_*`` rules read)."""

    losses: list[Tensor]  # block b's local loss (scalar, batch mean), one per block
    features: list[Tensor]  # what head b reads, (N, P, G, C/G): copy (p, g) = [:, p, g]
    logits: Tensor  # final classifier on the stop-gradient last block, (N, K)
    loss: Tensor  # loss_fn(logits, y): the final classifier's loss


def layer_norm(x: Tensor) -> Tensor:
    """LayerNorm over the last axis with no gain or bias (the paper's code)."""
    return F.layer_norm(x, x.shape[-1:])


def group_norm(x: Tensor, groups: int) -> Tensor:
    """LayerNorm within each channel group: (N, P, C) → (N, P, C)."""
    return layer_norm(x.unflatten(-1, (groups, -1))).flatten(-2)


def grouped_linear(conv: nn.Conv2d, x: Tensor) -> Tensor:
    """z_{p,g} = W_g x_{p,g} + b_g for each group g: (N, P, C) → (N, P, C)."""
    N, P, C = x.shape
    z = conv(x.reshape(N, P, 1, C).permute(0, 3, 1, 2))  # (N, C, P, 1), channels-last
    return z.permute(0, 2, 3, 1).reshape(N, P, -1)


class PatchBlock(nn.Module):
    """Block 0: h ← ReLU(LN(W_e x + b_e)), then h ← ReLU(LN_g(grouped(h)))."""

    def __init__(self, in_dim: int, channels: int, groups: int):
        super().__init__()
        self.groups = groups
        self.dense = nn.Linear(in_dim, channels)
        self.grouped = nn.Conv2d(channels, channels, 1, groups=groups)

    def forward(self, x: Tensor) -> Tensor:  # (N, P, in_dim) → (N, P, C)
        h = F.relu(layer_norm(self.dense(x)))
        return F.relu(group_norm(grouped_linear(self.grouped, h), self.groups))


class MixerBlock(nn.Module):
    """Block ≥ 1: token mixing, dense channel layer, grouped layer + residual."""

    def __init__(self, num_tokens: int, channels: int, groups: int):
        super().__init__()
        self.groups = groups
        self.token = nn.Linear(num_tokens, num_tokens)
        self.dense = nn.Linear(channels, channels)
        self.grouped = nn.Conv2d(channels, channels, 1, groups=groups)

    def forward(self, x: Tensor) -> Tensor:  # (N, P, C) → (N, P, C)
        h = self.token(x.transpose(1, 2)).transpose(1, 2)  # mixes tokens, per channel
        h = F.relu(layer_norm(h))  # LN over the channels of each token
        h = F.relu(layer_norm(self.dense(h)))
        return F.relu(group_norm(grouped_linear(self.grouped, h), self.groups) + x)


class LocalMixer(nn.Module):
    r"""Ren et al.'s LocalMixer: forward gives the final logits; ``local_losses`` trains it locally.

    ``model(x)`` is the plain network (no stop-gradients): backprop and the global
    rules train the final classifier's loss through every block.  The ``lg_*`` rules
    call the local-loss protocol instead:

    * ``local_losses(x, y, loss_fn)`` → :class:`LocalLosses`: stop-gradient between
      blocks (it also stops forward-mode tangents), block b's loss
      :math:`L_b = \ell(H_b \bar x_b, y)` on the token average :math:`\bar x_b`,
      and the final classifier on the stop-gradient last block.  ``sum(losses) +
      loss`` is the objective whose gradient is LG-BP's update.
    * ``local_layers()``: the body layers (trained through the local losses); every
      other parameter (heads, classifier) reads a loss and gets its exact gradient.
    * ``local_credit(name, d, weight=False)``: given the per-copy directional
      derivatives ``d[b]`` (N, P, G), the one that pairs with each unit of layer
      ``name``.  Activity noise enters after the LayerNorm: a channel unit of group
      g at patch p feeds copy (p, g) only and gets ``d[b][n, p, g]``; a
      token-mixing unit at patch p feeds every group of p and gets
      :math:`\sum_g d_b[n, p, g]`.  ``weight=True`` gives one value per output
      unit (row of W) for weight noise, shared by examples and patches: a grouped
      row gets :math:`\sum_{n,p} d_b[n,p,g]`; a dense row gets the block total,
      because its noise enters before a LayerNorm over all channels of every token;
      token row p (it makes token p only) gets :math:`\sum_{n,g} d_b[n,p,g]`.

    Args:
        in_channels: image channels.
        image_size: side of the square input image (divisible by ``num_patches``).
        num_classes: outputs of the heads and the classifier.
        num_blocks, num_patches, channels, groups: the architecture (Table 2).

    Inputs are ``(N, C, H, W)`` images (``(N, H, W)`` or flat ``(N, C·H·W)`` also
    accepted); images are not normalized here.

    Example:
        >>> import fa_tutor as ft
        >>> model = ft.models.LocalMixer.from_config("M/8/16")
        >>> sum(p.numel() for p in model.parameters())
        918770

    .. note:: Deviations from the released code: PyTorch's default initialization
       (the code uses a scaled normal, zero last layer); the optional extra
       LayerNorms (``begin_ln``, ``middle_ln``, ``inter_ln``, ``last_layer_ln``; off by
       default in the supervised trainer) are left out; the head/classifier
       learning-rate multipliers (``head_lr``, ``last_layer_lr``) belong to the
       optimizer (parameter groups).  The released code pairs a dense-layer weight
       row with its own group only; the LayerNorm after that layer spreads the row's
       perturbation over every group, so that pairing is biased, and
       ``local_credit(weight=True)`` uses the block total instead; and it pairs a
       token-mixing row with the block total, where the row's own patch suffices
       (unbiased either way; the other patches only add variance).  Parameter
       counts match Table 2 for S/1/1, M/1/16, M/8/16 and L/8/64 (B block heads +
       classifier included); L/32/64's 17.3M cannot be reproduced from the code
       (notes §2.1; ours: 26,556,296 at 224 px with 1000 classes).

       Two more differences came out of a side-by-side run with the released JAX code on
       identical weights, batches and noise (logits, every block output, the head losses
       and the lg_bp / lg_fg_a updates agree to float64 rounding on S/1/1, M/1/16 and
       M/8/16 once both are accounted for): (a) the released ``linear()`` adds the bias
       twice to 3-D inputs (block 0's dense layer, token mixing, the channel dense
       layer): z = Wx + 2b there, z = Wx + b here. The functions are the same (b' = 2b),
       but those biases learn at a different effective rate: their step moves z 4× as
       far as ours under bp, lg_bp and FG-W, and 2× under FG-A.
       (b) the released LG-FA computes each head's error with the head's feedback matrix
       (softmax(x̄B + c) − y), which drives W's update too; ``make_rule("lg_fa", model,
       released_heads=True)`` does the same, the default uses softmax(x̄W + c) − y.

    Taught in: {ref}`local-losses`.
    """

    def __init__(self, in_channels: int = 3, image_size: int = 32, num_classes: int = 10, *,
                 num_blocks: int = 4, num_patches: int = 8, channels: int = 512,
                 groups: int = 16):
        super().__init__()
        sizes = dict(in_channels=in_channels, image_size=image_size, num_classes=num_classes,
                     num_blocks=num_blocks, num_patches=num_patches, channels=channels,
                     groups=groups)
        bad = {k: v for k, v in sizes.items() if not isinstance(v, int) or v <= 0}
        if bad:
            raise ValueError(f"LocalMixer sizes must be positive integers, got {bad}")
        if image_size % num_patches:
            raise ValueError(f"image_size={image_size} is not divisible by "
                             f"num_patches={num_patches} (patches per side)")
        if channels % groups:
            raise ValueError(f"channels={channels} is not divisible by groups={groups}")
        self.sizes = sizes
        P, C, G = num_patches**2, channels, groups
        in_dim = (image_size // num_patches) ** 2 * in_channels
        self.blocks = nn.ModuleList(
            [PatchBlock(in_dim, C, G)] + [MixerBlock(P, C, G) for _ in range(num_blocks - 1)])
        self.heads = nn.ModuleList(nn.Linear(C, num_classes) for _ in range(num_blocks))
        self.classifier = nn.Linear(C, num_classes)
        # body layer name -> (block, "token" | "dense" | "grouped")
        self._layout = {f"blocks.{b}.{n}": (b, n) for b, blk in enumerate(self.blocks)
                        for n, _ in blk.named_children()}

    @classmethod
    def from_config(cls, name: str, *, in_channels: int | None = None,
                    image_size: int | None = None, num_classes: int | None = None,
                    groups: int | None = None) -> "LocalMixer":
        """A Table-2 model: ``"S/1/1"``, ``"M/1/16"``, ``"M/8/16"``, ``"L/8/64"``, ``"L/32/64"``.

        Input defaults are the table's dataset: MNIST (1×28×28) for S/1/1 and
        M/1/16, CIFAR-10 (3×32×32) for M/8/16 and L/8/64, ImageNet (3×224×224,
        1000 classes) for L/32/64. ``groups`` replaces the table's G (Fig. 7's sweep over
        the number of groups, e.g. ``from_config("M/1/16", groups=4)`` is M/1/4).
        """
        if name not in CONFIGS:
            raise ValueError(f"Unknown LocalMixer config {name!r}; choose one of: "
                             f"{', '.join(CONFIGS)}")
        c, s, k = _DATA[name]
        sizes = {**CONFIGS[name], **({} if groups is None else {"groups": groups})}
        return cls(in_channels if in_channels is not None else c,
                   image_size if image_size is not None else s,
                   num_classes if num_classes is not None else k, **sizes)

    # -- the network ------------------------------------------------------------------
    def patchify(self, x: Tensor) -> Tensor:
        """(N, C, H, W) → (N, P, patch·patch·C): non-overlapping patches, row-major."""
        c, s, n = (self.sizes[k] for k in ("in_channels", "image_size", "num_patches"))
        if x.dim() == 2 and x.shape[1] == c * s * s:
            x = x.reshape(-1, c, s, s)
        elif x.dim() == 3 and c == 1:
            x = x.unsqueeze(1)
        if x.dim() != 4 or tuple(x.shape[1:]) != (c, s, s):
            raise ValueError(f"LocalMixer expects images of shape (N, {c}, {s}, {s}), "
                             f"got {tuple(x.shape)}")
        ps = s // n
        x = x.reshape(x.shape[0], c, n, ps, n, ps).permute(0, 2, 4, 3, 5, 1)
        return x.reshape(x.shape[0], n * n, ps * ps * c)

    def forward(self, x: Tensor) -> Tensor:
        h = self.patchify(x)
        for block in self.blocks:
            h = block(h)
        return self.classifier(h.mean(1))  # (N, K)

    # -- the local-loss protocol -----------------------------------------------------
    def local_losses(self, x: Tensor, y: Tensor, loss_fn=F.cross_entropy) -> LocalLosses:
        """Block losses with stop-gradients between blocks, and the readout's loss."""
        G = self.sizes["groups"]
        h = self.patchify(x)
        losses, features = [], []
        for block, head in zip(self.blocks, self.heads):
            h = block(h)  # (N, P, C): gradient flows inside the block only
            f = h.unflatten(-1, (G, -1))  # (N, P, G, C/G): the P×G loss copies
            features.append(f)
            losses.append(loss_fn(head(f.flatten(2).mean(1)), y))
            h = h.detach()  # stop-gradient between blocks
        logits = self.classifier(h.mean(1))  # readout on stop-gradient features
        return LocalLosses(losses, features, logits, loss_fn(logits, y))

    def local_layers(self) -> list[str]:
        """Names of the body layers (the ones the local losses train through their features)."""
        return list(self._layout)

    def local_credit(self, name: str, d: list[Tensor], *, weight: bool = False,
                     released: bool = False) -> Tensor:
        """The directional derivative paired with each unit of body layer ``name``.

        ``d[b]``: (N, P, G) per-copy derivatives of block b.  Returns a tensor that
        broadcasts against the layer's pre-activation (N, P, C) or, with
        ``weight=True``, one value per output unit (row of the weight).
        ``released=True`` (weight rows only): the released code's pairing, a dense row
        with its own group g(j) (biased: the LayerNorm spreads its noise over every
        group) and a token row with the block total.
        """
        if name not in self._layout:
            raise ValueError(f"{name!r} is not a body layer; choose one of: "
                             f"{', '.join(self._layout)}")
        b, kind = self._layout[name]
        db = d[b]  # (N, P, G)
        width = self.sizes["channels"] // db.shape[-1]
        if weight:  # shared by examples and patches; a row's noise enters before its LN
            rows = self.get_submodule(name).weight.shape[0]
            own_group = db.sum((0, 1)).repeat_interleave(rows // db.shape[-1])  # row j → g(j)
            if kind == "grouped":  # LN within the group: row j reaches group j // (C/G) only
                return own_group  # (C,)
            if kind == "token":  # row p makes token p only: every group of patch p
                return db.sum().expand(rows) if released else db.sum((0, 2))  # (P,)
            if released:  # the released code: a dense row with its own group only
                return own_group
            return db.sum().expand(rows)  # dense: LN over all channels of every token
        if kind == "token":  # token p feeds every group of token p
            return db.sum(-1, keepdim=True)  # (N, P, 1)
        return db.repeat_interleave(width, dim=-1)  # (N, P, C): unit j feeds group j // (C/G)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.sizes.items())


def replicated_losses(features: Tensor, head: nn.Linear, y: Tensor) -> Tensor:
    r"""Eqs. (4)–(5) written out: per-example cross-entropy of every copy, (N, P, G).

    .. math::
        \bar x_{p,g} = \tfrac1P\big(x_{p,g} + \textstyle\sum_{p'\neq p}
        \mathrm{SG}(x_{p',g})\big), \quad \text{other groups through } \mathrm{SG},
        \qquad L_{p,g} = \mathrm{CE}(H \bar x_{p,g}, y)

    Every copy has the block loss's value; copy (p, g) passes gradient and tangent
    only to ``features[:, p, g]``.  Memory grows as N·P·G·C: for checks and teaching.
    """
    N, P, G, k = features.shape
    sg = features.detach()
    own = (features - sg) / P  # zero in value, carries copy (p, g)'s own gradient
    eye = torch.eye(G, dtype=features.dtype, device=features.device)
    xbar = sg.mean(1)[:, None, None] + own.unsqueeze(3) * eye[:, :, None]  # (N,P,G,G,k)
    logits = head(xbar.flatten(-2))  # (N, P, G, K)
    return F.cross_entropy(logits.permute(0, 3, 1, 2), y[:, None, None].expand(N, P, G),
                           reduction="none")


def count_parameters(name: str, **inputs: int) -> int:
    """Parameters of ``LocalMixer.from_config(name, **inputs)``, counted without allocating."""
    with torch.device("meta"):
        model = LocalMixer.from_config(name, **inputs)
    return sum(math.prod(p.shape) for p in model.parameters())
