"""The heartbeats: each daemon tick and each `digest run` / `send` writes its host's row, and `digest status --check`
fails at once on a failed run, a daemon that stopped ticking, or a daemon stopped with nothing running since.

Before them, `status --check` said "ok" for the hour of EDITION_GRACE while the mail server was down, and could not
tell a dead daemon until an edition was an hour late.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
import time_machine

from digest.config import load_settings
from digest.health import RETIRED_AFTER, beat_note, daemon_overdue_after, heartbeat_problems
from digest.ingest import SAMPLE_FILES, import_file
from digest.store import open_engine, session_scope
from digest.store.status import Beat
from digest.store.subscribers import SubscriberInput, add_subscriber

UTC = timezone.utc
HOST = socket.gethostname()
SEND_AT = datetime(2025, 6, 16, 7, 0, tzinfo=UTC)  # Ada's send time, a Monday


def at(minutes: float) -> datetime:
    """`minutes` after Ada's send time."""
    return SEND_AT + timedelta(minutes=minutes)


def closed_port() -> int:
    with socket.socket() as probe:  # a port nothing listens on: the mail server is down
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_config(home: Path, port: int, secret: str = "heartbeat-test-secret-key") -> None:
    (home / "digest.toml").write_text(f'secret_key = "{secret}"\nfrom_address = "digest@example.org"\nskip_empty = false\n'
                                      f'smtp_host = "127.0.0.1"\nsmtp_port = {port}\nsmtp_security = "none"\n', encoding="utf-8")


def add_reader(engine) -> None:
    """The sample papers and one reader due at 07:00 UTC."""
    import_file(engine, SAMPLE_FILES[0], SEND_AT - timedelta(hours=6))
    with session_scope(engine) as session:
        add_subscriber(session, "ada@example.org", SubscriberInput(interests=["language models"], send_at="07:00", tz="UTC"),
                       now=SEND_AT - timedelta(hours=6))


def status_at(cli, url: str, when: datetime, *args: str):
    with time_machine.travel(when, tick=False):
        return cli("--database-url", url, "status", *args)


def fails(result) -> list[str]:
    return [line.removeprefix("fail: ") for line in result.output.splitlines() if line.startswith("fail: ")]


# --- through the real commands ------------------------------------------------------------------------


def test_status_check_fails_at_once_when_digest_run_cannot_reach_the_mail_server(cli, home, sqlite_engine, smtp_server):
    """`digest run` at 07:05 with the mail server down: `status --check` fails a minute later (it said "ok" until
    08:00), naming the run, its host and the error; a run that works clears it."""
    add_reader(sqlite_engine)
    db_url = f"sqlite:///{home / 'digest.db'}"
    write_config(home, closed_port())
    with time_machine.travel(at(5), tick=False):
        assert cli("--database-url", db_url, "run", "--fetch", "never").exit_code != 0
    result = status_at(cli, db_url, at(6), "--check")
    assert result.exit_code == 1, result.output
    [line] = fails(result)
    assert line.startswith(f"the last run on {HOST} (`digest run`) at 2025-06-16 07:05 UTC failed: "), line
    assert "connection refused" in line and "the next `digest run` tries again" in line and "`digest doctor`" in line
    assert "heartbeat-test-secret-key" not in line

    write_config(home, smtp_server.port)  # the server is back
    with time_machine.travel(at(10), tick=False):
        assert cli("--database-url", db_url, "run", "--fetch", "never").exit_code == 0
    assert [m.rcpt_tos for m in smtp_server.messages] == [["ada@example.org"]]
    healthy = status_at(cli, db_url, at(11), "--check")
    assert healthy.exit_code == 0 and healthy.output.startswith("ok: "), healthy.output


