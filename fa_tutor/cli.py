"""Command line: ``python -m fa_tutor {rules,train,bench,data,coursework}``.

Imports are lazy (inside each command), so ``--help`` answers without loading torch.
Bad input is one ``error: ...`` line and exit status 2 (``-v``/``--debug`` add the
traceback); Ctrl-C ends with status 130, after a checkpointed run saved its state.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
from pathlib import Path

from . import __version__

#: optional modules -> the extra that installs them
EXTRAS = {"nbformat": "coursework", "papermill": "coursework", "jupytext": "coursework",
          "yaml": "coursework", "ipykernel": "coursework", "torchvision": "vision",
          "ray": "cluster"}
#: the subcommands that run work: each takes --device
WORK = {("train",), ("bench", "run"), ("coursework", "check")}
DEVICE_HELP = "cpu, cuda, cuda:N or auto (default: $FA_TUTOR_DEVICE, else cuda when available)"


def _rules(args: argparse.Namespace) -> int:
    from .rules import available_rules, rule_spec

    for name in available_rules():
        spec = rule_spec(name)
        print(f"{name:8s} {spec.family:20s} {spec.summary}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from .training import RunConfig, train

    cfg = RunConfig().with_overrides(args.set)
    if args.device:
        cfg = cfg.replace(device=args.device)
    result = train(cfg, checkpoint=args.checkpoint, checkpoint_every_s=args.checkpoint_every)
    print(result.history.to_string(index=False))
    print(run_summary(result))
    if args.out:
        print(f"saved the run to {save_run(result, args.out)}")
    return 0


def run_summary(result) -> str:
    """One line: data, model, rule, device, wall time and the final (or best-val) metrics."""
    cfg, final = result.config, result.final
    device = next(iter(result.model.parameters())).device
    shown = [("test accuracy", "test_accuracy", " %"), ("train accuracy", "train_accuracy", " %"),
             ("val accuracy", "val_accuracy", " %"), ("train loss", "train_loss", "")]
    metrics = ", ".join(f"{label} {final[key]:.4g}{unit}" for label, key, unit in shown
                        if key in final)
    which = f"best-val epoch {final['epoch']}" if cfg.val_fraction > 0 else \
        f"epoch {final.get('epoch', cfg.epochs)}"
    return (f"{cfg.dataset} · {cfg.model} · {cfg.rule} · {device} · "
            f"{result.wall_s:.1f} s · {which}: {metrics}")


def save_run(result, out: str) -> Path:
    """``run.json`` (config, metrics with history, provenance), ``history.csv`` and
    ``model.pt`` (the weights and the rule's feedback) in folder ``out``."""
    import torch

    from .bench.runner import summarize
    from .utils import provenance

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    device = next(iter(result.model.parameters())).device
    line = {"config": result.config.to_dict(), "metrics": summarize(result.history, result.final),
            "provenance": provenance(device, wall_s=result.wall_s)}
    (folder / "run.json").write_text(json.dumps(line, indent=1) + "\n")
    result.history.to_csv(folder / "history.csv", index=False)
    torch.save({"model": result.model.state_dict(),
                "feedback": {k: v.detach().cpu() for k, v in result.rule.feedback.items()}},
               folder / "model.pt")
    return folder


def _bench_list(args: argparse.Namespace) -> int:
    from .bench import list_experiments

    for exp in list_experiments():
        where = "offline" if exp.offline else "needs downloads"
        print(f"{exp.name:32s} {len(exp.cells(False)):4d} cells ({len(exp.cells(True))} quick), {where}\n"
              f"    {exp.description}")
    return 0


def _bench_run(args: argparse.Namespace) -> int:
    from .bench import get_experiment, run_experiment
    from .bench.runner import (SweepError, fetch_hint, missing_data, output_dir, parse_only,
                               pending_cells, results_path, select_cells)

    only = parse_only(args.only)
    total = len(select_cells(args.name, get_experiment(args.name).cells(args.quick), only,
                             quick=args.quick))
    which = f"{total} selected" if only else f"{total}"
    out = output_dir(args.quick, args.out)
    path = results_path(args.name, out)
    if args.checkpoint_every is not None:  # for the cells, in this and in worker processes
        os.environ["FA_TUTOR_CHECKPOINT_EVERY"] = str(args.checkpoint_every)
    if not pending_cells(args.name, quick=args.quick, out=out, only=only):
        print(f"{args.name}: all {which} cells already done in {path} "
              "(--out DIR runs them again elsewhere)")
        return 0
    try:
        lines = run_experiment(args.name, quick=args.quick, device=args.device, out=out,
                               limit=args.limit, workers=args.workers, ray_address=args.ray,
                               retries=args.retries, threads=args.threads, only=only)
    except SweepError as err:
        print(f"error: {err}", file=sys.stderr)
        print(f"{args.name}: {len(err.new_lines)} new result line(s) in {path}; "
              "rerun to retry the rest")
        return 1
    left = pending_cells(args.name, quick=args.quick, out=out, only=only)
    need = missing_data(left)
    print(f"{args.name}: {len(lines)} new result line(s) in {path}"
          + (f"; {len(left)} of {which} cells still to run" if left else "")
          + (f", some needing data not on this machine: {fetch_hint(need)}" if need else ""))
    return 0


def _bench_report(args: argparse.Namespace) -> int:
    import pandas as pd

    from .bench import get_experiment, report
    from .bench.runner import results_path

    get_experiment(args.name)
    path = results_path(args.name, args.out)
    table = report.overview(args.name, args.out)
    if table.empty:
        print(f"{args.name}: no results in {path} yet; run "
              f"`python -m fa_tutor bench run {args.name}`")
        return 0
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(table.to_string(index=False))
        print()
        print(report.provenance_table(report.load(args.name, args.out)).to_string(index=False))
    print(f"from {path}")
    return 0


def _bench_status(args: argparse.Namespace) -> int:
    import pandas as pd

    from .bench import report

    table = report.status(args.names or None, out=args.out)
    if table.empty:
        print("no full-scale cells declared")
        return 0
    columns = ["experiment", "model", "dataset", "setting", "scale", "cells", "done",
               "quick_done", "status"]
    with pd.option_context("display.width", 200, "display.max_rows", 500):
        print(table[columns].to_string(index=False))
    return 0


def _data(args: argparse.Namespace) -> int:
    from .data import DATASETS, load_dataset

    if args.data_cmd == "list":
        for info in DATASETS.values():
            kind = "offline" if info.offline else "download"
            here = "here" if info.is_present(args.root) else "missing"
            print(f"{info.name:14s} {kind:8s} {here:7s} {info.description}")
        return 0
    ds = load_dataset(args.name, root=args.root, download=True)
    print(f"{ds} ready ({ds.source})")
    return 0


def _coursework(args: argparse.Namespace) -> int:
    from .coursework import export, grading

    if args.cw_cmd == "export":
        for path in export.export(args.directory, with_solutions=args.with_solutions,
                                  force=args.force):
            print(path)
        return 0
    result = grading.check(args.target, out=args.out, quick=not args.full, jobs=args.jobs)
    if isinstance(result, grading.Gradebook):
        print(grading.summary(result))
        print(f"gradebook: {result.csv_path}\nsummary: {result.summary_path}")
        return 0 if result.all_passed else 1
    print(json.dumps(result.statuses, indent=2))
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    return 0 if result.passed else 1


def registry_names() -> dict[str, tuple[str, ...]]:
    """The names the RunConfig fields ``model``, ``rule`` and ``dataset`` take, from their
    registries (importing them loads torch)."""
    from .data import DATASETS
    from .rules import available_rules
    from .training import MODELS

    return {"model": tuple(MODELS), "rule": tuple(available_rules()), "dataset": tuple(DATASETS)}


def config_help() -> str:
    """The ``train --help`` epilog: every RunConfig field, its default, comment and choices."""
    import dataclasses
    import textwrap

    from .training.config import CHOICES, RunConfig, field_help

    choices = {**CHOICES, "device": ("auto", "cpu", "cuda", "cuda:N")}
    try:  # the registries load torch: only here, for this help text
        choices.update(registry_names())
    except ImportError:
        pass
    docs, default = field_help(), RunConfig()
    lines = ["RunConfig fields (--set KEY=VALUE; JSON for dicts and lists, null for None):"]
    for f in dataclasses.fields(RunConfig):
        value = getattr(default, f.name)
        shown = json.dumps(list(value) if isinstance(value, tuple) else value) \
            if isinstance(value, (dict, tuple, bool, type(None))) else str(value)
        text = docs.get(f.name, "")
        if f.name in choices:
            text += f" [choices: {', '.join(choices[f.name])}]"
        lines += textwrap.wrap(text, 96, initial_indent=f"  {f.name} = {shown}: ".ljust(30),
                               subsequent_indent=" " * 6)
    return "\n".join(lines)


class _TrainHelp(argparse.Action):
    """``train --help``: the fields' table is built (registries imported) only when asked."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS,
                 default: str = argparse.SUPPRESS, help: str | None = None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        parser.epilog = config_help()
        parser.print_help()
        parser.exit()


def _number(kind: type, low: float) -> "callable":
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {text}")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m fa_tutor",
                                description="Learning without weight transport: rules, benchmarks, coursework.")
    p.add_argument("--version", action="version", version=f"fa_tutor {__version__}")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="log progress (INFO); tracebacks on errors")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("rules", help="list the learning rules").set_defaults(fn=_rules)
    t = sub.add_parser("train", help="train one RunConfig, e.g. --set rule=fa --set epochs=5",
                       add_help=False, formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Train one RunConfig (defaults below, each overridable with "
                                   "--set) and print its history and a one-line summary.")
    t.add_argument("-h", "--help", action=_TrainHelp,
                   help="show this help (with every field) and exit")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a RunConfig field (repeatable); the fields are listed below")
    t.add_argument("--device", help=DEVICE_HELP + "; the same as --set device=...")
    t.add_argument("--checkpoint", metavar="FILE",
                   help="saved during the run and on Ctrl-C; resumed if it exists")
    t.add_argument("--checkpoint-every", type=_number(float, 0), metavar="SECONDS",
                   help="seconds between checkpoints (default 60, or $FA_TUTOR_CHECKPOINT_EVERY)")
    t.add_argument("--out", metavar="DIR", help="save the run: run.json, history.csv, model.pt")
    t.set_defaults(fn=_train)
    b = sub.add_parser("bench", help="benchmark experiments").add_subparsers(dest="bench_cmd", required=True)
    b.add_parser("list", help="the benchmark experiments").set_defaults(fn=_bench_list)
    r = b.add_parser("run", help="run an experiment's unfinished cells")
    r.add_argument("name")
    r.add_argument("--quick", action="store_true", help="the small variant (seconds); written to a "
                   "scratch folder ($FA_TUTOR_SCRATCH, default <tmp>/fa_tutor-quick) unless --out")
    r.add_argument("--device", default="auto", help=DEVICE_HELP)
    r.add_argument("--out", metavar="DIR", help="results directory (default: the repository's "
                   "results/, or the scratch folder for --quick)")
    r.add_argument("--limit", type=_number(int, 1), help="run at most this many cells")
    r.add_argument("--only", action="append", metavar="KEY=VALUE[,VALUE...]",
                   help="run only the cells with these values (rule, model, dataset, seed, scale "
                   "or a setting, e.g. --only dataset=mnist5k --only mixer=S/1/1,M/1/16); repeatable")
    r.add_argument("--workers", type=_number(int, 1), default=1,
                   help="run cells in N local processes (one GPU each)")
    r.add_argument("--ray", metavar="ADDRESS", help="run cells on a Ray cluster ('auto', an address, "
                   "or 'local' to start one here); needs pip install 'fa_tutor[cluster]'")
    r.add_argument("--retries", type=_number(int, 0), default=2,
                   help="retries of a failing cell (default 2)")
    r.add_argument("--threads", type=_number(int, 1),
                   help="torch CPU threads per cell (identical results across modes)")
    r.add_argument("--checkpoint-every", type=_number(float, 0), metavar="SECONDS",
                   help="seconds between a training cell's checkpoints (default 60)")
    r.set_defaults(fn=_bench_run)
    rep = b.add_parser("report", help="an experiment's results as the book's table")
    rep.add_argument("name")
    rep.add_argument("--out", metavar="DIR", help="results directory (default: results/)")
    rep.set_defaults(fn=_bench_report)
    st = b.add_parser("status", help="which cells of each experiment have full-scale results")
    st.add_argument("names", nargs="*", metavar="NAME", help="experiments (default: all)")
    st.add_argument("--out", metavar="DIR", help="results directory (default: results/)")
    st.set_defaults(fn=_bench_status)
    d = sub.add_parser("data", help="data sets").add_subparsers(dest="data_cmd", required=True)
    dl = d.add_parser("list", help="known data sets, and whether each is on this machine")
    dl.add_argument("--root", help="cache directory (default $FA_TUTOR_DATA or ~/.cache/fa_tutor)")
    dl.set_defaults(fn=_data)
    f = d.add_parser("fetch", help="download a data set into the cache")
    f.add_argument("name")
    f.add_argument("--root", help="cache directory (default $FA_TUTOR_DATA or ~/.cache/fa_tutor)")
    f.set_defaults(fn=_data)
    c = sub.add_parser("coursework", help="student notebooks").add_subparsers(dest="cw_cmd", required=True)
    e = c.add_parser("export", help="write student notebooks (solutions removed) into DIR")
    e.add_argument("directory")
    e.add_argument("--with-solutions", action="store_true",
                   help="the instructor's key: solutions in place, every check passes")
    e.add_argument("--force", action="store_true", help="overwrite notebooks already in DIR")
    e.set_defaults(fn=_coursework)
    k = c.add_parser("check", help="grade a notebook, or every notebook under a class folder "
                     "(CSV gradebook)")
    k.add_argument("target", metavar="NOTEBOOK|DIR")
    k.add_argument("--out", help="folder for the graded copies (and the gradebook of a DIR; "
                   "default DIR-graded beside DIR; none for one notebook)")
    k.add_argument("--jobs", type=int, help="notebooks graded at once (default: one per CPU)")
    k.add_argument("--full", action="store_true", help="run with the chapter's default (not quick) settings")
    k.set_defaults(fn=_coursework)
    _add_common_options(p)
    return p


def _leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """Every (subcommand path, parser) that runs a command."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _leaves(child, (*path, name))
            return
    if path:
        yield path, parser


def _add_common_options(p: argparse.ArgumentParser) -> None:
    """-v/--debug on every subcommand, --device on those that run work."""
    for path, leaf in _leaves(p):
        leaf.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                          help="log progress (INFO); tracebacks on errors")
        leaf.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                          help="show the traceback of an error")
        if path in WORK and not any("--device" in a.option_strings for a in leaf._actions):
            leaf.add_argument("--device", help=DEVICE_HELP)


