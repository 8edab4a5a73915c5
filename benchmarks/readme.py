"""The README's measured numbers and benchmarks/RESULTS.md, written from the results, and the
check that they still are what the results give.

    python -m benchmarks.readme            write them (nothing, if any result is unfit)
    python -m benchmarks.readme --check    write nothing; exit 1 naming every problem

The README shows results two ways, both written here and never by hand:
- a block `<!-- results: NAME NAME ... -->` ... `<!-- /results -->`: the headline figures of the
  results it names, one table per kind of machine, each row with its source;
- a span `<!-- r:NAME.KEY -->93.48%<!-- /r -->` in prose (`r:NAME.KEY:range`: the range of its
  runs), KEY one of the figures `benchmarks/RESULTS.md` lists for that result.
Every result, shown or in benchmarks/results/, must exist, be no smoke run, name a clean commit
and hold the summary its samples give. One whose measured code changed since (a file's blob hash
differs, or it predates that record) is shown marked stale. A measurement-like number elsewhere
in the README's text (a decimal, a range or a size with a unit) has no result behind it: an error.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import ROOT, figures
from benchmarks.figures import Figure
from benchmarks.machine import kind, label
from benchmarks.publish import blob

# The names may wrap onto more lines, so that the README's lines stay short.
BLOCK = re.compile(r"<!-- results: ([\w\s]+?) -->\n.*?<!-- /results -->", re.S)
SPAN = re.compile(r"<!-- r:(\w+)\.(\w+)(:range)? -->(.*?)<!-- /r -->")
LOG_HEADING = "## Experiments log"
MAX_LINE = 100
NUMBER = r"\d[\d,]*(?:\.\d+)?"
UNIT = r"(?:%|×|s|ms|min|minutes|seconds|GiB|MiB|img/s|trials/h|points)(?![\w/])"
# Measurement-like: a decimal, a range or a thousands separator before a unit, or a number of a
# unit only measurements take. A bound (≥ 2×, at most 5 s) or a setting (every 10 s) is none.
MEASURED = re.compile(
    rf"(?<![\w.,])(?:\d+\.\d+\s?{UNIT}|{NUMBER}\s?[-–]\s?{NUMBER}\s?{UNIT}"
    rf"|\d{{1,3}}(?:,\d{{3}})+\s?{UNIT}|{NUMBER}\s?(?:GiB|MiB|img/s|trials/h|points)(?![\w/]))"
)
BOUNDS = ("≥", "≤", "<", ">", "±", "at least", "at most", "under")
CODE = re.compile(r"^```.*?^```|`[^`\n]*`|<!--.*?-->", re.S | re.M)


@dataclass
class Result:
    name: str
    data: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Figure] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # what makes it unfit to show
    changed: list[str] = field(default_factory=list)  # why it is stale; [] when it is not


def load(results: Path, name: str, code_root: Path) -> Result:
    """The result results/<name>.json, its figures derived from its samples, what makes it
    unfit, and the files of its code that changed since it was measured."""
    r = Result(name)
    path = results / f"{name}.json"
    if not path.is_file():
        r.problems.append(f"{path} is missing: measure it, or show it nowhere")
        return r
    r.data = json.loads(path.read_text())
    try:
        r.figures = figures.derive(r.data["benchmark"], r.data["samples"])
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as e:
        r.problems.append(f"{path}: its samples give no figures ({type(e).__name__}: {e})")
        return r
    git = r.data["git"]
    if r.data["smoke"]:
        r.problems.append(f"{path} is a smoke run: it measures nothing")
    if not re.fullmatch(r"[0-9a-f]{40}", git.get("commit") or ""):
        r.problems.append(f"{path} names no git commit: its code is unknown")
    elif git.get("dirty") is not False:
        r.problems.append(f"{path} measured uncommitted changes to {git['commit'][:7]}")
    derived = {k: f.value for k, f in r.figures.items()}
    summary = {k: math.nan if v is None else v for k, v in r.data["summary"].items()}
    wrong = sorted(
        k
        for k in derived.keys() | summary.keys()
        if k not in derived or k not in summary or not same(derived[k], summary[k])
    )
    if wrong:
        r.problems.append(f"{path}: its summary is not what its samples give: {', '.join(wrong)}")
    code = r.data.get("code") or {}
    r.changed = [
        p for p, h in code.items() if not (code_root / p).is_file() or blob(code_root / p) != h
    ] or ([] if code else ["(it predates the record of the code it measured)"])
    return r


def same(a: float, b: float) -> bool:
    """Two values of a figure agree: equal to rounding, or neither a finite number."""
    if math.isfinite(a) and math.isfinite(b):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return not math.isfinite(a) and not math.isfinite(b)


def section(r: Result) -> list[str]:
    """RESULTS.md's section of one result: where, when, what code, how to rerun, every figure."""
    m, git = r.data["machine"], r.data["git"]
    cap = f" ({m['isa_cap']})" if m.get("isa_cap") else ""
    stale = " **Stale**: the code it measured has changed since." if r.changed else ""
    return [
        f"### {r.name}",
        "",
        f"On the {kind(m)}: {label(m)}{cap}; torch {m['torch']}, {m['torch_threads']} threads, "
        f"load average {m['load_avg_1m']} at the start. Measured {r.data['measured_at'][:10]} at "
        f"{git['commit'][:7]}.{stale}",
        "",
        f"Reproduce: `{r.data['command']}`",
        "",
        *figures.table(r.figures),
        "",
    ]