def test_status_check_fails_at_once_when_a_daemon_tick_cannot_reach_the_mail_server(home, sqlite_engine, cli, smtp_server, caplog):
    """The daemon's tick as `digest serve` builds it, the mail server down: the tick is logged as failed, as before,
    and now `status --check` fails at once; the daemon line of `digest status` says when it ticked and how it ended."""
    from digest.pipeline.heartbeat import Heartbeat
    from digest.schedule import Ticker, pipeline_job

    add_reader(sqlite_engine)
    url = f"sqlite:///{home / 'digest.db'}"

    def ticker(port: int, now: datetime) -> Ticker:
        write_config(home, port)
        settings = load_settings(home, env={})
        return Ticker(pipeline_job(sqlite_engine, settings), threading.Event(), lambda: now, lambda now: False,
                      Heartbeat(sqlite_engine, settings, "daemon", tick_seconds=60))

    with caplog.at_level(logging.ERROR, logger="digest.schedule"):
        ticker(closed_port(), at(5))()
    assert [r.digest_event for r in caplog.records if r.name == "digest.schedule"] == ["tick-failed"]
    result = status_at(cli, url, at(5.5), "--check")
    assert result.exit_code == 1
    [line] = fails(result)
    assert line.startswith(f"the last run on {HOST} (a `digest serve` tick) at 2025-06-16 07:05 UTC failed: ") and "connection refused" in line
    assert "the next tick tries again" in line
    text = status_at(cli, url, at(5.5)).output
    assert f"daemon on {HOST} (pid {os.getpid()}, every 60 s): last ticked 30 s ago; last tick 2025-06-16 07:05 UTC failed: " in text, text

    ticker(smtp_server.port, at(6))()  # the server is back: the next tick sends, and clears it
    assert len(smtp_server.messages) == 1
    healthy = status_at(cli, url, at(6.5), "--check")
    assert healthy.exit_code == 0, healthy.output
    text = status_at(cli, url, at(6.5)).output
    assert f"daemon on {HOST} (pid {os.getpid()}, every 60 s): last ticked 30 s ago; last tick 2025-06-16 07:06 UTC ok" in text, text
    data = __import__("json").loads(status_at(cli, url, at(6.5), "--json").output)
    assert [(b["kind"], b["host"], b["outcome"]) for b in data["heartbeats"]] == [("daemon", HOST, "ok")]


def test_a_tick_with_nothing_to_send_leaves_a_failed_outcome_as_it_was(home, sqlite_engine, cli, smtp_server):
    """Found by the soak: a tick with nothing due (every delivery left waiting for its retry, or none due yet) wrote
    'ok', and `status --check` said ok while the mail server was still down. A tick or run that sent nothing proves
    nothing about the server: it says the daemon lives and leaves the last outcome; the next one that sends decides."""
    from digest.pipeline.heartbeat import Heartbeat
    from digest.schedule import Ticker, pipeline_job
    from digest.store.subscribers import get_subscriber, set_status

    add_reader(sqlite_engine)
    url = f"sqlite:///{home / 'digest.db'}"

    def tick(port: int, now: datetime) -> None:
        write_config(home, port)
        settings = load_settings(home, env={})
        Ticker(pipeline_job(sqlite_engine, settings), threading.Event(), lambda: now, lambda now: False,
               Heartbeat(sqlite_engine, settings, "daemon", tick_seconds=60))()

    def reader_status(status: str) -> None:
        with session_scope(sqlite_engine) as session:
            set_status(session, get_subscriber(session, "ada@example.org"), status, at(5.5))

    tick(closed_port(), at(5))  # the server down: failed
    reader_status("paused")
    tick(closed_port(), at(6))  # nothing due: the server is not asked
    result = status_at(cli, url, at(6.5), "--check")
    assert result.exit_code == 1 and "2025-06-16 07:05 UTC failed" in fails(result)[0], result.output
    assert "last ticked 30 s ago; last tick 2025-06-16 07:05 UTC failed" in status_at(cli, url, at(6.5)).output
    reader_status("active")
    tick(smtp_server.port, at(7))  # it sends: ok
    assert len(smtp_server.messages) == 1 and status_at(cli, url, at(7.5), "--check").exit_code == 0


def test_status_check_flags_a_daemon_that_stopped_ticking(cli, engine, db_url):
    """A daemon last seen 12 minutes ago (its tick is a minute) was killed, or hangs: said at once, with its host and
    pid; one seen a minute ago is fine. (At the real time: on PostgreSQL `status` compares the host's clock with the
    database's.)"""
    from digest.store.heartbeats import record_heartbeat

    now = datetime.now(UTC)
    record_heartbeat(engine, "daemon", "old-host", 4242, now - timedelta(minutes=12), tick_seconds=60, started_at=now - timedelta(minutes=12),
                     finished_at=now - timedelta(minutes=12), outcome="ok")
    record_heartbeat(engine, "daemon", "live-host", 77, now - timedelta(minutes=1), tick_seconds=60, outcome="ok", finished_at=now - timedelta(minutes=1))
    result = cli("--database-url", db_url, "status", "--check")
    assert result.exit_code == 1
    assert fails(result) == ["daemon on old-host (pid 4242) last ticked 12 min ago (it ticks every 60 s): is it running? It did not stop cleanly "
                             "(killed, crashed, its host down or the database out of its reach); check its service and its log"]


