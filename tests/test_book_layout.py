"""How the chapters read: code that only glues numbers into the text is hidden, while every
chapter still shows the package at work in at least one visible cell."""
from __future__ import annotations

import ast
from pathlib import Path

import jupytext
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted(p for p in (ROOT / "book").glob("*.md") if "```{code-cell}" in p.read_text())
HIDDEN = {"hide-input", "remove-input", "remove-cell", "hide-cell"}


def visible_code(path: Path) -> list[str]:
    nb = jupytext.read(path)
    return [c.source for c in nb.cells
            if c.cell_type == "code" and not HIDDEN & set(c.metadata.get("tags", []))]


def only_glue(source: str) -> bool:
    """Every statement is a ``glue(...)`` call (or a loop or branch of them)."""
    def is_glue(stmt: ast.stmt) -> bool:
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):
            return getattr(stmt.value.func, "id", None) == "glue"
        if isinstance(stmt, (ast.For, ast.If)):
            return all(is_glue(s) for s in [*stmt.body, *stmt.orelse])
        return False
    try:
        body = ast.parse(source).body
    except SyntaxError:  # IPython magics: not a glue cell
        return False
    return bool(body) and all(is_glue(s) for s in body)


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_glue_is_hidden_and_the_package_shows(path: Path) -> None:
    cells = visible_code(path)
    assert not [c for c in cells if only_glue(c)], f"{path.name}: a visible cell only glues values"
    calls = [c for c in cells if "ft." in c and "import fa_tutor" not in c]
    assert calls, f"{path.name}: no visible cell calls the package (ft....)"
