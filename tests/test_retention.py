"""digest.store.retention and `digest prune`: what goes, what never goes (a paper an edition page, a vote, a seed or the
"never send a paper twice" rule needs), batches as short transactions that other connections work between, and a prune
killed mid-way leaving a consistent database. Real SQLite files and PostgreSQL."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
import time_machine

from digest.errors import ConfigError, TokenError
from digest.models import Paper
from digest.sources import ParsedPaper
from digest.store import deliveries as ledger
from digest.store import init_db, open_engine, session_scope
from digest.store.candidates import sent_among
from digest.store.days import papers_by_ids
from digest.store.editions import edition_contents, sent_edition
from digest.store.embeddings import save_paper_vectors
from digest.store.papers import upsert_papers
from digest.store.retention import check_horizons, prune_daily, prune_store
from digest.store.search import search_papers
from digest.store.sources import ensure_source
from digest.store.subscribers import (
    SubscriberInput,
    add_subscriber,
    confirm_subscriber,
    get_subscriber,
    record_feedback,
    request_confirmation,
    set_status,
    spend_token,
    subscribe_pending,
    update_subscriber,
)
from digest.tokens import make_token, read_token

NOW = datetime(2025, 6, 1, 6, 0, tzinfo=timezone.utc)
KEEP, LEDGER, WINDOW = 30, 60, 7
ROOT = Path(__file__).resolve().parent.parent


IDENTS: dict[str, str] = {}


def paper(name: str, title: str | None = None) -> ParsedPaper:
    ident = IDENTS.setdefault(name, f"2501.{len(IDENTS):05d}")
    return ParsedPaper(key=f"arxiv:{ident}", ident=ident, arxiv_id=ident, version=1, title=title or f"A paper called {name}",
                       abstract=f"The abstract of {name}.", url=f"https://arxiv.org/abs/{ident}")


def store(engine, source_id: int, names: list[str], when: datetime, **titles: str) -> None:
    upsert_papers(engine, source_id, [paper(n, titles.get(n)) for n in names], when)


def ids_of(engine) -> dict[str, int]:
    """The stored papers' ids by the names `paper` was given."""
    names = {ident: name for name, ident in IDENTS.items()}
    with engine.connect() as conn:
        return {names[ident]: pid for pid, ident in conn.execute(sa.text("SELECT id, ident FROM paper"))}


def send(engine, subscriber_id: int, when: datetime, picks: list[int], trending: list[int] = ()) -> str:
    """One edition recorded as the delivery loop records it: the row opened, then 'sent' with its contents."""
    edition = when.date().isoformat()
    row = ledger.open_deliveries(engine, [(subscriber_id, edition)], when, lambda s, e: f"<{s}.{e}@example.org>")[(subscriber_id, edition)]
    contents = edition_contents([(pid, ("matches your interest",)) for pid in picks], list(trending))
    ledger.write(engine, lambda conn: ledger.record_sent_many(conn, [(row.id, subscriber_id, [*picks, *trending], 1)], when, when, contents=[contents]))
    return edition


def table_count(engine, table: str) -> int:
    with engine.connect() as conn:
        return conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar_one()


@dataclass
class World:
    engine: sa.engine.Engine
    ids: dict[str, int]
    ada: int
    bob: int
    editions: dict[str, str]


