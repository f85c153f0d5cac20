"""Layer-wise feedback rules (fa, usf, frsf, brsf, adafa, kp) against hand-derived maths.

The oracle is a 2-hidden-layer tanh MLP whose backward pass is written out with
explicit matrices: δ_l = (δ_{l+1} B_{l+1}) ⊙ f'(a_l), ∇W_l = δ_lᵀ h_{l-1}.
"""
import copy
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fa_tutor as ft
from fa_tutor.rules.base import rule_generator_seed
from fa_tutor.rules.feedback import FeedbackLinear

LAYERWISE = ["fa", "usf", "frsf", "brsf", "adafa", "kp"]
NAMES = ["layers.0.weight", "layers.1.weight", "layers.2.weight"]
TOL = dict(rtol=1e-10, atol=1e-12)


def mlp(seed: int = 0, widths=(5, [7, 6], 4)) -> nn.Module:
    torch.manual_seed(seed)
    return ft.models.MLP(*widths, activation="tanh").double()


def batch(n: int = 8, d: int = 5, k: int = 4, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    return x, torch.randint(0, k, (n,), generator=g)


def oracle(model: nn.Module, x, y, B: dict) -> dict:
    """Hand-written FA backward of the tanh MLP, with feedback B[name] for layers 2, 3."""
    (W1, b1), (W2, b2), (W3, b3) = [(l.weight.detach(), l.bias.detach())
                                    for l in model.layers]
    a1 = x @ W1.T + b1
    h1 = torch.tanh(a1)
    a2 = h1 @ W2.T + b2
    h2 = torch.tanh(a2)
    logits = h2 @ W3.T + b3
    # e = dL/dlogits of the mean cross-entropy
    e = (torch.softmax(logits, 1) - F.one_hot(y, logits.shape[1])) / x.shape[0]
    d2 = (e @ B[NAMES[2]]) * (1 - h2**2)  # δ_2 = (δ_3 B_3) ⊙ f'(a_2)
    d1 = (d2 @ B[NAMES[1]]) * (1 - h1**2)  # δ_1 = (δ_2 B_2) ⊙ f'(a_1)
    return {
        "layers.0.weight": d1.T @ x, "layers.0.bias": d1.sum(0),
        "layers.1.weight": d2.T @ h1, "layers.1.bias": d2.sum(0),
        "layers.2.weight": e.T @ h2, "layers.2.bias": e.sum(0),
    }


def grads(model: nn.Module) -> dict:
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def assert_grads(model: nn.Module, expected: dict) -> None:
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, expected[n], **TOL, msg=n)


def xavier_bound(W: torch.Tensor) -> float:
    fan_out, fan_in = W.shape[0], W.shape[1]
    return math.sqrt(3) * math.sqrt(2 / (fan_in + fan_out))  # √3 · Xavier std


def cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a.flatten() @ b.flatten() / (a.norm() * b.norm()))


# -- identities: B = W gives backprop --------------------------------------------------
@pytest.mark.parametrize("arch", ["mlp", "lenet", "resnet18"])
def test_fa_with_B_equal_W_is_backprop(arch):
    torch.manual_seed(0)
    if arch == "mlp":
        model, (x, y) = mlp(), batch()
    elif arch == "lenet":
        model = ft.models.LeNet(5).double()
        x, y = torch.randn(2, 3, 20, 20, dtype=torch.float64), torch.tensor([0, 4])
    else:  # float32 (11 M weights; float64 convolutions are slow on CPU), BN in train mode
        model = ft.models.resnet18(5).train()
        x, y = torch.randn(2, 3, 8, 8), torch.tensor([1, 3])
    ft.make_rule("bp", model).step(x, y)
    expected = grads(model)
    rule = ft.make_rule("fa", model, seed=0)
    weights = {f"{n}.weight" for n, m in model.named_modules()
               if isinstance(m, (nn.Linear, nn.Conv2d))}
    assert set(rule.feedback) == weights  # every weight layer is converted
    rule.step(x, y)  # random B: the first layer's gradient is not backprop's
    first = next(iter(rule.feedback))
    diff = model.get_parameter(first).grad - expected[first]
    assert diff.norm() > 0.1 * expected[first].norm()
    with torch.no_grad():
        for name, W in model.named_parameters():
            if name in rule.feedback:
                rule.feedback[name].copy_(W)
    rule.step(x, y)
    tol = dict(rtol=1e-9, atol=1e-12) if x.dtype == torch.float64 else dict(rtol=1e-5, atol=1e-7)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, expected[n], **tol, msg=n)


