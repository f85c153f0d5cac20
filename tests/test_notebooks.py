"""Every chapter in _toc.yml and every notebook under notebooks/ runs with quick parameters.

papermill executes each one with ``quick = True`` injected after its
``parameters`` cell; any cell error fails the test, and each executed notebook
must contain at least one figure (``image/png``) — a guard against
a non-interactive matplotlib backend forced by the environment and against chapters that silently draw nothing.
"""
from __future__ import annotations

from pathlib import Path

import jupytext
import nbformat
import papermill as pm
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def toc_files() -> list[Path]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    entries = [toc["root"]]
    for part in toc.get("parts", []):
        entries += [c["file"] for c in part.get("chapters", [])]
    paths = []
    for e in entries:
        for ext in (".md", ".ipynb"):
            if (ROOT / (e + ext)).exists():
                paths.append(ROOT / (e + ext))
    return paths


def is_notebook(path: Path) -> bool:
    if path.suffix == ".ipynb":
        return True
    head = path.read_text().split("---", 2)
    return len(head) > 2 and "kernelspec" in head[1]


NOTEBOOKS = [p for p in toc_files() if is_notebook(p)] + sorted(
    p for p in (ROOT / "notebooks").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)


def load(path: Path) -> nbformat.NotebookNode:
    return jupytext.read(path) if path.suffix == ".md" else nbformat.read(path, as_version=4)


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_notebook_runs_quick(path: Path, tmp_path: Path) -> None:
    nb = load(path)
    tags = [t for c in nb.cells for t in c.get("metadata", {}).get("tags", [])]
    assert "parameters" in tags, f"{path.name} has no cell tagged 'parameters'"
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3", "kernelspec.name must be python3"
    out = tmp_path / (path.stem + ".ipynb")
    try:
        pm.execute_notebook(nb, str(out), parameters={"quick": True}, kernel_name="python3",
                            cwd=str(path.parent), progress_bar=False, execution_timeout=600)
    except pm.PapermillExecutionError as err:
        pytest.fail(f"{path.name}: cell {err.exec_count} raised {err.ename}: {err.evalue}", pytrace=False)
    executed = nbformat.read(out, as_version=4)
    images = [o for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert images, f"{path.name} produced no figure (image/png)"


def test_toc_lists_existing_pages() -> None:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    entries = [toc["root"]] + [c["file"] for p in toc["parts"] for c in p["chapters"]]
    missing = [e for e in entries if not any((ROOT / (e + x)).exists() for x in (".md", ".ipynb"))]
    assert not missing, f"_toc.yml lists missing pages: {missing}"
    assert len(NOTEBOOKS) >= 1
