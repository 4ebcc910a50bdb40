"""The MLflow UI, rendered in Debian's headless chromium (driven by playwright, no browser
download), opens a finished study on its training runs: the parent run, with its child runs
under it, and the UI's own API answers hold them. A screenshot is kept in test-artifacts/."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.helpers import REPO, base_study, clean_env, searchsvc_cli
from tests.servers import free_port

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

ARTIFACTS = Path(os.environ.get("SEARCHSVC_TEST_ARTIFACTS", REPO / "test-artifacts"))
CHILDREN = ["trial-0000", "trial-0001", "trial-0002"]


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, str]:
    """A tiny finished study: its tracking URI, experiment id and the printed runs address."""
    folder = tmp_path_factory.mktemp("ui")
    spec = base_study(name="ui-tiny", budget={"n_trials": 3, "max_epochs": 2})
    spec.update(ensemble={"enabled": False}, workdir=str(folder / "work"))
    (folder / "tiny.yaml").write_text(yaml.safe_dump(spec))
    proc = searchsvc_cli(folder, "run", "tiny.yaml", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    uri = f"sqlite:///{folder / 'work' / 'mlflow.db'}"
    experiment = MlflowClient(uri).get_experiment_by_name("ui-tiny")
    lines = proc.stdout.splitlines()
    printed = [line.split("the runs: ")[1] for line in lines if "the runs: " in line]
    return uri, experiment.experiment_id, printed[0]


@pytest.fixture(scope="module")
def ui(study: tuple[str, str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`mlflow ui --backend-store-uri ...`, the command a run prints, on a free port."""
    uri, _, _ = study
    port = free_port()
    mlflow_cli = Path(sys.executable).parent / "mlflow"
    log = (tmp_path_factory.mktemp("ui-log") / "ui.log").open("wb")
    server = subprocess.Popen(
        [str(mlflow_cli), "ui", "--backend-store-uri", uri, "--port", str(port)],
        cwd=tmp_path_factory.mktemp("ui-cwd"), env=clean_env(), stdout=log,
        stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2):
                break
        except OSError:
            assert server.poll() is None and time.monotonic() < deadline, "mlflow ui did not start"
            time.sleep(0.5)
    yield base
    os.killpg(server.pid, signal.SIGTERM)
    server.wait(timeout=30)
    log.close()


def test_the_experiment_is_tagged_as_model_training(study):
    uri, experiment_id, _ = study
    tags = MlflowClient(uri).get_experiment(experiment_id).tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"


def test_the_printed_address_names_the_runs_view(study):
    _, experiment_id, printed = study
    assert printed == (
        f"http://127.0.0.1:5000/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    )


def test_the_ui_lists_the_parent_run_with_its_child_runs(study, ui):
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("chromium is not installed; CI must install it: apt-get install -y chromium")
    _, experiment_id, printed = study
    answers: list[dict] = []
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.on(
                "response",
                lambda r: answers.append(r.json()) if "/runs/search" in r.url and r.ok else None,
            )
            page.goto(printed.replace("http://127.0.0.1:5000", ui))
            parent = page.get_by_role("row").filter(has_text="ui-tiny")
            parent.first.wait_for(timeout=60_000)
            # The runs view of the model-training side (the GenAI side titles it "Training runs").
            page.get_by_role("heading", name="Runs", exact=True).wait_for(timeout=30_000)
            parent.first.locator("button[data-component-id*='runnamecellrenderer']").click()
            for child in CHILDREN:
                page.get_by_text(child, exact=True).first.wait_for(timeout=30_000)
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "mlflow_ui_training_runs.png"))
        finally:
            browser.close()
    runs = {run["info"]["run_name"]: run for answer in answers for run in answer.get("runs", [])}
    assert sorted(runs) == sorted(["ui-tiny", *CHILDREN])
    parent_id = runs["ui-tiny"]["info"]["run_id"]
    for child in CHILDREN:
        tags = {t["key"]: t["value"] for t in runs[child]["data"]["tags"]}
        assert tags["mlflow.parentRunId"] == parent_id
        assert runs[child]["info"]["experiment_id"] == experiment_id
