"""System metrics of a run: CPU, memory, disk and network use, and GPU utilization and memory
where nvidia-ml-py finds a GPU, sampled by MLflow's system-metrics monitor on a thread."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping

import psutil
from mlflow.entities import Metric
from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

# One sample per interval costs nothing measurable; $MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL
# (seconds) overrides it, as MLflow documents.
INTERVAL_S = 10.0

# The monitor says "started" and "GPU skipped" at INFO for every run: once per trial is noise.
logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)


class SystemMetrics:
    """Samples on a thread of its own and keeps them for the run's next batch of metrics.

    MLflow's monitor samples; its own loop is not used, since that asks the store for the run
    after every sample and logs with MLflow's retries: a tracking server that does not answer
    would hold up the end of the run for minutes. Here the thread never talks to the store, and
    the samples travel with the epoch's metrics through the run's outbox.
    """

    def __init__(self, run_id: str, resume: bool) -> None:
        # resume: the steps go on from the run's last system/ step (one read of the run).
        self.monitor = SystemMetricsMonitor(run_id, INTERVAL_S, resume_logging=resume)
        self.monitor.mlflow_logger = self  # publish_metrics hands each sample to record_metrics
        self._samples: list[Metric] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        psutil.cpu_percent()  # the first sample's CPU use is measured from here
        self._thread = threading.Thread(target=self._run, name="system-metrics", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.monitor.sampling_interval):
            self._sample()

    def _sample(self) -> None:
        self.monitor.collect_metrics()
        self.monitor.publish_metrics(self.monitor.aggregate_metrics())

    def record_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        with self._lock:
            self._samples += [Metric(k, float(v), now, step) for k, v in metrics.items()]

    def take(self) -> list[Metric]:
        """The samples not taken yet, stamped with the time each was taken."""
        with self._lock:
            samples, self._samples = self._samples, []
        return samples

    def stop(self) -> None:
        """End the thread, then sample once more: the last stretch of the run counts too, and a
        run shorter than the interval still has a sample. Idempotent."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join()
        self._sample()
