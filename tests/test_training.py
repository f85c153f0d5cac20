"""The training loop, RunConfig validation, checkpoint/resume and the device helper."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

import fa_tutor as ft
from fa_tutor.data import load_dataset

DIGITS = load_dataset("digits")
CFG = ft.RunConfig(model="mlp", model_options={"hidden": [32]}, rule="bp", dataset="digits",
                   lr=0.1, momentum=0.9, epochs=4, batch_size=64, device="cpu", seed=1)


def test_bp_learns_digits() -> None:
    res = ft.train(CFG, data=DIGITS, progress=False)
    assert isinstance(res.history, pd.DataFrame) and list(res.history.epoch) == [1, 2, 3, 4]
    assert res.history.train_loss.iloc[-1] < 0.5 * res.history.train_loss.iloc[0]
    assert res.final["test_accuracy"] > 85.0


def test_same_seed_same_history() -> None:
    a = ft.train(CFG.replace(epochs=2), data=DIGITS, progress=False).history
    b = ft.train(CFG.replace(epochs=2), data=DIGITS, progress=False).history
    pd.testing.assert_frame_equal(a, b)


def test_resume_gives_the_uninterrupted_history(tmp_path: Path) -> None:
    full = ft.train(CFG, data=DIGITS, progress=False)
    ckpt = tmp_path / "run.pt"
    # an interrupted run: the same config, killed after epoch 2 (simulated by training 2 epochs
    # with a checkpoint, then rewriting its saved config to the full one)
    ft.train(CFG.replace(epochs=2), data=DIGITS, progress=False, checkpoint=ckpt)
    state = torch.load(ckpt, weights_only=False)
    state["config"] = CFG.to_dict()
    torch.save(state, ckpt)
    resumed = ft.train(CFG, data=DIGITS, progress=False, checkpoint=ckpt)
    pd.testing.assert_frame_equal(resumed.history, full.history)
    for p, q in zip(resumed.model.parameters(), full.model.parameters()):
        assert torch.equal(p, q)


def test_checkpoint_of_other_config_is_refused(tmp_path: Path) -> None:
    ckpt = tmp_path / "run.pt"
    ft.train(CFG.replace(epochs=1), data=DIGITS, progress=False, checkpoint=ckpt)
    with pytest.raises(ValueError, match="another config"):
        ft.train(CFG.replace(epochs=1, lr=0.5), data=DIGITS, progress=False, checkpoint=ckpt)


def test_config_overrides_are_checked() -> None:
    cfg = ft.RunConfig().with_overrides(["rule=fa", "epochs=3", "milestones=[1,2]", "lr=0.01"])
    assert (cfg.rule, cfg.epochs, cfg.milestones, cfg.lr) == ("fa", 3, (1, 2), 0.01)
    with pytest.raises(ValueError, match="Unknown config key 'epoch'"):
        ft.RunConfig().with_overrides(["epoch=3"])
    with pytest.raises(ValueError, match="Unknown config key"):
        ft.RunConfig.from_dict({"bogus": 1})


def test_bad_names_are_reported() -> None:
    with pytest.raises(ValueError, match="Unknown model 'mlpx'; choose one of: mlp"):
        ft.train(CFG.replace(model="mlpx"), data=DIGITS, progress=False)
    with pytest.raises(ValueError, match="Unknown optimizer 'sgdd'"):
        ft.train(CFG.replace(optimizer="sgdd"), data=DIGITS, progress=False)


def test_step_schedule_and_validation_selection() -> None:
    cfg = CFG.replace(schedule="step", milestones=(2,), gamma=0.5, val_fraction=0.2)
    res = ft.train(cfg, data=DIGITS, progress=False)
    assert res.history.lr.tolist() == [0.1, 0.1, 0.05, 0.05]
    best = res.history.val_accuracy.max()
    assert res.final["val_accuracy"] == best


def test_nan_loss_is_a_clear_error() -> None:
    model = ft.models.MLP(4, [3], 2)
    rule = ft.make_rule("bp", model)
    with pytest.raises(ft.NonFiniteLossError, match="not finite"):
        rule.step(torch.full((2, 4), float("nan")), torch.tensor([0, 1]))


def test_a_diverging_run_raises_with_the_history_before_it() -> None:
    cfg = CFG.replace(lr=1e30, epochs=4, batch_size=1024, val_fraction=0.2)
    with pytest.raises(ft.NonFiniteLossError) as info:
        ft.train(cfg, data=DIGITS, progress=False)
    err = info.value
    assert 1 <= err.epoch <= 4 and len(err.history) == err.epoch - 1
    assert (err.best is None) == (err.epoch == 1)


def test_device_helper(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ft.resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setenv("FA_TUTOR_DEVICE", "cpu")
    assert ft.resolve_device() == torch.device("cpu")
    with pytest.raises(ValueError, match="Unknown device 'tpu'"):
        ft.resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            ft.resolve_device("cuda")


def test_registry_errors() -> None:
    model = ft.models.MLP(4, [3], 2)
    with pytest.raises(ValueError, match="Unknown rule 'fx'; choose one of: .*bp"):
        ft.make_rule("fx", model)
    assert ft.available_rules() == sorted(ft.available_rules())
    for name in ("bp", "fa", "usf", "frsf", "brsf", "adafa", "kp", "dfa", "dkp", "fdfa",
                 "fg_w", "fg_a", "lg_bp", "lg_fa", "lg_fg_w", "lg_fg_a"):
        assert name in ft.available_rules(), name


def test_cli_help_and_rules(capsys: pytest.CaptureFixture) -> None:
    from fa_tutor.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert main(["rules"]) == 0
    assert "layer-wise feedback" in capsys.readouterr().out
    assert main(["bench", "run", "no-such-experiment"]) == 2
    assert "Unknown experiment" in capsys.readouterr().err


# -- issue 19: init, precise shape errors, schedules, Ctrl-C, checkpoints ------------------
def _old_lr_factor(cfg: ft.RunConfig, epoch: int) -> float:
    """The hand-written schedule before LambdaLR (a frozen copy): the reference sequence."""
    import math

    return {"constant": 1.0, "step": cfg.gamma ** sum(epoch >= m for m in cfg.milestones),
            "exponential": cfg.gamma ** epoch, "linear": 1.0 - epoch / cfg.epochs,
            "cosine": 0.5 * (1.0 + math.cos(math.pi * epoch / cfg.epochs))}[cfg.schedule]


@pytest.mark.parametrize("schedule, options, torch_scheduler", [
    ("step", {"milestones": (2, 4, 6), "gamma": 0.1},
     lambda o, c: torch.optim.lr_scheduler.MultiStepLR(o, [2, 4, 6], 0.1)),
    ("exponential", {"gamma": 0.95}, lambda o, c: torch.optim.lr_scheduler.ExponentialLR(o, 0.95)),
    ("linear", {}, lambda o, c: torch.optim.lr_scheduler.LinearLR(o, 1.0, 0.0, c.epochs)),
    ("cosine", {}, lambda o, c: torch.optim.lr_scheduler.CosineAnnealingLR(o, c.epochs)),
])
def test_schedules_give_todays_lr_sequence_bit_for_bit(schedule, options, torch_scheduler) -> None:
    from fa_tutor.training.build import build_schedulers

    cfg = CFG.replace(schedule=schedule, epochs=8, lr=0.07, **options)
    expected = [cfg.lr * _old_lr_factor(cfg, e) for e in range(cfg.epochs)]
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=cfg.lr)
    (sched,) = build_schedulers(cfg, [opt])
    ours = []
    for _ in range(cfg.epochs):
        ours.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert ours == expected  # exact: committed results depend on it
    ref_opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=cfg.lr)
    ref = torch_scheduler(ref_opt, cfg)
    theirs = []
    for _ in range(cfg.epochs):
        theirs.append(ref_opt.param_groups[0]["lr"])
        ref_opt.step()
        ref.step()
    assert ours == pytest.approx(theirs, rel=1e-12, abs=1e-15)  # torch's schedule, closed form
    history = ft.train(cfg.replace(epochs=3), data=DIGITS, progress=False).history
    assert history.lr.tolist() == [cfg.lr * _old_lr_factor(cfg.replace(epochs=3), e)
                                   for e in range(3)]


def test_a_checkpoint_without_scheduler_state_still_resumes(tmp_path: Path) -> None:
    cfg = CFG.replace(schedule="step", milestones=(1, 3), gamma=0.5)
    full = ft.train(cfg, data=DIGITS, progress=False)
    ckpt = tmp_path / "old.pt"
    ft.train(cfg.replace(epochs=2), data=DIGITS, progress=False, checkpoint=ckpt)
    state = torch.load(ckpt, weights_only=False)
    for key in ("schedulers", "batch", "epoch_order", "losses"):  # what older versions lacked
        del state[key]
    state["config"] = cfg.to_dict()
    torch.save(state, ckpt)
    resumed = ft.train(cfg, data=DIGITS, progress=False, checkpoint=ckpt)
    pd.testing.assert_frame_equal(resumed.history, full.history, check_exact=True)


def test_checkpoint_mismatch_names_only_the_fields_that_differ(tmp_path: Path) -> None:
    ckpt = tmp_path / "run.pt"
    ft.train(CFG.replace(epochs=1), data=DIGITS, progress=False, checkpoint=ckpt)
    with pytest.raises(ValueError) as info:
        ft.train(CFG.replace(epochs=1, lr=0.5, seed=4), data=DIGITS, progress=False,
                 checkpoint=ckpt)
    message = str(info.value)
    assert f"checkpoint {ckpt} belongs to another config (lr: 0.1 in the checkpoint, 0.5 now; " \
           "seed: 1 in the checkpoint, 4 now)" in message
    assert "RunConfig(" not in message and "\n" not in message


class _CtrlCAt(torch.nn.Module):
    """Wraps a model; sends this process SIGINT during training forward number ``at``."""

    def __init__(self, inner: torch.nn.Module, at: int | None):
        super().__init__()
        self.inner, self.at, self.calls = inner, at, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and torch.is_grad_enabled():
            self.calls += 1
            if self.calls == self.at:
                import signal

                signal.raise_signal(signal.SIGINT)
        return self.inner(x)


@pytest.mark.parametrize("rule", ["fa", "brsf", "kp"])  # brsf: draws in the step; kp: learned B
def test_ctrl_c_mid_epoch_saves_a_checkpoint_that_resumes_exactly(tmp_path: Path, rule: str) -> None:
    from fa_tutor.training import build_model
    from fa_tutor.training.loop import TrainingInterrupted

    cfg = CFG.replace(rule=rule, schedule="exponential", gamma=0.9, val_fraction=0.2, epochs=3)

    def model(at: int | None) -> _CtrlCAt:
        torch.manual_seed(cfg.seed)
        return _CtrlCAt(build_model(cfg, DIGITS), at)

    whole = ft.train(cfg, data=DIGITS, model=model(None), progress=False)
    ckpt = tmp_path / "run.pt"
    with pytest.raises(TrainingInterrupted, match=r"interrupted in epoch 2, after step 5; "
                       "checkpoint saved to"):  # 18 steps per epoch: step 5 of epoch 2
        ft.train(cfg, data=DIGITS, model=model(18 + 5), checkpoint=ckpt, progress=False)
    state = torch.load(ckpt, weights_only=False)
    assert (state["epoch"], state["batch"], len(state["losses"])) == (1, 5, 5)
    resumed = ft.train(cfg, data=DIGITS, model=model(None), checkpoint=ckpt, progress=False)
    pd.testing.assert_frame_equal(resumed.history, whole.history, check_exact=True)
    for p, q in zip(resumed.model.parameters(), whole.model.parameters()):
        assert torch.equal(p, q)


def test_init_default_is_pytorchs_and_xavier_is_unchanged() -> None:
    from fa_tutor.training import build_model
    from fa_tutor.training.build import xavier_init

    data = ft.data.Dataset("fake", torch.zeros(2, 3, 32, 32), torch.zeros(2, dtype=torch.long),
                           torch.zeros(2, 3, 32, 32), torch.zeros(2, dtype=torch.long), 10)
    for name, cls in (("lenet", ft.models.LeNet), ("lenet5", ft.models.LeNet5),
                      ("resnet18", ft.models.resnet18)):
        cfg = ft.RunConfig(model=name, seed=3)
        torch.manual_seed(3)
        built = build_model(cfg, data)
        torch.manual_seed(3)
        pytorch = cls(10, in_channels=3, init="default")
        assert all(torch.equal(p, q) for p, q in zip(built.parameters(), pytorch.parameters()))
        bias = dict(built.named_parameters())["fc2.bias" if name != "resnet18" else "fc.bias"]
        assert bias.abs().sum() > 0  # PyTorch's init, not Xavier's zero biases
        # "xavier" draws exactly as before: the constructor's Xavier, then xavier_init again
        torch.manual_seed(3)
        built = build_model(cfg.replace(init="xavier"), data)
        torch.manual_seed(3)
        before = cls(10, in_channels=3)
        xavier_init(before)
        assert all(torch.equal(p, q) for p, q in zip(built.parameters(), before.parameters()))


def test_only_a_batch_the_model_cannot_take_is_a_shape_error(monkeypatch) -> None:
    from fa_tutor.rules import BatchShapeError

    model = ft.models.MLP(4, [3], 2)
    rule = ft.make_rule("fa", model, seed=0)
    with pytest.raises(BatchShapeError, match=r"x of shape \(2, 5\).*does not fit the model"):
        rule.step(torch.zeros(2, 5), torch.tensor([0, 1]))

    def internal_bug(x, y):
        raise RuntimeError("The size of tensor a (3) must match the size of tensor b (4)")
    monkeypatch.setattr(rule, "_compute_grads", internal_bug)
    with pytest.raises(RuntimeError, match="must match the size") as info:
        rule.step(torch.zeros(2, 4), torch.tensor([0, 1]))  # the batch fits: the rule's fault
    assert not isinstance(info.value, BatchShapeError)


def test_direct_rule_with_an_input_shape_the_model_cannot_take_is_a_shape_error() -> None:
    from fa_tutor.rules import BatchShapeError

    with pytest.raises(BatchShapeError, match=r"input_shape=\(1, 28, 28\): rule 'dfa'"):
        ft.make_rule("dfa", ft.models.LeNet5(), input_shape=(1, 28, 28))


def test_every_committed_config_still_validates() -> None:
    import json

    fields = ft.RunConfig.__dataclass_fields__
    n = 0
    for path in (Path(__file__).resolve().parents[1] / "results").glob("*.jsonl"):
        for text in path.read_text().splitlines():
            config = json.loads(text)["config"]
            if "lr" in config and "model" in config:
                ft.RunConfig.from_dict({k: v for k, v in config.items() if k in fields})
                n += 1
    assert n > 100


@pytest.mark.parametrize("every, env, saved_before_the_end", [
    (None, None, False), (0.0, None, True), (None, "0", True), (3600.0, "0", False)])
def test_the_checkpoint_interval_is_settable(tmp_path: Path, monkeypatch, every, env,
                                             saved_before_the_end) -> None:
    if env is None:
        monkeypatch.delenv("FA_TUTOR_CHECKPOINT_EVERY", raising=False)
    else:
        monkeypatch.setenv("FA_TUTOR_CHECKPOINT_EVERY", env)
    ckpt = tmp_path / "run.pt"

    def saved(model, rule, probe) -> float:  # at epoch 2's evaluation: what is on disk
        return float(torch.load(ckpt, weights_only=False)["epoch"]) if ckpt.exists() else -1.0
    res = ft.train(CFG.replace(epochs=2), data=DIGITS, recorders={"saved": saved},
                   checkpoint=ckpt, checkpoint_every_s=every, progress=False)
    assert res.history.saved.tolist() == ([-1.0, 1.0] if saved_before_the_end else [-1.0, -1.0])
    assert torch.load(ckpt, weights_only=False)["epoch"] == 2  # always at the end