@pytest.fixture
def world(engine) -> World:
    """Papers of every kind the rules tell apart, Ada's ledger of a few editions, and Bob's seed and unfinished one."""
    day = timedelta(days=1)
    with session_scope(engine) as session:
        source_id = ensure_source(session, "arxiv", "arxiv-rss", "https://rss.arxiv.org/rss/cs.LG", NOW - 200 * day).id
    store(engine, source_id, ["old-unsent", "old-sent-long-ago", "old-voted", "old-seed", "old-seen-again"], NOW - 100 * day,
          **{"old-unsent": "Zygomorphic flowers of the old unsent paper"})
    store(engine, source_id, ["old-sent-recently", "old-trending"], NOW - 40 * day)
    store(engine, source_id, ["young-sent"], NOW - 2 * day)
    store(engine, source_id, ["young", "old-seen-again"], NOW - 1 * day)  # a source lists old-seen-again again
    ids = ids_of(engine)
    with session_scope(engine) as session:
        save_paper_vectors(session, [(ids["old-unsent"], "h", np.ones(4, dtype=np.float32)), (ids["old-voted"], "h", np.ones(4, dtype=np.float32))], "m", NOW)
        ada = add_subscriber(session, "ada@example.org", SubscriberInput(interests=["flowers"]), now=NOW - 150 * day).id
        seed = f"arXiv:{paper('old-seed').ident}v1"  # as a person writes it
        bob = add_subscriber(session, "bob@example.org", SubscriberInput(interests=["bees"], seed_papers=[seed]), now=NOW - 150 * day).id
    editions = {
        "long-ago": send(engine, ada, NOW - 99 * day, [ids["old-sent-long-ago"], ids["old-voted"]]),
        "recent": send(engine, ada, NOW - 39 * day, [ids["old-sent-recently"]], trending=[ids["old-trending"]]),
        "yesterday": send(engine, ada, NOW - 1 * day, [ids["young-sent"]]),
    }
    skipped = (NOW - 98 * day).date().isoformat()
    rows = ledger.open_deliveries(engine, [(bob, skipped)], NOW - 98 * day, lambda s, e: f"<{s}.{e}@x>")
    ledger.write(engine, lambda conn: ledger.record_skipped_row(conn, rows[(bob, skipped)].id, "nothing new", NOW - 98 * day))
    deferred = (NOW - 97 * day).date().isoformat()  # unfinished: `digest status` reports it, a prune leaves it
    rows = ledger.open_deliveries(engine, [(bob, deferred)], NOW - 97 * day, lambda s, e: f"<{s}.{e}@x>")
    ledger.write(engine, lambda conn: ledger.record_deferred(conn, rows[(bob, deferred)].id, "451 try later", 1, NOW - 97 * day))
    with session_scope(engine) as session:
        record_feedback(session, get_subscriber(session, "ada@example.org"), session.get(Paper, ids["old-voted"]), 1, NOW - 98 * day)
    editions.update(skipped=skipped, deferred=deferred)
    return World(engine, ids, ada, bob, editions)


def prune(engine, **changes):
    options = {"keep_days": KEEP, "keep_ledger_days": LEDGER, "candidate_days": WINDOW, **changes}
    return prune_store(engine, NOW, **options)


# --- what goes, what stays ----------------------------------------------------------------------------


def test_prune_store_deletes_only_what_nothing_needs(world):
    engine, ids = world.engine, world.ids
    assert search_papers(engine, "zygomorphic").total == 1  # indexed before the prune
    report = prune(engine)
    assert sorted(ids_of(engine)) == sorted(["old-voted", "old-seed", "old-seen-again", "old-sent-recently", "old-trending", "young-sent", "young"])
    assert (report.papers, report.embeddings, report.deliveries, report.sent_rows) == (2, 1, 2, 2)
    assert report.finished and report.batches >= 2
    left = {d.edition: d.state for d in ledger.deliveries_for(engine)}
    assert left == {world.editions["recent"]: "sent", world.editions["yesterday"]: "sent", world.editions["deferred"]: "deferred"}
    assert search_papers(engine, "zygomorphic").total == 0  # its search-index row went with it
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT paper_id FROM paper_embedding").scalars().all() == [ids["old-voted"]]
        assert conn.exec_driver_sql("SELECT count(*) FROM paper_source").scalar_one() == 7
        if engine.dialect.name == "sqlite":
            assert conn.exec_driver_sql("SELECT count(*) FROM paper_search").scalar_one() == conn.exec_driver_sql("SELECT count(*) FROM paper").scalar_one()
    assert prune(engine).summary().startswith("deleted 0 deliveries")  # nothing more to do


def test_prune_store_keeps_every_paper_a_kept_edition_page_shows(world):
    engine = world.engine
    prune(engine)
    for name in ("recent", "yesterday"):
        sent = sent_edition(engine, world.ada, world.editions[name])
        assert sent is not None and sent.picks is not None
        shown = [pid for pid, _ in sent.picks] + list(sent.trending or ())
        assert [c.paper.id for c in papers_by_ids(engine, shown)] == shown  # every card of the page is still there
    assert sent_edition(engine, world.ada, world.editions["long-ago"]) is None  # past keep_ledger_days: gone


