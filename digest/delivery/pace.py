"""send_rate across workers: a relay limits the account, not the machine, so with several workers (processes,
hosts) the limit is kept where they all see it, in PostgreSQL (digest.store.pace) or in Redis when redis_url is set.
One process alone paces itself (digest.delivery.transport.Pace). It must not send, build or know about subscribers.

The slots are instants 1/send_rate apart on the shared clock, with no burst. SharedPace reserves a few per round
trip (about a fifth of a second's worth), so the database or Redis is asked a few times a second however fast the
rate; slots a worker reserved but did not use (its edition ended) are lost, which only makes the rate lower.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable


class SharedPace:
    """The same interface as transport.Pace (wait() answers how long to sleep; the caller sleeps), its slots booked
    by `reserve(k, interval)`: the next k slots on the shared clock, in one atomic step; it answers in how many
    seconds the first one comes. Thread-safe: several connections of one worker share it."""

    def __init__(self, rate: float, reserve: Callable[[int, float], float], *, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = 1.0 / rate
        self.batch = max(1, min(50, int(rate / 5)))  # about 0.2 s of slots per round trip
        self._reserve, self._clock = reserve, clock
        self._slots: deque[float] = deque()
        self._lock = threading.Lock()

    def wait(self) -> float:
        """Seconds to sleep before the next message may go (its slot taken)."""
        with self._lock:
            now = self._clock()
            while self._slots and self._slots[0] < now - self.interval:  # booked long ago and not used: gone
                self._slots.popleft()
            if not self._slots:
                first = now + max(0.0, self._reserve(self.batch, self.interval))
                self._slots.extend(first + k * self.interval for k in range(self.batch))
            slot = self._slots.popleft()
        return max(0.0, slot - now)
