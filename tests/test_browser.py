"""The built book in a real browser: headless Chromium, no internet.

For every page in ``_toc.yml`` it checks that figures load, equations are
typeset by MathJax, widget views render from the embedded widget state, and the
browser console shows no errors; it saves a screenshot of each page under
``.ci/artifacts/screenshots/``.  The book must be built first (``make book``);
the test is skipped, with the reason, where the build or Chromium is missing.
"""
from __future__ import annotations

import functools
import http.server
import re
import shutil
import socketserver
import subprocess
import threading
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
SHOTS = ROOT / ".ci" / "artifacts" / "screenshots"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1280,2000", "--virtual-time-budget=15000", "--enable-logging=stderr", "--v=0"]
CONSOLE_ERROR = re.compile(r"Uncaught|Failed to load resource|ERR_|TypeError|ReferenceError|SyntaxError")

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (Debian: apt-get install chromium)"),
    pytest.mark.skipif(not (HTML / "index.html").exists(), reason="book not built: run `make book` first"),
]


def pages() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]] + [c["file"] for p in toc.get("parts", []) for c in p.get("chapters", [])]
    return [f for f in files if (HTML / f"{f}.html").exists()]


@pytest.fixture(scope="module")
def server():
    handler = functools.partial(_QuietHandler, directory=str(HTML))
    with socketserver.TCPServer(("127.0.0.1", 0), handler) as httpd:
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
        httpd.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep the test output clean
        pass


def render(url: str, shot: Path, tmp: Path) -> tuple[str, str]:
    shot.parent.mkdir(parents=True, exist_ok=True)
    cmd = [CHROMIUM, *FLAGS, f"--user-data-dir={tmp}", f"--screenshot={shot}", "--dump-dom", url]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    return done.stdout, done.stderr


@pytest.mark.parametrize("page", pages())
def test_page_renders_offline(page: str, server: str, tmp_path: Path) -> None:
    source = (HTML / f"{page}.html").read_text()
    dom, log = render(f"{server}/{page}.html", SHOTS / f"{page.replace('/', '_')}.png", tmp_path)
    assert "<html" in dom, f"{page}: Chromium returned no DOM\n{log[-2000:]}"
    errors = [ln for ln in log.splitlines() if "CONSOLE" in ln and CONSOLE_ERROR.search(ln)]
    assert not errors, f"{page}: console errors:\n" + "\n".join(errors)
    # figures: every image the page references exists and is a real file
    for src in re.findall(r'<img[^>]+src="([^"]+)"', source):
        if not src.startswith(("http", "data:")):
            assert (HTML / page).parent.joinpath(src).resolve().is_file(), f"{page}: missing image {src}"
    # equations: any page with maths shows MathJax output and no raw delimiters left
    if 'class="math' in source:
        assert "<mjx-container" in dom, f"{page}: equations were not typeset"
        assert "\\(" not in re.sub(r"<script.*?</script>", "", dom, flags=re.S), f"{page}: raw \\( left"
    # widgets: every embedded widget view is drawn from the widget state
    views = source.count("application/vnd.jupyter.widget-view+json")
    if views:
        assert dom.count("jupyter-widgets widget-") >= views, f"{page}: widget views not rendered"
    assert (SHOTS / f"{page.replace('/', '_')}.png").stat().st_size > 10_000


def test_vendored_assets_are_used() -> None:
    """`make book` vendors MathJax and the widget manager: pages must not need a CDN."""
    if not (ROOT / "_vendor" / "static" / "vendor" / "mathjax").exists():
        pytest.skip("assets not vendored (npm unavailable): the book uses the CDN defaults")
    html = (HTML / "book" / "getting_started.html").read_text()
    assert "_static/vendor/mathjax/tex-chtml.js" in html and "cdn.jsdelivr.net" not in html
    assert "_static/vendor/html-manager/embed-amd.js" in html
