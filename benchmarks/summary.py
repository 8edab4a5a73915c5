"""One table of the headline rows of several benchmark results.

    python -m benchmarks.summary [--out DIR] NAME...    (NAME: results/NAME.json under DIR)

A name without a result file gets a row that says so, so a failed step shows in the table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks.machine import describe
from benchmarks.publish import BENCH_DIR, table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.summary", description=__doc__.split("\n")[0]
    )
    p.add_argument("--out", type=Path, default=BENCH_DIR, help="folder holding results/")
    p.add_argument("names", nargs="+", metavar="NAME")
    args = p.parse_args(argv)
    rows, lead, missing, first = [], [], [], None
    for name in args.names:
        path = args.out / "results" / f"{name}.json"
        if not path.exists():
            missing.append(name)
            continue
        data = json.loads(path.read_text())
        first = first or data
        rows += data["rows"]
        lead += [name] * len(data["rows"])
    if first is not None:
        print(f"Machine: {describe(first['machine'])}; git {first['git']}")
        print("\n".join(table(rows, lead)))
    for name in missing:
        print(f"{name}: no result ({args.out / 'results' / name}.json missing: failed or skipped)")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
