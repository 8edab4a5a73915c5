"""The MLflow UI in a real browser: after a small real study, a user who opens it finds the study's
parent run and every trial under it with the datasets it saw, can compare two trials, sees their
plots, and finds the champion of a registered model. Debian's chromium, driven over CDP by
playwright; never `playwright install`.

Screenshots go to test-artifacts/. With FASHION_LAB_SCREENSHOTS=1 the runs table is also copied to
docs/img/runs-table.png for the README.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import pytest
from conftest import FAST, ROOT, call_main, free_port, mlflow_server_cmd
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from playwright.sync_api import Locator, Page, expect, sync_playwright

from train import main as train_main
from tune import main as tune_main

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = ROOT / "test-artifacts"
TRIALS = ["trial-000", "trial-001", "trial-002"]
TABLE_COLUMNS = ["val_accuracy", "test_accuracy", "optimizer", "lr"]
# Shown by default and wide enough to push the metrics off screen (Dataset is checked first).
HIDDEN_COLUMNS = ["Dataset", "Source", "Models"]
MODEL = "fashion-lab"
DOCS_IMG = ROOT / "docs" / "img"
# The UI and the server boot slowly on a shared 2-core box; no single wait should need this long.
WAIT_MS = 60_000


def wait_http(url: str, proc: subprocess.Popen, what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited with code {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    raise AssertionError(f"{what} did not answer {url} within {timeout:.0f}s")


@contextmanager
def process_group(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> Iterator:
    """Start cmd in a process group of its own; stop that group, and only it, after."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        # Children that outlive their leader (server workers, renderers) still carry its group id.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


def run_study(store: str, tmp_path: Path) -> tuple[str, dict[str, str]]:
    """A real 3-trial study through tune.py, each trial tested and plotted so the UI can compare
    them on test accuracy; (parent run id, trial run name -> run id)."""
    res = call_main(
        tune_main,
        "--n-trials",
        str(len(TRIALS)),
        "--study-name",
        "ui",
        "--storage",
        f"sqlite:///{tmp_path}/optuna.db",
        "--output-dir",
        str(tmp_path / "study"),
        *FAST,
        "--epochs",
        "1",
        "--trial-test",
        "--confirm-top",
        "0",
        "--no-baseline",
    )
    assert res.returncode == 0, res.stderr[-3000:]
    parent = next(
        ln.split()[-1] for ln in res.stdout.splitlines() if ln.startswith("parent_run_id:")
    )
    c = MlflowClient(store)
    exp_id = c.get_run(parent).info.experiment_id
    children = c.search_runs([exp_id], f"tags.mlflow.parentRunId = '{parent}'")
    trials = {r.info.run_name: r.info.run_id for r in children}
    assert sorted(trials) == TRIALS
    return parent, trials


def register_a_champion() -> None:
    """One more small run, registered: version 1 of MODEL, the champion. In an experiment of
    its own, so the study's runs table stays as the README's screenshot shows it."""
    flags = "--width 4 --train-subset 256 --epochs 1 --no-checkpoint --experiment-name registry"
    res = call_main(train_main, *FAST, *flags.split(), "--register", MODEL)
    assert res.returncode == 0, res.stderr[-3000:]


