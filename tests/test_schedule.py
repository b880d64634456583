"""The scheduler from fixed clocks (cron fire times across DST, the one "fetch now?" rule, the one tick job, ticks
with a lock held elsewhere, a catch-up after downtime through the real pipeline), and as real processes: two `digest run` at once send
once, and `digest serve` delivers to a local SMTP server and stops cleanly on SIGTERM."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from apscheduler.executors.debug import DebugExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from digest.config import load_settings
from digest.errors import ConfigError, LockedError, StoreError
from digest.schedule import (
    FETCH_RETRY_MINUTES,
    Ticker,
    build_scheduler,
    cron_weekdays,
    fetch_decision,
    fetch_due,
    fetch_overdue,
    fetch_trigger,
    next_fire_times,
    pipeline_job,
)

sys.path.insert(0, str(Path(__file__).parent))
from smtp_server import start_smtp_server  # noqa: E402

UTC = timezone.utc
NY = "America/New_York"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def settings_with(home: Path, **values):
    return load_settings(home, env={}, overrides=values)


# --- when to fetch -----------------------------------------------------------------------------------


@pytest.mark.parametrize("field, expected", [
    ("sun-thu", "mon,tue,wed,thu,sun"),  # APScheduler 3.x itself rejects this wrapping range
    ("1-5", "mon,tue,wed,thu,fri"),  # cron numbers: 1 = Monday (APScheduler 3.x would read Tuesday)
    ("0", "sun"),
    ("7", "sun"),
    ("fri-mon", "mon,fri,sat,sun"),
    ("*/2", "tue,thu,sat,sun"),  # cron: 0,2,4,6
    ("*", "*"),
    ("MON,Wed", "mon,wed"),
], ids=["sun-thu", "1-5", "0", "7", "fri-mon", "step", "star", "names"])
def test_cron_weekdays_reads_crontab_semantics(field, expected):
    assert cron_weekdays(field) == expected


def test_fetch_trigger_default_follows_arxiv_across_spring_forward(home):
    trigger = fetch_trigger(settings_with(home))
    fires = next_fire_times(trigger, utc(2025, 3, 6, 12, 0), 4)  # from Thursday 6 March 2025
    # Thu 20:30 EST, Sun 20:30 EDT (clocks went forward that morning), Mon and Tue 20:30 EDT: no Fri/Sat.
    assert [f.astimezone(UTC) for f in fires] == [utc(2025, 3, 7, 1, 30), utc(2025, 3, 10, 0, 30), utc(2025, 3, 11, 0, 30), utc(2025, 3, 12, 0, 30)]
    assert [f.strftime("%a %H:%M %Z") for f in fires] == ["Thu 20:30 EST", "Sun 20:30 EDT", "Mon 20:30 EDT", "Tue 20:30 EDT"]


def test_fetch_trigger_across_fall_back_and_in_the_repeated_hour(home):
    fires = next_fire_times(fetch_trigger(settings_with(home)), utc(2025, 10, 30, 12, 0), 3)
    assert [f.astimezone(UTC) for f in fires] == [utc(2025, 10, 31, 0, 30), utc(2025, 11, 3, 1, 30), utc(2025, 11, 4, 1, 30)]
    # A fetch inside the hour that happens twice (01:30 on 2 November in New York) runs once.
    trigger = fetch_trigger(settings_with(home, fetch_cron="30 1 * * *"))
    fires = next_fire_times(trigger, utc(2025, 11, 1, 12, 0), 3)
    assert [f.astimezone(UTC) for f in fires] == [utc(2025, 11, 2, 5, 30), utc(2025, 11, 3, 6, 30), utc(2025, 11, 4, 6, 30)]


def test_fetch_trigger_in_another_zone(home):
    trigger = fetch_trigger(settings_with(home, fetch_cron="0 6 * * 1-5", fetch_tz="Asia/Kolkata"))
    assert isinstance(trigger, CronTrigger)
    fires = next_fire_times(trigger, utc(2025, 6, 13, 0, 0), 2)  # Friday 05:30 IST
    assert [f.astimezone(UTC) for f in fires] == [utc(2025, 6, 13, 0, 30), utc(2025, 6, 16, 0, 30)]


@pytest.mark.parametrize("values, message", [
    ({"fetch_cron": "30 20 * *"}, "expected 5 fields"),
    ({"fetch_cron": "61 20 * * *"}, "invalid fetch_cron"),
    ({"fetch_cron": "30 20 * * funday"}, "unknown weekday"),
    ({"fetch_tz": "Mars/Olympus"}, "invalid fetch_tz"),
], ids=["four-fields", "minute-61", "funday", "zone"])
def test_fetch_trigger_rejects_bad_settings(home, values, message):
    with pytest.raises(ConfigError, match=message):
        fetch_trigger(settings_with(home, **values))


def test_fetch_overdue_after_a_missed_fire_time(home):
    trigger = fetch_trigger(settings_with(home))
    sunday_fetch = utc(2025, 6, 9, 0, 30)  # Sun 20:30 EDT, exactly on the fire time
    assert not fetch_overdue(trigger, sunday_fetch, utc(2025, 6, 10, 0, 29))  # Monday's fetch not due yet
    assert fetch_overdue(trigger, sunday_fetch, utc(2025, 6, 10, 0, 30))
    assert not fetch_overdue(trigger, utc(2025, 6, 13, 0, 31), utc(2025, 6, 15, 12, 0))  # Thu's fetch done; none Fri/Sat
    assert fetch_overdue(trigger, None, utc(2025, 6, 15, 12, 0))  # never fetched


@pytest.mark.parametrize("last_try, live, oldest_success, now, fetch", [
    (None, True, None, utc(2025, 6, 15, 12, 0), True),  # never fetched
    (utc(2025, 6, 9, 0, 31), True, utc(2025, 6, 9, 0, 31), utc(2025, 6, 9, 12, 0), False),  # fetched at Sunday's time
    (utc(2025, 6, 9, 0, 31), True, utc(2025, 6, 9, 0, 31), utc(2025, 6, 10, 0, 30), True),  # Monday's time has come
    (utc(2025, 6, 12, 0, 31), True, utc(2025, 6, 12, 0, 31), utc(2025, 6, 16, 9, 0), True),  # down since Wednesday: catch up
    (utc(2025, 6, 12, 0, 31), False, None, utc(2025, 6, 16, 9, 0), True),  # broken sources too wait for the schedule, not less
    (utc(2025, 6, 16, 0, 31), True, utc(2025, 6, 12, 0, 31), utc(2025, 6, 16, 0, 31) + timedelta(minutes=FETCH_RETRY_MINUTES), True),  # retry
    (utc(2025, 6, 16, 0, 31), True, utc(2025, 6, 12, 0, 31), utc(2025, 6, 16, 0, 31) + timedelta(minutes=FETCH_RETRY_MINUTES - 1), False),  # too soon
    (utc(2025, 6, 16, 0, 31), False, None, utc(2025, 6, 16, 12, 0), False),  # broken: no retry
], ids=["never", "done", "scheduled", "catch-up", "broken-scheduled", "retry", "retry-too-soon", "broken-no-retry"])
def test_fetch_decision_covers_schedule_catch_up_and_retry(home, last_try, live, oldest_success, now, fetch):
    trigger = fetch_trigger(settings_with(home))
    assert fetch_decision(trigger, last_try=last_try, live=live, oldest_success=oldest_success, now=now) is fetch


# --- the scheduler's one job ---------------------------------------------------------------------------


def never(now):
    return False


def test_build_scheduler_has_one_tick_that_coalesces_one_instance(home):
    now = utc(2025, 6, 15, 12, 0)
    ticker = Ticker(lambda **kw: None, threading.Event(), lambda: now, never)
    scheduler = build_scheduler(ticker, now, tick_seconds=30, scheduler_cls=BackgroundScheduler)
    jobs = scheduler.get_jobs()
    assert [job.id for job in jobs] == ["tick"]  # no second path to a fetch: no cron job, no catch-up or retry job
    tick = jobs[0]
    assert tick.coalesce is True and tick.max_instances == 1 and tick.args == ()
    assert isinstance(tick.trigger, IntervalTrigger) and tick.trigger.interval == timedelta(seconds=30)
    assert tick.misfire_grace_time == 30
    assert tick.next_run_time == now  # the first tick at start: a missed fetch and whatever is due, at once
    assert scheduler._executors["default"]._pool._max_workers == 1  # one tick at a time


class _NoLoop(BlockingScheduler):
    """A BlockingScheduler whose start() returns at once: the test drives its rounds (_process_jobs) itself."""

    def _main_loop(self):
        pass


def test_build_scheduler_keeps_ticking_when_the_clock_steps_back(home):
    # NTP stepping a clock that ran an hour ahead back to the right time: APScheduler 3.x keeps the tick's next run
    # at the old (wall-clock) instant and would wait out the whole hour, ticking never, logging nothing.
    import time_machine

    start = utc(2025, 6, 15, 12, 0)
    ticks: list[datetime] = []
    with time_machine.travel(start, tick=False):
        scheduler = build_scheduler(lambda: ticks.append(datetime.now(UTC)), start, tick_seconds=60, scheduler_cls=_NoLoop)
        scheduler._executors["default"] = DebugExecutor()  # the tick runs in the round that finds it due
        scheduler.start()
        assert scheduler._process_jobs() == pytest.approx(60) and ticks == [start]  # the first tick, at start
    with time_machine.travel(start - timedelta(hours=1), tick=False):  # the clock steps back an hour
        wait = scheduler._process_jobs()
    assert wait is not None and wait <= 60  # not the hour (and a minute) until the old next run
    with time_machine.travel(start - timedelta(hours=1) + timedelta(seconds=wait), tick=False):
        scheduler._process_jobs()
    back = start - timedelta(hours=1)
    assert ticks == [start, back, back + timedelta(seconds=60)]  # a tick at once, then one every interval from the new time
    scheduler.shutdown(wait=False)


def test_build_scheduler_rejects_a_zero_tick(home):
    with pytest.raises(ConfigError, match="at least 1 second"):
        build_scheduler(Ticker(lambda **kw: None, threading.Event(), lambda: None, never), utc(2025, 6, 15), tick_seconds=0, scheduler_cls=BackgroundScheduler)


# --- ticks -----------------------------------------------------------------------------------------------


class FakeReport:
    due, sent, skipped, failed, deferred = 2, 2, 0, 0, 0


def add_fetched_source(engine, last_fetch_at: datetime) -> None:
    from digest.models import Source
    from digest.store import session_scope

    with session_scope(engine) as session:
        session.add(Source(name="cs.SD", kind="arxiv-rss", url="https://example.org/cs.SD", created_at=last_fetch_at,
                           last_fetch_at=last_fetch_at, last_success_at=last_fetch_at))


def test_ticker_skips_a_locked_tick_and_the_next_tick_fetches(home, sqlite_engine, caplog):
    settings = settings_with(home)
    add_fetched_source(sqlite_engine, utc(2025, 6, 12, 0, 31))  # Wednesday's fetch; Thursday's and Sunday's missed
    now = [utc(2025, 6, 15, 12, 0)]
    calls = []

    def job(**kw):
        calls.append(kw)
        if len(calls) == 1:
            raise LockedError("another digest run holds the lock")
        return FakeReport()

    ticker = Ticker(job, threading.Event(), lambda: now[0], lambda at: fetch_due(sqlite_engine, settings, at))
    with caplog.at_level(logging.INFO, logger="digest.schedule"):
        ticker()  # the fetch is due, but another run holds the lock: skipped
        now[0] += timedelta(seconds=60)
        ticker()  # the next tick asks again: still due, so it fetches
    assert [(c["now"], c["fetch"]) for c in calls] == [(utc(2025, 6, 15, 12, 0), True), (utc(2025, 6, 15, 12, 1), True)]
    assert [r.digest_fields["tick"] for r in caplog.records if getattr(r, "digest_event", "") == "tick-skipped"] == ["fetch"]


def test_ticker_survives_errors_and_does_nothing_once_stopping(caplog):
    stop = threading.Event()
    results = iter([StoreError("the database is locked"), RuntimeError("bug"), FakeReport()])
    decisions = iter([False, False, True])
    calls = []

    def job(**kw):
        calls.append(kw)
        result = next(results)
        if isinstance(result, Exception):
            raise result
        return result

    ticker = Ticker(job, stop, lambda: utc(2025, 6, 15), lambda now: next(decisions))
    with caplog.at_level(logging.DEBUG, logger="digest.schedule"):
        ticker()
        ticker()
        ticker()
        stop.set()
        ticker()
    assert len(calls) == 3 and calls[0]["stop_event"] is stop
    assert [c["fetch"] for c in calls] == [False, False, True]
    events = [r.digest_event for r in caplog.records]
    assert events == ["tick-failed", "tick-crashed", "tick-done"]
    assert caplog.records[0].digest_fields["note"] == "the next tick tries again; what is due stays due"  # the log says what happens next
    assert caplog.records[-1].digest_fields == {"tick": "fetch", "due": 2, "sent": 2, "skipped": 0, "failed": 0, "deferred": 0}


# --- through the real pipeline ------------------------------------------------------------------------


def prepare_home(home: Path, subscribers: list[tuple[str, str, str]], now: datetime, extra_config: str = "") -> None:
    """A DIGEST_HOME with a config, the bundled sample papers and `subscribers` (email, send_at, tz)."""
    from digest.ingest import SAMPLE_FILES, import_file
    from digest.store import init_db, open_engine, session_scope
    from digest.store.subscribers import SubscriberInput, add_subscriber

    (home / "digest.toml").write_text('secret_key = "test-secret-key-test-secret-key"\nfrom_address = "digest@example.org"\n'
                                      f"skip_empty = false\n{extra_config}", encoding="utf-8")
    engine = open_engine(f"sqlite:///{home / 'digest.db'}")
    init_db(engine)
    import_file(engine, SAMPLE_FILES[0], now)
    with session_scope(engine) as session:
        for address, send_at, tz in subscribers:
            add_subscriber(session, address, SubscriberInput(interests=["language models"], send_at=send_at, tz=tz), now=now)
    engine.dispose()


def daemon_ticker(engine, settings, clock) -> Ticker:
    """The daemon's tick over the real pipeline, as `digest serve` builds it."""
    return Ticker(pipeline_job(engine, settings), threading.Event(), clock, lambda now: fetch_due(engine, settings, now))


