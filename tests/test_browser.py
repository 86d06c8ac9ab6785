"""End to end: chapter 01's KnockoutGrid and PredictReveal in real JupyterLab, driven by headless Chromium.

The test copies ``notebooks/01_cross_frame.ipynb`` (outputs cleared) into a temporary
folder, starts JupyterLab on loopback with a token, runs the whole chapter from the Run
menu, reads which bench question the grid shows, shift-clicks the grid cell whose 9-layer
window knockout moves that answer most, and checks that the answer the page SHOWS equals, to the displayed
precision, what flowkit computes in this process for the same spec, model and question. Then it
clicks a guess onto the chapter's predict-then-reveal chart, presses Reveal, and checks that the page
shows the curve and the verdict flowkit computes for that guess.

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
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from flowkit import KnockoutSpec

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(420)]

#: Everything this test waits for (server, page, kernel, the chapter's cells, click) shares this budget.
BUDGET_S = 330
#: The displayed precision: option probabilities are shown in % with one decimal.
DISPLAY_TOLERANCE = 0.05 + 1e-6
CHAPTER = Path(__file__).resolve().parents[1] / "notebooks" / "01_cross_frame.ipynb"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1600,1150",
)


def _tools():
    """Paths of chromium and chromedriver and the selenium module, or skip saying how to install them."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("the browser test needs Chromium and its driver: apt-get install -y chromium chromium-driver")
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


def _write_chapter(path: Path) -> None:
    """The chapter with its outputs cleared, so whatever the page shows was computed by this run."""
    import nbformat

    notebook = nbformat.read(CHAPTER, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
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
            json.dumps({"fetchNews": "false", "checkForUpdates": False})
        )
        self.env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "JUPYTER_CONFIG_DIR": str(state / "config"),
            "JUPYTER_DATA_DIR": str(state / "data"),
            "JUPYTER_RUNTIME_DIR": str(state / "runtime"),
            "JUPYTERLAB_SETTINGS_DIR": str(state / "lab-settings"),
            "JUPYTERLAB_WORKSPACES_DIR": str(state / "workspaces"),
        }
        self.log_path = state / "jupyterlab.log"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, deadline: Deadline) -> None:
        command = [
            sys.executable,
            "-m",
            "jupyter",
            "lab",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root}",
        ]
        if os.geteuid() == 0:  # containers and CI runners often run as root
            command.append("--allow-root")
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                command, cwd=self.root, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
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


def waiter(driver, deadline: Deadline, lab: JupyterLab, failure_shot: str, started: float | None = None):
    """``wait(condition, what)``: WebDriverWait until the deadline; on failure a screenshot and both logs."""
    from selenium.webdriver.support.ui import WebDriverWait

    def wait(condition, what: str):
        try:
            return WebDriverWait(driver, deadline.left(), poll_frequency=0.25).until(condition)
        except Exception as exc:
            shot = _artifacts() / failure_shot
            driver.save_screenshot(str(shot))
            logs = "\n".join(str(entry) for entry in driver.get_log("browser"))[-3000:]
            after = f" after {time.monotonic() - started:.0f} s" if started is not None else ""
            raise AssertionError(
                f"waiting for {what} failed ({type(exc).__name__}){after}; screenshot: {shot}\n"
                f"Browser log:\n{logs}\nJupyterLab log:\n{lab.log_tail()}"
            ) from None

    return wait


def click_when_ready(wait, locator, what: str) -> None:
    """Find and click in one step, again if JupyterLab re-rendered the element in between."""
    from selenium.common.exceptions import (
        ElementClickInterceptedException,
        ElementNotInteractableException,
        NoSuchElementException,
        StaleElementReferenceException,
    )

    def clicked(d):
        try:
            element = d.find_element(*locator)
            if not (element.is_displayed() and element.is_enabled()):
                return False
            element.click()
            return True
        except (
            StaleElementReferenceException,
            ElementClickInterceptedException,
            ElementNotInteractableException,
            NoSuchElementException,
        ):
            return False

    wait(clicked, what)


def _pick_window(vllm, prepared, columns, size: int = 9):
    """The (centre layer, column) whose shift-click window moves the shown answer most, and by how much."""
    from flowkit.views.view_models import cells_to_spec, window_cells

    session = vllm.session(prepared)
    clean = session.clean_answer
    places = [(center, column) for column in range(len(columns)) for center in range(vllm.num_layers)]
    answers = session.answers(
        [
            cells_to_spec(window_cells(center, column, vllm.num_layers, size), columns, vllm.num_layers)
            for center, column in places
        ]
    )
    moved = [max(abs(a - b) for a, b in zip(after.option_probs, clean.option_probs)) for after in answers]
    best = max(range(len(places)), key=moved.__getitem__)
    return moved[best], *places[best]


