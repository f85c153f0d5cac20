"""dfa, dkp, fdfa: hand-derived oracles, identities, models they run on, errors."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fa_tutor as ft
from fa_tutor.rules.base import rule_generator_seed

DIRECT = ["dfa", "dkp", "fdfa"]
N, D, H1, H2, K = 6, 5, 7, 4, 3
TOL = dict(rtol=1e-10, atol=1e-12)



def _mlp(seed: int = 0) -> ft.models.MLP:
    torch.manual_seed(seed)
    return ft.models.MLP(D, [H1, H2], K, activation="tanh").double()


def _batch(seed: int = 1, n: int = N) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, D, generator=g, dtype=torch.float64),
            torch.randint(0, K, (n,), generator=g))


def _by_hand(model, x, y):
    """Forward pass and output error e = (softmax(y) - onehot)/N, written out."""
    (W1, b1), (W2, b2), (W3, b3) = [(l.weight.detach(), l.bias.detach())
                                    for l in model.layers]
    h1 = torch.tanh(x @ W1.T + b1)
    h2 = torch.tanh(h1 @ W2.T + b2)
    logits = h2 @ W3.T + b3
    e = (torch.softmax(logits, 1) - F.one_hot(y, K).double()) / x.shape[0]
    return h1, h2, e, (W1, W2, W3)


def _direct_grads(model, x, y, B1, B2):
    """δ_l = (e B_l) ⊙ f'(a_l), ∇W_l = δ_lᵀ h_{l-1}; output layer: ∇W_3 = eᵀ h_2."""
    h1, h2, e, _ = _by_hand(model, x, y)
    d2 = (e @ B2) * (1 - h2**2)  # tanh' = 1 - tanh²
    d1 = (e @ B1) * (1 - h1**2)
    return [d1.T @ x, d1.sum(0), d2.T @ h1, d2.sum(0), e.T @ h2, e.sum(0)]


def _grads(model):
    return [p.grad.clone() for p in model.parameters()]


def _set_feedback(rule, B1, B2):
    with torch.no_grad():
        rule.feedback["layers.0.weight"].copy_(B1)
        rule.feedback["layers.1.weight"].copy_(B2)


# -- (a) oracles ---------------------------------------------------------------------
@pytest.mark.parametrize("name", DIRECT)
def test_hidden_and_output_grads_match_hand_derived_formula(name):
    model, (x, y) = _mlp(), _batch()
    rule = ft.make_rule(name, model, seed=3)
    g = torch.Generator().manual_seed(7)
    B1 = torch.randn(K, H1, generator=g, dtype=torch.float64)
    B2 = torch.randn(K, H2, generator=g, dtype=torch.float64)
    _set_feedback(rule, B1, B2)
    rule.step(x, y)
    for got, want in zip(_grads(model), _direct_grads(model, x, y, B1, B2)):
        torch.testing.assert_close(got, want, **TOL)


def test_dfa_default_feedback_is_used_and_scaled():
    model, (x, y) = _mlp(), _batch()
    rule = ft.make_rule("dfa", model, seed=0)
    B1, B2 = rule.feedback["layers.0.weight"], rule.feedback["layers.1.weight"]
    assert B1.shape == (K, H1) and B2.shape == (K, H2)
    assert B1.abs().max() <= H1**-0.5 and B2.abs().max() <= H2**-0.5  # U(-1/√n, 1/√n)
    assert rule.parameters() == [] and not B1.requires_grad
    rule.step(x, y)
    for got, want in zip(_grads(model), _direct_grads(model, x, y, B1, B2)):
        torch.testing.assert_close(got, want, **TOL)


def test_dkp_feedback_grad_is_error_activity_outer_product():
    model, (x, y) = _mlp(), _batch()
    rule = ft.make_rule("dkp", model, seed=0)
    assert all((B == 0).all() and B.requires_grad for B in rule.parameters())
    rule.step(x, y)  # B = 0: hidden layers get no update, B gets eᵀh
    h1, h2, e, _ = _by_hand(model, x, y)
    torch.testing.assert_close(rule.feedback["layers.0.weight"].grad, e.T @ h1, **TOL)
    torch.testing.assert_close(rule.feedback["layers.1.weight"].grad, e.T @ h2, **TOL)
    assert (model.layers[0].weight.grad == 0).all()
    # sign convention: B_L gets exactly W_L's update, so SGD moves them together
    torch.testing.assert_close(rule.feedback["layers.1.weight"].grad,
                               model.layers[2].weight.grad, **TOL)


