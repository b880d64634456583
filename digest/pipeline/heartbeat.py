"""A process's heartbeat: the daemon's ticks and its own beat, and the end of `digest run`, `send` and `worker`, each
written as one upsert of its host's row (digest.store.heartbeats) for `digest status --check` to judge.

Never fatal: a write the database refuses is logged (event=heartbeat-failed) and ignored, so a heartbeat cannot stop
a tick or a run. It must not judge the rows (digest.health does) nor run the job.
"""

from __future__ import annotations

import logging
import os
import socket
from datetime import datetime

from sqlalchemy.engine import Engine

from ..config import Settings
from ..errors import DigestError, one_line
from ..log import log_event, masked_line
from ..store.heartbeats import record_heartbeat

log = logging.getLogger("digest.heartbeat")

# A job's report counts of messages the mail server answered: a tick or run with none of them (nothing due, all skipped
# for nothing new, all waiting for a retry) says nothing of the server, so its heartbeat leaves the last outcome.
HANDED_OVER = ("sent", "failed", "deferred")


def handed_over(report: object) -> bool:
    """Whether the job of `report` handed anything to the mail server (a report without those counts: taken as yes),
    so that its outcome, not Heartbeat.idle, is written."""
    return any(getattr(report, k, 1) for k in HANDED_OVER)


def error_line(exc: BaseException, settings: Settings) -> str:
    """A failed job's error as its log line shows it: one line, secrets masked (a DigestError says what to do next)."""
    return masked_line(one_line(exc), settings)


class Heartbeat:
    """The row of this host for one kind of job ("daemon", "run", "send", "worker")."""

    def __init__(self, engine: Engine, settings: Settings, kind: str, *, tick_seconds: int | None = None, host: str | None = None,
                 pid: int | None = None) -> None:
        self.engine, self.settings, self.kind, self.tick_seconds = engine, settings, kind, tick_seconds
        self.host = host or socket.gethostname()
        self.pid = pid if pid is not None else os.getpid()

    def alive(self, now: datetime) -> None:
        """The daemon is running (its own beat, every tick, even while a long tick sends)."""
        self._write(now, tick_seconds=self.tick_seconds, stopped_at=None)

    def started(self, now: datetime) -> None:
        """A tick began."""
        self._write(now, tick_seconds=self.tick_seconds, started_at=now, stopped_at=None)

    def finished(self, now: datetime, error: BaseException | None = None, *, started_at: datetime | None = None) -> None:
        """A job ended: ok, or failed with `error` (its line, masked). `started_at` for a job that wrote no start."""
        changes: dict[str, object] = {"finished_at": now, "outcome": "failed" if error is not None else "ok",
                                      "error": error_line(error, self.settings) if error is not None else None}
        if started_at is not None:
            changes["started_at"] = started_at
        self._write(now, **changes)

    def idle(self, now: datetime) -> None:
        """A tick or run that handed nothing to the mail server (nothing due, all skipped for nothing new, or all waiting
        for a retry): the process lives, and the
        last outcome stays as it was. Sending nothing proves nothing about the mail server: an 'ok' here told
        `status --check` all was well while the server was still down (found by the soak)."""
        self._write(now, tick_seconds=self.tick_seconds, started_at=None, stopped_at=None)

    def stopped(self, now: datetime) -> None:
        """The daemon stopped cleanly (SIGTERM, SIGINT)."""
        self._write(now, stopped_at=now)

    def _write(self, now: datetime, **changes: object) -> None:
        try:
            record_heartbeat(self.engine, self.kind, self.host, self.pid, now, **changes)
        except Exception as exc:  # noqa: BLE001 - a wall: the heartbeat is a report on the job, never a reason for it to fail
            log_event(log, "heartbeat-failed", logging.WARNING, kind=self.kind, error=str(exc) if isinstance(exc, DigestError) else f"{type(exc).__name__}: {exc}",
                      note="`digest status` shows an older heartbeat; the job goes on", exc_info=None if isinstance(exc, DigestError) else exc)
