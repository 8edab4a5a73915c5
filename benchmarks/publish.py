"""The command line every benchmark shares, and where its results go.

A benchmark writes `results/<name>.json` (every raw value, the machine, the git commit and the
command that reruns it) and replaces its own section of RESULTS.md, both under `--out`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks import ROOT
from benchmarks.machine import describe, git_revision, isa_cap, isa_variant, machine

BENCH_DIR = ROOT / "benchmarks"
LOG_HEADING = "## Experiments log"
RESULTS_HEADER = """# Benchmark results

Each section below is written by the benchmark it names (`python -m benchmarks.<name>`); rerunning
it replaces that section only. Figures are medians of repeated measurements. A ratio compares
ours with the baseline (or the first-named variant with the second), oriented so that > 1 favours
ours: rates are ours over theirs, times and memory theirs over ours. Raw numbers are in
`benchmarks/results/<name>.json`. The summary first is written by `python -m benchmarks.all`:
the headline rows, one table per machine. The experiments log at the end is written by hand.

"""
# The sections in the order a fresh RESULTS.md lists them: benchmarks.all's summary first.
SECTIONS = (
    "summary",
    "loader",
    "throughput",
    "time_to_accuracy",
    "tracking_overhead",
    "memory",
    "study",
    "make",
)


def parser(name: str, description: str, repeats: int) -> argparse.ArgumentParser:
    """The flags every benchmark takes; `name` is its module in benchmarks/."""
    p = argparse.ArgumentParser(
        prog=f"python -m benchmarks.{name}",
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
    p.set_defaults(full_repeats=repeats, script=name)
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
    args.argv, args.machine = argv, machine()
    return args


def out_dir(args: argparse.Namespace) -> Path:
    if args.out is not None:
        return args.out
    if args.smoke:
        return Path(tempfile.mkdtemp(prefix="fashion-lab-bench-smoke-"))
    return BENCH_DIR


def result_name(base: str, device: str, *variant: str) -> str:
    """results/<name>.json: CPU runs of the default variant keep the plain name; a run whose
    instruction sets were capped (machine.ISA_CAPS) gets the cap as a suffix."""
    parts = [base] + ([device] if device != "cpu" else []) + [v for v in variant if v]
    parts += [isa_variant()] if isa_variant() else []
    return "_".join(parts)


def reproduce_command(script: str, argv: Sequence[str]) -> str:
    """The command line that reruns this measurement, less --out (where it wrote is not what),
    after the ISA caps it ran under."""
    kept, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--out":
            skip = True
        elif not a.startswith("--out="):
            kept.append(a)
    cmd = shlex.join(["python", "-m", f"benchmarks.{script}", *kept])
    return f"{isa_cap()} {cmd}" if isa_cap() else cmd


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
    writer = {n: f"benchmarks.bench_{n}" for n in SECTIONS} | {"summary": "benchmarks.all"}
    blocks = [
        f"<!-- bench:{n}:start -->\n_`python -m {writer[n]}` has not run yet._\n"
        f"<!-- bench:{n}:end -->"
        for n in SECTIONS
    ]
    return RESULTS_HEADER + "\n\n".join(blocks) + f"\n\n{LOG_HEADING}\n\n"