def test_fdfa_feedback_grad_is_B_minus_forward_jacobian_estimate():
    model, (x, y) = _mlp(), _batch()
    rule = ft.make_rule("fdfa", model, seed=11)
    B1 = torch.full((K, H1), 0.3, dtype=torch.float64)
    B2 = torch.full((K, H2), -0.2, dtype=torch.float64)
    _set_feedback(rule, B1, B2)
    rule.step(x, y)
    # u_l ~ N(0, I) per example, drawn in forward order from the rule's seeded generator
    g = torch.Generator().manual_seed(rule_generator_seed(11))
    u1 = torch.randn(N, H1, generator=g, dtype=torch.float64)
    u2 = torch.randn(N, H2, generator=g, dtype=torch.float64)
    h1, h2, _, (W1, W2, W3) = _by_hand(model, x, y)
    ydot = (((u1 @ W2.T) * (1 - h2**2)) + u2) @ W3.T  # Σ_l J_l u_l
    torch.testing.assert_close(rule.feedback["layers.0.weight"].grad,
                               B1 - ydot.T @ u1 / N, **TOL)
    torch.testing.assert_close(rule.feedback["layers.1.weight"].grad,
                               B2 - ydot.T @ u2 / N, **TOL)


# -- (b) identities and the mutation check --------------------------------------------
def test_output_layer_gets_true_gradient_and_last_hidden_with_B_eq_W_is_backprop():
    model, (x, y) = _mlp(), _batch()
    bp = ft.make_rule("bp", copy.deepcopy(model))
    bp.step(x, y)
    g_bp = _grads(bp.model)
    rule = ft.make_rule("dfa", model, seed=0)
    with torch.no_grad():
        rule.feedback["layers.1.weight"].copy_(model.layers[2].weight)  # B_2 = W_3
    rule.step(x, y)
    g = _grads(model)
    for i in (2, 3, 4, 5):  # layer 2 (B_2 = W_3 = ∂y/∂h_2) and the output layer
        torch.testing.assert_close(g[i], g_bp[i], **TOL)
    # mutation check: with random B_1 the first layer is NOT backprop
    assert (g[0] - g_bp[0]).norm() > 0.1 * g_bp[0].norm()


@pytest.mark.parametrize("name", DIRECT)
def test_hidden_grads_differ_from_backprop(name):
    model, (x, y) = _mlp(), _batch()
    bp = ft.make_rule("bp", copy.deepcopy(model))
    bp.step(x, y)
    rule = ft.make_rule(name, model, seed=0, **({} if name == "dfa" else
                                              {"feedback_init": "random"}))
    rule.step(x, y)
    g, g_bp = _grads(model), _grads(bp.model)
    for i in (0, 2):
        assert (g[i] - g_bp[i]).norm() > 0.1 * g_bp[i].norm()
    torch.testing.assert_close(g[4], g_bp[4], **TOL)


@pytest.mark.parametrize("name", DIRECT)
def test_forward_value_unchanged_and_forward_backward_equals_step(name):
    model, (x, y) = _mlp(), _batch()
    rule = ft.make_rule(name, model, seed=0, **({} if name == "dfa" else
                                              {"feedback_init": "random"}))
    out = rule.forward(x)
    torch.testing.assert_close(out, model(x), **TOL)
    F.cross_entropy(out, y).backward()
    via_forward = _grads(model)
    rule.step(x, y)
    for a, b in zip(via_forward, _grads(model)):
        torch.testing.assert_close(a, b, **TOL)


