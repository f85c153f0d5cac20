"""Benchmark results as DataFrames, the published numbers as data, and the chapters' tables.

* :func:`load` — one row per result line: identity, the varying settings, the
  scalar metrics, and provenance (``prov_*`` columns); :func:`histories` — the
  per-epoch histories in long form.
* :func:`published` — the published numbers quoted in the notes, each row with its
  source; nothing here is ours.
* :func:`summary`, :func:`provenance_table`, :func:`status` — the tables the
  benchmark chapter shows, read from the committed ``results/*.jsonl`` only.

Taught in: {ref}`benchmarks`.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from .registry import get_experiment, list_experiments
from .runner import read_results

ID = ["experiment", "rule", "model", "dataset", "seed", "scale", "cell"]
PROVENANCE = ["commit", "fa_tutor", "torch", "cuda", "device", "device_name", "started", "wall_s"]


def load(experiment: str, out: str | Path | None = None, scale: str | None = None) -> pd.DataFrame:
    """Result lines of ``experiment`` as a flat DataFrame (empty, with the id columns, if none).

    Columns: :data:`ID`, one column per varying setting (e.g. ``width``), every
    scalar metric (``test_accuracy`` …; percentages in percent), ``prov_<field>``
    for the provenance, and ``config`` (the resolved config dict).  A rerun supersedes
    (:func:`current_lines`).
    """
    rows = []
    for line in current_lines(experiment, out, scale):
        row = {k: line.get(k) for k in ID}
        row.update(line.get("setting", {}))
        row.update({k: v for k, v in line["metrics"].items() if not isinstance(v, (dict, list))})
        row.update({f"prov_{k}": v for k, v in line["provenance"].items()})
        row["config"] = line.get("config", {})
        rows.append(row)
    return pd.DataFrame(rows, columns=None if rows else ID)


def current_lines(experiment: str, out: str | Path | None = None,
                  scale: str | None = None) -> list[dict]:
    """The result lines of ``experiment`` (of ``scale``) that no rerun superseded.

    Of the lines with the same cell, rule and device only the last started is kept
    (a cell rerun at a newer commit, e.g. after a change to the code it measures);
    :func:`load` and :func:`histories` read these.
    """
    lines = [line for line in read_results(experiment, out)
             if scale is None or line["scale"] == scale]
    if not lines:
        return []
    keys = pd.DataFrame({"cell": [line.get("cell") for line in lines],
                         "rule": [line.get("rule") for line in lines],
                         "prov_device": [line["provenance"].get("device") for line in lines],
                         "prov_started": [line["provenance"].get("started") for line in lines],
                         "line": range(len(lines))})
    return [lines[i] for i in latest_runs(keys)["line"]]


def latest_runs(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of ``df`` with one line per (cell, rule, device): the last started; file order kept."""
    key = ["cell", "rule", "prov_device"]
    if df.empty or not set(key + ["prov_started"]) <= set(df.columns):
        return df
    started = df["prov_started"].fillna("").astype(str)
    last = df.assign(_started=started).sort_values("_started", kind="stable").drop_duplicates(
        key, keep="last").index
    return df.loc[sorted(last)].reset_index(drop=True)


def histories(experiment: str, out: str | Path | None = None,
              scale: str | None = None) -> pd.DataFrame:
    """Every current stored history (:func:`current_lines`) in long form: the id and setting
    columns plus one row per record."""
    frames = []
    for line in current_lines(experiment, out, scale):
        hist = line["metrics"].get("history")
        if not hist:
            continue
        df = pd.DataFrame(hist)
        for k, v in {**{k: line.get(k) for k in ID}, **line.get("setting", {})}.items():
            df[k] = v
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=ID)


def sem(x: pd.Series) -> float:
    """Standard error of the mean, :math:`s/\\sqrt n` (nan for a single value)."""
    x = x.dropna()
    return float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else math.nan


def std(x: pd.Series) -> float:
    """Sample standard deviation over seeds, :math:`s` (nan for a single value)."""
    x = x.dropna()
    return float(x.std(ddof=1)) if len(x) > 1 else math.nan


