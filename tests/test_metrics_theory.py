"""Tests for fa_tutor.metrics: alignment, the conservation law (Thm 5.2), alignment dominance.

Every quantity is checked against an independent hand computation (float64) or a
closed form; the conservation tests also check that the law *breaks* where the
theory says it must (weight decay, an uncounted hidden bias, the ⟨W, W⟩ pitfall).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fa_tutor as ft
from fa_tutor.metrics import (ConservationTracker, cosine, dale_statistics, dominance_bound,
                              exponential_bound, fit_alignment_dominance, power_bound,
                              sign_agreement, sign_alignment_bound, update_alignment,
                              weight_alignment)

SLOPE = 0.01  # nn.LeakyReLU's default negative slope (fa_tutor.models.MLP)



def toy_data(seed: int = 1, n: int = 200, d: int = 20, k: int = 5):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64) / d**0.5
    return x, torch.randint(0, k, (n,), generator=g)


def toy_mlp(seed: int = 1, bias: bool = False, hidden: int = 30) -> ft.models.MLP:
    torch.manual_seed(seed + 100)
    return ft.models.MLP(20, [hidden], 5, bias=bias).double()


def train(model, rule, tracker, *, lr=2e-3, steps=300, every=20, weight_decay=0.0, data_seed=1):
    """Full-batch SGD driven by rule.step, with a snapshot every ``every`` steps."""
    x, y = toy_data(data_seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, weight_decay=weight_decay)
    for step in range(1, steps + 1):
        opt.zero_grad(set_to_none=True)
        rule.step(x, y)
        opt.step()
        if step % every == 0:
            tracker.snapshot(step)
    return tracker


def hand_fa_grads(model, B2, x, y):
    """Independent FA for MLP(d, [m], k, bias=False): δ1 = (e B2) ⊙ σ'(h), exact last layer."""
    W1, W2 = model.layers[0].weight, model.layers[1].weight
    h = x @ W1.T  # (n, m)
    a = F.leaky_relu(h, SLOPE)
    z = a @ W2.T  # (n, k)
    e = (z.softmax(1) - F.one_hot(y, z.shape[1]).to(z)) / len(y)  # dL/dz for mean CE
    gW2 = e.T @ a
    gW1 = ((e @ B2) * torch.where(h > 0, 1.0, SLOPE)).T @ x
    return gW1, gW2


# ----------------------------------------------------------------------------------------
# Conservation law
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["fa", "adafa", "usf", "frsf", "bp"])
def test_conservation_law_holds_for_rule(name):
    model = toy_mlp()
    rule = ft.make_rule(name, model, seed=0)
    tracker = train(model, rule, ConservationTracker(model, rule))
    assert tracker.form == ("balanced" if name == "bp" else "feedback")
    df = tracker.ratios()
    assert len(df) == 15 and df.valid.sum() >= 12
    assert tracker.deviation() < 0.02
    assert (df.neuron_mean_dev < 0.05).all()  # per neuron too, not just the layer sum
    # the weights really moved: the law is not 0 = 0
    assert df.numerator.abs().max() > 1e-4


def test_conservation_matches_hand_formula_with_hand_fa():
    """Tracker's R = ½Δ‖W1‖²/Δ⟨W2,B2⟩ computed by hand, on an independent FA loop."""
    model = toy_mlp()
    x, y = toy_data()
    g = torch.Generator().manual_seed(3)
    B2 = torch.randn(model.layers[1].weight.shape, generator=g, dtype=torch.float64) / 30**0.5
    W1_0, W2_0 = (p.detach().clone() for p in (model.layers[0].weight, model.layers[1].weight))
    tracker = ConservationTracker(model, {"layers.1.weight": B2})
    with torch.no_grad():
        for _ in range(300):
            gW1, gW2 = hand_fa_grads(model, B2, x, y)
            model.layers[0].weight -= 2e-3 * gW1
            model.layers[1].weight -= 2e-3 * gW2
    tracker.snapshot()
    W1, W2 = model.layers[0].weight.detach(), model.layers[1].weight.detach()
    num_i = 0.5 * (W1.pow(2).sum(1) - W1_0.pow(2).sum(1))
    den_i = (W2 * B2).sum(0) - (W2_0 * B2).sum(0)
    row = tracker.ratios().iloc[0]
    assert row.numerator == pytest.approx(float(num_i.sum()), rel=1e-12)
    assert row.denominator == pytest.approx(float(den_i.sum()), rel=1e-12)
    assert row.ratio == pytest.approx(1.0, abs=0.01)
    torch.testing.assert_close(tracker.neuron_ratios(), num_i / den_i, rtol=1e-12, atol=0)
    assert float((num_i / den_i - 1).abs().max()) < 0.02  # Thm 5.2 neuron by neuron


