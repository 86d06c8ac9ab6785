"""End to end: an offline interactive chart (widgets.interactive) in real JupyterLab.

The test writes a one-cell notebook into a temporary folder that draws three tasks' lines with
:func:`flowkit.views.plots.highlight_on_click` through :func:`widgets.interactive`,
runs it in JupyterLab (started as in ``tests/test_browser.py``) with headless Chromium that
cannot resolve any host but 127.0.0.1 and a kernel whose HTTP proxy goes nowhere, clicks one
task's legend entry, and checks that the other tasks' lines fade in the page and that the kernel
received the selection (``chart.selections.highlight_task``). One screenshot goes to
``$FLOWKIT_ARTIFACTS`` or ``tests/artifacts/``.

Needs Debian's ``chromium`` and ``chromium-driver`` and the ``selenium`` package; skipped otherwise.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pytest

from flowkit.views.plots import DIMMED_OPACITY

try:  # pytest puts tests/ on sys.path (rootdir-relative "tests." when run as a package)
    import test_browser as browser
except ImportError:  # pragma: no cover
    from tests import test_browser as browser

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(170)]

#: Everything this test waits for shares this budget (it takes about a minute on two busy cores).
BUDGET_S = 115
TASKS = ("count", "order", "motion")
COLORS = ("#0072b2", "#e69f00", "#009e73")  # one per task, so the page's lines can be told apart
PICK = "order"
#: No host but the JupyterLab server resolves: a request to a CDN fails instead of loading.
OFFLINE_FLAGS = ("--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",)
NOWHERE = "http://127.0.0.1:9"  # the kernel's and server's HTTP proxy: nothing listens there

NOTEBOOK_SOURCE = f"""\
import altair as alt
import ipywidgets as widgets
import pandas as pd
from IPython.display import display

from widgets import interactive
from flowkit.views.plots import highlight_on_click

tasks = {list(TASKS)!r}
color = alt.Color("task:N", sort=tasks, scale=alt.Scale(domain=tasks, range={list(COLORS)!r}))
df = pd.DataFrame([{{"task": t, "layer": layer, "share": 0.1 * (i + 1) + 0.05 * layer}}
                   for i, t in enumerate(tasks) for layer in range(6)])
lines = alt.Chart(df).mark_line(point=True, strokeWidth=3).encode(
    x="layer:Q", y="share:Q", color=color, tooltip=["task:N", "layer:Q", "share:Q"])
view = interactive(highlight_on_click(lines).properties(width=360, height=220, title="three tasks"))
picked = widgets.Label("picked: (none)")
picked.add_class("fk-picked")

def show_pick(change):
    picked.value = "picked: " + ", ".join(sorted({{row["task"] for row in change["new"].value}}))

