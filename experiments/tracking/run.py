"""The MLflow side of one training run: a callback of the engine."""

from __future__ import annotations

import copy
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from importlib.metadata import version
from pathlib import Path
from typing import Any

import mlflow
import torch
from mlflow.entities import Metric, Param
from mlflow.models import Model

from data_utils import CLASSES, MEAN, STD
from experiments.callbacks import Callback, DataSplit
from experiments.config import Config, to_dict, to_yaml
from experiments.tracking import pixel_classifier, registry
from experiments.tracking.lineage import dataset_inputs
from experiments.tracking.outbox import Outbox
from experiments.tracking.store import (
    OUTAGE_ENV,
    TrackingOutage,
    client,
    experiment_id,
    git_commit,
    outage_limit_s,
    run_name,
    tracking_uri,
)
from experiments.tracking.system import SystemMetrics

# What loading the logged model needs, pinned to what this process runs; inferring it instead
# costs 4-9 s per log_model call.
MODEL_REQUIREMENTS = [f"torch=={version('torch').split('+')[0]}", f"mlflow=={mlflow.__version__}"]


class MlflowCallback(Callback):
    """Logs one training run: params, its datasets, metrics per epoch with the system metrics
    sampled meanwhile, checkpoints, plots and the model, which `register` (with log_model)
    makes a version of a registered model, champion or challenger.

    New run: created at train start (after config and data are checked). Resume: attaches to
    run_id and skips every (metric, step) already recorded, so each epoch's metrics land once.
    Everything sent during training goes through an outbox: while the store does not answer,
    training goes on and the outbox keeps what is not sent, up to the outage limit.
    """

    def __init__(
        self,
        cfg: Config,
        run_id: str | None = None,
        parent_run_id: str | None = None,
        tags: Mapping[str, str] | None = None,
        log_model: bool = True,
        register: registry.Registration | None = None,
    ) -> None:
        self.cfg = cfg
        self.run_id = run_id
        self.parent_run_id = parent_run_id
        self.tags = dict(tags or {})
        self.log_model = log_model
        self.register = register
        self.client = client()
        self._logged: set[tuple[str, int]] = set()
        self._attached = run_id is not None
        self._outbox = Outbox(outage_limit_s())
        self._sends = 0
        self._last_checkpoint: Path | None = None
        self._system: SystemMetrics | None = None
        self._model_uri = ""
        self._version: str | None = None

    def on_start(self, dataset_md5: str, extra_params: Mapping[str, Any]) -> None:
        if self.run_id is None:
            tags = {
                "git_commit": git_commit(),
                "dataset_md5": dataset_md5,
                "mlflow.runName": run_name(self.cfg),
                **self.tags,
            }
            if self.parent_run_id:
                tags["mlflow.parentRunId"] = self.parent_run_id
            run = self.client.create_run(experiment_id(self.cfg.experiment_name), tags=tags)
            self.run_id = run.info.run_id
            params = {**to_dict(self.cfg), **extra_params}
            self.client.log_batch(self.run_id, params=[Param(k, str(v)) for k, v in params.items()])
            self.client.log_text(self.run_id, to_yaml(self.cfg), "config.yaml")
        else:
            run = self.client.get_run(self.run_id)
            self.client.update_run(self.run_id, status="RUNNING")
            for key in ("error", "stop_reason"):  # of the stop this resume undoes
                if key in run.data.tags:
                    self.client.delete_tag(self.run_id, key)
            # Params cannot change: a run extended with --epochs says so in a tag.
            if run.data.params.get("epochs", str(self.cfg.epochs)) != str(self.cfg.epochs):
                self.client.set_tag(self.run_id, "epochs_extended_to", str(self.cfg.epochs))
                self.client.log_text(self.run_id, to_yaml(self.cfg), "config.yaml")
            self._logged = {
                (m.key, m.step)
                for key in run.data.metrics
                for m in self.client.get_metric_history(self.run_id, key)
            }
        # Printed at once, so whoever kills this process knows what to --resume.
        print(f"mlflow_run_id: {self.run_id}", flush=True)
        if self.cfg.system_metrics:
            self._system = SystemMetrics(self.run_id, resume=self._attached)

    def on_data(self, splits: list[DataSplit]) -> None:
        inputs = dataset_inputs(splits)
        self._put("datasets", lambda: self.client.log_inputs(self.run_id, datasets=inputs))
        self._send()

    def on_resume(
        self, history: list[dict[str, float]], train_losses: list[tuple[int, float]]
    ) -> None:
        """Whatever of the checkpoint's epochs never reached its run goes now. A new run that
        starts from another run's checkpoint (a retried trial) holds only its own epochs."""
        if not self._attached:
            return
        points = [("train_loss", v, s) for s, v in train_losses]
        points += [(k, v, i + 1) for i, metrics in enumerate(history) for k, v in metrics.items()]
        self.log_metrics(points)

    def log_metrics(self, points: Iterable[tuple[str, float, int]]) -> None:
        """Batched (key, value, step) points; skips repeats after a resume. Each point keeps
        the timestamp of its first try, so a retry can never record it twice."""
        self._queue(points)
        self._send()

    def _queue(self, points: Iterable[tuple[str, float, int]]) -> None:
        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, s) for k, v, s in points]
        metrics += self._system.take() if self._system else []
        fresh = [m for m in metrics if (m.key, m.step) not in self._logged]
        self._logged.update((m.key, m.step) for m in fresh)
        for i in range(0, len(fresh), 1000):  # MLflow's per-call limit
            batch = fresh[i : i + 1000]
            self._put(f"metrics-{self._sends}", lambda b=batch: self._log_batch(b))

    def _log_batch(self, metrics: list[Metric]) -> None:
        self.client.log_batch(self.run_id, metrics=metrics)

    def _put(self, key: str, send: Callable[[], None]) -> None:
        self._sends += 1
        self._outbox.put(key, send)

    def _send(self) -> None:
        """Flush the outbox; past the outage limit, stop the run (TrackingOutage)."""
        if not self._outbox.flush() and self._outbox.expired():
            raise self._give_up()

    def _drain(self) -> None:
        """At the end there is no training left to go on with: wait for the store."""
        while not self._outbox.flush():
            if self._outbox.expired():
                raise self._give_up()
            time.sleep(min(5.0, self._outbox.limit_s / 5))

    def _give_up(self) -> TrackingOutage:
        """Keep the last checkpoint where --resume finds it, naming this run; say how to go on."""
        out = self._outbox
        head = (
            f"tracking store {tracking_uri()} has failed for "
            f"{time.monotonic() - (out.down_since or 0):.0f} s (limit {out.limit_s:.0f} s, "
            f"${OUTAGE_ENV}): {out.error}. Run {self.run_id} stopped"
        )
        if out.refused is not None:
            head = f"{out.refused}. Run {self.run_id} stopped"
        out.pending.clear()
        if self._last_checkpoint is None or not self._last_checkpoint.exists():
            return TrackingOutage(f"{head} before its first checkpoint; start it again")
        keep = Path("mlruns", "unsent", str(self.run_id)).resolve()
        keep.mkdir(parents=True, exist_ok=True)
        state = torch.load(self._last_checkpoint, map_location="cpu", weights_only=True)
        state["mlflow_run_id"] = self.run_id
        torch.save(state, keep / "last.pt.tmp")
        os.replace(keep / "last.pt.tmp", keep / "last.pt")
        return TrackingOutage(
            f"{head} after epoch {state['epoch']}; its last checkpoint is {keep / 'last.pt'}. "
            f"Once the store answers, continue it with: python train.py --resume {keep / 'last.pt'}"
        )

    def on_epoch_end(
        self, epoch: int, metrics: Mapping[str, float], train_losses: Iterable[tuple[int, float]]
    ) -> None:
        points = [("train_loss", v, s) for s, v in train_losses]
        points += [(k, v, epoch) for k, v in metrics.items()]
        self.log_metrics(points)

    def on_checkpoint(self, path: Path) -> None:
        if path.name == "last.pt":
            self._last_checkpoint = path
        log = self.client.log_artifact
        self._put(f"checkpoint-{path.name}", lambda: log(self.run_id, str(path), "checkpoints"))
        self._send()

    def log_artifacts(self, folder: Path, artifact_path: str) -> None:
        self.client.log_artifacts(self.run_id, str(folder), artifact_path)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, str(v))

    def on_end(self, result: Any) -> None:
        """result is train.TrainResult: final metrics, plots, the best model, then FINISHED.
        The final metrics sit at step = epochs, so a run extended later keeps both. A result
        without a test pass (a study's trial) gets best_val_accuracy alone: no plots, no model."""
        self._stop_system()
        step = result.cfg.epochs
        points = []
        if result.best_val_accuracy is not None:
            points.append(("best_val_accuracy", result.best_val_accuracy, step))
        if result.test_logits is not None:
            # Here, not at the top: a trial draws nothing, and matplotlib would cost each worker
            # process a quarter of a second of start-up.
            from experiments import plots

            per_class = plots.per_class_accuracy(result.test_logits, result.test_labels)
            points += [
                ("test_accuracy", result.test_accuracy, step),
                ("test_loss", result.test_loss, step),
            ]
            points += [
                (f"test_accuracy_class_{plots.class_slug(k)}", v, step)
                for k, v in per_class.items()
            ]
        self.log_metrics(points)
        with tempfile.TemporaryDirectory(prefix="fashion-lab-plots-") as tmp:
            if result.test_logits is not None:
                plots.run_plots(result, Path(tmp))
                self._put("plots", lambda: self.log_artifacts(Path(tmp), "plots"))
            if self.log_model:
                # A copy: the caller's model stays on its device, in its memory format and mode.
                model = copy.deepcopy(result.model)
                model = model.to("cpu", memory_format=torch.contiguous_format).eval()
                example = result.test_images[:2].numpy()
                self._put("model", lambda: self._log_model(model, example))
                if self.register is not None:
                    val = self.register.val_accuracy
                    val = result.best_val_accuracy if val is None else val
                    self._put("register", lambda: self._register(val))
            self._put("status", lambda: self.client.set_terminated(self.run_id, "FINISHED"))
            self._drain()

    def _log_model(self, model: torch.nn.Module, example: Any) -> None:
        """The network in MLflow's pytorch flavor, served by pixel_classifier (raw pixels in,
        class names out); uploaded once, here."""
        with mlflow.start_run(run_id=self.run_id):
            info = Model.log(
                artifact_path=None,  # deprecated for name, but still a required argument
                name="model",
                flavor=pixel_classifier,
                flavor_name="pytorch",
                pytorch_model=model,
                signature=pixel_classifier.output_signature(list(CLASSES)),
                input_example=example,
                metadata={"classes": list(CLASSES), "mean": MEAN, "std": STD},
                pip_requirements=MODEL_REQUIREMENTS,
            )
        self._model_uri = info.model_uri

    def _register(self, val: float | None) -> None:
        """A version pointing at the model just logged, then its alias. Retried after a failure,
        it makes no second version."""
        name = self.register.name
        if self._version is None:
            self._version = str(registry.add_version(self._model_uri, name).version)
        ranked = registry.rank(self.client, name, self._version, self.register, val)
        print(f"registered: {ranked}", flush=True)

    def _stop_system(self) -> None:
        if self._system is not None:
            self._system.stop()

    def on_error(self, status: str, reason: str, tags: Mapping[str, Any] | None = None) -> None:
        """status is an MLflow run status: FAILED for errors (tag error), KILLED for pruning,
        Ctrl-C and SIGTERM (tag stop_reason). One try: the process is ending."""
        self._stop_system()
        if self.run_id is None or self._outbox.expired():
            return
        self._queue([])  # the system metrics sampled since the last epoch
        all_tags = {"error" if status == "FAILED" else "stop_reason": reason[:5000], **(tags or {})}
        self._put("tags", lambda: self.set_tags(all_tags))
        self._put("status", lambda: self.client.set_terminated(self.run_id, status))
        if not self._outbox.flush():
            print(f"tracking: run {self.run_id} could not be marked {status}", flush=True)