def tables(results: list[Result]) -> list[str]:
    """The README block's lines: a table per kind of machine, then its sources' links."""
    groups: dict[str, list[Result]] = {}
    for r in results:
        groups.setdefault(kind(r.data["machine"]), []).append(r)
    out = []
    for machine_kind, group in groups.items():
        machines = "; ".join(sorted({label(r.data["machine"]) for r in group}))
        out += [*textwrap.wrap(f"On the {machine_kind}: {machines}.", MAX_LINE), ""]
        out += ["| measure | median | target: verdict | source |", "| --- | --- | --- | --- |"]
        for r in group:
            for key in figures.headline(r.data["benchmark"], r.figures):
                f = r.figures[key]
                source = f"[{r.name}]" + (" stale" if r.changed else "")
                out.append(f"| {f.label} | {f.text()} | {f.verdict()} | {source} |")
        out.append("")
    out += [f"[{r.name}]: benchmarks/results/{r.name}.json" for r in results]
    out += ["", "Every figure with the range of its runs, and the command that measures it:"]
    return [*out, "[`benchmarks/RESULTS.md`](benchmarks/RESULTS.md)."]


def span(match: re.Match[str], results: dict[str, Result]) -> str:
    name, key, view = match[1], match[2], match[3] or ""
    r = results[name]
    f = r.figures[key]
    text = (f.spread() if view else f.text()) + (" (stale)" if r.changed else "")
    return f"<!-- r:{name}.{key}{view} -->{text}<!-- /r -->"


def build(root: Path, code_root: Path | None = None) -> tuple[str, str, list[str], list[Result]]:
    """README.md and benchmarks/RESULTS.md under root as the results there give them, the
    problems found, and every result; code_root holds the measured code (default: root)."""
    readme, results_md = root / "README.md", root / "benchmarks" / "RESULTS.md"
    folder = root / "benchmarks" / "results"
    text = readme.read_text()
    shown = {n for m in BLOCK.finditer(text) for n in m[1].split()}
    shown |= {m[1] for m in SPAN.finditer(text)}
    named = sorted({p.stem for p in folder.glob("*.json")} | shown)
    results = {n: load(folder, n, code_root or root) for n in named}
    problems = [p for r in results.values() for p in r.problems]
    if problems:
        return text, results_md.read_text(), problems, list(results.values())

    def block(m: re.Match[str]) -> str:
        lines = tables([results[n] for n in m[1].split()])
        problems.extend(
            f"{readme}: a generated line is {len(line)} characters, more than {MAX_LINE}: {line}"
            for line in lines
            if len(line) > MAX_LINE
        )
        return "\n".join([f"<!-- results: {m[1]} -->", *lines, "<!-- /results -->"])

    try:
        new = SPAN.sub(lambda m: span(m, results), BLOCK.sub(block, text))
    except KeyError as e:
        return text, results_md.read_text(), [f"{readme}: a span names no figure {e}"], []
    prose = CODE.sub("", BLOCK.sub("", SPAN.sub("", new)))
    problems += [
        f"{readme}: {m[0]!r} has no result behind it: write it as a span, <!-- r:NAME.KEY -->"
        for m in MEASURED.finditer(prose)
        if not prose[: m.start()].rstrip().endswith(BOUNDS)
    ]
    log = results_md.read_text().partition(LOG_HEADING)
    head = [
        "# Benchmark results",
        "",
        "Written by `python -m benchmarks.readme` from `benchmarks/results/*.json`: per result,",
        "each figure with the median and range of its runs (each run its own seed) and its",
        "verdict, judged on the median. The experiments log at the end is written by hand.",
        "",
    ]
    ordered = sorted(results.values(), key=lambda r: (kind(r.data["machine"]), r.name))
    body = [line for r in ordered for line in section(r)]
    return new, "\n".join(head + body) + "\n" + log[1] + log[2], problems, ordered


def check(root: Path, code_root: Path | None = None) -> list[str]:
    """Every problem of the results under root, and of README.md and RESULTS.md there if they
    are not what those results give; [] when all is well."""
    new_readme, new_results, problems, _ = build(root, code_root)
    readme, results_md = root / "README.md", root / "benchmarks" / "RESULTS.md"
    return problems or [
        f"{path}: not what the results give; run `python -m benchmarks.readme`"
        for path, new in ((readme, new_readme), (results_md, new_results))
        if path.read_text() != new
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.readme", description=__doc__)
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if out of date")
    args = p.parse_args(argv)
    new_readme, new_results, problems, results = build(ROOT)
    print("".join(f"stale: {r.name}: {', '.join(r.changed[:5])}\n" for r in results if r.changed))
    if not problems and not args.check:
        (ROOT / "README.md").write_text(new_readme)
        (ROOT / "benchmarks" / "RESULTS.md").write_text(new_results)
    problems = check(ROOT)
    print("".join(f"error: {line}\n" for line in problems) or "README.md and RESULTS.md hold it")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