def summary(df: pd.DataFrame, by: list[str], metrics: list[str]) -> pd.DataFrame:
    """Mean, standard error, standard deviation and count over seeds of each metric, per
    ``by`` group (columns ``<metric>_mean``, ``_sem``, ``_std``, and ``n``)."""
    if df.empty:
        return pd.DataFrame(columns=[*by, *[f"{m}_{s}" for m in metrics for s in
                                            ("mean", "sem", "std")], "n"])
    g = df.groupby(by, sort=False, dropna=False)  # a setting only some cells have: NaN elsewhere
    out = pd.concat({m: g[m].agg(["mean", sem, std]) for m in metrics if m in df}, axis=1)
    out.columns = [f"{m}_{s}" for m, s in out.columns]
    out["n"] = g.size()
    return out.reset_index()


def pm(mean: float | None, spread: float | None, digits: int = 2) -> str:
    """``"mean ± spread"``; just the mean when the spread is missing (one seed), "–" without a mean."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    if spread is None or math.isnan(spread):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {spread:.{digits}f}"


def mean_std(values: Iterable[float], digits: int = 2) -> str:
    """``"mean ± std"`` over ``values`` (NaN ignored): the mean alone for one value, "–" for none.

    >>> mean_std([1.0, 2.0, float("nan")]), mean_std([3.0]), mean_std([])
    ('1.50 ± 0.71', '3.00', '–')
    """
    v = pd.Series(list(values), dtype=float).dropna()
    return pm(v.mean() if len(v) else None, std(v) if len(v) else None, digits)


def mean_pm(df: pd.DataFrame, metric: str, digits: int = 2, spread: str = "sem") -> pd.Series:
    """``"mean ± sem"`` (or ``spread="std"``: ``"mean ± std"``) strings from :func:`summary`
    columns (just the mean for n = 1)."""
    if spread not in ("sem", "std"):
        raise ValueError(f"spread={spread!r}; choose 'sem' or 'std'")
    return pd.Series([pm(m, s, digits) for m, s in zip(df[f"{metric}_mean"],
                                                      df[f"{metric}_{spread}"])], index=df.index)


def provenance_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per scale: cells, commits, devices, torch versions, first start and total wall time."""
    if df.empty:
        return pd.DataFrame(columns=["scale", "cells", "commit", "device", "torch", "started",
                                     "wall_s_total"])
    join = lambda s: ", ".join(sorted({str(v) for v in s if v is not None}))  # noqa: E731
    g = df.drop_duplicates("cell").groupby("scale")
    out = pd.DataFrame({
        "cells": g.size(), "commit": g["prov_commit"].agg(join),
        "device": g["prov_device_name"].agg(join) if "prov_device_name" in df else
        g["prov_device"].agg(join),
        "torch": g["prov_torch"].agg(join), "started": g["prov_started"].min(),
        "wall_s_total": g["prov_wall_s"].sum().round(1)})
    return out.reset_index()


def status(experiments: list[str] | None = None, out: str | Path | None = None) -> pd.DataFrame:
    """For every cell group of every experiment: how many full-grid cells have a result.

    A group is (experiment, model, dataset, setting without the seed); a cell
    counts as done only at its full-grid scale ("full" or "substituted"). Quick
    results never count. Nothing is estimated: ``done`` counts result lines.
    """
    from ..data import DATASETS

    def group(c) -> tuple[str, str, str]:
        setting = ", ".join(f"{k}={v}" for k, v in c.setting.items() if k != "batch")
        return c.model, c.dataset, setting

    rows = []
    exps = [get_experiment(e) for e in experiments] if experiments else list_experiments()
    for exp in exps:
        lines = read_results(exp.name, out)
        done = {r["cell"] for r in lines if r["scale"] != "quick"}
        quick = {r["cell"] for r in lines if r["scale"] == "quick"}
        groups: dict[tuple, dict] = {}
        for c in exp.cells(False):
            g = groups.setdefault(group(c), {"scale": c.scale, "cells": 0, "done": 0,
                                             "quick_done": 0})
            g["cells"] += 1
            g["done"] += c.key in done
        for c in exp.cells(True):
            if group(c) in groups:
                groups[group(c)]["quick_done"] += c.key in quick
        for (model, dataset, setting), g in groups.items():
            info = DATASETS.get(dataset)
            status = ("done" if g["done"] == g["cells"] else
                      "partial" if g["done"] else "not yet run at full scale")
            rows.append({"experiment": exp.name, "model": model, "dataset": dataset,
                         "setting": setting, **g, "offline": info.offline if info else True,
                         "status": status})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------