def test_prune_store_keeps_the_record_that_stops_a_second_send(world):
    engine, ids = world.engine, world.ids
    prune(engine)
    with session_scope(engine) as session:
        assert sent_among(session, [world.ada, world.bob], [ids["young-sent"], ids["young"]]) == {world.ada: {ids["young-sent"]}, world.bob: set()}


def test_prune_store_keeps_votes_and_seeds_whatever_their_age(world):
    engine, ids = world.engine, world.ids
    prune(engine, keep_days=WINDOW + 1, keep_ledger_days=WINDOW + 1)  # the shortest horizons allowed
    left = ids_of(engine)
    assert {"old-voted", "old-seed", "old-seen-again", "young", "young-sent"} <= set(left)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT paper_id, value FROM feedback").all() == [(ids["old-voted"], 1)]


def test_prune_store_dry_run_counts_what_the_prune_deletes_and_changes_nothing(world):
    engine = world.engine
    before = {t: table_count(engine, t) for t in ("paper", "delivery", "sent_paper", "paper_embedding", "paper_source")}
    dry = prune(engine, dry_run=True)
    assert {t: table_count(engine, t) for t in before} == before
    assert dry.summary().startswith("would delete 2 deliveries")
    done = prune(engine)
    assert (dry.papers, dry.embeddings, dry.deliveries, dry.sent_rows) == (done.papers, done.embeddings, done.deliveries, done.sent_rows) == (2, 1, 2, 2)


def test_prune_store_with_horizons_at_zero_keeps_every_paper_and_delivery(world):
    deliveries = table_count(world.engine, "delivery")
    report = prune(world.engine, keep_days=0, keep_ledger_days=0)
    assert report.summary().endswith("kept every paper and delivery: keep_days and keep_ledger_days are 0")
    assert table_count(world.engine, "paper") == 9 and table_count(world.engine, "delivery") == deliveries


def test_prune_store_ledger_only_leaves_papers_and_papers_only_leaves_the_ledger(world):
    engine = world.engine
    assert prune(engine, keep_days=0).deliveries == 2 and table_count(engine, "paper") == 9
    assert prune(engine, keep_ledger_days=0).papers == 2


@pytest.mark.parametrize(("keep_days", "ledger_days", "wrong"), [
    pytest.param(7, 0, "keep_days is 7", id="papers-inside-the-weekly-window"),
    pytest.param(0, 3, "keep_ledger_days is 3", id="ledger-inside-the-window"),
    pytest.param(-1, 0, "keep_days is -1", id="negative"),
])
def test_check_horizons_refuses_a_horizon_the_next_editions_need(keep_days, ledger_days, wrong):
    with pytest.raises(ConfigError, match=wrong):
        check_horizons(keep_days, ledger_days, WINDOW)
    check_horizons(0, 0, WINDOW)
    check_horizons(WINDOW + 1, WINDOW + 1, WINDOW)


# --- batches, other connections, a prune killed mid-way ---------------------------------------------------------


def many_old_papers(engine, count: int) -> int:
    with session_scope(engine) as session:
        source_id = ensure_source(session, "file:bulk.jsonl", "file", "bulk.jsonl", NOW - timedelta(days=200)).id  # never fetched
    store(engine, source_id, [f"bulk-{n}" for n in range(count)], NOW - timedelta(days=100))
    return source_id


def test_prune_store_commits_each_batch_while_others_read_and_write(engine):
    """Between two batches another connection writes (a fetch) and reads (the front page): the prune never holds the
    write lock across batches. The prune waits after its second batch until the writer has committed; were the lock
    held from batch to batch, the writer could not commit and the wait would end in failure."""
    source_id = many_old_papers(engine, 120)
    other = open_engine(engine.url.render_as_string(hide_password=False))
    wrote, errors = threading.Event(), []
    batches: list[int] = []

    def writer() -> None:
        try:
            upsert_papers(other, source_id, [paper("fresh")], NOW)
            search_papers(other, "paper")
            wrote.set()
        except Exception as exc:  # noqa: BLE001 - the test's failure message
            errors.append(exc)

    def on_batch(kind: str, rows: int) -> None:
        batches.append(rows)
        if len(batches) == 2:
            threading.Thread(target=writer).start()
            assert wrote.wait(30), f"another connection could not write between two batches: {errors}"

    report = prune(engine, batch=25, on_batch=on_batch)
    other.dispose()
    assert not errors and wrote.is_set()
    assert batches == [25, 25, 25, 25, 20] and report.papers == 120 and report.batches == 5
    assert "fresh" in ids_of(engine)


