"""Grading: run a submitted notebook, then the chapter's expected checks on its functions.

What is graded comes from the package, never from the submission: the chapter's checks
and the name of the function each one grades are in the registry
(:func:`~fa_tutor.coursework.registry.chapter_checks`).  The notebook runs to its end in a
fresh kernel (a cell that raises is recorded and the run goes on); then a cell appended
by the grader reloads the check modules and calls every expected check on the function
of that name in the notebook's namespace.  A removed, commented-out or edited check
cell, a check redefined in the notebook, or text printed to look like a result changes
nothing: only the grader cell's own output is read.  (A submission is code run on the
grading machine: one that deliberately patches ``fa_tutor``'s internals can still cheat,
and untrusted work belongs in a sandbox.)

Statuses: ``passed``; ``not done`` (the stub still raises ``NotImplementedError``);
``failed: <hint>`` (a wrong answer) or ``failed: your code raised <Error>: ...``;
``missing`` (no function of that name); ``not run: <why>`` (the kernel died or the
grader cell timed out).

A class folder is graded into a gradebook: ``gradebook.csv`` (one row per student, one
column per check, plus passed/total/score) and ``summary.md``; graded copies of the
notebooks go to ``out``, never into the submission folder.
"""
from __future__ import annotations

import copy
import csv
import logging
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import nbformat

from .registry import CheckFailed, chapter_checks

log = logging.getLogger(__name__)

MIME = "application/vnd.fa-tutor.grades+json"  # the grader cell's result, read back by the grader
PASSED, NOT_DONE, MISSING, NOT_SUBMITTED = "passed", "not done", "missing", "not submitted"


@dataclass
class NotebookGrade:
    """One graded notebook: ``statuses`` maps each expected check label to its status;
    ``notes`` lists what went wrong outside the checks (cells that raised, ...)."""
    student: str
    chapter: str
    path: Path
    statuses: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.statuses) and all(s == PASSED for s in self.statuses.values())


@dataclass
class Run:
    """An executed notebook, the grader's statuses and glued values, and notes on errors."""
    nb: nbformat.NotebookNode
    statuses: dict[str, str] | None
    glued: dict[str, str]
    notes: list[str]


# --- inside the kernel ---------------------------------------------------------------

def grade_in_kernel(expected: dict[str, str], namespace: dict) -> None:
    """Run each expected check (label -> function name) on the namespace's function and
    display the statuses (and the values glued by the run) as one ``MIME`` bundle.  Called
    by the cell the grader appends.

    The check modules are reloaded first, so a notebook that replaced a registered check
    (``ft.checks.<label> = ...``, ``CHECKS[label] = ...``) is graded by the real one.
    """
    import importlib

    from IPython.display import display

    from . import CHECK_MODULES, registry
    from .glue import RECORDED

    for module in CHECK_MODULES:
        importlib.reload(module)
    statuses = {}
    for label, name in expected.items():
        fn = namespace.get(name)
        statuses[label] = MISSING if not callable(fn) else _run_check(registry.CHECKS[label], fn)
    text = "\n".join(f"{label}: {status}" for label, status in statuses.items())
    display({MIME: {"statuses": statuses, "glued": dict(RECORDED)},
             "text/plain": f"Checks run by the grader:\n{text}"}, raw=True)


def _run_check(check, fn) -> str:
    try:
        check(fn)
    except NotImplementedError:
        return NOT_DONE
    except CheckFailed as err:
        return f"failed: {_first_line(err)}"
    except Exception as err:  # the student's code crashed inside the check
        return f"failed: your code raised {type(err).__name__}: {_first_line(err)}"
    return PASSED


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [""])[0]


# --- running a notebook --------------------------------------------------------------