# Published numbers (notes: prior-art.md §4, forward-gradients-and-fdfa.md §4). [reported]
_BIOTORCH = "Sanfiz & Akrout 2021, biotorch Benchmarks.md (reported)"
_BIOTORCH_MNIST = {  # rule: (MNIST, Fashion-MNIST) top-1 test error %, LeNet-5, best-val model
    "bp": (0.91, 9.20), "fa": (1.70, 13.06), "usf": (0.94, 9.69), "brsf": (0.91, 10.02),
    "frsf": (0.97, 9.61), "dfa": (1.61, 12.81)}
_REN = "Ren, Kornblith, Liao & Hinton 2023, Table 3 (OpenReview submission)"
_REN_COLUMNS = [("mnist", "S/1/1"), ("mnist", "M/1/16"), ("cifar10", "M/8/16"),
                ("imagenet", "L/32/64")]
_REN_TABLE3 = {  # rule: (test, train) error % per column above
    "bp": [(2.66, 0.00), (2.41, 0.00), (33.62, 0.00), (36.82, 14.69)],
    "l_bp": [(2.38, 0.00), (2.16, 0.00), (30.75, 0.00), (42.38, 22.80)],
    "lg_bp": [(2.43, 0.00), (2.81, 0.00), (33.84, 0.05), (54.37, 39.66)],
    "fa": [(2.82, 0.00), (2.90, 0.00), (39.94, 28.44), (94.55, 94.13)],
    "l_fa": [(3.21, 0.00), (2.90, 0.00), (39.74, 28.98), (87.20, 85.69)],
    "lg_fa": [(3.11, 0.00), (2.50, 0.00), (39.73, 32.32), (85.45, 82.83)],
    "dfa": [(3.31, 0.00), (3.17, 0.00), (38.80, 33.69), (91.17, 90.28)],
    "fg_w": [(9.25, 8.93), (8.56, 8.64), (55.95, 54.28), (97.71, 97.58)],
    "fg_a": [(3.24, 1.53), (3.76, 1.75), (59.72, 41.29), (98.83, 98.80)],
    "lg_fg_w": [(9.25, 8.93), (5.66, 4.59), (52.70, 51.71), (97.39, 97.29)],
    "lg_fg_a": [(3.24, 1.53), (2.55, 0.00), (30.68, 19.39), (58.37, 44.86)]}
_AKROUT = "Akrout et al. 2019, released experiments/*/results.json (reported)"
_AKROUT_ACC = {("mnist", "mlp 784-500-10"): {"bp": (98.50, 98.50), "fa": (97.80, 97.80),
                                             "kp": (98.45, 98.47)},
               ("cifar10", "mlp 3072-1000-10"): {"bp": (48.18, 51.97), "fa": (42.96, 49.54),
                                                 "kp": (47.57, 50.67)}}
_DKP = "webstah/dkp-gist README (reported): CIFAR-10, 2 conv + 2 FC, 50 epochs, mean of 4"


