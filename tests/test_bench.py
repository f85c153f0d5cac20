"""Benchmarks: grids are well formed, results follow the CONTRACT format, runs resume and skip.

Small on purpose (CPU, seconds): one timing cell of step-cost and one training cell
of conservation-noisy-mnist, both at --quick scale, into a temporary --out.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re

import pandas as pd
import pytest
import torch

import fa_tutor as ft
import fa_tutor.bench.experiments  # noqa: F401  (registers every experiment)
from fa_tutor.bench import EXPERIMENTS, list_experiments, read_results, run_experiment
from fa_tutor.bench import report
from fa_tutor.cli import main
from fa_tutor.data import DATASETS, DatasetNotAvailable
from fa_tutor.training import RunConfig, build_data

NAMES = ["conservation-noisy-mnist", "estimator-variance", "fdfa", "lenet-cifar100-subsets",
         "lenet-fashion-mnist", "lenet-fashion-mnist-lr", "localmixer", "localmixer-groups",
         "lenet-fashion-mnist-subsets", "noisy-mnist-memorisation", "noisy-mnist-memorisation-long",
         "resnet18-tinyimagenet-subsets", "step-cost"]
PROVENANCE = {"commit", "fa_tutor", "torch", "cuda", "device", "started", "wall_s"}



def only_first_cell(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Shrink experiment ``name`` to the first cell of its grid (for fast runs)."""
    exp = EXPERIMENTS[name]
    monkeypatch.setitem(EXPERIMENTS, name,
                        dataclasses.replace(exp, cells=lambda quick: exp.cells(quick)[:1]))


def test_every_experiment_is_registered() -> None:
    assert sorted(e.name for e in list_experiments()) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("quick", [True, False])
def test_grid_is_well_formed(name: str, quick: bool) -> None:
    exp = EXPERIMENTS[name]
    cells = exp.cells(quick)
    assert cells, f"{name} has an empty grid"
    keys = [c.key for c in cells]
    assert len(set(keys)) == len(keys), f"{name}: duplicate cell keys"
    for c in cells:
        assert c.experiment == name
        if quick:
            assert c.scale == "quick"
        else:
            assert c.scale in ("full", "substituted")
        if c.runner == "train":
            assert c.config is not None and c.config.rule == c.rule
            assert c.config.dataset == c.dataset and c.config.seed == c.seed
        else:
            assert c.runner in exp.runners, f"{name}: unknown runner {c.runner!r}"
        assert c.dataset in DATASETS or c.dataset == "synthetic", c.dataset
    # --quick is the same grid with a smaller budget: its settings are a subset
    full = {json.dumps(c.setting, sort_keys=True) for c in exp.cells(False)}
    if name != "step-cost":  # step-cost's setting is the batch size, smaller in --quick
        assert {json.dumps(c.setting, sort_keys=True) for c in exp.cells(True)} <= full


def test_quick_grids_use_a_smaller_budget() -> None:
    for name in NAMES:
        quick, full = EXPERIMENTS[name].cells(True), EXPERIMENTS[name].cells(False)
        epochs = lambda cells: max((c.config or ft.RunConfig.from_dict(  # noqa: E731
            {k: v for k, v in c.options.items() if k in ft.RunConfig.__dataclass_fields__}))
            .epochs for c in cells)
        if quick[0].runner in ("train", "train_recorded"):
            assert epochs(quick) < epochs(full), name
        assert len(quick) <= len(full), name


def test_bench_list_cli(capsys: pytest.CaptureFixture) -> None:
    assert main(["bench", "list"]) == 0
    out = capsys.readouterr().out
    for name in NAMES:
        assert re.search(rf"^{re.escape(name)}\s+\d+ cells \(\d+ quick\)", out, re.M), name


def check_line(line: dict, experiment: str) -> None:
    """One result line in the CONTRACT.md format."""
    for field in ("experiment", "rule", "model", "dataset", "seed", "scale", "config", "metrics",
                  "provenance"):
        assert field in line, field
    assert line["experiment"] == experiment and line["scale"] == "quick"
    assert isinstance(line["seed"], int) and isinstance(line["config"], dict)
    assert PROVENANCE <= set(line["provenance"])
    prov = line["provenance"]
    assert prov["torch"] == torch.__version__.split("+")[0] and prov["fa_tutor"] == ft.__version__
    assert prov["device"] == "cpu" and prov["cuda"] is None and prov["wall_s"] >= 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", prov["started"])


def test_step_cost_quick_writes_contract_lines(tmp_path, monkeypatch) -> None:
    only_first_cell(monkeypatch, "step-cost")
    lines = run_experiment("step-cost", quick=True, device="cpu", out=tmp_path, progress=False)
    assert lines == read_results("step-cost", tmp_path)
    rules = {ln["rule"] for ln in lines}
    assert rules == set(ft.available_rules())  # every rule: a timing or a reason it can't run
    for ln in lines:
        check_line(ln, "step-cost")
        m = ln["metrics"]
        # a rule that fails on a model it accepts is a regression, never a result here;
        # only the local-loss rules may refuse a model without local losses
        assert "failed" not in m, f"{ln['rule']} failed on {ln['model']}: {m.get('failed')}"
        if "unsupported" in m:
            assert ft.rule_spec(ln["rule"]).needs_local_losses, (ln["rule"], m["unsupported"])
        else:
            assert m["seconds_per_step"] > 0 and m["forward_passes"] > 0
    by_rule = {ln["rule"]: ln["metrics"] for ln in lines}
    assert by_rule["bp"]["ratio_to_bp"] == 1.0
    # where the cost goes: backprop and FA draw nothing; FG-A draws one Gaussian per hidden unit
    assert by_rule["bp"]["draw_share"] == 0.0 and by_rule["fa"]["draw_share"] == 0.0
    assert 0.0 < by_rule["fg_a"]["draw_share"] < 1.0
    m = by_rule["fg_a"]
    assert m["ratio_without_draws"] == pytest.approx(m["ratio_to_plain"] * (1 - m["draw_share"]))


def test_draw_share_counts_only_random_ops() -> None:
    from fa_tutor.bench.experiments.step_cost import draw_share

    x = torch.empty(200_000)
    assert draw_share(lambda: x.normal_(), 2, "cpu") == pytest.approx(1.0)
    assert draw_share(lambda: x.mul_(1.0), 2, "cpu") == 0.0
    share = draw_share(lambda: (x.normal_(), x.exp_()), 2, "cpu")
    assert 0.0 < share < 1.0  # both sides counted (their ratio depends on the machine's load)


def test_draw_share_sees_gaussian_chunks_drawn_in_worker_threads() -> None:
    from fa_tutor.bench.experiments.step_cost import draw_share
    from fa_tutor.rules.noise import CHUNK, gaussian

    g, before = torch.Generator().manual_seed(0), torch.get_num_threads()
    torch.set_num_threads(2)  # the chunks go to a thread pool the profiler does not follow
    try:
        draw = lambda: gaussian((4 * CHUNK,), g, device="cpu", dtype=torch.float32)
        assert draw_share(draw, 2, "cpu") == pytest.approx(1.0)
        share = draw_share(lambda: draw().exp_(), 2, "cpu")
        assert 0.05 < share < 0.95
    finally:
        torch.set_num_threads(before)


