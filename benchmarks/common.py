"""What every benchmark shares: the machine, timing, subprocesses, and where results are written.

The scripts run as `python benchmarks/<name>.py`, which puts benchmarks/ (not the repo root) on
sys.path; importing this module first puts the root there too, so `train`, `data_utils` and the
other project modules import as they do everywhere else. Ruff sorts `common` (and
`tutorial_baseline`, which imports it) with the third-party imports, ahead of the project's own,
so the path is set before they need it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BENCH_DIR = ROOT / "benchmarks"
LOG_HEADING = "## Experiments log"
RESULTS_HEADER = """# Benchmark results

Each section below is written by the benchmark it names (`python benchmarks/<name>.py`); rerunning
it replaces that section only. Figures are medians of repeated measurements. A ratio compares
ours with the baseline (or the first-named variant with the second), oriented so that > 1 favours
ours: rates are ours over theirs, times and memory theirs over ours. Raw numbers are in
`benchmarks/results/<name>.json`. The experiments log at the end is written by hand.

"""
# Config flags (train.py and tune.py take both) for smoke runs, which only have to pass through
# every line: a small val split, and the model that tests its 10k test images fastest.
SMOKE_CONFIG = ["--val-size", "500", "--model", "tutorial_cnn", "--width", "0"]
# train.py's own smoke mode: 1 epoch on 512 images, no model upload.
TRAIN_SMOKE = ["--dry-run", *SMOKE_CONFIG]
# The table rows of issue 5, in order, so a fresh RESULTS.md lists them in that order.
SECTIONS = ("loader", "throughput", "time_to_accuracy", "tracking_overhead", "memory", "study")


# ---------------------------------------------------------------------------------------------
# The machine and the code measured


def _cpuinfo(key: str) -> str:
    """The first value of `key` in /proc/cpuinfo, or "" where there is none."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.split(":", 1)[0].strip() == key:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def cpu_model() -> str:
    return _cpuinfo("model name") or platform.processor() or "unknown"


# The instruction sets that decide CPU speed here: bf16 convolutions run about 2x faster where
# oneDNN finds AVX512-BF16 (or AMX), and everything falls back to fp32 on AVX2 alone.
CPU_KINDS = (
    ("amx_bf16", "AMX-BF16"),
    ("avx512_bf16", "AVX512-BF16"),
    ("avx512f", "AVX-512"),
    ("avx2", "AVX2"),
)


def cpu_kind(flags: str | None = None) -> str:
    """The best of CPU_KINDS this CPU has (e.g. "AVX512-BF16"), or "other"."""
    have = set((_cpuinfo("flags") if flags is None else flags).split())
    return next((kind for flag, kind in CPU_KINDS if flag in have), "other")


def machine() -> dict[str, Any]:
    """Enough to tell whether two result files are comparable, load average included."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": cpu_model(),
        "cpu_kind": cpu_kind(),
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "usable_cores": len(os.sched_getaffinity(0)),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        # A busy machine is the commonest reason for numbers that don't reproduce.
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "gpu": gpu,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
    }


def describe(m: Mapping[str, Any]) -> str:
    gpu = f", GPU {m['gpu']}" if m["gpu"] else ", no GPU"
    kind = f" ({m['cpu_kind']})" if "cpu_kind" in m else ""
    return (
        f"{m['cpu']}{kind}, {m['usable_cores']} usable cores ({m['physical_cores']} physical), "
        f"{m['memory_gib']} GiB{gpu}; torch {m['torch']} with {m['torch_threads']} threads; "
        f"load average {m['load_avg_1m']} at the start"
    )


def git_revision() -> str:
    """Short commit, with -dirty when the tree has uncommitted changes to tracked files.

    $FASHION_LAB_GIT_REVISION overrides it: a copy of the tree sent to another machine may carry
    git metadata that is not the code's."""
    if rev := os.environ.get("FASHION_LAB_GIT_REVISION"):
        return rev
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return rev + ("-dirty" if dirty else "")


# ---------------------------------------------------------------------------------------------
# Repeated measurements


def summary(values: Sequence[float]) -> dict[str, Any]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
        "values": list(values),
    }


