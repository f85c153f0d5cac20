"""Estimator statistics and Ren et al.'s Table 1 against closed forms and exact predictions."""
from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

import fa_tutor as ft
from fa_tutor.metrics import (check_variance_theory, estimator_stats, gradient_moments,
                              variance_prediction, variance_theory)

DT = torch.float64


def data(N: int = 8, p: int = 6, K: int = 3, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, p, generator=g, dtype=DT), torch.randint(0, K, (N,), generator=g)


def mlp(hidden=(5,), activation="relu", bias=True, seed=0):
    torch.manual_seed(seed)
    return ft.models.MLP(6, list(hidden), 3, activation=activation, bias=bias).to(DT)


def total(df):
    return df.set_index("param").loc["total"]


# -- estimator_stats -----------------------------------------------------------------------
def test_backprop_is_exact():
    x, y = data()
    t = total(estimator_stats(mlp(), "bp", x, y, n_samples=3))
    assert t.bias < 1e-14 and t.var_total == 0 and t.snr == math.inf
    assert t.cosine == pytest.approx(1.0, abs=1e-12)


def test_fg_w_cosine_follows_the_random_direction_law():
    """FG-W: cos(ĝ, g) = |v·g| / (‖v‖‖g‖), whose mean is Γ(D/2) / (√π Γ((D+1)/2))."""
    model, (x, y) = mlp(hidden=()), data()
    df = estimator_stats(model, "fg_w", x, y, n_samples=1500, seed=3, exact_readout=False)
    t, D = total(df), sum(p.numel() for p in model.parameters())
    expected = math.exp(math.lgamma(D / 2) - math.lgamma((D + 1) / 2)) / math.sqrt(math.pi)
    assert abs(t.cosine - expected) < 4 * t.cosine_se, (t.cosine, expected, t.cosine_se)
    assert t.bias < 4 * t.bias_se  # unbiased: ‖ḡ − g‖ is sampling noise only
    assert t.snr == pytest.approx(t.true_norm**2 / t.var_total)
    assert df.attrs == {"rule": "fg_w", "reference": "bp", "n_samples": 1500, "resample": "step"}
    with pytest.raises(ValueError, match="nothing to perturb"):  # the readout is all there is
        estimator_stats(model, "fg_w", x, y, n_samples=2, seed=3)


def test_feedback_alignment_is_deterministic_but_biased():
    x, y = data()
    t = total(estimator_stats(mlp(hidden=(5, 4)), "fa", x, y, n_samples=4, seed=0))
    assert t.var_total == 0 and t.bias > 0.05 * t.true_norm and t.cosine < 0.999
    fresh = total(estimator_stats(mlp(hidden=(5, 4)), "fa", x, y, n_samples=4, resample="rule"))
    assert fresh.var_total > 0  # a new B per sample


def test_model_weights_grads_and_buffers_are_left_alone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3)).to(DT)
    x, y = data()
    model[0].weight.grad = torch.ones_like(model[0].weight)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    estimator_stats(model, "fg_w", x, y, n_samples=3)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert torch.equal(model[0].weight.grad, torch.ones_like(model[0].weight))
    assert model[3].weight.grad is None and model.training


def test_rule_instances_and_bad_arguments():
    model, (x, y) = mlp(), data()
    rule = ft.make_rule("fg_a", model, seed=1)
    df = estimator_stats(model, rule, x, y, n_samples=5)
    assert df.attrs["rule"] == "fg_a" and total(df).var_total > 0
    for kwargs, match in [(dict(resample="often"), "resample"), (dict(n_samples=0), "n_samples")]:
        with pytest.raises(ValueError, match=match):
            estimator_stats(model, "fg_a", x, y, **kwargs)
    with pytest.raises(ValueError, match="instance"):
        estimator_stats(model, rule, x, y, perturbation="shared")
    with pytest.raises(ValueError, match="Unknown rule"):
        estimator_stats(model, "fg_x", x, y)


