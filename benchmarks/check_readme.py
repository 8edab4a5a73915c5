"""Every number in README.md's speed tables, traced to the measurement it came from.

    python -m benchmarks.check_readme [README]     (default: the repository's README.md)

Each table in the README's "## Speed" section has a `source` column that links each row to the
result files its numbers come from (`benchmarks/results/<name>.json`, relative to the README).
Every number in the row's other cells must equal a value its sources hold, rounded the way the
README shows it: 96,174 ↔ 96174.3, 3.14× ↔ 3.1437, 13.1 s ↔ 13.07, and a percentage also a
fraction (94.18% ↔ 0.9418). A number in the `target` column must be a threshold its sources'
rows were checked against ("≤ 60 s"). The first column is exempt: it names what was measured
(batch 256, to 91%), not a result. Exits 1 naming every number without a source, so a
hand-typed or stale number cannot stand in the README.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks import ROOT

SECTION = "## Speed"
SOURCE_COLUMN, TARGET_COLUMN = "source", "target"
# 2,259,523 or 154 or 13.1; a digit glued to a letter or underscore (w16, cp312) is a name.
NUMBER = re.compile(r"(?<![\w.])(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?(?![\w])")
SOURCE = re.compile(r"\(([^)\s]*results/[\w.-]+\.json)\)")
CODE = re.compile(r"`[^`]*`")


def speed_tables(text: str) -> Iterator[list[tuple[int, list[str]]]]:
    """Each table of the Speed section as (line number, cells) rows, the header first and the
    |---| line left out."""
    in_section, table = False, []
    for number, line in enumerate([*text.splitlines(), ""], 1):
        if line.startswith("## "):
            in_section = line.strip() == SECTION
        if in_section and line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not set("".join(cells)) <= set("-: "):
                table.append((number, cells))
        elif table:
            yield table
            table = []


def numbers(cell: str) -> Iterator[tuple[str, float, int, bool]]:
    """(as written, value, decimals shown, followed by %) for each number of a cell; code spans
    (file names, commands) hold none."""
    text = CODE.sub("", cell)
    for m in NUMBER.finditer(text):
        written = m.group(0)
        decimals = len(m.group(2) or "")
        percent = text[m.end() :].lstrip().startswith("%")
        yield written, float(written.replace(",", "")), decimals, percent


def measured(data: Any) -> list[float]:
    """Every number a result file holds: its rows, raw measurements and details."""
    if isinstance(data, bool):
        return []
    if isinstance(data, int | float):
        return [float(data)]
    if isinstance(data, dict):
        data = list(data.values())
    if isinstance(data, list):
        return [value for item in data for value in measured(item)]
    return []


def thresholds(data: dict[str, Any]) -> list[float]:
    """The numbers of the targets a result file's rows were checked against ("≤ 60 s": 60)."""
    return [value for row in data["rows"] for _, value, _, _ in numbers(row["target"] or "")]


def untraced(cell: str, held: list[float]) -> Iterator[str]:
    """The numbers of a cell, as written, that no value in `held` rounds to."""
    for written, value, decimals, percent in numbers(cell):
        # A percentage may be stored as one (2.42) or as a fraction (0.9418). Either way, a
        # value rounding to the written one at its decimals (at an exact half, either way) is it.
        shown = [(value, decimals)] + ([(value / 100, decimals + 2)] if percent else [])
        if not any(abs(v - w) <= 0.5 * 10**-d + 1e-9 for v in held for w, d in shown):
            yield written + ("%" if percent else "")


def problems(readme: Path) -> list[str]:
    """One line per number in the speed tables that no source holds, per row without a source,
    and per table without a source column; none when every number is traced."""
    found: list[str] = []
    tables = list(speed_tables(readme.read_text()))
    if not tables:
        return [f"{readme}: no table in its {SECTION!r} section"]
    for (at, header), *rows in tables:
        if SOURCE_COLUMN not in header:
            found.append(f"{readme}:{at}: the table has no {SOURCE_COLUMN!r} column")
            continue
        source_at = header.index(SOURCE_COLUMN)
        for line, cells in rows:
            where = f"{readme}:{line}: {cells[0]!r}"
            paths = SOURCE.findall(cells[source_at]) if source_at < len(cells) else []
            if not paths or not all((readme.parent / path).is_file() for path in paths):
                found.append(f"{where}: its source cell links no results/<name>.json that exists")
                continue
            sources = [json.loads((readme.parent / path).read_text()) for path in paths]
            values = [v for data in sources for v in measured(data)]
            targets = [v for data in sources for v in thresholds(data)]
            for col, cell in enumerate(cells[1:], 1):
                if col == source_at:
                    continue
                held = targets if header[col] == TARGET_COLUMN else values
                found += [
                    f"{where}: {written} in {header[col]!r} is in none of {', '.join(paths)}"
                    for written in untraced(cell, held)
                ]
    return found


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.check_readme", description=__doc__.split("\n")[0]
    )
    p.add_argument("readme", nargs="?", type=Path, default=ROOT / "README.md")
    args = p.parse_args(argv)
    found = problems(args.readme)
    for line in found:
        print(line)
    if found:
        print(f"{len(found)} problem(s): every number there needs a measurement behind it")
        return 1
    print(f"every number in the speed tables of {args.readme} is in its results/*.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
