"""Coursework on the real chapters: export (student and key) renders in plain Jupyter with no
MyST syntax left; grading takes the checks from the package, so a tampered notebook grades
the same; a class folder becomes a CSV gradebook; every chapter round-trips (the key passes
every check, the student version reports "not done")."""
from __future__ import annotations

import ast
import csv
import re
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import pytest

import fa_tutor as ft
from fa_tutor.coursework import CHECKS, export, grading, myst
from fa_tutor.coursework.registry import SPECS, CheckFailed, chapter_checks

CHAPTERS = export.chapter_paths()
ROOT = export.REPO
# MyST that a notebook viewer would show as literal text or code
LEFTOVER = {
    "role": re.compile(r"\{[\w:-]+\}`"),
    "directive": re.compile(r"^[ \t]*(`{3,}|:{3,})\{", re.M),
    "target": re.compile(r"^\([\w.:-]+\)=[ \t]*$", re.M),
    "labelled $$": re.compile(r"^\$\$[ \t]*\(", re.M),
}


def _fake_values() -> dict[str, dict[str, str]]:
    """Every glued name of every chapter, valued "0.5", so the structure tests need no run."""
    return {p.stem: {m: "0.5" for m in re.findall(r"\{glue:text\}`([\w]+)", p.read_text())}
            for p in CHAPTERS}


def _cells(path: Path) -> list[nbformat.NotebookNode]:
    return nbformat.read(path, as_version=4).cells


# --- the checks and the registry ------------------------------------------------------

def test_every_check_in_the_book_is_registered_with_its_function() -> None:
    """The registry (what grading uses) and the chapters' check cells agree both ways."""
    calls = {}
    for path in CHAPTERS:
        for label, fn in re.findall(r"ft\.checks\.(\w+)\((\w+)\)", path.read_text()):
            calls[label] = (path.stem, fn)
    assert set(calls) == set(SPECS) == set(CHECKS)
    for label, (chapter, fn) in calls.items():
        assert (SPECS[label].chapter, SPECS[label].function) == (chapter, fn), label
        assert getattr(ft.checks, label) is CHECKS[label]
    assert [s.label for s in chapter_checks("conservation_law")] == [
        "conservation_law_ex3", "conservation_law_ex4"]