def test_training_quick_cell_writes_contract_lines_and_rerun_skips(tmp_path, monkeypatch) -> None:
    name = "conservation-noisy-mnist"
    only_first_cell(monkeypatch, name)
    lines = run_experiment(name, quick=True, device="cpu", out=tmp_path, progress=False)
    assert len(lines) == 1
    line = lines[0]
    check_line(line, name)
    m = line["metrics"]
    assert 0.0 <= m["test_accuracy"] <= 100.0 and abs(m["test_error"] + m["test_accuracy"]
                                                       - 100.0) < 1e-9
    assert m["test_accuracy"] > 1.0  # percent, not a fraction
    assert m["conservation_deviation"] >= 0 and len(m["history"]["epoch"]) == m["snapshots"]
    assert "substituted" in line["config"]["note"].lower() or "mnist5k" in line["config"]["note"]
    assert line["config"]["epochs"] == EXPERIMENTS[name].cells(True)[0].options["epochs"]
    # a rerun skips the finished cell: no new line, file unchanged
    before = (tmp_path / f"{name}.jsonl").read_text()
    assert run_experiment(name, quick=True, device="cpu", out=tmp_path, progress=False) == []
    assert (tmp_path / f"{name}.jsonl").read_text() == before
    # report.load flattens it
    df = report.load(name, out=tmp_path)
    assert len(df) == 1 and df.loc[0, "width"] == 15 and df.loc[0, "prov_device"] == "cpu"
    assert "history" not in df and df.loc[0, "conservation_deviation"] == m[
        "conservation_deviation"]
    assert len(report.histories(name, out=tmp_path)) == len(m["history"]["epoch"])


def test_a_diverged_cell_is_a_result_with_its_epoch(tmp_path, monkeypatch) -> None:
    """lr 1e30 makes the loss inf/NaN within a few steps: the cell is saved, not failed."""
    name = "lenet-fashion-mnist"
    exp = EXPERIMENTS[name]
    cfg = ft.RunConfig(model="mlp", model_options={"hidden": [16]}, dataset="digits", lr=1e30,
                       momentum=0.9, epochs=3, batch_size=1024, val_fraction=0.2, device="cpu")
    cell = ft.bench.Cell(name, "bp", "mlp", "digits", 0, "quick", cfg)
    monkeypatch.setitem(EXPERIMENTS, name, dataclasses.replace(exp, cells=lambda quick: [cell]))
    (line,) = run_experiment(name, quick=True, device="cpu", out=tmp_path, progress=False)
    m = line["metrics"]
    assert m["diverged_epoch"] in (1.0, 2.0, 3.0)
    assert len(m["history"].get("epoch", [])) == m["diverged_epoch"] - 1  # the rows before it
    assert run_experiment(name, quick=True, device="cpu", out=tmp_path, progress=False) == []


def test_a_diverged_estimator_cell_records_its_epoch_and_the_initial_measurement(
        tmp_path, monkeypatch) -> None:
    """estimator-variance uses the same ``diverged_epoch`` as the training runner."""
    from fa_tutor.bench.experiments import estimator_variance as ev
    from fa_tutor.bench.experiments._common import config_cell

    name = "estimator-variance"
    # epoch 1 at the usual rate, then ×1e30: the loss turns NaN in epoch 2
    cfg = ev.BASE.replace(rule="fa", seed=0, **ev.QUICK).replace(
        epochs=3, schedule="step", milestones=(1,), gamma=1e30)
    cell = config_cell(name, cfg, model="mlp", scale="quick", setting={}, runner="estimator",
                       draws=ev.QUICK_DRAWS)
    monkeypatch.setitem(EXPERIMENTS, name, dataclasses.replace(EXPERIMENTS[name],
                                                               cells=lambda quick: [cell]))
    (line,) = run_experiment(name, quick=True, device="cpu", out=tmp_path, progress=False)
    m = line["metrics"]
    assert m["diverged_epoch"] == 2.0 and "not finite" in m["diverged"]
    assert 0.0 < m["initial_est_cosine"] < 1.0  # FA at initialisation: measured before it all
    assert m["history"]["epoch"] == [1] and m["history"]["est_cosine"][0] > 0  # epoch 1's row
    assert m["est_cosine"] == pytest.approx(m["history"]["est_cosine"][0], abs=1e-5)
    assert m["test_accuracy"] == pytest.approx(m["history"]["test_accuracy"][0], abs=1e-3)


class Interrupt(RuntimeError):
    pass


def test_interrupted_run_resumes_to_the_same_history(tmp_path) -> None:
    """A run killed after epoch 3 and resumed from its checkpoint = the uninterrupted run."""
    cfg = ft.RunConfig(model="mlp", model_options={"hidden": [16]}, rule="fa", dataset="digits",
                       lr=0.05, momentum=0.9, epochs=6, batch_size=128, seed=3, device="cpu")
    data = build_data(cfg)
    norm = lambda model, rule, probe: float(model.layers[0].weight.detach().norm())  # noqa: E731
    whole = ft.train(cfg, data=data, recorders={"norm": norm}, progress=False).history

    def killer(model, rule, probe):
        if len(killer.calls) == 3:  # during epoch 4's evaluation, before its checkpoint
            raise Interrupt
        killer.calls.append(1)
        return norm(model, rule, probe)
    killer.calls = []
    ckpt = tmp_path / "run.pt"
    with pytest.raises(Interrupt):
        ft.train(cfg, data=data, recorders={"norm": killer}, checkpoint=ckpt,
                 checkpoint_every_s=0.0, progress=False)
    assert ckpt.exists()
    assert torch.load(ckpt, weights_only=False)["epoch"] == 3
    resumed = ft.train(cfg, data=data, recorders={"norm": norm}, checkpoint=ckpt,
                       progress=False).history
    pd.testing.assert_frame_equal(resumed, whole, check_exact=True)


