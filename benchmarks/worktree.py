"""Another revision of this repository, checked out beside it, to measure side by side with it.

`checkout(commit)` gives a temporary git worktree of the commit with this tree's `benchmarks/`
copied over its own, so one instrumentation (`timed_run`) measures both revisions' code; the
worktree is removed afterwards, after an error or Ctrl-C as well.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from benchmarks import ROOT
from benchmarks.machine import git


class RevisionError(Exception):
    """A revision that cannot be measured: unknown to git, or lacking what the benchmark calls."""


def commit(rev: str) -> str:
    """The full hash of the commit `rev` names (a hash, tag, branch, HEAD~1)."""
    try:
        return git("rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}")
    except (OSError, subprocess.SubprocessError):
        raise RevisionError(
            f"git knows no commit {rev!r} in {ROOT}: give a commit hash, tag or branch that "
            "`git log --oneline` lists (a shallow clone may need `git fetch --unshallow`)"
        ) from None


@contextlib.contextmanager
def checkout(full_hash: str, overlay: str = "benchmarks") -> Iterator[Path]:
    """A detached worktree of full_hash with this tree's `overlay` folder in place of its own."""
    parent = Path(tempfile.mkdtemp(prefix="fashion-lab-rev-"))
    tree = parent / full_hash[:12]
    try:
        git("worktree", "add", "--detach", str(tree), full_hash, timeout_s=120)
        shutil.rmtree(tree / overlay, ignore_errors=True)
        shutil.copytree(
            ROOT / overlay,
            tree / overlay,
            ignore=shutil.ignore_patterns("__pycache__", "results", "RESULTS.md"),
        )
        yield tree
    finally:
        # --force: the overlay and the runs' bytecode are changes git would otherwise keep.
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            git("worktree", "remove", "--force", str(tree), timeout_s=120)
        shutil.rmtree(parent, ignore_errors=True)