@pytest.mark.parametrize("name", ["kp", "brsf"])
def test_conservation_law_does_not_cover_moving_feedback(name):
    """kp (B gets W's update) and brsf (B redrawn each step) move B: no conservation."""
    model = toy_mlp()
    rule = ft.make_rule(name, model, seed=0)
    tracker = ConservationTracker(model, rule)
    x, y = toy_data()
    opt = torch.optim.SGD([*model.parameters(), *rule.parameters()], lr=2e-3)
    for step in range(1, 301):
        opt.zero_grad(set_to_none=True)
        rule.step(x, y)
        opt.step()
        if step % 20 == 0:
            tracker.snapshot(step)
    assert tracker.deviation() > 0.1


def test_kolen_pollack_conserves_its_own_form():
    """KP (Ḃ = Ẇ): ½Δ‖W1[i,:]‖² = Δ⟨W2[:,i], B2[:,i]⟩ − ½Δ‖W2[:,i]‖², neuron by neuron,
    though the FA form fails for it (test above)."""
    model = toy_mlp()
    rule = ft.make_rule("kp", model, seed=0)
    x, y = toy_data()
    W1, W2 = model.layers[0].weight, model.layers[1].weight
    B2 = rule.feedback["layers.1.weight"]
    W1_0, W2_0, B2_0 = (t.detach().clone() for t in (W1, W2, B2))
    opt = torch.optim.SGD([*model.parameters(), *rule.parameters()], lr=2e-3)
    for _ in range(300):
        opt.zero_grad(set_to_none=True)
        rule.step(x, y)
        opt.step()
    with torch.no_grad():
        incoming = 0.5 * (W1.pow(2).sum(1) - W1_0.pow(2).sum(1))  # ½Δ‖W1[i,:]‖²
        outgoing = ((W2 * B2).sum(0) - (W2_0 * B2_0).sum(0)
                    - 0.5 * (W2.pow(2).sum(0) - W2_0.pow(2).sum(0)))
        fa_form = (W2 * B2).sum(0) - (W2_0 * B2_0).sum(0)
    assert incoming.abs().max() > 1e-4  # the weights really moved
    assert float((incoming / outgoing - 1).abs().max()) < 0.02  # KP's law, per neuron
    assert float((incoming.sum() / fa_form.sum() - 1).abs()) > 0.1  # not the FA form


def test_naive_gd_pitfall_gives_one_half():
    """GD with B = W(t) plugged into the FA form: ⟨W,W⟩ lacks the ½, so R → 0.5."""
    model = toy_mlp()
    rule = ft.make_rule("bp", model)
    naive = ConservationTracker(model, {"layers.1.weight": model.layers[1].weight})
    train(model, rule, naive)
    assert naive.form == "feedback"
    assert naive.ratios().ratio.to_numpy() == pytest.approx(0.5, abs=0.005)
    assert naive.deviation() == pytest.approx(0.5, abs=0.005)


@pytest.mark.parametrize("name", ["fa", "bp"])
def test_conservation_breaks_with_weight_decay(name):
    model = toy_mlp()
    rule = ft.make_rule(name, model, seed=0)
    tracker = train(model, rule, ConservationTracker(model, rule), weight_decay=1e-2)
    assert tracker.deviation() > 0.1


def test_hidden_bias_must_be_counted():
    model = toy_mlp(bias=True)
    rule = ft.make_rule("fa", model, seed=0)
    counted = ConservationTracker(model, rule, count_bias=True)
    uncounted = ConservationTracker(model, rule, count_bias=False)
    x, y = toy_data()
    opt = torch.optim.SGD(model.parameters(), lr=2e-3)
    for step in range(1, 301):
        opt.zero_grad(set_to_none=True)
        rule.step(x, y)
        opt.step()
        if step % 20 == 0:
            counted.snapshot(step)
            uncounted.snapshot(step)
    assert counted.deviation() < 0.02
    assert uncounted.deviation() > 0.1


