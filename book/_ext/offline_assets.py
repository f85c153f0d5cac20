"""Serve MathJax and the widget manager from local copies when the Makefile vendored them.

``make vendor`` (run by ``make book``) installs ``mathjax``,
``@jupyter-widgets/html-manager`` and ``requirejs`` from the npm registry into
``_vendor/static/vendor/`` (not committed).  When that folder exists, the built
pages load those copies, so equations and widgets render with no internet;
otherwise the pages keep Jupyter Book's default CDN addresses.

The folder is deliberately not ``_static``: Jupyter Book adds every ``.js``
file under ``_static`` to every page.
"""
from __future__ import annotations

from pathlib import Path

from sphinx.application import Sphinx
from sphinx.config import Config

VENDOR = Path("_vendor") / "static"
MATHJAX = "vendor/mathjax/tex-chtml.js"
WIDGET_JS = {"vendor/require.js": {}, "vendor/html-manager/embed-amd.js": {}}


def vendored_root(srcdir: str | Path) -> Path | None:
    """The vendored static folder if it is complete, else None."""
    root = Path(srcdir) / VENDOR
    needed = [root / MATHJAX, *(root / k for k in WIDGET_JS)]
    return root if all(p.exists() for p in needed) else None


def use_local_assets(app: Sphinx, config: Config) -> None:
    root = vendored_root(app.srcdir)
    if root is None:
        return
    config.html_static_path = [*config.html_static_path, str(root)]
    config.mathjax_path = MATHJAX
    config.nb_ipywidgets_js = dict(WIDGET_JS)


def dedupe_scripts(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    """Drop repeated <script> entries (sphinx-thebe re-adds its inline config on every page,
    which declares ``THEBE_JS_URL`` twice: a console error)."""
    seen, unique = set(), []
    for js in context.get("script_files", []):
        attrs = getattr(js, "attributes", {})
        key = (getattr(js, "filename", str(js)) or "", tuple(sorted((k, str(v)) for k, v in attrs.items())))
        if key not in seen:
            seen.add(key)
            unique.append(js)
    context["script_files"] = unique


def setup(app: Sphinx) -> dict:
    app.connect("config-inited", use_local_assets, priority=900)
    app.connect("html-page-context", dedupe_scripts, priority=999)
    app.config.html_static_path.append(str(Path(__file__).parent / "static"))
    app.add_js_file("mathjax2-shim.js", priority=600, loading_method="defer")
    return {"parallel_read_safe": True, "parallel_write_safe": True}
