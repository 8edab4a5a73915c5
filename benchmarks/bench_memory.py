"""Peak memory of a training run: a `train.py` run vs the tutorial pipeline's process tree.

Both run as child processes, one after the other, for one epoch each (memory does not grow with
epochs); every 50 ms the RSS of the child and all its descendants is summed (for the tutorial:
its main process and its 4 DataLoader workers). Summed RSS counts pages the workers share with
their parent once per process, so it overstates a forked tree; PSS, which splits shared pages
between their sharers, is sampled every 0.5 s and reported beside it.

Where ours goes: fresh interpreters that stop after each stage of a run's start (import torch,
the first optimizer call, import mlflow) report their own peak RSS, the floor under any run.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

from benchmarks import tutorial_baseline as tb
from benchmarks.measure import ratio, summary
from benchmarks.process import (
    TRAIN_SMOKE,
    ProcessRun,
    prepare_store,
    python,
    run_process,
    script_env,
)
from benchmarks.publish import Row, parse, parser, publish, result_name

TARGET_GIB = 1.0
GIB = 2**30
# Cumulative: each stage runs everything before it too.
STAGES = [
    ("import torch (the pinned CUDA wheel)", "import torch"),
    (
        "+ an optimizer's first zero_grad (it imports torch._dynamo)",
        "o = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1); o.zero_grad()",
    ),
    ("+ import mlflow", "import mlflow"),
]


def measure(cmd: list[str], env: dict[str, str] | None = None) -> ProcessRun:
    return run_process(cmd, env, sample_memory=True).check()


def floor(stages: int) -> float:
    """Peak RSS in GiB of a fresh interpreter that runs the first `stages` STAGES and exits."""
    code = "; ".join(c for _, c in STAGES[:stages])
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across fork and exec.
    report = "print(open('/proc/self/status').read())"
    out = run_process([sys.executable, "-c", f"{code}; {report}"]).check().output
    return int(re.search(r"VmHWM:\s+(\d+) kB", out)[1]) * 1024 / GIB


def main(argv: list[str] | None = None) -> int:
    p = parser("bench_memory", __doc__.split("\n\n")[0], repeats=1)
    p.add_argument(
        "--config", default=None, help="train.py experiment file (default: the default recipe)"
    )
    args = parse(p, argv)
    tmp = Path(tempfile.mkdtemp(prefix="fashion-lab-bench-memory-"))
    prepare_store(tmp)
    ours_cmd = python("train.py", "--device", args.device)
    ours_cmd += ["--config", args.config] if args.config else []
    ours_cmd += TRAIN_SMOKE if args.smoke else ["--epochs", "1", "--warmup-epochs", "0"]
    tutorial_cmd = tb.command(1, args.device, args.smoke)

    ours, tutorial = [], []
    for _ in range(args.repeats):
        ours.append(measure(ours_cmd, script_env(tmp)))
        tutorial.append(measure(tutorial_cmd))
    s = {
        f"{side}_{kind}": summary([getattr(r, f"peak_{kind}_bytes") / GIB for r in runs])
        for side, runs in (("ours", ours), ("tutorial", tutorial))
        for kind in ("rss", "pss")
    }
    s |= {f"floor_{i}": summary([floor(i)]) for i in range(1, len(STAGES) + 1)}
    med = {k: v["median"] for k, v in s.items()}
    rows = [
        Row(
            "peak RSS, process tree summed",
            med["ours_rss"],
            med["tutorial_rss"],
            "GiB",
            ratio(med["tutorial_rss"], med["ours_rss"]),
            f"≤ {TARGET_GIB:g} GiB for ours",
            med["ours_rss"] <= TARGET_GIB,
        ),
        Row(
            "peak PSS, process tree summed",
            med["ours_pss"],
            med["tutorial_pss"],
            "GiB",
            ratio(med["tutorial_pss"], med["ours_pss"]),
        ),
        *(
            Row(f"ours, the floor: {name}", med[f"floor_{i}"], None, "GiB", None)
            for i, (name, _) in enumerate(STAGES, 1)
        ),
    ]
    details = {
        **s,
        "ours_command": ours_cmd[1:],
        "tutorial_command": tutorial_cmd[1:],
        "ours_processes_at_most": max(r.peak_processes for r in ours),
        "tutorial_processes_at_most": max(r.peak_processes for r in tutorial),
    }
    notes = [
        f"Ours: `train.py {' '.join(ours_cmd[2:])}` with a throwaway MLflow store, model upload "
        "included; tutorial: one epoch with its per-epoch test pass. Ratio: tutorial over ours "
        f"(> 1: ours uses less). Median of {args.repeats} run(s).",
        f"Processes seen at once: ours {details['ours_processes_at_most']}, tutorial "
        f"{details['tutorial_processes_at_most']}. Sampling every 50 ms can miss a shorter peak.",
    ]
    publish(
        args,
        result_name("memory", args.device),
        "Peak memory of a training run",
        rows,
        details,
        notes,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
