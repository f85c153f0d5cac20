"""Every chapter's widgets, driven in a live kernel as a reader would.

Each chapter that uses ipywidgets runs in a fresh ``python3`` kernel
(jupyter_client) with ``quick = True`` injected after its ``parameters`` cell,
as papermill does.  Then, for every ``ipywidgets.interactive`` the chapter
displayed, the test moves the controls and presses **Run**:

* every control at its low end together (sliders at their minimum, the first
  option of a choice, an empty multiple selection, boxes unticked), then every
  control at its high end together (maximum, last option, all options, ticked);
* each option of every choice, with the other choices at their defaults and
  every other control at its high end (the costliest and least stable corner).

It fails on an error in a widget's output (an ``error`` message or a traceback
on stderr, as ``interactive`` shows an exception), on a widget displayed more
than once or without its default figure above it (what the built book shows
without a kernel), on an update slower than ``UPDATE_LIMIT_S``, and on an
update past ``PROGRESS_CHECK_S`` that never showed its progress on the button.  Marked
``notebook`` like the papermill tests, so ``make quick-test`` skips it.
"""
from __future__ import annotations

import ast
import json
import queue
import time
from pathlib import Path

import nbformat
import pytest

from test_notebooks import NOTEBOOKS, ROOT, load

jupyter_client = pytest.importorskip("jupyter_client")

UPDATE_LIMIT_S = 15.0  # one press of Run, at quick settings
PROGRESS_CHECK_S = 3.5  # a longer update must have shown its seconds (explore: after 2 s)
CELL_LIMIT_S = 600.0
VIEW = "application/vnd.jupyter.widget-view+json"

# Kernel-side helpers: find the displayed interactives, plan control settings, apply one.
HELPERS = r'''
import json as _wl_json
import ipywidgets as _wl_widgets
from ipywidgets.widgets.widget import _instances as _wl_instances


def _wl_interactives(ids):
    return [i for i in dict.fromkeys(ids) if isinstance(_wl_instances.get(i), _wl_widgets.interactive)]


def _wl_controls(model_id):
    ui = _wl_instances[model_id]
    return [w for w in ui.kwargs_widgets if isinstance(w, _wl_widgets.ValueWidget)]


def _wl_ends(w):
    """(low, high) of one control, or None for a control with a single value."""
    if isinstance(w, _wl_widgets.SelectMultiple):
        return (), tuple(w.options)
    if isinstance(w, (_wl_widgets.Dropdown, _wl_widgets.ToggleButtons, _wl_widgets.RadioButtons,
                      _wl_widgets.SelectionSlider, _wl_widgets.Select)):
        values = [v for _, v in w._options_full] if hasattr(w, "_options_full") else list(w.options)
        return (values[0], values[-1]) if len(values) > 1 else None
    if isinstance(w, _wl_widgets.FloatLogSlider):
        return w.base ** w.min, w.base ** w.max
    if hasattr(w, "min") and hasattr(w, "max"):
        return w.min, w.max
    if isinstance(w, _wl_widgets.Checkbox):
        return False, True
    return None


def _wl_choices(w):
    if isinstance(w, _wl_widgets.SelectMultiple):
        return []
    if isinstance(w, (_wl_widgets.Dropdown, _wl_widgets.ToggleButtons, _wl_widgets.RadioButtons,
                      _wl_widgets.Select)):
        return list(range(len(w.options)))
    return []


def _wl_plan(model_id):
    """Settings to run, as JSON: lists of [control index, kind, argument]."""
    controls = _wl_controls(model_id)
    ranged = [i for i, w in enumerate(controls) if _wl_ends(w) is not None]
    plan = [[[i, "end", 0] for i in ranged], [[i, "end", 1] for i in ranged]]
    high = [[i, "end", 1] for i in ranged if not _wl_choices(controls[i])]
    for i, w in enumerate(controls):
        plan += [[[i, "option", k]] + high for k in _wl_choices(w)]
    return _wl_json.dumps(plan)


def _wl_apply(model_id, setting):
    """Reset every control to its default, apply ``setting`` (choices first), press Run."""
    ui = _wl_instances[model_id]
    controls = _wl_controls(model_id)
    for w, value in zip(controls, _wl_defaults[model_id]):
        w.value = value
    order = sorted(setting, key=lambda s: not _wl_choices(controls[s[0]]) and
                   not isinstance(controls[s[0]], _wl_widgets.SelectMultiple))
    for i, kind, arg in order:
        w = controls[i]
        ends = _wl_ends(w)  # options may have changed with another control
        if kind == "option":
            w.index = arg
        elif ends is not None:
            w.value = ends[arg]
    ui.manual_button.click() if ui.manual else ui.update()
    return {w.description: repr(w.value) for w in controls}


_wl_defaults = {}
'''


def chapters_with_widgets() -> list[Path]:
    return [p for p in NOTEBOOKS if p.suffix == ".md" and "ipywidgets" in p.read_text()]


