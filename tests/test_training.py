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
