"""Worker processes on this machine: one per GPU (CUDA_VISIBLE_DEVICES), or N sharing the CPU."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence

import torch

from experiments.stops import (
    Terminated,
)
from experiments.tuning.study import StudyContext


def visible_gpus() -> list[str]:
    """CUDA_VISIBLE_DEVICES entries if set, else every GPU torch sees; ids as the variable takes."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip()]

    return [str(i) for i in range(torch.cuda.device_count())]


def launch_workers(
    st: StudyContext, script: str, argv: Sequence[str], n: int, gpus: list[str]
) -> int:
    """N copies of script (tune.py) as workers, each pinned to one GPU when there are GPUs."""
    cpus = len(os.sched_getaffinity(0))
    procs: list[subprocess.Popen] = []
    pumps: list[threading.Thread] = []
    for i in range(n):
        env = {**os.environ, "TQDM_DISABLE": "1"}  # N interleaved progress bars help nobody
        extra = ["--worker-index", str(i)]
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[i % len(gpus)]
        elif st.base.threads == 0:
            extra += ["--threads", str(max(1, cpus // n))]  # share the cores, don't fight
        # Own session: Ctrl-C reaches the launcher only, which passes it on exactly once.
        proc = subprocess.Popen(
            [sys.executable, script, *argv, *extra],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        procs.append(proc)
        pumps.append(threading.Thread(target=_pump, args=(proc, f"[w{i}] "), daemon=True))
        pumps[-1].start()
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt as e:
        sig = signal.SIGTERM if isinstance(e, Terminated) else signal.SIGINT
        for p in procs:
            if p.poll() is None:
                p.send_signal(sig)
        for p in procs:
            p.wait()
        raise
    finally:
        for t in pumps:
            t.join()
    failed = [f"w{i}: exit {c}" for i, c in enumerate(codes) if c]
    if failed:
        print(
            f"error: workers failed ({', '.join(failed)}); see their output above", file=sys.stderr
        )
        return 1
    return 0


def _pump(proc: subprocess.Popen, prefix: str) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        print(prefix + line, end="", flush=True)
