"""Each private torch API in ``fa_tutor.rules._torch_compat``: the fast path and its fallback agree.

The fallbacks are what runs on a torch that renamed the internal; every test switches
the internal off (the module's ``_USE_*`` switch) and checks the same result.
"""
from __future__ import annotations

import gc

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fa_tutor as ft
from fa_tutor.rules import _torch_compat as tc

DT = torch.float64


def test_out_of_memory_error_is_torchs():
    assert issubclass(torch.cuda.OutOfMemoryError, tc.OutOfMemoryError)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("conv", [dict(stride=1, padding=[0, 0], dilation=[1, 1], groups=1),
                                  dict(stride=2, padding=[1, 2], dilation=[2, 1], groups=2)])
def test_conv2d_backward_fallback_matches_the_fused_kernel(monkeypatch, bias, conv):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 9, 8, generator=g, dtype=DT)
    B = torch.randn(6, 4 // conv["groups"], 3, 3, generator=g, dtype=DT)
    stride = [conv["stride"]] * 2
    out = F.conv2d(x, B, None, stride, conv["padding"], conv["dilation"], conv["groups"])
    delta = torch.randn(out.shape, generator=g, dtype=DT)
    args = (delta, x, B, bias, stride, conv["padding"], conv["dilation"], conv["groups"],
            [True, True, bias])
    fused = tc.conv2d_backward(*args)
    monkeypatch.setattr(tc, "_USE_ATEN", False)
    public = tc.conv2d_backward(*args)
    for a, b in zip(fused, public):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b)
    # and both are autograd's own gradient
    xr, Br = x.clone().requires_grad_(), B.clone().requires_grad_()
    y = F.conv2d(xr, Br, None, stride, conv["padding"], conv["dilation"], conv["groups"])
    gx, gB = torch.autograd.grad(y, [xr, Br], delta)
    torch.testing.assert_close(public[0], gx)
    torch.testing.assert_close(public[1], gB)


def test_fa_on_a_conv_model_is_the_same_with_the_public_conv_backward(monkeypatch):
    def grads():
        torch.manual_seed(0)
        model = ft.models.LeNet(3, in_channels=1).double()
        x = torch.randn(4, 1, 18, 18, dtype=DT, generator=torch.Generator().manual_seed(1))
        ft.make_rule("fa", model, seed=0).step(x, torch.tensor([0, 1, 2, 0]))
        return [p.grad for p in model.parameters()]

    fused = grads()
    monkeypatch.setattr(tc, "_USE_ATEN", False)
    for a, b in zip(fused, grads()):
        torch.testing.assert_close(a, b)


def test_cached_signature_is_the_real_one():
    from fa_tutor.rules.feedback import FeedbackLinear
    import inspect
    assert list(inspect.signature(FeedbackLinear.forward).parameters) == ["x", "W", "b", "B"]


@pytest.mark.parametrize("use_variable", [True, False])
def test_leaves_reachable_both_ways(monkeypatch, use_variable):
    monkeypatch.setattr(tc, "_USE_NODE_VARIABLE", use_variable)
    a, b, c = (torch.randn(3, requires_grad=True) for _ in range(3))
    out = (a * 2 + b).sum()
    assert tc.leaves_reachable([out], [a, b, c]) == {id(a), id(b)}
    assert tc.leaves_reachable([out.detach()], [a, b, c]) == set()


@pytest.mark.parametrize("use_variable", [True, False])
def test_a_functional_weight_is_reported_with_either_graph_walk(monkeypatch, use_variable):
    monkeypatch.setattr(tc, "_USE_NODE_VARIABLE", use_variable)
    model = ft.models.MLP(6, [8, 7], 3)
    m = model.layers[1]
    m.forward = lambda x: x @ m.weight.T + m.bias
    with pytest.raises(ValueError, match="layers.1"):
        ft.make_rule("fa", model, seed=0).step(torch.randn(4, 6), torch.tensor([0, 1, 2, 0]))


def test_version_fallback_keeps_sign_feedback_right(monkeypatch):
    monkeypatch.setattr(tc, "_USE_VERSION", False)
    assert tc.version(torch.zeros(2)) is None
    model = ft.models.MLP(4, [8], 3)
    rule = ft.make_rule("usf", model, scale=False)
    with torch.no_grad():
        model.layers[1].weight.neg_()
    rule(torch.randn(2, 4))  # a forward follows W's signs
    assert torch.equal(rule.feedback["layers.1.weight"], torch.sign(model.layers[1].weight))


@pytest.mark.parametrize("use_torch", [True, False])
def test_weak_id_key_dict(monkeypatch, use_torch):
    monkeypatch.setattr(tc, "_USE_TORCH_WEAK", use_torch)
    d = tc.weak_id_key_dict()
    t, u = torch.zeros(2), torch.zeros(2)  # equal values, different identity
    d[t] = "t"
    assert d.get(t) == "t" and d.get(u) is None and t in d and u not in d and d[t] == "t"
    del t
    gc.collect()
    assert list(d) == []


def test_layer_norm_with_stats_fallback(monkeypatch):
    x = torch.randn(3, 4, 5, dtype=DT)
    w, b = torch.randn(5, dtype=DT), torch.randn(5, dtype=DT)
    fast = tc.layer_norm_with_stats(x, [5], w, b, 1e-5)
    monkeypatch.setattr(tc, "_USE_NATIVE_LN", False)
    slow = tc.layer_norm_with_stats(x, [5], w, b, 1e-5)
    for a, c in zip(fast, slow):
        torch.testing.assert_close(a, c.reshape(a.shape))


def test_quiet_forward_ad_is_idempotent_and_silent(recwarn):
    tc.quiet_forward_ad()
    tc.quiet_forward_ad()
    assert not [w for w in recwarn if "torch.jit" in str(w.message)]


@pytest.mark.parametrize("name", ["fa", "usf", "kp"])
def test_eager_feedback_functions_match_the_torch_func_ones(monkeypatch, name):
    """Outside torch.func the layers run through the eager twins (combined forward); with
    the check off (a torch without it) through the Functions torch.func needs: same grads."""
    def grads() -> tuple[list[torch.Tensor], str]:
        torch.manual_seed(0)
        model = ft.models.LeNet(3, in_channels=1).double()
        x = torch.randn(4, 1, 18, 18, dtype=DT, generator=torch.Generator().manual_seed(1))
        rule = ft.make_rule(name, model, seed=0)
        rule.step(x, torch.tensor([0, 1, 2, 0]))
        head = type(rule(x).grad_fn).__name__  # the output layer's node
        return [p.grad for p in model.parameters()], head

    eager, head = grads()
    assert head == "FeedbackLinearEagerBackward"
    monkeypatch.setattr(tc, "_USE_FUNCTORCH_CHECK", False)
    assert tc.functorch_transforms_active()
    public, head = grads()
    assert head == "FeedbackLinearBackward"
    for a, b in zip(eager, public):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_functorch_transforms_are_seen():
    assert not tc.functorch_transforms_active()
    seen = []
    torch.func.grad(lambda z: (seen.append(tc.functorch_transforms_active()), z.sum())[1])(
        torch.randn(3))
    assert seen == [True]