def test_checks_never_use_assert_and_fail_under_python_O() -> None:
    for path in (ROOT / "fa_tutor" / "coursework").glob("checks*.py"):
        asserts = [n.lineno for n in ast.walk(ast.parse(path.read_text()))
                   if isinstance(n, ast.Assert)]
        assert not asserts, f"{path.name}: assert on lines {asserts}"
    code = ("import fa_tutor as ft\n"
            "try:\n    ft.checks.getting_started_ex2(lambda logits, y: 50.0)\n"
            "except ft.checks.CheckFailed as err:\n    print('failed:', err)\n"
            "else:\n    print('passed')\n")
    out = subprocess.run([sys.executable, "-O", "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.startswith("failed: accuracy on 10 examples"), out


def test_a_wrong_answer_raises_check_failed_with_a_hint() -> None:
    with pytest.raises(CheckFailed, match="Hint: compare logits.argmax"):
        ft.checks.getting_started_ex2(lambda logits, y: 50.0)
    right = lambda logits, y: 100.0 * (logits.argmax(-1) == y).float().mean().item()  # noqa: E731
    assert ft.checks.getting_started_ex2(right) == "getting_started_ex2: all checks passed"


# --- MyST to plain-notebook markdown ---------------------------------------------------

def test_book_index_numbers_like_the_book() -> None:
    index = myst.BookIndex.from_book(ROOT)
    assert index.chapter_numbers["getting_started"] == 1
    assert index.chapter_numbers["benchmarks"] == 10
    assert index.equations["eq-sgd"] == "(1.1)"
    assert index.numbered["def-rule"] == "Definition 1.1"
    assert index.exercises["getting_started_ex2"] == "Exercise 1.2"
    assert index.numbered["tab-fg-variance"] == "Table 7.1"
    assert index.refs["getting-started"] == "Getting started"
    assert index.cite("lillicrap2016random", "t") == "(Lillicrap et al., 2016)"
    assert index.cite("nokland2016direct", "t") == "(Nøkland, 2016)"
    assert index.bibliography["baydin2022gradients"]["author"].startswith("Baydin, Atılım Güneş")


def test_glue_text_formats_as_myst_nb() -> None:
    glued = {"acc": "91.66", "word": "'a string'", "n": "12"}
    assert myst.glue_text(glued, "acc", "x") == "91.66"
    assert myst.glue_text(glued, "acc:.1f", "x") == "91.7"
    assert myst.glue_text(glued, "word", "x") == "a string"
    assert myst.glue_text(glued, "n:d", "x") == "12"
    with pytest.raises(myst.MystError, match="no glued value 'missing'"):
        myst.glue_text(glued, "missing", "x")


def test_converter_renders_directives_and_roles() -> None:
    index = myst.BookIndex.from_book(ROOT)
    conv = myst.Converter(index, "getting_started", ROOT, {"v": "3.25"})
    text = ("(sec-x)=\n## A section\n\nBy {eq}`eq-sgd` and {prf:ref}`def-rule`, value "
            "{glue:text}`v:.1f`, see {ref}`getting-started` {cite}`lillicrap2016random`; "
            "`{eq}` in code stays.\n\n```{math}\n:label: eq-sgd\na \\\\ b\n```\n\n"
            "````{exercise-start}\n:label: getting_started_ex2\n````\n\n"
            "```{literalinclude} ../fa_tutor/rules/backprop.py\n"
            ":pyobject: Backprop._compute_grads\n```")
    out = conv.markdown(text)
    assert "By (1.1) and Definition 1.1, value 3.2, see Getting started (Lillicrap et al., " \
           "2016)" in out
    assert "`{eq}` in code stays" in out
    assert "$$\n\\begin{aligned}a \\\\ b\\end{aligned}\n\\tag{1.1}\n$$" in out
    assert conv.markdown("$x \\in \\R^n$, `\\R` in code") == "$x \\in \\mathbb{R}^n$, `\\R` in code"
    assert "#### Exercise 1.2" in out
    assert "```python\ndef _compute_grads(self" in out
    assert conv.cited == ["lillicrap2016random"]
    with pytest.raises(myst.MystError, match="unknown directive \\{mystery\\}"):
        conv.markdown("```{mystery}\nx\n```")
    with pytest.raises(myst.MystError, match="names no label"):
        conv.markdown("{eq}`no-such-label`")


def test_export_parses_python_in_one_thread_only(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """CPython 3.11's AST builder keeps one recursion counter for the process, so two
    threads parsing at once fail with "AST constructor recursion depth mismatch" (it
    failed a CI run of the round trip); the export parses (jupytext's literal_eval,
    literalinclude's ast.parse) in the calling thread and threads only kernel runs."""
    import threading

    parse, threads = ast.parse, set()

    def recording_parse(*args, **kwargs):
        threads.add(threading.get_ident())
        return parse(*args, **kwargs)

    monkeypatch.setattr(ast, "parse", recording_parse)
    export.export_notebooks(tmp_path, values=_fake_values(), jobs=2,
                            chapters=[p.stem for p in CHAPTERS[:4]])
    assert threads == {threading.get_ident()}


@pytest.mark.parametrize("key", [False, True], ids=["student", "key"])
def test_export_leaves_no_myst_and_runs_without_myst_nb(tmp_path: Path, key: bool) -> None:
    exported = export.export_notebooks(tmp_path, with_solutions=key, values=_fake_values())
    assert [e.chapter for e in exported] == [p.stem for p in CHAPTERS]
    for e in exported:
        nb = nbformat.read(e.path, as_version=4)
        assert nb.metadata["fa_tutor"] == {"chapter": e.chapter, "student": not key,
                                           "values": "given"}
        assert "jupytext" not in nb.metadata
        for cell in nb.cells:
            if cell.cell_type == "markdown":
                for what, pattern in LEFTOVER.items():
                    found = pattern.search(cell.source)
                    assert not found, f"{e.chapter}: {what} left: {cell.source[found.start():][:80]!r}"
            else:
                assert "myst_nb" not in cell.source, e.chapter
        header = nb.cells[0].source
        assert ("instructor's key" in header) == key and "earlier run" in header
        assert "\\def" not in header  # the book's macros are written out in place
        tags = [t for c in nb.cells for t in c.get("metadata", {}).get("tags", [])]
        assert "parameters" in tags
        assert ("solution" in tags) == (key and bool(chapter_checks(e.chapter)))
        assert ("exercise" in tags) == (not key and bool(chapter_checks(e.chapter)))
    text = {e.chapter: "\n".join(c.source for c in _cells(e.path)) for e in exported}
    gs = text["getting_started"]
    markdown = "\n".join(c.source for e in exported for c in _cells(e.path)
                          if c.cell_type == "markdown")
    assert not re.search(r"\\(R|E|sign|diag|tr)(?![A-Za-z])", markdown)  # written out
    assert "\\tag{1.1}" in gs and "using (1.1)." in gs and "Definition 1.1 makes this precise" in gs
    assert "After 0.5 % test accuracy in 0.5 seconds" in gs
    assert "#### Exercise 1.2" in gs and "def _compute_grads(self, x: Tensor" in gs
    assert ("#### Solution to Exercise 1.1" in gs) == key
    wt = text["weight_transport"]
    assert "## References" in wt and "Lillicrap, Timothy P." in wt
    assert "(Lillicrap et al., 2016)" in wt


def test_export_drops_gated_solution_prose_and_keeps_the_exercises(tmp_path: Path) -> None:
    """The text of a gated solution spans cells; none of it may reach the student."""
    written = {e.chapter: e.path for e in export.export_notebooks(tmp_path, values=_fake_values())}
    checked = 0
    for path in CHAPTERS:
        source = path.read_text()
        student = "\n".join(c.source for c in _cells(written[path.stem]))
        for line in _solution_lines(source):
            assert line not in student, f"{path.stem}: solution text leaked: {line[:60]!r}"
            checked += 1
        labels = re.findall(r":label: (\w+_ex\d+)", source)
        assert student.count("#### Exercise ") == len(labels), path.stem
    assert checked > 50  # the chapters do have gated solution prose and code


def _solution_lines(source: str) -> list[str]:
    """The substantial lines between {solution-start} and {solution-end} in a chapter's source."""
    lines, outside, inside = [], set(), False
    for line in source.splitlines():
        if "{solution-start}" in line or "{solution-end}" in line:
            inside = "{solution-start}" in line
        elif inside and len(line.strip()) > 25 and not line.startswith(("```", ":")):
            lines.append(line.strip())
        elif not inside:
            outside.add(line.strip())
    return [line for line in lines if line not in outside]  # not e.g. a stub's def line


def test_to_student_handles_one_cell_and_spanning_solutions() -> None:
    md = lambda text: nbformat.v4.new_markdown_cell(text)  # noqa: E731
    nb = nbformat.v4.new_notebook(cells=[
        md("Intro\n```{solution} ex1\nsecret one\n```\nafter one"),
        md("Before\n```{solution-start} ex2\n:class: dropdown\n```\nsecret two"),
        nbformat.v4.new_code_cell("secret_code = 2"),
        md("secret three\n```{solution-end}\n```\nkept tail"),
        nbformat.v4.new_code_cell("ft.checks.ex2(f)"),
    ])
    out = export.to_student(nb)
    text = "\n".join(c.source for c in out.cells)
    assert "secret" not in text
    for kept in ("Intro", "after one", "Before", "kept tail", "ft.checks.ex2(f)"):
        assert kept in text
    tagged = md("a markdown cell tagged solution: secret")
    tagged.metadata["tags"] = ["solution"]
    assert len(export.to_student(nbformat.v4.new_notebook(cells=[tagged])).cells) == 0
    unclosed = nbformat.v4.new_notebook(cells=[md("```{solution-start} ex3\n```\nsecret")])
    with pytest.raises(ValueError, match="solution-end"):
        export.to_student(unclosed)


def test_key_puts_each_solution_in_place_of_its_stub() -> None:
    code = nbformat.v4.new_code_cell
    stub, other_stub, solution = (code("def f(x):\n    raise NotImplementedError"),
                                  code("def g(x):\n    raise NotImplementedError"),
                                  code("def f(x):\n    return x"))
    stub.metadata["tags"] = other_stub.metadata["tags"] = ["exercise"]
    solution.metadata["tags"] = ["solution"]
    nb = export.to_key(nbformat.v4.new_notebook(cells=[stub, other_stub, solution]))
    assert [c.source for c in nb.cells] == [other_stub.source, solution.source]


def test_values_come_from_an_up_to_date_build_only(tmp_path: Path) -> None:
    """myst-nb's executed chapter and its .glue.json give the values, unless the chapter's
    code changed since the build."""
    import json

    chapter = tmp_path / "book" / "ch.md"
    chapter.parent.mkdir()
    chapter.write_text("---\njupytext:\n  text_representation:\n    extension: .md\n"
                       "    format_name: myst\n    format_version: 0.13\n"
                       "kernelspec:\n  name: python3\n  display_name: Python 3\n---\n\n"
                       "```{code-cell} ipython3\nglue('acc', 91.25, display=False)\n```\n")
    assert export.built_values(chapter, tmp_path) is None  # no build
    built = tmp_path / "_build" / "jupyter_execute" / "book" / "ch.ipynb"
    built.parent.mkdir(parents=True)
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "glue('acc', 91.25, display=False)")]), built)
    built.with_suffix(".glue.json").write_text(json.dumps({"acc": {
        "output_type": "display_data", "data": {"text/plain": "91.25"},
        "metadata": {"scrapbook": {"name": "acc", "mime_prefix": ""}}}}))
    assert export.built_values(chapter, tmp_path) == {"acc": "91.25"}
    chapter.write_text(chapter.read_text().replace("91.25", "92.0"))
    assert export.built_values(chapter, tmp_path) is None  # the build is stale


