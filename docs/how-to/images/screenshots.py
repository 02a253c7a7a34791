"""The two MLflow UI screenshots of docs/how-to/mlflow-ui.md, taken by headless Chromium on a real sweep.

    vaesweep ui digits --port 5123 &                     # a finished sweep's UI
    pip install playwright pillow                        # in any environment; Chromium from the OS
    python docs/how-to/images/screenshots.py --ui http://127.0.0.1:5123 --chromium /usr/bin/chromium

Screen positions (the assistant panel's close button, the parent run's expander) are those of MLflow
3.17's UI at 1400x800; another MLflow version may need them changed.
"""

from __future__ import annotations

import argparse
import json
import urllib.parse
from pathlib import Path

from mlflow.tracking import MlflowClient
from PIL import Image
from playwright.sync_api import Page, sync_playwright

HERE = Path(__file__).resolve().parent
CLOSE_ASSISTANT = (1363, 35)
EXPAND_PARENT = (318, 265)


def save(png: bytes, name: str, box: tuple[int, int, int, int]) -> None:
    """Crop to the page's content and keep 64 colours (a screenshot of flat UI loses nothing visible)."""
    path = HERE / name
    path.write_bytes(png)
    Image.open(path).convert("RGB").crop(box).quantize(colors=64).save(path, optimize=True)


def runs_table(page: Page, ui: str, experiment: str) -> None:
    """The runs of k = 30, seed 0 with their alpha, active components and IS log-likelihood."""
    search = urllib.parse.quote("tags.k = '30' and tags.seed = '0'")
    page.goto(f"{ui}/#/experiments/{experiment}/runs?searchFilter={search}")
    page.wait_for_timeout(8000)
    page.mouse.click(*CLOSE_ASSISTANT)
    page.wait_for_timeout(1000)
    page.mouse.click(*EXPAND_PARENT)
    page.wait_for_timeout(1500)
    page.get_by_text("Columns").first.click()
    page.wait_for_timeout(1000)
    for name in ("Dataset", "Source", "Models"):
        page.get_by_text(name, exact=True).last.click()
        page.wait_for_timeout(300)
    box = page.get_by_placeholder("Search columns")
    for name in ("trial.alpha", "test_log_likelihood", "active_components"):
        box.fill(name)
        page.wait_for_timeout(800)
        page.get_by_text(name, exact=True).last.click()
        page.wait_for_timeout(500)
    box.fill("")
    page.keyboard.press("Escape")
    page.wait_for_timeout(1500)
    save(page.screenshot(), "mlflow-runs.png", (200, 0, 1380, 560))


def scatter(page: Page, ui: str, experiment: str) -> None:
    """Active components against alpha for every run of k = 30 (MLflow's compare page)."""
    ids = [run.info.run_id for run in MlflowClient(ui).search_runs([experiment], "tags.k = '30'", max_results=500)]
    page.goto(f"{ui}/#/compare-runs?runs={urllib.parse.quote(json.dumps(ids))}"
              f"&experiments={urllib.parse.quote(json.dumps([experiment]))}")
    page.wait_for_timeout(12000)
    page.mouse.click(*CLOSE_ASSISTANT)
    page.wait_for_timeout(800)
    page.get_by_text("Scatter Plot").click()
    page.wait_for_timeout(2000)
    page.get_by_text("eval.bound_samples", exact=True).first.click()  # the X axis's default choice
    page.wait_for_timeout(800)
    page.keyboard.type("trial.alpha")
    page.wait_for_timeout(800)
    page.keyboard.press("Enter")
    page.wait_for_timeout(2000)
    save(page.screenshot(), "mlflow-scatter.png", (200, 0, 1400, 660))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ui", default="http://127.0.0.1:5123", help="the MLflow UI of a finished sweep")
    parser.add_argument("--experiment", default="1", help="the sweep's experiment id")
    parser.add_argument("--chromium", default="/usr/bin/chromium", help="a Chromium or Chrome binary")
    args = parser.parse_args()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 800})
        runs_table(page, args.ui, args.experiment)
        scatter(page, args.ui, args.experiment)
        browser.close()


if __name__ == "__main__":
    main()
