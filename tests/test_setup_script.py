"""The README's first command, ``./setup.sh --no-browser``, really serves chapter 00 (as root too).

The environment is already set up when the suite runs (``./test.sh`` calls ``./setup.sh --no-lab``
first), so the script only starts JupyterLab here: the test waits until the server answers with
the first chapter on a free loopback port, then stops it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = 90


def free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_setup_serves_chapter_00_headless(tmp_path):
    if not (ROOT / ".venv" / "bin" / "jupyter").exists():
        pytest.skip("needs the kit's environment (.venv); run ./setup.sh --no-lab first")
    port, token = free_loopback_port(), os.urandom(8).hex()
    env = {
        **os.environ,
        "JUPYTER_TOKEN": token,
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
        "FLOWKIT_NO_BROWSER": "1",
    }
    log = open(tmp_path / "setup.log", "w+")
    server = subprocess.Popen(
        [str(ROOT / "setup.sh"), "--no-browser", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    # JupyterLab opened on a file serves that file's folder (notebooks/) as its root
    url = f"http://127.0.0.1:{port}/api/contents/00_start_here.ipynb?token={token}"
    chapter = None
    try:
        deadline = time.monotonic() + BUDGET_S
        while time.monotonic() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(url, timeout=5) as answer:
                    chapter = json.load(answer)
                break
            except OSError:
                time.sleep(1)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.seek(0)
        output = log.read()
        log.close()
    assert chapter is not None, f"JupyterLab did not answer on port {port} within {BUDGET_S} s:\n{output[-3000:]}"
    assert chapter["name"] == "00_start_here.ipynb" and chapter["type"] == "notebook"
    assert any("flowkit" in "".join(cell["source"]) for cell in chapter["content"]["cells"])
    if os.geteuid() == 0:
        assert output.count("--allow-root") == 1, output[-2000:]
