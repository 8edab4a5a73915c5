"""What every benchmark shares: its command line, its rounds of in-process measurements, and the
result it writes, `results/<name>.json`: the raw samples, the figures derived from them, the
machine, the git commit and every file of the code the run measured, with its git blob hash."""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import math
import os
import shlex
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks import RESULTS, ROOT, figures
from benchmarks.machine import git_state, isa_cap, isa_variant, machine

TRACE = ROOT / "benchmarks" / "trace"
# What writes, derives or shows results rather than measuring: a change here moves no sample,
# and every figure is derived again at each check.
NOT_MEASURED = ("__init__.py", "publish.py", "figures.py", "readme.py")


def parser(name: str, description: str, repeats: int) -> argparse.ArgumentParser:
    """The flags every benchmark takes; `name` is its module in benchmarks/."""
    p = argparse.ArgumentParser(prog=f"python -m benchmarks.{name}", description=description)
    p.add_argument("--smoke", action="store_true", help="tiny sizes: checks it runs, no more")
    p.add_argument("--repeats", type=int, help=f"runs, each its own seed (default {repeats})")
    p.add_argument("--out", type=Path, help="write OUT/results/<name>.json (default benchmarks/)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to train")
    p.set_defaults(full_repeats=repeats, script=name)
    return p


def parse(p: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse, settle what --smoke changes, describe the machine before anything runs (so its
    load average is the one the measurement started under), and start finding the code it runs."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(argv)
    args.repeats = args.repeats or (1 if args.smoke else args.full_repeats)
    args.warmup = 0 if args.smoke else 1
    args.argv, args.machine, args.trace = argv, machine(), trace()
    return args


def rounds(
    variants: Mapping[str, Callable[[int], float]], repeats: int, warmup: int = 1
) -> dict[str, list[float]]:
    """Call each variant once per round with the round's seed: `warmup` discarded rounds first
    (seed 0), then `repeats` kept (seeds 0, 1, ...).

    Variants alternate within a round, so a change in machine load during the run hits all of
    them alike instead of whichever happened to run last.
    """
    kept: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(-warmup, repeats):
        for name, fn in variants.items():
            value = fn(max(r, 0))
            if r >= 0:
                kept[name].append(value)
    return kept


def sync(device: str) -> None:
    """Wait for queued GPU work, so a clock read after it covers the work."""
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def trace() -> Path:
    """A folder where every child that run_process starts leaves the files it imported; and
    this process's own finding of them started."""
    from benchmarks import process
    from benchmarks.trace import sitecustomize

    folder = Path(tempfile.mkdtemp(prefix="fashion-lab-trace-"))
    path = os.pathsep.join(p for p in (str(TRACE), os.environ.get("PYTHONPATH")) if p)
    process.CHILD_ENV = {"PYTHONPATH": path, "FASHION_LAB_TRACE": str(folder)}
    sitecustomize.start(None)
    return folder


def blob(path: Path) -> str:
    """The file's git blob hash (`git hash-object`), known without git or its history."""
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def measured_code(folder: Path, extra: Iterable[str] = ()) -> dict[str, str]:
    """Path -> blob hash of every repository file that this process and the children that left
    their lists in folder imported or read, and of `extra` (what they read that is no Python)."""
    from benchmarks.trace import sitecustomize

    found = set(sitecustomize.files()) | {str(ROOT / e) for e in extra}
    for listing in folder.glob("*.txt"):
        found |= set(listing.read_text().split("\n"))
    paths = [Path(f) for f in found if Path(f).is_relative_to(ROOT) and Path(f).is_file()]
    rels = {p.relative_to(ROOT).as_posix(): p for p in paths}
    skip = (".venv/", "tests/", "benchmarks/trace/", *(f"benchmarks/{m}" for m in NOT_MEASURED))
    return {rel: blob(p) for rel, p in sorted(rels.items()) if not rel.startswith(skip)}


def result_name(base: str, device: str, *variant: str) -> str:
    """CPU runs keep the plain name; a run on the GPU, of another variant or with its
    instruction sets capped gets a suffix, so it never overwrites another."""
    parts = [base, *([device] if device != "cpu" else []), *variant, isa_variant()]
    return "_".join(p for p in parts if p)


def reproduce_command(script: str, argv: Sequence[str]) -> str:
    """The command line that reruns this measurement, less --out, after the caps it ran under."""
    kept = [a for i, a in enumerate(argv) if a != "--out" and argv[i - 1 : i] != ["--out"]]
    cmd = shlex.join(["python", "-m", f"benchmarks.{script}", *kept])
    return f"{isa_cap()} {cmd}" if isa_cap() else cmd


def plain(value: float) -> float | None:
    """A figure's value as JSON holds it: None where it is no finite number."""
    return value if math.isfinite(value) else None


def publish(
    args: argparse.Namespace,
    name: str,
    benchmark: str,
    samples: Mapping[str, Any],
    extra_code: Iterable[str] = (),
) -> Path:
    """Write <out>/results/<name>.json and print its figures."""
    derived = figures.derive(benchmark, samples)
    data = {
        "name": name,
        "benchmark": benchmark,
        "smoke": args.smoke,
        "command": reproduce_command(args.script, args.argv),
        "measured_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "git": git_state(),
        "code": measured_code(args.trace, extra_code),
        "machine": args.machine,
        "samples": dict(samples),
        "summary": {key: plain(f.value) for key, f in derived.items()},
    }
    out = args.out or (Path(tempfile.mkdtemp(prefix="fashion-lab-bench-")) if args.smoke else None)
    path = (RESULTS if out is None else out / "results") / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")
    print("\n".join(figures.table(derived)))
    print(f"wrote {path}" + ("" if out else "; now `python -m benchmarks.readme`"))
    return path
