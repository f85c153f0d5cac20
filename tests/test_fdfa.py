"""FDFA: the feedback learns the output Jacobian, forward AD through conv/BN/pool, training,
variance against FG-A, and the EMA variance formula."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import fa_tutor as ft
from fa_tutor.rules.base import rule_generator_seed
from fa_tutor.metrics import (ema, ema_mean_age, ema_stationary_variance,
                              fdfa_feedback_variance, measure_ema_variance)

K = 3



def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().flatten(), b.detach().flatten()
    return float(a @ b / (a.norm() * b.norm()))


def _bn_net(batch: int = 64):
    torch.manual_seed(0)
    model = ft.models.FDFANet(8, K, hidden=16).double()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 8, generator=g, dtype=torch.float64)
    return model, x, torch.randint(0, K, (batch,), generator=g)


def test_feedback_converges_to_output_jacobian_with_frozen_weights():
    model, x, y = _bn_net(batch=256)
    rule = ft.make_rule("fdfa", model, seed=0)
    opt_B = torch.optim.SGD(rule.parameters(), lr=0.2)  # EMA with α = 0.8; no W optimizer
    for _ in range(50):
        opt_B.zero_grad()
        rule.step(x, y)
        opt_B.step()
    # last hidden layer: y = W_out h + b, so ∂y/∂h = W_out exactly
    assert _cos(rule.feedback["blocks.1.0.weight"], model.head.weight) > 0.95
    # first hidden layer: the batch mean of the per-example Jacobians ∂y_n/∂h_{1,n}
    # (through BatchNorm in training mode), from reverse-mode autograd
    with torch.no_grad():
        h1 = model.blocks[0](x)
    J = torch.autograd.functional.jacobian(lambda h: model.head(model.blocks[1](h)), h1,
                                         vectorize=True)
    J_mean = torch.stack([J[n, :, n, :] for n in range(x.shape[0])]).mean(0)
    assert _cos(rule.feedback["blocks.0.0.weight"], J_mean) > 0.95


@pytest.mark.parametrize("training", [True, False])
def test_forward_ad_through_conv_batchnorm_maxpool_matches_reverse_mode_jvp(training):
    torch.manual_seed(0)
    model = ft.models.FDFAConvNet(1, K, 12).double()
    with torch.no_grad():  # non-trivial running statistics for eval mode
        for m in (model.bn1, model.bn2, model.bn3):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    model.train(training)
    g = torch.Generator().manual_seed(2)
    N = 4
    x = torch.randn(N, 1, 12, 12, generator=g, dtype=torch.float64)
    y = torch.randint(0, K, (N,), generator=g)
    rule = ft.make_rule("fdfa", model, seed=5)
    rule.step(x, y)  # B = 0, so ∇B = -Ĵ
    gu = torch.Generator().manual_seed(rule_generator_seed(5))  # u_l drawn in forward order
    us = [torch.randn(s, generator=gu, dtype=torch.float64)
          for s in [(N, 15, 8, 8), (N, 40, 4, 4), (N, 128)]]
    stats = lambda m: (None, None) if training else (m.running_mean, m.running_var)
    bn = lambda t, m: F.batch_norm(t, *stats(m), m.weight, m.bias, training=training)

    def net(d1, d2, d3):  # the network with perturbations added to h_1, h_2, h_3
        h1 = F.relu(bn(model.conv1(x), model.bn1)) + d1
        h2 = F.relu(bn(model.conv2(h1), model.bn2)) + d2
        h3 = F.relu(bn(model.fc1(F.max_pool2d(h2, 2).flatten(1)), model.bn3)) + d3
        return model.fc2(h3)

    zeros = tuple(torch.zeros_like(u) for u in us)
    # double-backward JVP (reverse mode only): ẏ = Σ_l J_l u_l
    _, ydot = torch.autograd.functional.jvp(net, zeros, tuple(us))
    for key, u in zip(["conv1.weight", "conv2.weight", "fc1.weight"], us):
        want = -(ydot.T @ u.flatten(1) / N).view(rule.feedback[key].shape)
        torch.testing.assert_close(rule.feedback[key].grad, want, rtol=1e-9, atol=1e-11)


def test_output_layer_gets_true_gradient():
    model, x, y = _bn_net(batch=16)
    bp = ft.make_rule("bp", copy.deepcopy(model))
    bp.step(x, y)
    rule = ft.make_rule("fdfa", model, seed=0, feedback_init="random")
    loss = rule.step(x, y)
    torch.testing.assert_close(loss, F.cross_entropy(bp.model(x), y))
    for name in ("head.weight", "head.bias"):
        torch.testing.assert_close(dict(model.named_parameters())[name].grad,
                                   dict(bp.model.named_parameters())[name].grad,
                                   rtol=1e-10, atol=1e-12)


def test_fdfa_with_adam_lowers_training_loss_on_digits():
    from sklearn.datasets import load_digits
    data = load_digits()
    x = torch.tensor(data.data / 16.0, dtype=torch.float32)
    y = torch.tensor(data.target)
    torch.manual_seed(0)
    model = ft.models.FDFANet(64, 10, hidden=64)
    rule = ft.make_rule("fdfa", model, seed=0)
    opt_W = torch.optim.Adam(model.parameters(), lr=1e-3)
    opt_B = torch.optim.Adam(rule.parameters(), lr=1e-3)

    def full_loss() -> float:
        model.eval()
        with torch.no_grad():
            loss = F.cross_entropy(model(x), y).item()
        model.train()
        return loss

    before = full_loss()
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        for idx in torch.randperm(len(y), generator=g).split(128):
            opt_W.zero_grad(set_to_none=True)
            opt_B.zero_grad(set_to_none=True)
            rule.step(x[idx], y[idx])
            opt_W.step()
            opt_B.step()
    assert full_loss() < 0.5 * before


def test_fdfa_update_variance_below_fg_a():
    torch.manual_seed(0)
    model = ft.models.MLP(8, [32, 32], K, activation="relu").double()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(32, 8, generator=g, dtype=torch.float64)
    y = torch.randint(0, K, (32,), generator=g)
    W = model.layers[0].weight

    def variance(rule, draws: int, opt_B=None) -> float:
        grads = []
        for _ in range(draws):
            if opt_B is not None:
                opt_B.zero_grad()
            rule.step(x, y)
            grads.append(W.grad.clone())
            if opt_B is not None:
                opt_B.step()  # B keeps averaging; the forward weights stay frozen
        G = torch.stack(grads)
        return float(((G - G.mean(0)) ** 2).sum(tuple(range(1, G.dim()))).mean())

    fdfa = ft.make_rule("fdfa", model, seed=0)
    opt_B = torch.optim.SGD(fdfa.parameters(), lr=0.2)
    variance(fdfa, 30, opt_B)  # burn-in: B reaches its stationary regime
    v_fdfa = variance(fdfa, 20, opt_B)
    v_fga = variance(ft.make_rule("fg_a", model, seed=0), 20)
    assert v_fdfa < 0.1 * v_fga


def test_ema_stationary_variance_formula_on_iid_estimates():
    assert ema_stationary_variance(0.9, 2.0) == pytest.approx(0.1 / 1.9 * 2.0)
    g = torch.Generator().manual_seed(0)
    X = 1.5 + 2.0 * torch.randn(20000, 64, generator=g, dtype=torch.float64)
    for alpha in (0.5, 0.9):
        r = measure_ema_variance(X, alpha)
        assert r.sigma2 == pytest.approx(4.0, rel=0.02)
        assert r.ratio == pytest.approx(1.0, rel=0.05)


def test_ema_trajectory_and_bias():
    c = torch.full((30, 2), 3.0, dtype=torch.float64)
    t = torch.arange(1, 31, dtype=torch.float64)
    torch.testing.assert_close(ema(c, 0.8)[:, 0], 3.0 * (1 - 0.8**t))  # start decays as α^t
    drift = torch.arange(2000, dtype=torch.float64)[:, None]  # target moves 1 per step
    lag = drift[-1] - ema(drift, 0.9)[-1]
    assert lag.item() == pytest.approx(ema_mean_age(0.9), rel=1e-6)
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match="alpha"):
            ema_stationary_variance(bad, 1.0)


def test_fdfa_feedback_ema_variance_matches_formula_on_frozen_network():
    model, x, y = _bn_net()
    rule = ft.make_rule("fdfa", model, seed=0)
    B0 = {k: B.detach().clone() for k, B in rule.feedback.items()}
    result = fdfa_feedback_variance(rule, x, y, rate=0.3, steps=300)
    assert set(result) == set(rule.feedback)
    for r in result.values():
        assert r.alpha == pytest.approx(0.7) and r.steps == 300 - 34
        assert r.ratio == pytest.approx(1.0, rel=0.10)
    for k, B in rule.feedback.items():  # the rule is left as found
        assert torch.equal(B.detach(), B0[k])
    with pytest.raises(ValueError, match="rate"):
        fdfa_feedback_variance(rule, x, y, rate=0.0, steps=10)


class _LayerNormNet(torch.nn.Module):
    """x → Linear → LayerNorm (affine) → ReLU → Linear → LayerNorm (plain) → ReLU → Linear."""

    def __init__(self):
        super().__init__()
        self.fc1, self.ln1 = torch.nn.Linear(6, 10), torch.nn.LayerNorm(10)
        self.fc2, self.ln2 = torch.nn.Linear(10, 12), torch.nn.LayerNorm(12, elementwise_affine=False)
        self.head = torch.nn.Linear(12, K)
        with torch.no_grad():
            self.ln1.weight.uniform_(0.5, 1.5)
            self.ln1.bias.uniform_(-0.5, 0.5)

    def forward(self, x, d1=0.0, d2=0.0):  # d_l: perturbations added to h_l (the reference)
        h1 = F.relu(self.ln1(self.fc1(x))) + d1
        h2 = F.relu(self.ln2(self.fc2(h1))) + d2
        return self.head(h2)


def test_fdfa_through_layer_norm_matches_reverse_mode_jvp_and_dfa():
    """The written-out LayerNorm tangent gives ẏ = Σ_l J_l u_l exactly; the primal graph is intact."""
    torch.manual_seed(0)
    model = _LayerNormNet().double()
    g = torch.Generator().manual_seed(3)
    N = 5
    x = torch.randn(N, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, K, (N,), generator=g)
    fdfa = ft.make_rule("fdfa", model, seed=7, feedback_init="random", input_shape=(6,))
    B = {k: b.detach().clone() for k, b in fdfa.feedback.items()}
    assert list(B) == ["fc1.weight", "fc2.weight"]
    fdfa.step(x, y)
    gu = torch.Generator().manual_seed(rule_generator_seed(7))
    for b in B.values():  # the init draws come first, then u_1, u_2
        torch.empty_like(b).uniform_(generator=gu)
    us = [torch.randn(N, n, generator=gu, dtype=torch.float64) for n in (10, 12)]
    _, ydot = torch.autograd.functional.jvp(lambda d1, d2: model(x, d1, d2),
                                            tuple(torch.zeros_like(u) for u in us), tuple(us))
    for (key, B0), u in zip(B.items(), us):
        want = B0 - ydot.T @ u / N
        torch.testing.assert_close(fdfa.feedback[key].grad, want, rtol=1e-9, atol=1e-11)
    # the hidden layers' updates: DFA with the same B (no tangents anywhere)
    fdfa_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    dfa = ft.make_rule("dfa", model, seed=0, input_shape=(6,))
    with torch.no_grad():
        for key, B0 in B.items():
            dfa.feedback[key].copy_(B0)
    dfa.step(x, y)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, fdfa_grads[name], rtol=1e-10, atol=1e-12)
