"""Plotting and exploration helpers the chapters share (seaborn/matplotlib, ipywidgets)."""
from __future__ import annotations

import contextlib
import html
import math
import numbers
import re
import threading
import time
from typing import Any, Callable, Iterator

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns


def setup(context: str = "notebook") -> None:
    """One look for every figure in the book."""
    sns.set_theme(context=context, style="whitegrid", palette="colorblind")
    plt.rcParams.update({"figure.dpi": 110, "savefig.bbox": "tight", "axes.titleweight": "bold"})


def learning_curves(history: pd.DataFrame, metrics: tuple[str, ...] = ("train_loss", "test_accuracy"),
                    hue: str | None = None, x: str = "epoch", title: str | None = None,
                    ylabels: dict[str, str] | None = None) -> plt.Figure:
    """One panel per metric, one line per ``hue`` value (e.g. per rule)."""
    labels = {"train_loss": "training loss", "test_accuracy": "test accuracy (%)",
              "train_accuracy": "train accuracy (%)", "test_loss": "test loss", **(ylabels or {})}
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.6 * len(metrics), 3.4), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        sns.lineplot(data=history, x=x, y=metric, hue=hue, ax=ax, marker="o" if len(history) < 30 else None)
        ax.set_ylabel(labels.get(metric, metric))
        if ax.get_legend() is not None and ax is not axes[0][-1]:
            ax.get_legend().remove()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def explore(fn: Callable[..., Any], **controls: Any) -> None:
    """Show ``fn`` at its default values as a static figure, then a widget to re-run it.

    ``controls`` are ipywidgets (or ``interact`` abbreviations) keyed by ``fn``'s
    argument names.  The default output is drawn immediately, so the published
    page is complete without a kernel; the widget re-runs ``fn`` on "Run"
    (:func:`rerun`: a run past 2 s counts its seconds on the button, a diverged
    run shows a message, not a traceback).

    The widget is displayed here and not returned: a cell ending in
    ``explore(...)`` would otherwise show it a second time as the cell's value.
    A chapter that needs a control to react to another (disable it, change its
    options) creates the control itself and observes it before passing it in.
    """
    import ipywidgets as widgets
    from IPython.display import display

    defaults = {k: (w.value if hasattr(w, "value") else w) for k, w in controls.items()}
    fn(**defaults)
    plt.show()
    ui = widgets.interactive(lambda **kw: rerun(fn, kw, button=ui.manual_button),
                             {"manual": True, "manual_name": "Run"}, **controls)
    display(ui)


PROGRESS_AFTER_S = 2.0  # a run longer than this counts its seconds on the Run button


@contextlib.contextmanager
def elapsed_on(button: Any) -> Iterator[None]:
    """While the block runs longer than ``PROGRESS_AFTER_S``, show its seconds on ``button``.

    A background thread rewrites the button's description ("Running… 3 s") every
    half second; the description is restored when the block ends.
    """
    label, done = button.description, threading.Event()

    def tick() -> None:
        start = time.monotonic()
        while not done.wait(0.5):
            seconds = time.monotonic() - start
            if seconds >= PROGRESS_AFTER_S:
                button.description = f"Running… {seconds:.0f} s"

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        button.description = label


def rerun(fn: Callable[..., Any], kwargs: dict[str, Any], button: Any = None) -> str | None:
    """One press of an :func:`explore` widget's "Run": draw ``fn(**kwargs)``.

    A run longer than ``PROGRESS_AFTER_S`` counts its seconds on ``button``
    (:func:`elapsed_on`).  A run whose loss diverges
    (:class:`~fa_tutor.NonFiniteLossError`) is an outcome of the chosen setting,
    not a fault: the widget shows a message that says what to change instead of
    a traceback, and returns it.
    """
    from IPython.display import Markdown, display

    from .rules import NonFiniteLossError

    try:
        with elapsed_on(button) if button is not None else contextlib.nullcontext():
            fn(**kwargs)
    except NonFiniteLossError as err:
        plt.close("all")
        message = (f"**The loss diverged at this setting** ({str(err).split('. ')[0]}). "
                   "Lower the learning rate, or the last value you raised, and press Run again.")
        display(Markdown(message))
        return message
    plt.show()
    return None


# --------------------------------------------------------------------------------------
# Tables: one style for every results table of the book
TABLE_CSS = """<style>
table.ft-table {border-collapse: collapse; border: none; margin: 0.4em 0 1em; width: auto;
  max-width: 100%; font-size: 0.85em; table-layout: auto}
table.ft-table caption {caption-side: top; text-align: left; font-weight: 600; padding-bottom: 0.3em}
table.ft-table th, table.ft-table td {padding: 0.25em 0.6em; border: none; text-align: left;
  vertical-align: top; border-bottom: 1px solid var(--pst-color-border, #ddd); background: none}
table.ft-table thead th {vertical-align: bottom; font-weight: 600; white-space: normal;
  border-bottom: 1.5px solid var(--pst-color-text-muted, #555)}
table.ft-table .num {text-align: right; font-variant-numeric: tabular-nums}
table.ft-table td.num, table.ft-table td.key {white-space: nowrap}
table.ft-table.transposed td.key {white-space: normal}
table.ft-table th.group {text-align: center; border-bottom: 1px solid var(--pst-color-border, #ddd)}
</style>"""


