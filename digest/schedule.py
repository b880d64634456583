"""The `digest serve` daemon: APScheduler 3.x around the one job that `digest run` also uses.

Two jobs share one single-thread executor (so they never overlap inside the daemon) and the run lock
(so they never overlap with cron, the timer or a person at the terminal): the fetch at fetch_cron in
fetch_tz, and a check every tick that sends whatever is due. It must not fetch, rank or send by itself:
the job (digest.pipeline.run_job) does that; this module only decides when to call it.
"""

from __future__ import annotations

import logging
import signal
import threading
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Protocol

from .config import Settings
from .editions import WEEKDAYS, parse_zone
from .errors import ConfigError, DigestError, LockedError
from .log import log_event

log = logging.getLogger(__name__)

FETCH_GRACE_SECONDS = 3 * 3600  # a fetch up to 3 hours late (suspend, busy machine) still runs, once
LOCKED_RETRY_SECONDS = 60  # a fetch that found the lock taken tries again this much later
FETCH_RETRY_MINUTES = 10  # a failed fetch is tried again at most this often (cron's 15-minute runs each retry)
CRON_WEEKDAYS = WEEKDAYS[6:] + WEEKDAYS[:6]  # sun ... sat: cron numbers them 0-6 (and 7 = sun)


class Job(Protocol):
    def __call__(self, *, now: datetime, fetch: bool, stop_event: threading.Event) -> Any: ...


# --- when to fetch ----------------------------------------------------------------------------------


def cron_weekdays(field: str) -> str:
    """A crontab weekday field as APScheduler 3.x reads it: explicit day names.

    APScheduler 3.x numbers weekdays from Monday = 0 (cron: Sunday = 0) and rejects ranges that wrap
    past Sunday, such as arXiv's "sun-thu"; spelling out the days avoids both traps.
    """
    field = field.strip().lower()
    if field in ("*", "?"):
        return "*"
    days: list[int] = []
    for item in field.split(","):
        part, _, step_text = item.partition("/")
        step = int(step_text) if step_text.isdigit() and int(step_text) > 0 else None
        if step_text and step is None:
            raise ValueError(f"bad step in weekday field {field!r}")
        if part == "*":
            first, last = 0, 6
        elif "-" in part:
            a, b = part.split("-", 1)
            first, last = _cron_day(a), _cron_day(b)
        else:
            first = last = _cron_day(part)
        span = (last - first) % 7
        days.extend((first + k) % 7 for k in range(0, span + 1, step or 1))
    ordered = sorted(set(days), key=lambda d: (d - 1) % 7)  # monday first, as APScheduler lists them
    return ",".join(CRON_WEEKDAYS[d] for d in ordered)


def _cron_day(token: str) -> int:
    token = token.strip()
    if token.isdigit() and 0 <= int(token) <= 7:
        return int(token) % 7
    if token in CRON_WEEKDAYS:
        return CRON_WEEKDAYS.index(token)
    raise ValueError(f"unknown weekday {token!r} (use sun..sat or 0-7)")


def _once_per_wall_time(cron_trigger_class):
    class OncePerWallTime(cron_trigger_class):
        """A CronTrigger that fires once at a wall-clock time that happens twice (the fall-back hour):
        APScheduler 3.x fires at both occurrences, and one fetch is enough."""

        def get_next_fire_time(self, previous_fire_time, now):
            fire = super().get_next_fire_time(previous_fire_time, now)
            while fire is not None and previous_fire_time is not None and _wall(fire, self.timezone) == _wall(previous_fire_time, self.timezone):
                fire = super().get_next_fire_time(fire, _just_after(fire))
            return fire

    return OncePerWallTime


def _just_after(instant: datetime) -> datetime:
    # In UTC: wall-clock arithmetic on a zoned time drops `fold` and lands back on the first 01:30.
    return instant.astimezone(timezone.utc) + timedelta(microseconds=1)


def _wall(instant: datetime, zone) -> datetime:
    return instant.astimezone(zone).replace(tzinfo=None)


def fetch_trigger(settings: Settings):
    """The CronTrigger of fetch_cron in fetch_tz; ConfigError naming the setting when either is wrong."""
    from apscheduler.triggers.cron import CronTrigger

    CronTrigger = _once_per_wall_time(CronTrigger)  # noqa: N806 - the class APScheduler is given
    try:
        zone = parse_zone(settings.fetch_tz)
    except ValueError as exc:
        raise ConfigError(f"invalid fetch_tz: {exc}") from None
    fields = settings.fetch_cron.split()
    try:
        if len(fields) != 5:
            raise ValueError(f"expected 5 fields (minute hour day month weekday), got {len(fields)}")
        minute, hour, day, month, weekday = fields
        return CronTrigger(minute=minute, hour=hour, day=day, month=month, day_of_week=cron_weekdays(weekday), timezone=zone)
    except ValueError as exc:
        raise ConfigError(f"invalid fetch_cron {settings.fetch_cron!r}: {exc}", "e.g. fetch_cron = \"30 20 * * sun-thu\"") from None


