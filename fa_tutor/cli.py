"""Command line: ``python -m fa_tutor {rules,train,bench,data,coursework}``."""
from __future__ import annotations

import argparse
import json
import logging
import sys

from . import __version__


def _rules(args: argparse.Namespace) -> int:
    from .rules import available_rules, rule_spec

    for name in available_rules():
        spec = rule_spec(name)
        print(f"{name:8s} {spec.family:20s} {spec.summary}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from .training import RunConfig, train

    cfg = RunConfig().with_overrides(args.set)
    result = train(cfg, checkpoint=args.checkpoint)
    print(result.history.to_string(index=False))
    return 0


def _bench_list(args: argparse.Namespace) -> int:
    from .bench import list_experiments

    for exp in list_experiments():
        where = "offline" if exp.offline else "needs downloads"
        print(f"{exp.name:32s} {len(exp.cells(False)):4d} cells ({len(exp.cells(True))} quick), {where}\n"
              f"    {exp.description}")
    return 0


def _bench_run(args: argparse.Namespace) -> int:
    from .bench import run_experiment

    from .bench.runner import SweepError

    try:
        lines = run_experiment(args.name, quick=args.quick, device=args.device, out=args.out,
                               limit=args.limit, workers=args.workers, ray_address=args.ray,
                               retries=args.retries, threads=args.threads)
    except SweepError as err:
        print(f"error: {err}", file=sys.stderr)
        print(f"{args.name}: {len(err.new_lines)} new result line(s) saved; rerun to retry the rest")
        return 1
    print(f"{args.name}: {len(lines)} new result line(s)")
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
    from .coursework import export

    if args.cw_cmd == "export":
        for path in export.export(args.directory):
            print(path)
        return 0
    report = export.check(args.notebook, quick=not args.full)
    print(json.dumps(report, indent=2))
    return 0 if all(v == "passed" for v in report.values()) else 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m fa_tutor",
                                description="Learning without weight transport: rules, benchmarks, coursework.")
    p.add_argument("--version", action="version", version=f"fa_tutor {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress (INFO)")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("rules", help="list the learning rules").set_defaults(fn=_rules)
    t = sub.add_parser("train", help="train one RunConfig, e.g. --set rule=fa --set epochs=5")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a RunConfig field")
    t.add_argument("--checkpoint", help="checkpoint file: saved during the run, resumed if it exists")
    t.set_defaults(fn=_train)
    b = sub.add_parser("bench", help="benchmark experiments").add_subparsers(dest="bench_cmd", required=True)
    b.add_parser("list", help="the benchmark experiments").set_defaults(fn=_bench_list)
    r = b.add_parser("run", help="run an experiment's unfinished cells")
    r.add_argument("name")
    r.add_argument("--quick", action="store_true", help="the small variant (seconds)")
    r.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    r.add_argument("--out", help="results directory (default: the repository's results/)")
    r.add_argument("--limit", type=int, help="run at most this many cells")
    r.add_argument("--workers", type=int, default=1, help="run cells in N local processes (one GPU each)")
    r.add_argument("--ray", metavar="ADDRESS", help="run cells on a Ray cluster ('auto', an address, "
                   "or 'local' to start one here); needs pip install 'fa_tutor[cluster]'")
    r.add_argument("--retries", type=int, default=2, help="retries of a failing cell (default 2)")
    r.add_argument("--threads", type=int, help="torch CPU threads per cell (identical results across modes)")
    r.set_defaults(fn=_bench_run)
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
    e.set_defaults(fn=_coursework)
    k = c.add_parser("check", help="run a completed notebook and report its checks")
    k.add_argument("notebook")
    k.add_argument("--full", action="store_true", help="run with the chapter's default (not quick) settings")
    k.set_defaults(fn=_coursework)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.fn(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