view.selections.observe(show_pick, names="highlight_task")
print(type(view).__name__, alt.JupyterChart._is_offline)
display(view, picked)
"""


class Deadline(browser.Deadline):
    def left(self) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"the chart browser test ran past its {BUDGET_S} s budget")
        return left


def _write_notebook(path: Path) -> None:
    import nbformat

    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(NOTEBOOK_SOURCE)]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, path)


#: The live chart's line marks (one path per task): their opacity by task (told by colour), or null.
LINE_OPACITIES = """
const chart = document.querySelector('.fk-offline-chart[data-live="true"]');
if (!chart) return null;
const opacities = {};
for (const path of chart.querySelectorAll('svg g.mark-line.role-mark path')) {
  const color = (path.getAttribute('stroke') || '').toLowerCase();
  opacities[color] = parseFloat(path.getAttribute('opacity') ?? getComputedStyle(path).opacity);
}
return opacities;
"""
LEGEND_LABEL = (
    "//div[contains(@class, 'fk-offline-chart')]//*[local-name()='g' and contains(@class, 'role-legend-label')]"
    f"//*[local-name()='text' and normalize-space(.)='{PICK}']"
)


def test_offline_chart_highlights_the_clicked_task(tmp_path, monkeypatch):
    chromium, driver_path = browser._tools()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC

    monkeypatch.setattr(browser, "CHROMIUM_FLAGS", browser.CHROMIUM_FLAGS + OFFLINE_FLAGS)
    root = tmp_path / "notebooks"
    root.mkdir()
    name = "offline_chart.ipynb"
    _write_notebook(root / name)
    lab = browser.JupyterLab(root, tmp_path / "jupyter")
    lab.env.update({key: NOWHERE for key in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")})
    lab.env.update({"no_proxy": "127.0.0.1,localhost", "NO_PROXY": "127.0.0.1,localhost"})
    profile = Path(tempfile.mkdtemp(prefix="chromium-profile-", dir=tmp_path))
    deadline = Deadline(BUDGET_S)
    started = time.monotonic()
    driver = None
    try:
        lab.start(deadline)
        driver = browser._chrome(chromium, driver_path, profile)
        driver.set_page_load_timeout(deadline.left())

        wait = browser.waiter(driver, deadline, lab, "interactive_chart_failure.png", started)

        def click(locator, what: str):
            browser.click_when_ready(wait, locator, what)

        driver.get(f"{lab.url}/lab/tree/{name}?token={lab.token}")
        wait(
            EC.presence_of_element_located((By.CSS_SELECTOR, ".jp-Notebook-ExecutionIndicator[data-status='idle']")),
            "the notebook's kernel",
        )
        driver.set_script_timeout(min(20, deadline.left()))
        cdn = driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "const end = r => { performance.clearResourceTimings(); performance.setResourceTimingBufferSize(100000); done(r); };"
            "fetch('https://cdn.jsdelivr.net/npm/vega@6', {mode: 'no-cors'}).then(() => end('reached'), () => end('blocked'));"
        )
        assert cdn == "blocked", "this page can reach a CDN: the test would not show that the chart works offline"
        click((By.CSS_SELECTOR, ".jp-Notebook .jp-Cell .jp-InputPrompt"), "the notebook's cell")
        click((By.XPATH, "//div[contains(@class, 'lm-MenuBar-itemLabel')][text()='Run']"), "the Run menu")
        click(
            (By.CSS_SELECTOR, "li.lm-Menu-item[data-command='runmenu:run-all']:not(.lm-mod-disabled)"), "Run All Cells"
        )

        wait(
            lambda d: "OfflineChart True" in d.find_element(By.CSS_SELECTOR, ".jp-Notebook").text,
            "the cell's output (an OfflineChart, altair offline)",
        )
        before = wait(
            lambda d: (lambda o: o if o and len(o) == len(TASKS) else False)(d.execute_script(LINE_OPACITIES)),
            "the live chart's three lines",
        )
        assert before == dict.fromkeys(COLORS, 1.0), f"with nothing clicked every task is drawn as before: {before}"

        click((By.XPATH, LEGEND_LABEL), f"the legend entry {PICK!r}")
        after = wait(
            lambda d: (lambda o: o if o and o != before else False)(d.execute_script(LINE_OPACITIES)),
            "the lines' opacity to change after the click",
        )
        wait(
            lambda d: d.find_element(By.CSS_SELECTOR, ".fk-picked").text.strip() == f"picked: {PICK}",
            "the kernel to receive the selection",
        )
        after = driver.execute_script(LINE_OPACITIES)
        # every request since the probe above, failed ones included (a blocked CDN import would be listed)
        requests = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        chart = driver.find_element(By.CSS_SELECTOR, ".fk-offline-chart")
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", chart)
        chart.screenshot(str(browser._artifacts() / "interactive_chart.png"))
    finally:
        if driver is not None:
            driver.quit()
        lab.stop()

    expected = {color: (1.0 if task == PICK else DIMMED_OPACITY) for task, color in zip(TASKS, COLORS)}
    assert after == expected, f"after clicking {PICK!r} only its line should stay opaque: {after}"
    elsewhere = [url for url in requests if not url.startswith((lab.url, "blob:", "data:"))]
    assert not elsewhere, f"the page fetched from outside JupyterLab: {elsewhere}"
    assert time.monotonic() - started < 120, f"took {time.monotonic() - started:.0f} s"
