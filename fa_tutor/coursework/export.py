"""Coursework notebooks: each chapter exported as a plain ``.ipynb`` for students (solutions
removed, exercise stubs and checks kept) or as the instructor's key (solutions in place).

The MyST syntax is turned into markdown any notebook viewer renders (:mod:`.myst`), the
numbers the text quotes are filled in (from the book build, or from a quick run of the
chapter at export), and glue calls go to :mod:`.glue`, so the notebooks run with only
``fa_tutor[coursework]`` installed.  Grading is in :mod:`.grading`.
"""
from __future__ import annotations

import copy
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import nbformat

log = logging.getLogger(__name__)
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


def chapter_names(root: Path = REPO) -> list[str]:
    """The executable chapters' names (file stems), in book order."""
    if not (root / "_toc.yml").is_file():
        raise FileNotFoundError(f"no _toc.yml in {root}: the chapters need the repository checkout")
    return [p.stem for p in chapter_paths(root)]


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


def to_key(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The instructor's key: every solution kept, and each exercise stub whose function a
    solution cell defines dropped, so the solution stands in its place."""
    solved = set()
    for cell in nb.cells:
        if cell.cell_type == "code" and "solution" in cell.get("metadata", {}).get("tags", []):
            solved |= _defined(cell.source)
    nb.cells = [c for c in nb.cells if not (
        c.cell_type == "code" and "exercise" in c.get("metadata", {}).get("tags", [])
        and _defined(c.source) and _defined(c.source) <= solved)]
    nb.metadata.setdefault("fa_tutor", {})["student"] = False
    return nb


def _defined(source: str) -> set[str]:
    """Names of the functions a code cell defines at top level."""
    return set(re.findall(r"^def (\w+)\s*\(", source, re.M))


def built_values(path: Path, root: Path = REPO) -> dict[str, str] | None:
    """The values a chapter glued in the last book build, or ``None`` when there is no build
    or it ran other code than the chapter has now.

    myst-nb writes the executed chapter to ``_build/jupyter_execute/<page>.ipynb`` and
    its glued outputs, keyed by name, to ``<page>.glue.json`` beside it.
    """
    import json

    import jupytext

    built = root / "_build" / "jupyter_execute" / path.relative_to(root).with_suffix(".ipynb")
    if not built.is_file():
        return None
    ran = nbformat.read(built, as_version=4)
    code = lambda nb: [c.source.strip() for c in nb.cells if c.cell_type == "code"]  # noqa: E731
    if code(ran) != code(jupytext.read(path)):
        log.info("%s: the book build is older than the chapter; not using its values", path.name)
        return None
    glue_file = built.with_suffix(".glue.json")
    outputs = json.loads(glue_file.read_text()) if glue_file.is_file() else {}
    return {name: out.get("data", {}).get("text/plain", "") for name, out in outputs.items()}


@dataclass
class Exported:
    """One exported notebook: where it went, which chapter, where its quoted values came
    from (``"build"``, ``"quick run"`` or ``"given"``) and, for a key whose chapter was run,
    the grader's statuses of that run."""
    path: Path
    chapter: str
    values_from: str
    glued: dict[str, str]
    key_statuses: dict[str, str] | None = None


def export(directory: str | Path, *, with_solutions: bool = False, force: bool = False,
           root: Path = REPO) -> list[Path]:
    """Write a notebook per chapter into ``directory`` (student version, or the key with
    ``with_solutions``); refuses to overwrite existing notebooks unless ``force``."""
    return [e.path for e in export_notebooks(directory, with_solutions=with_solutions,
                                             force=force, root=root)]


def export_notebooks(directory: str | Path, *, with_solutions: bool = False,
                     force: bool = False, values: str | dict[str, dict[str, str]] = "auto",
                     root: Path = REPO, jobs: int | None = None, timeout: int = 900,
                     chapters: list[str] | None = None) -> list[Exported]:
    """Export every chapter as a notebook that plain Jupyter renders and runs.

    ``values`` says where the numbers the text quotes (``{glue:text}``) come from:
    ``"auto"``, the book build when it is up to date with the chapter, else a run of the
    chapter with ``quick = True`` at export; ``"build"`` or ``"run"`` forces one of them;
    a dict ``{chapter: {name: text}}`` gives them (e.g. the ``glued`` of an earlier export).
    A run executes the exported key notebook itself with the grader, so it also tells
    whether every check of the key passes (``Exported.key_statuses``).  ``chapters``
    limits the export to those chapters (default: all).
    """
    from concurrent.futures import ThreadPoolExecutor

    import jupytext

    from .grading import kernel_env
    from .myst import BookIndex, MystError

    out = Path(directory)
    paths = chapter_paths(root)
    if chapters is not None:
        unknown = sorted(set(chapters) - {p.stem for p in paths})
        if unknown:
            raise ValueError(f"unknown chapter(s) {', '.join(unknown)}; chapters: "
                             f"{', '.join(p.stem for p in paths)}")
        paths = [p for p in paths if p.stem in chapters]
    targets = [out / f"{p.stem}.ipynb" for p in paths]
    existing = [t for t in targets if t.exists()]
    if existing and not force:
        raise ValueError(f"{out} already has {len(existing)} of the notebooks (e.g. "
                         f"{existing[0].name}); use --force to overwrite them, or choose "
                         "another folder")
    if isinstance(values, str) and values not in ("auto", "build", "run"):
        raise ValueError(f"values={values!r}; choose auto, build, run or a dict of values")
    index = BookIndex.from_book(root)

    def prepare(path: Path) -> tuple[Path, nbformat.NotebookNode, nbformat.NotebookNode,
                                      dict[str, str] | None, str]:
        chapter = path.stem
        source = jupytext.read(path)
        key = _runnable(to_key(copy.deepcopy(source)), chapter)
        nb = key if with_solutions else _runnable(to_student(source), chapter)
        glued, origin = None, "given"
        if isinstance(values, dict):
            glued = values.get(chapter, {})
        elif values in ("auto", "build"):
            glued, origin = built_values(path, root), "build"
            if glued is None and values == "build":
                raise ValueError(f"no up-to-date book build of {chapter} (run make book)")
        return path, key, nb, glued, origin

    def run_if_needed(item: tuple) -> tuple[dict[str, str], str, dict | None]:
        path, key, _, glued, origin = item
        if glued is not None:
            return glued, origin, None
        try:
            glued, statuses = _run_for_values(key, path, timeout, env)
        except ValueError as err:
            raise failed(path, err) from None
        return glued, "quick run", statuses

    def failed(path: Path, err: Exception) -> ValueError:
        return ValueError(f"{path.name}: {err}")

    # Reading and rendering parse Python (jupytext's literal_eval, literalinclude's
    # ast.parse), which CPython 3.11 cannot do in two threads at once (its AST builder
    # keeps one recursion counter: "AST constructor recursion depth mismatch"), so
    # only the kernel runs go to threads.
    prepared = []
    for path in paths:
        try:
            prepared.append(prepare(path))
        except (ValueError, MystError) as err:
            raise failed(path, err) from None
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(paths)))
    env = kernel_env(jobs)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        ran = list(pool.map(run_if_needed, prepared))
    done = []
    for (path, _, nb, _, _), (glued, origin, statuses) in zip(prepared, ran):
        chapter = path.stem
        try:
            rendered = render(nb, chapter, index, glued, origin, root, with_solutions)
        except (ValueError, MystError) as err:
            raise failed(path, err) from None
        done.append((rendered, Exported(out / f"{chapter}.ipynb", chapter, origin, glued,
                                        statuses if with_solutions else None)))
    out.mkdir(parents=True, exist_ok=True)
    for nb, exported in done:
        nbformat.write(nb, exported.path)
        if exported.key_statuses and any(s != "passed" for s in exported.key_statuses.values()):
            log.error("%s: the key's checks do not all pass: %s", exported.chapter,
                      exported.key_statuses)
    return [e for _, e in done]