def published(source: str | None = None) -> pd.DataFrame:
    """Published numbers as rows: source, dataset, model, rule, metric, value (%), note.

    ``source`` filters by key: ``"biotorch"``, ``"ren2023"``, ``"akrout2019"``,
    ``"dkp"``; None returns all. Robertson & Koyejo's Tables 1, 2 and B.1 are lost
    (the notes keep their structure only), so they contribute no rows.
    """
    rows = []
    for rule, (mnist, fashion) in _BIOTORCH_MNIST.items():
        for ds, v in (("mnist", mnist), ("fashion_mnist", fashion)):
            rows.append(("biotorch", _BIOTORCH, ds, "lenet5", rule, "test_error", v,
                         "SGD m0.9, wd 1e-3, batch 64, 100 epochs, 32x32, best-val model"))
    for rule, cols in _REN_TABLE3.items():
        for (ds, mixer), (test, train) in zip(_REN_COLUMNS, cols):
            for metric, v in (("test_error", test), ("train_error", train)):
                rows.append(("ren2023", _REN, ds, f"localmixer {mixer}", rule, metric, v,
                             "supervised; their DFA is a random local readout"))
    for (ds, model), table in _AKROUT_ACC.items():
        for rule, (final, best) in table.items():
            rows.append(("akrout2019", _AKROUT, ds, model, rule, "test_accuracy", final,
                         "final epoch; batch 128, 400 epochs"))
            rows.append(("akrout2019", _AKROUT, ds, model, rule, "best_test_accuracy", best,
                         "best epoch"))
    for rule, v in (("bp", 70.47), ("dkp", 67.52), ("dfa", 61.02)):
        rows.append(("dkp", _DKP, "cifar10", "cnn 2conv+2fc", rule, "test_accuracy", v, ""))
    df = pd.DataFrame(rows, columns=["key", "source", "dataset", "model", "rule", "metric",
                                     "value", "note"])
    return df if source is None else df[df.key == source].reset_index(drop=True)


def beside_published(ours: pd.DataFrame, source: str, dataset: str, metric: str = "test_error",
                     model: str | None = None) -> pd.DataFrame:
    """Our mean ± sem per rule next to the published value (NaN where none is published).

    ``note`` flags rules whose run diverged (loss NaN/inf; their line keeps the
    best-validation result before the divergence, see ``runner.train_cell``).
    """
    pub = published(source)
    pub = pub[(pub.dataset == dataset) & (pub.metric == metric)]
    if model is not None:
        pub = pub[pub.model == model]
    pub = pub.set_index("rule")["value"].rename(f"published {metric}")
    s = summary(ours, ["rule", "scale"], [metric]) if not ours.empty else None
    if s is None or s.empty:
        return pub.reset_index()
    s[f"ours {metric}"] = mean_pm(s, metric)
    table = s[["rule", "scale", f"ours {metric}", "n"]].merge(
        pub.reset_index(), on="rule", how="outer")
    table["note"] = ""
    if "diverged_epoch" in ours:
        div = ours.dropna(subset=["diverged_epoch"]).groupby(["rule", "scale"]).diverged_epoch.min()
        for (rule, scale), epoch in div.items():
            at = (table.rule == rule) & (table.scale == scale)
            table.loc[at, "note"] = (f"diverged (loss NaN) in epoch {int(epoch)}; "
                                     "best-val model before it")
    return table.replace({np.nan: None})


# --------------------------------------------------------------------------------------
# Tables describing the experiments themselves (from their declarations, not from results)
def experiments_table(out: str | Path | None = None) -> pd.DataFrame:
    """Every registered experiment: cells (full / quick), downloads, source, description,
    and the measured wall time of its committed lines per scale (blank if none ran)."""
    rows = []
    for e in list_experiments():
        lines = read_results(e.name, out)
        wall = {}
        for line in lines:  # a cell with several lines (step-cost) counts once
            key = (line["scale"], line["cell"])
            wall[key] = line["provenance"].get("wall_s") or 0.0
        per_scale = {sc: round(sum(v for (s2, _), v in wall.items() if s2 == sc), 1)
                     for sc in {k[0] for k in wall}}
        rows.append({"experiment": e.name, "cells": len(e.cells(False)),
                     "quick cells": len(e.cells(True)), "needs downloads": not e.offline,
                     "quick wall s": per_scale.get("quick"),
                     "full wall s": per_scale.get("full", per_scale.get("substituted")),
                     "source": e.source, "description": e.description})
    return pd.DataFrame(rows)


