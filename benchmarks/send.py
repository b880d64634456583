"""The whole edition: 10,000 subscribers and 1,000 new papers ranked, rendered, built and delivered over SMTP
to a local sink server, through the real `run_job` (SQLite ledger included). Prints per-stage seconds,
emails per second, CPU per email, message size and peak memory; no assertions (figures, not timed tests).

    python benchmarks/send.py [--subscribers 10000] [--papers 1000] [--naive 200] [--connections N]
    python benchmarks/send.py --breakdown 2000      # CPU per email of each step, one thread, no overlap
    python benchmarks/send.py --relay 0.05 --connections 1,4,16 --subscribers 1000   # one sender's rate per connections
    python benchmarks/send.py --relay 0.05          # the 10,000 edition through a 50 ms relay on default settings

CPU per email is the sender's own CPU (RUSAGE_SELF) plus that of its children (RUSAGE_CHILDREN: render workers),
without the sink's, over the emails sent: the whole edition (plan, rank, render, sign links, build, send, ledger).
`--relay SECONDS` replaces the sink by tests/smtp_server.py's aiosmtpd server (in its own process) answering every
command SECONDS late: a relay across the internet. Each run gets a copy of one prepared database.

The sink is a minimal asyncio SMTP server in its own process (so it does not compete with the sender for
the GIL); it offers PIPELINING as most relays do, accepts everything and counts messages and bytes. Papers are made of real titles and abstract
sentences from digest/data/sample-papers.jsonl; each subscriber has 1-3 interests drawn from those titles.
`--naive N` also times N messages built the straightforward way (EmailMessage + as_bytes) for comparison.
Stage seconds: render/build are summed over the worker processes that render (forked for a big edition),
send is the sender thread's busy time (SMTP plus the ledger write per message); they overlap, so the total
is less than their sum. Peak memory is the main process's peak RSS (workers share its pages copy-on-write).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import multiprocessing
import os
import random
import re
import resource
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

NOW = datetime(2025, 1, 6, 9, 0, tzinfo=timezone.utc)
OVERRIDES = {"secret_key": "benchmark-secret-key-0123456789", "from_address": "digest@example.org", "base_url": "https://digest.example.org"}


# --- the sink ---------------------------------------------------------------------------------------


class _SinkProtocol(asyncio.Protocol):
    stats = {"messages": 0, "bytes": 0, "connections": 0}

    def connection_made(self, transport) -> None:  # noqa: ANN001
        self.transport, self.buffer, self.in_data = transport, bytearray(), False
        self.stats["connections"] += 1
        transport.write(b"220 sink ESMTP\r\n")

    def data_received(self, chunk: bytes) -> None:
        self.buffer += chunk
        while True:
            if self.in_data:
                end = self.buffer.find(b"\r\n.\r\n")
                if end < 0:
                    return
                self.stats["messages"] += 1
                self.stats["bytes"] += end + 2
                del self.buffer[: end + 5]
                self.in_data = False
                self.transport.write(b"250 2.0.0 queued\r\n")
                continue
            end = self.buffer.find(b"\r\n")
            if end < 0:
                return
            verb = bytes(self.buffer[:4]).upper()
            del self.buffer[: end + 2]
            if verb == b"EHLO":
                self.transport.write(b"250-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 52428800\r\n")
            elif verb == b"DATA":
                self.in_data = True
                self.transport.write(b"354 go ahead\r\n")
            elif verb == b"QUIT":
                self.transport.write(b"221 bye\r\n")
                self.transport.close()
                return
            else:  # HELO, MAIL, RCPT, RSET, NOOP
                self.transport.write(b"250 OK\r\n")


def _run_sink(port_out, stop, stats_out) -> None:  # noqa: ANN001
    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(_SinkProtocol, "127.0.0.1", 0)
        port_out.put(server.sockets[0].getsockname()[1])
        while not stop.is_set():
            await asyncio.sleep(0.05)
        server.close()
        stats_out.put(dict(_SinkProtocol.stats, cpu=time.process_time()))

    asyncio.run(main())


# --- the data ---------------------------------------------------------------------------------------


def make_papers(corpus: list[dict], count: int, rng: random.Random):
    from digest.sources import ParsedPaper

    sentences = [s for d in corpus for s in re.split(r"(?<=\.)\s+", d["abstract"]) if len(s) > 40]
    papers = []
    for n in range(count):
        base = corpus[n % len(corpus)]
        ident = f"2501.{n:05d}"
        papers.append(ParsedPaper(
            key=f"arxiv:{ident}", ident=ident, arxiv_id=ident, version=1, title=base["title"],
            abstract=" ".join(rng.sample(sentences, rng.randint(5, 10))),
            authors=[f"Author {rng.randint(1, 5000)}" for _ in range(rng.randint(1, 8))], categories=[rng.choice(["cs.LG", "cs.CV", "cs.CL"])],
            url=f"https://arxiv.org/abs/{ident}", pdf_url=f"https://arxiv.org/pdf/{ident}", upvotes=rng.choice([None, None, rng.randint(1, 300)]),
        ))
    return papers


def make_subscribers(engine, corpus: list[dict], count: int, rng: random.Random) -> None:
    import sqlalchemy as sa

    from digest.models import Subscriber

    titles = [re.findall(r"[A-Za-z][A-Za-z-]+", d["title"]) for d in corpus]

    def phrase() -> str:
        words = rng.choice(titles)
        size = rng.randint(1, min(3, len(words)))
        start = rng.randint(0, len(words) - size)
        return " ".join(words[start : start + size])

    rows = [
        dict(email=f"reader{n:05d}@example.org", name=f"Reader {n}", status="active", interests=[phrase() for _ in range(rng.randint(1, 3))],
             seed_papers=[], muted_terms=[], muted_authors=[], categories=[], max_papers=10, trending_weight=rng.choice([0.0, 0.2, 0.5]),
             send_at="07:00", tz="UTC", frequency="daily", consecutive_bounces=0, token_version=0, created_at=NOW - timedelta(days=30))
        for n in range(count)
    ]
    with engine.begin() as conn:
        conn.execute(sa.insert(Subscriber.__table__), rows)


def time_naive_build(settings, rendered, count: int) -> float:
    """Seconds per message for the straightforward EmailMessage way (for comparison only)."""
    from email.message import EmailMessage
    from email.utils import format_datetime

    started = time.perf_counter()
    for n in range(count):
        msg = EmailMessage()
        msg["From"] = f"{settings.from_name} <{settings.from_address}>"
        msg["To"] = f"Reader {n} <reader{n}@example.org>"
        msg["Subject"] = rendered.subject
        msg["Date"] = format_datetime(NOW)
        msg["Message-ID"] = f"<{n}@example.org>"
        msg["List-Unsubscribe"] = "<https://example.org/unsubscribe/x>, <mailto:digest@example.org?subject=unsubscribe>"
        msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        msg.set_content(rendered.text)
        msg.add_alternative(rendered.html, subtype="html")
        msg.as_bytes()
    return (time.perf_counter() - started) / count


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_average() -> str:
    return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())


# --- the relay --------------------------------------------------------------------------------------


def _run_relay(delay: float, port_out, stop, stats_out) -> None:  # noqa: ANN001
    """tests/smtp_server.py's aiosmtpd server, every reply `delay` seconds late, counting without keeping."""
    sys.path.insert(0, str(ROOT / "tests"))
    import logging

    from smtp_server import start_smtp_server

    logging.getLogger("mail.log").setLevel(logging.WARNING)
    with start_smtp_server(reply_delay=delay, keep=False) as server:
        port_out.put(server.port)
        stop.wait()
        stats_out.put({"messages": server.accepted, "bytes": server.bytes, "connections": server.connections, "cpu": time.process_time()})


