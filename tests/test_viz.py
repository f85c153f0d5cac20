"""The explore widget's Run: a long run shows its seconds, a diverged run becomes a message,
every other error stays an error."""
from __future__ import annotations

import re
import time
from types import SimpleNamespace

import matplotlib.pyplot as plt
import pytest
import torch

import fa_tutor as ft
from fa_tutor import viz


def train_and_plot(lr: float) -> None:
    """A widget function: draw a figure, then train a tiny MLP with FA at rate ``lr``."""
    fig, ax = plt.subplots()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 4, generator=g), torch.randint(0, 3, (32,), generator=g)
    model = ft.models.MLP(4, [16], 3)
    rule = ft.make_rule("fa", model, seed=0)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    losses = []
    for _ in range(30):
        opt.zero_grad(set_to_none=True)
        losses.append(float(rule.step(x, y)))
        opt.step()
    ax.plot(losses)


@pytest.fixture
def shown(monkeypatch):
    objects: list = []
    monkeypatch.setattr("IPython.display.display", lambda *objs, **kw: objects.extend(objs))
    return objects


def test_rerun_reports_a_diverged_run_without_a_traceback(shown) -> None:
    plt.close("all")
    message = viz.rerun(train_and_plot, {"lr": 1e30})
    assert message is not None and "diverged" in message and "rule 'fa'" in message
    assert "Lower the learning rate" in message
    assert [o.data for o in shown] == [message]  # shown in the widget's output, as markdown
    assert plt.get_fignums() == []  # the half-drawn figure is not shown


def test_rerun_draws_a_finite_run(shown) -> None:
    plt.close("all")
    assert viz.rerun(train_and_plot, {"lr": 0.05}) is None
    assert shown == []


def test_rerun_keeps_other_errors(shown) -> None:
    with pytest.raises(TypeError):
        viz.rerun(train_and_plot, {"learning_rate": 0.05})
    assert shown == []


def test_a_long_run_counts_its_seconds_on_the_button(shown, monkeypatch) -> None:
    monkeypatch.setattr(viz, "PROGRESS_AFTER_S", 0.4)
    button = SimpleNamespace(description="Run")
    seen = []

    def slow(pause: float) -> None:
        time.sleep(pause)
        seen.append(button.description)

    viz.rerun(slow, {"pause": 0.2}, button=button)  # shorter than the threshold: untouched
    viz.rerun(slow, {"pause": 1.3}, button=button)
    assert seen[0] == "Run" and re.fullmatch(r"Running… \d+ s", seen[1]), seen
    assert button.description == "Run"  # restored
