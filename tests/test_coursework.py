"""Coursework round trip on the real chapters: export strips solutions; exported notebooks run
(stubs report "not done"); the original chapters pass every check."""
from __future__ import annotations

from pathlib import Path

import jupytext
import nbformat
import pytest

import fa_tutor as ft
from fa_tutor.coursework import CHECKS, export

CHAPTERS = export.chapter_paths()


def test_every_check_label_in_the_book_is_registered() -> None:
    labels = set()
    for path in CHAPTERS:
        labels |= set(__import__("re").findall(r"ft\.checks\.(\w+)\(", path.read_text()))
    missing = labels - set(CHECKS)
    assert not missing, f"chapters call unregistered checks: {sorted(missing)}"
    for label in labels:
        assert hasattr(ft.checks, label) or label in CHECKS


def test_export_removes_solutions_keeps_stubs(tmp_path: Path) -> None:
    written = export.export(tmp_path)
    assert {p.stem for p in written} == {p.stem for p in CHAPTERS}
    for path in written:
        nb = nbformat.read(path, as_version=4)
        tags = [t for c in nb.cells for t in c.get("metadata", {}).get("tags", [])]
        assert "solution" not in tags and "parameters" in tags
        assert not any("{solution" in c.source for c in nb.cells if c.cell_type == "markdown")
        original = jupytext.read(path.with_suffix(".md")) if path.with_suffix(".md").exists() else None
        assert original is None  # students get .ipynb only


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


def test_export_drops_gated_solution_prose_and_keeps_the_exercises(tmp_path: Path) -> None:
    """The text of a gated solution spans cells; none of it may reach the student."""
    written = {p.stem: p for p in export.export(tmp_path)}
    checked = 0
    for path in CHAPTERS:
        source = path.read_text()
        student = "\n".join(c.source for c in nbformat.read(written[path.stem], as_version=4).cells)
        for line in _solution_lines(source):
            assert line not in student, f"{path.stem}: solution text leaked: {line[:60]!r}"
            checked += 1
        for label in __import__("re").findall(r":label: (\w+_ex\d+)", source):
            assert f":label: {label}" in student  # the exercise itself stays
    assert checked > 50  # the chapters do have gated solution prose and code


def test_to_student_handles_one_cell_and_spanning_solutions() -> None:
    md = lambda text: nbformat.v4.new_markdown_cell(text)
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


@pytest.mark.notebook
def test_round_trip_on_getting_started(tmp_path: Path) -> None:
    student = export.export(tmp_path)
    nb_path = next(p for p in student if p.stem == "getting_started")
    report = export.check(nb_path)
    assert report == {"getting_started_ex2": "not done"}
    # a student who writes the solution passes
    nb = nbformat.read(nb_path, as_version=4)
    for cell in nb.cells:
        if "exercise" in cell.get("metadata", {}).get("tags", []):
            cell.source = "def accuracy(logits, y):\n    return 100.0 * (logits.argmax(-1) == y).float().mean().item()\n"
    nbformat.write(nb, nb_path)
    assert export.check(nb_path) == {"getting_started_ex2": "passed"}
    # a wrong answer is reported as failed, with the hint
    for cell in nb.cells:
        if "exercise" in cell.get("metadata", {}).get("tags", []):
            cell.source = "def accuracy(logits, y):\n    return 50.0\n"
    nbformat.write(nb, nb_path)
    assert export.check(nb_path)["getting_started_ex2"].startswith("failed")


@pytest.mark.notebook
def test_check_reports_crashing_answers_and_cells_that_stop_the_run(tmp_path: Path) -> None:
    """An answer that raises is 'failed' with its exception; a broken cell before a check
    leaves that check 'not run' with the reason, and check() itself does not raise."""
    code = nbformat.v4.new_code_cell
    parameters = code("quick = True")
    parameters.metadata["tags"] = ["parameters"]
    answer = code("def accuracy(logits, y):\n    return logits.no_such_method()")
    nb = nbformat.v4.new_notebook(cells=[
        parameters, code("import torch\nimport fa_tutor as ft"), answer,
        code("ft.checks.getting_started_ex2(accuracy)")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "student.ipynb"
    nbformat.write(nb, path)
    status = export.check(path)["getting_started_ex2"]
    assert status.startswith("failed: your code raised AttributeError"), status
    answer.source = "def accuracy(logits, y):\n    return 1\nundefined_name"
    nbformat.write(nb, path)
    status = export.check(path)["getting_started_ex2"]
    assert status.startswith("not run: an earlier cell failed (NameError"), status
    nb.cells = nb.cells[:3]  # no check cells left: nothing to grade is an error, not "all passed"
    nbformat.write(nb, path)
    with pytest.raises(ValueError, match="an earlier cell failed .*NameError.*no checks"):
        export.check(path)


def test_cli_export(tmp_path: Path) -> None:
    from fa_tutor.cli import main

    assert main(["coursework", "export", str(tmp_path / "student")]) == 0
    assert (tmp_path / "student" / "getting_started.ipynb").exists()