def ledger_states(home: Path) -> list[tuple[str, str]]:
    import sqlalchemy as sa

    engine = sa.create_engine(f"sqlite:///{home / 'digest.db'}")
    with engine.connect() as conn:
        rows = [(state, edition) for state, edition in conn.execute(sa.text("SELECT state, edition FROM delivery ORDER BY id"))]
    engine.dispose()
    return rows


def test_ticker_catch_up_after_two_days_down_sends_today_once(home):
    from digest.store import open_engine

    down_since = utc(2025, 6, 12, 8, 0)  # the daemon died after the 12th's edition
    prepare_home(home, [("ada@example.org", "07:00", "Asia/Kolkata")], down_since)
    settings = load_settings(home, env={})
    engine = open_engine(settings.database_url)
    clock = [utc(2025, 6, 12, 1, 30)]
    ticker = daemon_ticker(engine, settings, lambda: clock[0])
    ticker()  # the 12th's edition, at 07:00 IST
    assert ledger_states(home) == [("sent", "2025-06-12")]
    # Back on the 15th at 06:00 IST (00:30 UTC): before Ada's send time, nothing is due, not even the missed days.
    for minute in range(0, 120):  # ticks every minute from 06:00 to 07:59 IST
        clock[0] = utc(2025, 6, 15, 0, 30) + timedelta(minutes=minute)
        ticker()
    engine.dispose()
    assert ledger_states(home) == [("sent", "2025-06-12"), ("sent", "2025-06-15")]
    assert len(list(Path(settings.outbox_dir).glob("*.eml"))) == 2