def test_status_check_says_nothing_of_a_cron_only_database(cli, engine, db_url):
    """Cron (or a timer) runs `digest run`: no daemon ever ticked, so days without a run say nothing here (the edition
    checks speak for a missed edition); the status lists the last run."""
    from digest.store.heartbeats import record_heartbeat

    ran = datetime.now(UTC) - timedelta(days=3, minutes=1)
    record_heartbeat(engine, "run", "cron-host", 99, ran, started_at=ran, finished_at=ran, outcome="ok")
    result = cli("--database-url", db_url, "status", "--check")
    assert result.exit_code == 0 and result.output.startswith("ok: "), result.output
    assert f"`digest run` on cron-host (pid 99): last ran 3 days ago; last run {ran:%Y-%m-%d %H:%M} UTC ok" in cli("--database-url", db_url, "status").output


def digest_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    return {**env, "DIGEST_HOME": str(home)}


def heartbeat_rows(url: str) -> list[tuple]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table("heartbeat"):
                return []
            return list(conn.execute(sa.text("SELECT kind, host, pid, tick_seconds, outcome, stopped_at FROM heartbeat")))
    finally:
        engine.dispose()


def test_serve_records_its_ticks_and_a_clean_stop(cli, home, tmp_path):
    """A real `digest serve`: its ticks write the daemon row; SIGTERM writes that it stopped. --check says nothing
    while a restart could follow, then that it stopped (not crashed) with nothing running since; a run clears it."""
    write_config(home, closed_port())
    url = f"sqlite:///{home / 'digest.db'}"
    log_path = tmp_path / "serve.log"
    with open(log_path, "ab") as log:
        daemon = subprocess.Popen([sys.executable, "-c", "from digest.cli import main; main()", "serve", "--tick-seconds", "1"],
                                  env=digest_env(home), stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 60  # only ends a hung test
        while not heartbeat_rows(url) or "event=serving" not in log_path.read_text():  # ticked (idle: nothing is due)
            assert daemon.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.05)
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=60) == 0, log_path.read_text()
    finally:
        if daemon.poll() is None:
            daemon.kill()
    [(kind, host, pid, tick, outcome, stopped_at)] = heartbeat_rows(url)
    assert (kind, host, pid, tick, outcome) == ("daemon", HOST, daemon.pid, 1, None) and stopped_at is not None  # sent nothing: no outcome
    stopped = datetime.fromisoformat(str(stopped_at)).replace(tzinfo=UTC)

    assert status_at(cli, url, stopped + timedelta(seconds=30), "--check").exit_code == 0  # a restart may follow
    result = status_at(cli, url, stopped + timedelta(minutes=10), "--check")
    assert result.exit_code == 1
    [line] = fails(result)
    assert line.startswith(f"daemon on {HOST} (pid {daemon.pid}) was stopped at ") and "nothing has run since: it was the only thing sending" in line
    with time_machine.travel(stopped + timedelta(minutes=11), tick=False):
        assert cli("run", "--fetch", "never").exit_code == 0  # nothing due: cron took over
    assert status_at(cli, url, stopped + timedelta(minutes=12), "--check").exit_code == 0


# --- the store ----------------------------------------------------------------------------------------


def test_record_heartbeat_keeps_one_row_per_host_and_kind(engine):
    """A restart (a new pid) and every tick update the host's row in place: the table grows with hosts, not ticks."""
    from digest.store.heartbeats import record_heartbeat
    from digest.store.status import heartbeats

    now = datetime(2025, 6, 16, 12, 0, tzinfo=UTC)
    for pid in (10, 11, 12):
        record_heartbeat(engine, "daemon", "a", pid, now + timedelta(seconds=pid), tick_seconds=60, started_at=now)
    record_heartbeat(engine, "daemon", "a", 12, now + timedelta(seconds=20), finished_at=now + timedelta(seconds=20), outcome="failed", error="x" * 5000)
    record_heartbeat(engine, "run", "a", 13, now, finished_at=now, outcome="ok")
    beats = heartbeats(engine)
    assert [(b.kind, b.host, b.pid) for b in beats] == [("daemon", "a", 12), ("run", "a", 13)]
    daemon = beats[0]
    assert (daemon.seen_at, daemon.started_at, daemon.tick_seconds, daemon.outcome, len(daemon.error or "")) == (now + timedelta(seconds=20), now, 60, "failed", 1000)
    with pytest.raises(ValueError, match="unknown outcome"):
        record_heartbeat(engine, "run", "a", 1, now, outcome="maybe")


