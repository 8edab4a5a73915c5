"""Child processes: train.py, tune.py, make or the tutorial run as a user runs them, timed from
just before spawn to exit, each output line timestamped as it arrives, the memory of the whole
process tree sampled if asked."""

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

import psutil

from benchmarks import ROOT

# Config flags (train.py and tune.py take both) for smoke runs, which only have to pass through
# every line: a small val split, and a model that scores the 10k test images in a blink.
SMOKE_CONFIG = ["--val-size", "500", "--model", "mlp", "--width", "16"]
# train.py's own smoke mode: 1 epoch on 512 images, no model upload.
TRAIN_SMOKE = ["--dry-run", *SMOKE_CONFIG]
# Added to every child's environment by publish.trace, so that each leaves its code's list.
CHILD_ENV: dict[str, str] = {}


@dataclass
class ProcessRun:
    cmd: list[str]
    returncode: int
    wall_s: float  # from just before spawn to exit
    lines: list[tuple[float, str]]  # (seconds since spawn, line), stdout and stderr merged
    peak_rss_bytes: int = 0  # summed over the process and all its descendants
    peak_pss_bytes: int = 0  # the same with shared pages split between sharers

    @property
    def output(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def matches(self, pattern: str) -> list[tuple[float, re.Match[str]]]:
        """(seconds since spawn, match) for every output line that pattern matches."""
        rx = re.compile(pattern)
        return [(t, m) for t, line in self.lines if (m := rx.search(line))]

    def value(self, key: str) -> str:
        """The value of the last `key: value` line printed; KeyError naming it where none was."""
        found = self.matches(rf"^{re.escape(key)}: (.*)$")
        if not found:
            raise KeyError(
                f"{shlex.join(self.cmd)} printed no {key!r} line:\n{self.output[-2000:]}"
            )
        return found[-1][1][1].strip()

    def check(self) -> ProcessRun:
        """self, or RuntimeError with the output's first traceback (a worker's may be far up)."""
        if self.returncode != 0:
            text = self.output.splitlines()
            starts = [i for i, x in enumerate(text) if x.endswith("most recent call last):")]
            first = text[starts[0] : starts[0] + 40] if starts else []
            tail = "\n".join([*first, "...", *text[-30:]])
            raise RuntimeError(f"{shlex.join(self.cmd)} exited {self.returncode}:\n{tail}")
        return self


def run_process(
    cmd: Sequence[str],
    env: Mapping[str, str] | None = None,
    sample_memory: bool = False,
) -> ProcessRun:
    """Run cmd from the repository root, timestamping its output lines as they arrive.

    With sample_memory, the RSS of the process tree is summed every 50 ms, its PSS every 0.2 s:
    reading /proc/PID/smaps_rollup walks the page tables, 5-10 ms per process of 1 GiB on a
    2-core machine, too dear for every tick. A peak shorter than that can be missed.
    """
    lines: list[tuple[float, str]] = []
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [str(c) for c in cmd],
        cwd=ROOT,
        env={**(env or os.environ), **CHILD_ENV},
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
    peak_rss = peak_pss = 0
    next_pss = 0.0
    while proc.poll() is None:
        if sample_memory:
            now = time.perf_counter()
            rss, pss = tree_memory(proc.pid, with_pss=now >= next_pss)
            peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
            next_pss = now + 0.2 if now >= next_pss else next_pss
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    reader.join()
    return ProcessRun([str(c) for c in cmd], proc.returncode, wall, lines, peak_rss, peak_pss)


def tree_memory(pid: int, with_pss: bool) -> tuple[int, int]:
    """The summed RSS, and with_pss the summed PSS, of pid and all its descendants."""
    rss = pss = 0
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0, 0
    for p in procs:
        try:  # a worker may exit between listing and reading
            if with_pss:  # psutil reads smaps_rollup where the kernel has it
                info = p.memory_full_info()
                rss, pss = rss + info.rss, pss + info.pss
            else:
                rss += p.memory_info().rss
        except psutil.Error:
            continue
    return rss, pss


def script_env(tmp: Path) -> dict[str, str]:
    """Environment for a train.py/tune.py child: a throwaway MLflow store, no progress bars."""
    uri = f"sqlite:///{tmp}/mlflow.db"
    extra = {"MLFLOW_TRACKING_URI": uri, "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1"}
    return {**os.environ, **extra, "MPLBACKEND": "Agg"}


def prepare_store(tmp: Path) -> None:
    """Give tmp an MLflow store with its tables made, as a user's store has them: making them
    costs seconds that would otherwise land on whichever run came first. They are made once per
    machine and mlflow version, then copied."""
    template = Path(tempfile.gettempdir()) / f"fashion-lab-mlflow-{version('mlflow-skinny')}.db"
    if not template.exists():
        staging = Path(tempfile.mkdtemp(prefix="fashion-lab-bench-store-"))
        code = "from experiments import tracking; tracking.client().search_experiments()"
        subprocess.run([sys.executable, "-c", code], env=script_env(staging), cwd=ROOT, check=True)
        os.replace(staging / "mlflow.db", template)  # whole or not at all, for a run beside this
    shutil.copyfile(template, tmp / "mlflow.db")