class Server:
    """The sink (or the relay with `delay`) in its own process: it must not compete with the sender for the GIL."""

    def __init__(self, delay: float | None) -> None:
        ctx = multiprocessing.get_context("fork")
        self.port_q, self.stats_q, self.stop = ctx.Queue(), ctx.Queue(), ctx.Event()
        target, args = (_run_sink, (self.port_q, self.stop, self.stats_q)) if delay is None else (_run_relay, (delay, self.port_q, self.stop, self.stats_q))
        self.process = ctx.Process(target=target, args=args, daemon=True)
        self.process.start()
        self.port = self.port_q.get(timeout=60)

    def close(self) -> dict:
        self.stop.set()
        stats = self.stats_q.get(timeout=60)
        self.process.join(10)
        return stats


# --- the runs ---------------------------------------------------------------------------------------


def prepare(args):  # noqa: ANN001, ANN201
    """One database with the papers and the subscribers; each run works on a copy of it."""
    from digest.config import load_settings
    from digest.store import init_db, open_engine, session_scope
    from digest.store.papers import upsert_papers
    from digest.store.sources import ensure_source

    rng = random.Random(7)
    corpus = [json.loads(line) for line in (ROOT / "digest/data/sample-papers.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    home = Path(tempfile.mkdtemp(prefix="digest-bench-send-"))
    settings = load_settings(home, env={}, overrides=OVERRIDES)
    engine = open_engine(settings.database_url)
    init_db(engine)
    setup = time.perf_counter()
    with session_scope(engine) as session:
        source = ensure_source(session, "arxiv-bench", "arxiv-rss", "https://rss.arxiv.org/rss/cs.LG", NOW)
        source_id = source.id
    upsert_papers(engine, source_id, make_papers(corpus, args.papers, rng), NOW - timedelta(hours=2))
    make_subscribers(engine, corpus, args.subscribers, rng)
    engine.dispose()
    print(f"setup: {args.papers} papers, {args.subscribers} subscribers in {time.perf_counter() - setup:.1f}s (not counted); database {home / 'digest.db'}")
    return settings


def fresh_copy(settings):  # noqa: ANN001, ANN201
    """A new home holding a copy of the prepared database (nothing sent yet)."""
    import shutil

    from digest.store import open_engine

    home = Path(tempfile.mkdtemp(prefix="digest-bench-send-run-"))
    shutil.copyfile(settings.home / "digest.db", home / "digest.db")
    from digest.config import load_settings

    copy = load_settings(home, env={}, overrides=OVERRIDES)
    return copy, open_engine(copy.database_url)


def run_edition(settings, delay: float | None, connections: int | None) -> dict:  # noqa: ANN001
    """One whole edition through run_job against the sink or the relay; its figures."""
    from digest.pipeline.job import run_job

    settings, engine = fresh_copy(settings)
    server = Server(delay)
    changes = {"smtp_host": "127.0.0.1", "smtp_port": server.port, "smtp_security": "none"}
    if connections is not None:
        changes["smtp_connections"] = connections
    smtp_settings = settings.replace(**changes)
    load = load_average()
    started, own, children = time.perf_counter(), _own_cpu(), _children_cpu()
    own_system = resource.getrusage(resource.RUSAGE_SELF).ru_stime
    report = run_job(engine, smtp_settings, NOW, fetch=False)
    wall, own = time.perf_counter() - started, _own_cpu() - own
    own_system = resource.getrusage(resource.RUSAGE_SELF).ru_stime - own_system
    stats = server.close()
    children = _children_cpu() - children - stats["cpu"]  # the server is a child too: its CPU is not the sender's
    engine.dispose()
    return {"report": report, "wall": wall, "own": own, "own_system": own_system, "children": children, "stats": stats, "load": load, "connections": smtp_settings.smtp_connections}


def print_edition(run: dict) -> None:
    report, wall, stats = run["report"], run["wall"], run["stats"]
    sent = report.sent or 1
    cpu = run["own"] + run["children"]
    print(f"edition: sent {report.sent}, skipped {report.skipped}, failed {report.failed}, deferred {report.deferred} in {wall:.1f}s -> {report.sent / wall:.0f} emails/s"
          f" ({run['connections']} SMTP connection(s) set)")
    for stage in ("plan", "rank", "render", "build", "send"):
        seconds = report.timings.get(stage, 0.0)
        print(f"  {stage:<7} {seconds:7.2f}s   {seconds / sent * 1e3:7.3f} ms per email (wall, summed over threads and workers)")
    print(f"server: {stats['messages']} messages, {stats['bytes'] / max(stats['messages'], 1) / 1024:.1f} KB each on average, {stats['connections']} SMTP connection(s)")
    print(f"peak memory (RSS): {peak_mb():.0f} MB; rendering: {report.workers or 'no'} worker processes")
    print(f"CPU per email: {cpu / sent * 1e3:.2f} ms (digest {run['own']:.1f} s, of which system {run['own_system']:.1f} s; its render workers {run['children']:.1f} s;"
          f" server {stats['cpu']:.1f} s not counted)")
    print(f"{run['load']} at the start (2 cores: above ~2, other work slows the figures)")


def open_letters(settings, engine, planned, results=None) -> list:  # noqa: ANN001
    """The ledger rows of `planned` opened ('pending'), as the edition's letters (with `results`, else unranked)."""
    from digest.delivery.message import make_message_id
    from digest.delivery.work import Letter
    from digest.store import deliveries as ledger

    rows = ledger.open_deliveries(engine, [(p.subscriber.id, p.edition) for p in planned], NOW, lambda s, e: make_message_id(settings.from_address, s, e))
    results = results if results is not None else [None] * len(planned)
    return [Letter(rows[(p.subscriber.id, p.edition)].id, p.subscriber, p.edition, rows[(p.subscriber.id, p.edition)].message_id, r) for p, r in zip(planned, results)]


def breakdown(settings, count: int) -> None:  # noqa: ANN001
    """CPU per email of each step, measured with thread_time in one thread (no workers, no overlap): plan and rank
    over the whole edition, the rest over the first `count` letters sent to the sink one by one."""
    from datetime import date

    from digest.delivery.build import make_links
    from digest.delivery.claim import LedgerClaimer
    from digest.delivery.message import build_message
    from digest.delivery.transport import SMTPTransport
    from digest.delivery.work import Outcome
    from digest.pipeline.plan import due_subscribers, plan_editions, rank_plans
    from digest.render import render_digest

    settings, engine = fresh_copy(settings)
    server = Server(None)
    clock, cpu = time.thread_time, {}

    def add(step: str, since: float) -> None:
        cpu[step] = cpu.get(step, 0.0) + clock() - since

    load = load_average()
    mark = clock()
    planned = plan_editions(engine, settings, NOW, due_subscribers(engine, settings, NOW))
    add("plan", mark)
    mark = clock()
    results = rank_plans(planned, settings, NOW, engine=engine)
    add("rank", mark)
    # As in the edition's render workers (digest/delivery/build.py forks them with the ranked results frozen): the
    # collector's passes over 10,000 ranked results would otherwise land in the steps measured below.
    gc.freeze()
    letters = open_letters(settings, engine, planned, results)
    claimer = LedgerClaimer(engine, letters, clock=lambda: NOW, covered_until=NOW)
    transport = SMTPTransport(settings.replace(smtp_host="127.0.0.1", smtp_port=server.port, smtp_security="none"))
    done, outcomes, per_commit = 0, [], settings.smtp_connections
    while done < count:
        mark = clock()
        batch = claimer.claim(50)
        add("ledger", mark)
        if not batch:
            break
        for letter in batch:
            mark = clock()
            for pick in letter.result.picks:
                pick.reasons  # noqa: B018 - computed lazily by the ranking: its cost is the ranking's
            add("rank (reasons)", mark)
            mark = clock()
            links = make_links(settings, letter.subscriber, [r.paper.id for r in letter.result.picks])
            add("sign links", mark)
            mark = clock()
            rendered = render_digest(letter.result, name=letter.subscriber.name, email=letter.subscriber.email, edition=date.fromisoformat(letter.edition), links=links,
                                     site_name=settings.from_name, interests=letter.subscriber.interests or ())
            add("render", mark)
            mark = clock()
            message = build_message(rendered, to=letter.subscriber.email, name=letter.subscriber.name, settings=settings, message_id=letter.message_id, unsubscribe_url=links.unsubscribe, date=NOW)
            add("build MIME", mark)
            mark = clock()
            transport.send(message, sender=settings.from_address, recipient=letter.subscriber.email)
            add("SMTP", mark)
            outcomes.append(Outcome(letter, "sent", 1))
            if len(outcomes) == per_commit:  # as the answers of the default smtp_connections come back together
                mark = clock()
                claimer.record_many(outcomes)
                add("ledger", mark)
                outcomes = []
        done += len(batch)
    if outcomes:
        mark = clock()
        claimer.record_many(outcomes)
        add("ledger", mark)
    transport.close()
    server.close()
    total = 0.0
    print(f"CPU per email by step (one thread; plan and rank over {len(planned)} subscribers, the rest over {done} emails; {per_commit} outcomes"
          f" recorded per transaction); {load} at the start")
    for step, seconds in cpu.items():
        per = seconds / (len(planned) if step in ("plan", "rank") else done) * 1e3
        total += per
        print(f"  {step:<15} {per:6.3f} ms")
    print(f"  {'total':<15} {total:6.3f} ms")


def naive_comparison(settings, count: int) -> str:  # noqa: ANN001
    from digest.delivery.message import build_message
    from digest.pipeline.job import preview_email

    settings, engine = fresh_copy(settings)
    rendered, message, _ = preview_email(engine, settings, NOW, "reader00000@example.org")
    started = time.perf_counter()
    for n in range(count):
        build_message(rendered, to=f"reader{n}@example.org", name=f"Reader {n}", settings=settings, message_id=f"<{n}@example.org>", unsubscribe_url="https://example.org/unsubscribe/x", date=NOW)
    ours = (time.perf_counter() - started) / count
    naive = time_naive_build(settings, rendered, count)
    return f"building one {len(message) / 1024:.0f} KB message: build_message {ours * 1e3:.3f} ms, EmailMessage + as_bytes {naive * 1e3:.2f} ms ({naive / ours:.0f}x)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=10_000)
    parser.add_argument("--papers", type=int, default=1_000)
    parser.add_argument("--naive", type=int, default=200, help="messages to build the naive way for comparison (0: skip)")
    parser.add_argument("--connections", default=None, help="smtp_connections, or several separated by commas (default: the setting's default)")
    parser.add_argument("--relay", type=float, default=None, metavar="SECONDS", help="send through an aiosmtpd relay answering every command this late")
    parser.add_argument("--inline", action="store_true", help="render in the sending process (no forked render workers)")
    parser.add_argument("--breakdown", type=int, default=0, metavar="N", help="only the CPU per email of each step, over N emails")
    args = parser.parse_args()

    settings = prepare(args)
    if args.inline:
        import digest.delivery.build

        digest.delivery.build.POOL_FROM = 10**9
    if args.breakdown:
        breakdown(settings, args.breakdown)
        return
    naive_line = naive_comparison(settings, args.naive) if args.naive and args.relay is None else ""
    counts = [int(c) for c in args.connections.split(",")] if args.connections else [None]
    runs = []
    for connections in counts:
        run = run_edition(settings, args.relay, connections)
        print_edition(run)
        runs.append(run)
    if len(runs) > 1:
        where = f"a relay answering {args.relay * 1e3:.0f} ms late" if args.relay is not None else "the sink"
        print(f"one sender through {where}:")
        for run in runs:
            report = run["report"]
            delivering = run["wall"] - report.timings.get("plan", 0.0) - report.timings.get("rank", 0.0)
            print(f"  {run['connections']:>3} connection(s): {report.sent / delivering:6.1f} emails/s delivering ({report.sent / run['wall']:.1f} over the whole edition,"
                  f" {run['wall']:.1f}s), {run['load']}")
    if naive_line:
        print(naive_line)


if __name__ == "__main__":
    main()