def _decimals(values: list[float], digits: int) -> int | str:
    """Decimals that give the column's largest number ``digits`` significant digits (0 to 4),
    or "e" (e-notation) for a column of very large or very small numbers."""
    finite = [v for v in values if math.isfinite(v)]
    top = max((abs(v) for v in finite), default=0.0)
    if top == 0 or all(v.is_integer() for v in finite) and top < 1e6:
        return 0
    if top >= 1e6 or top < 1e-3:
        return "e"
    return min(max(digits - 1 - math.floor(math.log10(top)), 0), 4)


def _cell(value: Any, fmt: Any, digits: int) -> tuple[str, bool]:
    """(text, is_number) of one cell (not yet HTML-escaped); ``fmt`` is decimals (int), "e", a
    format string or a callable."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "–", False
    if callable(fmt):
        return str(fmt(value)), isinstance(value, numbers.Number)
    if isinstance(value, (bool, np.bool_)):
        return ("yes" if value else "no"), False
    if isinstance(fmt, str) and isinstance(value, numbers.Number):
        return (fmt.format(value) if "{" in fmt else f"{value:{fmt}}"), True
    if isinstance(value, numbers.Integral):
        return f"{value:,}".replace(",", "\u2009"), True
    if isinstance(value, numbers.Real):
        if not math.isfinite(value):
            return str(value), True
        if fmt == "e" or fmt is None:  # (a format spec string was handled above)
            return f"{value:.{max(digits - 1, 1)}e}", True
        return f"{value:,.{fmt}f}".replace(",", "\u2009"), True
    return str(value), bool(_NUMERIC_TEXT.match(str(value)))


#: text that reads as a number ("0.91 ± 0.05", "3 %", "1.2e-03"): aligned right like one
_NUMERIC_TEXT = re.compile(r"^[<>≤≥~]?\s*[-+−]?\d[\d.,\u2009]*(e[-+]?\d+)?"
                           r"( ?± ?[\d.]+(e[-+]?\d+)?)?( ?(%|×|s|ms))?$")


class Table:
    """A formatted table (or a few, when split): HTML in notebooks and the book, text elsewhere.

    ``data`` is the DataFrame as shown (after renaming and reordering), for assertions.
    """

    def __init__(self, data: pd.DataFrame, parts: list[pd.DataFrame], formats: dict, digits: int,
                 keys: list[str], caption: str | None, decimals: int | str | None = None,
                 groups: dict[str, tuple[str, str]] | None = None, repeat_keys: bool = True,
                 transposed: bool = False) -> None:
        self.data, self.parts, self.formats, self.digits = data, parts, formats, digits
        self.keys, self.caption, self.decimals, self.groups = keys, caption, decimals, groups or {}
        self.repeat_keys, self.transposed = repeat_keys, transposed

    def _format_of(self, df: pd.DataFrame, col: str) -> Any:
        if col in self.formats:
            return self.formats[col]
        floats = [float(v) for v in df[col] if isinstance(v, numbers.Real)
                  and not isinstance(v, (bool, np.bool_, numbers.Integral))]
        if not floats:
            return None
        return self.decimals if self.decimals is not None else _decimals(floats, self.digits)

    def _html_part(self, df: pd.DataFrame, caption: str | None) -> str:
        cols = list(df.columns)
        fmts = [self._format_of(df, c) for c in cols]
        cells = [[_cell(v, f, self.digits) for f, v in zip(fmts, row)]
                 for row in df.itertuples(index=False, name=None)]
        numeric = [bool(cells) and all(num or text == "–" for text, num in (r[j] for r in cells))
                   for j in range(len(cols))]
        if not self.repeat_keys:  # a key value shown once for its run of rows
            lead = [j for j, c in enumerate(cols) if c in self.keys]
            texts = [[cells[r][j][0] for j in lead] for r in range(len(cells))]
            for r in range(1, len(cells)):
                for n, j in enumerate(lead):
                    if texts[r][:n + 1] != texts[r - 1][:n + 1]:
                        break
                    cells[r][j] = ("", cells[r][j][1])
        subs = [html.escape(self.groups.get(c, ("", c))[1]) for c in cols]  # labels under a group
        head = "".join(f'<th class="{"num" if n else ""}">{sub}</th>' for sub, n in zip(subs, numeric))
        if any(c in self.groups for c in cols):  # a two-level header: group labels above
            tops: list[list] = []
            for c in cols:
                top = self.groups.get(c, ("", c))[0]
                if tops and tops[-1][0] == top and top:
                    tops[-1][1] += 1
                else:
                    tops.append([top, 1])
            head = ("".join(f'<th colspan="{n}" class="group">{html.escape(t)}</th>' for t, n in tops)
                    + "</tr><tr>" + head)
        body = "".join(
            "<tr>" + "".join(
                f'<td class="{"num" if numeric[j] else "key" if cols[j] in self.keys else ""}">{html.escape(text)}</td>'
                for j, (text, _) in enumerate(row)) + "</tr>" for row in cells)
        cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
        kind = "ft-table transposed" if self.transposed else "ft-table"  # (not "fa-table": an icon class)
        return f'<table class="{kind}">{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'

    def _repr_html_(self) -> str:
        many = len(self.parts) > 1
        return TABLE_CSS + "".join(
            self._html_part(p, (f"{self.caption} ({i + 1}/{len(self.parts)})" if self.caption else None)
                            if many else self.caption) for i, p in enumerate(self.parts))

    def __repr__(self) -> str:
        text = "\n\n".join(p.to_string(index=False) for p in self.parts)
        return f"{self.caption}\n{text}" if self.caption else text


def table(df: pd.DataFrame | pd.Series, labels: dict[str, str] | None = None, *,
          formats: dict[str, Any] | None = None, digits: int = 3, columns: list[str] | None = None,
          decimals: int | str | None = None, keys: list[str] | None = None, split: int | None = None,
          transpose: bool = False, index: bool = True, repeat_keys: bool = True,
          caption: str | None = None) -> Table:
    """One style for every results table of the book: no index column, short labels, rounded numbers.

    Args:
        df: the table; a named index (or MultiIndex, or labels) becomes ordinary leading
            columns (``index=False`` drops it); an unnamed integer index (0…N, or the row
            numbers a filter left) is never shown.
        labels: short column labels with units, ``{"test_error": "test error (%)"}``;
            applied after ``columns`` selects and orders the columns.
        formats: per (labelled) column: decimals (``2``), a format spec (``".1%"``, ``"{:.2f} s"``)
            or a callable; other numbers get ``digits`` significant digits (decimals set by
            the column's largest value), integers stay whole, missing values show "–" and
            booleans "yes"/"no".
        decimals: decimals (or a format spec such as ``".3g"``) for every float column
            that ``formats`` does not name.
        keys: the label columns repeated in every part of a split table (default: the
            first column); they never wrap.
        split: at most this many non-key columns per part: a wide table becomes several
            narrow ones, one under the other.
        repeat_keys: False shows a key value once for a run of rows with the same value.
        transpose: rows become columns (the first key column gives the new headers) -
            for a few long rows.
        caption: a title above the table.

    Returns a :class:`Table` (its ``data`` is the DataFrame as shown).

    Example:
        >>> import pandas as pd, fa_tutor as ft
        >>> df = pd.DataFrame({"rule": ["bp", "fa"], "test_error": [9.2031, 13.06]})
        >>> shown = ft.viz.table(df, {"test_error": "test error (%)"}, formats={"test error (%)": 2})
        >>> list(shown.data.columns)  # no index column; the label with its unit
        ['rule', 'test error (%)']
        >>> '<td class="num">9.20</td>' in shown._repr_html_()  # rounded as told
        True
    """
    frame = df.to_frame() if isinstance(df, pd.Series) else df.copy()
    labels = dict(labels or {})
    groups: dict[str, tuple[str, str]] = {}
    if isinstance(frame.columns, pd.MultiIndex):  # (group, column): a two-level header
        flat = []
        for c in frame.columns:
            top = " ".join(labels.get(str(x), str(x)) for x in c[:-1] if str(x) not in ("", "None"))
            sub = labels.get(str(c[-1]), str(c[-1]))
            flat.append(f"{top} {sub}".strip())
            groups[flat[-1]] = (top, sub)
        frame.columns = flat
    # an unnamed integer index (0…N, or the row numbers left by a filter) carries no information
    has_index = not (frame.index.nlevels == 1 and frame.index.name is None
                     and pd.api.types.is_integer_dtype(frame.index.dtype))
    if has_index and index:
        frame.index.names = [n if n is not None else "" for n in frame.index.names]
        frame = frame.reset_index()
    else:
        frame = frame.reset_index(drop=True)
    frame.columns = [str(c) for c in frame.columns]
    if columns is not None:
        frame = frame[columns]
    if labels:
        frame = frame.rename(columns={k: v for k, v in labels.items() if k not in groups})
    formats = dict(formats or {})
    keys = list(keys) if keys is not None else list(frame.columns[:1])
    if transpose:  # format each original column first: a row of the result keeps its own format
        shown = Table(frame, [frame], formats, digits, keys, None, decimals)
        for c in frame.columns:
            if c not in keys:
                fmt = shown._format_of(frame, c)
                frame[c] = [_cell(v, fmt, digits)[0] for v in frame[c]]
        formats = {}
        head = keys[0]
        frame = frame.set_index(head).T
        frame.index.name = ""
        frame.columns = [str(c) for c in frame.columns]
        frame = frame.reset_index()
        keys = [""]
        groups = {}
    values = [c for c in frame.columns if c not in keys]
    if split and len(values) > split:
        parts = [frame[[*keys, *values[i:i + split]]] for i in range(0, len(values), split)]
    else:
        parts = [frame]
    return Table(frame, parts, formats, digits, keys, caption, decimals, groups, repeat_keys, transpose)