def test_conservation_conv_per_channel():
    """Weight sharing, per channel c: ½Δ‖K1[c]‖² = ½Δ‖K2[:, c]‖² (GD); also conv → linear."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, bias=False), nn.LeakyReLU(),
                          nn.Conv2d(4, 3, 3, bias=False), nn.LeakyReLU(),
                          nn.Flatten(), nn.Linear(3 * 4 * 4, 5, bias=False)).double()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 1, 8, 8, generator=g, dtype=torch.float64)
    y = torch.randint(0, 5, (64,), generator=g)
    rule = ft.make_rule("bp", model)
    tracker = ConservationTracker(model, rule)
    assert [(p.lower, p.upper) for p in tracker.pairs] == [("0.weight", "2.weight"),
                                                           ("2.weight", "5.weight")]
    opt = torch.optim.SGD(model.parameters(), lr=2e-3)
    for step in range(1, 101):
        opt.zero_grad(set_to_none=True)
        rule.step(x, y)
        opt.step()
        if step % 20 == 0:
            tracker.snapshot(step)
    assert tracker.deviation(pair=0) < 0.02
    assert tracker.deviation(pair=1) < 0.02
    assert tracker.neuron_ratios(pair=1).shape == (3,)


def test_conservation_state_dict_resumes():
    model = toy_mlp()
    rule = ft.make_rule("fa", model, seed=0)
    tracker = train(model, rule, ConservationTracker(model, rule), steps=100)
    state = tracker.state_dict()
    resumed = ConservationTracker(model, rule)  # reference = the current (wrong) state ...
    resumed.load_state_dict(state)  # ... until the saved W(0), B(0) reference is loaded
    x, y = toy_data()
    opt = torch.optim.SGD(model.parameters(), lr=2e-3)
    for step in range(101, 201):
        opt.zero_grad(set_to_none=True)
        rule.step(x, y)
        opt.step()
        if step % 20 == 0:
            tracker.snapshot(step)
            resumed.snapshot(step)
    a, b = tracker.ratios(), resumed.ratios()
    assert len(a) == len(b) == 10
    np.testing.assert_allclose(a.ratio, b.ratio, rtol=1e-12)
    assert tracker.deviation() == resumed.deviation() < 0.02
    with pytest.raises(ValueError, match="state is for pairs"):
        ConservationTracker(model, rule, count_bias=False, form="balanced").load_state_dict(state)


def test_conservation_errors():
    model = toy_mlp()
    with pytest.raises(ValueError, match="form='nope'"):
        ConservationTracker(model, {}, form="nope")
    with pytest.raises(ValueError, match="no feedback for 'layers.1.weight'"):
        ConservationTracker(model, {"layers.0.weight": model.layers[0].weight}, form="feedback")
    with pytest.raises(ValueError, match="layer-wise rules"):  # a direct rule's B
        ConservationTracker(model, {"layers.1.weight": torch.zeros(5, 5)})
    with pytest.raises(ValueError, match="'layers.7.weight' is not"):
        ConservationTracker(model, {}, layer_pairs=[("layers.0.weight", "layers.7.weight")])
    grouped = nn.Sequential(nn.Conv2d(4, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3, groups=2))
    with pytest.raises(ValueError, match="grouped conv"):
        ConservationTracker(grouped, {})
    with pytest.raises(ValueError, match="no snapshots"):
        ConservationTracker(model, {}).deviation()


# ----------------------------------------------------------------------------------------
# Alignment
# ----------------------------------------------------------------------------------------
def test_cosine_hand_cases():
    a = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert cosine(a, a) == pytest.approx(1.0)
    assert cosine(a, -2 * a) == pytest.approx(-1.0)
    assert cosine(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 3.0])) == pytest.approx(0.0)
    assert cosine(torch.tensor([1.0, 1.0]), torch.tensor([1.0, 0.0])) == pytest.approx(0.5**0.5)
    assert math.isnan(cosine(a, torch.zeros(2, 2)))
    with pytest.raises(ValueError, match="equal size"):
        cosine(a, torch.ones(3))


def test_weight_alignment_layerwise_hand_cases():
    model = ft.models.MLP(6, [5, 4], 3)
    Ws = {n: p.detach() for n, p in model.named_parameters() if n.endswith("weight")}
    df = weight_alignment(model, {n: W.clone() for n, W in Ws.items()})
    assert list(df.layer) == list(Ws) and (df.kind == "layer-wise").all()
    np.testing.assert_allclose(df.cosine, 1.0, atol=1e-6)
    np.testing.assert_allclose(df.angle, 0.0, atol=0.1)
    np.testing.assert_allclose(df.norm_ratio, 1.0, atol=1e-6)
    df = weight_alignment(model, {n: -3 * W for n, W in Ws.items()})
    np.testing.assert_allclose(df.cosine, -1.0, atol=1e-6)
    np.testing.assert_allclose(df.angle, 180.0, atol=0.1)
    np.testing.assert_allclose(df.norm_ratio, 3.0, rtol=1e-6)
    # a real rule: cos(W, B) from the rule's live feedback, against a hand formula
    rule = ft.make_rule("fa", model, seed=0)
    df = weight_alignment(model, rule)
    for _, row in df.iterrows():
        W, B = Ws[row.layer].double(), rule.feedback[row.layer].double()
        hand = float((W * B).sum() / (W.norm() * B.norm()))
        assert row.cosine == pytest.approx(hand, abs=1e-12)
        assert row.angle == pytest.approx(math.degrees(math.acos(hand)), abs=1e-9)


def test_weight_alignment_direct_uses_linearised_jacobian():
    torch.manual_seed(0)
    model = ft.models.MLP(6, [5, 4], 3).double()
    W1, W2, W3 = (l.weight.detach() for l in model.layers)
    # J_l = W_L ⋯ W_{l+1}: compare with autodiff through the network with identity activations
    linear_net = lambda h1: F.linear(F.linear(h1, W2), W3)  # noqa: E731
    J1 = torch.autograd.functional.jacobian(linear_net, torch.zeros(5, dtype=torch.float64))
    torch.testing.assert_close(J1, W3 @ W2)
    fb = {"layers.0.weight": J1.clone(), "layers.1.weight": W3.clone()}
    df = weight_alignment(model, fb)
    assert (df.kind == "direct").all()
    np.testing.assert_allclose(df.cosine, 1.0, atol=1e-12)
    fb = {"layers.0.weight": -J1, "layers.1.weight": torch.randn(3, 4, dtype=torch.float64)}
    df = weight_alignment(model, fb)
    assert df.cosine[0] == pytest.approx(-1.0)
    assert df.cosine[1] == pytest.approx(cosine(W3, fb["layers.1.weight"]), abs=1e-12)


def test_dfa_alignment_with_jacobian_feedback():
    """DFA with B_{L-1} = W_L sends backprop's exact error to the last hidden layer."""
    torch.manual_seed(0)
    model = ft.models.MLP(6, [5, 4], 3).double()
    rule = ft.make_rule("dfa", model, seed=0)
    with torch.no_grad():
        rule.feedback["layers.1.weight"].copy_(model.layers[2].weight)
    df = weight_alignment(model, rule)  # kind from the registry family
    assert list(df.kind) == ["direct", "direct"]
    assert df.cosine[1] == pytest.approx(1.0, abs=1e-12)
    x, y = torch.randn(16, 6, dtype=torch.float64), torch.randint(0, 3, (16,))
    upd = update_alignment(model, rule, x, y).set_index("parameter")
    assert upd.loc["layers.1.weight", "cosine"] == pytest.approx(1.0, abs=1e-10)
    assert upd.loc["layers.2.weight", "cosine"] == pytest.approx(1.0, abs=1e-10)
    square = ft.models.MLP(3, [3], 3)  # direct B has W's shape here: the family decides
    assert list(weight_alignment(square, ft.make_rule("dfa", square, seed=0)).kind) == ["direct"]


