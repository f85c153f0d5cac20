"""The command line as a researcher runs it: each test runs ``python -m fa_tutor`` in a
subprocess and checks the exit status and the message (issue 19).

Tiny work only: the ``digits`` data set, one epoch, empty caches.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: a Python prelude that makes every network connection fail like an offline machine
OFFLINE = ("import socket\n"
           "def offline(*a, **k):\n"
           "    raise socket.gaierror(-3, 'Temporary failure in name resolution')\n"
           "socket.getaddrinfo = offline\n")
#: a prelude that makes the coursework extra look uninstalled
NO_NBFORMAT = "import sys\nsys.modules['nbformat'] = None\n"


def env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "FA_TUTOR_DEVICE": "cpu",
            "FA_TUTOR_DATA": str(tmp_path / "data"), "FA_TUTOR_SCRATCH": str(tmp_path / "scratch"),
            **extra}


def cli(tmp_path: Path, *args: str, prelude: str = "", timeout: float = 300,
        **extra_env: str) -> subprocess.CompletedProcess:
    """``python -m fa_tutor ARGS`` (after ``prelude``, if given) in ``tmp_path``."""
    if prelude:
        cmd = [sys.executable, "-c", prelude + "import sys\nfrom fa_tutor.cli import main\n"
               "raise SystemExit(main(sys.argv[1:]))", *args]
    else:
        cmd = [sys.executable, "-m", "fa_tutor", *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=timeout,
                          env=env(tmp_path, **extra_env))


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    """Exit status 2 and exactly one ``error: ...`` line on stderr, no traceback."""
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


TRAIN = ["train", "--set", "dataset=digits", "--set", "epochs=1"]


@pytest.mark.parametrize("override, message", [
    ("lr=abc", "error: lr must be a float, got 'abc'"),
    ("epochs=abc", "error: epochs must be an int, got 'abc'"),
    ("lr=nan", "error: lr must be a finite number >= 0, got nan"),
    ("epochs=0", "error: epochs must be an int >= 1, got 0"),
    ("batch_size=-5", "error: batch_size must be an int >= 0 (0 = the full batch), got -5"),
    ("optimizer=sgdd", "error: Unknown optimizer 'sgdd'; choose one of: sgd, adam"),
    ("rule=fx", "error: Unknown rule 'fx'; choose one of: adafa, bp,"),
])
def test_bad_config_values_are_one_error_line(tmp_path, override, message) -> None:
    line = one_error_line(cli(tmp_path, *TRAIN, "--set", override))
    assert line.startswith(message)


@pytest.mark.parametrize("args, spelling", [
    (["fa", "--epochs", "3"], "use --set rule=fa --set epochs=3 "),
    (["--rule", "kp", "--model=lenet", "--batch-size", "32", "digits"],
     "use --set rule=kp --set model=lenet --set batch_size=32 --set dataset=digits "),
])
def test_train_arguments_spelt_as_options_get_their_set_spelling(tmp_path, args, spelling) -> None:
    line = one_error_line(cli(tmp_path, "train", *args))
    assert line.startswith("error: train takes its settings as --set KEY=VALUE: " + spelling)
    assert line.endswith("(python -m fa_tutor train --help lists the fields)")


def test_unknown_arguments_are_named_with_the_subcommands_usage(tmp_path) -> None:
    line = one_error_line(cli(tmp_path, "train", "--set", "epochs=1", "--nope", "3"))
    assert line.startswith("error: unrecognized arguments: --nope 3; train takes its settings "
                           "as --set KEY=VALUE")
    proc = cli(tmp_path, "bench", "list", "extra")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[0].startswith("usage: python -m fa_tutor bench list ")
    assert proc.stderr.strip().splitlines()[-1] == (
        "python -m fa_tutor bench list: error: unrecognized arguments: extra")


def test_bad_values_are_refused_before_any_work_and_debug_shows_the_traceback(tmp_path) -> None:
    proc = cli(tmp_path, *TRAIN, "--set", "lr=nan", "-v")
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr and "INFO" not in proc.stderr  # no data loaded, no step
    assert proc.stderr.strip().splitlines()[-1] == "error: lr must be a finite number >= 0, got nan"


def test_offline_data_fetch_is_one_line_saying_where_the_files_go(tmp_path) -> None:
    line = one_error_line(cli(tmp_path, "data", "fetch", "cifar100", prelude=OFFLINE))
    assert line.startswith("error: cannot download cifar100 (no network? ")
    assert f"extract it into {tmp_path / 'data'} (giving {tmp_path / 'data' / 'cifar-100-python'})" \
        in line
    line = one_error_line(cli(tmp_path, "data", "fetch", "mnist", prelude=OFFLINE))
    assert line.startswith("error: cannot download mnist (no network? ")
    assert line.endswith(f"by hand into {tmp_path / 'data' / 'MNIST' / 'raw'}")


@pytest.mark.parametrize("rule", ["dfa", "fa"])
def test_images_too_small_for_the_model_get_the_resize_hint(tmp_path, rule) -> None:
    line = one_error_line(cli(tmp_path, *TRAIN, "--set", f"rule={rule}", "--set", "model=lenet5"))
    assert line.startswith(f"error: rule '{rule}': the batch (x of shape (64, 1, 8, 8), y of "
                           "shape (64,)) does not fit model 'lenet5'")
    assert 'The images are 8×8: resize them with data_options={"resize": 32}' in line


def _wait_for(proc: subprocess.Popen, text: str, timeout: float = 120) -> list[str]:
    """stderr lines of ``proc`` up to the first one containing ``text``."""
    seen, end = [], time.monotonic() + timeout
    while time.monotonic() < end:
        line = proc.stderr.readline()
        if not line and proc.poll() is not None:
            break
        seen.append(line)
        if text in line:
            return seen
    proc.kill()
    raise AssertionError(f"{text!r} never appeared: {''.join(seen)}")


def _interrupt_after(tmp_path: Path, args: list[str], text: str,
                     then: str | None = None) -> tuple[int, str]:
    proc = subprocess.Popen([sys.executable, "-m", "fa_tutor", *args], cwd=tmp_path,
                            env=env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    seen = _wait_for(proc, text)
    if then:
        seen += _wait_for(proc, then)
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=120)
    return proc.returncode, "".join(seen) + rest


def test_ctrl_c_saves_the_checkpoint_and_a_rerun_resumes(tmp_path) -> None:
    args = ["train", "--set", "dataset=digits", "--set", "epochs=1000", "--set",
            "model_options={\"hidden\": [8]}", "--checkpoint", "ck.pt", "-v"]
    code, err = _interrupt_after(tmp_path, args, "epoch 1/1000")
    assert code == 130, err
    assert "interrupted — rerun the same command to resume" in err
    assert "Traceback" not in err and (tmp_path / "ck.pt").exists()
    code, err = _interrupt_after(tmp_path, args, "resumed ck.pt at epoch", then="/1000: train")
    assert code == 130, err
    resumed_at = int(err.split("resumed ck.pt at epoch ")[1].split()[0])
    assert resumed_at >= 1
    first_epoch = int(err.split("INFO fa_tutor.training.loop: epoch ")[1].split("/")[0])
    assert first_epoch == resumed_at + 1  # it went on, not from the start


def test_ctrl_c_in_bench_run_keeps_the_cell_checkpoint_and_resumes(tmp_path) -> None:
    args = ["bench", "run", "conservation-noisy-mnist", "--quick", "--limit", "1",
            "--out", "out", "-v"]
    code, err = _interrupt_after(tmp_path, args, "epoch 5/30")
    assert code == 130, err
    assert "interrupted — rerun the same command to resume" in err and "Traceback" not in err
    assert list((tmp_path / "out" / ".checkpoints" / "conservation-noisy-mnist").glob("*.pt"))
    proc = cli(tmp_path, *args)
    assert proc.returncode == 0, proc.stderr
    assert "resumed" in proc.stderr
    assert proc.stdout.strip().splitlines()[-1].startswith(
        "conservation-noisy-mnist: 1 new result line(s) in out/conservation-noisy-mnist.jsonl")
    path = tmp_path / "out" / "conservation-noisy-mnist.jsonl"
    assert len(path.read_text().splitlines()) == 1


def test_missing_data_is_checked_once_before_a_sweep(tmp_path) -> None:
    line = one_error_line(cli(tmp_path, "bench", "run", "lenet-cifar100-subsets", "--quick"))
    assert line == ("error: lenet-cifar100-subsets needs cifar100, which is not on this machine; "
                    "download it first with `python -m fa_tutor data fetch cifar100` "
                    "(cache: $FA_TUTOR_DATA, default ~/.cache/fa_tutor)")


def test_coursework_without_its_extra_names_the_install(tmp_path) -> None:
    (tmp_path / "nb.ipynb").write_text("{}")
    line = one_error_line(cli(tmp_path, "coursework", "check", "nb.ipynb", prelude=NO_NBFORMAT))
    assert line == ("error: this command needs nbformat, which is not installed: "
                    "pip install 'fa_tutor[coursework]'")


def test_device_and_verbose_are_accepted_by_every_command_that_runs_work(tmp_path) -> None:
    proc = cli(tmp_path, *TRAIN, "--set", "model_options={\"hidden\": [8]}", "--device", "cpu",
               "-v")
    assert proc.returncode == 0, proc.stderr
    assert "INFO fa_tutor.training.loop: epoch 1/1" in proc.stderr
    assert " · cpu · " in proc.stdout
    proc = cli(tmp_path, "train", "--device", "tpu")
    assert one_error_line(proc).startswith("error: Unknown device 'tpu'; choose one of: auto, cpu")
    for args in (["bench", "run", "--help"], ["coursework", "check", "--help"]):
        text = cli(tmp_path, *args).stdout
        assert "--device DEVICE" in text and "-v, --verbose" in text, args
    assert "-v, --verbose" in cli(tmp_path, "data", "fetch", "--help").stdout


def test_train_help_lists_the_fields_with_defaults_and_choices(tmp_path) -> None:
    proc = cli(tmp_path, "train", "--help")
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())  # unwrapped
    assert "lr = 0.05: learning rate of the forward weights" in text
    assert "epochs = 10: passes over the training set" in text
    assert "optimizer = sgd: \"sgd\" or \"adam\" [choices: sgd, adam]" in text
    assert "[choices: constant, step, exponential, linear, cosine]" in text
    assert "rule = bp: a name in fa_tutor.available_rules() [choices: adafa, bp, brsf, dfa," in text
    from fa_tutor.training import RunConfig  # every field is listed
    for name in RunConfig.__dataclass_fields__:
        assert f" {name} = " in text, name


def test_train_prints_a_summary_and_saves_the_run(tmp_path) -> None:
    proc = cli(tmp_path, *TRAIN, "--set", "model_options={\"hidden\": [8]}", "--out", "run")
    assert proc.returncode == 0, proc.stderr
    summary = proc.stdout.strip().splitlines()[-2]
    assert summary.startswith("digits · mlp · bp · cpu · ") and "epoch 1: test accuracy " in summary
    assert proc.stdout.strip().endswith("saved the run to run")
    saved = json.loads((tmp_path / "run" / "run.json").read_text())
    assert saved["config"]["dataset"] == "digits" and saved["config"]["epochs"] == 1
    assert saved["metrics"]["history"]["epoch"] == [1]
    assert f"{saved['metrics']['test_accuracy']:.4g} %" in summary
    assert (tmp_path / "run" / "history.csv").read_text().startswith("epoch,lr,train_loss")
    assert (tmp_path / "run" / "model.pt").stat().st_size > 0


def test_quick_runs_go_to_a_scratch_folder_and_a_finished_grid_says_so(tmp_path) -> None:
    args = ["bench", "run", "estimator-variance", "--quick", "--limit", "1"]
    proc = cli(tmp_path, *args)
    scratch = tmp_path / "scratch" / "estimator-variance.jsonl"
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == (
        f"estimator-variance: 1 new result line(s) in {scratch}; 11 of 12 cells still to run")
    assert len(scratch.read_text().splitlines()) == 1
    assert not (tmp_path / "results").exists()
    # a finished grid: one sentence, no empty progress bar
    lines = [json.loads(line) for line in scratch.read_text().splitlines()]
    done = tmp_path / "done"
    done.mkdir()
    from fa_tutor.bench import get_experiment
    cells = get_experiment("estimator-variance").cells(True)
    (done / "estimator-variance.jsonl").write_text("".join(
        json.dumps({**lines[0], "cell": c.key}) + "\n" for c in cells))
    proc = cli(tmp_path, *args, "--out", "done")
    assert proc.returncode == 0 and "it/s" not in proc.stderr
    assert proc.stdout.strip() == ("estimator-variance: all 12 cells already done in "
                                   "done/estimator-variance.jsonl (--out DIR runs them again "
                                   "elsewhere)")


def test_only_runs_the_selected_cells_and_a_typo_names_the_valid_values(tmp_path) -> None:
    args = ["bench", "run", "estimator-variance", "--quick", "--out", "only", "--only", "rule=fa"]
    proc = cli(tmp_path, *args)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == (
        "estimator-variance: 1 new result line(s) in only/estimator-variance.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "only" / "estimator-variance.jsonl")
            .read_text().splitlines()]
    assert [r["rule"] for r in rows] == ["fa"]
    assert cli(tmp_path, *args).stdout.strip() == (
        "estimator-variance: all 1 selected cells already done in only/estimator-variance.jsonl "
        "(--out DIR runs them again elsewhere)")
    line = one_error_line(cli(tmp_path, *args[:-1], "rule=fx"))
    assert line.startswith("error: --only rule=fx: no estimator-variance cell has that rule; "
                           "its values: adafa, bp, brsf,")
    line = one_error_line(cli(tmp_path, *args[:-1], "width=15"))
    assert line == ("error: --only width=...: estimator-variance's cells have no field 'width'; "
                    "choose from dataset, model, rule, scale, seed")


def test_bench_report_and_status_print_the_chapter_tables(tmp_path) -> None:
    from fa_tutor.bench import get_experiment

    keys = [c.key for c in get_experiment("fdfa").cells(False)
            if (c.rule, c.model, c.dataset) == ("bp", "fdfa_fc", "mnist")]
    line = {"experiment": "fdfa", "rule": "bp", "model": "fdfa_fc", "dataset": "mnist",
            "seed": 0, "scale": "full", "cell": keys[0], "setting": {}, "config": {},
            "metrics": {"test_error": 2.5, "train_accuracy": 99.0},
            "provenance": {"commit": "abc1234", "fa_tutor": "0.1.0", "torch": "2", "cuda": None,
                           "device": "cpu", "started": "2026-01-01T00:00:00Z", "wall_s": 1.0}}
    (tmp_path / "res").mkdir()
    rerun = {**line, "metrics": {"test_error": 3.5, "train_accuracy": 98.0},  # on a GPU
             "provenance": {**line["provenance"], "device": "cuda"}}
    lines = [line, rerun]
    (tmp_path / "res" / "fdfa.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    proc = cli(tmp_path, "bench", "report", "fdfa", "--out", "res")
    assert proc.returncode == 0, proc.stderr
    header, row = proc.stdout.splitlines()[:2]
    assert header.split() == ["rule", "model", "dataset", "scale", "test_error",
                              "train_accuracy", "n"]
    assert row.split() == ["bp", "fdfa_fc", "mnist", "full", "3.00", "±", "0.50", "98.50", "±",
                           "0.50", "2"]
    assert "abc1234" in proc.stdout and proc.stdout.strip().endswith("from res/fdfa.jsonl")
    proc = cli(tmp_path, "bench", "status", "fdfa", "--out", "res")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[0].split() == ["experiment", "model", "dataset", "setting",
                                                  "scale", "cells", "done", "quick_done",
                                                  "status"]
    assert any(r.split()[:3] == ["fdfa", "fdfa_fc", "mnist"] and r.split()[-1] == "partial"
               for r in proc.stdout.splitlines())
    assert one_error_line(cli(tmp_path, "bench", "report", "nope")).startswith(
        "error: Unknown experiment 'nope'; choose one of: ")


def test_help_answers_without_importing_torch(tmp_path) -> None:
    code = ("import sys, time\nt = time.perf_counter()\nfrom fa_tutor.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(time.perf_counter() - t, 'torch' in sys.modules, file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env(tmp_path), timeout=60)
    seconds, torch_loaded = proc.stderr.split()
    assert torch_loaded == "False" and float(seconds) < 1.0
    assert "{rules,train,bench,data,coursework}" in proc.stdout


def test_readme_command_line_and_help_agree() -> None:
    """Each README command is a real subcommand whose --help has every flag it shows, and
    every subcommand is in the README."""
    import re

    from fa_tutor.cli import _leaves, build_parser

    block = (REPO / "README.md").read_text().split("## Command line\n\n```\n")[1].split("```")[0]
    parser = build_parser()
    shown = set()
    for line in block.splitlines():
        words = line.split("#")[0].split()
        assert words[:3] == ["python", "-m", "fa_tutor"], line
        for alternative in " ".join(words[3:]).split(" | "):
            node, path = parser, []
            for word in alternative.split():
                subs = [a for a in node._actions if isinstance(a, argparse._SubParsersAction)]
                if not subs or word not in subs[0].choices:
                    break
                node, path = subs[0].choices[word], [*path, word]
            shown.add(tuple(path))
            options = {o for a in node._actions for o in a.option_strings}
            for flag in re.findall(r"--[a-z][\w-]*", alternative):
                assert flag in options, (line, flag)
    leaves = {path for path, _ in _leaves(parser)}
    assert leaves <= shown, leaves - shown


def test_a_sweep_runs_the_cells_whose_data_is_here_and_names_the_fetch_for_the_rest(
        tmp_path, monkeypatch, capsys, caplog) -> None:
    from fa_tutor.bench.registry import EXPERIMENTS, Cell, Experiment
    from fa_tutor.cli import main
    from fa_tutor.training import RunConfig

    monkeypatch.setenv("FA_TUTOR_DATA", str(tmp_path / "data"))
    base = RunConfig(model_options={"hidden": [8]}, epochs=1, device="cpu")
    cells = [Cell("mixed", "bp", "mlp", dataset, 0, "full", base.replace(dataset=dataset))
             for dataset in ("digits", "cifar10")]
    monkeypatch.setitem(EXPERIMENTS, "mixed", Experiment("mixed", "test", lambda quick: cells))
    assert main(["bench", "run", "mixed", "--out", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == (f"mixed: 1 new result line(s) in {tmp_path / 'mixed.jsonl'}; 1 of 2 "
                           "cells still to run, some needing data not on this machine: "
                           "`python -m fa_tutor data fetch cifar10`")
    assert "Traceback" not in err
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warning.startswith("mixed needs cifar10, which is not on this machine; download it "
                              "first with `python -m fa_tutor data fetch cifar10`")
    assert warning.endswith("running the 1 cell(s) whose data is here")