def test_feedback_lr_samples_fdfa_while_its_feedback_averages():
    """With feedback_lr, sample s sees B after s EMA steps, B_s = (1-λ)^s B_0 + (1-(1-λ)^s) mean Ĵ:
    the updates vary (at a fixed B they would not), and the rule's B is restored."""
    model, (x, y) = mlp(hidden=(5, 4)), data()
    rule = ft.make_rule("fdfa", model, seed=2)
    rule.step(x, y)  # B = 0 → shapes known
    B0 = [B.detach().clone() for B in rule.parameters()]
    frozen = total(estimator_stats(model, rule, x, y, n_samples=6))
    state = rule.generator.get_state()
    moving = total(estimator_stats(model, rule, x, y, n_samples=6, feedback_lr=0.5))
    assert frozen.var_total == 0 and moving.var_total > 0
    assert all(torch.equal(a, b) for a, b in zip(rule.parameters(), B0))
    # by hand, with the same draws: 6 steps of B ← B − λ∇_B, recording each update
    rule.generator.set_state(state)
    samples = []
    for _ in range(6):
        rule.step(x, y)
        samples.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
        with torch.no_grad():
            for B in rule.parameters():
                B.sub_(B.grad, alpha=0.5)
    var = torch.stack(samples).var(0).sum().item()
    assert moving.var_total == pytest.approx(var, rel=1e-9)
    with pytest.raises(ValueError, match="feedback_lr"):
        estimator_stats(model, "fdfa", x, y, feedback_lr=-1.0)


def test_local_rules_are_measured_against_lg_bp():
    torch.manual_seed(0)
    model = ft.models.LocalMixer(1, 4, 3, num_blocks=2, num_patches=2, channels=6,
                                 groups=2).to(DT)
    x, y = torch.randn(4, 1, 4, 4, dtype=DT), torch.tensor([0, 1, 2, 0])
    own = estimator_stats(model, "lg_bp", x, y, n_samples=2)
    assert own.attrs["reference"] == "lg_bp" and total(own).bias < 1e-14
    assert total(estimator_stats(model, "lg_bp", x, y, n_samples=2, reference="bp")).bias > 1e-3
    t = total(estimator_stats(model, "lg_fg_a", x, y, n_samples=200, seed=0))
    assert t.bias < 4 * t.bias_se and t.cosine > 4 * t.cosine_se


# -- Table 1 ------------------------------------------------------------------------------------
def test_variance_theory_formulas():
    t = variance_theory(3, 4, 5, S=0.5, V=2.0).set_index(["estimator", "perturbation"]).variance
    assert t["fg_w", "shared"] == pytest.approx(14 / 5 * 2 + 13 * 0.5)  # (pq+2)/N V + (pq+1) S
    assert t["fg_w", "independent"] == pytest.approx(14 / 5 * 2 + 13 / 5 * 0.5)
    assert t["fg_a", "shared"] == pytest.approx(6 / 5 * 2 + 5 * 0.5)  # (q+2)/N V + (q+1) S
    assert t["fg_a", "independent"] == pytest.approx(6 / 5 * 2 + 5 / 5 * 0.5)
    c = variance_theory(3, 4, 5, S=0.5, V=2.0, conditional=True)
    c = c.set_index(["estimator", "perturbation"]).variance
    assert c["fg_w", "shared"] == pytest.approx(13 * 0.5)
    assert c["fg_a", "independent"] == pytest.approx(5 / 5 * (0.5 + 2.0))


def assert_within(rows, k: float = 4.0):
    for r in rows.itertuples():
        assert abs(r.measured - r.predicted) < k * r.se, r


