"""Forward-gradient rules (fg_w, fg_a, lg_fg_*): oracles written by hand, unbiasedness, options.

Oracles redraw the rule's perturbations from a generator with the rule's seed, in
the documented order, and compute the estimate from the true gradient with
plain autograd: FG-W g = (∇L·v) v; FG-A ĝ_a = d ⊙ ũ with d_n = Σ_l ∇_{a_l,n}L·ũ_{l,n}.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fa_tutor as ft
from fa_tutor.rules.base import rule_generator_seed

DT = torch.float64


def mlp(activation: str = "relu", hidden=(7, 6), seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return ft.models.MLP(5, list(hidden), 3, activation=activation).to(DT)


def batch(N: int = 8, features: int = 5, classes: int = 3, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, features, generator=g, dtype=DT), torch.randint(0, classes, (N,),
                                                                        generator=g)


def true_grads(model: nn.Module, x, y) -> list[torch.Tensor]:
    return list(torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters())))


def rule_grads(name: str, model: nn.Module, x, y, **kw) -> list[torch.Tensor]:
    ft.make_rule(name, model, **kw).step(x, y)
    return [p.grad.clone() for p in model.parameters()]


def tiny_mixer(blocks: int = 2, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return ft.models.LocalMixer(1, 4, 3, num_blocks=blocks, num_patches=2, channels=6,
                                groups=2).to(DT)  # 3 channels per group: LN over 2 is constant


# -- oracles ---------------------------------------------------------------------------
@pytest.mark.parametrize("exact_readout", [True, False])
def test_fg_w_is_directional_derivative_times_v(exact_readout):
    model, (x, y) = mlp(), batch()
    got = rule_grads("fg_w", model, x, y, seed=3, exact_readout=exact_readout)
    g = true_grads(model, x, y)
    body = len(g) - 2 if exact_readout else len(g)  # the last Linear's weight and bias: exact
    gen = torch.Generator().manual_seed(rule_generator_seed(3))
    v = [torch.randn(p.shape, generator=gen, dtype=DT) for p in list(model.parameters())[:body]]
    d = sum((gi * vi).sum() for gi, vi in zip(g, v))  # ∇L·v over the perturbed parameters
    for a, vi in zip(got, v):
        torch.testing.assert_close(a, d * vi, rtol=1e-10, atol=1e-12)
    for a, gi in zip(got[body:], g[body:]):
        torch.testing.assert_close(a, gi, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("exact_readout", [True, False])
def test_fg_w_independent_uses_one_direction_per_example(exact_readout):
    model, (x, y) = mlp(), batch(N=5)
    got = rule_grads("fg_w", model, x, y, seed=4, perturbation="independent",
                     exact_readout=exact_readout)
    params = list(model.parameters())
    body = len(params) - 2 if exact_readout else len(params)
    gen = torch.Generator().manual_seed(rule_generator_seed(4))
    V = [torch.randn((5, *p.shape), generator=gen, dtype=DT) for p in params[:body]]
    expected = [torch.zeros_like(p) for p in params[:body]]
    for n in range(5):  # ∇(ℓ_n / N) · v_n, times v_n
        gn = torch.autograd.grad(F.cross_entropy(model(x[n:n + 1]), y[n:n + 1]) / 5, params)
        dn = sum((a * v[n]).sum() for a, v in zip(gn, V))
        for e, v in zip(expected, V):
            e += dn * v[n]
    expected += true_grads(model, x, y)[body:]
    for a, e in zip(got, expected):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("perturbation", ["independent", "shared"])
def test_fg_a_matches_hand_computation(perturbation):
    model, (x, y) = mlp(), batch()
    got = rule_grads("fg_a", model, x, y, seed=5, perturbation=perturbation)
    W = [l.weight for l in model.layers]
    b = [l.bias for l in model.layers]
    z1 = x @ W[0].T + b[0]
    h1 = z1.relu()
    z2 = h1 @ W[1].T + b[1]
    h2 = z2.relu()
    loss = F.cross_entropy(h2 @ W[2].T + b[2], y)
    deltas = torch.autograd.grad(loss, [z1, z2], retain_graph=True)  # ∂L/∂a_l
    gen = torch.Generator().manual_seed(rule_generator_seed(5))
    u = []
    for z in (z1, z2):  # drawn layer by layer, in forward order
        shape = z.shape if perturbation == "independent" else (1, z.shape[1])
        u.append(torch.randn(shape, generator=gen, dtype=DT) * (z > 0))  # ũ: inactive → 0
    d = sum((dl * ul).sum(1) for dl, ul in zip(deltas, u))  # (N,) per-example derivative
    gz = [d[:, None] * ul for ul in u]  # ĝ_a = d ũ
    exact = torch.autograd.grad(loss, [W[2], b[2]])
    expected = [gz[0].T @ x, gz[0].sum(0), gz[1].T @ h1, gz[1].sum(0), *exact]
    for a, e in zip(got, expected):
        torch.testing.assert_close(a, e.detach(), rtol=1e-10, atol=1e-12)


def test_fg_a_local_backward_goes_through_layer_norm_only():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.LayerNorm(6), nn.ReLU(), nn.Linear(6, 3)).to(DT)
    with torch.no_grad():
        model[1].weight.uniform_(0.5, 1.5)
        model[1].bias.uniform_(-0.5, 0.5)
    x, y = batch()
    got = rule_grads("fg_a", model, x, y, seed=6)
    lin, ln, out = model[0], model[1], model[3]
    pre = (x @ lin.weight.T + lin.bias).detach()  # (N, 6)
    mu, sd = pre.mean(1, keepdim=True), (pre.var(1, unbiased=False, keepdim=True) + 1e-5).sqrt()
    xhat = (pre - mu) / sd
    a = (xhat * ln.weight + ln.bias).detach().requires_grad_()
    (delta,) = torch.autograd.grad(F.cross_entropy(out(a.relu()), y), a)
    gen = torch.Generator().manual_seed(rule_generator_seed(6))
    u = torch.randn(a.shape, generator=gen, dtype=DT) * (a > 0)
    ga = (delta * u).sum(1, keepdim=True) * u  # ĝ_a
    gx = ga * ln.weight  # LayerNorm backward, written out
    gpre = (gx - gx.mean(1, keepdim=True) - xhat * (gx * xhat).mean(1, keepdim=True)) / sd
    expected = [gpre.T @ x, gpre.sum(0), (ga * xhat).sum(0), ga.sum(0)]
    for g, e in zip(got[:4], expected):
        torch.testing.assert_close(g, e.detach(), rtol=1e-9, atol=1e-12)


# -- unbiasedness ------------------------------------------------------------------------
#: probability that one ``assert_unbiased`` call fails an unbiased estimator (under the
#: normal approximation of the mean below); the draws are seeded, so verdicts are fixed
ALPHA = 1e-6


def unbiasedness_stats(samples: list[list[torch.Tensor]], true: list[torch.Tensor],
                       alpha: float = ALPHA) -> dict:
    r"""The statistics and bounds of ``assert_unbiased`` (H0: E[ĝ] = g, M i.i.d. estimates).

    By the central limit theorem the mean m of M estimates is ≈ N(g, Σ/M).  Coordinates
    with zero sample variance are exact.  The others are standardised,
    z_i = √M (m_i − g_i)/s_i, so z ≈ N(0, R), R the correlation matrix (plug-in: the
    sample correlation of the estimates).  Two tests, each at level α/2:

    * per coordinate (Bonferroni over the d noisy coordinates):
      max_i |z_i| ≤ Φ⁻¹(1 − α/(4d));
    * jointly, which catches a small bias spread over many coordinates: with
      z = R^{1/2} ξ, ‖z‖² = Σ_i λ_i ξ_i², and Laurent & Massart (2000, Lemma 1) give
      P(‖z‖² ≥ tr R + 2 √(tr(R²) x) + 2 λ_max x) ≤ e^{−x}; x = ln(2/α).
    """
    M = len(samples)
    est = torch.stack([torch.cat([t.flatten() for t in s]) for s in samples])
    g = torch.cat([t.flatten() for t in true])
    mean, var = est.mean(0), est.var(0)
    noisy = var > 1e-20
    z = (mean - g)[noisy] / (var[noisy] / M).sqrt()
    d = int(noisy.sum())
    lam = torch.linalg.eigvalsh(torch.corrcoef(est[:, noisy].T)).clamp_min(0)
    x = torch.log(torch.tensor(2 / alpha, dtype=lam.dtype))
    return {
        "exact": (mean[~noisy], g[~noisy]),
        "max_z": z.abs().max().item(),
        "z_bound": torch.special.ndtri(torch.tensor(1 - alpha / (4 * d),
                                                    dtype=torch.float64)).item(),
        "norm2": (z**2).sum().item(),
        "norm2_bound": (lam.sum() + 2 * ((lam**2).sum() * x).sqrt()
                        + 2 * lam.max() * x).item(),
    }


def assert_unbiased(samples: list[list[torch.Tensor]], true: list[torch.Tensor]) -> None:
    """Fails an unbiased estimator with probability ≤ ALPHA (``unbiasedness_stats``)."""
    s = unbiasedness_stats(samples, true)
    torch.testing.assert_close(*s["exact"], rtol=1e-9, atol=1e-12)  # exact parts
    assert s["max_z"] <= s["z_bound"], f"max |z| = {s['max_z']:.2f} > {s['z_bound']:.2f}"
    assert s["norm2"] <= s["norm2_bound"], (
        f"‖z‖² = {s['norm2']:.1f} > {s['norm2_bound']:.1f}")


@pytest.mark.parametrize("name,options", [
    ("fg_w", {}), ("fg_w", {"perturbation": "independent"}),
    ("fg_a", {}), ("fg_a", {"perturbation": "shared"})])
def test_forward_gradient_is_unbiased_on_mlp(name, options):
    model, (x, y) = mlp(hidden=(6,)), batch()
    rule = ft.make_rule(name, model, seed=11, **options)
    samples = []
    for _ in range(800):
        rule.step(x, y)
        samples.append([p.grad.clone() for p in model.parameters()])
    assert_unbiased(samples, true_grads(model, x, y))


def test_the_unbiasedness_check_can_fail():
    """Its power at M = 800: FG-A's hidden-layer estimate made 1.5× too long, or one
    unit's bias gradient shifted by 8 standard errors, is rejected; the estimate
    itself is not (the readout's exact gradient is left as it is)."""
    model, (x, y) = mlp(hidden=(6,)), batch()
    rule = ft.make_rule("fg_a", model, seed=11)
    samples = []
    for _ in range(800):
        rule.step(x, y)
        samples.append([p.grad.clone() for p in model.parameters()])
    true = true_grads(model, x, y)
    assert_unbiased(samples, true)
    longer = [[1.5 * t if i < 2 else t for i, t in enumerate(s)] for s in samples]
    stats = unbiasedness_stats(longer, true)
    assert stats["norm2"] > stats["norm2_bound"]  # the joint test alone rejects it
    with pytest.raises(AssertionError):
        assert_unbiased(longer, true)
    se = torch.stack([s[1] for s in samples]).std(0) / 800**0.5  # layers.0.bias
    unit = int(se.argmax())
    shifted = [[t.clone() for t in s] for s in samples]
    for s in shifted:
        s[1][unit] += 8 * se[unit]
    with pytest.raises(AssertionError, match=r"max \|z\|"):
        assert_unbiased(shifted, true)


@pytest.mark.parametrize("name,reference", [
    ("fg_a", "bp"), ("lg_fg_a", "lg_bp"), ("lg_fg_w", "lg_bp")])
def test_forward_gradient_is_unbiased_on_localmixer(name, reference):
    model = tiny_mixer()
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(6, 1, 4, 4, generator=g, dtype=DT), torch.randint(0, 3, (6,), generator=g)
    true = rule_grads(reference, model, x, y)
    rule = ft.make_rule(name, model, seed=12)
    samples = []
    for _ in range(400):
        rule.step(x, y)
        samples.append([p.grad.clone() for p in model.parameters()])
    assert_unbiased(samples, true)


def test_activity_perturbation_beats_weight_perturbation():
    model, (x, y) = mlp(hidden=(16,)), batch()
    spread = {}
    for name in ("fg_w", "fg_a"):
        rule = ft.make_rule(name, model, seed=0)
        draws = []
        for _ in range(200):
            rule.step(x, y)
            draws.append(model.layers[0].weight.grad.flatten().clone())
        spread[name] = torch.stack(draws).var(0).mean()
    assert spread["fg_a"] * 5 < spread["fg_w"]  # theory: (pq+1)/(q+1) ≈ 5 for p = 5


# -- options, reproducibility, interface ---------------------------------------------------
def test_num_tangents_averages_consecutive_draws():
    model, (x, y) = mlp(), batch()
    for name in ("fg_w", "fg_a"):
        avg = rule_grads(name, model, x, y, seed=7, num_tangents=3)
        rule = ft.make_rule(name, model, seed=7)
        singles = []
        for _ in range(3):
            rule.step(x, y)
            singles.append([p.grad.clone() for p in model.parameters()])
        for i, a in enumerate(avg):
            torch.testing.assert_close(a, sum(s[i] for s in singles) / 3, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["fg_w", "fg_a", "lg_fg_a", "lg_fg_w"])
def test_seed_reproducible_and_step_overwrites(name):
    model = tiny_mixer() if name.startswith("lg") else mlp()
    x, y = ((torch.randn(4, 1, 4, 4, dtype=DT), torch.tensor([0, 1, 2, 0])) if
            name.startswith("lg") else batch())
    first = rule_grads(name, model, x, y, seed=1)
    for p in model.parameters():
        p.grad = torch.full_like(p, 1e6)
    again = rule_grads(name, model, x, y, seed=1)
    other = rule_grads(name, model, x, y, seed=2)
    for a, b in zip(first, again):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert any(not torch.allclose(a, b) for a, b in zip(first, other))


def test_returns_the_batch_loss_and_leaves_weights():
    model, (x, y) = mlp(), batch()
    before = [p.detach().clone() for p in model.parameters()]
    for name in ("fg_w", "fg_a"):
        loss = ft.make_rule(name, model, seed=0).step(x, y)
        torch.testing.assert_close(loss, F.cross_entropy(model(x), y).detach())
        assert not loss.requires_grad
    for p, b in zip(model.parameters(), before):
        assert torch.equal(p, b)


@pytest.mark.parametrize("name,options,match", [
    ("fg_w", {"perturbation": "per-example"}, "perturbation"),
    ("fg_a", {"num_tangents": 0}, "num_tangents"),
    ("fg_a", {"noise": 0.1}, "unknown option"),
    ("lg_fg_w", {"perturbation": "independent"}, "shared"),
])
def test_bad_options_raise(name, options, match):
    model = tiny_mixer() if name.startswith("lg") else mlp()
    with pytest.raises(ValueError, match=match):
        ft.make_rule(name, model, **options)


def test_fg_a_rejects_unconvertible_layers():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Bilinear(4, 4, 2))
    with pytest.raises(ValueError, match="Bilinear"):
        ft.make_rule("fg_a", model)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("name", ["fg_w", "fg_a", "lg_fg_a", "lg_fg_w"])
