"""Peak memory of a training run: a `train.py` run vs the tutorial pipeline's process tree.

Both run as child processes, one after the other, for one epoch each (memory does not grow with
epochs). The headline is the peak PSS of the child and all its descendants (for the tutorial: its
main process and its 4 DataLoader workers), summed every 0.2 s: PSS splits each shared page
between the processes sharing it, so the tree's sum counts every page once. Summed RSS, sampled
every 50 ms, is reported beside it; it counts the pages forked workers share with their parent
once per process, so it overstates the tutorial's tree.

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
RSS_INTERVAL_S, PSS_INTERVAL_S = 0.05, 0.2
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
    return run_process(
        cmd, env, sample_memory=True, interval_s=RSS_INTERVAL_S, pss_interval_s=PSS_INTERVAL_S
    ).check()


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
            "peak PSS, process tree summed",
            med["ours_pss"],
            med["tutorial_pss"],
            "GiB",
            ratio(med["tutorial_pss"], med["ours_pss"]),
            f"≤ {TARGET_GIB:g} GiB for ours",
            med["ours_pss"] <= TARGET_GIB,
        ),
        Row(
            "peak RSS, process tree summed (shared pages once per process)",
            med["ours_rss"],
            med["tutorial_rss"],
            "GiB",
            ratio(med["tutorial_rss"], med["ours_rss"]),
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
        "pss_interval_s": PSS_INTERVAL_S,
        "rss_interval_s": RSS_INTERVAL_S,
        "pss_samples": {
            "ours": [r.pss_samples for r in ours],
            "tutorial": [r.pss_samples for r in tutorial],
        },
        # What one PSS sample of the whole tree cost to read: the sampler's own load.
        "pss_read_ms_per_sample": {
            side: 1000 * sum(r.pss_read_s for r in runs) / max(1, sum(r.pss_samples for r in runs))
            for side, runs in (("ours", ours), ("tutorial", tutorial))
        },
    }
    notes = [
        f"Ours: `train.py {' '.join(ours_cmd[2:])}` with a throwaway MLflow store"
        + ("" if args.smoke else ", model upload included")
        + "; tutorial: one epoch with its per-epoch test pass. Ratio: tutorial over ours "
        f"(> 1: ours uses less). Median of {args.repeats} run(s).",
        f"Processes seen at once: ours {details['ours_processes_at_most']}, tutorial "
        f"{details['tutorial_processes_at_most']}. PSS summed every {PSS_INTERVAL_S:g} s (reading "
        "it cost "
        + ", ".join(f"{k} {v:.0f} ms" for k, v in details["pss_read_ms_per_sample"].items())
        + f" per sample of the tree), RSS every {RSS_INTERVAL_S * 1000:g} ms: a peak shorter "
        "than that can be missed.",
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
