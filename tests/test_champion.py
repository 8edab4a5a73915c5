"""The registry's champion moves only on evidence: its rules on numbers made up here, then real
registrations: four at once, on SQLite and through a tracking server, end on the best; and the
champion, served by a real `mlflow models serve`, answers raw pixels with class names."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np
import pytest
from conftest import FAST, ROOT, MlflowServer, call_main, free_port, printed, wait_until
from mlflow.entities.model_registry import ModelVersion, ModelVersionTag
from mlflow.tracking import MlflowClient

from data_utils import CLASSES
from experiments.engine import dataset
from experiments.tracking import registry
from train import main as train_main

NAME = "fl"
MLFLOW = [sys.executable, "-m", "mlflow"]
SEEDED_LOW = [0.900, 0.902, 0.901]  # three seeds each, about a tenth of a point apart
SEEDED_HIGH = [0.910, 0.912, 0.911]  # a point above: beyond seed noise


def version(number: int, **tags: object) -> ModelVersion:
    text = {k: json.dumps(v) if isinstance(v, list) else repr(v) for k, v in tags.items()}
    return ModelVersion(NAME, str(number), 0, tags=[ModelVersionTag(k, v) for k, v in text.items()])


def seeded(number: int, values: list[float]) -> ModelVersion:
    return version(number, val_accuracy=float(np.mean(values)), val_accuracy_seeds=values)


def test_a_seeded_version_takes_the_alias_only_beyond_seed_noise():
    champion, why = registry.standings([seeded(1, SEEDED_LOW), seeded(2, SEEDED_HIGH)])
    assert champion == "2" and why["2"].endswith("beats it beyond seed noise")
    assert "Welch p = " in why["2"] and "+1.00 points" in why["2"]
    within = [0.9005, 0.9030, 0.8990]  # mean 0.9008 against 0.9010, spread as large
    champion, why = registry.standings([seeded(1, SEEDED_LOW), seeded(2, within)])
    assert champion == "1" and why["2"].endswith("does not beat it beyond seed noise")


def test_a_single_run_never_displaces_a_seeded_champion_however_high():
    champion, why = registry.standings([seeded(1, SEEDED_LOW), version(2, val_accuracy=0.99)])
    assert champion == "1"
    assert "one run cannot show a gain beyond the seed noise of a seeded champion" in why["2"]


def test_a_seeded_version_displaces_a_single_run_when_its_whole_interval_is_above():
    # SEEDED_HIGH's 95% CI is [0.9085, 0.9135]: above 0.905, not above 0.910.
    assert registry.standings([version(1, val_accuracy=0.905), seeded(2, SEEDED_HIGH)])[0] == "2"
    champion, why = registry.standings([version(1, val_accuracy=0.910), seeded(2, SEEDED_HIGH)])
    assert champion == "1" and "95% CI low end 0.9085 vs its one run's 0.9100" in why["2"]


def test_versions_without_a_val_accuracy_are_never_champion_and_order_decides_nothing_else():
    no_tag = version(1)  # registered by hand, or before versions were tagged
    champion, why = registry.standings([no_tag, seeded(3, SEEDED_LOW), seeded(2, SEEDED_HIGH)])
    assert champion == "2" and why["1"] == "no val accuracy to rank by: never champion"
    assert registry.standings([no_tag])[0] is None
    # The versions are taken in the order they were registered, whatever order they come in.
    assert registry.standings([seeded(2, SEEDED_HIGH), seeded(1, SEEDED_LOW)])[0] == "2"


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """One tiny trained model logged in its own store: what the registrations point at."""
    folder = tmp_path_factory.mktemp("champion")
    uri = f"sqlite:///{folder}/mlflow.db"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        args = [*FAST, "--width", "4", "--train-subset", "512", "--epochs", "1", "--no-checkpoint"]
        res = call_main(train_main, *args, "--val-size", "500")
        assert res.returncode == 0, res.stderr[-3000:]
        c = MlflowClient(uri)
        run = c.get_run(printed(res.stdout, "run_id"))
        (model,) = c.search_logged_models(experiment_ids=[run.info.experiment_id])
    return SimpleNamespace(folder=folder, uri=uri, model_uri=f"models:/{model.model_id}")


# Registers the logged model as a version of NAME with the per-seed values given as JSON.
REGISTER = f"""
import json, sys
from experiments.tracking import client, registry
seeds = tuple(json.loads(sys.argv[2]))
reg = registry.Registration({NAME!r}, sum(seeds) / len(seeds), "", seeds)
version = str(registry.add_version(sys.argv[1], {NAME!r}).version)
print(registry.rank(client(), {NAME!r}, version, reg, reg.val_accuracy))
"""


def register_at_once(uri: str, model_uri: str, means: list[float]) -> list[str]:
    """One process per mean, started together; each registers a version whose three seeds lie
    within a tenth of a point of its mean. Returns what each printed."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", REGISTER, model_uri, json.dumps([m - 0.001, m, m + 0.001])],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for m in means
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
    return [out for out, _ in outs]


