"""Student notebooks: solutions removed, exercise stubs and automatic checks kept; and grading runs."""
from __future__ import annotations

import re
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[2]
_DIRECTIVE = r"^(?P<fence>`{{3,}}|:{{3,}})\{{{name}\}}[^\n]*\n.*?^(?P=fence)[ \t]*(?:\n|\Z)"
SOLUTION = re.compile(_DIRECTIVE.format(name="solution"), re.S | re.M)  # one block
SOLUTION_START = re.compile(_DIRECTIVE.format(name="solution-start"), re.S | re.M)
SOLUTION_END = re.compile(_DIRECTIVE.format(name="solution-end"), re.S | re.M)


def chapter_paths(root: Path = REPO) -> list[Path]:
    """The executable chapters listed in ``_toc.yml``, in book order."""
    import yaml

    toc = yaml.safe_load((root / "_toc.yml").read_text())
    files = [c["file"] for part in toc.get("parts", []) for c in part.get("chapters", [])]
    paths = [root / f"{f}.md" for f in files if (root / f"{f}.md").exists()]
    return [p for p in paths if _is_notebook(p)]


def _is_notebook(path: Path) -> bool:
    parts = path.read_text().split("---", 2)
    return len(parts) > 2 and "kernelspec" in parts[1]


def _strip_solutions(text: str, inside: bool) -> tuple[str, bool]:
    """``text`` without its solutions; ``inside``: whether a gated solution is open.

    A ``{solution}`` directive is one block; a gated ``{solution-start}`` …
    ``{solution-end}`` solution may span cells, so the state carries over.
    """
    kept = []
    while text:
        if inside:
            end = SOLUTION_END.search(text)
            if end is None:
                return "".join(kept), True  # the rest of this cell is solution
            text, inside = text[end.end():], False
            continue
        start = SOLUTION_START.search(text)
        kept.append(SOLUTION.sub("", text if start is None else text[:start.start()]))
        if start is None:
            break
        text, inside = text[start.end():], True
    return "".join(kept), inside


def to_student(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Drop the solutions (cells tagged ``solution``, ``{solution}`` blocks and everything
    between ``{solution-start}`` and ``{solution-end}``); keep stubs and checks."""
    cells, inside = [], False
    for cell in nb.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if "solution" in tags:  # any cell type
            continue
        if cell.cell_type == "markdown":
            cell.source, inside = _strip_solutions(cell.source, inside)
            if cell.source.strip():
                cells.append(cell)
        elif not inside:
            cells.append(cell)
    if inside:
        raise ValueError("a {solution-start} without its {solution-end}")
    nb.cells = cells
    nb.metadata.setdefault("fa_tutor", {})["student"] = True
    return nb


def export(directory: str | Path, root: Path = REPO) -> list[Path]:
    """Write a student ``.ipynb`` for every chapter into ``directory``; return the paths."""
    import jupytext

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in chapter_paths(root):
        try:
            nb = to_student(jupytext.read(path))
        except ValueError as err:
            raise ValueError(f"{path.name}: {err}") from None
        target = out / f"{path.stem}.ipynb"
        nbformat.write(nb, target)
        written.append(target)
    return written


def check(notebook: str | Path, *, quick: bool = True, timeout: int = 900) -> dict[str, str]:
    """Run a (completed) student notebook with papermill; report each exercise check.

    Returns ``{label: status}`` for every ``ft.checks.<label>(...)`` cell found in the
    notebook; status is ``"passed"``, ``"not done"`` (the stub still raises),
    ``"failed: <message>"`` (a wrong answer, or one that raises) or ``"not run: <why>"``
    (an earlier cell failed and stopped the run).  A notebook that fails and has no
    check cells raises ``ValueError`` (nothing could be graded).
    """
    import papermill as pm

    path = Path(notebook)
    nb = nbformat.read(path, as_version=4)
    labels = {}
    for i, cell in enumerate(nb.cells):
        m = re.search(r"ft\.checks\.(\w+)\(", cell.source) if cell.cell_type == "code" else None
        if m:
            labels[i] = m.group(1)
            cell.source = _guarded(cell.source, m.group(1))
    tmp = path.with_name(path.stem + ".graded.ipynb")
    unrun = "not run"
    try:
        pm.execute_notebook(nb, str(tmp), parameters={"quick": quick}, kernel_name="python3",
                            cwd=str(path.parent), progress_bar=False, execution_timeout=timeout)
    except pm.PapermillExecutionError as err:  # a cell outside the checks failed: stop there
        unrun = (f"not run: an earlier cell failed ({err.ename}: "
                 f"{(str(err.evalue).splitlines() or [''])[0]}; see {tmp.name})")
        if not labels:
            raise ValueError(f"{path.name}: {unrun[len('not run: '):]}; it has no checks to "
                             "report") from err
    ran = nbformat.read(tmp, as_version=4)
    text = "".join(o.get("text", "") for c in ran.cells if c.cell_type == "code"
                   for o in c.get("outputs", []) if o.get("name") == "stdout")
    report = {}
    for label in labels.values():  # papermill inserts a cell, so match by label, not by index
        status = re.search(rf"CHECK {label}: (.*)", text)
        report[label] = status.group(1).strip() if status else unrun
    return report


def _guarded(source: str, label: str) -> str:
    """Wrap a check cell so a stub (NotImplementedError), a wrong answer (AssertionError) or
    an answer that crashes (any other exception) is reported, not fatal."""
    body = "\n".join("    " + line for line in source.splitlines())
    first = "(str(err).splitlines() or [''])[0]"
    return (f"try:\n{body}\n    print('CHECK {label}: passed')\n"
            f"except NotImplementedError:\n    print('CHECK {label}: not done')\n"
            f"except AssertionError as err:\n    print('CHECK {label}: failed:', {first})\n"
            f"except Exception as err:\n"
            f"    print('CHECK {label}: failed: your code raised', type(err).__name__ + ':', {first})\n")