def next_fire_times(trigger, after: datetime, count: int) -> list[datetime]:
    """The next `count` instants the trigger fires strictly after `after` (aware, in the trigger's zone)."""
    out: list[datetime] = []
    previous, probe = None, _just_after(after)
    while len(out) < count:
        fire = trigger.get_next_fire_time(previous, probe)
        if fire is None:
            break
        out.append(fire)
        previous, probe = fire, _just_after(fire)
    return out


def fetch_overdue(trigger, last_fetch: datetime | None, now: datetime) -> bool:
    """True when a scheduled fetch time passed since `last_fetch` (or nothing was ever fetched)."""
    if last_fetch is None:
        return True
    upcoming = next_fire_times(trigger, last_fetch, 1)
    return bool(upcoming) and upcoming[0] <= now


def fetch_due(engine, settings: Settings, now: datetime) -> bool:
    """Whether a run at `now` should fetch: a fetch_cron time has passed since the sources' last success.

    A source that failed is tried again at most every FETCH_RETRY_MINUTES, until it has failed ERROR_LIMIT
    times in a row (then `digest status --check` reports it and it waits for the schedule like the rest).
    """
    from .health import ERROR_LIMIT
    from .store.status import newest_fetch_at, oldest_success_at

    any_source, oldest = oldest_success_at(engine, error_limit=ERROR_LIMIT)
    trigger = fetch_trigger(settings)
    if not any_source or not fetch_overdue(trigger, oldest, now):
        return False
    last_try = newest_fetch_at(engine)
    return last_try is None or fetch_overdue(trigger, last_try, now) or now - last_try >= timedelta(minutes=FETCH_RETRY_MINUTES)


# --- the daemon ---------------------------------------------------------------------------------------


class Ticker:
    """What each scheduled tick runs: the job, with a lock held elsewhere logged and skipped, never fatal."""

    def __init__(self, job: Job, stop_event: threading.Event, clock: Callable[[], datetime]) -> None:
        self.job, self.stop_event, self.clock = job, stop_event, clock
        self.scheduler = None  # set by build_scheduler, for retrying a fetch that met the lock

    def __call__(self, fetch: bool) -> None:
        kind = "fetch" if fetch else "send"
        try:
            self._tick(fetch, kind)
        except Exception:  # noqa: BLE001 - a bug in one tick (its job, its clock, its own bookkeeping) must not stop the daemon
            log.exception("event=tick-crashed tick=%s", kind)

    def _tick(self, fetch: bool, kind: str) -> None:
        if self.stop_event.is_set():
            return
        now = self.clock()
        try:
            report = self.job(now=now, fetch=fetch, stop_event=self.stop_event)
        except LockedError:
            log_event(log, "tick-skipped", tick=kind, reason="another run holds the lock")
            if fetch and self.scheduler is not None and not self.stop_event.is_set():
                self.scheduler.add_job(self, "date", args=(True,), id="fetch-retry", replace_existing=True, run_date=now + timedelta(seconds=LOCKED_RETRY_SECONDS), misfire_grace_time=None)
            return
        except DigestError as exc:  # the server down, the database locked: the next tick tries again
            log_event(log, "tick-failed", logging.ERROR, tick=kind, error=str(exc))
            return
        if getattr(report, "error", None) is not None:  # the delivery stopped early: the next tick tries again
            log_event(log, "tick-failed", logging.ERROR, tick=kind, error=str(report.error))
            return
        fields = {k: getattr(report, k) for k in ("due", "sent", "skipped", "failed", "deferred") if hasattr(report, k)}
        if getattr(report, "fetch_error", None):
            fields["fetch_error"] = report.fetch_error
        log_event(log, "tick-done", logging.INFO if fetch or fields.get("due") or "fetch_error" in fields else logging.DEBUG, tick=kind, **fields)