# -- (c) models, inputs, reproducibility ---------------------------------------------
def _local_conv_oracle(model, x):
    """Each hidden layer's grads = VJP of its own local map with δh = e B (by hand)."""
    bn = lambda t, m: F.batch_norm(t, None, None, m.weight, m.bias, training=True)
    h1 = F.relu(bn(F.conv2d(x, model.conv1.weight, model.conv1.bias), model.bn1))
    h1d = h1.detach()
    h2 = F.relu(bn(F.conv2d(h1d, model.conv2.weight, model.conv2.bias), model.bn2))
    p = F.max_pool2d(h2.detach(), 2).flatten(1)
    h3 = F.relu(bn(F.linear(p, model.fc1.weight, model.fc1.bias), model.bn3))
    logits = F.linear(h3.detach(), model.fc2.weight, model.fc2.bias)
    return [h1, h2, h3], logits


@pytest.mark.parametrize("name", DIRECT)
def test_conv_batchnorm_model_matches_local_vjp_oracle(name):
    torch.manual_seed(0)
    model = ft.models.FDFAConvNet(1, K, 12).double()
    g = torch.Generator().manual_seed(2)
    x = torch.randn(5, 1, 12, 12, generator=g, dtype=torch.float64)
    y = torch.randint(0, K, (5,), generator=g)
    rule = ft.make_rule(name, model, seed=0)
    keys = ["conv1.weight", "conv2.weight", "fc1.weight"]
    assert list(rule.feedback) == keys
    assert [tuple(rule.feedback[k].shape) for k in keys] == [(K, 15, 8, 8), (K, 40, 4, 4),
                                                             (K, 128)]
    with torch.no_grad():
        for k in keys:
            rule.feedback[k].copy_(torch.randn(rule.feedback[k].shape, generator=g,
                                               dtype=torch.float64))
    rule.step(x, y)
    hs, logits = _local_conv_oracle(model, x)
    e = (torch.softmax(logits, 1) - F.one_hot(y, K).double()).detach() / 5
    groups = [(model.conv1, model.bn1), (model.conv2, model.bn2), (model.fc1, model.bn3)]
    for h, k, (lin, norm) in zip(hs, keys, groups):
        dh = (e @ rule.feedback[k].detach().flatten(1)).view_as(h)
        params = [lin.weight, lin.bias, norm.weight, norm.bias]
        for p, want in zip(params, torch.autograd.grad(h, params, dh)):
            torch.testing.assert_close(p.grad, want, rtol=1e-9, atol=1e-11)
    gW, gb = torch.autograd.grad(F.cross_entropy(logits, y), [model.fc2.weight,
                                                               model.fc2.bias])
    torch.testing.assert_close(model.fc2.weight.grad, gW, **TOL)
    torch.testing.assert_close(model.fc2.bias.grad, gb, **TOL)


@pytest.mark.parametrize("name", DIRECT)
def test_nd_inputs(name):
    torch.manual_seed(0)
    model = ft.models.MLP(4, [8], K).double()  # acts on the last dim: logits (N, 2, K)
    x = torch.randn(N, 2, 4, dtype=torch.float64)
    y = torch.randint(0, K, (N, 2))
    loss_fn = lambda out, t: F.cross_entropy(out.flatten(0, 1), t.flatten())
    rule = ft.make_rule(name, model, loss_fn=loss_fn, seed=0, input_shape=(2, 4))
    B = rule.feedback["layers.0.weight"]
    assert B.shape == (2, K, 2, 8)  # (*out_shape, *hidden_shape)
    with torch.no_grad():
        B.copy_(torch.randn(B.shape, dtype=torch.float64))
    rule.step(x, y)
    W0, b0 = model.layers[0].weight, model.layers[0].bias
    h = torch.nn.functional.leaky_relu(x @ W0.T + b0)
    logits = h.detach() @ model.layers[1].weight.T + model.layers[1].bias
    e = torch.autograd.grad(loss_fn(logits, y), logits)[0]  # (N, 2, K)
    dh = (e.flatten(1) @ B.detach().reshape(2 * K, -1)).view_as(h)
    torch.testing.assert_close(W0.grad, torch.autograd.grad(h, W0, dh)[0], **TOL)
    # image-shaped input to an MLP that flattens: inferred input_shape works
    img = ft.models.MLP(16, [8], K)
    r = ft.make_rule(name, img, seed=0)
    assert torch.isfinite(r.step(torch.randn(4, 1, 4, 4), torch.tensor([0, 1, 2, 0])))