def execute(nb: nbformat.NotebookNode, *, cwd: Path, quick: bool = True, timeout: int = 900,
            expected: dict[str, str] | None = None, env: dict[str, str] | None = None) -> Run:
    """Run ``nb`` to its end in a fresh kernel, with ``quick`` injected after its
    ``parameters`` cell, then (if ``expected`` is given, even empty) the grader cell.

    A cell that raises is recorded in ``Run.notes`` and the run goes on; one that runs
    past ``timeout`` seconds is interrupted.  ``Run.statuses`` is ``None`` when the grader
    cell produced no result (the kernel died).
    """
    from nbclient import NotebookClient

    nb = copy.deepcopy(nb)
    tagged = [i for i, c in enumerate(nb.cells)
              if "parameters" in c.get("metadata", {}).get("tags", [])]
    injected = tagged[0] + 1 if tagged else 0
    nb.cells.insert(injected, nbformat.v4.new_code_cell(
        f"quick = {bool(quick)}  # injected by the grader",
        metadata={"tags": ["injected-parameters"]}))
    if expected is not None:
        nb.cells.append(nbformat.v4.new_code_cell(
            "# added by the grader: the chapter's checks, taken from fa_tutor\n"
            "from fa_tutor.coursework.grading import grade_in_kernel\n"
            f"grade_in_kernel({expected!r}, globals())",
            metadata={"tags": ["fa_tutor-grader"]}))
    with tempfile.TemporaryDirectory(prefix="fa_tutor-kernel-") as tmp:
        client = NotebookClient(nb, kernel_name="python3", timeout=timeout, allow_errors=True,
                                interrupt_on_timeout=True, record_timing=False,
                                config=_kernel_config(Path(tmp)),
                                resources={"metadata": {"path": str(cwd)}})
        try:
            client.execute(env={**os.environ, **(env or {})})
        except Exception as err:  # the kernel died, or could not start
            log.warning("%s stopped: %s", cwd, err)
            return Run(nb, None, {}, [f"the run stopped: {type(err).__name__}: "
                                      f"{_first_line(err)}"])
    notes = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or "raises-exception" in cell.metadata.get("tags", []):
            continue  # markdown, or a cell that raises on purpose
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error" and out.get("ename") not in (
                    "NotImplementedError", "CheckFailed"):
                number = i if i > injected else i + 1  # the submission's own numbering
                notes.append(f"cell {number} raised {out.get('ename')}: "
                             f"{(str(out.get('evalue', '')).splitlines() or [''])[0]}")
    run = Run(nb, None, {}, notes)
    if expected is not None:
        for out in nb.cells[-1].get("outputs", []):
            if MIME in out.get("data", {}):
                run.statuses = dict(out["data"][MIME]["statuses"])
                run.glued = dict(out["data"][MIME]["glued"])
    return run


