"""The written-out normalization duals (rules/dual.py) against PyTorch's forward-mode AD."""
from __future__ import annotations

import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch import nn
from torch.func import jvp

import fa_tutor as ft
from fa_tutor.rules import dual
from fa_tutor.rules.dual import batch_norm_dual, layer_norm_dual, written_out_dual


def _dual_call(fn, x, t, *args, **kwargs):
    """(value, tangent) of fn(x + ε t, ...) computed by fn under a dual level."""
    with fwAD.dual_level():
        y = fn(fwAD.make_dual(x, t), *args, **kwargs)
        p, tt = fwAD.unpack_dual(y)
        return p.detach().clone(), tt.detach().clone()


@pytest.mark.parametrize("shape,normalized", [((5, 7), (7,)), ((3, 4, 6), (4, 6))])
@pytest.mark.parametrize("affine", [False, True])
def test_layer_norm_dual_matches_pytorch_jvp(shape, normalized, affine):
    g = torch.Generator().manual_seed(0)
    x, t = (torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(2))
    w = torch.randn(normalized, generator=g, dtype=torch.float64) if affine else None
    b = torch.randn(normalized, generator=g, dtype=torch.float64) if affine else None
    ref_y, ref_t = jvp(lambda x: F.layer_norm(x, normalized, w, b), (x,), (t,))
    y, y_t = _dual_call(layer_norm_dual, x, t, normalized, w, b)
    torch.testing.assert_close(y, ref_y, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(y_t, ref_t, rtol=1e-10, atol=1e-10)
    assert ref_t.abs().max() > 0.1  # a real tangent, not two zeros that agree


@pytest.mark.parametrize("shape", [(8, 5), (6, 3, 4, 4)])
def test_batch_norm_dual_matches_pytorch_jvp_and_updates_running_stats(shape):
    g = torch.Generator().manual_seed(1)
    x, t = (torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(2))
    C = shape[1]
    w, b = (torch.randn(C, generator=g, dtype=torch.float64) for _ in range(2))
    ref_y, ref_t = jvp(lambda x: F.batch_norm(x, None, None, w, b, training=True), (x,), (t,))
    mean, var = torch.zeros(C, dtype=torch.float64), torch.ones(C, dtype=torch.float64)
    y, y_t = _dual_call(batch_norm_dual, x, t, mean, var, w, b, training=True)
    torch.testing.assert_close(y, ref_y, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(y_t, ref_t, rtol=1e-10, atol=1e-10)
    # the running statistics move exactly as F.batch_norm moves them
    mean2, var2 = torch.zeros(C, dtype=torch.float64), torch.ones(C, dtype=torch.float64)
    F.batch_norm(x, mean2, var2, w, b, training=True)
    torch.testing.assert_close((mean, var), (mean2, var2))
    assert mean.abs().sum() > 0


def test_batch_norm_dual_in_eval_mode_is_pytorchs_own():
    g = torch.Generator().manual_seed(2)
    x, t = (torch.randn(6, 3, generator=g, dtype=torch.float64) for _ in range(2))
    mean, var = torch.randn(3, generator=g, dtype=torch.float64), torch.rand(3, dtype=torch.float64) + 0.5
    ref_y, ref_t = jvp(lambda x: F.batch_norm(x, mean, var, training=False), (x,), (t,))
    y, y_t = _dual_call(batch_norm_dual, x, t, mean, var, training=False)
    torch.testing.assert_close((y, y_t), (ref_y, ref_t))


def test_written_out_dual_only_swaps_normalizations_with_a_tangent():
    x = torch.randn(4, 3)
    assert written_out_dual(F.layer_norm, (x, (3,))) is F.layer_norm  # no tangent
    assert written_out_dual(F.batch_norm, (x, None, None)) is F.batch_norm
    assert written_out_dual(F.relu, (x,)) is F.relu
    assert written_out_dual(F.layer_norm, ()) is F.layer_norm
    with fwAD.dual_level():
        xd = fwAD.make_dual(x, torch.ones_like(x))
        assert written_out_dual(F.layer_norm, (xd, (3,))) is layer_norm_dual
        assert written_out_dual(F.batch_norm, (xd, None, None)) is batch_norm_dual
        assert written_out_dual(F.linear, (xd, torch.ones(2, 3))) is F.linear


def _bn_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 10), nn.BatchNorm1d(10), nn.ReLU(),
                         nn.Linear(10, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 3))


@pytest.mark.parametrize("name", ["fg_a", "fdfa"])
def test_rules_through_batchnorm_give_the_same_update_as_pytorchs_tangent(name, monkeypatch):
    """The swap changes cost only: the update equals the one with PyTorch's own BN tangent."""
    x, y = torch.randn(16, 6, generator=torch.Generator().manual_seed(3)), torch.arange(16) % 3

    def update(written_out: bool) -> list[torch.Tensor]:
        if not written_out:
            monkeypatch.setattr(dual, "_WRITTEN_OUT", {})
        model = _bn_mlp()
        with pytest.warns(UserWarning, match="BatchNorm") if name == "fg_a" else _nothing():
            rule = ft.make_rule(name, model, seed=0)
        rule.step(x, y)
        with torch.no_grad():  # fdfa: B.grad = B - Ĵ; take B := Ĵ, so hidden layers get e B
            for B in rule.feedback.values():
                B -= B.grad
        rule.step(x, y)
        return [t.grad.clone() for t in [*model.parameters(), *rule.feedback.values()]]

    ours, pytorch = update(True), update(False)
    assert all(g.abs().sum() > 0 for g in ours[:2])  # the first hidden layer got an update
    for a, b in zip(ours, pytorch):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
