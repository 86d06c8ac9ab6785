"""End to end: a KnockoutGrid in real JupyterLab, driven by headless Chromium.

The test writes a one-cell notebook that builds the tiny toy checkpoint (fixed seed) and
shows a KnockoutGrid, starts JupyterLab on loopback with a token in a temporary folder,
runs the notebook from the Run menu, clicks the grid cell whose knockout moves the answer
most, and checks that the answer the page SHOWS equals, to the displayed precision, what
flowkit computes in this process for the same spec, checkpoint and inputs.

Needs Debian's ``chromium`` and ``chromium-driver`` and the ``selenium`` package; skipped
(with the install line) when they are missing. A screenshot goes to ``$FLOWKIT_ARTIFACTS``
or ``tests/artifacts/``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from flowkit import KnockoutSpec, LayerSet
from flowkit.knockout import PAPER_EDGE_FAMILIES

pytestmark = [pytest.mark.browser, pytest.mark.timeout(170)]

#: Everything this test waits for (server, page, kernel, widget, click) shares this budget.
BUDGET_S = 120
#: The displayed precision: option probabilities are shown in % with one decimal.
DISPLAY_TOLERANCE = 0.05 + 1e-6
NOTEBOOK = "flowkit_knockout_grid.ipynb"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1600,1300")

#: The inputs, run both here and in the notebook, so both sides ask the same question.
INPUTS = textwrap.dedent("""\
    import numpy as np
    FRAMES = np.random.default_rng(7).integers(0, 256, (8, 48, 64, 3), dtype=np.uint8)
    QUESTION = "Which way does the red square move?"
    OPTIONS = ["left", "right", "up", "down"]
    ANSWER = "B"
""")
NOTEBOOK_CELL = INPUTS + textwrap.dedent("""\
    import os
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from flowkit import load_videollm
    from flowkit.toy import build_toy_llava_next_video
    from widgets import KnockoutGrid

    vllm = load_videollm(build_toy_llava_next_video("toy-llava-next-video", seed=0), quant="fp32")
    grid = KnockoutGrid(vllm, vllm.prepare(FRAMES, QUESTION, OPTIONS, answer=ANSWER), options=OPTIONS)
    grid
""")


def _tools():
    """Paths of chromium and chromedriver and the selenium module, or skip saying how to install them."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("the browser test needs Chromium and its driver: "
                    "apt-get install -y chromium chromium-driver")
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.skip("the browser test needs selenium: pip install 'selenium>=4.20'")
    return chromium, driver


def _artifacts() -> Path:
    folder = Path(os.environ.get("FLOWKIT_ARTIFACTS") or Path(__file__).parent / "artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    if "FLOWKIT_ARTIFACTS" not in os.environ and not (folder / ".gitignore").exists():
        (folder / ".gitignore").write_text("*\n")  # screenshots are outputs, never commit them
    return folder


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _write_notebook(path: Path) -> None:
    import nbformat

    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(NOTEBOOK_CELL)])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, path)


class Deadline:
    """One time budget shared by every wait."""

    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"the browser test ran past its {BUDGET_S} s budget")
        return left


class JupyterLab:
    """JupyterLab on 127.0.0.1 with a token, in a throwaway home; always shut down by ``stop()``."""

    def __init__(self, root: Path, state: Path):
        self.root, self.port, self.token = root, _free_port(), secrets.token_hex(16)
        settings = state / "lab-settings" / "@jupyterlab" / "apputils-extension"
        settings.mkdir(parents=True)
        (settings / "notification.jupyterlab-settings").write_text(
            json.dumps({"fetchNews": "false", "checkForUpdates": False}))
        self.env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                    "JUPYTER_CONFIG_DIR": str(state / "config"), "JUPYTER_DATA_DIR": str(state / "data"),
                    "JUPYTER_RUNTIME_DIR": str(state / "runtime"),
                    "JUPYTERLAB_SETTINGS_DIR": str(state / "lab-settings"),
                    "JUPYTERLAB_WORKSPACES_DIR": str(state / "workspaces")}
        self.log_path = state / "jupyterlab.log"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, deadline: Deadline) -> None:
        command = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ServerApp.ip=127.0.0.1",
                   f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
                   f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={self.root}"]
        if os.geteuid() == 0:  # containers and CI runners often run as root
            command.append("--allow-root")
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(command, cwd=self.root, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/api/status?token={self.token}", timeout=2) as reply:
                    if reply.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if deadline.left() < 1:
                raise TimeoutError(f"JupyterLab did not answer in time:\n{self.log_tail()}")
            time.sleep(0.5)

    def stop(self) -> None:
        """Shut down the kernels and the server; kill the server's process group if it lingers."""
        if self.process is None or self.process.poll() is not None:
            return
        try:
            request = urllib.request.Request(f"{self.url}/api/shutdown?token={self.token}", method="POST")
            urllib.request.urlopen(request, timeout=5).close()
            self.process.wait(timeout=15)
        except (urllib.error.URLError, ConnectionError, TimeoutError, subprocess.TimeoutExpired):
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""


def _chrome(chromium: str, driver_path: str, profile: Path):
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))


def _pick_cell(vllm, prepared):
    """The (layer, column) whose single-cell knockout moves the shown answer most, with its spec and answer."""
    best = None
    for column, family in enumerate(PAPER_EDGE_FAMILIES):
        for layer in range(vllm.num_layers):
            spec = KnockoutSpec.single(family, LayerSet((layer,)))
            after = vllm.answer(prepared, spec)
            moved = max(abs(a - b) for a, b in zip(after.option_probs, vllm.answer(prepared).option_probs))
            if best is None or moved > best[0]:
                best = (moved, layer, column, spec, after)
    return best


