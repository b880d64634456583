"""`digest status`: the queries (SQLite and PostgreSQL), arXiv's announcement calendar, and --check on a healthy
store, a source whose last fetch failed (or failed 3 times), a fetch whose every entry was refused, a quiet arXiv
weekend and an announcement day that brought nothing."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
import time_machine

from digest.health import after_announcement, source_problems
from digest.models import Delivery, Source, Subscriber
from digest.store import session_scope
from digest.store.status import newest_fetch_at, source_health

UTC = timezone.utc
NOW = datetime(2025, 6, 16, 12, 0, tzinfo=UTC)
MON_EVENING = datetime(2025, 6, 10, 0, 35, tzinfo=UTC)  # Monday 20:35 EDT, after Monday's announcement
FRI_EVENING = datetime(2025, 6, 14, 0, 35, tzinfo=UTC)  # Friday 20:35 EDT: arXiv announces nothing


def add_source(engine, name: str, kind: str = "arxiv-rss", **state) -> None:
    with session_scope(engine) as session:
        session.add(Source(name=name, kind=kind, url=f"https://example.org/{name}", created_at=NOW, **state))


# --- queries -----------------------------------------------------------------------------------------


def test_source_health_lists_fetched_sources_without_files(engine):
    add_source(engine, "arxiv:cs.LG", last_fetch_at=MON_EVENING, last_success_at=MON_EVENING, last_fetch_count=312)
    add_source(engine, "broken", kind="feed", last_fetch_at=FRI_EVENING, consecutive_errors=4, last_error="HTTP 500")
    add_source(engine, "file:sample.jsonl", kind="file", last_fetch_at=NOW, last_success_at=NOW, last_fetch_count=237)
    add_source(engine, "gone", kind="feed", enabled=False, last_fetch_at=NOW, disabled_reason="HTTP 410")
    rows = source_health(engine)
    assert [r.name for r in rows] == ["arxiv:cs.LG", "broken", "gone"]
    assert rows[0].last_success_at == MON_EVENING and rows[0].last_fetch_count == 312
    assert rows[1].consecutive_errors == 4 and rows[1].last_success_at is None
    # The newest fetch of an enabled, fetched source (neither the imported file nor the disabled one).
    assert newest_fetch_at(engine) == FRI_EVENING


def test_newest_fetch_at_none_when_nothing_was_fetched(engine):
    assert newest_fetch_at(engine) is None
    add_source(engine, "arxiv:cs.CL")
    assert newest_fetch_at(engine) is None


# --- the announcement calendar -----------------------------------------------------------------------


@pytest.mark.parametrize("instant, expected", [
    (datetime(2025, 6, 9, 0, 30, tzinfo=UTC), True),    # Sun 20:30 EDT: Sunday's announcement
    (datetime(2025, 6, 8, 23, 59, tzinfo=UTC), False),  # Sun 19:59 EDT: still the weekend's silence
    (datetime(2025, 6, 13, 14, 0, tzinfo=UTC), True),   # Fri 10:00 EDT: Thursday evening's announcement
    (datetime(2025, 6, 14, 0, 30, tzinfo=UTC), False),  # Fri 20:30 EDT: no announcement on Fridays
    (datetime(2025, 6, 14, 16, 0, tzinfo=UTC), False),  # Saturday
    (datetime(2025, 1, 13, 1, 30, tzinfo=UTC), True),   # Sun 20:30 EST (winter: UTC-5)
    (datetime(2025, 1, 11, 1, 30, tzinfo=UTC), False),  # Fri 20:30 EST
], ids=["sun-evening", "sun-before-20", "fri-morning", "fri-evening", "saturday", "winter-sun", "winter-fri"])
def test_after_announcement_follows_arxiv_schedule(instant, expected):
    assert after_announcement(instant) is expected


def test_source_problems_ignores_disabled_and_non_arxiv_quiet_sources():
    add = lambda **kw: type("S", (), {"name": "s", "kind": "feed", "enabled": True, "last_success_at": MON_EVENING, "last_fetch_count": 0,  # noqa: E731
                                      "last_fetch_skipped": 0, "consecutive_errors": 0, "last_error": None, "disabled_reason": None, **kw})()
    assert source_problems([add(), add(enabled=False, consecutive_errors=9), add(kind="arxiv-rss", last_fetch_count=5, last_fetch_skipped=2)]) == []
    assert len(source_problems([add(kind="arxiv-api")])) == 1


# --- digest status --check ---------------------------------------------------------------------------


@pytest.mark.parametrize("state, code, line", [
    ({"last_fetch_at": MON_EVENING, "last_success_at": MON_EVENING, "last_fetch_count": 312}, 0, "ok: 1 source enabled, last success 2025-06-10 00:35 UTC"),
    ({"last_fetch_at": NOW, "last_success_at": MON_EVENING, "last_fetch_count": 312, "consecutive_errors": 3, "last_error": "HTTP 500 from rss.arxiv.org"},
     1, "fail: source arxiv:cs.LG failed 3 times in a row (last error: HTTP 500 from rss.arxiv.org)"),
    ({"last_fetch_at": FRI_EVENING, "last_success_at": FRI_EVENING, "last_fetch_count": 0}, 0, "ok: 1 source enabled, last success 2025-06-14 00:35 UTC"),
    ({"last_fetch_at": MON_EVENING, "last_success_at": MON_EVENING, "last_fetch_count": 0}, 1,
     "fail: source arxiv:cs.LG brought 0 papers on an announcement day (fetched Mon 2025-06-09 20:35 EDT)"),
    ({"last_fetch_at": NOW, "last_success_at": MON_EVENING, "last_fetch_count": 40, "consecutive_errors": 1, "last_error": "unexpected OverflowError: date value out of range"},
     1, "fail: source arxiv:cs.LG: the last fetch failed (unexpected OverflowError: date value out of range)"),
    ({"last_fetch_at": NOW, "last_success_at": MON_EVENING, "last_fetch_count": 40, "consecutive_errors": 2, "last_error": "timeout"},
     1, "fail: source arxiv:cs.LG: the last fetch failed (timeout)"),
    ({"last_fetch_at": MON_EVENING, "last_success_at": MON_EVENING, "last_fetch_count": 0, "last_fetch_skipped": 7}, 1,
     "fail: source arxiv:cs.LG stored nothing from its last fetch: all 7 entries were refused"),
    ({"last_fetch_at": MON_EVENING, "last_success_at": MON_EVENING, "last_fetch_count": 40, "last_fetch_skipped": 2}, 0,
     "ok: 1 source enabled, last success 2025-06-10 00:35 UTC"),
], ids=["healthy", "three-errors", "quiet-weekend", "empty-announcement-day", "one-error", "two-errors", "all-refused", "some-refused"])
def test_status_check_exit_code_and_one_line(cli, sqlite_engine, state, code, line):
    add_source(sqlite_engine, "arxiv:cs.LG", **state)
    result = cli("status", "--check")
    assert result.exit_code == code
    assert result.output == line + "\n"


def test_status_check_on_a_source_never_fetched_says_so_and_fails_only_after_a_day(cli, sqlite_engine):
    add_source(sqlite_engine, "arxiv:cs.LG")  # added at NOW, never fetched
    with time_machine.travel(NOW + timedelta(hours=2), tick=False):
        fresh = cli("status", "--check")
    assert fresh.exit_code == 0
    # Never fetched, so the next run or tick fetches it (it said "the next fetch is" the next fetch_cron time).
    assert fresh.output == ("ok: 1 source enabled, not fetched yet: the next `digest run` or daemon tick fetches, or `digest fetch` now "
                            "(a problem only if a day passes)\n")
    with time_machine.travel(NOW + timedelta(hours=2), tick=False):
        assert "next fetch: due now, at the next `digest run` or daemon tick" in cli("status").output
    add_source(sqlite_engine, "feed", kind="feed", last_fetch_at=NOW, last_success_at=NOW, last_fetch_count=3)
    with time_machine.travel(NOW + timedelta(hours=2), tick=False):
        mixed = cli("status", "--check")
    assert mixed.output.startswith("ok: 2 sources enabled, last success 2025-06-16 12:00 UTC, 1 not fetched yet: the next `digest run` or daemon tick fetches")
    with time_machine.travel(NOW + timedelta(days=2), tick=False):
        stale = cli("status", "--check")
    assert stale.exit_code == 1
    assert stale.output == ("fail: source arxiv:cs.LG was added 2025-06-16 12:00 UTC and has never been fetched: "
                            "is the timer (`digest run`) or `digest serve` running?\n")


def test_status_check_with_no_sources_says_how_to_add_one(cli, sqlite_engine):
    result = cli("status", "--check")
    assert (result.exit_code, result.output) == (0, "ok: 0 sources enabled (add one with `digest sources add`)\n")


def test_status_check_lists_every_problem_one_per_line(cli, sqlite_engine):
    add_source(sqlite_engine, "a", kind="feed", consecutive_errors=5, last_error="DNS")
    add_source(sqlite_engine, "b", kind="feed", consecutive_errors=1, last_error="TLS")
    add_source(sqlite_engine, "c", kind="feed", last_success_at=NOW, last_fetch_count=3, last_fetch_skipped=1)
    result = cli("status", "--check")
    assert result.exit_code == 1
    assert result.output == "fail: source a failed 5 times in a row (last error: DNS)\nfail: source b: the last fetch failed (TLS)\n"
    listed = cli("status").output
    assert "1 entry skipped in the last fetch" in next(line for line in listed.splitlines() if line.startswith("c "))


def test_status_text_tells_weekend_from_broken(cli, sqlite_engine):
    add_source(sqlite_engine, "arxiv:cs.CL", last_fetch_at=FRI_EVENING, last_success_at=FRI_EVENING, last_fetch_count=0)
    add_source(sqlite_engine, "arxiv:cs.LG", last_fetch_at=MON_EVENING, last_success_at=MON_EVENING, last_fetch_count=0)
    with time_machine.travel(datetime(2025, 3, 7, 12, 0, tzinfo=UTC), tick=False):  # Friday before the DST change
        result = cli("status")
    assert result.exit_code == 0  # without --check, status reports and succeeds
    lines = result.output.splitlines()
    assert "quiet: no arXiv announcement (weekend)" in next(line for line in lines if line.startswith("arxiv:cs.CL"))
    assert "EMPTY after an announcement" in next(line for line in lines if line.startswith("arxiv:cs.LG"))
    # The next fetch is Sunday 20:30 in New York, already on daylight time.
    assert 'next fetch: 2025-03-09 20:30 EDT (fetch_cron "30 20 * * sun-thu" in America/New_York)' in lines
    assert lines[-1].startswith("problem: source arxiv:cs.LG brought 0 papers")


def test_status_json_counts_editions(cli, sqlite_engine):
    add_source(sqlite_engine, "hf-daily", kind="hf-daily", last_fetch_at=MON_EVENING, last_success_at=MON_EVENING, last_fetch_count=12)
    with session_scope(sqlite_engine) as session:
        subs = [Subscriber(email=f"r{i}@example.org", created_at=NOW) for i in range(5)]
        session.add_all(subs)
        session.flush()
        states = {"2025-06-15": ["sent", "sent", "skipped", "failed", "deferred"], "2025-06-16": ["sent", "pending", "sending"]}
        for edition, row_states in states.items():
            for sub, state in zip(subs, row_states):
                session.add(Delivery(subscriber_id=sub.id, edition=edition, state=state, created_at=NOW))
    with time_machine.travel(NOW, tick=False):  # the readers joined at NOW: no edition was overdue yet
        result = cli("status", "--json")
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert data["ok"] is True and data["problems"] == []
    assert data["editions"] == [
        {"edition": "2025-06-16", "sent": 1, "skipped": 0, "failed": 0, "deferred": 0, "pending": 2},
        {"edition": "2025-06-15", "sent": 2, "skipped": 1, "failed": 1, "deferred": 1, "pending": 0},
    ]
    assert data["sources"][0]["name"] == "hf-daily" and data["sources"][0]["last_fetch_count"] == 12
    assert data["sources"][0]["last_success_at"] == MON_EVENING.isoformat()


def test_status_rejects_a_bad_fetch_cron(cli, sqlite_engine):
    result = cli("status", env={"DIGEST_FETCH_CRON": "30 20 * * funday"})
    assert result.exit_code == 1
    assert "invalid fetch_cron" in result.output and "funday" in result.output


# --- when `digest run` and the daemon's tick fetch ------------------------------------------------

SUN_FETCH = datetime(2025, 6, 16, 0, 31, tzinfo=UTC)  # just after Sunday's 20:30 EDT fetch time


@pytest.mark.parametrize("sources, due", [
    ([], False),
    ([("file", {"last_fetch_at": None})], False),
    ([("arxiv-rss", {"last_fetch_at": SUN_FETCH, "last_success_at": SUN_FETCH})], False),
    ([("arxiv-rss", {"last_fetch_at": MON_EVENING, "last_success_at": MON_EVENING})], True),
    ([("arxiv-rss", {"last_fetch_at": None, "last_success_at": None})], True),
    ([("arxiv-rss", {"last_fetch_at": SUN_FETCH, "last_success_at": MON_EVENING, "consecutive_errors": 1})], True),
    ([("arxiv-rss", {"last_fetch_at": datetime(2025, 6, 16, 11, 55, tzinfo=UTC), "last_success_at": MON_EVENING, "consecutive_errors": 2})], False),
    ([("arxiv-rss", {"last_fetch_at": SUN_FETCH, "last_success_at": MON_EVENING, "consecutive_errors": 3}),
      ("feed", {"last_fetch_at": SUN_FETCH, "last_success_at": SUN_FETCH})], False),
    ([("arxiv-rss", {"last_fetch_at": MON_EVENING, "last_success_at": MON_EVENING, "consecutive_errors": 3})], True),
], ids=["no-sources", "files-only", "fetched-after-schedule", "schedule-passed", "never-fetched", "failed-retry",
        "failed-retried-5-min-ago", "broken-source-waits", "broken-source-on-schedule"])
def test_fetch_due_follows_schedule_and_retries_failures(sqlite_engine, sources, due):
    from digest.config import load_settings
    from digest.schedule import fetch_due

    for i, (kind, state) in enumerate(sources):
        add_source(sqlite_engine, f"s{i}", kind=kind, **state)
    assert fetch_due(sqlite_engine, load_settings(env={}), NOW) is due


# --- editions: was each due edition sent? ----------------------------------------------------------------

from datetime import timedelta  # noqa: E402

from digest.health import EDITION_GRACE, SENDING_STUCK_AFTER, edition_problems, last_due_edition  # noqa: E402
from digest.store.deliveries import UnfinishedDelivery  # noqa: E402
from digest.store.status import Schedule  # noqa: E402

MONDAY = datetime(2025, 6, 16, tzinfo=UTC)


def schedule(email: str = "ada@example.org", send_at: str = "07:00", tz: str = "UTC", frequency: str = "daily", since: datetime = MONDAY - timedelta(days=30), id: int = 1) -> Schedule:
    return Schedule(id, email, send_at, tz, frequency, since)


def row(state: str, since: datetime, edition: str = "2025-06-16", id: int = 1, email: str = "ada@example.org", error: str | None = None, attempts: int = 3) -> UnfinishedDelivery:
    return UnfinishedDelivery(id, email, edition, state, error, since, attempts)


def at(hour: int, minute: int = 0, day: int = 16) -> datetime:
    return datetime(2025, 6, day, hour, minute, tzinfo=UTC)


@pytest.mark.parametrize("subscriber, finished, unfinished, now, expected", [
    (schedule(), {}, [], at(8, 1), "edition 2025-06-16 not sent to 1 due subscriber more than 1 hour after their send time (no delivery recorded: no run since their send time?): ada@example.org"),
    (schedule(), {1: "2025-06-15"}, [], at(7, 59), None),  # within the grace period: the run may be at work
    (schedule(), {1: "2025-06-16"}, [], at(23, 0), None),
    (schedule(), {1: "2025-06-15"}, [], at(6, 0), None),  # yesterday's sent, today's send time not come
    (schedule(), {1: "2025-06-14"}, [], at(6, 0), "edition 2025-06-15 not sent"),  # yesterday's missed: said until today's is due
    (schedule(since=at(9, 0)), {}, [], at(9, 30), None),  # joined after the send time: due from then on
    (schedule(since=at(9, 0)), {}, [], at(10, 1), "edition 2025-06-16 not sent"),
    (schedule(since=at(23, 30, day=15)), {}, [], at(7, 30), None),  # joined late yesterday: today's is the first
    (schedule(send_at="07:00", tz="Asia/Kolkata"), {}, [], at(2, 31), "edition 2025-06-16 not sent"),  # 07:00 IST = 01:30 UTC
    (schedule(frequency="weekly:mon"), {1: "2025-06-09"}, [], at(12, 0, day=18), "edition 2025-06-16 not sent"),
    (schedule(frequency="weekly:mon"), {1: "2025-06-16"}, [], at(12, 0, day=18), None),
    (schedule(), {}, [row("deferred", at(8, 28), error="451 4.7.1 greylisted")], at(8, 30),  # deferred by 3 hand-overs of one run
     "edition 2025-06-16 not sent to 1 due subscriber more than 1 hour after their send time (deferred, last error: 451 4.7.1 greylisted; next try at 08:33 UTC): ada@example.org"),
    (schedule(), {}, [row("deferred", at(7, 1), error="451 4.7.1 greylisted", attempts=12)], at(8, 30),  # four runs: 40 min
     "edition 2025-06-16 not sent to 1 due subscriber more than 1 hour after their send time (deferred, last error: 451 4.7.1 greylisted; to be tried again since 07:41 UTC: no run since?): ada@example.org"),
    (schedule(), {}, [row("sending", at(7, 55))], at(8, 30), None),  # a run at work
    (schedule(), {}, [row("sending", at(7, 5))], at(8, 30),
     "1 delivery of edition 2025-06-16 'sending' since 2025-06-16 07:05 UTC, over 1 hour (the run sending them was killed, or could not record them; the next run sends them, and one handed over before it died may arrive twice): ada@example.org"),
    (schedule(tz="Mars/Olympus"), {}, [], at(12, 0), "subscriber ada@example.org gets no email: unknown time zone 'Mars/Olympus'"),
], ids=["missed", "in-grace", "sent", "before-send-time", "yesterday-missed", "joined-after-send-time", "joined-after-send-time-missed",
        "joined-late-yesterday", "other-zone", "weekly-missed", "weekly-sent", "deferred-waiting", "deferred-no-run-since", "sending-now", "stuck-sending", "bad-zone"])
def test_edition_problems_one_line_per_unsent_edition(subscriber, finished, unfinished, now, expected):
    problems = edition_problems([subscriber], finished, unfinished, now)
    if expected is None:
        assert problems == []
    else:
        assert len(problems) == 1 and problems[0].startswith(expected), problems


def test_edition_problems_group_subscribers_per_edition_and_reason():
    subscribers = [schedule(f"r{i}@example.org", id=i) for i in range(8)]
    unfinished = [row("deferred", at(7, 2), id=6, email="r6@example.org", error="452 mailbox full"), row("sending", at(6, 0), id=7, email="r7@example.org")]
    problems = edition_problems(subscribers, {}, unfinished, at(9, 0))
    assert problems == [
        "edition 2025-06-16 not sent to 1 due subscriber more than 1 hour after their send time (deferred, last error: 452 mailbox full; to be tried again since 07:07 UTC: no run since?): r6@example.org",
        "edition 2025-06-16 not sent to 6 due subscribers more than 1 hour after their send time (no delivery recorded: no run since their send time?): "
        "r0@example.org, r1@example.org, r2@example.org, r3@example.org, r4@example.org and 1 more",
        "1 delivery of edition 2025-06-16 'sending' since 2025-06-16 06:00 UTC, over 1 hour (the run sending them was killed, or could not record them; the next run sends them, and one handed over before it died may arrive twice): r7@example.org",
    ]


def test_last_due_edition_goes_back_to_the_subscribers_day():
    assert last_due_edition(at(6, 59), "07:00", "UTC", "daily") == ("2025-06-15", at(7, 0, day=15))
    assert last_due_edition(at(12, 0, day=18), "07:00", "UTC", "weekly:mon") == ("2025-06-16", at(7, 0))
    assert EDITION_GRACE == timedelta(hours=1) and SENDING_STUCK_AFTER == timedelta(hours=1)  # what the docs promise


def test_status_check_tells_an_edition_that_did_not_go_out(cli, home, sqlite_engine, smtp_server, tmp_path):
    """Through the real run: one reader sent, one deferred by the server, one left 'sending' by a run that died, one
    never reached; --check names each problem on its own line at 09:00, and is ok once a run has served them."""
    from digest.config import load_settings
    from digest.ingest import import_file
    from digest.pipeline.job import run_job
    from digest.store import deliveries as ledger
    from digest.store.subscribers import SubscriberInput, add_subscriber, get_subscriber

    (home / "digest.toml").write_text('secret_key = "status-test-secret-key"\nfrom_address = "digest@example.org"\nskip_empty = false\n'
                                      f'smtp_host = "{smtp_server.host}"\nsmtp_port = {smtp_server.port}\nsmtp_security = "none"\n', encoding="utf-8")
    settings = load_settings(home, env={})
    papers = tmp_path / "papers.jsonl"
    papers.write_text("".join(json.dumps({"id": f"p{i}", "title": f"Speech recognition study {i}", "abstract": "Speech models."}) + "\n" for i in range(3)))
    import_file(sqlite_engine, papers, at(6, 0))

    def add(email: str) -> int:
        with session_scope(sqlite_engine) as session:
            return add_subscriber(session, email, SubscriberInput(interests=["speech recognition"], send_at="07:00", tz="UTC"), now=at(6, 0)).id

    add("ada@example.org")
    add("bob@example.org")
    smtp_server.rcpt_replies["bob@example.org"] = "451 4.7.1 greylisted"
    report = run_job(sqlite_engine, settings, at(7, 5), fetch=False, sleep=lambda s: None)
    assert (report.sent, report.deferred) == (1, 1)
    cy = add("cy@example.org")  # a run that died after marking cy 'sending'
    rows = ledger.open_deliveries(sqlite_engine, [(cy, "2025-06-16")], at(7, 5), lambda s, e: "<cy@example.org>")
    ledger.mark_sending(sqlite_engine, [rows[(cy, "2025-06-16")].id], at(7, 5))
    add("dee@example.org")  # never reached by any run

    with time_machine.travel(at(7, 30), tick=False):
        assert cli("status", "--check").exit_code == 0  # within the grace period: nothing to say yet
    with time_machine.travel(at(9, 0), tick=False):
        result = cli("status", "--check")
        data = json.loads(cli("status", "--json").output)
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines == [
        "fail: edition 2025-06-16 not sent to 1 due subscriber more than 1 hour after their send time (deferred, last error: "
        f"{smtp_server.host}:{smtp_server.port} refused bob@example.org: 451 4.7.1 greylisted (the server asked us to try later; a run retries it after a wait of 5 to 60 minutes); "
        "to be tried again since 07:10 UTC: no run since?): bob@example.org",
        "fail: edition 2025-06-16 not sent to 1 due subscriber more than 1 hour after their send time (no delivery recorded: no run since their send time?): dee@example.org",
        "fail: 1 delivery of edition 2025-06-16 'sending' since 2025-06-16 07:05 UTC, over 1 hour (the run sending them was killed, or could not record them; the next run sends them, and one handed over before it died may arrive twice): cy@example.org",
    ]
    assert data["ok"] is False and data["problems"] == [line.removeprefix("fail: ") for line in lines]

    del smtp_server.rcpt_replies["bob@example.org"]
    assert run_job(sqlite_engine, settings, at(9, 1), fetch=False).sent == 3  # bob, cy (resumed) and dee
    with time_machine.travel(at(9, 2), tick=False):
        healthy = cli("status", "--check")
    assert healthy.exit_code == 0 and healthy.output.startswith("ok: "), healthy.output
    with session_scope(sqlite_engine) as session:
        assert get_subscriber(session, "cy@example.org").last_digest_at is not None


@pytest.mark.parametrize("shift, line", [
    (0, None),
    (7200, "s ahead of the database's: it sends editions early"),
    (-600, "s behind the database's: it sends editions late"),
], ids=["in-time", "2h-ahead", "10min-behind"])
def test_status_check_names_a_host_clock_off_from_the_databases(cli, postgres_url, shift, line):
    """Several hosts on one PostgreSQL database: the leases use the database's clock, but who is due and each
    reader's window use the host's. A host whose clock is off sent editions early or late with `status --check` ok."""
    from datetime import timedelta

    from digest.store import init_db, open_engine

    engine = open_engine(postgres_url)
    init_db(engine)
    engine.dispose()
    with time_machine.travel(datetime.now(timezone.utc) + timedelta(seconds=shift), tick=True):
        result = cli("--database-url", postgres_url, "status", "--check")
    if line is None:
        assert "clock" not in result.output, result.output
    else:
        assert result.exit_code == 1 and any(out.startswith("fail: this host's clock is ") and line in out and "(run NTP" in out for out in result.output.splitlines()), result.output
        assert abs(int(result.output.split("clock is ")[1].split("s ")[0]) - abs(shift)) <= 5, result.output