def test_measured_variance_matches_exact_prediction_with_relu_masks():
    x, y = data(N=8)
    rows = check_variance_theory(mlp(hidden=(5,)), x, y, n_samples=1500, seed=2)
    assert len(rows) == 8
    assert_within(rows)
    # FG-W : FG-A, as predicted (activity perturbation wins by about the fan-in)
    for pert in ("shared", "independent"):
        w = rows[(rows.estimator == "fg_w") & (rows.perturbation == pert)].iloc[0]
        a = rows[(rows.estimator == "fg_a") & (rows.perturbation == pert)].iloc[0]
        rel_se = math.hypot(w.se / w.measured, a.se / a.measured)
        ratio = (w.measured / a.measured) / (w.predicted / a.predicted)
        assert abs(ratio - 1) < 4 * rel_se, (pert, ratio, rel_se)


def test_table_1_holds_exactly_when_only_the_layer_learns():
    model = mlp(hidden=(4,), activation="tanh", bias=False)  # f' never vanishes: no mask
    model.layers[1].weight.requires_grad_(False)
    x, y = data(N=8)
    rows = check_variance_theory(model, x, y, n_samples=1500, seed=3)
    torch.testing.assert_close(torch.tensor(rows.predicted.values),
                               torch.tensor(rows.table1.values), rtol=1e-10, atol=0)
    assert_within(rows)
    p, q = 6, 4
    assert list(zip(rows.estimator, rows.perturbation)) == [
        ("fg_w", "shared"), ("fg_w", "independent"), ("fg_a", "shared"), ("fg_a", "independent")]
    for w, a in ((0, 2), (1, 3)):  # FG-W : FG-A = (pq+1) : (q+1)
        assert rows.table1[w] / rows.table1[a] == pytest.approx((p * q + 1) / (q + 1))


def test_table_1_over_random_batches_includes_the_V_terms():
    """Population form: variance about the population gradient, batches drawn with replacement."""
    p, q, N, M = 6, 4, 4, 1500
    X, Y = data(N=64, seed=5)
    model = mlp(hidden=(q,), activation="tanh", bias=False)
    model.layers[1].weight.requires_grad_(False)
    W = model.layers[0].weight

    def loss(w, xn, yn):
        return F.cross_entropy(functional_call(model, {"layers.0.weight": w}, (xn[None],)),
                               yn[None])

    per = vmap(grad(loss), in_dims=(None, 0, 0))(W.detach(), X, Y).flatten(1)  # (64, pq)
    mu = per.mean(0)
    S, V = gradient_moments(per)
    theory = variance_theory(p, q, N, S, V).set_index(["estimator", "perturbation"]).variance
    g = torch.Generator().manual_seed(0)
    for est in ("fg_w", "fg_a"):
        for pert in ("shared", "independent"):
            rule = ft.make_rule(est, model, seed=1, perturbation=pert)
            dev = []
            for _ in range(M):
                idx = torch.randint(0, 64, (N,), generator=g)
                rule.step(X[idx], Y[idx])
                dev.append(((W.grad.flatten() - mu) ** 2).mean())
            dev = torch.stack(dev)
            se = dev.std() / math.sqrt(M)
            assert abs(dev.mean() - theory[est, pert]) < 4 * se, (est, pert, dev.mean(),
                                                                theory[est, pert], se)


def test_variance_prediction_is_the_check_without_draws():
    model, (x, y) = mlp(activation="tanh"), data()
    pred = variance_prediction(model, x, y)
    check = check_variance_theory(model, x, y, n_samples=3)
    assert len(pred) == 8 and list(pred.columns) == ["estimator", "perturbation", "param",
                                                     "predicted", "table1"]
    pd.testing.assert_frame_equal(pred, check[pred.columns])
    with pytest.raises(ValueError, match="variance_prediction needs a one-hidden-layer"):
        variance_prediction(mlp(hidden=(5, 4)), x, y)


def test_check_needs_a_one_hidden_layer_mlp():
    x, y = data()
    with pytest.raises(ValueError, match="one-hidden-layer"):
        check_variance_theory(mlp(hidden=(5, 4)), x, y, n_samples=2)
