"""MLflow's usage telemetry: what it costs one train.py process, on (mlflow's default) vs off.

experiments/tracking turns it off unless $MLFLOW_DISABLE_TELEMETRY says otherwise. Each run is a
fresh train.py process on its own store, the two variants alternating; the rows are the
process's wall time and its CPU time (user + system, from the kernel's accounting of the waited
child). The run is short on purpose: telemetry costs per process, not per epoch, and a study's
trial in its own process or a short run pays it in full.
"""

from __future__ import annotations

import os
import resource
import sys
import tempfile
from pathlib import Path

from benchmarks.measure import ratio, rounds, summary
from benchmarks.process import (
    SMOKE_CONFIG,
    TRAIN_SMOKE,
    prepare_store,
    python,
    run_process,
    script_env,
)
from benchmarks.publish import Row, parse, parser, publish

RUN = ["--epochs", "1", "--train-subset", "2048", *SMOKE_CONFIG]
# MLflow turns telemetry off by itself under pytest and on CI; the measurement must not inherit it.
INHERITED_OFF = ("PYTEST_CURRENT_TEST", "CI")


def child_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def one_run(args: list[str], tmp: Path, telemetry: bool) -> tuple[float, float]:
    """(wall s, CPU s) of one train.py process."""
    env = {k: v for k, v in script_env(tmp).items() if k not in INHERITED_OFF}
    env["MLFLOW_DISABLE_TELEMETRY"] = "false" if telemetry else "true"
    cpu0 = child_cpu_s()
    run = run_process(python("train.py", *args), env).check()
    return run.wall_s, child_cpu_s() - cpu0


def main(argv: list[str] | None = None) -> int:
    p = parser("bench_telemetry", __doc__.split("\n\n")[0], repeats=3)
    args = parse(p, argv)
    tmp = Path(tempfile.mkdtemp(prefix="fashion-lab-bench-telemetry-"))
    prepare_store(tmp)
    train_args = [*(TRAIN_SMOKE if args.smoke else RUN), "--device", args.device]
    cpu: dict[str, list[float]] = {"on": [], "off": []}

    def variant(name: str) -> float:
        wall, cpu_s = one_run(train_args, tmp, name == "on")
        cpu[name].append(cpu_s)
        return wall

    walls = rounds({n: lambda n=n: variant(n) for n in cpu}, args.repeats, args.warmup)
    kept = {n: v[args.warmup :] for n, v in cpu.items()}
    s = {
        **{f"wall_{n}_s": summary(v) for n, v in walls.items()},
        **{f"cpu_{n}_s": summary(v) for n, v in kept.items()},
    }
    med = {k: v["median"] for k, v in s.items()}
    rows = [
        Row(
            "train.py process wall time, telemetry off (ours) vs on (mlflow's default)",
            med["wall_off_s"],
            med["wall_on_s"],
            "s",
            ratio(med["wall_on_s"], med["wall_off_s"]),
        ),
        Row(
            "train.py process CPU time (user + system), telemetry off vs on",
            med["cpu_off_s"],
            med["cpu_on_s"],
            "s",
            ratio(med["cpu_on_s"], med["cpu_off_s"]),
        ),
    ]
    notes = [
        f"The run: `train.py {' '.join(train_args)}`, each in a fresh process on its own store. "
        f"Median of {args.repeats} run(s) per variant, alternating"
        + (f", after {args.warmup} discarded round(s)." if args.warmup else "."),
        f"Telemetry costs a process {med['wall_on_s'] - med['wall_off_s']:.1f} s of wall time "
        f"and {med['cpu_on_s'] - med['cpu_off_s']:.1f} s of CPU.",
    ]
    if os.environ.get("CI"):
        notes.append("$CI was set here; the children ran without it.")
    publish(args, "telemetry", "MLflow telemetry off vs on, per train.py process", rows, s, notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