def test_cuda(name):
    model = (tiny_mixer() if name.startswith("lg") else mlp()).cuda()
    x = (torch.randn(4, 1, 4, 4, dtype=DT) if name.startswith("lg") else batch()[0][:4]).cuda()
    y = torch.tensor([0, 1, 2, 0], device="cuda")
    ft.make_rule(name, model, seed=0).step(x, y)
    assert all(p.grad.is_cuda and torch.isfinite(p.grad).all() for p in model.parameters())
    if name == "fg_w":
        gen = torch.Generator(device="cuda").manual_seed(rule_generator_seed(0))
        v = [torch.randn(p.shape, generator=gen, device="cuda", dtype=DT)
             for p in model.parameters()]
        d = sum((g * vi).sum() for g, vi in zip(true_grads(model, x, y), v))
        for p, vi in zip(model.parameters(), v):
            torch.testing.assert_close(p.grad, d * vi, rtol=1e-9, atol=1e-12)


def test_fg_w_exact_readout_matches_lg_fg_w_on_one_block_one_group() -> None:
    """Ren et al.'s FG-W perturbs the body only: on S/1/1 (one block, one group) it is
    LG-FG-W's update, draw for draw, when the classifier reads like block 0's head."""
    torch.manual_seed(0)
    model = ft.models.LocalMixer(1, 8, 10, num_blocks=1, num_patches=1, channels=8, groups=1)
    with torch.no_grad():
        model.heads[0].weight.copy_(model.classifier.weight)
        model.heads[0].bias.copy_(model.classifier.bias)
    x, y = torch.randn(6, 1, 8, 8), torch.randint(0, 10, (6,))
    grads = {}
    for name in ["fg_w", "lg_fg_w", "bp"]:
        rule = ft.make_rule(name, model, seed=3)
        model.zero_grad()
        rule.step(x, y)
        grads[name] = {n: p.grad.clone() for n, p in model.named_parameters()}
    for n in model.local_layers():
        for part in ("weight", "bias"):
            key = f"{n}.{part}"
            assert grads["fg_w"][key].abs().max() > 0
            torch.testing.assert_close(grads["fg_w"][key], grads["lg_fg_w"][key],
                                       rtol=1e-5, atol=1e-5)
    for key in ("classifier.weight", "classifier.bias"):  # the readout is exact
        torch.testing.assert_close(grads["fg_w"][key], grads["bp"][key])
    assert grads["fg_w"]["heads.0.weight"].abs().max() == 0  # not in the global loss


@pytest.mark.parametrize("perturbation", ["shared", "independent"])
def test_fg_w_exact_readout_option(perturbation: str) -> None:
    """Default: the last Linear gets backprop's gradient; exact_readout=False perturbs it."""
    torch.manual_seed(0)
    model = ft.models.MLP(6, [8, 7], 3)
    x, y = torch.randn(5, 6), torch.tensor([0, 1, 2, 0, 1])
    bp = ft.make_rule("bp", model)
    model.zero_grad()
    bp.step(x, y)
    exact = {n: p.grad.clone() for n, p in model.named_parameters()}
    for flag in (True, False):
        rule = ft.make_rule("fg_w", model, seed=0, perturbation=perturbation, exact_readout=flag)
        model.zero_grad()
        rule.step(x, y)
        same = torch.allclose(model.layers[2].weight.grad, exact["layers.2.weight"], atol=1e-6)
        assert same is flag
        assert not torch.allclose(model.layers[0].weight.grad, exact["layers.0.weight"])
    with pytest.raises(ValueError, match="exact_readout"):
        ft.make_rule("fg_w", model, exact_readout="yes")