def grid_table(experiment: str, quick: bool = False) -> pd.DataFrame:
    """The declared grid: each config field (or axis) and its value(s) across the cells.

    A field with one value is the fixed setting; a field with several is an axis
    of the grid. Custom-runner cells contribute their ``options``.
    """
    cells = get_experiment(experiment).cells(quick)
    values: dict[str, list] = {}
    for c in cells:
        fields = {"rule": c.rule, "model": c.model, "dataset": c.dataset, "seed": c.seed,
                  **c.setting,
                  **(c.config.to_dict() if c.config is not None else dict(c.options))}
        for k, v in fields.items():
            s = str(v)
            if s not in values.setdefault(k, []):
                values[k].append(s)
    drop = {"device"}
    return pd.DataFrame([{"field": k, "values": ", ".join(v), "varies": len(v) > 1}
                         for k, v in values.items() if k not in drop])


def step_cost_reference(df: pd.DataFrame) -> str:
    """The ratio column step-cost lines are read by: ``ratio_to_plain`` (the step over plain
    PyTorch backprop) where the lines have it, else ``ratio_to_bp`` (lines measured before
    the plain reference existed)."""
    if "ratio_to_plain" in df and df["ratio_to_plain"].notna().any():
        return "ratio_to_plain"
    return "ratio_to_bp"


def step_cost_table(df: pd.DataFrame) -> pd.DataFrame:
    """step-cost results: seconds/step ratio per rule (rows) and model (columns), to plain
    PyTorch backprop (or, for older lines, to the bp rule; ``attrs["reference"]`` says which).

    Adds each rule's ``target`` and ``within target`` (every measured model at or
    under it); rules a model cannot run are blank for that model.
    """
    if df.empty or "ratio_to_bp" not in df:
        return pd.DataFrame()
    ref = step_cost_reference(df)
    ok = df.dropna(subset=[ref])
    table = ok.pivot_table(index="rule", columns="model", values=ref, aggfunc="median")
    table["target"] = ok.groupby("rule")["target"].first()
    models = [c for c in table.columns if c != "target"]
    within = table[models].max(axis=1) <= table["target"]
    if ref == "ratio_to_bp":  # bp over itself is 1 by construction
        within |= table.index == "bp"
    table["within target"] = within
    table = table.round(3)
    table.attrs["reference"] = ref
    return table


def step_cost_draws(df: pd.DataFrame) -> pd.DataFrame:
    """Rules that draw random numbers: ratio to bp, share of the step spent drawing, and the
    ratio with the draws taken out (``ratio × (1 − share)``), per model; empty if not measured."""
    if df.empty or "draw_share" not in df:
        return pd.DataFrame()
    ref = step_cost_reference(df)
    ok = df.dropna(subset=[ref, "draw_share"])
    drawing = ok.groupby("rule")["draw_share"].max() > 0.01
    ok = ok[ok.rule.isin(drawing[drawing].index)].assign(draw_pct=lambda d: 100 * d.draw_share)
    values = {ref: "ratio", "draw_pct": "draws (% of step)",
              "ratio_without_draws": "ratio without draws"}
    table = ok.pivot_table(index="rule", columns="model", values=list(values), aggfunc="median")
    return table.rename(columns=values, level=0).round(2)


def step_cost_floors(df: pd.DataFrame) -> pd.DataFrame:
    """Rules with a timed floor (``step_cost.FLOORS``): per (rule, model) the ratio to plain
    PyTorch, its base rule's ratio (same run), the floor's (the base rule plus only what the
    rule adds by definition), ``defined work`` (floor − base) and ``over floor`` (ratio −
    floor: the overhead an implementation could still remove) and the target; empty for lines
    without floors. What each floor adds: ``step_cost.FLOOR_WHAT``."""
    from .experiments.step_cost import FLOORS

    if df.empty or "floor_ratio" not in df:
        return pd.DataFrame()
    ok = df.dropna(subset=["floor_ratio", "ratio_to_plain"])
    ratio = df.dropna(subset=["ratio_to_plain"]).set_index(["rule", "model"]).ratio_to_plain
    table = ok[["rule", "model", "ratio_to_plain", "floor_ratio", "target"]].copy()
    table["base"] = table.rule.map(lambda r: FLOORS[r][0])
    table["base ratio"] = [ratio.get((b, m), float("nan")) for b, m in zip(table.base, table.model)]
    table["defined work"] = table.floor_ratio - table["base ratio"]
    table["over floor"] = table.ratio_to_plain - table.floor_ratio
    table = table.rename(columns={"ratio_to_plain": "ratio", "floor_ratio": "floor ratio"})
    cols = ["rule", "model", "ratio", "base", "base ratio", "defined work", "floor ratio",
            "over floor", "target"]
    return table[cols].sort_values(["rule", "model"]).round(3).reset_index(drop=True)