def test_adafa_first_step_is_backprop_then_fixed():
    model, (x, y) = mlp(), batch()
    ft.make_rule("bp", model).step(x, y)
    expected = grads(model)
    rule = ft.make_rule("adafa", model)
    rule.step(x, y)
    assert_grads(model, expected)
    W0 = {k: B.clone() for k, B in rule.feedback.items()}
    torch.optim.SGD(model.parameters(), lr=0.5).step()
    rule.step(x, y)
    for k, B in rule.feedback.items():
        assert torch.equal(B, W0[k])  # fixed at W(0), not following W
    assert_grads(model, oracle(model, x, y, W0))


# -- the hand-derived oracle, rule by rule ---------------------------------------------
def test_fa_oracle_and_xavier_draw():
    model, (x, y) = mlp(), batch()
    rule = ft.make_rule("fa", model, seed=3)
    g = torch.Generator().manual_seed(rule_generator_seed(3))  # the rule draws B_l in layer order from its seed
    for name in NAMES:
        W = model.get_parameter(name)
        a = xavier_bound(W)
        expected = torch.empty(W.shape, dtype=W.dtype).uniform_(-a, a, generator=g)
        torch.testing.assert_close(rule.feedback[name], expected, rtol=0, atol=0)
    rule.step(x, y)
    assert_grads(model, oracle(model, x, y, rule.feedback))
    # mutation check: the oracle with B := W (backprop) is clearly different
    bp = oracle(model, x, y, dict(model.named_parameters()))
    rel = (bp[NAMES[0]] - model.layers[0].weight.grad).norm() / bp[NAMES[0]].norm()
    assert rel > 0.3
    # the output layer's own update is the exact gradient
    torch.testing.assert_close(model.layers[2].weight.grad, bp[NAMES[2]], **TOL)


@pytest.mark.parametrize("scale", [True, False])
def test_usf_oracle(scale):
    model, (x, y) = mlp(), batch()
    rule = ft.make_rule("usf", model, scale=scale)
    B = {}
    for name in NAMES:
        W = model.get_parameter(name).detach()
        c = math.sqrt(2 / (W.shape[0] + W.shape[1])) if scale else 1.0
        B[name] = c * torch.sign(W)
    rule.step(x, y)
    assert_grads(model, oracle(model, x, y, B))
    for name in NAMES:
        torch.testing.assert_close(rule.feedback[name], B[name], rtol=0, atol=0)
    # mutation check: dropping the sign (B := W) changes the hidden gradients
    bp = oracle(model, x, y, dict(model.named_parameters()))
    assert (bp[NAMES[0]] - model.layers[0].weight.grad).norm() > 0.1 * bp[NAMES[0]].norm()


def test_frsf_oracle_reproduces_fixed_magnitudes():
    model, (x, y) = mlp(), batch()
    rule = ft.make_rule("frsf", model, seed=5)
    g = torch.Generator().manual_seed(rule_generator_seed(5))
    M = {}
    for name in NAMES:
        W = model.get_parameter(name)
        a = xavier_bound(W)
        M[name] = torch.empty(W.shape, dtype=W.dtype).uniform_(-a, a, generator=g).abs()
    for _ in range(2):  # the magnitudes stay, the signs follow W
        B = {n: M[n] * torch.sign(model.get_parameter(n).detach()) for n in NAMES}
        rule.step(x, y)
        assert_grads(model, oracle(model, x, y, B))
        with torch.no_grad():
            model.layers[2].weight.neg_()


