"""The built book in a real browser: headless Chromium, no internet.

For every page in ``_toc.yml`` it checks that figures load, equations are
typeset by MathJax, widget views render from the embedded widget state, the
browser console shows no errors, and no table or display equation is wider than
the text column at 1280 px; it saves a full-page screenshot of each page under
``.ci/artifacts/screenshots/``.  The book must be built first (``make book``);
the test is skipped, with the reason, where the build or Chromium is missing.

The widths are measured in the page itself: the test's server adds a small
script (:data:`MEASURE_JS`) to every page it serves, which waits for MathJax and
the fonts, measures, and writes the result into the DOM that ``--dump-dom``
returns.  A second, page-tall window takes the full-page screenshot.
"""
from __future__ import annotations

import functools
import html
import http.server
import io
import json
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
         "--virtual-time-budget=15000", "--enable-logging=stderr", "--v=0"]
WIDTH = 1280
MAX_SHOT_HEIGHT = 40_000  # px: a longer page is cut here
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


#: Measures, once MathJax has typeset and the fonts have loaded, every table and display
#: equation of the article against the text column, and the page's height; writes them as
#: JSON into <body data-fa-layout>.  Tables and equations inside closed dropdowns have no
#: width and are not measured.
MEASURE_JS = r"""<script>
window.addEventListener("load", function () {
  var typeset = (window.MathJax && MathJax.startup && MathJax.startup.promise) || Promise.resolve();
  Promise.all([typeset, document.fonts.ready]).then(function () { setTimeout(function () {
    var col = document.querySelector("article.bd-article") || document.querySelector("main") || document.body;
    var cs = getComputedStyle(col);
    var box = col.getBoundingClientRect();
    var left = box.left + parseFloat(cs.paddingLeft), right = box.right - parseFloat(cs.paddingRight);
    var wide = [];
    col.querySelectorAll("table, mjx-container[display='true'] > mjx-math, mjx-container[display='true'] > svg")
      .forEach(function (el) {
        var r = el.getBoundingClientRect();
        if (r.width === 0) return;
        var clipped = false;  // cut off by a scrolling box inside the column (a proof, an output)?
        for (var up = el.parentElement; up && up !== col; up = up.parentElement) {
          var ox = getComputedStyle(up).overflowX;
          if (ox !== "visible" && up.scrollWidth > up.clientWidth + 1) { clipped = true; break; }
        }
        if (clipped || r.left < left - 1 || r.right > right + 1) {
          var table = el.tagName === "TABLE", near = el.closest("[id]"), text = el.textContent || "";
          if (!table) {
            var items = MathJax.startup.document.getMathItemsWithin(el.parentElement);
            text = items.length ? items[0].math : "";
          }
          wide.push({what: table ? "table" : "equation", width: Math.round(r.width),
                     top: Math.round(r.top + scrollY), column: Math.round(right - left), near: near ? near.id : "",
                     text: text.replace(/\s+/g, " ").trim().slice(0, 90)});
        }
      });
    document.body.setAttribute("data-fa-layout", JSON.stringify({
      column: Math.round(right - left), height: document.documentElement.scrollHeight, wide: wide}));
  }, 300); });
});
</script>"""


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the built book, with :data:`MEASURE_JS` added to every HTML page."""

    def log_message(self, *args) -> None:  # keep the test output clean
        pass

    def send_head(self):
        path = Path(self.translate_path(self.path))
        if path.suffix != ".html" or not path.is_file():
            return super().send_head()
        body = path.read_bytes().replace(b"</body>", MEASURE_JS.encode() + b"</body>", 1)
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        return io.BytesIO(body)


def chromium(url: str, tmp: Path, *args: str, height: int = 2000) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, *FLAGS, f"--window-size={WIDTH},{height}", f"--user-data-dir={tmp}", *args, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def render(url: str, shot: Path, tmp: Path) -> tuple[str, str, dict]:
    """The DOM after scripts ran, the browser log, and the measured layout; then a full-page
    screenshot (a window as tall as the page, at most ``MAX_SHOT_HEIGHT``) at ``shot``."""
    shot.parent.mkdir(parents=True, exist_ok=True)
    done = chromium(url, tmp, "--dump-dom")
    found = re.search(r'data-fa-layout="([^"]*)"', done.stdout)
    layout = json.loads(html.unescape(found.group(1))) if found else {}
    height = min(max(int(layout.get("height", 2000)), 800), MAX_SHOT_HEIGHT)
    chromium(url, tmp, f"--screenshot={shot}", height=height)
    return done.stdout, done.stderr, layout


@pytest.mark.parametrize("page", pages())
def test_page_renders_offline(page: str, server: str, tmp_path: Path) -> None:
    source = (HTML / f"{page}.html").read_text()
    dom, log, layout = render(f"{server}/{page}.html", SHOTS / f"{page.replace('/', '_')}.png", tmp_path)
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
        assert "<mjx-merror" not in dom, f"{page}: MathJax could not typeset an equation (TeX error)"
    # widgets: every embedded widget view is drawn from the widget state
    views = source.count("application/vnd.jupyter.widget-view+json")
    if views:
        assert dom.count("jupyter-widgets widget-") >= views, f"{page}: widget views not rendered"
    # layout: measured, and nothing wider than the text column at 1280 px
    assert layout, f"{page}: the layout was not measured (MathJax or the page's scripts did not finish)"
    assert not layout["wide"], (f"{page}: wider than the text column ({layout['column']} px) at {WIDTH} px:\n"
                                + "\n".join(f"  {w['what']} {w['width']} px near #{w['near']}: {w['text']}"
                                             for w in layout["wide"]))
    assert (SHOTS / f"{page.replace('/', '_')}.png").stat().st_size > 10_000


def test_vendored_assets_are_used() -> None:
    """`make book` vendors MathJax and the widget manager: pages must not need a CDN."""
    if not (ROOT / "_vendor" / "static" / "vendor" / "mathjax").exists():
        pytest.skip("assets not vendored (npm unavailable): the book uses the CDN defaults")
    html = (HTML / "book" / "getting_started.html").read_text()
    assert "_static/vendor/mathjax/tex-chtml.js" in html and "cdn.jsdelivr.net" not in html
    assert "_static/vendor/html-manager/embed-amd.js" in html