def _shown_percentages(driver, kind: str) -> dict[str, float]:
    from selenium.webdriver.common.by import By

    shown = {}
    for row in driver.find_elements(By.CSS_SELECTOR, ".fk-grid .fk-bar-row"):
        text = row.find_element(By.CSS_SELECTOR, f".fk-value[data-kind='{kind}']").text
        shown[row.get_attribute("data-letter")] = float(text.rstrip("%"))
    return shown


def test_chapter_01_grid_shows_the_answer_flowkit_computes(tmp_path):
    chromium, driver_path = _tools()
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as EC

    from flowkit.course import chapters
    from flowkit.views.view_models import cells_to_spec, grid_columns, window_cells

    root = tmp_path / "notebooks"
    root.mkdir()
    _write_chapter(root / CHAPTER.name)
    lab = JupyterLab(root, tmp_path / "jupyter")
    profile = Path(tempfile.mkdtemp(prefix="chromium-profile-", dir=tmp_path))
    deadline = Deadline(BUDGET_S)
    driver = None
    try:
        lab.start(deadline)
        driver = _chrome(chromium, driver_path, profile)
        driver.set_page_load_timeout(deadline.left())

        wait = waiter(driver, deadline, lab, "knockout_grid_failure.png")

        def click(locator, what: str):
            click_when_ready(wait, locator, what)

        driver.get(f"{lab.url}/lab/tree/{CHAPTER.name}?token={lab.token}")
        wait(
            EC.presence_of_element_located((By.CSS_SELECTOR, ".jp-Notebook-ExecutionIndicator[data-status='idle']")),
            "the notebook's kernel",
        )
        # activate the notebook (Run All acts on the current notebook), then Run > Run All Cells
        click((By.CSS_SELECTOR, ".jp-Notebook .jp-Cell .jp-InputPrompt"), "the notebook's cell")
        click((By.XPATH, "//div[contains(@class, 'lm-MenuBar-itemLabel')][text()='Run']"), "the Run menu")
        run_all = "li.lm-Menu-item[data-command='runmenu:run-all']:not(.lm-mod-disabled)"
        click((By.CSS_SELECTOR, run_all), "Run All Cells")

        grid = wait(
            EC.presence_of_element_located((By.CSS_SELECTOR, ".fk-grid[data-sample]")), "the chapter's KnockoutGrid"
        )
        wait(lambda d: grid.get_attribute("data-answer-spec") == KnockoutSpec().to_json(), "the clean answer")
        sample_id = grid.get_attribute("data-sample")

        # this process asks the same model the same question (the page's kernel keeps running meanwhile)
        vllm = chapters.model()
        sample = chapters.sample(sample_id)
        prepared = vllm.prepare_sample(sample)
        keys = [th.get_attribute("data-key") for th in driver.find_elements(By.CSS_SELECTOR, ".fk-grid th.fk-colhead")]
        columns = grid_columns(keys, prepared.spans)  # the grid's own columns, as the page lists them
        moved, layer, column = _pick_window(vllm, prepared, columns)
        assert moved > 0.002, "no 9-layer window of any column moves the shown answer"
        spec = cells_to_spec(window_cells(layer, column, vllm.num_layers, 9), columns, vllm.num_layers)
        clean, expected = vllm.answer(prepared), vllm.answer(prepared, spec)

        cell_css = f".fk-grid td.fk-cell[data-layer='{layer}'][data-col='{column}']"
        wait(EC.element_to_be_clickable((By.CSS_SELECTOR, cell_css)), "the grid cell")
        driver.execute_script(
            "arguments[0].scrollIntoView({block: 'center'});", driver.find_element(By.CSS_SELECTOR, cell_css)
        )
        before = _shown_percentages(driver, "after")  # nothing cut yet: "after" shows the clean run

        # shift-click: the paper's 9-layer window centred on this layer, in this column
        def shift_click(d):
            from selenium.common.exceptions import StaleElementReferenceException

            try:
                target = d.find_element(By.CSS_SELECTOR, cell_css)
                ActionChains(d).move_to_element(target).key_down(Keys.SHIFT).click().key_up(Keys.SHIFT).perform()
                return True
            except StaleElementReferenceException:
                return False

        wait(shift_click, "the shift-click on the grid cell")
        wait(lambda d: grid.get_attribute("data-answer-spec") == spec.to_json(), f"the answer under {spec}")
        after = _shown_percentages(driver, "after")
        pct_text = driver.find_element(By.CSS_SELECTOR, ".fk-grid [data-role='pct-change']").text
        assert "is-cut" in driver.find_element(By.CSS_SELECTOR, cell_css).get_attribute("class")

        # cause and effect on one screen: the answer bars sit beside the grid (not wrapped below it) and
        # are fully in the window, at 1600 x 1150 with JupyterLab's file browser open, right after the click
        layout = driver.execute_script(
            "const g = arguments[0], t = g.querySelector('.fk-table').getBoundingClientRect(),"
            " b = g.querySelector('[data-role=bars]').getBoundingClientRect(), c = arguments[1].getBoundingClientRect();"
            " return {tableRight: t.right, barsLeft: b.left, barsTop: b.top, barsBottom: b.bottom, barsRight: b.right,"
            " cellTop: c.top, cellBottom: c.bottom, width: window.innerWidth, height: window.innerHeight,"
            " browser: !!document.querySelector('.jp-FileBrowser:not(.lm-mod-hidden)')};",
            grid,
            driver.find_element(By.CSS_SELECTOR, cell_css),
        )

        artifacts = _artifacts()
        grid.screenshot(str(artifacts / "knockout_grid.png"))
        driver.save_screenshot(str(artifacts / "knockout_grid_jupyterlab.png"))

        # predict, then reveal: a click on the empty axes places a guess, Reveal shows the curve and the verdict
        predict = wait(EC.presence_of_element_located((By.CSS_SELECTOR, ".fk-predict")), "the PredictReveal widget")
        plot = predict.find_element(By.CSS_SELECTOR, "svg.fk-svg")
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", plot)
        assert not predict.find_elements(By.CSS_SELECTOR, "[data-role='curve']"), "the curve shows before the reveal"
        ActionChains(driver).move_to_element_with_offset(
            plot, -plot.size["width"] // 5, plot.size["height"] // 6
        ).click().perform()
        guess_mark = wait(
            EC.presence_of_element_located((By.CSS_SELECTOR, ".fk-predict [data-role='guess']")), "the guess mark"
        )
        guess = (float(guess_mark.get_attribute("data-x")), float(guess_mark.get_attribute("data-y")))
        click((By.CSS_SELECTOR, ".fk-predict [data-role='reveal']"), "the Reveal button")
        wait(lambda d: d.find_element(By.CSS_SELECTOR, ".fk-predict [data-role='verdict']").text.strip(), "the verdict")
        verdict = driver.find_element(By.CSS_SELECTOR, ".fk-predict [data-role='verdict']").text.strip()
        revealed_curve = bool(predict.find_elements(By.CSS_SELECTOR, "[data-role='curve']"))
        predict.screenshot(str(artifacts / "predict_reveal.png"))
    finally:
        if driver is not None:
            driver.quit()
        lab.stop()

    assert layout["browser"], "the file browser should be open, as a student has it"
    assert layout["barsLeft"] >= layout["tableRight"] - 1, f"the answer bars wrapped below the grid: {layout}"
    assert (
        0 <= layout["barsTop"] and layout["barsBottom"] <= layout["height"] and layout["barsRight"] <= layout["width"]
    ), f"the answer bars are not fully on screen after the click: {layout}"
    assert 0 <= layout["cellTop"] and layout["cellBottom"] <= layout["height"], (
        f"the clicked cell left the screen: {layout}"
    )
    letters = list(clean.letters)
    assert list(before) == list(after) == letters
    for i, letter in enumerate(letters):
        assert abs(before[letter] - 100 * clean.option_probs[i]) <= DISPLAY_TOLERANCE, (letter, before, clean)
        assert abs(after[letter] - 100 * expected.option_probs[i]) <= DISPLAY_TOLERANCE, (letter, after, expected)
    assert after != before, "the shown answer did not change after the click"
    from flowkit.analysis import experiments
    from flowkit.course.predictions import CurveQuestion
    from flowkit.course.results import load_table

    sweeps = load_table("sweeps")
    pooled = experiments.curves_with_ci(sweeps[sweeps["edge_group"] == "cross_frame"], chapters.learned_tasks())
    assert revealed_curve and verdict == CurveQuestion.deepest(pooled).reveal(*guess)["verdict"], (guess, verdict)
    base = clean.predicted
    pct = 100 * (expected.probs[base] - clean.probs[base]) / clean.probs[base]
    match = re.fullmatch(r"p\((\w)\) ([+−±])(\d+\.\d)\s*%", pct_text)
    assert match, pct_text
    shown_pct = float(match.group(3)) * (-1 if match.group(2) == "−" else 1)
    assert match.group(1) == letters[base] and abs(shown_pct - pct) <= DISPLAY_TOLERANCE, (pct_text, pct)