def test_prune_store_stops_between_batches_at_its_budget_and_the_next_goes_on(engine):
    many_old_papers(engine, 60)
    stop = threading.Event()
    first = prune(engine, batch=10, stop=stop, on_batch=lambda kind, rows: stop.set())
    assert (first.papers, first.finished) == (10, False)
    assert "stopped before the end" in first.summary()
    second = prune(engine, batch=10)
    assert (second.papers, second.finished) == (50, True) and table_count(engine, "paper") == 0


KILLED_PRUNE = """
import sys, time
from datetime import datetime
from digest.store import open_engine
from digest.store.retention import prune_store
engine = open_engine(sys.argv[1])
print("started", flush=True)
prune_store(engine, datetime.fromisoformat(sys.argv[2]), keep_days=30, keep_ledger_days=60, candidate_days=7, batch=5,
            on_batch=lambda kind, rows: time.sleep(0.02))
print("finished", flush=True)
"""


def test_a_prune_killed_mid_way_leaves_a_consistent_database_and_the_next_finishes(world):
    engine = world.engine
    many_old_papers(engine, 400)
    total = table_count(engine, "paper")
    url = engine.url.render_as_string(hide_password=False)
    proc = subprocess.Popen([sys.executable, "-c", KILLED_PRUNE, url, NOW.isoformat()], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "started"
        deadline = time.monotonic() + 60
        while table_count(engine, "paper") > total - 50 and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    left = table_count(engine, "paper")
    assert total - 400 < left <= total - 50, "the prune was not killed mid-way"
    assert_consistent(engine)
    report = prune(engine)
    assert report.finished and table_count(engine, "paper") == 7  # what the world keeps, with every bulk paper gone
    assert_consistent(engine)
    sent = sent_edition(engine, world.ada, world.editions["recent"])
    assert sent is not None and len(papers_by_ids(engine, sent.papers)) == len(sent.papers)


def assert_consistent(engine) -> None:
    """No row points at a deleted one, and SQLite's file and search index are whole."""
    with engine.connect() as conn:
        orphans = {
            "paper_source": "SELECT count(*) FROM paper_source s LEFT JOIN paper p ON p.id = s.paper_id WHERE p.id IS NULL",
            "sent_paper": "SELECT count(*) FROM sent_paper s LEFT JOIN paper p ON p.id = s.paper_id WHERE p.id IS NULL",
            "sent_paper delivery": "SELECT count(*) FROM sent_paper s LEFT JOIN delivery d ON d.id = s.delivery_id WHERE s.delivery_id IS NOT NULL AND d.id IS NULL",
            "feedback": "SELECT count(*) FROM feedback f LEFT JOIN paper p ON p.id = f.paper_id WHERE p.id IS NULL",
            "paper_embedding": "SELECT count(*) FROM paper_embedding e LEFT JOIN paper p ON p.id = e.paper_id WHERE p.id IS NULL",
        }
        assert {name: conn.exec_driver_sql(sql).scalar_one() for name, sql in orphans.items()} == dict.fromkeys(orphans, 0)
        if engine.dialect.name == "sqlite":
            assert conn.exec_driver_sql("PRAGMA integrity_check").scalar_one() == "ok"
            assert conn.exec_driver_sql("PRAGMA foreign_key_check").all() == []
            conn.exec_driver_sql("INSERT INTO paper_search(paper_search) VALUES ('integrity-check')")  # raises if the index is damaged
            indexed = conn.exec_driver_sql("SELECT count(*) FROM paper_search WHERE rowid NOT IN (SELECT id FROM paper)").scalar_one()
            assert indexed == 0


# --- seeds named while a prune runs -----------------------------------------------------------------------


def test_prune_store_keeps_a_paper_named_as_a_seed_during_the_prune(engine):
    """After the prune's first batch, one subscriber names a paper of a later batch as a seed, a new subscriber
    another, and a confirmed subscribe request a third: none of the three is deleted."""
    many_old_papers(engine, 60)
    with session_scope(engine) as session:
        add_subscriber(session, "ada@example.org", SubscriberInput(interests=["flowers"]), now=NOW - timedelta(days=150))
        subscribe_pending(session, "carol@example.org", SubscriberInput(interests=["bees"]), NOW - timedelta(days=1))
    names = {ident: name for name, ident in IDENTS.items()}
    named = {}

    def on_batch(kind: str, rows: int) -> None:
        if named:
            return
        with engine.connect() as conn:  # the last papers of the prune's order: a later batch's
            *_, dan, ada, carol_seed = conn.exec_driver_sql("SELECT ident FROM paper ORDER BY id").scalars()
        with session_scope(engine) as session:
            update_subscriber(session, get_subscriber(session, "ada@example.org"), SubscriberInput(seed_papers=[f"arXiv:{ada}"]), now=NOW)
            add_subscriber(session, "dan@example.org", SubscriberInput(seed_papers=[f"https://arxiv.org/abs/{dan}"]), now=NOW)
            row = subscribe_pending(session, "carol@example.org", SubscriberInput(seed_papers=[carol_seed]), NOW)
            confirm_subscriber(session, row.subscriber, NOW, row.request)
        named.update({"ada": names[ada], "dan": names[dan], "carol": names[carol_seed]})

    report = prune(engine, batch=10, on_batch=on_batch)
    assert report.finished and report.papers == 57
    assert set(ids_of(engine)) == set(named.values())


def test_prune_store_reads_every_seed_list_once_not_once_a_batch(engine):
    """The seed lists of all the subscribers are read once per prune; each batch's write transaction reads only the
    subscribers whose profile changed since (at 100,000 subscribers, a full read took 125 ms of each batch's write
    lock: benchmarks/prune_seeds.py)."""
    many_old_papers(engine, 60)
    with session_scope(engine) as session:
        for n in range(5):
            add_subscriber(session, f"reader{n}@example.org", SubscriberInput(interests=["flowers"]), now=NOW - timedelta(days=150))
    statements: list[str] = []

    def seen(conn, cursor, statement, parameters, context, executemany) -> None:
        statements.append(" ".join(statement.split()))

    sa.event.listen(engine, "before_cursor_execute", seen)
    try:
        report = prune(engine, batch=10)
    finally:
        sa.event.remove(engine, "before_cursor_execute", seen)
    assert report.papers == 60 and report.batches == 6
    every_seed_list = [s for s in statements if "seed_papers" in s and "FROM subscriber" in s and "WHERE" not in s]
    assert len(every_seed_list) == 1, every_seed_list


# --- the small tables: spent links, expired requests, addresses that never confirmed ------------------------

CAPS = {"interval": 600, "daily_limit": 3}  # the defaults: one per 10 minutes, 3 a day


def ask(engine, address: str, when: datetime, **fields) -> int | None:
    """A subscribe request as the web page makes it (the caps, then the request): its request id, or None if capped."""
    with session_scope(engine) as session:
        asked = request_confirmation(session, address, SubscriberInput(interests=["bees"], **fields), when, **CAPS)
        return asked.request if asked is not None else None


def addresses(engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.exec_driver_sql("SELECT email FROM subscriber").scalars())


def keep_all(engine, **changes):
    """A prune with keep_days and keep_ledger_days at 0 (keep every paper and delivery)."""
    return prune(engine, **{"keep_days": 0, "keep_ledger_days": 0, **changes})


def test_prune_store_deletes_spent_confirmation_links_once_they_cannot_verify(engine):
    with session_scope(engine) as session:
        for days in (1, 7, 9, 100):
            assert spend_token(session, f"link-{days}", NOW - timedelta(days=days))
    dry = keep_all(engine, dry_run=True)
    assert dry.used_tokens == 2 and table_count(engine, "used_token") == 4
    assert "would delete 2 spent confirmation links" in dry.summary()
    report = keep_all(engine, batch=1)
    assert report.used_tokens == 2 and report.batches == 2 and report.papers == 0
    with engine.connect() as conn:
        assert set(conn.exec_driver_sql("SELECT digest FROM used_token").scalars()) == {"link-1", "link-7"}
    assert keep_all(engine).used_tokens == 0


def test_a_spent_link_whose_row_was_pruned_no_longer_verifies(engine):
    """The horizon follows the confirmation link's own: a link spent just past it was signed at the latest when spent,
    so it expired before its row goes, and a second click gets "expired", never a second use."""
    spent = NOW - timedelta(days=8, minutes=1)
    with time_machine.travel(spent, tick=False):
        token = make_token("test-secret-key-0123456789", "confirm", 1, 1, request=1)
        claim = read_token("test-secret-key-0123456789", "confirm", token)
    with session_scope(engine) as session:
        spend_token(session, claim.digest, spent)
    assert keep_all(engine).used_tokens == 1 and table_count(engine, "used_token") == 0
    with time_machine.travel(NOW, tick=False), pytest.raises(TokenError, match="expired"):
        read_token("test-secret-key-0123456789", "confirm", token)


def test_prune_store_deletes_subscribe_requests_whose_link_expired(engine):
    ask(engine, "ada@example.org", NOW - timedelta(days=9))
    waiting = ask(engine, "bob@example.org", NOW - timedelta(days=6))
    ask(engine, "carol@example.org", NOW - timedelta(days=10))
    carol = ask(engine, "carol@example.org", NOW - timedelta(days=5))
    assert table_count(engine, "pending_profile") == 4
    assert keep_all(engine, dry_run=True).requests == 2 and table_count(engine, "pending_profile") == 4
    report = keep_all(engine)
    assert report.requests == 2 and table_count(engine, "pending_profile") == 2
    with session_scope(engine) as session:  # the requests whose link works are still there to confirm
        for address, request in (("bob@example.org", waiting), ("carol@example.org", carol)):
            sub = confirm_subscriber(session, get_subscriber(session, address), NOW, request)
            assert (sub.status, sub.interests) == ("active", ["bees"])
    assert addresses(engine) == {"ada@example.org", "bob@example.org", "carol@example.org"}  # asked 9 days ago: kept for now


@pytest.fixture
def strangers(engine):
    """Pending subscribers of every kind: asked on the web once long ago (the one to delete), and the ones that stay."""
    day = timedelta(days=1)
    with session_scope(engine) as session:
        source_id = ensure_source(session, "arxiv", "arxiv-rss", "https://rss.arxiv.org/rss/cs.LG", NOW - 200 * day).id
    store(engine, source_id, ["liked", "seeded"], NOW - day)
    ids = ids_of(engine)
    ask(engine, "stranger@example.org", NOW - 40 * day)
    ask(engine, "twice@example.org", NOW - 40 * day)
    ask(engine, "twice@example.org", NOW - 20 * day)  # a link sent 20 days ago: kept a while longer
    ask(engine, "lately@example.org", NOW - 2 * day)
    # seed papers ticked on the form: whoever filled it in's, not a reader's (kept, they kept any stranger's address)
    ask(engine, "seeds@example.org", NOW - 40 * day, seed_papers=[IDENTS["seeded"]])
    ask(engine, "voted@example.org", NOW - 40 * day)
    ask(engine, "ledger@example.org", NOW - 40 * day)
    ask(engine, "confirmed@example.org", NOW - 60 * day)
    with session_scope(engine) as session:
        record_feedback(session, get_subscriber(session, "voted@example.org"), session.get(Paper, ids["liked"]), 1, NOW - 39 * day)
        confirmed = get_subscriber(session, "confirmed@example.org")
        confirm_subscriber(session, confirmed, NOW - 59 * day, None)  # confirmed once, then pending again by hand
        set_status(session, confirmed, "pending", NOW - 50 * day)
        add_subscriber(session, "by-hand@example.org", SubscriberInput(), status="pending", now=NOW - 60 * day)  # the operator's
        add_subscriber(session, "never-asked@example.org", SubscriberInput(), status="unsubscribed", now=NOW - 60 * day)
        ledger_id = get_subscriber(session, "ledger@example.org").id
    edition = (NOW - 39 * day).date().isoformat()
    ledger.open_deliveries(engine, [(ledger_id, edition)], NOW - 39 * day, lambda s, e: f"<{s}.{e}@x>")
    return engine


def test_prune_store_deletes_an_address_that_never_confirmed_a_month_after_its_last_link(strangers):
    engine = strangers
    everyone = addresses(engine)
    dry = keep_all(engine, dry_run=True)
    assert dry.unconfirmed == 2 and addresses(engine) == everyone
    report = keep_all(engine)
    assert report.unconfirmed == 2 and "2 addresses that never confirmed" in report.summary()
    assert addresses(engine) == everyone - {"stranger@example.org", "seeds@example.org"}
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM pending_profile p LEFT JOIN subscriber s ON s.id = p.subscriber_id"
                                    " WHERE s.id IS NULL").scalar_one() == 0
    assert keep_all(engine).unconfirmed == 0
    # Eleven days on, twice@'s last link is a month old too; the others stay whatever their age.
    later = prune_store(engine, NOW + timedelta(days=11), keep_days=0, keep_ledger_days=0, candidate_days=WINDOW)
    assert later.unconfirmed == 1 and addresses(engine) == everyone - {"stranger@example.org", "seeds@example.org", "twice@example.org"}
    a_year_on = prune_store(engine, NOW + timedelta(days=365), keep_days=0, keep_ledger_days=0, candidate_days=WINDOW)
    assert a_year_on.unconfirmed == 1 and "lately@example.org" not in addresses(engine)
    assert addresses(engine) == {"voted@example.org", "ledger@example.org", "confirmed@example.org",
                                 "by-hand@example.org", "never-asked@example.org"}


