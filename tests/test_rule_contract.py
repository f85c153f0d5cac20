"""The public contract of every registered rule, over ``ft.available_rules()`` × the models it takes.

For each rule and each model it accepts (a small MLP, a small LeNet, a small
LocalMixer for the local-loss rules), ``rule.step(x, y)``:

* writes a finite ``.grad`` of the parameter's shape into every trainable parameter,
  overwriting what was there, and returns the detached batch loss;
* is reproducible: the same seed gives the same update, bit for bit;
* raises ``BatchShapeError`` for a batch that does not fit the model;
* raises a ``ValueError`` naming the layer when a converted weight is used outside
  ``F.linear``/``F.conv2d`` (``h @ layer.weight.T``): never a silent backprop fallback;
* exposes its learned feedback (and only that) in ``rule.parameters()``, with a ``.grad``.

A new rule enters every test here by its ``@register`` line alone.
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fa_tutor as ft
from fa_tutor.rules import BatchShapeError, rule_spec

#: the rules the public contract names (CONTRACT.md); the registry may hold more
CONTRACT_RULES = {"bp", "fa", "usf", "frsf", "brsf", "adafa", "kp", "dfa", "dkp", "fdfa",
                  "fg_w", "fg_a", "lg_bp", "lg_fa", "lg_fg_w", "lg_fg_a"}
#: rules that convert no layer (they differentiate through any op), so a functionally
#: used weight is legitimate for them: backprop and the weight-perturbed forward
#: gradient (``torch.func.functional_call`` perturbs every parameter wherever it is used)
CONVERT_NOTHING = {"bp", "lg_bp", "fg_w"}


def mlp() -> nn.Module:
    return ft.models.MLP(6, [8, 7], 3)


def lenet() -> nn.Module:
    return ft.models.LeNet(3, in_channels=1)


def mixer() -> nn.Module:
    return ft.models.LocalMixer(1, 4, 3, num_blocks=2, num_patches=2, channels=6, groups=2)


#: model name -> (constructor, one example's shape, the hidden weight layer to misuse)
MODELS = {
    "mlp": (mlp, (6,), "layers.1"),
    "lenet": (lenet, (1, 18, 18), "conv2"),
    "mixer": (mixer, (1, 4, 4), "blocks.1.dense"),
}


def models_for(name: str) -> list[str]:
    """The models rule ``name`` accepts: the local-loss protocol needs the LocalMixer."""
    spec = rule_spec(name)
    if spec.needs_local_losses:
        return ["mixer"]
    if spec.family in ("backprop", "forward gradient"):
        return ["mlp", "lenet", "mixer"]
    return ["mlp", "lenet"]


CASES = [pytest.param(name, model, id=f"{name}-{model}")
         for name in ft.available_rules() for model in models_for(name)]


def build(model_name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return MODELS[model_name][0]()


def batch(model_name: str, n: int = 5, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *MODELS[model_name][1], generator=g)
    return x, torch.randint(0, 3, (n,), generator=g)


def step_grads(rule, model: nn.Module, x, y) -> tuple[torch.Tensor, dict, dict]:
    loss = rule.step(x, y)
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    feedback = {k: None if B.grad is None else B.grad.clone()
                for k, B in rule.feedback.items()}
    return loss, grads, feedback


def test_the_registry_holds_every_contract_rule():
    names = ft.available_rules()
    assert names == sorted(names)
    missing = CONTRACT_RULES - set(names)
    assert not missing, f"rules missing from the registry: {sorted(missing)}"


def test_every_rule_has_the_label_the_papers_use():
    labels = {name: ft.rules.rule_spec(name).label for name in ft.available_rules()}
    assert {k: labels[k] for k in ("bp", "fa", "adafa", "usf", "frsf", "brsf", "kp", "dfa", "dkp",
                                   "fg_w", "fg_a", "lg_fg_a", "fdfa")} == {
        "bp": "BP", "fa": "FA", "adafa": "adaFA", "usf": "uSF", "frsf": "frSF", "brsf": "brSF",
        "kp": "KP", "dfa": "DFA", "dkp": "DKP", "fg_w": "FG-W", "fg_a": "FG-A",
        "lg_fg_a": "LG-FG-A", "fdfa": "FDFA"}
    assert len(set(labels.values())) == len(labels)  # one rule per label


@pytest.mark.parametrize("name,model_name", CASES)
def test_step_overwrites_finite_grads_and_returns_the_loss(name, model_name):
    model = build(model_name)
    x, y = batch(model_name)
    rule = ft.make_rule(name, model, seed=0)
    for p in model.parameters():
        p.grad = torch.full_like(p, float("nan"))  # step must overwrite, never accumulate
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss = rule.step(x, y)
    assert isinstance(loss, torch.Tensor) and loss.dim() == 0 and not loss.requires_grad
    with torch.no_grad():
        torch.testing.assert_close(loss, F.cross_entropy(model(x), y))
    for n, p in model.named_parameters():
        assert p.grad is not None and p.grad.shape == p.shape, n
        assert torch.isfinite(p.grad).all(), f"{name}: {n}.grad is not finite"
        assert torch.equal(p.detach(), weights[n]), f"{name} changed weight {n}"
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("name,model_name", CASES)
def test_same_seed_same_update(name, model_name):
    model_a, model_b = build(model_name), build(model_name)
    x, y = batch(model_name)
    rule_a = ft.make_rule(name, model_a, seed=5)
    rule_b = ft.make_rule(name, model_b, seed=5)
    for _ in range(2):  # the second step too: the rules' state moves in step
        loss_a, grads_a, fb_a = step_grads(rule_a, model_a, x, y)
        loss_b, grads_b, fb_b = step_grads(rule_b, model_b, x, y)
        assert torch.equal(loss_a, loss_b)
        for n in grads_a:
            assert torch.equal(grads_a[n], grads_b[n]), f"{name}: {n} differs"
        assert fb_a.keys() == fb_b.keys()
        for k in fb_a:
            assert (fb_a[k] is None) == (fb_b[k] is None)
            assert fb_a[k] is None or torch.equal(fb_a[k], fb_b[k]), k
    for k, B in rule_a.feedback.items():
        assert torch.equal(B, rule_b.feedback[k]), k


@pytest.mark.parametrize("name,model_name", CASES)
def test_a_batch_that_does_not_fit_is_a_batch_shape_error(name, model_name):
    model = build(model_name)
    rule = ft.make_rule(name, model, seed=0)
    x, y = batch(model_name)
    bad = x[..., :-1]  # one feature (or one pixel column) short
    if model_name == "mixer":  # the LocalMixer checks its input itself, by name
        with pytest.raises(ValueError, match=r"LocalMixer expects images of shape"):
            rule.step(bad, y)
        return
    with pytest.raises(BatchShapeError, match=r"does not fit"):
        rule.step(bad, y)


def misuse(model: nn.Module, layer_name: str) -> None:
    """Make ``layer_name`` compute its output from its weight without F.linear/F.conv2d."""
    m = model.get_submodule(layer_name)
    if isinstance(m, nn.Linear):
        m.forward = lambda x: x @ m.weight.T + m.bias  # matmul: the rule cannot see it
    else:
        m.forward = lambda x: F.conv2d(x, m.weight * 1.0, m.bias, m.stride, m.padding,
                                       m.dilation, m.groups)  # a copy of W: not the layer's


@pytest.mark.parametrize("name,model_name", CASES)
def test_a_functionally_used_weight_is_a_clear_error(name, model_name):
    model = build(model_name)
    layer = MODELS[model_name][2]
    misuse(model, layer)
    x, y = batch(model_name)
    if name in CONVERT_NOTHING:  # they train any op exactly as their rule says
        ft.make_rule(name, model, seed=0).step(x, y)
        return
    with pytest.raises(ValueError, match=rf"{name}.*{layer}.*not called through"):
        rule = ft.make_rule(name, model, seed=0)
        rule.step(x, y)


@pytest.mark.parametrize("name", [n for n in ft.available_rules() if "mlp" in models_for(n)
                                  and n not in CONVERT_NOTHING])
def test_the_direct_rules_dry_run_reports_a_functional_weight_at_construction(name):
    model = build("mlp")
    misuse(model, "layers.1")
    if rule_spec(name).family == "direct feedback":  # the MLP's in_features: a dry run
        with pytest.raises(ValueError, match="layers.1"):
            ft.make_rule(name, model, seed=0)


@pytest.mark.parametrize("name", [n for n in ft.available_rules() if "mlp" in models_for(n)
                                  and n not in CONVERT_NOTHING])
def test_a_pass_without_gradients_does_not_count_as_the_check(name):
    torch.manual_seed(0)  # no input_shape anywhere: the direct rules make no dry run
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 7), nn.ReLU(),
                          nn.Linear(7, 3))
    misuse(model, "2")
    x, y = batch("mlp")
    rule = ft.make_rule(name, model, seed=0)
    with torch.no_grad():  # no graph: the check cannot be made here, so it is not passed
        rule(x)
    with pytest.raises(ValueError, match=r"\['2'\]"):
        rule.step(x, y)


@pytest.mark.parametrize("name,model_name", CASES)
def test_learned_feedback_is_in_rule_parameters(name, model_name):
    model = build(model_name)
    x, y = batch(model_name)
    rule = ft.make_rule(name, model, seed=0)
    rule.step(x, y)
    params = rule.parameters()
    if not rule_spec(name).learned_feedback:
        assert params == []
        return
    assert params, f"{name} learns its feedback, but rule.parameters() is empty"
    assert {id(p) for p in params} == {id(B) for B in rule.feedback.values()}
    for p in params:
        assert p.requires_grad or p.grad is not None
        assert p.grad is not None and torch.isfinite(p.grad).all()
    # the optimizer applies it: a step moves B
    before = [p.detach().clone() for p in params]
    torch.optim.SGD(params, lr=0.1).step()
    assert any(not torch.equal(b, p) for b, p in zip(before, params)) or all(
        p.grad.abs().sum() == 0 for p in params)


# -- options: one check, in make_rule, against the registry's defaults ------------------
@pytest.mark.parametrize("name", ft.available_rules())
def test_options_are_checked_against_the_declared_defaults(name):
    spec = rule_spec(name)
    model_name = models_for(name)[0]
    rule = ft.make_rule(name, build(model_name), seed=0, **spec.defaults)  # all declared
    assert rule.options == spec.defaults  # the rule runs with what the registry declares
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['nope'\]; valid options: "):
        ft.make_rule(name, build(model_name), nope=1)
    for key, default in spec.defaults.items():
        if key in spec.choices:
            bad, match = "nope", rf"{key}='nope'; choose '"
        elif isinstance(default, bool):
            bad, match = "yes", rf"{key}='yes'; choose True or False"
        elif isinstance(default, int):
            bad, match = 0, rf"{key}=0; choose a positive integer"
        else:
            continue  # a None default: the rule checks the value (input_shape)
        with pytest.raises(ValueError, match=match):
            ft.make_rule(name, build(model_name), **{key: bad})


@pytest.mark.cuda
@pytest.mark.parametrize("name,model_name", CASES)
def test_step_on_cuda_writes_cuda_grads(name, model_name):
    model = build(model_name).cuda()
    x, y = batch(model_name)
    rule = ft.make_rule(name, model, seed=0)
    loss = rule.step(x.cuda(), y.cuda())
    assert loss.is_cuda and torch.isfinite(loss)
    for n, p in model.named_parameters():
        assert p.grad is not None and p.grad.is_cuda and torch.isfinite(p.grad).all(), n
