"""What a run records beyond its metrics, read off three real registered runs in one store: the
Model Registry (train.py --register: the champion alias moves only to a better val accuracy,
and loading the champion is one line), the run's datasets, and its system metrics."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np
import pytest
import torch
from conftest import FAST, call_main, printed, run_ids
from mlflow.tracking import MlflowClient

from data_utils import CLASSES, FILES, normalize
from experiments.callbacks import Callback, DataSplit
from experiments.config import Config
from experiments.engine import dataset, train
from experiments.stops import StopRun
from experiments.tracking import MlflowCallback
from experiments.tracking.lineage import SplitDataset
from train import main as train_main
from tune import main as tune_main

NAME = "fl"
SMALL = [*FAST, "--width", "4", "--val-size", "500", "--epochs", "1", "--no-checkpoint"]
# v1 barely learns (two steps), v2 learns (eight), v3 cannot (lr 1e-4), on v1's images.
RUNS = [
    ["--train-subset", "256"],
    ["--train-subset", "1024"],
    ["--train-subset", "256", "--lr", "1e-4", "--seed", "1", "--no-system-metrics"],
]
THREAD = "system-metrics"


def threads() -> list[str]:
    return [t.name for t in threading.enumerate()]


@pytest.fixture(scope="module")
def ranked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """The three RUNS, each registered as a version of NAME, sampling system metrics every
    second: (uri, their stdout, their runs, the threads left after them)."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('registry')}/mlflow.db"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "1")
        outs = []
        for args in RUNS:
            res = call_main(train_main, *SMALL, *args, "--register", NAME)
            assert res.returncode == 0, res.stderr[-3000:]
            outs.append(res.stdout)
        c = MlflowClient(uri)
        runs = [c.get_run(printed(out, "run_id")) for out in outs]
        yield SimpleNamespace(uri=uri, outs=outs, runs=runs, threads=threads(), client=c)


def val(run: mlflow.entities.Run) -> float:
    return run.data.metrics["best_val_accuracy"]


@pytest.mark.slow
def test_a_better_run_takes_the_champion_alias_from_the_old_one(ranked):
    c, (v1, v2, _) = ranked.client, ranked.runs
    assert val(v2) > val(v1)
    first = c.get_model_version(NAME, "1")
    assert first.run_id == v1.info.run_id and first.aliases == []  # it lost the alias
    assert first.description == f"val {val(v1):.4f} (one run): no champion before it"
    champion = c.get_model_version_by_alias(NAME, "champion")
    assert (champion.version, champion.run_id) == (2, v2.info.run_id)
    # Single runs both: no spread to judge noise by, so the higher value wins.
    why = (
        f"val {val(v2):.4f} (one run) vs champion v1: {val(v2):.4f} vs {val(v1):.4f}: "
        "beats it beyond seed noise"
    )
    assert champion.description == why
    assert f"registered: {NAME} v2 @champion: {why}" in ranked.outs[1]


@pytest.mark.slow
def test_a_worse_run_becomes_the_challenger_and_the_champion_stays(ranked):
    c, (_, v2, v3) = ranked.client, ranked.runs
    assert val(v3) <= val(v2)
    challenger = c.get_model_version_by_alias(NAME, "challenger")
    assert (challenger.version, challenger.run_id) == (3, v3.info.run_id)
    assert challenger.description.endswith(
        f"vs champion v2: {val(v3):.4f} vs {val(v2):.4f}: does not beat it beyond seed noise"
    )
    assert c.get_model_version_by_alias(NAME, "champion").version == 2
    assert c.get_model_version(NAME, "3").tags["val_accuracy"] == repr(val(v3))
    assert "val_accuracy_seeds" not in c.get_model_version(NAME, "3").tags


@pytest.mark.slow
def test_the_champion_loads_in_one_line_and_scores_its_runs_test_accuracy(ranked):
    mlflow.set_tracking_uri(ranked.uri)
    model = mlflow.pytorch.load_model(f"models:/{NAME}@champion")
    data = dataset("")
    x = normalize(data.test_images.unsqueeze(1))
    with torch.inference_mode():
        right = sum(
            (model(x[i : i + 1000]).argmax(1) == data.test_labels[i : i + 1000]).sum().item()
            for i in range(0, len(x), 1000)
        )
    assert right / len(x) == pytest.approx(ranked.runs[1].data.metrics["test_accuracy"], abs=3e-4)


@pytest.mark.slow
def test_registering_points_at_the_logged_model_and_uploads_nothing_more(ranked):
    c, run = ranked.client, ranked.runs[1]
    (logged,) = c.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{run.info.run_id}'",
    )
    assert c.get_model_version(NAME, "2").source == f"models:/{logged.model_id}"
    assert {a.path for a in c.list_artifacts(run.info.run_id)} == {"config.yaml", "plots"}


@pytest.mark.slow
def test_through_pyfunc_the_champion_takes_raw_pixels_and_answers_class_names(ranked):
    mlflow.set_tracking_uri(ranked.uri)
    info = mlflow.models.get_model_info(f"models:/{NAME}@champion")
    outputs = [c["name"] for c in info.signature.outputs.to_dict()]
    assert info.signature.inputs is None and outputs == ["class", *CLASSES]
    local = mlflow.artifacts.download_artifacts(info.model_uri)
    example = np.asarray(mlflow.models.Model.load(local).load_input_example(local))
    assert example.shape == (2, 28, 28) and example.max() > 1  # raw pixels, as a caller has them
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    data = dataset("")
    raw = data.test_images.numpy()  # uint8, (N, 28, 28): no normalization by the caller
    out = model.predict(raw)
    assert list(out.columns) == ["class", *CLASSES]
    assert np.allclose(out[list(CLASSES)].sum(axis=1), 1, atol=1e-4)
    truth = np.array(CLASSES)[data.test_labels.numpy()]
    accuracy = (out["class"].to_numpy() == truth).mean()
    assert accuracy == pytest.approx(ranked.runs[1].data.metrics["test_accuracy"], abs=3e-4)
    # The same answer for 0..255 floats, a channel axis, or flat rows.
    few = raw[:5]
    for same in (few.astype(np.float64), few[:, None], few.reshape(5, 784).astype(np.float32)):
        assert (model.predict(same)["class"] == out["class"][:5]).all()
    with pytest.raises(ValueError, match=r"28x28 raw pixels .* got shape \(2, 27, 27\)"):
        model.predict(np.zeros((2, 27, 27)))