def test_prune_store_never_resets_the_confirmation_cap_of_an_address(engine):
    """An address at its cap (3 emails in 24 hours) stays capped through a prune; the prune deletes an address only
    once its every email is a month old, when the cap, which counts one day, holds nothing of it any more."""
    for minutes in (0, 11, 22):
        assert ask(engine, "victim@example.org", NOW - timedelta(hours=1) + timedelta(minutes=minutes)) is not None
    assert ask(engine, "victim@example.org", NOW) is None
    assert keep_all(engine).unconfirmed == 0
    assert ask(engine, "victim@example.org", NOW + timedelta(minutes=1)) is None
    with session_scope(engine) as session:  # the cap's times are all a month old when the address goes
        sub = get_subscriber(session, "victim@example.org")
        sent = [datetime.fromisoformat(t) for t in sub.confirm_emails]
    month_on = NOW + timedelta(days=31)
    assert prune_store(engine, month_on, keep_days=0, keep_ledger_days=0, candidate_days=WINDOW).unconfirmed == 1
    assert all(month_on - t > timedelta(days=30) for t in sent)


def test_prune_store_deletes_an_inboxs_confirmation_count_a_day_after_its_last_email(engine):
    """An inbox's count (confirm_inbox) holds its emails of the last 24 hours: a day after the last one it counts
    nothing, and goes; an inbox at its cap keeps its row, and its cap, through a prune."""
    assert ask(engine, "old+1@example.org", NOW - timedelta(days=2)) is not None
    for minutes in (0, 11, 22):
        assert ask(engine, "capped+1@example.org", NOW - timedelta(hours=1) + timedelta(minutes=minutes)) is not None
    dry = keep_all(engine, dry_run=True)
    assert dry.inboxes == 1 and table_count(engine, "confirm_inbox") == 2
    report = keep_all(engine)
    assert report.inboxes == 1 and "1 confirmation count over a day old" in report.summary()
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT inbox FROM confirm_inbox").scalars().all() == ["capped@example.org"]
    assert ask(engine, "capped+2@example.org", NOW) is None  # still at its cap
    assert ask(engine, "old+2@example.org", NOW) is not None  # a new count


