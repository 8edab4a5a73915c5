"""How `make test` shares the tests among its xdist workers.

Each test goes to the next free worker, except that the tests using one module-scoped fixture
go to one worker together, so the fixture trains once. xdist's own `--dist loadgroup` would do
this from `xdist_group` marks, but pytest 9 ignores the node id it rewrites to carry them. The
controller never imports the test modules, so the groups are read from their source: a
module-scoped fixture, and the tests that ask for it, directly or through another fixture.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from xdist.scheduler import LoadScopeScheduling


def fixture_groups(root: Path, folder: Path) -> dict[str, str]:
    """Test node id (parameters left out) -> the module-scoped fixture it uses, if any."""
    groups = {}
    for path in sorted(folder.glob("test_*.py")):
        tree = ast.parse(path.read_text())
        funcs = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
        asks = {f.name: {a.arg for a in f.args.args} for f in funcs}
        shared = {
            f.name
            for f in funcs
            if any("scope='module'" in ast.unparse(d) for d in f.decorator_list)
        }
        module = path.relative_to(root).as_posix()
        for f in funcs:
            if not f.name.startswith("test_"):
                continue
            used, todo = set(), set(asks[f.name])
            while todo:
                name = todo.pop()
                used.add(name)
                todo |= asks.get(name, set()) - used
            if used & shared:
                groups[f"{module}::{f.name}"] = f"{module}::{min(used & shared)}"
    return groups


class SharedFixtureScheduling(LoadScopeScheduling):
    """xdist's scope scheduling with a scope per test, or per shared fixture."""

    def __init__(self, config: Any, log: Any = None, *, groups: dict[str, str]) -> None:
        super().__init__(config, log)
        self.groups = groups

    def _split_scope(self, nodeid: str) -> str:
        return self.groups.get(nodeid.split("[")[0], nodeid)