def test_mlflow_ui_shows_a_study_compares_two_trials_and_shows_their_plots(store, tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
    db = Path(store.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    # Create the schema before the server and the runs start, so they never race to migrate it.
    MlflowClient(store).search_experiments()

    port, cdp_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    server_cmd = mlflow_server_cmd(
        port, store, "--default-artifact-root", str(db.parent / "artifacts")
    )
    browser_cmd = [
        CHROMIUM,
        *CHROMIUM_ARGS,
        f"--remote-debugging-port={cdp_port}",
        f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path)}",
        "about:blank",
    ]
    # Job execution serves GenAI judges only; it would start eight more processes (see `make ui`).
    server_env = {
        **os.environ,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    with (
        process_group(server_cmd, tmp_path / "server.log", server_env) as server,
        process_group(browser_cmd, tmp_path / "chromium.log") as browser_proc,
    ):
        parent_id, trials = run_study(store, tmp_path)  # while the server and the browser boot
        register_a_champion()
        parent = MlflowClient(store).get_run(parent_id)
        assert parent.info.run_name, "the study's parent run has no name to find it by"
        exp_id = parent.info.experiment_id
        wait_http(f"{url}/health", server, "mlflow server")
        wait_http(f"http://127.0.0.1:{cdp_port}/json/version", browser_proc, "chromium")

        with sync_playwright() as pw:
            browser = pw.chromium.connect_over_cdp(f"http://127.0.0.1:{cdp_port}")
            page = browser.new_context(viewport={"width": 1400, "height": 800}).new_page()
            page.set_default_timeout(WAIT_MS)
            try:
                check_runs_table(page, f"{url}/#/experiments/{exp_id}/runs", parent, trials)
                check_compare(page, url, exp_id, {n: trials[n] for n in TRIALS[:2]})
                check_plot(page, f"{url}/#/experiments/{exp_id}/runs/{trials[TRIALS[0]]}")
                check_champion(page, f"{url}/#/models/{MODEL}")
            except Exception:
                with contextlib.suppress(Exception):  # the original error matters more
                    page.screenshot(path=ARTIFACTS / "ui-failure.png")
                raise
            finally:
                browser.close()


def shown(locator: Locator) -> None:
    expect(locator).to_be_visible(timeout=WAIT_MS)


def check_runs_table(page: Page, runs_url: str, parent: Run, trials: dict[str, str]) -> None:
    """The parent run is listed and, once expanded, every trial under it; metric and param
    columns are added for the screenshot."""
    page.goto(runs_url)
    shown(page.get_by_text(parent.info.run_name, exact=True).first)
    # Child runs start collapsed under their parent; its run-name cell holds the expander.
    page.locator(f'[row-id="{parent.info.run_id}"] [col-id="attributes.`Run Name`"] button').click()
    for name in trials:
        shown(page.get_by_text(name, exact=True).first)
    shown(page.get_by_text("fashion-mnist-train").first)  # the Datasets column
    # Cosmetic only: on a local server the UI opens its assistant panel and GenAI navigation.
    close = page.get_by_role("button", name="Close")
    if close.count():
        close.first.click()
    page.get_by_role("button", name="Model training").click()
    dialog = open_columns(page)
    for column in [*HIDDEN_COLUMNS, *TABLE_COLUMNS]:  # each click toggles
        toggle_column(dialog, column)
    page.keyboard.press("Escape")
    for column in TABLE_COLUMNS:
        shown(page.get_by_role("columnheader", name=column, exact=True).first)
    page.screenshot(path=ARTIFACTS / "ui-runs-table.png")
    if os.environ.get("FASHION_LAB_SCREENSHOTS") == "1":
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        shutil.copy(ARTIFACTS / "ui-runs-table.png", DOCS_IMG / "runs-table.png")


def open_columns(page: Page, tries: int = 3) -> Locator:
    """The runs table's column chooser, clicked again where no dialog opens: on a loaded
    machine the toolbar may still be re-rendering when a click lands."""
    dialog = page.get_by_role("dialog")
    for attempt in range(1, tries + 1):
        page.get_by_role("button", name="Columns", exact=True).click()
        try:
            last = attempt == tries
            expect(dialog).to_be_visible(timeout=WAIT_MS if last else WAIT_MS // tries)
            return dialog
        except AssertionError:
            if last:
                raise
    return dialog


def toggle_column(dialog: Locator, column: str, tries: int = 3) -> None:
    """Search the column chooser for column and click its entry, searching again where it does
    not show: on a loaded machine the tree may re-render over the text just typed."""
    search = dialog.get_by_placeholder("Search columns")
    # The search bolds each match, so "val_accuracy" also matches inside best_val_accuracy.
    entry = dialog.locator("[class*=tree-title]").filter(
        has_text=re.compile(rf"^{re.escape(column)}$")
    )
    for attempt in range(1, tries + 1):
        search.fill("")
        search.fill(column)
        try:
            last = attempt == tries
            expect(entry).to_be_visible(timeout=WAIT_MS if last else WAIT_MS // tries)
            entry.click()
            return
        except AssertionError:
            if last:
                raise


def check_compare(page: Page, url: str, exp_id: str, runs: dict[str, str]) -> None:
    """The compare view of runs (name -> id), opened by its URL as a shared link would."""
    page.goto(
        f"{url}/#/compare-runs?runs={quote(json.dumps(list(runs.values())))}"
        f"&experiments={quote(json.dumps([exp_id]))}"
    )
    shown(page.get_by_text(f"Comparing {len(runs)} Runs"))
    for name in runs:
        shown(page.get_by_text(name, exact=True).first)
    shown(page.locator(".js-plotly-plot").first)  # the parallel-coordinates chart, drawn last
    page.screenshot(path=ARTIFACTS / "ui-compare.png")


def check_plot(page: Page, run_url: str) -> None:
    """The server reads the run's file:// artifacts and the browser decodes the PNG."""
    page.goto(f"{run_url}/artifacts/plots/confusion_matrix.png")
    page.wait_for_function(
        "() => [...document.images].some(i => i.src.startsWith('blob:') && i.naturalWidth >= 300)"
    )
    page.screenshot(path=ARTIFACTS / "ui-run-plot.png")


def check_champion(page: Page, model_url: str) -> None:
    """The registered model's page lists version 1 with the champion alias tag."""
    page.goto(model_url)
    shown(page.get_by_text("Version 1", exact=True))
    shown(page.get_by_title("champion", exact=True))  # the tag "@ champion" in Aliases
    page.screenshot(path=ARTIFACTS / "ui-model.png")
