"""A database's age: what a year of papers and ledger costs the daily job, `digest status`, the front page, its
search and `digest backup`, against the same installation a week old; then what `digest prune` takes back.
Prints figures; no assertions (figures, not timed tests).

    python benchmarks/retention.py [--days 365] [--papers 2000] [--subscribers 1000] [--ages 7,90,180,365]
    python benchmarks/retention.py --url postgresql+psycopg://postgres@127.0.0.1:5432/test   # a database of its own on that server
    python benchmarks/retention.py --days 365 --prune 90 --ledger-days 365 --concurrent

One database is built day by day, as an installation lives: each day's papers (benchmarks/send.py's make_papers: real
titles and abstract sentences from digest/data/sample-papers.jsonl, with that day's arXiv-like ids) stored by the
store's own upsert at 20:30 UTC, then the next morning's edition written to the ledger by the ledger's own writers
(open_deliveries, then record_sent_many: 10 picks among the 300 papers of the day that match someone's
interests and the day's 4 trending papers, their sent_paper rows and contents) for each of --subscribers subscribers (send.py's make_subscribers; 30 % with a seed paper, 20 readers voting
on one of their picks each day). At each age in --ages (days of papers) the figures are taken just before that
day's edition: the planning of the daily job (the store functions `run` and `send` call, each timed), the queries
of `digest status`, the front page and two searches through the real Flask app (a new app each time: cold caches),
the SQLite file and `digest backup` (PostgreSQL: the database's size). CPU seconds are printed next to wall seconds:
on a shared 2-core machine the wall clock also counts other processes.

--prune N then runs `digest prune` (keep_days N, keep_ledger_days --ledger-days) on the year-old database: how
long, how many rows, the longest write transaction, and the same figures again (and, on SQLite, after VACUUM).
--concurrent runs the prune while a reader (the front page's queries) and a writer (a fetch's upsert) work on the
same database, and prints their worst latency during it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import send as single  # noqa: E402 - the papers and subscribers of the edition benchmark
import sqlalchemy as sa  # noqa: E402

from digest.config import load_settings  # noqa: E402
from digest.models import Feedback, Paper, Subscriber, table_of  # noqa: E402
from digest.store import init_db, open_engine, session_scope, sqlite_file  # noqa: E402

BASE = datetime(2025, 1, 1, 20, 30, tzinfo=timezone.utc)  # day 0's fetch; each edition goes out at 07:00 UTC the next morning
SECRET = "benchmark-secret-key-0123456789"
PICKS, TRENDING = 10, 4
MATCHING = 300  # the papers of a day that match someone's interests: every pick is one of them (15 % of 2,000 are ever sent)
SEARCHES = ("learning", "diffusion transformer")  # a word in most abstracts, and two words in fewer


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_average() -> str:
    return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())


@dataclass
class Timing:
    wall: float
    cpu: float

    def __str__(self) -> str:
        return f"{self.wall * 1e3:8.1f} ms ({self.cpu * 1e3:7.1f} CPU)"


def timed(call: Callable[[], object], repeat: int = 1) -> tuple[object, Timing]:
    """The call's result and its best wall time over `repeat` calls (with that call's CPU time)."""
    best: Timing | None = None
    result: object = None
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        result = call()
        took = Timing(time.perf_counter() - wall, time.process_time() - cpu)
        if best is None or took.wall < best.wall:
            best = took
    assert best is not None
    return result, best


# --- the installation, day by day ---------------------------------------------------------------------


@dataclass
class World:
    engine: sa.engine.Engine
    settings: object
    source_id: int
    subscribers: list[int]
    corpus: list[dict]
    rng: random.Random
    per_day: int
    active_voters: int = 0
    day_ids: dict[int, list[int]] = field(default_factory=dict)  # day -> paper ids first seen that day


def day_papers(world: World, day: int) -> list:
    """Day `day`'s papers: send.py's make_papers with that day's arXiv-like ids (YYMM.NNNNN, unique across days)."""
    import dataclasses

    papers = single.make_papers(world.corpus, world.per_day, world.rng)
    when = BASE + timedelta(days=day)
    out = []
    for n, paper in enumerate(papers):
        ident = f"{when:%y%m}.{day:03d}{n:04d}"
        out.append(dataclasses.replace(paper, key=f"arxiv:{ident}", ident=ident, arxiv_id=ident, url=f"https://arxiv.org/abs/{ident}",
                                       pdf_url=f"https://arxiv.org/pdf/{ident}"))
    return out


