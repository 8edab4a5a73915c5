"""Peak memory of a training run: a `train.py` run vs the tutorial pipeline's process tree.

Round K runs each for one epoch with seed K (memory does not grow with epochs), one after the
other. The headline is the peak PSS of the child and all its descendants (the tutorial: its main
process and its 4 DataLoader workers), summed every 0.2 s: PSS splits each shared page between
its sharers, so the tree's sum counts every page once. Summed RSS, every 50 ms, stands beside it;
it counts the pages forked workers share with their parent once per process.

Where ours goes: fresh interpreters that stop after each stage of a run's start (import torch,
an optimizer's first call, import mlflow) report their own peak RSS, the floor under any run.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

from benchmarks import ROOT
from benchmarks import tutorial_baseline as tb
from benchmarks.process import TRAIN_SMOKE, prepare_store, run_process, script_env
from benchmarks.publish import parse, parser, publish, result_name

GIB = 2**30
# Cumulative: each stage runs everything before it too. (key, what, code)
STAGES = [
    ("torch", "import torch (the pinned CUDA wheel)", "import torch"),
    (
        "optimizer",
        "an optimizer's first zero_grad (it imports torch._dynamo)",
        "o = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1); o.zero_grad()",
    ),
    ("mlflow", "import mlflow", "import mlflow"),
]


def peaks(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """The peak (PSS, RSS) of cmd's process tree, in GiB."""
    run = run_process(cmd, env, sample_memory=True).check()
    return run.peak_pss_bytes / GIB, run.peak_rss_bytes / GIB


def floor(stages: int) -> float:
    """Peak RSS in GiB of a fresh interpreter that runs the first `stages` STAGES and exits."""
    code = "; ".join(c for *_, c in STAGES[:stages])
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across fork and exec.
    report = "print(open('/proc/self/status').read())"
    out = run_process([sys.executable, "-c", f"{code}; {report}"]).check().output
    return int(re.search(r"VmHWM:\s+(\d+) kB", out)[1]) * 1024 / GIB


def main(argv: list[str] | None = None) -> int:
    p = parser("bench_memory", __doc__.split("\n\n")[0], repeats=5)
    p.add_argument("--config", default=None, help="train.py experiment file (default: defaults)")
    args = parse(p, argv)
    tmp = Path(tempfile.mkdtemp(prefix="fashion-lab-bench-memory-"))
    prepare_store(tmp)
    ours = [sys.executable, str(ROOT / "train.py"), "--device", args.device]
    ours += ["--config", args.config] if args.config else []
    ours += TRAIN_SMOKE if args.smoke else ["--epochs", "1", "--warmup-epochs", "0"]
    samples: dict = {"command": ours[1:], "seed": list(range(args.repeats))}
    for seed in range(args.repeats):
        runs = {
            "ours": peaks([*ours, "--seed", str(seed)], script_env(tmp)),
            "tutorial": peaks(tb.command(1, args.device, args.smoke, seed)),
        }
        for side, (pss, rss) in runs.items():
            samples.setdefault(f"{side}_pss", []).append(pss)
            samples.setdefault(f"{side}_rss", []).append(rss)
    stages = [len(STAGES)] if args.smoke else range(1, len(STAGES) + 1)  # the last runs them all
    floors = [(key, stage, floor(i)) for i, (key, stage, _) in enumerate(STAGES, 1) if i in stages]
    samples["floors"] = [{"key": key, "stage": stage, "gib": gib} for key, stage, gib in floors]
    publish(args, result_name("memory", args.device), "memory", samples)
    return 0


if __name__ == "__main__":
    sys.exit(main())
