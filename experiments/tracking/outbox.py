"""What the tracking store has not taken yet: training goes on while it does not answer."""

from __future__ import annotations

import time
from collections.abc import Callable

from mlflow.exceptions import MlflowException

from experiments.tracking.store import TrackingRefused, fail_fast, first_line, refusal, tracking_uri


class Outbox:
    """What the tracking store has not taken yet, in order. A send that fails stays queued and
    is tried again at the next flush, so training never waits for the store. A refusal of the
    credentials or of a permission (a rotated password) is no outage: no wait will change it,
    so the outbox has expired at once."""

    def __init__(self, limit_s: float) -> None:
        self.limit_s = limit_s
        self.pending: dict[str, Callable[[], None]] = {}
        self.down_since: float | None = None
        self.error = ""
        self.refused: TrackingRefused | None = None

    def put(self, key: str, send: Callable[[], None]) -> None:
        """Queue a send; a later one under the same key replaces it (a newer last.pt)."""
        self.pending.pop(key, None)
        self.pending[key] = send

    def flush(self) -> bool:
        """Send what is pending, oldest first; False if the store failed to take it all."""
        try:
            with fail_fast():
                while self.pending:
                    key = next(iter(self.pending))
                    self.pending[key]()
                    del self.pending[key]
        except (MlflowException, OSError) as e:
            self.error = first_line(e)
            self.refused = refusal(e)
            if self.down_since is None and self.refused is None:
                self.down_since = time.monotonic()
                print(
                    f"tracking: {tracking_uri()} failed ({self.error}); training goes on, and "
                    f"what it could not send is kept and sent again for up to "
                    f"{self.limit_s:.0f} s",
                    flush=True,
                )
            return False
        if self.down_since is not None:
            down = time.monotonic() - self.down_since
            print(
                f"tracking: {tracking_uri()} answers again after {down:.0f} s; "
                "all that was held back is sent",
                flush=True,
            )
            self.down_since = None
        return True

    def expired(self) -> bool:
        if self.refused is not None:
            return True
        return self.down_since is not None and time.monotonic() - self.down_since > self.limit_s