def store_day(world: World, day: int) -> None:
    from digest.store.papers import upsert_papers

    when = BASE + timedelta(days=day)
    upsert_papers(world.engine, world.source_id, day_papers(world, day), when)
    paper = table_of(Paper)
    with world.engine.connect() as conn:
        world.day_ids[day] = list(conn.execute(sa.select(paper.c.id).where(paper.c.first_seen == when).order_by(paper.c.id)).scalars())


def run_at(day: int) -> datetime:
    return (BASE + timedelta(days=day + 1)).replace(hour=7, minute=0)


def send_day(world: World, day: int) -> None:
    """The morning edition after day `day`'s papers, recorded as the delivery loop records it."""
    from digest.delivery.message import make_message_id
    from digest.store import deliveries as ledger

    now = run_at(day)
    edition = now.date().isoformat()
    ids = world.day_ids[day]
    rows = ledger.open_deliveries(world.engine, [(sub, edition) for sub in world.subscribers], now, lambda s, e: make_message_id("digest@example.org", s, e))
    trending = ids[:TRENDING]
    sent, contents = [], []
    for sub in world.subscribers:
        picks = world.rng.sample(ids[TRENDING:TRENDING + MATCHING], PICKS)
        sent.append((rows[(sub, edition)].id, sub, picks + trending, 1))
        contents.append({"picks": [[pid, ["matches your interest “diffusion models”"]] for pid in picks], "trending": trending})
    ledger.write(world.engine, lambda conn: ledger.record_sent_many(conn, sent, now, now, contents=contents))
    voters = world.rng.sample(world.subscribers, min(20, len(world.subscribers)))
    votes = [dict(subscriber_id=sub, paper_id=sent[world.subscribers.index(sub)][2][0], value=world.rng.choice([1, 1, -1]), created_at=now) for sub in voters]
    # --active-voters: readers who vote on three of their picks every morning (a year: 1,095 votes each)
    votes += [dict(subscriber_id=sub, paper_id=pid, value=world.rng.choice([1, 1, -1]), created_at=now)
              for n, sub in enumerate(world.subscribers[:world.active_voters]) for pid in sent[n][2][1:4]]
    with world.engine.begin() as conn:
        conn.execute(sa.insert(table_of(Feedback)), votes)