# --- real processes ----------------------------------------------------------------------------------


def digest_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    env.update(DIGEST_HOME=str(home), **extra)
    return env


def digest_command() -> list[str]:
    return [sys.executable, "-c", "from digest.cli import main; main()"]


def test_two_runs_started_together_send_once(home):
    addresses = [f"reader{i}@example.org" for i in range(4)]
    prepare_home(home, [(a, "00:00", "UTC") for a in addresses], datetime.now(UTC) - timedelta(minutes=5))
    procs = [subprocess.Popen([*digest_command(), "run"], env=digest_env(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=120) for p in procs]
    codes = [p.returncode for p in procs]
    emails = sorted((home / "outbox").glob("*.eml"))
    assert len(emails) == len(addresses), outputs
    assert sorted(state for state, _ in ledger_states(home)) == ["sent"] * len(addresses)
    # One run sent everything; the other found the lock taken (exit 75) or nothing left to do (exit 0).
    sent_lines = [out for out, _ in outputs if f"sent {len(addresses)}," in out]
    assert len(sent_lines) == 1, outputs
    for code, (out, err) in zip(codes, outputs):
        assert code == 0 or (code == 75 and "another digest run holds the lock" in out), (code, out, err)


def wait_until(condition, timeout: float = 60.0) -> None:
    """Poll `condition` until it holds (the timeout only ends a hung test; nothing asserts on speed)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("gave up waiting")
        time.sleep(0.05)


def start_daemon(home: Path, env: dict, log_path: Path) -> subprocess.Popen:
    with open(log_path, "ab") as log:
        return subprocess.Popen([*digest_command(), "serve", "--tick-seconds", "1"], env=env, stdout=log, stderr=log)


@contextlib.contextmanager
def daemon_running(home: Path, env: dict, log_path: Path) -> Iterator[subprocess.Popen]:
    """`digest serve` for the block, killed after it if the block did not stop it (a failed test never leaves one)."""
    daemon = start_daemon(home, env, log_path)
    try:
        yield daemon
    finally:
        if daemon.poll() is None:
            daemon.kill()


def test_serve_delivers_over_smtp_and_stops_cleanly_on_sigterm(home, tmp_path):
    addresses = [f"reader{i}@example.org" for i in range(6)]
    prepare_home(home, [(a, "00:00", "UTC") for a in addresses], datetime.now(UTC) - timedelta(minutes=5))
    log_path = tmp_path / "serve.log"
    with start_smtp_server() as server:
        # One SMTP connection: with several, all six are on the wire before SIGTERM and the first round has nothing left.
        env = digest_env(home, DIGEST_SMTP_HOST=server.host, DIGEST_SMTP_PORT=str(server.port), DIGEST_SMTP_SECURITY="none",
                         DIGEST_SMTP_CONNECTIONS="1")
        server.data_delay = 0.3  # slow enough that SIGTERM arrives with messages still to send
        with daemon_running(home, env, log_path) as daemon:
            wait_until(lambda: len(server.messages) >= 1 or daemon.poll() is not None)
            daemon.send_signal(signal.SIGTERM)
            code = daemon.wait(timeout=60)
        log = log_path.read_text()
        assert code == 0, log
        assert "event=serving" in log and "event=stopping" in log and "signal=SIGTERM" in log and "event=stopped" in log
        states = [state for state, _ in ledger_states(home)]
        # Every message the server accepted is recorded 'sent'; none is left 'sending' (mid-flight).
        assert states.count("sent") == len(server.messages) and "sending" not in states
        first_round = len(server.messages)

        # Started again, it checks what is due at once and sends the rest: each reader exactly once.
        server.data_delay = 0
        with daemon_running(home, env, log_path) as daemon:
            wait_until(lambda: len(server.messages) >= len(addresses) or daemon.poll() is not None)
            wait_until(lambda: ledger_states(home).count(("sent", datetime.now(UTC).date().isoformat())) >= len(addresses) or daemon.poll() is not None)
            # SIGTERM before the daemon is serving would meet Python's default handler, not the daemon's.
            wait_until(lambda: log_path.read_text().count("event=serving") >= 2 or daemon.poll() is not None)
            daemon.send_signal(signal.SIGTERM)
            code = daemon.wait(timeout=60)
    assert code == 0, log_path.read_text()
    assert sorted(server.recipients()) == sorted(addresses), f"first round: {first_round}"
    assert "test-secret-key" not in log_path.read_text()


def test_serve_logs_a_failed_source_at_warning(home, tmp_path, feed_server):
    """Alerting on a log's level must see a source that failed: its event=fetched line is a warning (it was info,
    like a source that worked); same event and fields."""
    from digest.store import open_engine, session_scope
    from digest.store.sources import ensure_source

    now = datetime.now(UTC)
    prepare_home(home, [], now - timedelta(minutes=5))
    engine = open_engine(f"sqlite:///{home / 'digest.db'}")
    with session_scope(engine) as session:
        ensure_source(session, "good", "arxiv-rss", feed_server.url("files/real/arxiv-rss/rss-cs.SD-2026-06-12.xml"), now)
        ensure_source(session, "broken", "feed", feed_server.url("status/404"), now)
    engine.dispose()
    log_path = tmp_path / "serve.log"
    with daemon_running(home, digest_env(home, DIGEST_FETCH_TIMEOUT="5"), log_path) as daemon:
        wait_until(lambda: log_path.read_text().count("event=fetched") >= 2 or daemon.poll() is not None)
        wait_until(lambda: "event=serving" in log_path.read_text() or daemon.poll() is not None)
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(timeout=60)
    log = log_path.read_text()
    assert code == 0, log
    fetched = {line.split(" source=")[1].split()[0]: line.split(" ", 1)[1] for line in log.splitlines() if " event=fetched " in line}
    assert fetched["broken"].startswith("level=warning logger=digest.ingest event=fetched source=broken status=error new=0 updated=0 error=")
    assert "HTTP 404" in fetched["broken"]
    assert fetched["good"] == "level=info logger=digest.ingest event=fetched source=good status=new new=23 updated=0"  # no error=None


# --- a tick never dies --------------------------------------------------------------------------------

READ_ONLY_SOURCE = "CREATE TRIGGER source_read_only BEFORE UPDATE ON source BEGIN SELECT RAISE(ABORT, 'source rows are read-only today'); END"


def add_feed_source(home: Path, url: str, now: datetime) -> None:
    from digest.store import open_engine, session_scope
    from digest.store.sources import ensure_source

    engine = open_engine(f"sqlite:///{home / 'digest.db'}")
    with session_scope(engine) as session:
        ensure_source(session, "cs.SD", "arxiv-rss", url, now)
    engine.dispose()


def execute(home: Path, sql: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(f"sqlite:///{home / 'digest.db'}")
    with engine.begin() as conn:
        conn.execute(sa.text(sql))
    engine.dispose()


def source_state(home: Path) -> tuple:
    import sqlalchemy as sa

    engine = sa.create_engine(f"sqlite:///{home / 'digest.db'}")
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT last_success_at, last_fetch_count FROM source WHERE name = 'cs.SD'")).one()
    engine.dispose()
    return tuple(row)


def test_ticker_sends_while_a_source_cannot_be_stored_then_fetches_once_it_can(home, feed_server, caplog):
    from digest.store import open_engine

    day = utc(2025, 6, 16, 7, 1)
    prepare_home(home, [("ada@example.org", "07:00", "UTC")], day - timedelta(hours=2))
    add_feed_source(home, feed_server.url("files/real/arxiv-rss/rss-cs.SD-2026-06-12.xml"), day - timedelta(hours=2))
    execute(home, READ_ONLY_SOURCE)  # storing what the source brought fails, whatever the fetch does about it
    settings = load_settings(home, env={})
    engine = open_engine(settings.database_url)
    clock = [day]
    ticker = daemon_ticker(engine, settings, lambda: clock[0])
    with caplog.at_level(logging.INFO):
        ticker()  # never fetched: the tick fetches first, and the fetch fails
    assert ledger_states(home) == [("sent", "2025-06-16")]  # the day's email went out all the same
    assert len(list(Path(settings.outbox_dir).glob("*.eml"))) == 1
    failed = [r for r in caplog.records if getattr(r, "digest_event", "") == "fetch-failed"]
    assert len(failed) == 1 and "source rows are read-only today" in failed[0].digest_fields["error"]
    done = [r for r in caplog.records if getattr(r, "digest_event", "") == "tick-done"]
    assert done[-1].digest_fields["sent"] == 1 and "read-only" in done[-1].digest_fields["fetch_error"]
    execute(home, "DROP TRIGGER source_read_only")
    clock[0] = day + timedelta(minutes=1)
    ticker()  # the next tick fetches again, and now it is stored
    engine.dispose()
    assert source_state(home)[0] is not None and source_state(home)[1] > 0


def test_ticker_sends_when_deciding_whether_to_fetch_raises(home, caplog):
    from digest.store import open_engine

    day = utc(2025, 6, 16, 7, 1)
    prepare_home(home, [("ada@example.org", "07:00", "UTC")], day - timedelta(hours=2))
    add_feed_source(home, "http://127.0.0.1:9/never-fetched.xml", day - timedelta(hours=2))
    execute(home, "UPDATE source SET last_success_at = 'not a date'")  # a row fetch_due cannot read
    settings = load_settings(home, env={})
    engine = open_engine(settings.database_url)
    ticker = daemon_ticker(engine, settings, lambda: day)
    with caplog.at_level(logging.INFO):
        ticker()
    engine.dispose()
    assert ledger_states(home) == [("sent", "2025-06-16")]
    check = [r for r in caplog.records if getattr(r, "digest_event", "") == "fetch-check-failed"]
    assert len(check) == 1 and check[0].exc_info is not None  # an unexpected error: logged with its traceback


def test_ticker_survives_its_own_clock_failing_and_logs_the_traceback(home, capsys):
    from digest.log import configure_logging_lazily, enable_event_logging

    settings = settings_with(home, log_level="info")  # info, not debug: the traceback is still there
    configure_logging_lazily(lambda: settings)
    enable_event_logging()
    instants = iter([OverflowError("the clock broke"), utc(2025, 6, 15)])
    calls = []

    def clock():
        value = next(instants)
        if isinstance(value, Exception):
            raise value
        return value

    ticker = Ticker(lambda **kw: calls.append(kw) or FakeReport(), threading.Event(), clock, never)
    ticker()
    ticker()
    err = capsys.readouterr().err
    assert len(calls) == 1 and calls[0]["now"] == utc(2025, 6, 15)
    crashed = next(line for line in err.splitlines() if "event=tick-crashed" in line)
    assert "error=\"OverflowError: the clock broke\"" in crashed and "traceback=\"Traceback (most recent call last):" in crashed


def test_serve_keeps_ticking_through_failing_fetches_and_recovers(home, tmp_path, feed_server):
    prepare_home(home, [("ada@example.org", "00:00", "UTC"), ("bob@example.org", "00:00", "UTC")], datetime.now(UTC) - timedelta(minutes=5))
    add_feed_source(home, feed_server.url("files/real/arxiv-rss/rss-cs.SD-2026-06-12.xml"), datetime.now(UTC) - timedelta(minutes=5))
    execute(home, READ_ONLY_SOURCE)
    log_path = tmp_path / "serve.log"
    with daemon_running(home, digest_env(home), log_path) as daemon:
        # The first ticks: every fetch fails (at start, then on each 1-second send tick); the emails go out anyway.
        wait_until(lambda: log_path.read_text().count("event=fetch-failed") >= 3 or daemon.poll() is not None)
        assert daemon.poll() is None, log_path.read_text()
        wait_until(lambda: len(list((home / "outbox").glob("*.eml"))) == 2 or daemon.poll() is not None)
        assert source_state(home)[0] is None
        execute(home, "DROP TRIGGER source_read_only")
        wait_until(lambda: source_state(home)[0] is not None or daemon.poll() is not None)  # a later tick fetches and stores
        assert daemon.poll() is None, log_path.read_text()
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(timeout=60)
    log = log_path.read_text()
    assert code == 0, log
    assert "source rows are read-only today" in log and "event=stopped" in log
    assert sorted(state for state, _ in ledger_states(home)) == ["sent", "sent"]
    assert source_state(home)[1] > 0


def add_sources(home: Path, urls: dict[str, str], now: datetime) -> None:
    from digest.store import open_engine, session_scope
    from digest.store.sources import ensure_source

    engine = open_engine(f"sqlite:///{home / 'digest.db'}")
    with session_scope(engine) as session:
        for name, url in urls.items():
            ensure_source(session, name, "feed", url, now)
    engine.dispose()


def fetched_sources(home: Path) -> list[tuple]:
    import sqlalchemy as sa

    engine = sa.create_engine(f"sqlite:///{home / 'digest.db'}")
    with engine.connect() as conn:
        rows = [tuple(row) for row in conn.execute(sa.text("SELECT name, last_fetch_at, last_success_at, consecutive_errors FROM source WHERE kind = 'feed' ORDER BY name"))]
    engine.dispose()
    return rows


def test_fetch_sources_gives_up_a_slow_source_at_once_on_a_stop_request(home, feed_server, caplog):
    """A stop request in the middle of a source's request ends the fetch then, not when the server answers (or at
    fetch_deadline): nothing of that source is recorded, and the sources after it are not fetched."""
    from digest.ingest import fetch_sources
    from digest.store import open_engine

    now = datetime.now(UTC)
    prepare_home(home, [], now - timedelta(minutes=5))
    add_sources(home, {"a-good": feed_server.url("files/real/arxiv-rss/rss-cs.SD-2026-06-12.xml"), "b-slow": feed_server.url("hang"),
                       "c-slow": feed_server.url("hang")}, now - timedelta(minutes=5))
    settings = load_settings(home, env={}, overrides={"fetch_timeout": 25})
    engine = open_engine(settings.database_url)
    stop = threading.Event()
    threading.Thread(target=lambda: (wait_until(lambda: len(feed_server.requests_to("/hang")) >= 1), stop.set()), daemon=True).start()
    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger="digest.ingest"):
        reports = fetch_sources(engine, settings, now, stop_event=stop)
    seconds = time.monotonic() - started
    engine.dispose()
    assert seconds < 15, seconds  # the slow source would hold it 25 s (fetch_timeout), twice
    assert [(r.name, r.status) for r in reports] == [("a-good", "new")]
    [stopped] = [r.digest_fields for r in caplog.records if getattr(r, "digest_event", "") == "fetch-stopped"]
    assert stopped["source"] == "b-slow" and stopped["not_fetched"] == 2
    assert [row[0] for row in fetched_sources(home) if row[1] is not None] == ["a-good"]  # b and c: nothing recorded
    assert len(feed_server.requests_to("/hang")) == 1


def test_serve_stops_promptly_on_sigterm_in_the_middle_of_a_fetch(home, tmp_path, feed_server):
    """The walkthrough: 4 slow sources, SIGTERM during the fetch; the daemon fetched all four before it stopped,
    past systemd's TimeoutStopSec. Now it gives up the source in flight and exits 0, storing nothing of it."""
    now = datetime.now(UTC)
    prepare_home(home, [], now - timedelta(minutes=5))
    add_sources(home, {f"slow{i}": feed_server.url(f"hang?n={i}") for i in range(4)}, now - timedelta(minutes=5))
    log_path = tmp_path / "serve.log"
    with daemon_running(home, digest_env(home, DIGEST_FETCH_TIMEOUT="25"), log_path) as daemon:
        wait_until(lambda: ("event=serving" in log_path.read_text() and feed_server.requests_to("/hang")) or daemon.poll() is not None)
        daemon.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        code = daemon.wait(timeout=20)  # fetching the four would take 4 x 25 s
        seconds = time.monotonic() - signalled
    log = log_path.read_text()
    assert code == 0, log
    assert seconds < 20 and "event=stopping" in log and "event=fetch-stopped" in log and "event=stopped" in log, log
    assert "event=fetched" not in log
    assert all(row[1] is None for row in fetched_sources(home))  # no source recorded as fetched, failed or not
    assert len(feed_server.requests_to("/hang")) == 1
