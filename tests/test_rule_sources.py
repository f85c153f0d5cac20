"""The rules' code as the book shows it: shallow classes, and every ``:pyobject:`` it includes exists.

* No class in ``fa_tutor.rules`` sits more than two levels below ``Rule`` or
  ``TorchFunctionMode`` (a student reads a rule and at most one shared class above it).
* Every ``{literalinclude}`` with ``:pyobject:`` in ``book/`` names a class or
  function that is in that file (a moved class would leave an empty listing).
"""
from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest
from torch.overrides import TorchFunctionMode

import fa_tutor.rules as rules
from fa_tutor.rules import Rule

ROOT = Path(__file__).resolve().parents[1]


def _classes() -> list[type]:
    found = []
    for info in pkgutil.iter_modules(rules.__path__):
        module = importlib.import_module(f"fa_tutor.rules.{info.name}")
        found += [c for _, c in inspect.getmembers(module, inspect.isclass)
                  if c.__module__ == module.__name__]
    return found


def _depth(cls: type, root: type) -> int:
    """Levels from ``root`` down to ``cls`` along the longest path of bases."""
    if cls is root:
        return 0
    parents = [b for b in cls.__bases__ if issubclass(b, root)]
    return 1 + max(_depth(b, root) for b in parents)


@pytest.mark.parametrize("root", [Rule, TorchFunctionMode], ids=lambda r: r.__name__)
def test_no_class_is_more_than_two_levels_below_the_roots(root):
    classes = [c for c in _classes() if issubclass(c, root)]
    assert classes
    deep = {c.__qualname__: _depth(c, root) for c in classes if _depth(c, root) > 2}
    assert not deep, f"too deep below {root.__name__}: {deep}"


def _literalincludes() -> list[tuple[str, str, str]]:
    found = []
    for md in sorted((ROOT / "book").glob("*.md")):
        for m in re.finditer(r"```\{literalinclude\} (\S+)\n:pyobject: (\S+)", md.read_text()):
            found.append((md.name, m.group(1), m.group(2)))
    return found


@pytest.mark.parametrize("chapter,path,obj", _literalincludes())
def test_every_pyobject_the_book_includes_exists(chapter, path, obj):
    source = (ROOT / "book" / path).resolve()
    assert source.is_file(), f"{chapter}: {path} does not exist"
    node: ast.AST = ast.parse(source.read_text())
    for part in obj.split("."):
        children = [n for n in getattr(node, "body", []) if isinstance(
            n, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == part]
        assert children, f"{chapter}: {obj} is not in {path}"
        node = children[0]