def test_brsf_oracle_redraws_every_step():
    """|R_l| ~ U(0, √3·c_l) from the rule's generator: every layer at construction, then in
    every step each layer whose B carries an error, in forward order (not the input layer,
    whose B the forward pass never uses); B = |R_l| ⊙ sign(W_l), read live."""
    model, (x, y) = mlp(), batch()
    rule = ft.make_rule("brsf", model, seed=7)
    before = {k: B.clone() for k, B in rule.feedback.items()}
    g = torch.Generator().manual_seed(rule_generator_seed(7))

    def draw(name: str) -> torch.Tensor:
        W = model.get_parameter(name)
        return torch.empty(W.shape, dtype=W.dtype).uniform_(0, xavier_bound(W), generator=g)

    M = {n: draw(n) for n in NAMES}  # construction
    for step in range(3):
        for n in NAMES[1:]:
            M[n] = draw(n)
        B = {n: M[n] * torch.sign(model.get_parameter(n).detach()) for n in NAMES}
        rule.step(x, y)
        assert_grads(model, oracle(model, x, y, B))
        for n in NAMES:
            torch.testing.assert_close(rule.feedback[n], B[n], rtol=0, atol=0)
        with torch.no_grad():  # W moves: the signs of every B follow, the input layer's too
            model.layers[2].weight.neg_()
            model.layers[0].weight.neg_()
    for n in NAMES:
        assert not torch.equal(before[n], rule.feedback[n])


def test_kp_oracle_and_feedback_grad():
    model, (x, y) = mlp(), batch()
    rule = ft.make_rule("kp", model, seed=2)
    B0 = {k: B.detach().clone() for k, B in rule.feedback.items()}
    assert list(rule.parameters()) == list(rule.feedback.values())
    assert all(B.requires_grad and B.is_leaf for B in rule.parameters())
    rule.step(x, y)
    assert_grads(model, oracle(model, x, y, B0))
    for name in NAMES:
        assert torch.equal(rule.feedback[name].grad, model.get_parameter(name).grad)
        assert torch.equal(rule.feedback[name].detach(), B0[name])  # step never moves B


def test_kp_same_update_same_weight_decay():
    # With plain SGD, W − B ← (1 − ηλ)(W − B): the difference decays geometrically.
    torch.manual_seed(0)
    X = torch.randn(64, 20, dtype=torch.float64)
    Y = (X @ torch.randn(20, 10, dtype=torch.float64)).argmax(1)
    lr, wd, steps, name = 1.0, 0.3, 10, "layers.1.weight"
    result = {}
    for rule_name in ("kp", "fa"):
        model = mlp(1, (20, [64], 10))
        rule = ft.make_rule(rule_name, model, seed=0)
        W, B = model.get_parameter(name), rule.feedback[name]
        diff0 = (W - B).detach().norm()
        opt = torch.optim.SGD([*model.parameters(), *rule.parameters()], lr=lr,
                              weight_decay=wd)
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            rule.step(X, Y)
            opt.step()
        shrink = float((W - B).detach().norm() / diff0)
        result[rule_name] = (cos(W.detach(), B.detach()), shrink)
    assert result["kp"][1] == pytest.approx((1 - lr * wd) ** steps, rel=1e-9)
    assert result["kp"][0] > 0.95
    # FA's fixed B aligns only partly (W moves towards B, B never moves towards W)
    assert result["fa"][0] < 0.85 and result["fa"][1] > 0.5
    assert result["kp"][0] - result["fa"][0] > 0.15


def test_sign_feedback_cosine_bound():
    model, (x, y) = mlp(), batch()
    rule = ft.make_rule("usf", model)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(3):
        opt.zero_grad()
        rule.step(x, y)
        opt.step()
    rule.step(x, y)
    for name in NAMES:
        W, B = model.get_parameter(name).detach(), rule.feedback[name]
        n = W.numel()
        c = cos(W, B)
        assert c >= 1 / math.sqrt(n)
        closed_form = float(W.abs().sum() / (W.norm() * math.sqrt(n)))  # ‖W‖₁/(‖W‖₂√n)
        assert c == pytest.approx(closed_form, rel=1e-12)


