"""Failed logins per client address: after too many in a window, logins from that address
are refused for a while without checking the password (slows password guessing)."""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable

MAX_FAILURES = 5
WINDOW_S = 300.0
LOCKOUT_S = 300.0


class LoginThrottle:
    def __init__(
        self,
        max_failures: int = MAX_FAILURES,
        window_s: float = WINDOW_S,
        lockout_s: float = LOCKOUT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.lockout_s = lockout_s
        self._clock = clock
        self._failures: dict[str, deque[float]] = defaultdict(deque)
        self._locked_until: dict[str, float] = {}
        self._lock = threading.Lock()

    def retry_after(self, client: str) -> float:
        """Seconds until ``client`` may try again; 0 when it may now."""
        with self._lock:
            left = self._locked_until.get(client, 0.0) - self._clock()
            if left <= 0:
                self._locked_until.pop(client, None)
                return 0.0
            return left

    def failed(self, client: str) -> bool:
        """Count a failure; True when it locks ``client`` out."""
        now = self._clock()
        with self._lock:
            failures = self._failures[client]
            failures.append(now)
            while failures and failures[0] < now - self.window_s:
                failures.popleft()
            if len(failures) < self.max_failures:
                return False
            del self._failures[client]
            self._locked_until[client] = now + self.lockout_s
            return True

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._failures.pop(client, None)
