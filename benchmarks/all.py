"""Every CPU measurement the README quotes, one after another, then its speed tables again.

    python -m benchmarks.all [--only NAME,NAME] [--allow-dirty] [--smoke] [--out DIR]

Each benchmark runs as its own process (`python -m benchmarks.bench_NAME`), never two at once,
and writes its result file and its section of RESULTS.md; then `benchmarks.readme` rewrites the
README's speed tables from the results and `benchmarks.summary` prints one table of them all.
A result records the git revision it measured, so a tree with uncommitted changes is refused
unless --allow-dirty: its numbers would belong to no commit.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import ROOT, readme
from benchmarks.machine import AVX2, git_revision
from benchmarks.publish import BENCH_DIR, result_name, update_results_md
from benchmarks.summary import by_machine

# name (of the module bench_NAME and its CPU result file) -> minutes a full run takes on a quiet
# 2-core CPU with AVX512-BF16.
MINUTES = {
    "loader": 2.0,
    "throughput": 5.0,
    "time_to_accuracy": 9.0,
    "tracking_overhead": 15.0,
    "memory": 1.5,
    "study": 4.0,
    "make": 7.0,
}


def summary_names(out: Path) -> list[str]:
    """The results the summary shows: every benchmark's, then those measured with torch held
    to AVX2 (results/<name>_avx2.json) where there are any."""
    capped = [f"{n}_{AVX2}" for n in MINUTES if (out / "results" / f"{n}_{AVX2}.json").exists()]
    return [*MINUTES, *capped]


def names(text: str) -> list[str]:
    chosen = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in MINUTES]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(
            f"unknown benchmark(s) {', '.join(unknown) or '(none)'}; choose from "
            + ", ".join(MINUTES)
        )
    return chosen


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.all",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--only", type=names, default=list(MINUTES), help="comma-separated benchmarks to run"
    )
    p.add_argument(
        "--allow-dirty",
        action="store_true",
        help="measure a tree with uncommitted changes (its results name no commit)",
    )
    p.add_argument("--smoke", action="store_true", help="each benchmark's --smoke: seconds each")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="each benchmark's --out (default: benchmarks/, or a new temp folder with --smoke)",
    )
    args = p.parse_args(argv)
    rev = git_revision()
    if rev.endswith("-dirty") and not args.allow_dirty:
        print(
            f"error: the tree has uncommitted changes ({rev}); commit them first, so the "
            "results name the code they measured, or pass --allow-dirty",
            file=sys.stderr,
        )
        return 2
    if rev.endswith("-dirty"):
        print(f"warning: measuring {rev}: the results will name no commit", file=sys.stderr)
    total = sum(MINUTES[n] for n in args.only)
    what = "smoke runs only" if args.smoke else f"about {total:.0f} min on a quiet 2-core CPU"
    print(f"benchmarks.all at git {rev}: {', '.join(args.only)}; {what}", flush=True)
    out = args.out or (
        Path(tempfile.mkdtemp(prefix="fashion-lab-all-")) if args.smoke else BENCH_DIR
    )
    flags = ["--smoke"] * args.smoke + ["--out", str(out)]
    failed = []
    for name in args.only:
        print(f"== {name} (about {MINUTES[name]:g} min)", flush=True)
        t0 = time.perf_counter()
        cmd = [sys.executable, "-m", f"benchmarks.bench_{name}", *flags]
        if subprocess.run(cmd, cwd=ROOT).returncode != 0:
            failed.append(name)
        print(f"== {name}: {time.perf_counter() - t0:.0f} s", flush=True)
    text, _ = by_machine(out, summary_names(out))
    update_results_md(out / "RESULTS.md", "summary", text)
    print(text)
    if out == BENCH_DIR:
        readme.main([str(ROOT / "README.md")])
    # Under an ISA cap each benchmark writes results/<name>_<cap>.json: that is the one to find.
    written = {n: out / "results" / f"{result_name(n, 'cpu')}.json" for n in args.only}
    failed += [n for n, path in written.items() if not path.exists() and n not in failed]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