@pytest.mark.parametrize("name", ["lenet-cifar100-subsets", "resnet18-tinyimagenet-subsets"])
def test_download_experiments_fail_clearly_offline(name, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("FA_TUTOR_DATA", str(tmp_path / "empty"))
    from fa_tutor.bench.experiments._common import cell_config

    cell = EXPERIMENTS[name].cells(True)[0]
    config = cell.config or cell_config(cell)  # recorded cells carry their config in options
    with pytest.raises(DatasetNotAvailable, match=r"python -m fa_tutor data fetch \w+"):
        build_data(config)
    # through the runner: checked once, before any cell runs; nothing is written
    dataset = config.dataset
    with pytest.raises(DatasetNotAvailable, match=f"needs {dataset}, which is not on this "
                       f"machine.*`python -m fa_tutor data fetch {dataset}`"):
        run_experiment(name, quick=True, device="cpu", out=tmp_path, progress=False, retries=0)
    assert read_results(name, tmp_path) == []
    assert main(["bench", "run", name, "--quick", "--out", str(tmp_path), "--limit", "1",
                 "--retries", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {name} needs {dataset}")


@pytest.mark.parametrize("name", ["localmixer", "fdfa"])
def test_mixed_experiments_need_downloads_only_at_full_scale(name, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("FA_TUTOR_DATA", str(tmp_path / "empty"))
    offline = {d for d, info in DATASETS.items() if info.offline}
    assert {c.dataset for c in EXPERIMENTS[name].cells(True)} <= offline
    online = [c for c in EXPERIMENTS[name].cells(False) if c.dataset not in offline]
    assert online and not EXPERIMENTS[name].offline
    with pytest.raises(DatasetNotAvailable, match="fa_tutor data fetch"):
        build_data(online[0].config)


def test_published_numbers_are_data_with_sources() -> None:
    pub = report.published()
    assert {"biotorch", "ren2023", "akrout2019", "dkp"} <= set(pub.key)
    assert pub.source.str.len().min() > 10
    row = pub[(pub.key == "biotorch") & (pub.dataset == "fashion_mnist") & (pub.rule == "fa")]
    assert row.value.tolist() == [13.06]
    ren = report.published("ren2023")
    lgfga = ren[(ren.rule == "lg_fg_a") & (ren.dataset == "cifar10")]
    assert dict(zip(lgfga.metric, lgfga.value)) == {"test_error": 30.68, "train_error": 19.39}


def test_published_tables_are_complete_and_keep_the_papers_stated_relations() -> None:
    """Not the typed numbers again: the tables' shape, and relations the papers state in words
    (which a mistyped number would break), checked against the transcribed values."""
    bio = report.published("biotorch")
    assert len(bio) == 6 * 2 and set(bio.rule) == {"bp", "fa", "usf", "brsf", "frsf", "dfa"}
    fashion = bio[bio.dataset == "fashion_mnist"].set_index("rule").value
    mnist = bio[bio.dataset == "mnist"].set_index("rule").value
    assert (fashion > mnist).all()  # Fashion-MNIST is the harder data set for every rule
    assert fashion.idxmin() == "bp" and fashion[["fa", "dfa"]].min() > fashion.drop(["fa", "dfa"]).max()
    ren = report.published("ren2023")
    assert len(ren) == 11 * 4 * 2  # 11 rules x 4 columns x (test, train)
    test = ren[ren.metric == "test_error"].pivot(index="rule", columns="model", values="value")
    train = ren[ren.metric == "train_error"].pivot(index="rule", columns="model", values="value")
    assert (train.loc[["bp", "l_bp"], "localmixer S/1/1"] == 0).all()  # backprop fits MNIST
    s11, m816 = test["localmixer S/1/1"], test["localmixer M/8/16"]
    # one block and one group: local and global forward gradients are the same estimator
    assert s11["fg_a"] == s11["lg_fg_a"] and s11["fg_w"] == s11["lg_fg_w"]
    # the paper's headline: LG-FG-A beats backprop on CIFAR-10 while global FG fails
    assert m816["lg_fg_a"] < m816["bp"] < m816["fg_a"]


def test_status_counts_only_full_grid_results(tmp_path) -> None:
    st = report.status(["lenet-fashion-mnist"], out=tmp_path)
    assert st.cells.sum() == len(EXPERIMENTS["lenet-fashion-mnist"].cells(False))
    assert (st.done == 0).all() and (st.status == "not yet run at full scale").all()


def test_beside_published_puts_ours_next_to_biotorch_and_flags_divergence(tmp_path) -> None:
    prov = {"commit": "x", "fa_tutor": "0", "torch": "2", "cuda": None, "device": "cpu",
            "started": "2026-01-01T00:00:00Z", "wall_s": 1.0}
    lines = [
        {"experiment": "lenet-fashion-mnist", "rule": rule, "model": "lenet5",
         "dataset": "fashion_mnist", "seed": 0, "scale": "full", "cell": rule, "config": {},
         "metrics": metrics, "provenance": prov}
        for rule, metrics in [("bp", {"test_error": 10.0}),
                              ("dfa", {"test_error": 28.0, "diverged_epoch": 12.0})]]
    (tmp_path / "lenet-fashion-mnist.jsonl").write_text(
        "".join(json.dumps(line) + "\n" for line in lines))
    ours = report.load("lenet-fashion-mnist", out=tmp_path)
    table = report.beside_published(ours, "biotorch", "fashion_mnist").set_index("rule")
    assert table.loc["bp", "published test_error"] == 9.20  # biotorch's Fashion-MNIST BP
    assert table.loc["bp", "ours test_error"].startswith("10.00") and table.loc["bp", "note"] == ""
    assert table.loc["dfa", "note"].startswith("diverged (loss NaN) in epoch 12")
    assert table.loc["fa", "ours test_error"] is None  # published only


def test_step_cost_tables_read_ratios_and_draw_shares() -> None:
    rows = [("bp", "mlp", 1.0, 0.0, 1.0), ("fa", "mlp", 1.05, 0.0, 1.1),
            ("fg_a", "mlp", 1.5, 0.2, 1.2), ("fg_a", "lenet", 2.0, 0.5, 1.2),
            ("bp", "lenet", 1.0, 0.0, 1.0), ("fa", "lenet", 1.2, 0.0, 1.1)]
    df = pd.DataFrame(rows, columns=["rule", "model", "ratio_to_bp", "draw_share", "target"])
    df["ratio_without_draws"] = df.ratio_to_bp * (1 - df.draw_share)
    table = report.step_cost_table(df)
    assert table.loc["fa", "mlp"] == 1.05 and not table.loc["fa", "within target"]
    assert table.loc["bp", "within target"]
    draws = report.step_cost_draws(df)
    assert list(draws.index) == ["fg_a"]  # only rules that draw
    assert draws.loc["fg_a", ("draws (% of step)", "lenet")] == 50.0
    assert draws.loc["fg_a", ("ratio without draws", "mlp")] == 1.2
    assert report.step_cost_draws(df.drop(columns="draw_share")).empty  # older lines
    assert table.attrs["reference"] == "ratio_to_bp"


def test_step_cost_tables_use_the_plain_pytorch_reference_when_measured() -> None:
    rows = [("bp", "mlp", 1.05, 1.0), ("fa", "mlp", 1.12, 1.07), ("dfa", "mlp", 1.04, 0.99)]
    df = pd.DataFrame(rows, columns=["rule", "model", "ratio_to_plain", "ratio_to_bp"])
    df["target"] = df.rule.map({"bp": 1.03, "fa": 1.10, "dfa": 1.05})
    table = report.step_cost_table(df)
    assert table.attrs["reference"] == "ratio_to_plain"
    assert table.loc["fa", "mlp"] == 1.12 and not table.loc["fa", "within target"]
    assert not table.loc["bp", "within target"]  # the wrapper's 5 % is over its 3 %
    assert table.loc["dfa", "within target"]


def test_step_cost_floors_table() -> None:
    import math

    df = pd.DataFrame({"rule": ["kp", "fa", "kp"], "model": ["mlp", "mlp", "lenet"],
                       "ratio_to_plain": [1.2, 1.09, 1.05], "floor_ratio": [1.18, None, 1.04],
                       "target": [1.1, 1.1, 1.1],
                       "floor": ["fa + the optimizer's update of B", None,
                                 "fa + the optimizer's update of B"]})
    floors = report.step_cost_floors(df)
    assert floors[["rule", "model"]].values.tolist() == [["kp", "lenet"], ["kp", "mlp"]]
    assert floors["over floor"].tolist() == pytest.approx([0.01, 0.02])
    assert floors.base.tolist() == ["fa", "fa"]
    assert floors["defined work"].tolist()[1] == pytest.approx(0.09)  # 1.18 - fa's 1.09
    assert math.isnan(floors["base ratio"][0])  # no fa line on lenet
    assert report.step_cost_floors(df.drop(columns="floor_ratio")).empty  # older lines


def test_step_cost_runs_put_every_run_with_floors_side_by_side() -> None:
    import math

    def line(rule, ratio, started, processor, scale="full", model="mlp", floor=None):
        metrics = {"ratio_to_plain": ratio, "target": 1.1, "plain_seconds": 0.002}
        if floor is not None:
            metrics["floor_ratio"] = floor
        return {"rule": rule, "model": model, "scale": scale, "cell": f"c-{model}-{scale}",
                "metrics": metrics, "provenance": {"commit": f"c{started}", "started": started,
                                                   "device_name": processor}}

    lines = [line("fa", 1.05, "2", "AMD EPYC (2 logical CPUs)"),
             line("kp", 1.12, "2", "AMD EPYC (2 logical CPUs)", floor=1.11),
             line("fa", 1.09, "1", "cpu"), line("kp", 1.23, "1", "cpu", floor=1.23),
             line("fa", 1.30, "0", "cpu"),  # a run from before the floors: left out
             line("kp", 2.0, "3", "cpu", scale="quick", floor=2.0),  # not full scale
             line("kp", 2.0, "4", "cpu", model="lenet", floor=2.0)]  # another model
    runs = report.step_cost_runs(lines, "mlp", ["fa", "kp", "usf"])
    assert list(runs.index) == ["c1", "c2", "target"]  # in order of start, then the targets
    assert runs.processor.tolist() == ["not recorded", "AMD EPYC (2 logical CPUs)", ""]
    assert runs.loc["c1", "kp"] == 1.23 and runs.loc["c2", "fa"] == 1.05
    assert runs.loc["c2", "plain step (ms)"] == 2.0
    assert math.isnan(runs.loc["c1", "usf"])  # not timed in that run
    assert runs.loc["target", "kp"] == 1.1
    assert report.step_cost_runs(lines, "resnet18", ["fa"]).empty


def test_step_cost_times_plain_pytorch_in_the_same_rounds(monkeypatch) -> None:
    """A quick step-cost cell reports ratio_to_plain beside ratio_to_bp, consistently."""
    from fa_tutor.bench.experiments import step_cost

    cell = next(c for c in EXPERIMENTS["step-cost"].cells(True) if c.model == "mlp")
    monkeypatch.setattr(step_cost, "available_rules", lambda: ["bp", "fa"])
    out = dict(step_cost.measure(cell, "cpu", None))
    for name, m in out.items():
        assert m["ratio_to_plain"] == pytest.approx(m["seconds_per_step"] / m["plain_seconds"])
        assert m["ratio_to_plain"] > 0 and m["ratio_to_bp"] > 0
    assert out["bp"]["ratio_to_bp"] == 1.0 and out["bp"]["target"] == 1.03


def test_step_cost_floors_time_the_base_rule_plus_only_the_defined_extra(monkeypatch) -> None:
    """kp's floor is FA plus an optimizer update of B-shaped tensors; usf's is FA plus
    B <- c sign(W) for the layers whose B a usf step uses (not the input layer)."""
    import torch

    import fa_tutor as ft
    from fa_tutor.bench.experiments import step_cost

    torch.manual_seed(0)
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))

    def built(name):
        model = ft.models.MLP(6, [5, 4], 3)
        rule = ft.make_rule(name, model, seed=0)
        opt = torch.optim.SGD([*model.parameters(), *rule.parameters()], lr=0.5)
        opt.zero_grad()
        rule.step(x, y)
        opt.step()
        return rule, opt

    kp, usf = built("kp")[0], built("usf")[0]
    fa, fa_opt = built("fa")
    learned = step_cost.FloorStep(kp, fa, fa_opt, "learned", x, y)
    assert [t.shape for t in learned.scratch] == [B.shape for B in kp.parameters()]
    W0 = fa.model.layers[0].weight.detach().clone()
    learned()
    learned()
    assert all(bool((t == -1.0).all()) for t in learned.scratch)  # 2 SGD steps, lr 0.5, grad 1
    copied = step_cost.FloorStep(kp, fa, fa_opt, "copied", x, y)
    assert [W for W, _ in copied.copies] == [layer.weight for layer in fa.layers]
    copied()  # B's scratch gradients are the base's weight gradients, in tensors of their own
    for W, t in copied.copies:
        assert torch.equal(t.grad, W.grad) and t.grad.data_ptr() != W.grad.data_ptr()
        assert torch.equal(t, -0.5 * t.grad)  # one SGD step (lr 0.5) from zeros on that gradient
    assert not torch.equal(fa.model.layers[0].weight, W0)  # the base rule stepped too
    sign = step_cost.FloorStep(usf, fa, fa_opt, "sign", x, y)
    assert sorted(usf.written) == ["layers.1.weight", "layers.2.weight"]
    before = [torch.sign(W.detach()) * M for W, _, M in sign.signs]  # B from W before the step
    sign()
    for (W, scratch, M), name, B in zip(sign.signs, ["layers.1.weight", "layers.2.weight"], before):
        assert M == usf.magnitude[name] and W is fa.model.get_parameter(name)
        assert torch.equal(scratch, B)
    with pytest.raises(ValueError, match="choose learned, copied, sign"):
        step_cost.FloorStep(usf, fa, fa_opt, "copy", x, y)
    cell = next(c for c in EXPERIMENTS["step-cost"].cells(True) if c.model == "mlp")
    monkeypatch.setattr(step_cost, "available_rules", lambda: ["bp", "fa", "usf", "kp", "dkp"])
    out = dict(step_cost.measure(cell, "cpu", None))
    assert out["kp"]["floor"] == "fa + W's gradient copied into B's + the optimizer's update of B"
    assert out["kp"]["floor_ratio"] > 0
    assert out["usf"]["floor"] == "fa + B ← M ⊙ sign(W) for the layers used"
    assert "floor" not in out["fa"] and "floor" not in out["dkp"]  # dkp's base dfa is not timed


def test_a_checkpoint_of_an_older_declaration_is_set_aside_not_resumed(tmp_path, caplog) -> None:
    """A cell's key names its place in the grid, not its settings: after a declaration
    changes, its old checkpoint would be refused on every retry. It is moved aside."""
    from fa_tutor.bench.runner import set_aside_stale_checkpoint

    train_cell = EXPERIMENTS["lenet-fashion-mnist"].cells(True)[0]  # a RunConfig cell
    config_cell = EXPERIMENTS["conservation-noisy-mnist"].cells(True)[0]  # RunConfig in options
    timing_cell = EXPERIMENTS["step-cost"].cells(True)[0]  # no RunConfig
    for cell, cfg in ((train_cell, train_cell.config),
                      (config_cell, RunConfig.from_dict({k: config_cell.options[k]
                                                          for k in RunConfig.__dataclass_fields__}))):
        ckpt = tmp_path / f"{cell.key}.pt"
        torch.save({"config": cfg.replace(device="cpu").to_dict()}, ckpt)
        assert set_aside_stale_checkpoint(ckpt, cell, "cpu") is None and ckpt.exists()  # same
        torch.save({"config": cfg.replace(device="cpu", lr=cfg.lr * 10).to_dict()}, ckpt)
        with caplog.at_level("WARNING"):
            stale = set_aside_stale_checkpoint(ckpt, cell, "cpu")
        assert stale == tmp_path / f"{cell.key}.stale.pt" and stale.exists() and not ckpt.exists()
        assert f"lr: {cfg.lr * 10!r} in the checkpoint, {cfg.lr!r} now" in caplog.text
        assert "moved it to" in caplog.text
    ckpt = tmp_path / f"{timing_cell.key}.pt"
    torch.save({"config": {"lr": 1.0}}, ckpt)
    assert set_aside_stale_checkpoint(ckpt, timing_cell, "cpu") is None and ckpt.exists()
    ckpt.write_text("not a checkpoint")  # unreadable: left for the run to report
    assert set_aside_stale_checkpoint(ckpt, train_cell, "cpu") is None and ckpt.exists()


def test_localmixer_fashion_cells_are_labelled_substituted_with_a_note() -> None:
    from fa_tutor.bench.experiments import localmixer
    from fa_tutor.bench.runner import _line

    cells = EXPERIMENTS["localmixer"].cells(False)
    scales = {(c.dataset, c.scale) for c in cells}
    assert scales == {("fashion_mnist", "substituted"), ("mnist5k", "substituted"),
                      ("mnist", "full"), ("cifar10", "full")}
    for dataset in ("fashion_mnist", "mnist5k"):
        cell = next(c for c in cells if c.dataset == dataset)
        line = _line(cell, cell.rule, {}, "cpu", pd.Timestamp.now(tz="UTC").to_pydatetime(), 0.0)
        assert line["scale"] == "substituted"
        assert line["config"]["note"] == localmixer.SUBSTITUTE_NOTE[dataset]
    mnist5k = {(c.setting["mixer"], c.rule, c.seed) for c in cells if c.dataset == "mnist5k"}
    assert len(mnist5k) == 2 * 8 * 3  # S/1/1 and M/1/16, all 8 rules, 3 seeds
    assert {c.scale for c in EXPERIMENTS["localmixer"].cells(True)} == {"quick"}


def test_load_keeps_the_last_started_line_per_cell_rule_and_device() -> None:
    df = pd.DataFrame({
        "cell": ["a", "a", "a", "b", "a"], "rule": ["bp", "fa", "bp", "bp", "bp"],
        "prov_device": ["cpu", "cpu", "cpu", "cpu", "cuda"],
        "prov_started": ["2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z",
                         "2026-01-05T00:00:00Z", "2026-01-01T00:00:00Z"],
        "ratio_to_bp": [1.0, 1.3, 1.0, 1.0, 1.0]})
    kept = report.latest_runs(df)
    # the February rerun of (a, bp, cpu) supersedes January's; other keys keep their only line
    assert list(zip(kept.cell, kept.rule, kept.prov_device, kept.prov_started.str[:7])) == [
        ("a", "fa", "cpu", "2026-01"), ("a", "bp", "cpu", "2026-02"), ("b", "bp", "cpu", "2026-01"),
        ("a", "bp", "cuda", "2026-01")]


def test_lenet_learning_rates_are_the_committed_selection() -> None:
    """LEARNING_RATES holds, for each rule whose selection is complete, the rate that
    select_learning_rates picks from the committed lenet-fashion-mnist-lr lines."""
    from fa_tutor.bench.experiments import lenet_fashion_mnist as lenet

    lines = [line for line in report.current_lines(lenet.SELECTION) if line["scale"] == "substituted"]
    complete = {r for r in lenet.RULES
                if {line["setting"]["lr"] for line in lines if line["rule"] == r} == set(lenet.LR_GRID)}
    chosen = lenet.select_learning_rates([line for line in lines if line["rule"] in complete])
    assert lenet.LEARNING_RATES == chosen
    assert set(lenet.LEARNING_RATES) <= set(lenet.RULES)


def test_full_scale_rates_step_down_only_past_a_committed_blow_up(monkeypatch) -> None:
    """Each rate in BLEW_UP_AT_FULL_SCALE has a committed full-scale line at that rate that
    blew up (one seed is enough); the rule's cells then run at the next lower rate of the grid."""
    from fa_tutor.bench.experiments import lenet_fashion_mnist as lenet

    full = [line for line in report.current_lines(lenet.NAME) if line["scale"] == "full"]
    for rule, rates in lenet.BLEW_UP_AT_FULL_SCALE.items():
        for lr in rates:
            at = [line for line in full if line["rule"] == rule and line["setting"].get("lr") == lr]
            assert any(lenet.unstable(line) for line in at), (rule, lr)
    assert lenet.full_scale_rate("adafa") == 0.001  # 0.003 blew up: the next rate down
    assert lenet.full_scale_rate("dfa") == 0.0003  # 0.001 blew up for one seed of three
    assert lenet.full_scale_rate("bp") == lenet.LEARNING_RATES["bp"]
    assert lenet.full_scale_rate("dkp") is None  # no stable rate, no cells
    rates = {c.rule: c.setting["lr"] for c in lenet.cells(False)}
    assert rates["adafa"] == 0.001 and rates["dfa"] == 0.0003
    reading = lenet.given_up_reading(report.current_lines(lenet.NAME))
    assert "adaFA's selected η = 0.003 blew up in epoch 9 for seed 0" in reading
    assert "DFA's selected η = 0.001 blew up in epoch 6 for seed 2" in reading
    assert "while seeds 0 (13.53 % test error) and 1 (12.53 % test error) trained stably" in reading
    assert "there its 3 seed(s) average 14.74 % against 13.03 %" in reading  # 0.0003 vs 0.001
    assert lenet.given_up_reading([]) == "No full-scale run at a selected rate has blown up."
    monkeypatch.setitem(lenet.BLEW_UP_AT_FULL_SCALE, "bp", [0.01, 0.003])  # two steps down
    assert lenet.full_scale_rate("bp") == 0.001


def test_lr_selection_skips_unstable_runs_and_scores_on_validation() -> None:
    from fa_tutor.bench.experiments.lenet_fashion_mnist import select_learning_rates, stable

    assert stable([1.2, 0.8, 0.7]) and not stable([1.2, 0.8, 205.7]) and not stable([1.0, None, math.nan])

    def line(rule, lr, val, losses, **extra):
        return {"rule": rule, "scale": "substituted", "setting": {"lr": lr},
                "metrics": {"val_accuracy": val, "test_accuracy": 100 - val,
                            "history": {"train_loss": losses}, **extra}}

    lines = [line("fa", 1e-2, 91.0, [1.1, 0.7, 300.0]),  # best score but blew up
             line("fa", 1e-3, 88.0, [1.2, 0.8, 0.6]),
             line("fa", 1e-4, 80.0, [2.0, 1.5, 1.2]),
             line("dkp", 1e-2, 95.0, [1.0], diverged_epoch=2.0),  # NaN later: never chosen
             line("dkp", 1e-3, 85.0, [1.0, 0.9])]
    assert select_learning_rates(lines) == {"dkp": 1e-3, "fa": 1e-3}


def test_only_selects_cells_by_identity_and_setting_values() -> None:
    from fa_tutor.bench.runner import parse_only, select_cells
    cells = EXPERIMENTS["localmixer"].cells(False)
    only = parse_only(["dataset=mnist5k", "mixer=S/1/1,M/1/16", "rule=fg_a,lg_fg_a"])
    assert only == {"dataset": {"mnist5k"}, "mixer": {"S/1/1", "M/1/16"},
                    "rule": {"fg_a", "lg_fg_a"}}
    picked = select_cells("localmixer", cells, only)
    assert len(picked) == 2 * 2 * 3  # mixers x rules x seeds: keys ANDed, values ORed
    assert {(c.dataset, c.setting["mixer"], c.rule) for c in picked} == {
        ("mnist5k", m, r) for m in ("S/1/1", "M/1/16") for r in ("fg_a", "lg_fg_a")}
    assert select_cells("localmixer", cells, parse_only(["seed=2"])) == [
        c for c in cells if c.seed == 2]
    assert select_cells("localmixer", cells, {}) == cells
    with pytest.raises(ValueError, match="no localmixer cell has that mixer; its values: M/1/16, "
                       "M/8/16, S/1/1"):
        select_cells("localmixer", cells, parse_only(["mixer=M/1/8"]))
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        parse_only(["mixer"])


def test_matched_memorisation_reads_each_run_at_the_first_epoch_past_each_level() -> None:
    import pandas as pd

    from fa_tutor.bench.experiments.noisy_mnist_memorisation import at_matched_memorisation
    curves = pd.DataFrame({
        "width": [200] * 6, "rule": ["fa"] * 3 + ["bp"] * 3, "seed": [0] * 6,
        "epoch": [10, 20, 30, 10, 20, 30],
        "train_accuracy": [80.0, 86.0, 91.0, 84.9, 85.0, 85.5],
        "test_accuracy": [70.0, 71.0, 72.0, 60.0, 61.0, 62.0]})
    got = at_matched_memorisation(curves, levels=(85.0, 90.0))
    assert got[["rule", "level", "epoch", "test_accuracy"]].values.tolist() == [
        ["bp", 85.0, 20, 61.0],  # bp never reaches 90 %: no row
        ["fa", 85.0, 20, 71.0], ["fa", 90.0, 30, 72.0]]


def test_long_budget_runs_pair_each_long_run_with_its_short_twin() -> None:
    import math

    import pandas as pd

    from fa_tutor.bench.experiments import noisy_mnist_memorisation as memo
    short = pd.DataFrame({"rule": ["adafa", "adafa", "fa"], "seed": [0, 0, 1],
                          "width": [60, 200, 200], "train_accuracy": [80.0, 87.2, 95.0]})
    long = pd.DataFrame({"rule": ["adafa", "fa"], "seed": [0, 0],
                         "train_accuracy": [91.5, 97.0], "test_accuracy": [84.0, 80.0]})
    curves = pd.DataFrame({
        "rule": ["adafa"] * 3 + ["fa"] * 2, "seed": [0] * 5, "width": [200] * 5,
        "epoch": [memo.EPOCHS, memo.EPOCHS + 10, memo.LONG_EPOCHS, 10, memo.LONG_EPOCHS],
        "train_accuracy": [87.2, 90.0, 91.5, 60.0, 97.0],
        "test_accuracy": [86.0, 85.5, 84.0, 88.0, 80.0]})
    got = memo.long_budget_runs(short, long, curves).set_index("rule")
    ada = got.loc["adafa"]
    assert (ada.train_at_short, ada.short_train) == (87.2, 87.2)  # width 200, not 60
    assert (ada.memorised_epoch, ada.test_at_memorised, ada.peak_test) == (
        memo.EPOCHS + 10, 85.5, 86.0)
    fa = got.loc["fa"]  # no short line for seed 0, no record at epoch 12,000
    assert math.isnan(fa.short_train) and math.isnan(fa.train_at_short)
    assert (fa.memorised_epoch, fa.test_at_memorised) == (memo.LONG_EPOCHS, 80.0)
    assert memo.long_budget_runs(short, long.iloc[:0], curves).empty


def test_alignment_by_classes_and_its_verdict() -> None:
    import math

    import pandas as pd

    from fa_tutor.bench.experiments.class_subsets import alignment_by_classes, alignment_verdict
    rows = []
    for rule, start, fall in [("fa", 0.6, 0.03), ("adafa", 0.8, 0.01), ("usf", 0.5, 0.0),
                              ("bp", math.nan, 0.0)]:
        for k in (2, 10):
            for seed in (0, 1):
                w = start - fall * k + 0.002 * seed
                rows.append({"rule": rule, "classes": k, "seed": seed, "test_accuracy": 90 - k,
                             "weight_cos/conv1": w, "weight_cos/fc1": w + 0.1,
                             "update_cos/total": 0.9})
    per_seed = alignment_by_classes(pd.DataFrame(rows))
    fa = per_seed[(per_seed.rule == "fa") & (per_seed.classes == 2)].weight_alignment
    assert fa.tolist() == pytest.approx([0.59, 0.592])  # the layers' mean: (0.54 + 0.64) / 2
    assert per_seed[per_seed.rule == "bp"].weight_alignment.isna().all()
    verdict = alignment_verdict(per_seed)
    assert "FA's mean weight alignment falls from k = 2 to k = 10 (0.591 → 0.351" in verdict
    assert "uSF's mean weight alignment stays within the seeds' spread" in verdict
    assert verdict.endswith("Largest fall first: FA, adaFA, uSF — the paper's order.")
    per_seed.loc[per_seed.rule == "usf", "weight_alignment"] -= per_seed.classes * 0.05
    assert "Largest fall first: uSF, FA, adaFA — the paper's order is FA, adaFA, uSF." in \
        alignment_verdict(per_seed)
    assert alignment_verdict(per_seed[per_seed.classes == 2]).startswith("Only k = 2")
    one_seed = per_seed[(per_seed.classes == 2) | (per_seed.seed == 0)]  # k = 10: seed 0 only
    verdict = alignment_verdict(one_seed)
    assert "FA's mean weight alignment goes from 0.591 at k = 2 to 0.350 at k = 10 (one seed" in verdict
    assert "falls" not in verdict and "Largest fall" not in verdict  # no verdict without a spread


def test_fdfa_verdict_counts_a_gap_only_beyond_the_seeds_spread() -> None:
    import math

    import pandas as pd

    from fa_tutor.bench.experiments.fdfa import mnist5k_verdict
    s = lambda *v: pd.Series(v, dtype=float)  # noqa: E731
    stats = {("fdfa_fc", "fdfa"): (s(2.0, 2.2, 2.1), [10.0, 12.0, 11.0]),
             ("fdfa_fc", "dfa"): (s(3.0, 3.1, 2.9), [20.0, 21.0, math.nan]),
             ("fdfa_fc", "dkp"): (s(2.1, 2.3, 1.9), [11.0, 13.0, 12.0])}
    verdict = mnist5k_verdict(stats, "fdfa_fc")
    assert "FDFA ends better than DFA (+0.90 points of test error, spread 0.10)" in verdict
    assert "converges faster than DFA (+9.5 epochs, spread 1.0)" in verdict  # 20.5 vs 11
    assert "FDFA ends within the seeds' spread of DKP (+0.00 points" in verdict
    assert "converges within the seeds' spread of DKP (+1.0 epochs, spread 1.0)" in verdict
    stats[("fdfa_fc", "dfa")] = (s(3.0, 3.1, 2.9), [math.nan] * 3)  # DFA never gets there
    assert ("converges faster than DFA: 3 of 3 FDFA runs reach the loss level (epoch 11.0 ± 1.0), "
            "none of DFA's 3 do within the budget") in mnist5k_verdict(stats, "fdfa_fc")
    stats[("fdfa_fc", "dkp")] = (s(2.1), [11.0])
    assert mnist5k_verdict(stats, "fdfa_fc") == (
        "fdfa_fc: waits for at least two seeds of FDFA, DFA and DKP.")


def test_overview_keeps_cells_that_lack_a_setting_others_have(tmp_path) -> None:
    """A setting only some cells have (localmixer's ``pairing``) is blank for the others,
    whose rows must not vanish from the table (pandas drops NaN group keys by default)."""
    import json

    from fa_tutor.bench import report
    lines = []
    for seed, extra in [(0, {}), (1, {}), (0, {"pairing": "released"})]:
        lines.append({"experiment": "localmixer", "rule": "lg_fg_w", "model": "localmixer",
                      "dataset": "mnist5k", "seed": seed, "scale": "substituted",
                      "setting": {"mixer": "M/1/16", **extra}, "cell": f"c{seed}{len(extra)}",
                      "config": {}, "metrics": {"test_error": 10.0 - len(extra) - seed},
                      "provenance": {"commit": "x", "device": "cpu", "started": f"t{seed}"}})
    (tmp_path / "localmixer.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    table = report.overview("localmixer", tmp_path)
    assert table[["pairing", "n"]].values.tolist() == [["", 2], ["released", 1]]


def test_cpu_lines_name_the_processor(tmp_path, monkeypatch) -> None:
    """A CPU line's provenance names the processor and its logical CPU count, not just "cpu"."""
    import importlib

    prov = importlib.import_module("fa_tutor.utils.provenance")  # the module (utils exports the function)

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Gold 6430\n"
                    "processor\t: 1\nmodel name\t: Intel(R) Xeon(R) Gold 6430\n")
    monkeypatch.setattr(prov.os, "cpu_count", lambda: 2)
    assert prov.cpu_name(info) == "Intel(R) Xeon(R) Gold 6430 (2 logical CPUs)"
    monkeypatch.setattr(prov.platform, "processor", lambda: "arm")
    assert prov.cpu_name(tmp_path / "missing") == "arm (2 logical CPUs)"  # macOS: no /proc
    monkeypatch.setattr(prov.platform, "processor", lambda: "")
    monkeypatch.setattr(prov.os, "cpu_count", lambda: None)
    assert prov.cpu_name(tmp_path / "missing") == "cpu"
    monkeypatch.setattr(prov, "cpu_name", lambda: "Test CPU (2 logical CPUs)")
    assert prov.provenance("cpu")["device_name"] == "Test CPU (2 logical CPUs)"


def test_output_layer_names_the_last_layer_with_a_feedback_matrix() -> None:
    from fa_tutor.bench.experiments.class_subsets import OUTPUT_LAYER
    from fa_tutor.rules.intercept import find_layers
    built = {"lenet": ft.models.LeNet(5), "resnet18": ft.models.resnet18(5)}
    assert set(built) == set(OUTPUT_LAYER)
    for name, model in built.items():
        assert find_layers(model, rule="fa")[-1].weight_name == OUTPUT_LAYER[name]


def test_fa_output_layer_alignment_is_capped_by_the_zero_sum_error() -> None:
    """What FA adds to W_L has zero column sums (softmax error sums to zero), so its
    cosine with B_L is at most ‖P B_L‖/‖B_L‖, whose mean square is (k - 1)/k."""
    from fa_tutor.bench.experiments.class_subsets import output_alignment_cap
    assert [round(output_alignment_cap(k), 3) for k in (2, 5, 10, 50)] == [0.707, 0.894, 0.949, 0.99]
    with pytest.raises(ValueError, match="k >= 2"):
        output_alignment_cap(1)
    k = 3
    torch.manual_seed(0)
    model = ft.models.MLP(20, [16], k)
    rule = ft.make_rule("fa", model, seed=0)
    W = model.layers[-1].weight
    W0, B = W.detach().clone(), rule.feedback["layers.1.weight"]
    opt = torch.optim.SGD(model.parameters(), lr=0.5)  # no weight decay: W_L - W_L(0) is learnt
    x, y = torch.randn(64, 20), torch.randint(0, k, (64,))
    for _ in range(50):
        opt.zero_grad()
        rule.step(x, y)
        opt.step()
    learnt = W.detach() - W0
    assert learnt.norm() > 0.5 * W0.norm()  # it learnt something
    assert learnt.sum(0).abs().max() < 1e-5  # zero column sums: 1ᵀ ΔW_L = 0
    PB = B - B.mean(0, keepdim=True)
    cos = torch.nn.functional.cosine_similarity(learnt.flatten(), B.flatten(), dim=0)
    assert 0 < cos <= PB.norm() / B.norm() + 1e-6
    # the cap is the mean: an i.i.d. B's ‖P B‖/‖B‖ over many columns
    big = torch.empty(k, 20000).uniform_(-1, 1)
    ratio = (big - big.mean(0, keepdim=True)).norm() / big.norm()
    assert ratio == pytest.approx(output_alignment_cap(k), abs=0.005)


def test_fa_output_reading_compares_the_output_layer_with_its_cap() -> None:
    import pandas as pd

    from fa_tutor.bench.experiments.class_subsets import (alignment_by_classes, fa_output_reading,
                                                          output_alignment_cap)
    rows = []
    for k in (2, 10):
        for seed in (0, 1):
            out = 0.3 * output_alignment_cap(k) + 0.01 * seed  # the same fraction of the cap
            rows.append({"rule": "fa", "model": "lenet", "classes": k, "seed": seed,
                         "test_accuracy": 90.0, "weight_cos/conv1.weight": 0.02 * k,
                         "weight_cos/fc1.weight": 0.0, "weight_cos/fc2.weight": out})
    rows.append({"rule": "bp", "model": "lenet", "classes": 2, "seed": 0, "test_accuracy": 95.0})
    per_seed = alignment_by_classes(pd.DataFrame(rows))
    fa = per_seed[per_seed.rule == "fa"]
    assert fa.output_alignment.tolist() == pytest.approx(
        [0.3 * 0.7071, 0.3 * 0.7071 + 0.01, 0.3 * 0.9487, 0.3 * 0.9487 + 0.01], abs=1e-4)
    assert fa.hidden_alignment.tolist() == pytest.approx([0.02, 0.02, 0.1, 0.1])
    assert per_seed[per_seed.rule == "bp"].output_alignment.isna().all()
    text = fa_output_reading(per_seed)
    assert "cos∠(W_L, B_L) = 0.217 ± 0.007, 0.290 ± 0.007 at k = 2, 10, under caps of 0.707, 0.949" \
        in text
    assert "as a fraction of its cap 0.307 ± 0.010, 0.305 ± 0.007, which stays within the seeds' " \
        "spread from k = 2 to k = 10" in text
    assert text.endswith("(their mean rises from k = 2 to k = 10).")  # no "beyond the cap" line
    flat = per_seed.assign(hidden_alignment=0.01 * per_seed.seed)  # the same at both k
    assert fa_output_reading(flat).endswith(
        "Beyond the cap, nothing moves FA's alignment by more than the seeds' spread.")
    assert "one seed at one end" in fa_output_reading(per_seed[per_seed.seed == 0])
    assert "two class counts" in fa_output_reading(per_seed[per_seed.classes == 2])


def test_gap_to_gd_pairs_each_rule_with_gd_on_the_same_classes() -> None:
    import pandas as pd

    from fa_tutor.bench.experiments.class_subsets import alignment_by_classes, gap_reading
    acc = {("bp", 2, 0): 99.0, ("bp", 2, 1): 90.0, ("bp", 10, 0): 80.0, ("bp", 10, 1): 70.0,
           ("usf", 2, 0): 98.0, ("usf", 2, 1): 89.5, ("usf", 10, 0): 76.0, ("usf", 10, 1): 65.0,
           ("fa", 2, 0): 95.0}  # fa: no seed-1 line
    rows = [{"rule": r, "classes": k, "seed": s, "test_accuracy": a} for (r, k, s), a in acc.items()]
    per_seed = alignment_by_classes(pd.DataFrame(rows)).set_index(["rule", "classes", "seed"])
    assert per_seed.gap_to_gd.loc["usf"].tolist() == [-1.0, -0.5, -4.0, -5.0]  # same k and seed
    assert per_seed.gap_to_gd.loc["fa", 2, 0] == -4.0
    assert per_seed.gap_to_gd.loc["bp"].isna().all()
    text = gap_reading(per_seed.reset_index())
    assert text == ("Test accuracy minus GD's on the same classes, in points: FA -4.00 at k = 2; "
                    "uSF -0.75 ± 0.35, -4.50 ± 0.71 at k = 2, 10. uSF's gap to GD widens from "
                    "k = 2 to k = 10.")
    no_gd = per_seed.reset_index().query("rule != 'bp'")
    assert gap_reading(alignment_by_classes(no_gd)) == "No rule has a GD line on the same classes yet."


def test_gap_reading_counts_pairs_and_splits_fitting_from_generalising() -> None:
    import pandas as pd

    from fa_tutor.bench.experiments.class_subsets import alignment_by_classes, gap_reading
    # (test, train) accuracy per (rule, k, seed); uSF beats adaFA on 3 of the 4 pairs
    acc = {("bp", 2, 0): (99.0, 99.5), ("bp", 2, 1): (97.0, 98.0),
           ("bp", 10, 0): (80.0, 81.0), ("bp", 10, 1): (82.0, 83.0),
           ("usf", 2, 0): (98.0, 98.5), ("usf", 2, 1): (95.0, 96.0),
           ("usf", 10, 0): (76.0, 77.0), ("usf", 10, 1): (78.0, 79.0),
           ("adafa", 2, 0): (98.5, 99.0), ("adafa", 2, 1): (94.0, 95.0),
           ("adafa", 10, 0): (72.0, 75.0), ("adafa", 10, 1): (74.0, 77.0)}
    rows = [{"rule": r, "classes": k, "seed": s, "test_accuracy": a, "train_accuracy": t}
            for (r, k, s), (a, t) in acc.items()]
    per_seed = alignment_by_classes(pd.DataFrame(rows)).set_index(["rule", "classes", "seed"])
    assert per_seed.train_gap_to_gd.loc["adafa"].tolist() == [-0.5, -3.0, -6.0, -6.0]
    assert per_seed.train_gap_to_gd.loc["bp"].isna().all()
    text = gap_reading(per_seed.reset_index())
    assert "uSF is nearer GD than adaFA on 3 of the 4 (k, seed) pairs." in text
    # test gaps at k = 10: adaFA -8, uSF -4; training-set gaps -6 (75 %) and -4 (100 %)
    assert text.endswith("At k = 10 the gap on the training set is -6.00, -4.00 points for adaFA, "
                         "uSF (75 %, 100 % of the test-set gap); GD itself fits 82.0 ± 1.4 % of "
                         "that training set in this budget.")
    fits = per_seed.reset_index()
    fits.loc[(fits.rule == "adafa") & (fits.classes == 10), "train_gap_to_gd"] = -7.0  # 88 %
    assert "(88 %, 100 % of the test-set gap): the rules fall behind GD in fitting the data, " \
        "not in generalising from it;" in gap_reading(fits)
    assert "training set" not in gap_reading(fits.assign(train_accuracy=float("nan"),
                                                         train_gap_to_gd=float("nan")))


def test_gap_over_run_compares_half_way_with_the_end_at_the_most_classes() -> None:
    import pandas as pd

    from fa_tutor.bench.experiments.class_subsets import gap_over_run

    def accuracy(rule: str, seed: int, epoch: int) -> float:
        if rule == "bp":
            return 80.0
        if rule == "usf":  # gap -2 / -3 up to epoch 10, -6 / -5 after: widens
            return 80.0 - ([2.0, 3.0] if epoch <= 10 else [6.0, 5.0])[seed]
        return 80.0 - [4.0, 4.5][seed]  # adafa: the same gap throughout

    rows = [{"rule": r, "classes": k, "seed": s, "epoch": e,
             "test_accuracy": accuracy(r, s, e) - (30.0 if k == 2 and r != "bp" else 0.0)}
            for r in ("bp", "adafa", "usf") for k in (2, 10) for s in (0, 1) for e in range(1, 21)]
    hist = pd.DataFrame(rows)
    assert gap_over_run(hist) == (
        "At k = 10, the gap to GD averaged over epochs 6–10 and over epochs 16–20: "
        "adaFA -4.25 ± 0.35, -4.25 ± 0.35 (stays within the seeds' spread); "
        "uSF -2.50 ± 0.71, -5.50 ± 0.71 (widens).")
    assert "needs GD's history" in gap_over_run(hist[hist.rule != "bp"])
    assert "at least 10 epochs" in gap_over_run(hist[hist.epoch <= 8])