# --------------------------------------------------------------------------------------
# The terminal's view (python -m fa_tutor bench report NAME)
#: the metrics an overview shows, where an experiment's lines have them
OVERVIEW_METRICS = ["test_error", "train_accuracy", "est_cosine", "conservation_deviation"]


def step_cost_runs(lines: list[dict], model: str, rules: list[str]) -> pd.DataFrame:
    """``rules``' ratio to plain PyTorch on ``model`` in every full-scale step-cost run that
    timed floors, one row per run in order of start, then a ``target`` row: runs of the same
    code on different machines, or again on one, side by side (the spread a verdict must clear).

    ``lines``: step-cost result lines (:func:`read_results`, superseded ones included). A run
    is the lines of one cell started together; its row gives the commit, the processor
    (``not recorded`` for lines from before the provenance named it) and the plain step in
    ms. Empty if no run qualifies.
    """
    runs: dict[tuple[str, str], list[dict]] = {}
    for line in lines:
        if line.get("scale") == "full" and line.get("model") == model:
            runs.setdefault((line["provenance"]["started"], line.get("cell", "")), []).append(line)
    rows, targets = [], {}
    for _, run in sorted(runs.items()):
        if not any("floor_ratio" in line["metrics"] for line in run):
            continue
        prov, metrics = run[0]["provenance"], {line["rule"]: line["metrics"] for line in run}
        plain = next((m["plain_seconds"] for m in metrics.values() if "plain_seconds" in m), math.nan)
        processor = prov.get("device_name") or "cpu"
        rows.append({"run": prov.get("commit"),
                     "processor": "not recorded" if processor == "cpu" else processor,
                     "plain step (ms)": round(1e3 * plain, 2),
                     **{r: metrics.get(r, {}).get("ratio_to_plain", math.nan) for r in rules}})
        targets.update({r: metrics[r]["target"] for r in rules if "target" in metrics.get(r, {})})
    if not rows:
        return pd.DataFrame()
    rows.append({"run": "target", "processor": "", "plain step (ms)": math.nan, **targets})
    return pd.DataFrame(rows).set_index("run").round(3)


def overview(experiment: str, out: str | Path | None = None) -> pd.DataFrame:
    """One experiment's committed results as one table: step-cost's ratio table, else the
    mean ± sem over seeds of :data:`OVERVIEW_METRICS` per rule, model, data set, scale and
    varying setting, with ``n`` and a note for runs that diverged. Empty when none ran."""
    df = load(experiment, out)
    if df.empty:
        return pd.DataFrame()
    if experiment == "step-cost":
        return step_cost_table(df).reset_index()
    settings = list(dict.fromkeys(k for line in current_lines(experiment, out)
                                  for k in line.get("setting", {}) if k != "batch"))
    by = ["rule", "model", "dataset", "scale", *settings]
    metrics = [m for m in OVERVIEW_METRICS if m in df]
    table = summary(df, by, metrics)
    for m in metrics:
        table[m] = mean_pm(table, m)
    table = table[[*by, *metrics, "n"]]
    if "diverged_epoch" in df:
        diverged = df.dropna(subset=["diverged_epoch"]).groupby(by, sort=False,
                                                                 dropna=False).size()
        table["diverged"] = [int(diverged.get(tuple(row), 0)) for row in table[by].values]
    for key in settings:  # a setting that only some cells have: blank for the others
        table[key] = table[key].astype(object).where(table[key].notna(), "")
    return table
