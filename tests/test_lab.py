"""The set-up's JupyterLab (`make lab`): it runs, has the widget and jupytext extensions,
and serves the chapters as notebooks.

The server test starts ``jupyter lab`` headless on a free local port and asks it, through
its REST API, for a chapter (jupytext's contents manager must turn the MyST text into a
notebook) and for the document manager's settings (the ``make`` set-up makes jupytext's
notebook view the default for markdown, so a double-click opens a chapter as a notebook).
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
JUPYTER = Path(sys.executable).parent / "jupyter"
LAB_SETTINGS = Path(sys.prefix) / "share" / "jupyter" / "lab" / "settings" / "overrides.json"


def pinned(name: str) -> str:
    pins = dict(line.split("==") for line in (ROOT / "requirements.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    return pins[name]


def test_jupyter_lab_version_is_the_pinned_one() -> None:
    out = subprocess.run([str(JUPYTER), "lab", "--version"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == pinned("jupyterlab")


def test_lab_has_the_widget_and_jupytext_extensions() -> None:
    out = subprocess.run([str(JUPYTER), "labextension", "list"], capture_output=True, text=True,
                         timeout=120)
    listing = re.sub(r"\x1b\[[0-9;]*m", "", out.stdout + out.stderr)  # drop colour codes
    for extension in ("@jupyter-widgets/jupyterlab-manager", "jupyterlab-jupytext"):
        line = next((l for l in listing.splitlines() if extension in l), "")
        assert "enabled" in line and "OK" in line, f"{extension} missing or broken:\n{listing}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, token: str) -> dict:
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.mark.skipif(not LAB_SETTINGS.exists(),
                    reason=f"{LAB_SETTINGS} missing: this environment was not set up by `make`")
def test_lab_serves_chapters_as_notebooks(tmp_path: Path) -> None:
    port, token = free_port(), "fa-tutor-test"
    server = subprocess.Popen(
        [str(JUPYTER), "lab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={ROOT}",
         "--ServerApp.port_retries=0", "--allow-root"],
        stdout=subprocess.DEVNULL, stderr=(tmp_path / "lab.log").open("w"),
        env={**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path)})
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                get(f"{base}/api/status", token)
                break
            except OSError:
                assert server.poll() is None, (tmp_path / "lab.log").read_text()
                time.sleep(0.5)
        else:
            log = (tmp_path / "lab.log").read_text()
            pytest.fail(f"jupyter lab did not answer within 60 s:\n{log}")
        chapter = get(f"{base}/api/contents/book/getting_started.md?type=notebook&content=1", token)
        assert chapter["type"] == "notebook"
        cells = chapter["content"]["cells"]
        assert any("ft.viz.explore" in c["source"] for c in cells if c["cell_type"] == "code")
        assert chapter["content"]["metadata"]["kernelspec"]["name"] == "python3"
        settings = get(f"{base}/lab/api/settings/@jupyterlab/docmanager-extension:plugin", token)
        viewers = settings["schema"]["properties"]["defaultViewers"]["default"]
        assert viewers.get("markdown") == "Jupytext Notebook", viewers
    finally:
        server.terminate()
        server.wait(timeout=30)