@pytest.mark.parametrize("name", DIRECT)
def test_seeded_reproducible_and_step_overwrites(name):
    x, y = _batch()
    runs = []
    for seed in (5, 5, 6):
        model = _mlp()
        rule = ft.make_rule(name, model, seed=seed, **({} if name == "dfa" else
                                                      {"feedback_init": "random"}))
        rule.step(x, y)
        runs.append([*_grads(model), *[B.grad.clone() for B in rule.parameters()]])
    for a, b in zip(runs[0], runs[1]):
        assert torch.equal(a, b)
    assert not torch.equal(runs[0][0], runs[2][0])
    rule.step(x, y)  # second step on the same batch: overwritten, not accumulated
    if name != "fdfa":
        for a, b in zip(runs[2], [*_grads(model), *[B.grad for B in rule.parameters()]]):
            torch.testing.assert_close(a, b, **TOL)
    else:
        for a, b in zip(runs[2][:6], _grads(model)):
            torch.testing.assert_close(a, b, **TOL)


def test_lazy_feedback_created_at_first_step():
    model = nn.Sequential(nn.Linear(D, H1), nn.ReLU(), nn.Linear(H1, K)).double()
    rule = ft.make_rule("dkp", model, seed=0)
    assert rule.feedback == {}
    with pytest.raises(RuntimeError, match="input_shape"):
        rule.parameters()
    rule.step(*_batch())
    assert [tuple(B.shape) for B in rule.parameters()] == [(K, H1)]
    eager = ft.make_rule("dkp", model, seed=0, input_shape=(D,))
    assert [tuple(B.shape) for B in eager.parameters()] == [(K, H1)]


def test_dry_run_leaves_batchnorm_statistics_and_mode_alone():
    model = ft.models.FDFANet(D, K, hidden=8)
    before = copy.deepcopy(model.state_dict())
    ft.make_rule("fdfa", model, seed=0)
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", DIRECT)
def test_cuda(name):
    model = ft.models.FDFANet(D, K, hidden=8).cuda()
    rule = ft.make_rule(name, model, seed=0)
    x, y = _batch()
    loss = rule.step(x.float().cuda(), y.cuda())
    assert loss.is_cuda and all(p.grad.is_cuda for p in model.parameters())


# -- (d) errors ------------------------------------------------------------------------
@pytest.mark.parametrize("name, options, match", [
    ("dfa", {"feedback_init": "zeros"}, "unknown option"),
    ("dkp", {"lr": 0.1}, "unknown option"),
    ("fdfa", {"feedback_init": "ones"}, "feedback_init='ones'"),
    ("dfa", {"input_shape": (0, 3)}, "input_shape"),
    ("fdfa", {"unsupported": "ignore"}, "unsupported"),
])
def test_bad_options(name, options, match):
    with pytest.raises(ValueError, match=match):
        ft.make_rule(name, _mlp(), **options)


@pytest.mark.parametrize("name", DIRECT)
def test_bad_models_and_batches(name):
    ends_in_activation = nn.Sequential(nn.Linear(D, H1), nn.ReLU(), nn.Linear(H1, K),
                                       nn.Sigmoid())
    with pytest.raises(ValueError, match="output is not the pre-activation"):
        ft.make_rule(name, ends_in_activation, input_shape=(D,))
    with pytest.raises(ValueError, match="cannot convert"):
        ft.make_rule(name, nn.Sequential(nn.Linear(D, K), nn.Bilinear(K, K, K)))
    rule = ft.make_rule(name, _mlp(), seed=0)
    with pytest.raises(ValueError, match="batch size mismatch"):
        rule.step(torch.randn(4, D, dtype=torch.float64), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="input_shape"):  # hidden shape changed
        rule.step(torch.randn(4, 2, D, dtype=torch.float64), torch.zeros(4, 2).long())