def assert_ends_on_the_best(uri: str, means: list[float]) -> None:
    c = MlflowClient(uri)
    champion = c.get_model_version_by_alias(NAME, "champion")
    assert float(champion.tags["val_accuracy"]) == pytest.approx(max(means))
    versions = c.search_model_versions(f"name = '{NAME}'")
    assert len(versions) == len(means)
    assert all(v.description for v in versions)


def store_copy(logged: SimpleNamespace, folder: Path) -> str:
    """A store of its own, holding the logged model that versions point at."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(logged.folder, "mlflow.db"), folder / "mlflow.db")
    return f"sqlite:///{folder}/mlflow.db"


@pytest.mark.slow
def test_four_registrations_at_once_end_on_the_best_on_sqlite(logged, tmp_path):
    uri = store_copy(logged, tmp_path)
    means = [0.90, 0.93, 0.91, 0.92]
    register_at_once(uri, logged.model_uri, means)
    assert_ends_on_the_best(uri, means)


@pytest.mark.slow
def test_four_registrations_at_once_end_on_the_best_through_a_tracking_server(logged, tmp_path):
    server = MlflowServer(tmp_path / "server")
    store_copy(logged, server.folder)
    try:
        server.start()
        means = [0.92, 0.90, 0.93, 0.91]
        register_at_once(server.url, logged.model_uri, means)
        assert_ends_on_the_best(server.url, means)
    finally:
        server.stop()


def answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@pytest.mark.slow
def test_the_served_champion_answers_raw_pixels_with_class_names(logged, tmp_path, monkeypatch):
    uri = store_copy(logged, tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    reg = registry.Registration(NAME, 0.9, "", tuple(SEEDED_LOW))
    number = str(registry.add_version(logged.model_uri, NAME).version)
    assert "@champion" in registry.rank(MlflowClient(uri), NAME, number, reg, 0.9)
    images = dataset("").test_images[:3].numpy()  # raw uint8 pixels, as a client has them
    expected = mlflow.pyfunc.load_model(f"models:/{NAME}@champion").predict(images)

    port = free_port()
    # `mlflow models serve` starts uvicorn by name: the venv's bin must be on PATH.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    serve = ["models", "serve", "-m", f"models:/{NAME}@champion", "--env-manager", "local"]
    proc = subprocess.Popen(
        [*MLFLOW, *serve, "-h", "127.0.0.1", "-p", str(port)],
        env={**os.environ, "PATH": path},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its uvicorn workers go down with it
    )
    try:
        wait_until(lambda: answers(port), "mlflow models serve", proc, timeout=180)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            json.dumps({"inputs": images.tolist()}).encode(),
            {"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as r:
            predictions = json.load(r)["predictions"]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    assert [p["class"] for p in predictions] == list(expected["class"])
    for p in predictions:
        assert set(p) == {"class", *CLASSES} and p["class"] in CLASSES
        assert sum(p[c] for c in CLASSES) == pytest.approx(1, abs=1e-4)
        assert p["class"] == max(CLASSES, key=lambda c: p[c])
