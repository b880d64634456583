"""`digest worker`: the daily job run again and again until every due edition is finished, for a fleet of workers
on one PostgreSQL database. A round is run_job; between rounds the worker waits while other workers hold rows
under live leases, and takes a dead worker's rows over once its lease has passed. On SQLite one round is the
whole job (the run lock keeps it alone). It must not fetch, rank or send by itself: run_job does.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime

from sqlalchemy.engine import Engine

from ..config import Settings
from ..delivery.claim import worker_name
from ..log import log_event
from ..store import fleet
from .job import RunReport, run_job

log = logging.getLogger("digest.pipeline")


def run_until_done(engine: Engine, settings: Settings, clock: Callable[[], datetime], *, fetch: bool | Callable[[], bool] = False,
                   stop_event: threading.Event | None = None, worker: str | None = None, on_plan: Callable[[int], None] | None = None) -> RunReport:
    """Rounds of run_job until no delivery of the editions due in them is pending or held by another worker (a
    'deferred' one waits for the next run, as on one host). One report for all the rounds: the first round's due
    and fetch, every round's counts; `elsewhere` what other workers did of this worker's due subscribers."""
    stop_event = stop_event or threading.Event()
    worker = worker or worker_name()
    poll = min(2.0, settings.lease_seconds / 4)
    started = time.monotonic()
    first: RunReport | None = None
    counts = {"sent": 0, "skipped": 0, "failed": 0, "deferred": 0}
    editions: set[str] = set()
    last = RunReport()
    while True:
        last = run_job(engine, settings, clock(), fetch=fetch if first is None else False, stop_event=stop_event, worker=worker, on_plan=on_plan)
        first = first or last
        for key in counts:
            counts[key] += getattr(last, key)
        editions.update(last.editions)
        if last.error is not None or stop_event.is_set() or not fleet.is_shared(engine):
            break
        progress = last.sent + last.failed + last.deferred
        left = fleet.open_work(engine, sorted(editions))
        if not left.held and (not left.claimable or not progress):
            break
        if not progress or not left.claimable:  # others hold rows: wait for them to finish or for their lease to pass
            log_event(log, "worker-waiting", logging.DEBUG, worker=worker, held=left.held, claimable=left.claimable)
            stop_event.wait(poll)
    done = sum(counts.values())
    return RunReport(
        sent=counts["sent"], skipped=counts["skipped"], failed=counts["failed"], deferred=counts["deferred"], due=first.due, not_attempted=last.not_attempted, left_sending=last.left_sending,
        elsewhere=max(0, first.due - done - last.not_attempted), gone=last.gone, stopped=stop_event.is_set(), workers=first.workers,
        seconds=time.monotonic() - started, timings=first.timings, editions=sorted(editions), fetched=first.fetched,
        fetch_error=first.fetch_error, error=last.error,
    )