def kernel_env(jobs: int) -> dict[str, str]:
    """Environment for ``jobs`` kernels running at once: they share the CPUs, so each gets
    its share of torch threads (unless ``OMP_NUM_THREADS`` is set already)."""
    if jobs == 1 or "OMP_NUM_THREADS" in os.environ:
        return {}
    return {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // jobs))}


def _kernel_config(tmp: Path):
    """Kernel sockets over IPC in ``tmp`` (POSIX): no TCP port, so no "Kernel is running
    over TCP without encryption" warning; TCP elsewhere."""
    from traitlets.config import Config

    if os.name != "posix":
        return Config()
    return Config({"KernelManager": {"transport": "ipc", "ip": str(tmp / "kernel")}})


# --- one notebook ---------------------------------------------------------------------

def chapter_of(nb: nbformat.NotebookNode, path: Path) -> str:
    """The chapter a notebook belongs to: the export's metadata, else the file name."""
    chapter = nb.metadata.get("fa_tutor", {}).get("chapter") or path.stem
    if chapter not in _checked_chapters():
        raise ValueError(f"{path}: chapter {chapter!r} has no automatic checks (the chapter is "
                         "read from the notebook's fa_tutor metadata, else its file name); "
                         f"chapters with checks: {', '.join(_checked_chapters())}")
    return chapter


def grade_notebook(path: str | Path, *, student: str | None = None, quick: bool = True,
                   timeout: int = 900, graded_copy: Path | None = None,
                   env: dict[str, str] | None = None) -> NotebookGrade:
    """Grade one submitted notebook on its chapter's checks (from the registry)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no notebook {path}")
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as err:
        raise ValueError(f"{path}: not a readable notebook ({_first_line(err)})") from None
    chapter = chapter_of(nb, path)
    expected = {s.label: s.function for s in chapter_checks(chapter)}
    grade = NotebookGrade(student or path.stem, chapter, path)
    log.info("grading %s (%s)", path, chapter)
    run = execute(nb, cwd=path.parent.resolve(), quick=quick, timeout=timeout,
                  expected=expected, env=env)
    grade.notes = run.notes
    reason = run.notes[-1] if run.notes else "the grader cell produced no result"
    grade.statuses = run.statuses or {label: f"not run: {reason}" for label in expected}
    if graded_copy is not None:
        graded_copy.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(run.nb, graded_copy)
    return grade


def _checked_chapters() -> list[str]:
    from .registry import SPECS

    return sorted({s.chapter for s in SPECS.values()})


# --- a class --------------------------------------------------------------------------

def submissions(directory: Path) -> list[tuple[str, Path]]:
    """(student, notebook) for every notebook under ``directory``: a notebook directly in it
    is one student (named by the file), a subfolder is one student (named by the folder)."""
    found = []
    for path in sorted(directory.rglob("*.ipynb")):
        rel = path.relative_to(directory)
        if ".ipynb_checkpoints" in rel.parts or path.name.endswith(".graded.ipynb"):
            continue
        found.append((rel.parts[0] if len(rel.parts) > 1 else path.stem, path))
    return found


@dataclass
class Gradebook:
    """A graded class: every notebook's grade, and where the CSV and summary were written."""
    grades: list[NotebookGrade]
    labels: list[str]
    csv_path: Path
    summary_path: Path
    errors: list[str] = field(default_factory=list)  # notebooks that could not be graded
    ungraded: dict[str, list[str]] = field(default_factory=dict)  # student -> those errors

    @property
    def all_passed(self) -> bool:
        return not self.errors and all(
            s == PASSED for row in self.rows().values() for s in row.values())

    def rows(self) -> dict[str, dict[str, str]]:
        """student -> {label: status} over every label of the class ("not submitted" where
        the student has no notebook of that chapter)."""
        table: dict[str, dict[str, str]] = {}
        for g in self.grades:
            table.setdefault(g.student, {label: NOT_SUBMITTED for label in self.labels})
            table[g.student].update(g.statuses)
        for student in self.ungraded:  # a student whose only notebooks failed still has a row
            table.setdefault(student, {label: NOT_SUBMITTED for label in self.labels})
        return table


def grade_class(directory: str | Path, *, out: str | Path | None = None, quick: bool = True,
                timeout: int = 900, jobs: int | None = None) -> Gradebook:
    """Grade every notebook under ``directory`` (in parallel, ``jobs`` kernels at a time,
    default: one per CPU) and write ``gradebook.csv``, ``summary.md`` and the graded copies
    into ``out`` (default: ``<directory>-graded`` beside the submission folder)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"no folder {directory}")
    found = submissions(directory)
    if not found:
        raise ValueError(f"{directory}: no notebooks (*.ipynb) to grade")
    out = Path(out) if out is not None else directory.resolve().with_name(
        directory.resolve().name + "-graded")
    if out.resolve() == directory.resolve() or directory.resolve() in out.resolve().parents:
        raise ValueError(f"--out {out} is inside the submission folder {directory}; choose a "
                         "folder outside it")
    if jobs is not None and jobs < 1:
        raise ValueError(f"--jobs must be at least 1, got {jobs}")
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(found)))
    env = kernel_env(jobs)

    def one(item: tuple[str, Path]) -> NotebookGrade | tuple[str, str]:
        student, path = item
        copy_to = out / "graded" / path.relative_to(directory)
        try:
            return grade_notebook(path, student=student, quick=quick, timeout=timeout,
                                  graded_copy=copy_to, env=env)
        except (ValueError, FileNotFoundError) as err:
            return student, f"not graded: {err}"

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        results = list(pool.map(one, found))
    grades = [r for r in results if isinstance(r, NotebookGrade)]
    ungraded: dict[str, list[str]] = {}
    for student, message in (r for r in results if isinstance(r, tuple)):
        ungraded.setdefault(student, []).append(message)
    grades, duplicates = _one_per_chapter(grades)
    errors = [m for messages in ungraded.values() for m in messages] + duplicates
    labels = _ordered_labels(s.label for g in grades for s in chapter_checks(g.chapter))
    book = Gradebook(grades, labels, out / "gradebook.csv", out / "summary.md", errors,
                     ungraded)
    out.mkdir(parents=True, exist_ok=True)
    _write_csv(book)
    book.summary_path.write_text(summary(book))
    log.info("gradebook: %s", book.csv_path)
    return book


def _one_per_chapter(grades: list[NotebookGrade]) -> tuple[list[NotebookGrade], list[str]]:
    """Keep one notebook per student and chapter (the one named after the chapter, else the
    first by name); a student with several is reported."""
    by_key: dict[tuple[str, str], list[NotebookGrade]] = {}
    for g in grades:
        by_key.setdefault((g.student, g.chapter), []).append(g)
    kept, errors = [], []
    for (student, chapter), group in by_key.items():
        group.sort(key=lambda g: (g.path.stem != chapter, g.path.name))
        kept.append(group[0])
        if len(group) > 1:
            errors.append(f"{student}: {len(group)} notebooks of chapter {chapter} "
                          f"({', '.join(g.path.name for g in group)}); the gradebook shows "
                          f"{group[0].path.name}")
    return kept, errors


def _ordered_labels(labels: Iterable[str]) -> list[str]:
    """Book order where the checkout's _toc.yml is at hand, else alphabetical by chapter."""
    from .export import chapter_names

    try:
        names = chapter_names()
    except FileNotFoundError:  # fa_tutor installed without the repository
        names = _checked_chapters()
    order = {name: i for i, name in enumerate(names)}
    return sorted(set(labels), key=lambda lb: (order.get(lb.rpartition("_ex")[0], len(order)),
                                               int(lb.rpartition("_ex")[2])))


def _score(row: dict[str, str]) -> tuple[int, int, float]:
    passed = sum(s == PASSED for s in row.values())
    return passed, len(row), round(100.0 * passed / len(row), 1) if row else 0.0


def _write_csv(book: Gradebook) -> None:
    notes = {student: list(messages) for student, messages in book.ungraded.items()}
    for g in book.grades:
        notes.setdefault(g.student, []).extend(f"{g.path.name}: {n}" for n in g.notes)
    with book.csv_path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["student", *book.labels, "passed", "total", "score_percent", "notes"])
        for student, row in sorted(book.rows().items()):
            w.writerow([student, *(row[lb] for lb in book.labels), *_score(row),
                        "; ".join(notes.get(student, []))])


