"""One table per machine of the headline rows of several benchmark results.

    python -m benchmarks.summary [--out DIR] NAME...    (NAME: results/NAME.json under DIR)

Results measured on different machines (a CPU with bf16 kernels or AVX2 alone, a GPU) are never
mixed in one table. A name without a result file gets a line that says so, so a failed step
shows.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from benchmarks.machine import label
from benchmarks.publish import BENCH_DIR, table


def by_machine(out: Path, names: Sequence[str]) -> tuple[str, list[str]]:
    """Markdown: per machine, a line naming it and the table of its results' rows; and the
    names without a result file."""
    groups: dict[str, tuple[list[dict], list[str]]] = {}
    missing = []
    for name in names:
        path = out / "results" / f"{name}.json"
        if not path.exists():
            missing.append(name)
            continue
        data = json.loads(path.read_text())
        rows, lead = groups.setdefault(label(data["machine"]), ([], []))
        rows += data["rows"]
        lead += [f"{name} (git {data['git']})"] * len(data["rows"])
    lines = []
    for key, (rows, lead) in groups.items():
        lines += [f"On {key}:", "", *table(rows, lead), ""]
    return "\n".join(lines).rstrip(), missing


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.summary",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", type=Path, default=BENCH_DIR, help="folder holding results/")
    p.add_argument("names", nargs="+", metavar="NAME")
    args = p.parse_args(argv)
    text, missing = by_machine(args.out, args.names)
    print(text)
    for name in missing:
        print(f"{name}: no result ({args.out / 'results' / name}.json missing: failed or skipped)")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
