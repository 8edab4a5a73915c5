"""Child processes: train.py, tune.py or the tutorial run as a user runs them, and what they cost.

`run_process` times a child from just before spawn to exit, timestamps each output line as it
arrives, and can sample the memory of the child's whole process tree.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import psutil

from benchmarks import ROOT

# Config flags (train.py and tune.py take both) for smoke runs, which only have to pass through
# every line: a small val split, and the model that tests its 10k test images fastest.
SMOKE_CONFIG = ["--val-size", "500", "--model", "tutorial_cnn", "--width", "0"]
# train.py's own smoke mode: 1 epoch on 512 images, no model upload.
TRAIN_SMOKE = ["--dry-run", *SMOKE_CONFIG]
# The summary lines tune.py prints at the end.
TUNE_COUNTS = r"^trials: (\d+) counted \(budget \d+\): (\d+) complete, (\d+) pruned, (\d+) failed"
TUNE_BEST = r"^best_val_accuracy: (\S+)"


@dataclass
class ProcessRun:
    cmd: list[str]
    returncode: int
    wall_s: float  # from just before spawn to exit
    lines: list[tuple[float, str]]  # (seconds since spawn, line), stdout and stderr merged
    peak_rss_bytes: int = 0  # summed over the process and all its descendants
    peak_pss_bytes: int = 0  # the same with shared pages split between sharers; sampled less
    peak_processes: int = 0
    pss_samples: int = 0
    pss_read_s: float = 0.0  # spent reading smaps_rollup, over all PSS samples

    @property
    def output(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def matches(self, pattern: str) -> list[tuple[float, re.Match[str]]]:
        """(seconds since spawn, match) for every output line that pattern matches."""
        rx = re.compile(pattern)
        return [(t, m) for t, line in self.lines if (m := rx.search(line))]

    def last(self, pattern: str) -> tuple[float, re.Match[str]] | None:
        found = self.matches(pattern)
        return found[-1] if found else None

    def check(self) -> ProcessRun:
        """self, or RuntimeError with the output's tracebacks (a worker's may be far up), tail."""
        if self.returncode != 0:
            text = [line for _, line in self.lines]
            starts = [i for i, line in enumerate(text) if line.endswith("(most recent call last):")]
            shown = [line for i in starts for line in text[i : i + 40]] + ["..."] * bool(starts)
            tail = "\n".join(shown + text[-30:])
            raise RuntimeError(f"{shlex.join(self.cmd)} exited {self.returncode}:\n{tail}")
        return self


def run_process(
    cmd: Sequence[str],
    env: Mapping[str, str] | None = None,
    sample_memory: bool = False,
    interval_s: float = 0.05,
    pss_interval_s: float = 0.2,
    timeout_s: float | None = None,
    cwd: Path = ROOT,
) -> ProcessRun:
    """Run cmd from cwd (the repo root unless told), timestamping its output lines as they arrive.

    With sample_memory, the RSS of the process tree is summed every interval_s, and its PSS every
    pss_interval_s: reading /proc/PID/smaps_rollup walks the page tables, about 5-10 ms per
    process of 1 GiB on a 2-core machine, too dear for every tick. Sampling can miss a peak
    shorter than its interval.
    """
    cmd = [str(c) for c in cmd]
    lines: list[tuple[float, str]] = []
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=dict(env or os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    )

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append((time.perf_counter() - t0, line.rstrip("\n")))

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    peak_rss = peak_pss = peak_n = pss_samples = 0
    pss_read_s, next_pss = 0.0, 0.0
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        now = time.perf_counter()
        if timeout_s is not None and now - t0 > timeout_s:
            proc.kill()
            break
        if sample_memory:
            with_pss = now >= next_pss
            rss, pss, n = _tree_memory(root, with_pss)
            peak_rss, peak_pss, peak_n = max(peak_rss, rss), max(peak_pss, pss), max(peak_n, n)
            if with_pss:
                pss_samples += 1
                pss_read_s += time.perf_counter() - now
                next_pss = now + pss_interval_s
        time.sleep(interval_s)
    proc.wait()
    wall = time.perf_counter() - t0
    reader.join()
    return ProcessRun(
        cmd, proc.returncode, wall, lines, peak_rss, peak_pss, peak_n, pss_samples, pss_read_s
    )


def tune_summary(run: ProcessRun) -> dict[str, Any]:
    """The trial counts and best val accuracy a tune.py run printed last."""
    counts, best = run.last(TUNE_COUNTS), run.last(TUNE_BEST)
    if counts is None:
        raise RuntimeError(f"tune.py printed no trial counts:\n{run.output[-2000:]}")
    counted, complete, pruned, failed = (int(counts[1][i]) for i in range(1, 5))
    return {
        "trials": counted,
        "complete": complete,
        "pruned": pruned,
        "failed": failed,
        "best_val_accuracy": float(best[1][1]) if best else None,
    }


def _tree_memory(root: psutil.Process, with_pss: bool) -> tuple[int, int, int]:
    rss = pss = n = 0
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0, 0, 0
    for p in procs:
        try:  # a worker may exit between listing and reading
            if with_pss:  # psutil reads smaps_rollup where the kernel has it
                info = p.memory_full_info()
                rss, pss = rss + info.rss, pss + info.pss
            else:
                rss += p.memory_info().rss
            n += 1
        except psutil.Error:
            continue
    return rss, pss, n


def script_env(tmp: Path, **extra: str) -> dict[str, str]:
    """Environment for a train.py/tune.py child: a throwaway MLflow store, no progress bars."""
    return {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db",
        "PYTHONUNBUFFERED": "1",
        "TQDM_DISABLE": "1",
        "MPLBACKEND": "Agg",
        **extra,
    }


def prepare_store(tmp: Path) -> None:
    """Give tmp a ready MLflow store, its tables made, as a user's store already has them.

    Making them costs a fresh SQLite store many seconds, which would otherwise land on whichever
    measured run came first. They are made once per machine and mlflow version, then copied.
    """
    # mlflow-skinny: the tracking client that every mlflow install has, and all the GPU check's has.
    mlflow_version = version("mlflow-skinny")
    template = Path(tempfile.gettempdir()) / f"fashion-lab-bench-mlflow-{mlflow_version}.db"
    if not template.exists():
        from experiments import tracking

        staging = Path(tempfile.mkdtemp(prefix="fashion-lab-bench-store-"))
        before = os.environ.get("MLFLOW_TRACKING_URI")
        os.environ["MLFLOW_TRACKING_URI"] = script_env(staging)["MLFLOW_TRACKING_URI"]
        try:
            tracking.client().search_experiments()  # opening the store makes its tables
        finally:
            if before is None:
                del os.environ["MLFLOW_TRACKING_URI"]
            else:
                os.environ["MLFLOW_TRACKING_URI"] = before
        os.replace(staging / "mlflow.db", template)  # whole or not at all, for a run beside this
    shutil.copyfile(template, tmp / "mlflow.db")


def python(script: str, *args: str) -> list[str]:
    """The command line of one of the repo's CLI scripts (train.py, tune.py), this interpreter."""
    return [sys.executable, str(ROOT / script), *args]


def module(name: str, *args: str) -> list[str]:
    """The command line of a module run with -m, this interpreter. -m puts the child's working
    directory first on its path: run from another checkout (run_process's cwd), it imports that
    checkout's packages."""
    return [sys.executable, "-m", name, *args]