def build_scheduler(settings: Settings, ticker: Ticker, now: datetime, *, tick_seconds: int = 60, fetch_now: bool = False, scheduler_cls=None):
    """A scheduler (not started) with the fetch and send jobs; `fetch_now` adds a catch-up fetch at `now`.

    The send check runs at `now` (a due-check at start) unless a catch-up fetch does: then it fetches first.
    """
    from apscheduler.executors.pool import ThreadPoolExecutor
    from apscheduler.schedulers.blocking import BlockingScheduler
    from apscheduler.triggers.interval import IntervalTrigger

    if tick_seconds < 1:
        raise ConfigError(f"the send check interval must be at least 1 second, not {tick_seconds}")
    scheduler = (scheduler_cls or BlockingScheduler)(
        timezone=timezone.utc,
        # One worker: a fetch and a send check queue behind each other instead of meeting at the lock.
        executors={"default": ThreadPoolExecutor(max_workers=1)},
        job_defaults={"coalesce": True, "max_instances": 1},
    )
    ticker.scheduler = scheduler
    logging.getLogger("apscheduler.scheduler").addFilter(_expected_skips)
    scheduler.add_job(ticker, fetch_trigger(settings), args=(True,), id="fetch", name="fetch sources, then send what is due",
                      coalesce=True, max_instances=1, misfire_grace_time=FETCH_GRACE_SECONDS)
    first_send = now + timedelta(seconds=tick_seconds) if fetch_now else now
    scheduler.add_job(ticker, IntervalTrigger(seconds=tick_seconds, timezone=timezone.utc), args=(False,), id="send", name="send what is due",
                      coalesce=True, max_instances=1, misfire_grace_time=max(tick_seconds, 30), next_run_time=first_send)
    if fetch_now:
        scheduler.add_job(ticker, "date", args=(True,), id="catch-up", name="catch up a missed fetch, then send", run_date=now, misfire_grace_time=None)
    return scheduler


def _expected_skips(record: logging.LogRecord) -> bool:
    """A tick that comes while the previous run still works is skipped by design (max_instances=1): not a warning."""
    return "maximum number of running instances reached" not in record.getMessage()


def serve(settings: Settings, job: Job, *, last_fetch: datetime | None, tick_seconds: int = 60, clock: Callable[[], datetime] | None = None) -> int:
    """Run the daemon until SIGTERM or SIGINT; the job in flight finishes its message first. Returns 0."""
    clock = clock or (lambda: datetime.now(timezone.utc))
    stop_event = threading.Event()
    ticker = Ticker(job, stop_event, clock)
    now = clock()
    trigger = fetch_trigger(settings)
    overdue = fetch_overdue(trigger, last_fetch, now)
    scheduler = build_scheduler(settings, ticker, now, tick_seconds=tick_seconds, fetch_now=overdue)

    def request_stop(signum: int, _frame: Any) -> None:
        if stop_event.is_set():
            return
        stop_event.set()  # run_job stops after the message in flight
        log_event(log, "stopping", signal=signal.Signals(signum).name)
        # shutdown(wait=True) joins the worker: not from inside a signal handler, which may hold scheduler locks.
        threading.Thread(target=_shutdown, args=(scheduler,), name="digest-shutdown").start()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    upcoming = next_fire_times(trigger, now, 1)
    log_event(log, "serving", fetch_cron=settings.fetch_cron, fetch_tz=settings.fetch_tz, tick_seconds=tick_seconds,
              next_fetch=upcoming[0].isoformat() if upcoming else "never", catch_up_fetch=overdue)
    try:
        if not stop_event.is_set():
            scheduler.start()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log_event(log, "stopped")
    return 0


def _shutdown(scheduler) -> None:
    import time

    from apscheduler.schedulers import SchedulerNotRunningError

    for _ in range(100):  # a signal that came just before start(): wait (at most 5 s) for it to begin
        try:
            scheduler.shutdown(wait=True)
            return
        except SchedulerNotRunningError:
            time.sleep(0.05)


def pipeline_job(engine, settings: Settings) -> Job:
    """The job the daemon runs: digest.pipeline.run_job, the same function as `digest run`."""
    from .pipeline.job import run_job

    def job(*, now: datetime, fetch: bool, stop_event: threading.Event):
        # A send tick also retries a fetch that failed at its scheduled time (see fetch_due).
        if not fetch:
            try:
                fetch = fetch_due(engine, settings, now)
            except Exception as exc:  # noqa: BLE001 - not knowing whether to fetch must not stop the send
                log.error("event=fetch-check-failed error=%s note=sending without fetching", exc if isinstance(exc, DigestError) else f"{type(exc).__name__}: {exc}",
                          exc_info=None if isinstance(exc, DigestError) else exc)
        return run_job(engine, settings, now, fetch=fetch, stop_event=stop_event)

    return job