def summary(book: Gradebook) -> str:
    """A readable summary: scores per student, pass counts per check, problems."""
    rows = book.rows()
    lines = [f"# Gradebook: {len(rows)} student(s), {len(book.grades)} notebook(s), "
             f"{len(book.labels)} check(s)", "", "## Students", "",
             "| student | passed | score | not passed |", "|---|---|---|---|"]
    for student, row in sorted(rows.items()):
        passed, total, pct = _score(row)
        other = ", ".join(f"{lb} ({s.split(':')[0]})" for lb, s in row.items() if s != PASSED)
        lines.append(f"| {student} | {passed}/{total} | {pct} % | {other or '—'} |")
    lines += ["", "## Checks", "", "| check | passed | not done | failed | missing | other |",
              "|---|---|---|---|---|---|"]
    for label in book.labels:
        col = [row[label] for row in rows.values()]
        count = {k: sum(s.split(":")[0] == k for s in col) for k in
                 (PASSED, NOT_DONE, "failed", MISSING)}
        lines.append(f"| {label} | {count[PASSED]} | {count[NOT_DONE]} | {count['failed']} | "
                     f"{count[MISSING]} | {len(col) - sum(count.values())} |")
    problems = [f"- {g.student} / {g.path.name}: {n}" for g in book.grades for n in g.notes]
    problems += [f"- {e}" for e in book.errors]
    if problems:
        lines += ["", "## Problems", "", *problems]
    return "\n".join(lines) + "\n"


def check(target: str | Path, *, out: str | Path | None = None, quick: bool = True,
          timeout: int = 900, jobs: int | None = None) -> NotebookGrade | Gradebook:
    """Grade one notebook (its graded copy goes to ``out`` only if given) or a class folder."""
    target = Path(target)
    if target.is_dir():
        return grade_class(target, out=out, quick=quick, timeout=timeout, jobs=jobs)
    copy_to = Path(out) / target.name if out is not None else None
    return grade_notebook(target, quick=quick, timeout=timeout, graded_copy=copy_to)