def rounds(
    variants: Mapping[str, Callable[[], float]], repeats: int, warmup: int = 1
) -> dict[str, list[float]]:
    """Call each variant once per round, `warmup` discarded rounds first, then `repeats` kept.

    Variants alternate within a round, so a change in machine load during the run hits all of
    them alike instead of whichever happened to run last. Each call returns its own measurement
    (seconds, or a rate it timed itself).
    """
    kept: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(warmup + repeats):
        for name, fn in variants.items():
            value = fn()
            if r >= warmup:
                kept[name].append(value)
    return kept


def sync(device: str) -> None:
    """Wait for queued GPU work, so a clock read after it covers the work."""
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if not numerator or not denominator:
        return None
    return numerator / denominator


# ---------------------------------------------------------------------------------------------
# Subprocesses: wall time from before spawn, each output line's time, peak memory of the tree


@dataclass
class ProcessRun:
    cmd: list[str]
    returncode: int
    wall_s: float  # from just before spawn to exit
    lines: list[tuple[float, str]]  # (seconds since spawn, line), stdout and stderr merged
    peak_rss_bytes: int = 0  # summed over the process and all its descendants
    peak_pss_bytes: int = 0  # the same with shared pages split between sharers; sampled less
    peak_processes: int = 0

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
    timeout_s: float | None = None,
) -> ProcessRun:
    """Run cmd from the repo root, timestamping its output lines as they arrive.

    With sample_memory, the RSS of the process tree is summed every interval_s (and its PSS every
    tenth sample: reading smaps is too slow for every tick). Sampling can miss a peak shorter
    than the interval.
    """
    cmd = [str(c) for c in cmd]
    lines: list[tuple[float, str]] = []
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
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
    peak_rss = peak_pss = peak_n = tick = 0
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        if timeout_s is not None and time.perf_counter() - t0 > timeout_s:
            proc.kill()
            break
        if sample_memory:
            rss, pss, n = _tree_memory(root, with_pss=tick % 10 == 0)
            peak_rss, peak_pss, peak_n = max(peak_rss, rss), max(peak_pss, pss), max(peak_n, n)
            tick += 1
        time.sleep(interval_s)
    proc.wait()
    wall = time.perf_counter() - t0
    reader.join()
    return ProcessRun(cmd, proc.returncode, wall, lines, peak_rss, peak_pss, peak_n)


def _tree_memory(root: psutil.Process, with_pss: bool) -> tuple[int, int, int]:
    rss = pss = n = 0
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0, 0, 0
    for p in procs:
        try:  # a worker may exit between listing and reading
            if with_pss:
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
    return [sys.executable, str(ROOT / script), *args]


# ---------------------------------------------------------------------------------------------
# The CLI every benchmark shares, and where its results go


def parser(name: str, description: str, repeats: int) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"benchmarks/{name}.py",
        description=description,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes, seconds not minutes: checks the script runs, measures nothing",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=None,
        help=f"measurements kept per variant (default: {repeats}, or 1 with --smoke)",
    )
    p.set_defaults(full_repeats=repeats)
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for results/<name>.json and RESULTS.md (default: benchmarks/, or a new "
        "temp folder with --smoke so smoke runs never touch the real results)",
    )
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to train")
    return p