# -- convolution and N-D inputs ---------------------------------------------------------
CONV_CASES = [
    dict(kernel_size=3),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=3, dilation=2, padding=2),
    dict(kernel_size=3, groups=2, padding=1),
    dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2)),
    dict(kernel_size=3, padding="same"),
    dict(kernel_size=4, padding="same", dilation=1),  # uneven: extra pad bottom/right
    dict(kernel_size=3, padding="valid"),
    dict(kernel_size=3, padding=1, padding_mode="circular"),
    dict(kernel_size=3, padding=2, padding_mode="reflect"),
    dict(kernel_size=3, padding=1, padding_mode="replicate"),
]


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("routed_by", ["mode", "module forward"])
@pytest.mark.parametrize("kw", CONV_CASES,
                         ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_conv_input_grad_uses_B(kw, routed_by):
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, **kw).double()
    rule = ft.make_rule("fa", nn.Sequential(conv), seed=1)
    B = rule.feedback["0.weight"]
    x = torch.randn(2, 4, 9, 8, dtype=torch.float64, requires_grad=True)
    if routed_by == "module forward":  # a first pass checks the layer; later ones skip the mode
        rule.forward(x)
        assert rule._mode.direct
    out = rule.forward(x)
    plain = conv(x)
    torch.testing.assert_close(out, plain, rtol=1e-12, atol=1e-12)
    delta = torch.randn_like(out)
    gx, gW = torch.autograd.grad(out, (x, conv.weight), delta)
    # oracle: backprop through the same module with its weight replaced by B
    with_B = torch.func.functional_call(conv, {"weight": B, "bias": conv.bias}, (x,))
    gx_ref, = torch.autograd.grad(with_B, x, delta)
    torch.testing.assert_close(gx, gx_ref, **TOL)
    gx_bp, gW_bp = torch.autograd.grad(plain, (x, conv.weight), delta)
    torch.testing.assert_close(gW, gW_bp, **TOL)  # the weight gradient is exact
    if not isinstance(conv.padding, str) and conv.padding_mode == "zeros":
        ref = torch.nn.grad.conv2d_input(x.shape, B, delta, conv.stride, conv.padding,
                                         conv.dilation, conv.groups)
        torch.testing.assert_close(gx, ref, **TOL)
    assert (gx - gx_bp).abs().max() > 1e-3  # mutation check: not backprop's input gradient


# -- routing: the mode on the first pass, the layers' own forward after ------------------
class Probe(nn.Module):
    """Records, on every call, how many torch-function modes are active and whether the
    watched module's ``forward`` is set on the instance (the rule's direct routing)."""

    def __init__(self, watched: nn.Module, fail_on_call: int | None = None):
        super().__init__()
        self.watched, self.calls, self.fail_on_call = [watched], [], fail_on_call

    def forward(self, x):
        self.calls.append((torch._C._len_torch_function_stack(),
                           "forward" in vars(self.watched[0])))
        if len(self.calls) == self.fail_on_call:
            raise RuntimeError("the probe fails on purpose")
        return x


def probed_mlp(fail_on_call: int | None = None) -> nn.Sequential:
    torch.manual_seed(0)
    hidden = nn.Linear(7, 6)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), hidden, nn.Tanh(), nn.Linear(6, 4))
    model.insert(3, Probe(hidden, fail_on_call))
    return model.double()


@pytest.mark.parametrize("name", LAYERWISE)
def test_later_passes_route_through_the_layers_own_forward_with_the_same_gradients(name):
    model, (x, y) = probed_mlp(), batch()
    probe, hidden = model[3], model[2]
    rule = ft.make_rule(name, model, seed=4)
    rule.step(x, y)
    first = grads(model)
    assert rule._mode.direct  # the first pass saw every layer called by its own module only
    rule.step(x, y)  # same weights, same batch
    # first pass: under the mode; second: no mode, the layer's forward set for the pass only
    assert probe.calls == [(1, True), (0, True)]
    assert not any("forward" in vars(m) for m in model)
    # the same B (weights unchanged): the same gradients, bit for bit; brSF draws fresh
    # magnitudes every step, which changes the errors below the output layer
    redrawn = {"0.weight", "0.bias", "2.weight", "2.bias"} if name == "brsf" else set()
    for n, p in model.named_parameters():
        assert torch.equal(p.grad, first[n]) != (n in redrawn), n


def test_a_deep_copy_of_a_rule_routes_its_own_model():
    model, (x, y) = mlp(), batch()
    rule = ft.make_rule("fa", model, seed=1)
    rule.step(x, y)  # from now on the rule routes through the layers' own forward
    twin = copy.deepcopy(rule)
    with torch.no_grad():
        for p in twin.model.parameters():
            p.mul_(1.5)
    twin.step(x, y)
    assert_grads(twin.model, oracle(twin.model, x, y, twin.feedback))
    rule.step(x, y)  # and the original still routes its own
    assert_grads(model, oracle(model, x, y, rule.feedback))


def test_a_pass_that_fails_leaves_no_forward_on_the_layers():
    model, (x, y) = probed_mlp(fail_on_call=2), batch()
    rule = ft.make_rule("fa", model, seed=0)
    rule.step(x, y)
    with pytest.raises(RuntimeError, match="on purpose"):
        rule.step(x, y)
    assert not any("forward" in vars(m) for m in model)
    model[3].fail_on_call = None
    rule.step(x, y)  # and the rule goes on
    assert model[3].calls[-1] == (0, True)