def _interrupted(args: argparse.Namespace, err: KeyboardInterrupt) -> str:
    if args.cmd == "train" and not args.checkpoint:
        return "interrupted; nothing saved (--checkpoint FILE makes a run resumable)"
    if args.cmd == "bench":
        return ("interrupted — rerun the same command to resume (finished cells are saved; "
                "a training cell resumes from its checkpoint)")
    detail = f" ({err})" if str(err) else ""
    return f"interrupted — rerun the same command to resume{detail}"


def _command_path(args: argparse.Namespace) -> tuple[str, ...]:
    """The subcommand the arguments chose, e.g. ``("bench", "run")``."""
    second = {"bench": "bench_cmd", "data": "data_cmd", "coursework": "cw_cmd"}.get(args.cmd)
    return (args.cmd, getattr(args, second)) if second else (args.cmd,)


def train_spelling(extra: list[str]) -> list[str] | None:
    """``train``'s ``--set KEY=VALUE`` for arguments spelt as options or bare names.

    ``--epochs 5``, ``--epochs=5`` and ``--lr-milestones …`` name a RunConfig field
    (hyphens read as underscores); a bare ``fa``, ``lenet`` or ``digits`` names a rule,
    a model or a data set. None when any argument is none of these.
    """
    import dataclasses

    from .training import RunConfig

    fields = {f.name for f in dataclasses.fields(RunConfig)}
    registries = registry_names()
    names = {name: field for field in ("dataset", "model", "rule")  # a rule's name wins
             for name in registries[field]}
    pairs, rest = [], list(extra)
    while rest:
        token = rest.pop(0)
        if token.startswith("--"):
            key, sep, value = token[2:].partition("=")
            key = key.replace("-", "_")
            if key not in fields:
                return None
            if not sep:
                if not rest or rest[0].startswith("--"):
                    return None
                value = rest.pop(0)
            pairs.append(f"{key}={value}")
        elif token in names:
            pairs.append(f"{names[token]}={token}")
        else:
            return None
    return [f"--set {pair}" for pair in pairs]