@pytest.mark.slow
def test_each_run_logs_its_train_val_and_test_sets_without_their_pixels(ranked):
    inputs = [{d.dataset.name: d for d in run.inputs.dataset_inputs} for run in ranked.runs]
    names = ["fashion-mnist-train", "fashion-mnist-val", "fashion-mnist-test"]
    for logged in inputs:
        assert sorted(logged) == sorted(names)
        contexts = [logged[n].tags[0].value for n in names]
        assert contexts == ["training", "validation", "test"]
    v1 = inputs[0]
    files = json.loads(v1["fashion-mnist-test"].dataset.source)["files"]
    assert [Path(f).name for f in files] == [FILES["test_images"].name, FILES["test_labels"].name]
    assert json.loads(v1["fashion-mnist-train"].dataset.profile) == {
        "images": 256,
        "split_seed": 0,
        "val_size": 500,
        "train_subset": 256,
    }

    def digests(name: str) -> list[str]:
        return [logged[name].dataset.digest for logged in inputs]

    # 256 then 1024 training images, then v1's selection again under another seed.
    train_1, train_2, train_3 = digests("fashion-mnist-train")
    assert train_1 != train_2 and train_1 == train_3
    assert len(set(digests("fashion-mnist-val"))) == len(set(digests("fashion-mnist-test"))) == 1


def split(**selection: int) -> DataSplit:
    return DataSplit(
        "train", (Path("/nowhere/a.gz"), Path("/nowhere/b.gz")), ("m1", "m2"), selection, 10
    )


def test_a_splits_digest_is_its_files_md5s_and_selection_and_reads_no_file():
    base = SplitDataset(split(split_seed=0, val_size=5)).digest
    assert SplitDataset(split(split_seed=0, val_size=5)).digest == base
    assert SplitDataset(split(split_seed=1, val_size=5)).digest != base
    assert SplitDataset(split(split_seed=0, val_size=6)).digest != base


@pytest.mark.slow
def test_system_metrics_are_sampled_and_off_with_the_flag_and_leave_no_thread(ranked):
    c, (v1, _, v3) = ranked.client, ranked.runs
    keys = {k for k in v1.data.metrics if k.startswith("system/")}
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= keys
    steps = [
        m.step for m in c.get_metric_history(v1.info.run_id, "system/cpu_utilization_percentage")
    ]
    assert steps == list(range(len(steps)))  # one point per sample, the last at the run's end
    assert v1.data.params["system_metrics"] == "True"
    assert not [k for k in v3.data.metrics if k.startswith("system/")]
    assert v3.data.params["system_metrics"] == "False"
    assert THREAD not in ranked.threads


class Raise(Callback):
    def __init__(self, error: BaseException) -> None:
        self.error = error

    def on_epoch_end(self, epoch: int, metrics: dict, train_losses: list) -> None:
        raise self.error


@pytest.mark.slow
@pytest.mark.parametrize(
    ("error", "status"),
    [
        (StopRun("pruned", {"pruned_at_epoch": 1}), "KILLED"),
        (KeyboardInterrupt(), "KILLED"),
        (RuntimeError("boom"), "FAILED"),
    ],
)
def test_the_sampler_stops_however_the_run_ends(store, monkeypatch, error, status):
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "1")
    cfg = Config(
        model="tutorial_cnn",
        train_subset=128,
        val_size=200,
        batch_size=64,
        epochs=2,
        augment=False,
        checkpoint=False,
    )
    logger = MlflowCallback(cfg, log_model=False)
    with pytest.raises(type(error)):
        train(cfg, [logger, Raise(error)], test=False)
    assert THREAD not in threads()
    run = MlflowClient(store).get_run(logger.run_id)
    assert run.info.status == status
    assert "system/cpu_utilization_percentage" in run.data.metrics  # the samples on the way out


@pytest.mark.parametrize("main", [train_main, tune_main])
def test_a_bad_registered_model_name_exits_2(store, main):
    res = call_main(main, "--register", "fashion/lab")
    assert res.returncode == 2
    assert "argument --register: 'fashion/lab' cannot name a registered model" in res.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--val-size", "0"], "this run has no val split (val_size 0)"),
        (["--dry-run"], "--dry-run logs no model to register"),
    ],
)
def test_register_needs_a_val_split_and_a_model_before_training(store, args, says):
    res = call_main(train_main, *FAST, *args, "--register", NAME)
    assert res.returncode == 2 and says in res.stderr, res.stderr
    assert run_ids(store) == []


@pytest.mark.slow
def test_a_champion_through_a_tracking_server(mlflow_server):
    res = call_main(train_main, *SMALL, "--train-subset", "256", "--register", NAME)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"registered: {NAME} v1 @champion" in res.stdout
    model = mlflow.pytorch.load_model(f"models:/{NAME}@champion")
    assert model(normalize(dataset("").test_images[:4].unsqueeze(1))).shape == (4, 10)
