"""Speed measurements of fashion-lab against the tutorial pipeline it grew from.

Every script here runs as a module from the repository root, `python -m benchmarks.<name>`, so
the project's own packages (`data_utils`, `experiments`, `models`) import as they do everywhere
else. What the scripts share lives in small modules: `machine` (what ran it), `measure`
(repeated measurements), `process` (child processes, their output and memory) and `publish`
(the shared command line, the results JSON and RESULTS.md).
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