def test_prune_store_deletes_the_heartbeats_of_a_host_not_seen_for_30_days(engine):
    from digest.store.heartbeats import record_heartbeat
    from digest.store.retention import prune_store
    from digest.store.status import heartbeats

    now = datetime(2025, 6, 16, 12, 0, tzinfo=UTC)
    record_heartbeat(engine, "daemon", "retired", 1, now - timedelta(days=31), tick_seconds=60)
    record_heartbeat(engine, "run", "retired", 1, now - timedelta(days=31))
    record_heartbeat(engine, "daemon", "current", 2, now - timedelta(days=29), tick_seconds=60)
    assert prune_store(engine, now, keep_days=0, keep_ledger_days=0, candidate_days=7, dry_run=True).heartbeats == 2
    report = prune_store(engine, now, keep_days=0, keep_ledger_days=0, candidate_days=7)
    assert report.heartbeats == 2 and "2 heartbeats of hosts not seen for 30 days" in report.summary()
    assert [b.host for b in heartbeats(engine)] == ["current"]


# --- the heartbeat never fails the job -------------------------------------------------------------------


@dataclass
class FakeReport:
    due: int = 1
    sent: int = 1
    error: Exception | None = None


def test_a_heartbeat_the_database_refuses_never_fails_the_tick(home, tmp_path, caplog):
    """A database without the heartbeat table (or locked, or gone): the tick runs and is logged as done, the failed
    write is a warning."""
    from digest.pipeline.heartbeat import Heartbeat
    from digest.schedule import Ticker

    write_config(home, closed_port())
    engine = open_engine(f"sqlite:///{tmp_path / 'empty.db'}")  # no schema: every heartbeat write fails
    calls = []
    ticker = Ticker(lambda **kw: calls.append(kw) or FakeReport(), threading.Event(), lambda: at(0), lambda now: False,
                    Heartbeat(engine, load_settings(home, env={}), "daemon", tick_seconds=60))
    with caplog.at_level(logging.DEBUG):
        ticker()
    engine.dispose()
    events = [r.digest_event for r in caplog.records if hasattr(r, "digest_event")]
    assert len(calls) == 1 and "tick-done" in events and "tick-crashed" not in events
    assert events.count("heartbeat-failed") == 2  # the start and the outcome
    assert all(r.levelno == logging.WARNING for r in caplog.records if getattr(r, "digest_event", "") == "heartbeat-failed")


def test_heartbeat_masks_secrets_in_the_error_it_keeps(home, sqlite_engine):
    """The error is printed by `digest status`: masked as a log line is (the configured secrets, readers' link tokens)."""
    from digest.errors import DeliveryError
    from digest.pipeline.heartbeat import Heartbeat
    from digest.store.status import heartbeats

    write_config(home, closed_port())
    (home / "digest.toml").write_text((home / "digest.toml").read_text() + 'smtp_password = "hunter2-smtp-password"\n')
    settings = load_settings(home, env={})
    error = DeliveryError("login refused for hunter2-smtp-password at https://example.org/u/abcdefghijklmnopqrstuvwxyz0123456789ABCDEF")
    Heartbeat(sqlite_engine, settings, "send").finished(at(0), error, started_at=at(0))
    [beat] = heartbeats(sqlite_engine)
    assert beat.outcome == "failed" and "hunter2" not in (beat.error or "") and "********" in (beat.error or "")


def test_build_scheduler_runs_the_beat_apart_from_the_tick(home):
    """The daemon's own beat is a second job in a thread of its own: a tick that sends for an hour does not make the
    daemon look dead. It neither fetches nor sends."""
    from apscheduler.schedulers.background import BackgroundScheduler

    from digest.schedule import Ticker, build_scheduler

    now = at(0)
    scheduler = build_scheduler(Ticker(lambda **kw: None, threading.Event(), lambda: now, lambda now: False), now, tick_seconds=30,
                                scheduler_cls=BackgroundScheduler, beat=lambda: None)
    tick, beat = scheduler.get_jobs()
    assert (tick.id, tick.executor, beat.id, beat.executor) == ("tick", "default", "beat", "beat")
    assert beat.trigger.interval == timedelta(seconds=30) and beat.max_instances == 1


