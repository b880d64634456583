"""The `digest serve` daemon: APScheduler 3.x around the one job that `digest run` also uses.

One interval job, the tick (every --tick-seconds), asks two questions and runs the job: "fetch now?" (fetch_due:
the fetch_cron time, a fetch missed while the daemon was down, the retry of a failed or locked-out fetch) and
"who is due?" (the planner's due_subscribers, asked inside the job). There is no other path to a fetch. The tick
shares the run lock with cron, the timer and a person at the terminal, so they never overlap. It must not fetch,
rank or send by itself: the job (digest.pipeline.job.run_job) does that; this module only decides when.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

from .config import Settings
from .editions import WEEKDAYS, parse_zone
from .errors import ConfigError, DigestError, LockedError
from .health import ERROR_LIMIT
from .log import log_event
from .pipeline.heartbeat import Heartbeat, handed_over
from .store.status import newest_fetch_at, oldest_success_at

log = logging.getLogger(__name__)

FETCH_RETRY_MINUTES = 10  # a failed fetch is tried again at most this often (cron's 15-minute runs each retry)
NEXT_TICK = "the next tick tries again; what is due stays due"  # what an operator reading a failed tick needs next
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


def fetch_decision(trigger, *, last_try: datetime | None, live: bool, oldest_success: datetime | None, now: datetime) -> bool:
    """Fetch now? The one rule, pure, over the fetched sources' state.

    `last_try`: the newest fetch of any enabled source; `live`: some source failed fewer than ERROR_LIMIT times
    in a row; `oldest_success`: the oldest last success among the live ones (None when one never succeeded).
    Yes when a fetch_cron time has passed since `last_try` (or nothing was ever fetched): the schedule, and the
    fetch missed while the daemon was down, for every source, broken ones included. Yes also when a live source
    has not succeeded since the last fetch_cron time and `last_try` is FETCH_RETRY_MINUTES old: the retry of a
    failed fetch. A fetch that never began (another run held the lock) moved nothing, so the next tick fetches.
    """
    if fetch_overdue(trigger, last_try, now):
        return True
    assert last_try is not None  # fetch_overdue(None) is True
    return live and fetch_overdue(trigger, oldest_success, now) and now - last_try >= timedelta(minutes=FETCH_RETRY_MINUTES)


def fetch_due(engine, settings: Settings, now: datetime) -> bool:
    """Whether a run at `now` should fetch: fetch_decision over the stored sources, for `digest run --fetch due`
    and every tick of the daemon. False when no enabled source is fetched at all (imported files never are)."""
    last_try = newest_fetch_at(engine)
    live, oldest = oldest_success_at(engine, error_limit=ERROR_LIMIT)
    if last_try is None and not live:  # no fetched source (a broken one has been tried, so last_try is set)
        return False
    return fetch_decision(fetch_trigger(settings), last_try=last_try, live=live, oldest_success=oldest, now=now)


# --- the daemon ---------------------------------------------------------------------------------------


class Ticker:
    """What each tick runs: "fetch now?" (`fetch_due(now)`), then the job, which sends whoever is due.

    Never fatal: a lock held elsewhere is logged and skipped (the next tick asks again), a failing job or
    decision is logged, and the next tick runs. With a `heartbeat`, each tick writes its start and its outcome
    (ok, or failed with the error it logged) to this host's daemon row, where `digest status --check` sees them.
    """

    def __init__(self, job: Job, stop_event: threading.Event, clock: Callable[[], datetime], fetch_due: Callable[[datetime], bool],
                 heartbeat: Heartbeat | None = None) -> None:
        self.job, self.stop_event, self.clock, self.fetch_due, self.heartbeat = job, stop_event, clock, fetch_due, heartbeat

    def __call__(self) -> None:
        try:
            self._tick()
        except Exception as exc:  # noqa: BLE001 - a bug in one tick (its job, its clock, its own bookkeeping) must not stop the daemon
            log_event(log, "tick-crashed", logging.ERROR, exc_info=exc)
            self._finished(exc)

    def _finished(self, error: BaseException | None = None) -> None:
        if self.heartbeat is None:
            return
        try:
            now = self.clock()
        except Exception:  # noqa: BLE001 - the tick crashed on its clock: the heartbeat says when by the wall clock
            now = datetime.now(timezone.utc)
        self.heartbeat.finished(now, error)

    def _tick(self) -> None:
        if self.stop_event.is_set():
            return
        now = self.clock()
        if self.heartbeat is not None:
            self.heartbeat.started(now)
        fetch = self._should_fetch(now)
        kind = "fetch" if fetch else "send"
        try:
            report = self.job(now=now, fetch=fetch, stop_event=self.stop_event)
        except LockedError:  # a fetch still due is still due at the next tick
            log_event(log, "tick-skipped", tick=kind, reason="another run holds the lock")
            return  # no outcome: the run that holds the lock writes its own
        except DigestError as exc:  # the server down, the database locked: the next tick tries again
            log_event(log, "tick-failed", logging.ERROR, tick=kind, error=str(exc), note=NEXT_TICK)
            self._finished(exc)
            return
        if getattr(report, "error", None) is not None:  # the delivery stopped early: the next tick tries again
            log_event(log, "tick-failed", logging.ERROR, tick=kind, error=str(report.error), note=NEXT_TICK)
            self._finished(report.error)
            return
        if self.heartbeat is None or handed_over(report):
            self._finished()
        else:  # it handed nothing to the mail server: the daemon lives, and the last outcome stands (Heartbeat.idle)
            self.heartbeat.idle(now)
        fields = {k: getattr(report, k) for k in ("due", "sent", "skipped", "failed", "deferred") if hasattr(report, k)}
        if getattr(report, "fetch_error", None):
            fields["fetch_error"] = report.fetch_error
        log_event(log, "tick-done", logging.INFO if fetch or fields.get("due") or "fetch_error" in fields else logging.DEBUG, tick=kind, **fields)

    def _should_fetch(self, now: datetime) -> bool:
        try:
            return self.fetch_due(now)
        except Exception as exc:  # noqa: BLE001 - not knowing whether to fetch must not stop the send
            # A DigestError says what is wrong; anything else (a row it cannot read, a bug) keeps its traceback.
            log_event(log, "fetch-check-failed", logging.ERROR, error=str(exc) if isinstance(exc, DigestError) else f"{type(exc).__name__}: {exc}",
                      note="sending without fetching", exc_info=exc)
            return False


def build_scheduler(ticker: Ticker, now: datetime, *, tick_seconds: int = 60, scheduler_cls=None, beat: Callable[[], None] | None = None):
    """A scheduler (not started) with the one job: the tick, every `tick_seconds`, first at `now` (so a fetch
    missed while the daemon was down, and whatever is due, are done at start). With `beat`, a second job calls it
    every `tick_seconds` in a thread of its own: the daemon's sign of life while a long tick fetches or sends (it
    neither fetches nor sends)."""
    from apscheduler.executors.pool import ThreadPoolExecutor
    from apscheduler.schedulers.blocking import BlockingScheduler
    from apscheduler.triggers.interval import IntervalTrigger

    if tick_seconds < 1:
        raise ConfigError(f"the tick interval must be at least 1 second, not {tick_seconds}")
    scheduler = _steady(scheduler_cls or BlockingScheduler, timedelta(seconds=tick_seconds))(
        timezone=timezone.utc,
        executors={"default": ThreadPoolExecutor(max_workers=1), "beat": ThreadPoolExecutor(max_workers=1)},  # one tick at a time
        job_defaults={"coalesce": True, "max_instances": 1},
    )
    logging.getLogger("apscheduler.scheduler").addFilter(_expected_skips)
    scheduler.add_job(ticker, IntervalTrigger(seconds=tick_seconds, timezone=timezone.utc), id="tick", name="fetch if due, then send what is due",
                      coalesce=True, max_instances=1, misfire_grace_time=max(tick_seconds, 30), next_run_time=now)
    if beat is not None:
        scheduler.add_job(beat, IntervalTrigger(seconds=tick_seconds, timezone=timezone.utc), id="beat", name="the daemon's heartbeat",
                          executor="beat", coalesce=True, max_instances=1, misfire_grace_time=max(tick_seconds, 30))
    return scheduler


def _steady(scheduler_cls, interval: timedelta):
    class SteadyScheduler(scheduler_cls):
        """A scheduler that ticks on when the wall clock steps back (NTP correcting a clock that ran ahead).

        APScheduler 3.x keeps each job's next run as a wall-clock instant and sleeps until it: after the clock steps
        back an hour it would sleep an hour and more, ticking never and logging nothing. A next run further ahead
        than one interval can only come from such a step, so it is brought to now (the clock says nothing is
        sent twice: the ledger does)."""

        def _process_jobs(self):
            now = datetime.now(self.timezone)
            for job in self.get_jobs():
                if job.next_run_time is not None and job.next_run_time - now > interval:
                    log_event(log, "clock-stepped-back", logging.WARNING, seconds=round((job.next_run_time - now - interval).total_seconds()),
                              note="ticking now, and every interval from now on")
                    job.modify(next_run_time=now)
            return super()._process_jobs()

    return SteadyScheduler


def _expected_skips(record: logging.LogRecord) -> bool:
    """A tick that comes while the previous run still works is skipped by design (max_instances=1): not a warning."""
    return "maximum number of running instances reached" not in record.getMessage()


def serve(settings: Settings, job: Job, fetch_due: Callable[[datetime], bool], *, tick_seconds: int = 60,
          clock: Callable[[], datetime] | None = None, heartbeat: Heartbeat | None = None) -> int:
    """Run the daemon until SIGTERM or SIGINT; the job in flight finishes its message first (a fetch in flight is
    given up at once: digest.ingest.fetch_sources). Returns 0. With a `heartbeat`, every tick writes its outcome,
    a beat every tick says the daemon lives (a long tick included), and a clean stop is written as one."""
    clock = clock or (lambda: datetime.now(timezone.utc))
    stop_event = threading.Event()
    now = clock()
    trigger = fetch_trigger(settings)
    beat = (lambda: heartbeat.alive(clock())) if heartbeat is not None else None
    scheduler = build_scheduler(Ticker(job, stop_event, clock, fetch_due, heartbeat), now, tick_seconds=tick_seconds, beat=beat)

    def request_stop(signum: int, _frame: Any) -> None:
        if stop_event.is_set():
            return
        stop_event.set()  # run_job stops after the message in flight, or gives up the source it is fetching
        log_event(log, "stopping", signal=signal.Signals(signum).name)
        # shutdown(wait=True) joins the worker: not from inside a signal handler, which may hold scheduler locks.
        threading.Thread(target=_shutdown, args=(scheduler,), name="digest-shutdown").start()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    upcoming = next_fire_times(trigger, now, 1)
    log_event(log, "serving", fetch_cron=settings.fetch_cron, fetch_tz=settings.fetch_tz, tick_seconds=tick_seconds,
              next_fetch=upcoming[0].isoformat() if upcoming else "never")
    try:
        if not stop_event.is_set():
            scheduler.start()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if heartbeat is not None:  # stopped, not crashed: `digest status --check` tells the two apart
        heartbeat.stopped(clock())
    log_event(log, "stopped")
    return 0


def _shutdown(scheduler) -> None:
    from apscheduler.schedulers import SchedulerNotRunningError

    for _ in range(100):  # a signal that came just before start(): wait (at most 5 s) for it to begin
        try:
            scheduler.shutdown(wait=True)
            return
        except SchedulerNotRunningError:
            time.sleep(0.05)


def pipeline_job(engine, settings: Settings) -> Job:
    """The job the daemon runs: digest.pipeline.job.run_job, the same function as `digest run`."""
    from .pipeline.job import run_job

    def job(*, now: datetime, fetch: bool, stop_event: threading.Event):
        ask: bool | Callable[[], bool] = fetch
        if fetch and engine.dialect.name == "postgresql":
            # Every host's daemon decides to fetch at the same fetch time: the first to take the fetch lock fetches,
            # the others then find the fetch done (the sources' recorded fetch times) and only send.
            ask = lambda: fetch_due(engine, settings, now)  # noqa: E731
        return run_job(engine, settings, now, fetch=ask, stop_event=stop_event)

    return job