def _runnable(nb: nbformat.NotebookNode, chapter: str) -> nbformat.NotebookNode:
    """Code that runs with only ``fa_tutor[coursework]``: myst-nb's glue → fa_tutor's."""
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        cell.source = re.sub(r"^(\s*)from myst_nb import glue\b.*$",
                             r"\1from fa_tutor.coursework.glue import glue  # stores the "
                             r"values the text quotes", cell.source, flags=re.M)
        if "myst_nb" in cell.source:
            raise ValueError("a code cell uses myst_nb beyond 'from myst_nb import glue'")
    nb.metadata.setdefault("fa_tutor", {})["chapter"] = chapter
    return nb


def _run_for_values(key: nbformat.NotebookNode, path: Path, timeout: int,
                    env: dict[str, str]) -> tuple[dict[str, str], dict[str, str] | None]:
    """Run the key with ``quick = True`` and the grader: its glued values and statuses."""
    from .grading import execute
    from .registry import chapter_checks

    log.info("%s: running the chapter (quick) for the values its text quotes", path.name)
    expected = {s.label: s.function for s in chapter_checks(path.stem)}
    run = execute(key, cwd=path.parent, quick=True, timeout=timeout, expected=expected, env=env)
    if run.statuses is None:
        raise ValueError(f"the quick run failed: {'; '.join(run.notes)}")
    if run.notes:
        raise ValueError(f"the quick run of the chapter raised: {'; '.join(run.notes)}")
    return run.glued, run.statuses