# --- the judgement (pure) ------------------------------------------------------------------------------

NOW = datetime(2025, 6, 16, 12, 0, tzinfo=UTC)


def beat(kind: str = "daemon", host: str = "a", *, seen: float = 0.5, started: float | None = None, finished: float | None = 0.5, outcome: str | None = "ok",
         error: str | None = None, stopped: float | None = None, tick: int | None = 60, pid: int = 1) -> Beat:
    """A heartbeat; times in minutes before NOW."""
    def ago(minutes: float | None) -> datetime | None:
        return None if minutes is None else NOW - timedelta(minutes=minutes)

    return Beat(kind, host, pid, tick if kind == "daemon" else None, NOW - timedelta(minutes=seen), ago(started if started is not None else finished),
                ago(finished), outcome, error, ago(stopped))


DAY = 24 * 60


@pytest.mark.parametrize("beats, expected", [
    ([beat(seen=1)], []),
    ([beat(seen=6)], ["daemon on a (pid 1) last ticked 6 min ago"]),
    ([beat(seen=4)], []),  # 3 ticks and the margin: 5 minutes for a 1-minute tick
    ([beat(seen=25, tick=600)], []),
    ([beat(seen=1, started=90, finished=95)], []),  # a tick sending for 90 minutes, its beat alive
    ([beat(outcome="failed", error="the server is down", finished=1)], ["the last run on a (a `digest serve` tick) at 2025-06-16 11:59 UTC failed: the server is down"]),
    ([beat(outcome="failed", error="down", finished=2), beat("send", finished=1)], []),  # a send that worked since, on that host
    ([beat(finished=2), beat("send", finished=1, outcome="failed", error="down")], ["the last run on a (`digest send`) at 2025-06-16 11:59 UTC failed: down"]),
    ([beat("run", "a", seen=3 * DAY, finished=3 * DAY)], []),  # cron only: silence says nothing
    ([beat("run", "a", seen=3 * DAY, finished=3 * DAY, outcome="failed", error="x")], ["the last run on a (`digest run`) at 2025-06-13 12:00 UTC failed: x"]),
    ([beat(stopped=1, seen=1)], []),  # a restart may follow
    ([beat(stopped=10, seen=10)], ["daemon on a (pid 1) was stopped at 2025-06-16 11:50 UTC"]),
    ([beat(stopped=10, seen=10), beat("run", "a", seen=5, finished=5)], []),  # cron took over
    ([beat(stopped=10, seen=10), beat("daemon", "b", seen=0.5)], []),  # another daemon runs
    ([beat(host="a", seen=2 * DAY), beat(host="b", seen=0.5)], []),  # a host silent for days while b ran: retired
    ([beat(host="a", seen=60), beat(host="b", seen=0.5)], ["daemon on a (pid 1) last ticked 60 min ago"]),
    ([beat(host="a", outcome="failed", error="x", finished=2 * DAY, seen=2 * DAY), beat("run", "b")], []),  # retired after a failure
], ids=["alive", "dead", "within-3-ticks", "slow-tick", "long-tick", "failed-tick", "cleared-by-send", "failed-send", "cron-silent", "cron-failed",
        "just-stopped", "stopped-alone", "stopped-then-cron", "stopped-other-daemon", "retired-host", "dead-beside-live", "retired-after-failure"])
def test_heartbeat_problems(beats, expected):
    problems = heartbeat_problems(beats, NOW)
    assert len(problems) == len(expected), problems
    for problem, start in zip(problems, expected):
        assert problem.startswith(start), problem


def test_heartbeat_rules_are_what_the_docs_say():
    assert daemon_overdue_after(60) == timedelta(minutes=5) and daemon_overdue_after(None) == timedelta(minutes=5)
    assert RETIRED_AFTER == timedelta(days=1)
    assert beat_note(beat(started=0.2, finished=1, seen=0.1), NOW) == ("daemon on a (pid 1, every 60 s): last ticked 6 s ago, a tick running since 2025-06-16 11:59 UTC; "
                                                                     "last tick 2025-06-16 11:59 UTC ok")