def test_weight_alignment_kind_and_errors():
    square = ft.models.MLP(3, [3], 3)  # a direct B (3, 3) has W's shape: kind must be given
    W2 = square.layers[1].weight.detach()
    df = weight_alignment(square, {"layers.0.weight": W2.clone()}, kind="direct")
    assert df.cosine[0] == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="kind='diagonal'"):
        weight_alignment(square, {}, kind="diagonal")
    with pytest.raises(ValueError, match="not a parameter"):
        weight_alignment(square, {"nope.weight": W2})
    conv = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2, 3))
    with pytest.raises(ValueError, match="chain of nn.Linear"):
        weight_alignment(conv, {"0.weight": torch.zeros(3, 2, 1, 1)}, kind="direct")
    model = ft.models.MLP(6, [5], 3)
    with pytest.raises(ValueError, match=r"expected \(n_outputs, hidden\) = \(3, 5\)"):
        weight_alignment(model, {"layers.0.weight": torch.zeros(3, 4)}, kind="direct")


def test_update_alignment_bp_is_one_and_side_effect_free():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rule = ft.make_rule("bp", model)
    df = update_alignment(model, rule, x, y)
    assert list(df.parameter) == [n for n, _ in model.named_parameters()] + ["total"]
    np.testing.assert_allclose(df.cosine, 1.0, atol=1e-6)
    for k, v in model.state_dict().items():  # weights and BN buffers untouched
        assert torch.equal(v, before[k]), k
    model.zero_grad(set_to_none=True)
    true = torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters()))
    model.load_state_dict(before)
    rule.step(x, y)
    for p, g in zip(model.parameters(), true):  # .grad as the rule set it (= bp here)
        torch.testing.assert_close(p.grad, g)


