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
    assert "quiet: no arXiv announcement (weekend)" in next(l for l in lines if l.startswith("arxiv:cs.CL"))
    assert "EMPTY after an announcement" in next(l for l in lines if l.startswith("arxiv:cs.LG"))
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


# --- when `digest run` and the daemon's send tick fetch ------------------------------------------------

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
], ids=["no-sources", "files-only", "fetched-after-schedule", "schedule-passed", "never-fetched", "failed-retry",
        "failed-retried-5-min-ago", "broken-source-waits"])
def test_fetch_due_follows_schedule_and_retries_failures(sqlite_engine, sources, due):
    from digest.config import load_settings
    from digest.schedule import fetch_due

    for i, (kind, state) in enumerate(sources):
        add_source(sqlite_engine, f"s{i}", kind=kind, **state)
    assert fetch_due(sqlite_engine, load_settings(env={}), NOW) is due