class TiedHidden(nn.Module):
    """The hidden layer's weight is used twice: by its module and by ``F.linear`` directly."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.inp, self.hidden, self.out = nn.Linear(5, 7), nn.Linear(7, 7), nn.Linear(7, 4)

    def forward(self, x):
        h = torch.tanh(self.inp(x))
        return self.out(torch.tanh(self.hidden(h)) + torch.tanh(F.linear(h, self.hidden.weight)))


def test_a_weight_also_used_outside_its_module_keeps_every_pass_under_the_mode():
    model, (x, y) = TiedHidden().double(), batch()
    rule = ft.make_rule("fa", model, seed=0)
    B = {n: rule.feedback[n] for n in ("hidden.weight", "out.weight")}
    for _ in range(2):
        rule.step(x, y)
        assert not rule._mode.direct and rule._mode.foreign == {"hidden"}
        # oracle: both uses of the hidden weight send their error down through its B
        h = torch.tanh(model.inp(x))
        W, b = model.hidden.weight, model.hidden.bias
        z = (torch.tanh(FeedbackLinear.apply(h, W, b, B["hidden.weight"]))
             + torch.tanh(FeedbackLinear.apply(h, W, None, B["hidden.weight"])))
        out = FeedbackLinear.apply(z, model.out.weight, model.out.bias, B["out.weight"])
        expected = torch.autograd.grad(F.cross_entropy(out, y), model.inp.weight)[0]
        torch.testing.assert_close(model.inp.weight.grad, expected, **TOL)


def test_a_forward_the_user_set_on_a_layer_is_kept_and_routed_by_the_mode():
    model, (x, y) = probed_mlp(), batch()
    hidden = model[2]
    users = lambda h: nn.Linear.forward(hidden, h)  # noqa: E731  e.g. a patch of their own
    hidden.forward = users
    rule = ft.make_rule("fa", model, seed=0)
    rule.step(x, y)
    rule.step(x, y)
    assert hidden.forward is users and not rule._mode.direct
    assert [stack for stack, _ in model[3].calls] == [1, 1]  # every pass under the mode
    z = FeedbackLinear.apply(torch.tanh(model[0](x)), hidden.weight, hidden.bias,
                             rule.feedback["2.weight"])
    out = FeedbackLinear.apply(torch.tanh(z), model[5].weight, model[5].bias,
                               rule.feedback["5.weight"])
    expected = torch.autograd.grad(F.cross_entropy(out, y), model[0].weight)[0]
    torch.testing.assert_close(model[0].weight.grad, expected, **TOL)  # FA, through B


def test_nd_input_linear():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    rule = ft.make_rule("fa", model, seed=0)
    # (batch, tokens, features)
    x = torch.randn(2, 4, 6, dtype=torch.float64, requires_grad=True)
    out = rule.forward(x)
    torch.testing.assert_close(out, model(x), rtol=0, atol=0)
    delta = torch.randn_like(out)
    gx, gW1 = torch.autograd.grad(out, (x, model[0].weight), delta)
    h = torch.tanh(x.detach() @ model[0].weight.detach().T + model[0].bias.detach())
    d1 = (delta @ rule.feedback["2.weight"]) * (1 - h**2)  # (2, 4, 5)
    torch.testing.assert_close(gx, d1 @ rule.feedback["0.weight"], **TOL)
    torch.testing.assert_close(gW1, d1.reshape(-1, 5).T @ x.detach().reshape(-1, 6), **TOL)


# -- torch.func ------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["fa", "usf", "kp"])
def test_jvp_and_vmap(name):
    model, (x, _) = mlp(), batch()
    rule = ft.make_rule(name, model, seed=0)
    v = torch.randn_like(x)
    out, tangent = torch.func.jvp(rule.forward, (x,), (v,))
    out_ref, tangent_ref = torch.func.jvp(model, (x,), (v,))
    torch.testing.assert_close(out, out_ref, **TOL)
    torch.testing.assert_close(tangent, tangent_ref, **TOL)
    xs = torch.randn(3, 4, 5, dtype=torch.float64)
    torch.testing.assert_close(torch.func.vmap(rule.forward)(xs), model(xs), **TOL)
    # per-example input gradient of sum(logits) through the feedback path, under vmap
    per_example = torch.func.vmap(torch.func.grad(lambda z: rule.forward(z).sum()))(x)
    W1, b1 = model.layers[0].weight.detach(), model.layers[0].bias.detach()
    W2, b2 = model.layers[1].weight.detach(), model.layers[1].bias.detach()
    h1 = torch.tanh(x @ W1.T + b1)
    h2 = torch.tanh(h1 @ W2.T + b2)
    B = {k: t.detach() for k, t in rule.feedback.items()}
    d2 = (torch.ones(len(x), 4, dtype=x.dtype) @ B[NAMES[2]]) * (1 - h2**2)
    d1 = (d2 @ B[NAMES[1]]) * (1 - h1**2)
    torch.testing.assert_close(per_example, d1 @ B[NAMES[0]], **TOL)


# -- state: overwrite, seeds, live tensors, recompute -------------------------------------
@pytest.mark.parametrize("name", LAYERWISE)
def test_step_overwrites_and_seed_reproducible(name):
    model, (x, y) = mlp(), batch()
    twin = copy.deepcopy(model)
    rule, rule_twin = ft.make_rule(name, model, seed=11), ft.make_rule(name, twin, seed=11)
    other = ft.make_rule(name, copy.deepcopy(model), seed=12)
    for _ in range(2):
        rule.step(x, y)
        rule_twin.step(x, y)
    for (n, p), q in zip(model.named_parameters(), twin.parameters()):
        assert torch.equal(p.grad, q.grad), n
    for k in rule.feedback:
        assert torch.equal(rule.feedback[k], rule_twin.feedback[k])
    if name in ("fa", "frsf", "brsf", "kp"):  # the random ones
        assert not torch.equal(rule.feedback[NAMES[1]], other.feedback[NAMES[1]])
    if name != "brsf":  # same B twice ⇒ same grads, not doubled
        first = grads(model)
        rule.step(x, y)
        for n, p in model.named_parameters():
            assert torch.equal(p.grad, first[n]), n


@pytest.mark.parametrize("name", ["fa", "kp", "dfa", "fg_a"])
def test_unseeded_rule_leaves_the_global_generator_alone(name):
    """seed=None draws the rule's seed without reseeding torch's global generator."""
    torch.manual_seed(5)
    expected = torch.rand(3)
    model = mlp()
    torch.manual_seed(5)
    rules = [ft.make_rule(name, model) for _ in range(2)]
    assert torch.equal(torch.rand(3), expected)
    assert rules[0].seed != rules[1].seed  # still a fresh seed each time


@pytest.mark.parametrize("name", LAYERWISE)
def test_frozen_layer_gets_no_update_and_kp_leaves_its_B_alone(name):
    model, (x, y) = mlp(), batch()
    model.layers[0].weight.requires_grad_(False)
    rule = ft.make_rule(name, model, seed=0)
    rule.step(x, y)
    assert model.layers[0].weight.grad is None
    assert model.layers[1].weight.grad.abs().max() > 1e-4
    if name == "kp":
        assert rule.feedback[NAMES[0]].grad is None
        assert torch.equal(rule.feedback[NAMES[1]].grad, model.layers[1].weight.grad)


@pytest.mark.parametrize("name", ["fa", "adafa", "kp"])
def test_feedback_is_live(name):
    model, (x, y) = mlp(), batch()
    rule = ft.make_rule(name, model, seed=0)
    with torch.no_grad():
        rule.feedback[NAMES[2]].zero_()  # no error reaches the hidden layers
    rule.step(x, y)
    assert (model.layers[0].weight.grad == 0).all()
    assert (model.layers[1].weight.grad == 0).all()
    assert model.layers[2].weight.grad.abs().max() > 1e-4
    with torch.no_grad():
        rule.feedback[NAMES[2]].normal_()
    rule.step(x, y)
    B = {k: B.detach() for k, B in rule.feedback.items()}
    assert_grads(model, oracle(model, x, y, B))


@pytest.mark.parametrize("name", ["usf", "frsf", "brsf"])
def test_sign_rules_follow_W_in_place(name):
    model, (x, y) = mlp(), batch()
    rule = ft.make_rule(name, model, seed=0)
    B = rule.feedback[NAMES[2]]
    ptr = B.data_ptr()
    with torch.no_grad():
        model.layers[2].weight.neg_()
    rule.step(x, y)
    assert rule.feedback[NAMES[2]] is B and B.data_ptr() == ptr  # same tensor, in place
    assert torch.equal(torch.sign(B), torch.sign(model.layers[2].weight.detach()))
    assert_grads(model, oracle(model, x, y, rule.feedback))


def test_sign_forward_follows_W_and_keeps_saved_graphs_valid():
    model, (x, _) = mlp(), batch()
    rule = ft.make_rule("usf", model, scale=False)
    out1, out2 = rule.forward(x), rule.forward(x)  # W unchanged: B is not rewritten
    (out1.sum() + out2.sum()).backward()  # so the first graph's saved B is still valid
    with torch.no_grad():
        model.layers[1].weight.mul_(-1)
    rule.forward(x)  # W changed: a bare forward re-signs B too
    assert torch.equal(rule.feedback[NAMES[1]], torch.sign(model.layers[1].weight.detach()))


# -- errors and warnings ----------------------------------------------------------------
@pytest.mark.parametrize("name", ["bp", "fa", "dfa", "fg_a"])
def test_batch_that_does_not_fit_the_model_names_the_shapes(name):
    with pytest.raises(ft.rules.BatchShapeError, match=r"x of shape \(5, 6\), y of shape \(5,\)\) does not fit"):
        ft.make_rule(name, ft.models.MLP(4, [8], 3), seed=0).step(torch.randn(5, 6),
                                                                   torch.zeros(5).long())
    lenet = ft.models.LeNet(10, in_channels=3)
    with pytest.raises(ValueError, match=r"x of shape \(2, 1, 32, 32\)"):
        ft.make_rule(name, lenet, seed=0, **({"input_shape": (3, 32, 32)} if name == "dfa" else {})
                     ).step(torch.randn(2, 1, 32, 32), torch.zeros(2).long())
    with pytest.raises(ft.rules.BatchShapeError, match=r"y of shape \(5, 1\)"):  # y, not x
        ft.make_rule(name, ft.models.MLP(4, [8], 3), seed=0).step(torch.randn(5, 4),
                                                                   torch.zeros(5, 1).long())


def test_unknown_rule_lists_choices():
    choices = r"Unknown rule 'fx'; choose one of: .*adafa.*brsf.*fa.*frsf.*kp.*usf"
    with pytest.raises(ValueError, match=choices):
        ft.make_rule("fx", mlp())


@pytest.mark.parametrize("bad, match", [
    (nn.Conv1d(3, 4, 3), r"'0'.*Conv1d"),
    (nn.Embedding(10, 4), r"'0'.*Embedding"),
])
def test_unsupported_layer(bad, match):
    model = nn.Sequential(bad, nn.Flatten(), nn.LazyLinear(2))
    with pytest.raises(ValueError, match=match):
        ft.make_rule("fa", model)
    with pytest.warns(UserWarning, match=match):
        model = nn.Sequential(bad, nn.Flatten(), nn.Linear(8, 2))
        ft.make_rule("fa", model, unsupported="warn")


def test_multihead_attention_out_proj_is_reported():
    class Attn(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
            self.head = nn.Linear(8, 2)

        def forward(self, x):
            return self.head(self.attn(x, x, x)[0].mean(1))

    model = Attn()
    with pytest.raises(ValueError, match="'attn'"):
        ft.make_rule("fa", model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ft.make_rule("fa", model, unsupported="warn")
    messages = " ".join(str(w.message) for w in caught)
    assert "'attn' (MultiheadAttention)" in messages and "'attn.out_proj'" in messages
    model.attn.in_proj_weight.requires_grad_(False)
    model.attn.in_proj_bias.requires_grad_(False)
    with pytest.raises(ValueError, match="attn.out_proj"):  # never silently BP
        ft.make_rule("fa", model)


@pytest.mark.parametrize("options, match", [
    ({"scale": True}, r"unknown option.*scale.*unsupported"),
    ({"unsupported": "ignore"}, r"'ignore'.*'error' or 'warn'"),
])
def test_bad_options(options, match):
    with pytest.raises(ValueError, match=match):
        ft.make_rule("fa", mlp(), **options)


def test_usf_scale_must_be_bool():
    with pytest.raises(ValueError, match="scale='yes'"):
        ft.make_rule("usf", mlp(), scale="yes")


@pytest.mark.parametrize("name", LAYERWISE)
def test_nan_loss_raises(name):
    model, (x, y) = mlp(), batch()
    x[0, 0] = float("nan")
    with pytest.raises(ft.NonFiniteLossError, match="not finite"):
        ft.make_rule(name, model, seed=0).step(x, y)


def test_repr_and_devices():
    model = mlp()
    assert repr(ft.make_rule("usf", model, seed=4)) == (
        "UniformSignFeedback(name='usf', seed=4, unsupported='error', scale=True)")
    for name in LAYERWISE:
        rule = ft.make_rule(name, model, seed=0)
        for k, B in rule.feedback.items():
            W = model.get_parameter(k)
            assert B.shape == W.shape and B.dtype == W.dtype and B.device == W.device
        assert (list(rule.parameters()) != []) == (name == "kp")


def test_moved_model_gets_clear_error():
    model, (x, y) = mlp(), batch()
    rule = ft.make_rule("fa", model, seed=0)
    model.float()
    with pytest.raises(ValueError, match="build the rule after moving the model"):
        rule.step(x.float(), y)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", LAYERWISE)
def test_cuda(name):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Flatten(), nn.Linear(4 * 8 * 8, 5)).double().cuda()
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64, device="cuda")
    y = torch.tensor([0, 1, 2, 3], device="cuda")
    rule = ft.make_rule(name, model, seed=0)
    for B in rule.feedback.values():
        assert B.is_cuda
    rule.step(x, y)
    rule.step(x, y)
    assert all(p.grad.is_cuda for p in model.parameters())
    with torch.no_grad():
        for k, B in rule.feedback.items():
            B.copy_(model.get_parameter(k))
    if name in ("fa", "adafa", "kp"):  # fixed B: B = W gives backprop on the GPU too
        rule.step(x, y)
        fa_grads = grads(model)
        ft.make_rule("bp", model).step(x, y)
        for n, p in model.named_parameters():
            torch.testing.assert_close(fa_grads[n], p.grad, rtol=1e-9, atol=1e-12)


def test_the_input_layers_feedback_is_used_and_written_only_when_an_error_goes_below_it():
    """The input layer sends no error below it (x takes no gradient): the step runs its
    plain op and leaves its B alone; reading rule.feedback writes it; an x that takes a
    gradient gets it through B_0 (δ_1 B_0), as FA defines it."""
    model, (x, y) = mlp(), batch()
    rule = ft.make_rule("usf", model, scale=False)
    B0 = rule.feedback[NAMES[0]]
    with torch.no_grad():
        model.layers[0].weight.neg_()
    written = B0._version
    rule.step(x, y)
    assert B0._version == written  # not rewritten: the step never used it
    W0 = model.layers[0].weight.detach()
    assert torch.equal(rule.feedback[NAMES[0]], torch.sign(W0))  # a read writes it
    B = {n: torch.sign(model.get_parameter(n).detach()) for n in NAMES}
    assert_grads(model, oracle(model, x, y, B))
    xg = x.clone().requires_grad_(True)
    (W1, b1), (W2, b2), (W3, b3) = [(l.weight.detach(), l.bias.detach()) for l in model.layers]
    h1 = torch.tanh(x @ W1.T + b1)
    h2 = torch.tanh(h1 @ W2.T + b2)
    e = (torch.softmax(h2 @ W3.T + b3, 1) - F.one_hot(y, 4)) / len(x)
    d1 = (((e @ B[NAMES[2]]) * (1 - h2**2)) @ B[NAMES[1]]) * (1 - h1**2)
    (gx,) = torch.autograd.grad(rule.loss_fn(rule(xg), y), xg)
    torch.testing.assert_close(gx, d1 @ B[NAMES[0]], **TOL)


@pytest.mark.parametrize("name", ["usf", "frsf", "brsf"])
def test_a_step_uses_the_signs_of_weights_replaced_out_of_place(name):
    """B is rewritten from W at every step even when W changed without an in-place op
    (``p.data = ...``), which torch's version counter may not see."""
    model, (x, y) = mlp(), batch()
    rule = ft.make_rule(name, model, seed=3)
    rule.step(x, y)
    with torch.no_grad():
        model.layers[2].weight.data = -model.layers[2].weight.data.clone()
    rule.step(x, y)
    M = rule.magnitude[NAMES[2]]
    assert torch.equal(rule._feedback[NAMES[2]], M * torch.sign(model.layers[2].weight.detach()))
