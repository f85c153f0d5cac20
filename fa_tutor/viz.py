"""Plotting and exploration helpers the chapters share (seaborn/matplotlib, ipywidgets)."""
from __future__ import annotations

import contextlib
import threading
import time
from typing import Any, Callable, Iterator

import matplotlib.pyplot as plt
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
