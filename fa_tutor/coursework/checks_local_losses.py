"""Checks for the coding exercises of the chapter {ref}`local-losses`."""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ..models.localmixer import LocalMixer
from .registry import CheckFailed, check


@check("local_losses_ex2", function="credit")
def local_losses_ex2(credit: Callable[[Tensor, str, int], Tensor]) -> str:
    r"""Exercise: which copy's derivative pairs with each unit (LG-FG-A's credit).

    Token unit at patch p: :math:`\sum_g d[n, p, g]`; channel unit j:
    :math:`d[n, p, j \,//\, (C/G)]`.  Compared with ``LocalMixer.local_credit`` for
    the token and channel layers of two small mixers, after broadcasting both to the
    layer's pre-activation shape (N, P, C).
    """
    g = torch.Generator().manual_seed(0)
    for channels, groups, patches in [(8, 2, 2), (12, 3, 1), (16, 16, 2)]:
        model = LocalMixer(1, 4, 5, num_blocks=2, num_patches=patches, channels=channels,
                           groups=groups)
        P = patches**2
        d = [torch.randn(3, P, groups, generator=g, dtype=torch.float64) for _ in range(2)]
        for name in model.local_layers():
            block = int(name.split(".")[1])
            kind = "token" if name.endswith("token") else "channel"
            want = model.local_credit(name, d).expand(3, P, channels)
            got = torch.as_tensor(credit(d[block].clone(), kind, channels))
            try:
                got = got.expand(3, P, channels)
            except RuntimeError:
                raise CheckFailed(
                    f"{kind} layer with C={channels}, G={groups}: shape {tuple(got.shape)} "
                    f"does not broadcast to the pre-activation (N, P, C) = (3, {P}, "
                    f"{channels})") from None
            if not torch.allclose(got.to(want.dtype), want):
                raise CheckFailed(
                    f"{kind} layer {name} with C={channels}, G={groups}: the credit differs "
                    "from LocalMixer.local_credit. Hint: a token unit gets the sum of its "
                    "patch's G derivatives (keep the last axis: keepdim=True); channel j gets "
                    "the derivative of group j // (C/G): repeat each group C/G times.")
    return "local_losses_ex2: all checks passed"
