"""Speed measurements of fashion-lab against the tutorial pipeline it grew from, run as modules
from the repository root (`python -m benchmarks.bench_loader`); benchmarks/README.md says what
each measures and how its results reach the README."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
