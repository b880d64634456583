"""The one edition planner: the window rule, and `digest rank`, `digest preview` and the real send agreeing on the
candidates of an edition, for a daily subscriber, a weekly one and a daily one after downtime. Real SQLite file,
the real CLI under a fixed clock (time_machine), the outbox transport for the real send."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import time_machine

from digest.config import load_settings
from digest.ingest import import_file
from digest.models import Paper, Subscriber
from digest.pipeline.job import preview_email
from digest.pipeline.plan import EditionPlan, due_subscribers, edition_window, plan_edition, plan_editions
from digest.store import deliveries as ledger
from digest.store import init_db, open_engine, session_scope
from digest.store.subscribers import SubscriberInput, add_subscriber, get_subscriber

FRIDAY = datetime(2025, 6, 13, 9, 0, tzinfo=timezone.utc)  # a Friday, after the subscribers' 07:00 UTC send time
TOPIC = "sparse autoencoder features"


# --- the window rule -----------------------------------------------------------------------------------


@pytest.mark.parametrize("frequency, last_digest, since", [
    ("daily", None, FRIDAY - timedelta(days=3)),  # a new subscriber: window_days back
    ("weekly:fri", None, FRIDAY - timedelta(days=7)),  # a weekly edition covers its week
    ("daily", FRIDAY - timedelta(days=1), FRIDAY - timedelta(days=1)),  # since the last digest...
    ("daily", FRIDAY - timedelta(days=6), FRIDAY - timedelta(days=3)),  # ...but never more than window_days back
    ("weekly:fri", FRIDAY - timedelta(days=9), FRIDAY - timedelta(days=7)),
    ("weekly:fri", FRIDAY - timedelta(days=2), FRIDAY - timedelta(days=2)),  # a send by date, or a changed frequency
], ids=["daily-new", "weekly-new", "daily-yesterday", "daily-after-downtime", "weekly-long-ago", "weekly-recent"])
def test_edition_window_weekly_seven_days_else_window_days_never_before_the_last_digest(frequency, last_digest, since):
    subscriber = Subscriber(email="w@example.org", frequency=frequency, last_digest_at=last_digest)
    assert edition_window(subscriber, FRIDAY, window_days=3) == (since, FRIDAY)


# --- rank, preview and the real send agree ---------------------------------------------------------------


def write_papers(path: Path, prefix: str, count: int = 3) -> Path:
    """Papers every subscriber here is interested in (each holds the whole interest), so each edition shows all
    of its candidates: what an edition shows is then exactly what its plan let in."""
    lines = [json.dumps({"id": f"{prefix}-{i}", "title": f"Sparse autoencoder features of language models ({prefix} {i})",
                         "abstract": f"We train a sparse autoencoder and study its features, variant {prefix}{i}."}) for i in range(count)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def store(home: Path):
    (home / "digest.toml").write_text('secret_key = "plan-test-secret-key-0123456789"\nfrom_address = "digest@example.org"\n', encoding="utf-8")
    settings = load_settings(home, env={})
    engine = open_engine(settings.database_url)
    init_db(engine)
    yield settings, engine
    engine.dispose()


def add(engine, email: str, frequency: str, created: datetime, last_digest: datetime | None = None) -> None:
    with session_scope(engine) as session:
        sub = add_subscriber(session, email, SubscriberInput(interests=[TOPIC], max_papers=50, frequency=frequency, send_at="07:00", tz="UTC"), now=created)
        sub.last_digest_at = last_digest


def import_at(engine, tmp_path: Path, prefix: str, seen: datetime) -> set[str]:
    import_file(engine, write_papers(tmp_path / f"{prefix}.jsonl", prefix), seen)
    return {f"{prefix}-{i}" for i in range(3)}


def ranked(cli, email: str) -> tuple[str, set[str]]:
    """`digest rank`: its header line and the papers it puts in the digest."""
    text = cli("rank", email)
    assert text.exit_code == 0, text.output
    listed = cli("rank", email, "--json", "--limit", "1000")
    assert listed.exit_code == 0, listed.output
    return text.output.splitlines()[0], {e["id"] for e in json.loads(listed.output) if e["in_digest"]}


def previewed(cli, engine, settings, email: str, now: datetime) -> set[str]:
    """`digest preview`: the papers of the email it shows (the same function behind the command)."""
    shown = cli("preview", email)
    assert shown.exit_code == 0, shown.output
    _, _, result = preview_email(engine, settings, now, email)
    assert f"{len(result.picks)} picks" in shown.output
    return {r.paper.ident for r in result.picks}


def sent(cli, engine, email: str) -> set[str]:
    """The real `digest send`: the papers the ledger records as carried by the email that went out."""
    result = cli("send", "--only", email)
    assert result.exit_code == 0, result.output
    with session_scope(engine) as session:
        sub = get_subscriber(session, email)
        rows = [d for d in ledger.deliveries_for(engine, subscriber_id=sub.id) if d.state == "sent"]
        return {session.get(Paper, p).ident for p in rows[-1].papers}


def agree(cli, engine, settings, email: str, now: datetime, expected: set[str], since: datetime) -> None:
    with time_machine.travel(now, tick=False):
        header, in_rank = ranked(cli, email)
        in_preview = previewed(cli, engine, settings, email, now)
        in_send = sent(cli, engine, email)
    assert header.startswith(f"{email}: {len(expected)} candidate papers first seen since {since:%Y-%m-%d %H:%M} UTC"), header
    assert in_rank == in_preview == in_send == expected


def test_weekly_subscriber_rank_sees_the_week_as_preview_and_send_do(cli, store, tmp_path) -> None:
    """The issue's case: papers first seen 5 days ago and a weekly:fri subscriber. `digest rank` used window_days
    (3) and found nothing; preview and the send used the week."""
    settings, engine = store
    add(engine, "w@example.org", "weekly:fri", created=FRIDAY - timedelta(days=20))
    import_at(engine, tmp_path, "old", FRIDAY - timedelta(days=9))  # before the week: in no edition
    week = import_at(engine, tmp_path, "week", FRIDAY - timedelta(days=5))
    agree(cli, engine, settings, "w@example.org", FRIDAY, week, since=FRIDAY - timedelta(days=7))


def test_daily_subscriber_rank_preview_and_send_see_what_came_since_the_last_digest(cli, store, tmp_path) -> None:
    settings, engine = store
    add(engine, "d@example.org", "daily", created=FRIDAY - timedelta(days=20))
    yesterday = FRIDAY - timedelta(days=1)
    first = import_at(engine, tmp_path, "thu", yesterday - timedelta(hours=3))
    agree(cli, engine, settings, "d@example.org", yesterday, first, since=yesterday - timedelta(days=3))
    today = import_at(engine, tmp_path, "fri", FRIDAY - timedelta(hours=3))
    agree(cli, engine, settings, "d@example.org", FRIDAY, today, since=yesterday)


def test_after_downtime_rank_preview_and_send_see_window_days_back_not_everything_since_the_last_digest(cli, store, tmp_path) -> None:
    settings, engine = store
    add(engine, "d@example.org", "daily", created=FRIDAY - timedelta(days=20), last_digest=FRIDAY - timedelta(days=6))
    import_at(engine, tmp_path, "down", FRIDAY - timedelta(days=4))  # after the last digest, but past window_days
    recent = import_at(engine, tmp_path, "recent", FRIDAY - timedelta(days=2))
    agree(cli, engine, settings, "d@example.org", FRIDAY, recent, since=FRIDAY - timedelta(days=3))


def test_plan_editions_of_a_daily_run_match_each_plan_alone(store, tmp_path) -> None:
    """The batch form (the daily run, one candidate pool) and the single plan (preview, rank) give each subscriber
    the same window, candidates and profile."""
    settings, engine = store
    add(engine, "w@example.org", "weekly:fri", created=FRIDAY - timedelta(days=20))
    add(engine, "d@example.org", "daily", created=FRIDAY - timedelta(days=20), last_digest=FRIDAY - timedelta(days=1))
    add(engine, "n@example.org", "daily", created=FRIDAY - timedelta(days=20))
    for prefix, days in (("a", 9), ("b", 5), ("c", 2), ("d", 0.5)):
        import_at(engine, tmp_path, prefix, FRIDAY - timedelta(days=days))
    dues = due_subscribers(engine, settings, FRIDAY)
    assert [d.subscriber.email for d in dues] == ["w@example.org", "d@example.org", "n@example.org"]
    batch = plan_editions(engine, settings, FRIDAY, dues)
    for due, plan in zip(dues, batch):
        assert isinstance(plan, EditionPlan)
        alone = plan_edition(engine, due.subscriber, FRIDAY, settings)
        assert (plan.edition, plan.since, plan.until, plan.candidates, plan.profile) == (alone.edition, alone.since, alone.until, alone.candidates, alone.profile)
    shown = {p.subscriber.email: sorted(c.paper.ident[0] for c in p.candidates) for p in batch if isinstance(p, EditionPlan)}
    assert shown == {"w@example.org": ["b"] * 3 + ["c"] * 3 + ["d"] * 3, "d@example.org": ["d"] * 3, "n@example.org": ["c"] * 3 + ["d"] * 3}


def test_plan_editions_a_profile_that_cannot_be_built_is_that_subscriber_alone(store, tmp_path) -> None:
    import sqlalchemy as sa

    settings, engine = store
    add(engine, "a@example.org", "daily", created=FRIDAY - timedelta(days=20))
    add(engine, "b@example.org", "daily", created=FRIDAY - timedelta(days=20))
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE subscriber SET interests = '5' WHERE email = 'a@example.org'"))
    plans = plan_editions(engine, settings, FRIDAY, due_subscribers(engine, settings, FRIDAY))
    assert [type(p).__name__ for p in plans] == ["Unplanned", "EditionPlan"]
    assert isinstance(plans[0].error, TypeError) and plans[0].edition == "2025-06-13"
    assert plan_editions(engine, settings, FRIDAY, []) == []
    with pytest.raises(TypeError):
        plan_edition(engine, plans[0].subscriber, FRIDAY, settings)


# --- an edition is never sent before its day ---------------------------------------------------------------


def add_in(engine, email: str, tz: str) -> None:
    with session_scope(engine) as session:
        add_subscriber(session, email, SubscriberInput(interests=[TOPIC], send_at="07:00", tz=tz), now=FRIDAY - timedelta(days=20))


def test_due_subscribers_by_date_leaves_out_those_whose_day_has_not_come(store, tmp_path, caplog) -> None:
    """Friday 12:00 UTC is already Saturday in Kiritimati (UTC+14): Saturday's edition is theirs to have, not the
    others'; sent early, it would have been their newest and stopped their daily editions until then."""
    settings, engine = store
    noon = FRIDAY.replace(hour=12)
    add_in(engine, "utc@example.org", "UTC")
    add_in(engine, "kiri@example.org", "Pacific/Kiritimati")
    saturday = (FRIDAY + timedelta(days=1)).date().isoformat()
    with caplog.at_level("WARNING", logger="digest.pipeline"):
        dues = due_subscribers(engine, settings, noon, edition=saturday)
    assert [(d.subscriber.email, d.edition) for d in dues] == [("kiri@example.org", saturday)]
    [warning] = [r.digest_fields for r in caplog.records if getattr(r, "digest_event", "") == "edition-not-begun"]
    assert warning["subscribers"] == 1 and "utc@example.org" in warning["note"]
    assert [d.subscriber.email for d in due_subscribers(engine, settings, noon, edition="2025-06-13")] == ["utc@example.org", "kiri@example.org"]


@pytest.mark.parametrize("only", [None, "utc@example.org"], ids=["everyone", "only"])
def test_due_subscribers_by_date_refuses_a_day_that_has_come_for_nobody(store, only) -> None:
    from digest.errors import InputError

    settings, engine = store
    add_in(engine, "utc@example.org", "UTC")
    add_in(engine, "ny@example.org", "America/New_York")
    with pytest.raises(InputError, match=r"edition 2025-06-14 is in the future for .*2025-06-13"):
        due_subscribers(engine, settings, FRIDAY, only=only, edition="2025-06-14")
    assert ledger.deliveries_for(engine, edition="2025-06-14") == []