def parse(p: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse, settle what --smoke changes (one measurement, no warmup round), and describe the
    machine before anything runs, so its load average is the one the measurement started under."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(argv)
    if args.repeats is None:
        args.repeats = 1 if args.smoke else args.full_repeats
    if args.repeats < 1:
        p.error(f"--repeats must be >= 1, got {args.repeats}")
    args.warmup = 0 if args.smoke else 1
    args.argv, args.script, args.machine = argv, Path(p.prog).name, machine()
    return args


def out_dir(args: argparse.Namespace) -> Path:
    if args.out is not None:
        return args.out
    if args.smoke:
        return Path(tempfile.mkdtemp(prefix="fashion-lab-bench-smoke-"))
    return BENCH_DIR


def result_name(base: str, device: str, *variant: str) -> str:
    """results/<name>.json: CPU runs of the default variant keep the plain name."""
    parts = [base] + ([device] if device != "cpu" else []) + [v for v in variant if v]
    return "_".join(parts)


def reproduce_command(script: str, argv: Sequence[str]) -> str:
    """The command line that reran this measurement, less --out (where it wrote is not what)."""
    kept, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--out":
            skip = True
        elif not a.startswith("--out="):
            kept.append(a)
    return shlex.join(["python", f"benchmarks/{script}", *kept])


@dataclass
class Row:
    """One line of a benchmark's headline table."""

    measure: str
    ours: float | None
    baseline: float | None
    unit: str
    ratio: float | None  # ours vs baseline, oriented so that > 1 favours ours
    target: str = ""
    met: bool | None = None  # None: no target, or not measurable in this run


def publish(
    args: argparse.Namespace,
    name: str,
    title: str,
    rows: Sequence[Row],
    details: Mapping[str, Any],
    notes: Sequence[str],
) -> Path:
    """Write <out>/results/<name>.json, replace its section of <out>/RESULTS.md, print it."""
    out = out_dir(args)
    data = {
        "name": name,
        "title": title,
        "smoke": args.smoke,
        "command": reproduce_command(args.script, args.argv),
        "measured_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "git": git_revision(),
        "machine": args.machine,
        "rows": [asdict(r) for r in rows],
        "details": dict(details),
        "notes": list(notes),
    }
    path = out / "results" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    section = render_section(data)
    update_results_md(out / "RESULTS.md", name, section)
    print(section)
    print(f"wrote {path} and its section of {out / 'RESULTS.md'}")
    return path


def fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "–"
    if abs(value) >= 1000:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.3g}"
    return f"{text} {unit}".strip()


def table(rows: Sequence[Mapping[str, Any]], lead: Sequence[str] = ()) -> list[str]:
    """Markdown table of Row dicts; `lead` holds extra first-column values, one per row."""
    head = ["benchmark"] if lead else []
    head += ["measure", "ours", "baseline", "ratio", "target", "met"]
    out = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for i, r in enumerate(rows):
        met = {True: "yes", False: "**no**", None: "–"}[r["met"]]
        ratio_text = "–" if r["ratio"] is None else f"{r['ratio']:.2f}×"
        cells = [lead[i]] if lead else []
        cells += [
            r["measure"],
            fmt(r["ours"], r["unit"]),
            fmt(r["baseline"], r["unit"]),
            ratio_text,
            r["target"] or "–",
            met,
        ]
        out.append("| " + " | ".join(cells) + " |")
    return out


def render_section(data: Mapping[str, Any]) -> str:
    smoke = " (smoke run: tiny sizes, not a measurement)" if data["smoke"] else ""
    lines = [
        f"### {data['title']}{smoke}",
        "",
        f"Measured {data['measured_at']} at git {data['git']} on {describe(data['machine'])}.",
        "",
        f"Reproduce: `{data['command']}`",
        "",
        *table(data["rows"]),
    ]
    if data["notes"]:
        lines += ["", *(f"- {n}" for n in data["notes"])]
    return "\n".join(lines)


def update_results_md(path: Path, name: str, section: str) -> None:
    """Replace the text between this benchmark's markers; everything else stays as it was.

    A benchmark without markers yet gets them just before the experiments log, which is never
    touched.
    """
    start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
    text = path.read_text() if path.exists() else skeleton()
    block = f"{start}\n{section}\n{end}"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        after = rest.split(end, 1)[1]
        text = before + block + after
    elif LOG_HEADING in text:
        before, after = text.split(LOG_HEADING, 1)
        text = f"{before}{block}\n\n{LOG_HEADING}{after}"
    else:
        text = f"{text.rstrip()}\n\n{block}\n"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)  # a benchmark killed mid-write leaves the old file whole


def skeleton() -> str:
    blocks = [
        f"<!-- bench:{n}:start -->\n_`python benchmarks/bench_{n}.py` has not run yet._\n"
        f"<!-- bench:{n}:end -->"
        for n in SECTIONS
    ]
    return RESULTS_HEADER + "\n\n".join(blocks) + f"\n\n{LOG_HEADING}\n\n"