class Kernel:
    """A live python3 kernel: run code, collect what it publishes for that request."""

    def __init__(self, cwd: Path) -> None:
        self.km, self.kc = jupyter_client.manager.start_new_kernel(kernel_name="python3",
                                                                   cwd=str(cwd))
        self.progress: list[str] = []  # "Running… N s" shown on a Run button

    def run(self, code: str, timeout: float = CELL_LIMIT_S,
            expressions: dict[str, str] | None = None) -> tuple[list[dict], dict, float]:
        start = time.monotonic()
        msg_id = self.kc.execute(code, user_expressions=expressions or {}, allow_stdin=False)
        outputs: list[dict] = []
        while True:
            left = timeout - (time.monotonic() - start)
            try:
                msg = self.kc.get_iopub_msg(timeout=max(left, 0.1))
            except queue.Empty:
                raise TimeoutError(f"no reply within {timeout:.0f} s to:\n{code[:300]}") from None
            kind = msg["msg_type"]
            state = msg["content"].get("data", {}).get("state", {}) if kind == "comm_msg" else {}
            if str(state.get("description", "")).startswith("Running"):
                self.progress.append(state["description"])  # from explore's timer thread
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if kind == "status" and msg["content"]["execution_state"] == "idle":
                break
            if kind in ("stream", "display_data", "execute_result", "error"):
                outputs.append({"type": kind, **msg["content"]})
        elapsed = time.monotonic() - start
        reply = self.kc.get_shell_msg(timeout=60)
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = self.kc.get_shell_msg(timeout=60)
        return outputs, reply["content"], elapsed

    def value(self, expression: str):
        _, reply, _ = self.run("", expressions={"v": expression}, timeout=60)
        result = reply["user_expressions"]["v"]
        assert result["status"] == "ok", f"{expression}: {result.get('evalue')}"
        return ast.literal_eval(result["data"]["text/plain"])

    def close(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


def errors_in(outputs: list[dict]) -> list[str]:
    found = [f"{o['ename']}: {o['evalue']}" for o in outputs if o["type"] == "error"]
    found += [o["text"][-2000:] for o in outputs
              if o["type"] == "stream" and o["name"] == "stderr" and "Traceback" in o["text"]]
    return found


def views_in(outputs: list[dict]) -> list[str]:
    return [o["data"][VIEW]["model_id"] for o in outputs
            if o["type"] in ("display_data", "execute_result") and VIEW in o.get("data", {})]


def code_cells(nb: nbformat.NotebookNode) -> list[str]:
    cells = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        cells.append(cell.source)
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            cells.append("quick = True")  # what papermill injects in the notebook tests
    return cells


@pytest.mark.notebook
@pytest.mark.parametrize("path", chapters_with_widgets(), ids=lambda p: str(p.relative_to(ROOT)))
def test_widgets_live(path: Path) -> None:
    kernel = Kernel(path.parent)
    try:
        displayed: list[str] = []
        figure_before: dict[str, bool] = {}  # view -> a figure precedes it in its cell
        for number, source in enumerate(code_cells(load(path)), 1):
            outputs, reply, _ = kernel.run(source)
            assert reply["status"] == "ok", (
                f"{path.name}, code cell {number}: {reply.get('ename')}: {reply.get('evalue')}")
            displayed += views_in(outputs)
            for k, view in enumerate(outputs):
                for model_id in views_in([view]):
                    figure_before[model_id] = any("image/png" in o.get("data", {})
                                                  for o in outputs[:k])
        kernel.run(HELPERS, timeout=60)
        interactives = json.loads(kernel.value(f"_wl_json.dumps(_wl_interactives({displayed!r}))"))
        assert interactives, f"{path.name} displays no interactive widget"
        twice = sorted({i for i in interactives if displayed.count(i) > 1})
        assert not twice, f"{path.name}: an interactive is displayed more than once: {twice}"
        # the built book shows the default figure, then the widget from its embedded state
        bare = [i for i in interactives if not figure_before[i]]
        assert not bare, f"{path.name}: no default figure above the widget {bare}"

        failures, timings = [], []
        for model_id in interactives:
            kernel.run(f"_wl_defaults[{model_id!r}] = [w.value for w in _wl_controls({model_id!r})]",
                       timeout=60)
            plan = json.loads(kernel.value(f"_wl_plan({model_id!r})"))
            for setting in plan:
                kernel.progress.clear()
                outputs, reply, elapsed = kernel.run(
                    f"_wl_setting = _wl_apply({model_id!r}, {setting!r})", timeout=CELL_LIMIT_S)
                where = f"{path.name} {setting}"
                if reply["status"] != "ok":
                    failures.append(f"{where}: setting the controls raised {reply['evalue']}")
                    continue
                values = kernel.value("_wl_setting")
                timings.append((elapsed, values))
                failures += [f"{where} {values}: {e}" for e in errors_in(outputs)]
                if elapsed > UPDATE_LIMIT_S:
                    failures.append(f"{where} {values}: update took {elapsed:.1f} s")
                if elapsed > PROGRESS_CHECK_S and not kernel.progress:
                    failures.append(f"{where} {values}: {elapsed:.1f} s without progress shown")
                shown_again = [v for v in views_in(outputs) if v in interactives]
                if shown_again:
                    failures.append(f"{where} {values}: the widget was displayed again")
        slowest = max(timings)
        print(f"{path.name}: {len(timings)} updates, slowest {slowest[0]:.1f} s at {slowest[1]}")
        assert not failures, "\n".join(failures)
    finally:
        kernel.close()