def test_prune_store_keeps_an_address_asked_for_again_while_it_prunes(engine):
    """A request that claims a confirmation email between the prune's read and its delete (the compare-and-set on
    confirm_version) keeps the address: its new link must find it."""
    from digest.store import retention

    ask(engine, "stranger@example.org", NOW - timedelta(days=40))
    found, _ = retention.unconfirmed_subscribers(engine, NOW, after=0, batch=10)
    assert len(found) == 1
    assert ask(engine, "stranger@example.org", NOW) is not None  # asked again: a new link, a new request
    assert ledger.write(engine, lambda conn: retention.delete_unconfirmed(conn, found, NOW)) == 0
    assert addresses(engine) == {"stranger@example.org"}


# --- the daily run and the command --------------------------------------------------------------------


def test_prune_daily_is_a_wall_and_without_horizons_prunes_only_the_small_tables(world, home, caplog):
    from digest.config import load_settings

    settings = load_settings(home, env={})
    with session_scope(world.engine) as session:
        spend_token(session, "spent-long-ago", NOW - timedelta(days=30))
    ask(world.engine, "stranger@example.org", NOW - timedelta(days=40))
    quiet = prune_daily(world.engine, settings, NOW, candidate_days=WINDOW)
    assert quiet is not None and (quiet.used_tokens, quiet.requests, quiet.unconfirmed, quiet.papers, quiet.deliveries) == (1, 1, 1, 0, 0)
    assert table_count(world.engine, "paper") == 9 and table_count(world.engine, "used_token") == 0
    bad = settings.replace(keep_days=3)  # inside the window: refused, logged, and the run goes on
    assert prune_daily(world.engine, bad, NOW, candidate_days=WINDOW) is None
    assert any(getattr(r, "digest_event", "") == "prune-failed" for r in caplog.records)
    report = prune_daily(world.engine, settings.replace(keep_days=KEEP, keep_ledger_days=LEDGER), NOW, candidate_days=WINDOW)
    assert report is not None and report.papers == 2