def build_world(url: str, home: Path, subscribers: int, per_day: int) -> World:
    from digest.store.sources import ensure_source

    settings = load_settings(home, env={}, overrides={**single.OVERRIDES, "database_url": url, "secret_key": SECRET})
    engine = open_engine(url)
    init_db(engine)
    corpus = [json.loads(line) for line in (ROOT / "digest/data/sample-papers.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    rng = random.Random(7)
    with session_scope(engine) as session:
        source_id = ensure_source(session, "arxiv-bench", "arxiv-rss", "https://rss.arxiv.org/rss/cs.LG", BASE).id
    single.make_subscribers(engine, corpus, subscribers, rng)
    with engine.begin() as conn:
        ids = list(conn.execute(sa.select(table_of(Subscriber).c.id).order_by(table_of(Subscriber).c.id)).scalars())
        conn.execute(sa.update(table_of(Subscriber)).values(created_at=BASE - timedelta(days=1)))
    return World(engine, settings, source_id, ids, corpus, rng, per_day)


def add_seeds(world: World) -> None:
    """30 % of the subscribers name one of day 0's papers as a seed (by arXiv id, as people do)."""
    with world.engine.begin() as conn:
        paper = table_of(Paper)
        idents = dict(conn.execute(sa.select(paper.c.id, paper.c.ident).where(paper.c.id.in_(world.day_ids[0][:50]))).all())
        subscriber = table_of(Subscriber)
        for sub in world.subscribers:
            if world.rng.random() < 0.3:
                conn.execute(sa.update(subscriber).where(subscriber.c.id == sub).values(seed_papers=[idents[world.rng.choice(list(idents))]]))


# --- the figures --------------------------------------------------------------------------------------


def size_of(world: World) -> tuple[str, int]:
    path = sqlite_file(str(world.engine.url.render_as_string(hide_password=False)))
    if path is not None:
        with world.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        wal = path.with_name(path.name + "-wal")
        return "file", path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
    with world.engine.connect() as conn:
        return "database", conn.exec_driver_sql("SELECT pg_database_size(current_database())").scalar_one()


def counts(world: World) -> str:
    with world.engine.connect() as conn:
        got = {t: conn.exec_driver_sql(f"SELECT count(*) FROM {t}").scalar_one() for t in ("paper", "delivery", "sent_paper", "feedback")}
    return ", ".join(f"{n:,} {t}" for t, n in got.items())


def measure(world: World, now: datetime, label: str, *, backup: bool = True) -> dict[str, object]:
    """Every figure at `now` (just before the edition of that morning); prints them and returns them by name."""
    from digest.editions import earliest_local_day
    from digest.health import finished_since
    from digest.pipeline.plan import due_subscribers, plan_editions
    from digest.rank.score import MAX_VOTES
    from digest.store.candidates import candidate_papers, profile_rows_for, sent_among
    from digest.store.deliveries import editions_summary, finished_editions, unfinished_deliveries
    from digest.store.search import search_papers, update_search_index
    from digest.store.status import active_schedules, source_health
    from digest.store.subscribers import list_subscribers
    from digest.web.app import create_app

    engine, settings = world.engine, world.settings
    out: dict[str, object] = {}
    _, catch_up = timed(lambda: update_search_index(engine, budget=10**9))  # what that day's first searches did
    out["index_catch_up"] = catch_up
    kind, size = size_of(world)
    out["size"] = size
    print(f"--- {label}: {counts(world)}; {kind} {size / 1e6:,.0f} MB; {load_average()}")
    _, t = timed(lambda: finished_editions(engine, since=earliest_local_day(now).isoformat()))  # as due_subscribers asks
    out["finished_editions"] = t
    dues, t = timed(lambda: due_subscribers(engine, settings, now))
    out["due_subscribers"] = t
    since = now - timedelta(days=1)
    with session_scope(engine) as session:
        pool, t1 = timed(lambda: candidate_papers(session, since, now), repeat=2)
        subs = list_subscribers(session, status="active")
        _, t2 = timed(lambda: sent_among(session, [s.id for s in subs], [p.paper.id for p in pool]))  # type: ignore[attr-defined]
        _, t3 = timed(lambda: profile_rows_for(session, subs, votes=MAX_VOTES))  # as plan_editions asks
    out.update(candidate_papers=t1, sent_among=t2, profile_rows_for=t3)
    plans, t = timed(lambda: plan_editions(engine, settings, now, dues))  # type: ignore[arg-type]
    out["plan_editions"] = t
    print(f"  daily job   due_subscribers {out['due_subscribers']}  of which finished_editions {out['finished_editions']}  ({len(dues)} due)")  # type: ignore[arg-type]
    print(f"              plan_editions   {t}  of which candidate_papers {t1}, sent_among {t2}, profile_rows_for {t3} ({len(pool)} candidates)")  # type: ignore[arg-type]
    status_calls = {"editions_summary": lambda: editions_summary(engine, limit=7), "finished_editions": lambda: finished_editions(engine, since=finished_since(now)),
                    "unfinished_deliveries": lambda: unfinished_deliveries(engine), "active_schedules": lambda: active_schedules(engine),
                    "source_health": lambda: source_health(engine)}
    total = Timing(0, 0)
    parts = []
    for name, call in status_calls.items():
        _, t = timed(call, repeat=2)
        total = Timing(total.wall + t.wall, total.cpu + t.cpu)
        parts.append(f"{name} {t.wall * 1e3:.0f}")
    out["status"] = total
    print(f"  status      {total}  ({', '.join(parts)} ms)")
    app = create_app(settings, engine, now=lambda: now)
    client = app.test_client()
    response, t = timed(lambda: client.get("/"))
    assert response.status_code == 200, response.status_code  # type: ignore[attr-defined]
    out["front"] = t
    line = f"  front page  {t} cold;  search index catch-up {out['index_catch_up']}"
    for query in SEARCHES:
        cold = create_app(settings, engine, now=lambda: now).test_client()  # no page cached
        response, t = timed(lambda q=query, c=cold: c.get(f"/search?q={q.replace(' ', '+')}"))
        assert response.status_code == 200  # type: ignore[attr-defined]
        found, ts = timed(lambda q=query: search_papers(engine, q).total, repeat=3)
        out[f"search {query}"] = t
        line += f"\n  search      {query!r:<24} page {t}, search_papers {ts}: {found:,} matches"
    print(line)
    path = sqlite_file(str(engine.url.render_as_string(hide_password=False)))
    if path is not None and backup:
        from digest.store.backup import backup_sqlite

        with tempfile.TemporaryDirectory(prefix="digest-bench-backup-") as tmp:
            made, t = timed(lambda: backup_sqlite(path, Path(tmp) / "copy.db"))
            out["backup"] = t
            print(f"  backup      {t}: {made.size / 1e6:,.0f} MB")  # type: ignore[attr-defined]
    print(f"  peak memory (RSS) so far {peak_mb():.0f} MB")
    return out


# --- pruning ------------------------------------------------------------------------------------------


def prune(world: World, now: datetime, keep_days: int, ledger_days: int, concurrent: bool) -> None:
    from digest.pipeline.plan import longest_window
    from digest.store.retention import prune_store

    watcher = Watcher(world) if concurrent else None
    if watcher:
        watcher.start()
    report, t = timed(lambda: prune_store(world.engine, now, keep_days=keep_days, keep_ledger_days=ledger_days,
                                          candidate_days=longest_window(world.settings.window_days)))  # type: ignore[attr-defined]
    if watcher:
        watcher.stop()
    print(f"=== prune keep_days={keep_days} keep_ledger_days={ledger_days}: {t}; {report.summary()}")  # type: ignore[attr-defined]
    print(f"  longest batch (one write transaction): {report.longest_batch * 1e3:.0f} ms over {report.batches} batches")  # type: ignore[attr-defined]
    if watcher:
        print(f"  meanwhile: {watcher.report()}")


class Watcher:
    """A reader (the front page's day query and a search) and a writer (a fetch's upsert of 50 papers) on their own
    connections, in threads, while the prune runs: their worst latency."""

    def __init__(self, world: World) -> None:
        import threading

        self.world, self.stop_event = world, threading.Event()
        self.reads: list[float] = []
        self.writes: list[float] = []
        self.errors: list[str] = []
        self.threads = [threading.Thread(target=self._read, daemon=True), threading.Thread(target=self._write, daemon=True)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join()

    def _read(self) -> None:
        from digest.store.days import day_papers, papers_version
        from digest.store.search import search_papers

        engine = open_engine(self.world.engine.url.render_as_string(hide_password=False))
        today = run_at(max(self.world.day_ids)).date()
        while not self.stop_event.is_set():
            started = time.perf_counter()
            try:
                papers_version(engine)
                day_papers(engine, today - timedelta(days=2), today)
                search_papers(engine, "diffusion")
            except Exception as exc:  # noqa: BLE001 - what the page would have shown
                self.errors.append(f"read: {exc}")
            self.reads.append(time.perf_counter() - started)
            time.sleep(0.05)
        engine.dispose()

    def _write(self) -> None:
        from digest.store.papers import upsert_papers

        engine = open_engine(self.world.engine.url.render_as_string(hide_password=False))
        n = 0
        while not self.stop_event.is_set():
            papers = single.make_papers(self.world.corpus, 50, random.Random(n))
            import dataclasses

            papers = [dataclasses.replace(p, key=f"arxiv:9912.{n:03d}{i:02d}", ident=f"9912.{n:03d}{i:02d}", arxiv_id=f"9912.{n:03d}{i:02d}") for i, p in enumerate(papers)]
            started = time.perf_counter()
            try:
                upsert_papers(engine, self.world.source_id, papers, datetime.now(timezone.utc))
            except Exception as exc:  # noqa: BLE001
                self.errors.append(f"write: {exc}")
            self.writes.append(time.perf_counter() - started)
            n += 1
            time.sleep(0.2)
        engine.dispose()

    def report(self) -> str:
        def worst(values: list[float]) -> str:
            return f"{len(values)} done, worst {max(values) * 1e3:.0f} ms, median {sorted(values)[len(values) // 2] * 1e3:.0f} ms" if values else "none done"

        errors = f"; {len(self.errors)} errors: {self.errors[0]}" if self.errors else "; no errors"
        return f"reader {worst(self.reads)}; writer (upsert of 50 papers) {worst(self.writes)}{errors}"


# --- main ---------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--papers", type=int, default=2000, help="papers a day")
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--active-voters", type=int, default=0, help="subscribers who vote on 3 of their picks every day (besides 20 random votes a day)")
    parser.add_argument("--ages", default="7,90,180,365", help="days of papers at which to take the figures")
    parser.add_argument("--url", default=None, help="a PostgreSQL URL: a database of its own is made (and dropped) on that server")
    parser.add_argument("--prune", type=int, default=0, metavar="KEEP_DAYS", help="then prune with this keep_days")
    parser.add_argument("--ledger-days", type=int, default=365, help="keep_ledger_days of that prune")
    parser.add_argument("--concurrent", action="store_true", help="a reader and a writer work during the prune")
    parser.add_argument("--keep", action="store_true", help="keep the SQLite database (its path is printed)")
    args = parser.parse_args()
    ages = sorted({int(a) for a in args.ages.split(",") if int(a) <= args.days} | {args.days})
    with bench_database(args.url, "digest-bench-retention", keep=args.keep) as (url, home):
        world = build_world(url, home, args.subscribers, args.papers)
        world.active_voters = args.active_voters
        voting = f", {args.active_voters:,} of them voting 3 times a day" if args.active_voters else ""
        print(f"{args.papers:,} papers a day, {args.subscribers:,} subscribers{voting}, {PICKS}+{TRENDING} papers an email; {world.engine.dialect.name}; {load_average()}")
        building = time.perf_counter()
        for day in range(args.days):
            store_day(world, day)
            if day == 0:
                add_seeds(world)
            if day + 1 in ages:
                print(f"(built {day + 1} days in {time.perf_counter() - building:.0f} s)")
                measure(world, run_at(day), f"{day + 1} days old")
            send_day(world, day)
        if args.prune:
            last = args.days - 1
            store_day(world, args.days)  # the next day's papers: the figures are taken before its edition, as above
            world.day_ids[last + 1] = world.day_ids[args.days]
            now = run_at(args.days)
            prune(world, now, args.prune, args.ledger_days, args.concurrent)
            measure(world, now, f"{args.days + 1} days old, pruned")
            if world.engine.dialect.name == "sqlite":
                with world.engine.connect() as conn:
                    _, t = timed(lambda: conn.exec_driver_sql("VACUUM"))
                print(f"VACUUM: {t}")
                measure(world, now, f"{args.days + 1} days old, pruned and vacuumed")
        world.engine.dispose()


@contextlib.contextmanager
def bench_database(server: str | None, prefix: str, *, keep: bool = False) -> Iterator[tuple[str, Path]]:
    """(database URL, home) of one benchmark run: a SQLite file in a new temporary directory, or, given a PostgreSQL
    URL, a database of its own made on that server; dropped (and the directory removed) afterwards unless `keep`."""
    import shutil

    home = Path(tempfile.mkdtemp(prefix=f"{prefix}-"))
    name = f"{prefix.replace('-', '_')}_{os.getpid()}_{home.name.rsplit('-', 1)[-1]}"
    if server:
        from fleet import create_database, server_url

        create_database(server, name)
    try:
        yield (server_url(server, name) if server else f"sqlite:///{home / 'digest.db'}"), home
    finally:
        if server:
            create_database(server, name, drop=True)
        if keep:
            print(f"kept {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