def _shown_percentages(driver, kind: str) -> dict[str, float]:
    from selenium.webdriver.common.by import By

    shown = {}
    for row in driver.find_elements(By.CSS_SELECTOR, ".fk-grid .fk-bar-row"):
        text = row.find_element(By.CSS_SELECTOR, f".fk-value[data-kind='{kind}']").text
        shown[row.get_attribute("data-letter")] = float(text.rstrip("%"))
    return shown


def test_clicking_a_cell_shows_the_answer_flowkit_computes(toy_fp32, tmp_path):
    chromium, driver_path = _tools()
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    namespace: dict = {}
    exec(INPUTS, namespace)  # the same frames, question and options as the notebook
    prepared = toy_fp32.prepare(namespace["FRAMES"], namespace["QUESTION"], namespace["OPTIONS"],
                                answer=namespace["ANSWER"])
    clean = toy_fp32.answer(prepared)
    moved, layer, column, spec, expected = _pick_cell(toy_fp32, prepared)
    assert moved > 0.005, "the toy model's answer hardly moves under any single-cell knockout"

    root = tmp_path / "notebooks"
    root.mkdir()
    _write_notebook(root / NOTEBOOK)
    lab = JupyterLab(root, tmp_path / "jupyter")
    profile = Path(tempfile.mkdtemp(prefix="chromium-profile-", dir=tmp_path))
    deadline = Deadline(BUDGET_S)
    driver = None
    try:
        lab.start(deadline)
        driver = _chrome(chromium, driver_path, profile)
        driver.set_page_load_timeout(deadline.left())

        def wait(condition, what: str):
            try:
                return WebDriverWait(driver, deadline.left(), poll_frequency=0.25).until(condition)
            except Exception as exc:
                shot = _artifacts() / "knockout_grid_failure.png"
                driver.save_screenshot(str(shot))
                logs = "\n".join(str(entry) for entry in driver.get_log("browser"))[-3000:]
                raise AssertionError(f"waiting for {what} failed ({type(exc).__name__}); screenshot: {shot}\n"
                                     f"Browser log:\n{logs}\nJupyterLab log:\n{lab.log_tail()}") from None

        driver.get(f"{lab.url}/lab/tree/{NOTEBOOK}?token={lab.token}")
        wait(EC.presence_of_element_located((By.CSS_SELECTOR, ".jp-Notebook-ExecutionIndicator[data-status='idle']")),
             "the notebook's kernel")
        # activate the notebook (Run All acts on the current notebook), then Run > Run All Cells
        wait(EC.element_to_be_clickable((By.CSS_SELECTOR, ".jp-Notebook .jp-Cell .jp-InputPrompt")),
             "the notebook's cell").click()
        wait(EC.element_to_be_clickable((By.XPATH, "//div[contains(@class, 'lm-MenuBar-itemLabel')][text()='Run']")),
             "the Run menu").click()
        run_all = "li.lm-Menu-item[data-command='runmenu:run-all']:not(.lm-mod-disabled)"
        wait(EC.element_to_be_clickable((By.CSS_SELECTOR, run_all)), "Run All Cells").click()

        cell_css = f".fk-grid td.fk-cell[data-layer='{layer}'][data-col='{column}']"
        cell = wait(EC.element_to_be_clickable((By.CSS_SELECTOR, cell_css)), "the KnockoutGrid")
        wait(lambda d: d.find_element(By.CSS_SELECTOR, ".fk-grid").get_attribute("data-answer-spec")
             == KnockoutSpec().to_json(), "the clean answer")
        before = _shown_percentages(driver, "after")  # nothing cut yet: "after" shows the clean run

        ActionChains(driver).move_to_element(cell).click().perform()
        wait(lambda d: d.find_element(By.CSS_SELECTOR, ".fk-grid").get_attribute("data-answer-spec")
             == spec.to_json(), f"the answer under {spec}")
        after = _shown_percentages(driver, "after")
        pct_text = driver.find_element(By.CSS_SELECTOR, ".fk-grid [data-role='pct-change']").text
        assert "is-cut" in driver.find_element(By.CSS_SELECTOR, cell_css).get_attribute("class")

        widget = driver.find_element(By.CSS_SELECTOR, ".fk-grid")
        artifacts = _artifacts()
        widget.screenshot(str(artifacts / "knockout_grid.png"))
        driver.save_screenshot(str(artifacts / "knockout_grid_jupyterlab.png"))
    finally:
        if driver is not None:
            driver.quit()
        lab.stop()

    letters = list(clean.letters)
    assert list(before) == list(after) == letters
    for i, letter in enumerate(letters):
        assert abs(before[letter] - 100 * clean.option_probs[i]) <= DISPLAY_TOLERANCE, (letter, before, clean)
        assert abs(after[letter] - 100 * expected.option_probs[i]) <= DISPLAY_TOLERANCE, (letter, after, expected)
    assert after != before, "the shown answer did not change after the click"
    base = clean.predicted
    pct = 100 * (expected.probs[base] - clean.probs[base]) / clean.probs[base]
    match = re.fullmatch(r"p\((\w)\) ([+−±])(\d+\.\d)\s*%", pct_text)
    assert match, pct_text
    shown_pct = float(match.group(3)) * (-1 if match.group(2) == "−" else 1)
    assert match.group(1) == letters[base] and abs(shown_pct - pct) <= DISPLAY_TOLERANCE, (pct_text, pct)