def test_update_alignment_fa_against_hand_formula():
    model = toy_mlp()
    x, y = toy_data()
    rule = ft.make_rule("fa", model, seed=0)
    B2 = rule.feedback["layers.1.weight"]
    df = update_alignment(model, rule, x, y).set_index("parameter")
    gW1, gW2 = hand_fa_grads(model, B2, x, y)
    true = torch.autograd.grad(F.cross_entropy(model(x), y),
                               [model.layers[0].weight, model.layers[1].weight])
    assert df.loc["layers.1.weight", "cosine"] == pytest.approx(1.0, abs=1e-12)  # exact output
    assert df.loc["layers.0.weight", "cosine"] == pytest.approx(cosine(gW1, true[0]), abs=1e-10)
    assert df.loc["layers.0.weight", "cosine"] < 0.99
    total = cosine(torch.cat([gW1.flatten(), gW2.flatten()]),
                   torch.cat([t.flatten() for t in true]))
    assert df.loc["total", "cosine"] == pytest.approx(total, abs=1e-10)
    torch.testing.assert_close(model.layers[0].weight.grad, gW1)  # .grad left as FA's
    # Eq. (1): −dL/dt = ⟨∇L, g⟩; a tiny step against g lowers L by η⟨∇L, g⟩
    eta, inner = 1e-6, df.loc["total", "inner"]
    with torch.no_grad():
        l0 = F.cross_entropy(model(x), y)
        model.layers[0].weight -= eta * gW1
        model.layers[1].weight -= eta * gW2
        l1 = F.cross_entropy(model(x), y)
    assert float(l0 - l1) / eta == pytest.approx(inner, rel=1e-4)


@pytest.mark.parametrize("scale", [True, False])
def test_sign_alignment_bound_holds_along_usf_run(scale):
    model = toy_mlp()
    x, y = toy_data()
    rule = ft.make_rule("usf", model, seed=0, scale=scale)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(30):
        opt.zero_grad(set_to_none=True)
        rule.step(x, y)
        opt.step()
        rule.step(x, y)  # refresh B = c·sign(W) at the new weights
        df = weight_alignment(model, rule)
        for _, row in df.iterrows():
            assert row.cosine >= sign_alignment_bound(rule.feedback[row.layer]) - 1e-12