def test_export_refuses_to_overwrite_without_force(tmp_path: Path, capsys) -> None:
    from fa_tutor.cli import main

    values = _fake_values()
    export.export_notebooks(tmp_path, values=values, chapters=["getting_started"])
    target = tmp_path / "getting_started.ipynb"
    target.write_text(target.read_text().replace("Getting started", "Edited by me"))
    with pytest.raises(ValueError, match="--force"):
        export.export_notebooks(tmp_path, values=values, chapters=["getting_started"])
    assert "Edited by me" in target.read_text()
    assert main(["coursework", "export", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--force" in err and err.count("\n") == 1
    export.export_notebooks(tmp_path, values=values, chapters=["getting_started"], force=True)
    assert "Edited by me" not in target.read_text()
    with pytest.raises(ValueError, match="unknown chapter.*getting_started"):
        export.export_notebooks(tmp_path, values=values, chapters=["nope"])


# --- grading that cannot be fooled; the gradebook --------------------------------------

RIGHT = "def accuracy(logits, y):\n    return 100.0 * (logits.argmax(-1) == y).float().mean().item()"
STUB = ("def accuracy(logits, y):\n    raise NotImplementedError('Exercise getting_started_ex2: "
        "compare the arg-max with y')")
CHECK = "ft.checks.getting_started_ex2(accuracy)"


def _submission(path: Path, *cells: str) -> Path:
    """A getting_started notebook (export metadata) with a parameters cell and ``cells``."""
    code = nbformat.v4.new_code_cell
    parameters = code("quick = False")
    parameters.metadata["tags"] = ["parameters"]
    nb = nbformat.v4.new_notebook(cells=[parameters, code("import torch\nimport fa_tutor as ft"),
                                         *(code(c) for c in cells)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.metadata["fa_tutor"] = {"chapter": "getting_started", "student": True}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


@pytest.mark.notebook
def test_gradebook_grades_a_class_and_cannot_be_fooled(tmp_path: Path, capfd) -> None:
    from fa_tutor.cli import main

    class_dir = tmp_path / "week1"
    _submission(class_dir / "alice.ipynb", RIGHT, CHECK)
    _submission(class_dir / "bob.ipynb", STUB, "# " + CHECK)  # check commented out
    _submission(class_dir / "carol" / "getting_started.ipynb",  # check deleted, forged, patched
                "def accuracy(logits, y):\n    return 50.0",
                "print('CHECK getting_started_ex2: passed')",
                "ft.checks.getting_started_ex2 = lambda f: 'passed'\n"
                "from fa_tutor.coursework import registry\n"
                "registry.CHECKS['getting_started_ex2'] = lambda f: 'passed'")
    _submission(class_dir / "dave.ipynb", "def acc(logits, y):\n    return 0.0")  # renamed
    _submission(class_dir / "erin.ipynb", RIGHT, "undefined_name", CHECK)
    book = grading.check(class_dir, jobs=2)
    assert isinstance(book, grading.Gradebook)
    rows = book.rows()
    assert rows["alice"] == {"getting_started_ex2": "passed"}
    assert rows["bob"] == {"getting_started_ex2": "not done"}
    assert rows["carol"]["getting_started_ex2"].startswith("failed: accuracy on 10 examples")
    assert rows["dave"] == {"getting_started_ex2": "missing"}
    assert rows["erin"] == {"getting_started_ex2": "passed"}
    erin = next(g for g in book.grades if g.student == "erin")
    assert erin.notes == ["cell 4 raised NameError: name 'undefined_name' is not defined"]
    assert not book.all_passed
    # the gradebook and graded copies go beside the class folder, never into it
    out = tmp_path / "week1-graded"
    assert book.csv_path == out / "gradebook.csv" and book.summary_path == out / "summary.md"
    assert sorted(p.name for p in class_dir.rglob("*")) == [
        "alice.ipynb", "bob.ipynb", "carol", "dave.ipynb", "erin.ipynb", "getting_started.ipynb"]
    assert (out / "graded" / "carol" / "getting_started.ipynb").is_file()
    table = {r["student"]: r for r in csv.DictReader(book.csv_path.open())}
    assert table["alice"]["score_percent"] == "100.0" and table["bob"]["score_percent"] == "0.0"
    assert table["erin"]["notes"].startswith("erin.ipynb: cell 4 raised NameError")
    summary = book.summary_path.read_text()
    assert "| alice | 1/1 | 100.0 % | — |" in summary
    assert "| getting_started_ex2 | 2 | 1 | 1 | 1 | 0 |" in summary
    assert "TCP" not in capfd.readouterr().err  # no kernel transport warning
    # the command line: exit 1 for a class where not all passed, 0 for alice alone
    _submission(tmp_path / "pair" / "alice.ipynb", RIGHT)
    _submission(tmp_path / "pair" / "bob.ipynb", STUB)
    assert main(["coursework", "check", str(tmp_path / "pair"), "--out", str(tmp_path / "o"),
                 "--jobs", "2"]) == 1
    rows = list(csv.DictReader((tmp_path / "o" / "gradebook.csv").open()))
    assert [(r["student"], r["getting_started_ex2"]) for r in rows] == [
        ("alice", "passed"), ("bob", "not done")]
    assert main(["coursework", "check", str(class_dir / "alice.ipynb")]) == 0
    captured = capfd.readouterr()
    assert '"getting_started_ex2": "passed"' in captured.out and "TCP" not in captured.err


def test_gradebook_keeps_one_notebook_per_student_and_chapter(tmp_path: Path) -> None:
    grade = lambda student, name, status: grading.NotebookGrade(  # noqa: E731
        student, "getting_started", tmp_path / student / name, {"getting_started_ex2": status})
    grades = [grade("ann", "draft.ipynb", "failed: x"), grade("ann", "getting_started.ipynb",
                                                             "passed"),
              grade("ben", "b.ipynb", "not done"), grade("ben", "a.ipynb", "passed")]
    kept, errors = grading._one_per_chapter(grades)
    assert [(g.student, g.path.name) for g in kept] == [("ann", "getting_started.ipynb"),
                                                        ("ben", "a.ipynb")]
    assert errors == [
        "ann: 2 notebooks of chapter getting_started (getting_started.ipynb, draft.ipynb); "
        "the gradebook shows getting_started.ipynb",
        "ben: 2 notebooks of chapter getting_started (a.ipynb, b.ipynb); the gradebook shows "
        "a.ipynb"]
    book = grading.Gradebook(kept, ["getting_started_ex2"], tmp_path / "g.csv",
                             tmp_path / "s.md", errors)
    assert book.rows() == {"ann": {"getting_started_ex2": "passed"},
                           "ben": {"getting_started_ex2": "passed"}}
    assert not book.all_passed  # the duplicates are reported
    assert "- ann: 2 notebooks of chapter getting_started" in grading.summary(book)


def test_check_refuses_bad_targets_in_one_line(tmp_path: Path, capsys) -> None:
    from fa_tutor.cli import main

    stray = _submission(tmp_path / "class" / "homework.ipynb", RIGHT)
    nb = nbformat.read(stray, as_version=4)
    nb.metadata.pop("fa_tutor")
    nbformat.write(nb, stray)
    (tmp_path / "broken.ipynb").write_text("not json")
    cases = [
        ([str(tmp_path / "missing.ipynb")], "no notebook"),
        ([str(tmp_path / "broken.ipynb")], "not a readable notebook"),
        ([str(tmp_path / "nowhere") + "/"], "no notebook"),
        ([str(stray)], "chapter 'homework' has no automatic checks"),
        ([str(tmp_path / "class"), "--out", str(tmp_path / "class" / "graded")],
         "inside the submission folder"),
        ([str(tmp_path / "class"), "--jobs", "0"], "--jobs must be at least 1"),
    ]
    for args, message in cases:
        assert main(["coursework", "check", *args]) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    (tmp_path / "class" / "broken.ipynb").write_text("not json")
    book = grading.check(tmp_path / "class", out=tmp_path / "graded")  # no kernel runs
    assert book.rows() == {"broken": {}, "homework": {}} and not book.all_passed
    table = {r["student"]: r for r in csv.DictReader(book.csv_path.open())}
    assert table["broken"]["notes"].startswith("not graded: ") and "not a readable" in \
        table["broken"]["notes"]
    (tmp_path / "empty").mkdir()
    assert main(["coursework", "check", str(tmp_path / "empty")]) == 2
    assert "no notebooks" in capsys.readouterr().err


# --- every chapter, round trip ----------------------------------------------------------

@pytest.mark.slow
@pytest.mark.notebook
def test_round_trip_of_every_chapter(tmp_path: Path, monkeypatch) -> None:
    """The key (run at export, quick) passes every check of its chapter; the student
    notebooks, graded as a class, report every check "not done" and no other error.
    myst_nb cannot be imported in these kernels: the notebooks need only fa_tutor.
    Two quick runs of every chapter, two kernels at a time: about 4.5 min on 2 cores."""
    blocker = tmp_path / "no_myst_nb" / "myst_nb"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('myst_nb is not installed here')\n")
    monkeypatch.setenv("PYTHONPATH", str(blocker.parent))
    keys = export.export_notebooks(tmp_path / "key", with_solutions=True, values="run", jobs=2)
    for e in keys:
        expected = {s.label: "passed" for s in chapter_checks(e.chapter)}
        assert e.key_statuses == expected, e.chapter
        assert e.values_from == "quick run" and e.glued, e.chapter
        assert "with `quick = True`" in _cells(e.path)[0].source
    glued = {e.chapter: e.glued for e in keys}
    students = export.export_notebooks(tmp_path / "class" / "student", values=glued)
    book = grading.check(tmp_path / "class", jobs=2)
    assert book.labels == [s for p in CHAPTERS for s in
                           (c.label for c in chapter_checks(p.stem))]
    assert book.rows() == {"student": {label: "not done" for label in book.labels}}
    assert book.errors == [
        f"not graded: {e.path}: chapter 'benchmarks' has no automatic checks (the chapter is "
        "read from the notebook's fa_tutor metadata, else its file name); chapters with "
        "checks: " + ", ".join(sorted({s.chapter for s in SPECS.values()}))
        for e in students if e.chapter == "benchmarks"]
    assert [n for g in book.grades for n in g.notes] == []