def _refuse_unrecognized(parser: argparse.ArgumentParser, args: argparse.Namespace,
                         extra: list[str]) -> int:
    """Arguments no parser took: for ``train``, one line with their ``--set`` spelling;
    elsewhere argparse's own error, from the subcommand's parser (its usage line)."""
    path = _command_path(args)
    if path == ("train",):
        spelling = train_spelling(extra)
        problem = (f"train takes its settings as --set KEY=VALUE: use {' '.join(spelling)}"
                   if spelling else f"unrecognized arguments: {' '.join(extra)}; train takes "
                   "its settings as --set KEY=VALUE")
        print(f"error: {problem} (python -m fa_tutor train --help lists the fields)",
              file=sys.stderr)
        return 2
    leaf = dict(_leaves(parser)).get(path, parser)
    leaf.error(f"unrecognized arguments: {' '.join(extra)}")  # exits with status 2


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        return _refuse_unrecognized(parser, args, extra)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.cmd == "coursework" and getattr(args, "device", None):
        os.environ["FA_TUTOR_DEVICE"] = args.device  # the graded notebooks' kernels inherit it
    try:
        return args.fn(args)
    except KeyboardInterrupt as err:
        print(_interrupted(args, err), file=sys.stderr)
        return 130
    except ModuleNotFoundError as err:
        extra = EXTRAS.get((err.name or "").split(".")[0])
        if extra is None:
            raise
        return _fail(args, f"this command needs {err.name}, which is not installed: "
                           f"pip install 'fa_tutor[{extra}]'")
    except (ValueError, FileNotFoundError) as err:
        return _fail(args, " ".join(str(err).split("\n")))


def _fail(args: argparse.Namespace, message: str) -> int:
    """Print ``error: message`` (after the traceback with -v/--debug); exit status 2."""
    if args.verbose or args.debug:
        traceback.print_exc()
    print(f"error: {message}", file=sys.stderr)
    return 2