def test_sign_alignment_bound_value_and_near_tightness():
    assert sign_alignment_bound(torch.zeros(4, 25)) == pytest.approx(0.1)
    assert sign_alignment_bound((3, 3)) == pytest.approx(1 / 3)
    W = torch.full((100,), 1e-6, dtype=torch.float64)
    W[0] = 1.0  # one dominant entry: cos(W, sign W) → 1/√n
    assert cosine(W, torch.sign(W)) == pytest.approx(0.1, rel=1e-3)
    with pytest.raises(ValueError, match="non-empty"):
        sign_alignment_bound(torch.zeros(0))


def test_dale_statistics_and_sign_agreement():
    W_next = torch.tensor([[1.0, -1.0, 2.0, 0.0],
                           [3.0, -2.0, -1.0, 0.0],
                           [0.0, -5.0, 1.0, 0.0]])  # columns: exc, inh, mixed, all-zero
    row = dale_statistics(W_next).iloc[0]
    assert (row.neurons, row.excitatory, row.inhibitory) == (4, 2, 2)
    assert row.dale_share == pytest.approx(0.75)
    model = ft.models.MLP(4, [4, 3], 2)
    with torch.no_grad():
        model.layers[1].weight.copy_(W_next.abs())  # (3, 4): every neuron excitatory
        model.layers[2].weight.copy_(torch.tensor([[1.0, 1.0, -1.0], [-1.0, 2.0, 3.0]]))
    df = dale_statistics(model)
    assert list(df.layer) == ["layers.1.weight", "layers.2.weight"]
    assert list(df.dale_share) == pytest.approx([1.0, 1 / 3])
    assert sign_agreement(W_next, W_next.abs()) == pytest.approx(8 / 12)  # the 4 negatives differ
    with pytest.raises(ValueError, match="at least two weight layers"):
        dale_statistics(nn.Linear(3, 2))


# ----------------------------------------------------------------------------------------
# Alignment dominance
# ----------------------------------------------------------------------------------------
def test_dominance_fit_power_law_beta_2():
    mu, L0 = 0.7, 2.0
    t = np.linspace(0, 50, 2001)
    L = L0 / (1 + mu * L0 * t)  # solves −dL/dt = μ L², β = 2
    fit = fit_alignment_dominance(t, L)
    assert fit.beta == pytest.approx(2.0, abs=0.01)
    assert fit.mu == pytest.approx(mu, rel=0.02)
    assert fit.r2 > 0.999 and fit.n_points == 2001
    np.testing.assert_allclose(power_bound(t, L0, mu, 2.0), L, rtol=1e-12)  # the bound is tight
    np.testing.assert_allclose(dominance_bound(t, L0, mu, 2.0), L, rtol=1e-12)


def test_dominance_fit_exponential_beta_1_with_offset():
    mu, L0, Ls = 0.3, 1.5, 0.2
    t = np.linspace(0, 20, 801)
    L = Ls + (L0 - Ls) * np.exp(-mu * t)
    fit = fit_alignment_dominance(t, L, loss_star=Ls)
    assert fit.beta == pytest.approx(1.0, abs=0.01)
    assert fit.mu == pytest.approx(mu, rel=0.02)
    np.testing.assert_allclose(exponential_bound(t, L0, mu, Ls), L, rtol=1e-12)
    np.testing.assert_allclose(dominance_bound(t, L0, mu, 1.0, Ls), L, rtol=1e-12)
    # the β > 1 bound tends to the β = 1 bound as β → 1
    np.testing.assert_allclose(power_bound(t, L0, mu, 1 + 1e-7, Ls), L, rtol=1e-4)
    # a trajectory decaying faster than the bound stays below it
    assert np.all(Ls + (L0 - Ls) * np.exp(-2 * mu * t) <= dominance_bound(t, L0, mu, 1.0, Ls)
                  + 1e-15)


def test_dominance_errors():
    with pytest.raises(ValueError, match="strictly increasing"):
        fit_alignment_dominance([0, 0, 1], [3, 2, 1])
    with pytest.raises(ValueError, match="fewer than 2 points"):
        fit_alignment_dominance([0, 1, 2], [1, 1, 1])
    with pytest.raises(ValueError, match="beta must be"):
        dominance_bound([0.0], 1.0, 1.0, 0.5)
    with pytest.raises(ValueError, match="beta > 1"):
        power_bound([0.0], 1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="mu must be positive"):
        dominance_bound([0.0], 1.0, -1.0, 2.0)
