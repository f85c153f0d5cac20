"""LocalMixer: Table-2 sizes, the local-loss protocol, and the lg_* rules against oracles."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import jvp

import fa_tutor as ft
from fa_tutor.rules.base import rule_generator_seed
from fa_tutor.models.localmixer import CONFIGS, count_parameters, replicated_losses

DT = torch.float64


def mixer(blocks: int = 2, seed: int = 0, **kw) -> ft.models.LocalMixer:
    torch.manual_seed(seed)
    sizes = dict(num_blocks=blocks, num_patches=2, channels=6, groups=2) | kw
    return ft.models.LocalMixer(1, 4, 3, **sizes).to(DT)


def batch(N: int = 5, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, 1, 4, 4, generator=g, dtype=DT), torch.randint(0, 3, (N,), generator=g)


def rule_grads(name, model, x, y, **kw):
    ft.make_rule(name, model, **kw).step(x, y)
    return {n: p.grad.clone() for n, p in model.named_parameters()}


# -- a hand-written LocalMixer forward (no model code reused) ----------------------------------
def ln(z):
    return (z - z.mean(-1, keepdim=True)) / (z.var(-1, unbiased=False, keepdim=True) + 1e-5).sqrt()


def patches(x, n):
    ps = x.shape[-1] // n
    return torch.stack([x[:, :, i * ps:(i + 1) * ps, j * ps:(j + 1) * ps].permute(0, 2, 3, 1)
                        .reshape(len(x), -1) for i in range(n) for j in range(n)], 1)


def grouped(h, conv, G):  # z_{p,g} = W_g h_{p,g} + b_g
    W = conv.weight[:, :, 0, 0].reshape(G, -1, conv.weight.shape[1])  # (G, out/G, in/G)
    z = torch.einsum("npgi,goi->npgo", h.unflatten(-1, (G, -1)), W)
    return z + conv.bias.view(G, -1)  # (N, P, G, C/G)


def block(blk, h, G, first):
    if first:
        h = ln(h @ blk.dense.weight.T + blk.dense.bias).relu()
        return ln(grouped(h, blk.grouped, G)).flatten(-2).relu()
    t = torch.einsum("npc,qp->nqc", h, blk.token.weight) + blk.token.bias[None, :, None]
    t = ln(t).relu()
    t = ln(t @ blk.dense.weight.T + blk.dense.bias).relu()
    return (ln(grouped(t, blk.grouped, G)).flatten(-2) + h).relu()


def manual_objective(model, x, y):
    """Σ_b CE(H_b mean_p h_b) + CE(classifier(mean_p SG(h_B))), stop-gradient between blocks."""
    G, n = model.sizes["groups"], model.sizes["num_patches"]
    h, total = patches(x, n), 0.0
    for b, (blk, head) in enumerate(zip(model.blocks, model.heads)):
        h = block(blk, h, G, b == 0)
        total = total + F.cross_entropy(head(h.mean(1)), y)
        h = h.detach()
    return total + F.cross_entropy(model.classifier(h.mean(1)), y)


# -- sizes and shapes -------------------------------------------------------------------
@pytest.mark.parametrize("name,count", [("S/1/1", 271_892), ("M/1/16", 429_076),
                                        ("M/8/16", 918_770), ("L/8/64", 13_074_674)])
def test_parameter_counts_match_table_2(name, count):
    assert count_parameters(name) == count


def test_l32_count_is_documented():
    assert count_parameters("L/32/64") == 26_556_296  # not Table 2's 17.3M (notes §2.1)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_output_and_local_loss_shapes(name):
    c = CONFIGS[name]
    n, G, C, B = c["num_patches"], c["groups"], c["channels"], c["num_blocks"]
    with torch.device("meta"):  # full-size weights, no memory
        model = ft.models.LocalMixer.from_config(name, image_size=n * 2, num_classes=7)
        x, y = torch.empty(3, model.sizes["in_channels"], n * 2, n * 2), torch.zeros(3).long()
        out = model.local_losses(x, y)
        assert model(x).shape == (3, 7)
    assert len(out.losses) == B and all(loss.shape == () for loss in out.losses)
    assert all(f.shape == (3, n * n, G, C // G) for f in out.features)
    assert out.logits.shape == (3, 7)


def test_forward_matches_hand_written_network():
    model, (x, _) = mixer(), batch()
    G, h = 2, patches(x, 2)
    for b, blk in enumerate(model.blocks):
        h = block(blk, h, G, b == 0)
    torch.testing.assert_close(model(x), model.classifier(h.mean(1)))
    torch.testing.assert_close(model(x.flatten(1)), model(x))  # flat images accepted


@pytest.mark.parametrize("kwargs,match", [
    (dict(image_size=30), "divisible"), (dict(channels=10, groups=4), "divisible"),
    (dict(num_blocks=0), "positive")])
def test_bad_sizes_raise(kwargs, match):
    sizes = dict(in_channels=1, image_size=32, num_classes=10, num_blocks=2, num_patches=4,
                 channels=8, groups=2) | kwargs
    with pytest.raises(ValueError, match=match):
        ft.models.LocalMixer(**sizes)


def test_bad_config_and_input_raise():
    with pytest.raises(ValueError, match="M/8/16"):
        ft.models.LocalMixer.from_config("XL/8/16")
    with pytest.raises(ValueError, match=r"\(N, 1, 4, 4\)"):
        mixer()(torch.randn(2, 3, 4, 4, dtype=DT))


# -- eqs. (4)-(5): replicated losses ----------------------------------------------------------
def test_replicated_losses_value_gradient_and_tangent():
    model, (x, y) = mixer(blocks=1), batch()
    f = model.local_losses(x, y).features[0].detach().requires_grad_()
    head, N = model.heads[0], len(x)
    block_loss = F.cross_entropy(head(f.flatten(2).mean(1)), y)
    copies = replicated_losses(f, head, y) / N  # (N, P, G): ℓ_n / N per copy
    torch.testing.assert_close(copies.sum(0).detach(), block_loss.detach().expand(4, 2))
    (delta,) = torch.autograd.grad(block_loss, f)
    (g_copies,) = torch.autograd.grad(copies.sum(), f)  # each copy feeds only its own slice
    torch.testing.assert_close(g_copies, delta)
    tf = torch.randn_like(f)
    _, d = jvp(lambda f: replicated_losses(f, head, y) / N, (f.detach(),), (tf,))
    torch.testing.assert_close(d, (delta * tf).sum(-1))  # the rules' per-copy derivative


def test_local_credit_pairs_units_with_copies():
    model = mixer()
    d = [torch.randn(5, 4, 2, dtype=DT) for _ in range(2)]
    torch.testing.assert_close(model.local_credit("blocks.1.token", d), d[1].sum(-1, keepdim=True))
    torch.testing.assert_close(model.local_credit("blocks.0.dense", d)[..., 4], d[0][..., 1])
    torch.testing.assert_close(model.local_credit("blocks.1.grouped", d, weight=True)[:3],
                               d[1][..., 0].sum().expand(3))
    torch.testing.assert_close(model.local_credit("blocks.1.dense", d, weight=True),
                               d[1].sum().expand(6))
    # token row p makes token p only: the groups of patch p, not the other patches
    torch.testing.assert_close(model.local_credit("blocks.1.token", d, weight=True),
                               d[1].sum((0, 2)))
    with pytest.raises(ValueError, match="body layer"):
        model.local_credit("heads.0", d)


# -- lg_bp, lg_fa --------------------------------------------------------------------------
def test_lg_bp_is_autograd_of_local_losses_with_stop_gradients():
    model, (x, y) = mixer(), batch()
    got = rule_grads("lg_bp", model, x, y)
    expected = torch.autograd.grad(manual_objective(model, x, y), list(model.parameters()))
    for (n, g), e in zip(got.items(), expected):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-12, msg=n)
    bp = rule_grads("bp", model, x, y)
    assert not torch.allclose(bp["blocks.0.dense.weight"], got["blocks.0.dense.weight"])


def test_lg_fa_with_feedback_equal_to_weights_is_lg_bp():
    model, (x, y) = mixer(), batch()
    rule = ft.make_rule("lg_fa", model, seed=0)
    assert set(rule.feedback) == {n for n, _ in model.named_parameters() if n.endswith("weight")}
    fa = rule_grads("lg_fa", model, x, y, seed=0)
    rule.step(x, y)  # the first pass checks the layers; the next routes through their forward
    assert rule._mode.direct
    for name, B in rule.feedback.items():
        B.copy_(model.get_parameter(name).detach())
    rule.step(x, y)
    lg_bp = rule_grads("lg_bp", model, x, y)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, lg_bp[n], rtol=1e-10, atol=1e-12, msg=n)
    torch.testing.assert_close(fa["heads.0.weight"], lg_bp["heads.0.weight"])  # heads exact
    assert not torch.allclose(fa["blocks.0.dense.weight"], lg_bp["blocks.0.dense.weight"])


@pytest.mark.parametrize("name", ["lg_bp", "lg_fa", "lg_fg_a", "lg_fg_w"])
def test_lg_rules_reject_models_without_local_losses(name):
    with pytest.raises(ValueError, match="local_losses"):
        ft.make_rule(name, ft.models.MLP(4, [8], 3))


# -- lg_fg_a / lg_fg_w: exact oracles on one block (eqs. 4-5 pairing) ---------------------------
def one_block_tangent_pass(model, x, y, u=None, v=None):
    """Hand forward of block 0 under activity noise u = (u1, u2) or weight noise v.

    Returns the tokens, h1, a1, a2, h2 and the per-copy derivatives d (N, P, G) of the
    explicit replicated losses (eqs. 4-5).
    """
    blk, G, N = model.blocks[0], 2, len(x)
    t = patches(x, 2)
    ps = [blk.dense.weight, blk.dense.bias, blk.grouped.weight, blk.grouped.bias]

    def forward(Wd, bd, Wc, bc, u1, u2):  # u1, u2: zero primals, tangent = the noise
        a1 = ln(t @ Wd.T + bd)
        h1 = (a1 + u1).relu()
        W = Wc[:, :, 0, 0].reshape(G, 3, 3)
        a2 = ln(torch.einsum("npgi,goi->npgo", h1.unflatten(-1, (G, 3)), W) + bc.view(G, 3))
        a2 = a2.flatten(-2)
        return (a2 + u2).relu(), a1, h1, a2

    zeros = [torch.zeros(N, 4, 6, dtype=DT)] * 2
    noise_w = list(v) if v is not None else [torch.zeros_like(p) for p in ps]
    noise_a = list(u) if u is not None else zeros
    (h2, a1, h1, a2), (h2_t, *_) = jvp(forward, tuple([p.detach() for p in ps] + zeros),
                                       tuple(noise_w + noise_a))
    f, f_t = h2.unflatten(-1, (G, 3)), h2_t.unflatten(-1, (G, 3))
    _, d = jvp(lambda f: replicated_losses(f, model.heads[0], y) / N, (f,), (f_t,))
    return t, h1, a1, a2, h2, d


def ln_backward(g, a, pre):
    """LayerNorm (no affine) backward over the last axis at output a = ln(pre)."""
    sd = (pre.var(-1, unbiased=False, keepdim=True) + 1e-5).sqrt()
    return (g - g.mean(-1, keepdim=True) - a * (g * a).mean(-1, keepdim=True)) / sd


def exact_heads(model, h2, y):
    loss = F.cross_entropy(model.heads[0](h2.mean(1)), y)
    out = F.cross_entropy(model.classifier(h2.mean(1)), y)
    hw = torch.autograd.grad(loss, [model.heads[0].weight, model.heads[0].bias])
    cw = torch.autograd.grad(out, [model.classifier.weight, model.classifier.bias])
    return [*hw, *cw]


def test_lg_fg_a_pairs_each_unit_with_its_patch_group_loss():
    model, (x, y) = mixer(blocks=1), batch()
    got = list(rule_grads("lg_fg_a", model, x, y, seed=3).values())
    gen = torch.Generator().manual_seed(rule_generator_seed(3))  # one draw per layer, in forward order
    r1, r2 = (torch.randn(len(x), 4, 6, generator=gen, dtype=DT) for _ in range(2))
    t, h1, a1, a2, h2, _ = one_block_tangent_pass(model, x, y)
    u1, u2 = r1 * (a1 > 0), r2 * (a2 > 0)  # inactive ReLU units: no perturbation
    *_, d = one_block_tangent_pass(model, x, y, u=(u1, u2))
    credit = d.repeat_interleave(3, -1)  # unit j of either layer → copy (p, j // 3)
    blk = model.blocks[0]
    g1 = ln_backward(credit * u1, a1, t @ blk.dense.weight.T + blk.dense.bias)
    pre2 = grouped(h1, blk.grouped, 2)
    g2 = ln_backward((credit * u2).unflatten(-1, (2, 3)), a2.unflatten(-1, (2, 3)), pre2)
    gW2 = torch.einsum("npgo,npgi->goi", g2, h1.unflatten(-1, (2, 3))).reshape(6, 3, 1, 1)
    expected = [torch.einsum("npo,npi->oi", g1, t), g1.sum((0, 1)), gW2, g2.sum((0, 1)).flatten(),
                *exact_heads(model, h2, y)]
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e.detach(), rtol=1e-9, atol=1e-12)


def test_lg_fg_w_pairs_rows_with_the_losses_they_reach():
    model, (x, y) = mixer(blocks=1), batch()
    got = list(rule_grads("lg_fg_w", model, x, y, seed=4).values())
    gen = torch.Generator().manual_seed(rule_generator_seed(4))
    blk = model.blocks[0]
    v = [torch.randn(p.shape, generator=gen, dtype=DT)
         for p in (blk.dense.weight, blk.dense.bias, blk.grouped.weight, blk.grouped.bias)]
    *_, h2, d = one_block_tangent_pass(model, x, y, v=v)
    rows_grouped = d.sum((0, 1)).repeat_interleave(3)  # row j → group j // 3
    expected = [d.sum() * v[0], d.sum() * v[1],  # dense rows reach every group through LN
                rows_grouped[:, None, None, None] * v[2], rows_grouped * v[3],
                *exact_heads(model, h2, y)]
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e.detach(), rtol=1e-9, atol=1e-12)
    # the released code's pairing: a dense row with its own group only (same draws)
    got = list(rule_grads("lg_fg_w", model, x, y, seed=4, released_pairing=True).values())
    expected[:2] = [rows_grouped[:, None] * v[0], rows_grouped * v[1]]
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e.detach(), rtol=1e-9, atol=1e-12)


def test_released_pairing_of_token_rows_is_the_block_total():
    model = mixer(blocks=2)
    d = [torch.randn(4, 4, 2, dtype=DT) for _ in range(2)]  # (N, P, G) per block
    token = model.local_credit("blocks.1.token", d, weight=True)
    torch.testing.assert_close(token, d[1].sum((0, 2)))  # ours: row p, its own patch
    released = model.local_credit("blocks.1.token", d, weight=True, released=True)
    torch.testing.assert_close(released, d[1].sum().expand(4))
    dense = model.local_credit("blocks.1.dense", d, weight=True, released=True)
    torch.testing.assert_close(dense, d[1].sum((0, 1)).repeat_interleave(3))


# -- learning ------------------------------------------------------------------------------
def test_lg_fg_a_lowers_the_training_loss_on_digits():
    datasets = pytest.importorskip("sklearn.datasets")
    digits = datasets.load_digits()
    X = torch.tensor(digits.images[:512] / 16.0, dtype=torch.float32).unsqueeze(1)
    Y = torch.tensor(digits.target[:512])

    def train(freeze_body: bool) -> tuple[float, float]:
        torch.manual_seed(0)
        model = ft.models.LocalMixer(1, 8, 10, num_blocks=2, num_patches=2, channels=32,
                                     groups=4)
        for n, p in model.named_parameters():
            p.requires_grad_(not (freeze_body and n.startswith("blocks")))
        rule = ft.make_rule("lg_fg_a", model, seed=0)
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05,
                              momentum=0.9)
        before = F.cross_entropy(model(X), Y).item()
        g = torch.Generator().manual_seed(0)
        for _ in range(150):
            idx = torch.randint(0, 512, (64,), generator=g)
            opt.zero_grad(set_to_none=True)
            rule.step(X[idx], Y[idx])
            opt.step()
        return before, F.cross_entropy(model(X), Y).item()

    before, after = train(freeze_body=False)
    _, readout_only = train(freeze_body=True)
    assert after < before - 1.0, (before, after)  # ≈ 2.32 → 0.57
    assert after < readout_only - 0.15, (after, readout_only)  # the body learned (0.91)


def test_lg_rules_reject_unknown_options():
    with pytest.raises(ValueError, match="no options"):
        ft.make_rule("lg_bp", mixer(), temperature=2.0)


@pytest.mark.parametrize("released", [False, True])
def test_lg_fa_head_error_with_w_or_with_b(released: bool) -> None:
    """lg_fa's head b learns from softmax(x̄ Wᵀ + c) − y; with released_heads=True (the
    released code's LG-FA) from softmax(x̄ Bᵀ + c) − y, for its W update as well."""
    torch.manual_seed(0)
    model = ft.models.LocalMixer(1, 8, 5, num_blocks=1, num_patches=2, channels=8, groups=2)
    x, y = torch.randn(6, 1, 8, 8), torch.randint(0, 5, (6,))
    rule = ft.make_rule("lg_fa", model, seed=1, released_heads=released)
    model.zero_grad()
    rule.step(x, y)
    rule.step(x, y)  # routed through the layers' own forward (the first pass checked them)
    assert rule._mode.direct
    with torch.no_grad():
        xbar = model.blocks[0](model.patchify(x)).mean(1)  # what head 0 reads
        head, B = model.heads[0], rule.feedback["heads.0.weight"]
        logits = xbar @ (B if released else head.weight).T + head.bias
        e = (logits.softmax(-1) - F.one_hot(y, 5)) / len(y)  # mean cross-entropy's error
    torch.testing.assert_close(head.weight.grad, e.T @ xbar, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(head.bias.grad, e.sum(0), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="released_heads"):
        ft.make_rule("lg_fa", model, released_heads="yes")
