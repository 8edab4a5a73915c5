"""How a run stops early: divergence, a callback that ends it (a pruner), Ctrl-C and SIGTERM."""

from __future__ import annotations

import signal
from typing import Any


class DivergenceError(RuntimeError):
    """The loss went NaN/inf or past cfg.max_loss; training stops at the next check."""


class StopRun(Exception):
    """Raised by a callback to end the run on purpose (a pruner): the run ends KILLED with
    these tags, never FAILED."""

    def __init__(self, reason: str, tags: dict[str, Any]) -> None:
        super().__init__(reason)
        self.tags = tags


class Terminated(KeyboardInterrupt):
    """SIGTERM (SLURM, Kubernetes, systemd, kill) raised where Ctrl-C would be, so both stop a
    run the same way: KILLED, its last checkpoint on record, resumable."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated


def stop_on_sigterm() -> None:
    """Turn SIGTERM into Terminated in the main thread; a CLI calls this once at start."""
    signal.signal(signal.SIGTERM, _raise_terminated)


def stop_cause(e: KeyboardInterrupt) -> str:
    return "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted (Ctrl-C)"


def stop_exit_code(e: KeyboardInterrupt) -> int:
    """128 + the signal, as a shell reports a process that the signal ended."""
    return 128 + (signal.SIGTERM if isinstance(e, Terminated) else signal.SIGINT)