def render(nb: nbformat.NotebookNode, chapter: str, index, glued: dict[str, str],
           origin: str, root: Path, key: bool) -> nbformat.NotebookNode:
    """Markdown cells in plain-Jupyter markdown (see :mod:`.myst`), a header cell saying
    what this notebook is, and a references cell for the chapter's citations."""
    from .myst import Converter

    nb = copy.deepcopy(nb)
    conv = Converter(index, chapter, root, glued)
    cells = []
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = conv.markdown(cell.source)
            if not cell.source.strip():
                continue
        cells.append(cell)
    number = index.chapter_numbers.get(chapter)
    title = index.titles.get(chapter, chapter)
    where = {
        "build": "come from the book's build, which ran the chapter with its default settings",
        "quick run": "were computed when this notebook was exported, by running the chapter "
                     "with `quick = True` (shorter runs than the book's, so they differ from "
                     "the book's own numbers)",
        "given": "were computed by an earlier run of the chapter",
    }[origin]
    version = ("as the instructor's key (every solution in place, every check passes)"
               if key else "for students (the solutions removed: write yours where a cell "
               "raises `NotImplementedError`, then run the check below it)")
    header = (f"*Chapter {number}* of the book *Learning without weight transport* "
              f"(`fa_tutor`), exported {version}.\n"
              f"The numbers quoted in the text {where}; running the notebook gives your own.\n"
              "It needs `fa_tutor` with its coursework extra in the kernel's environment "
              "(`pip install 'PATH[coursework]'`, PATH the fa_tutor checkout or wheel your "
              "instructor gives you).")
    if number is None:
        header = header.replace(f"*Chapter {number}*", f"*{title}*")
    macros = index.macro_definitions()
    cells.insert(0, nbformat.v4.new_markdown_cell(header + (f"\n\n{macros}" if macros else "")))
    if conv.cited:
        cells.append(nbformat.v4.new_markdown_cell(index.references(conv.cited)))
    nb.cells = cells
    nb.metadata.pop("jupytext", None)
    nb.metadata.setdefault("fa_tutor", {}).update(chapter=chapter, values=origin)
    return nb