def test_run_job_prunes_once_it_has_fetched(home, feed_server, caplog):
    from digest.config import load_settings
    from digest.pipeline.job import run_job

    caplog.set_level(logging.INFO, logger="digest")
    settings = load_settings(home, env={}).replace(secret_key="test-secret-key-0123456789", keep_days=KEEP)
    engine = open_engine(settings.database_url)
    init_db(engine)
    many_old_papers(engine, 3)
    with session_scope(engine) as session:
        ensure_source(session, "cs.SD", "arxiv-rss", feed_server.url("files/real/arxiv-rss/rss-cs.SD-2026-06-12.xml"), NOW)
    run_job(engine, settings, NOW, fetch=False)
    assert table_count(engine, "paper") == 3  # no fetch, no prune: the daemon's every tick is not a prune
    run_job(engine, settings, NOW, fetch=True)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM paper WHERE title LIKE 'A paper called bulk%'").scalar_one() == 0
    assert any(getattr(r, "digest_event", "") == "pruned" for r in caplog.records)
    engine.dispose()


def test_cli_prune_dry_run_then_prune(cli, home, sqlite_engine):
    many_old_papers(sqlite_engine, 3)
    (home / "digest.toml").write_text("keep_days = 30\n", encoding="utf-8")
    result = cli("prune", "--dry-run")
    assert result.exit_code == 0 and result.output.startswith("would delete 3 papers no source listed since"), result.output
    assert table_count(sqlite_engine, "paper") == 3
    result = cli("prune")
    assert result.exit_code == 0 and result.output.startswith("deleted 3 papers"), result.output
    assert table_count(sqlite_engine, "paper") == 0


def test_cli_prune_refuses_a_horizon_inside_the_window_in_one_line(cli, sqlite_engine):
    result = cli("prune", "--keep-days", "5")
    assert result.exit_code == 1
    assert result.output.splitlines()[0].startswith("error: keep_days is 5, but a paper can be a candidate for 7 days")


def test_cli_prune_without_horizons_prunes_the_small_tables_and_says_how_to_set_them(cli, sqlite_engine):
    many_old_papers(sqlite_engine, 3)
    with session_scope(sqlite_engine) as session:
        spend_token(session, "spent-long-ago", datetime.now(timezone.utc) - timedelta(days=30))
    result = cli("prune", "--dry-run")
    assert result.exit_code == 0 and result.output.startswith("would delete 1 spent confirmation link,"), result.output
    result = cli("prune")
    first, second = result.output.splitlines()
    assert result.exit_code == 0 and first.startswith("deleted 1 spent confirmation link,") and "kept every paper and delivery" in first
    assert "keep_days" in second and table_count(sqlite_engine, "used_token") == 0 and table_count(sqlite_engine, "paper") == 3
