"""Row 6: peak memory of a `train.py` run vs the tutorial pipeline's process tree.

Both run as child processes, one after the other, for one epoch each (memory does not grow with
epochs); every 50 ms the RSS of the child and all its descendants is summed (for the tutorial:
its main process and its 4 DataLoader workers). Summed RSS counts pages the workers share with
their parent once per process, so it overstates a forked tree; PSS, which splits shared pages
between their sharers, is sampled every 0.5 s and reported beside it.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import common
import tutorial_baseline as tb

TARGET_GIB = 1.0
GIB = 2**30


def measure(cmd: list[str], env: dict[str, str] | None = None) -> common.ProcessRun:
    return common.run_process(cmd, env, sample_memory=True).check()


def main(argv: list[str] | None = None) -> int:
    p = common.parser("bench_memory", __doc__.split("\n\n")[0], repeats=1)
    p.add_argument(
        "--config", default=None, help="train.py experiment file (default: the default recipe)"
    )
    args = common.parse(p, argv)
    tmp = Path(tempfile.mkdtemp(prefix="fashion-lab-bench-memory-"))
    common.prepare_store(tmp)
    ours_cmd = common.python("train.py", "--device", args.device)
    ours_cmd += ["--config", args.config] if args.config else []
    ours_cmd += common.TRAIN_SMOKE if args.smoke else ["--epochs", "1", "--warmup-epochs", "0"]
    tutorial_cmd = tb.command(1, args.device, args.smoke)

    ours, tutorial = [], []
    for _ in range(args.repeats):
        ours.append(measure(ours_cmd, common.script_env(tmp)))
        tutorial.append(measure(tutorial_cmd))
    s = {
        f"{side}_{kind}": common.summary([getattr(r, f"peak_{kind}_bytes") / GIB for r in runs])
        for side, runs in (("ours", ours), ("tutorial", tutorial))
        for kind in ("rss", "pss")
    }
    med = {k: v["median"] for k, v in s.items()}
    rows = [
        common.Row("peak RSS, process tree summed", med["ours_rss"], med["tutorial_rss"], "GiB",
                   common.ratio(med["tutorial_rss"], med["ours_rss"]),
                   f"≤ {TARGET_GIB:g} GiB for ours", med["ours_rss"] <= TARGET_GIB),
        common.Row("peak PSS, process tree summed", med["ours_pss"], med["tutorial_pss"], "GiB",
                   common.ratio(med["tutorial_pss"], med["ours_pss"])),
    ]  # fmt: skip
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
    common.publish(
        args, common.result_name("memory", args.device), "Row 6: peak memory of a training run",
        rows, details, notes,
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
