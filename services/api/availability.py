"""Whether what the service depends on (Ray's Jobs API, its own database) is usable, the health
status that follows from it, one log line per outage, and the back-off between attempts."""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

log = logging.getLogger(__name__)

RAY, DATABASE = "the Ray Jobs API", "the database"


class Availability:
    """``down``/``up`` are called by whoever saw a call fail or succeed (any thread); health is
    SERVING only while nothing is down. During an outage the poller waits ``retry_in`` seconds
    between attempts, doubling from ``base_s`` to ``max_s``."""

    def __init__(self, base_s: float, max_s: float = 30.0,
                 on_change: Callable[[bool], None] = lambda serving: None) -> None:
        self.base_s, self.max_s, self.on_change = base_s, max(max_s, base_s), on_change
        self._lock = threading.Lock()
        self._down: dict[str, tuple[float, str, int]] = {}  # what: (since, first reason, failed attempts)

    @property
    def serving(self) -> bool:
        with self._lock:
            return not self._down

    def is_down(self, what: str) -> bool:
        with self._lock:
            return what in self._down

    def reason(self, what: str) -> str:
        with self._lock:
            return self._down[what][1] if what in self._down else ""

    def down(self, what: str, reason: str) -> None:
        with self._lock:
            was_serving = not self._down
            since, first, attempts = self._down.get(what, (time.time(), reason, 0))
            self._down[what] = (since, first, attempts + 1)
        if attempts == 0:
            log.warning("%s is unusable (%s); health NOT_SERVING, retrying with back-off up to %.0f s",
                        what, reason, self.max_s)
            if was_serving:
                self.on_change(False)

    def up(self, what: str) -> None:
        with self._lock:
            outage = self._down.pop(what, None)
            serving = not self._down
        if outage is not None:
            log.warning("%s is back after %.0f s", what, time.time() - outage[0])
            if serving:
                self.on_change(True)

    def retry_in(self, interval_s: float) -> float:
        """Seconds until the next pass: the poll interval, or the back-off while something is down."""
        with self._lock:
            attempts = max((a for _, _, a in self._down.values()), default=0)
        if attempts == 0:
            return interval_s
        return min(self.max_s, self.base_s * 2 ** (attempts - 1))
