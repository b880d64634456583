"""The whole edition: 10,000 subscribers and 1,000 new papers ranked, rendered, built and delivered over SMTP
to a local sink server, through the real `run_job` (SQLite ledger included). Prints per-stage seconds,
emails per second, message size and peak memory; no assertions (figures, not timed tests).

    python benchmarks/send.py [--subscribers 10000] [--papers 1000] [--naive 200]

The sink is a minimal asyncio SMTP server in its own process (so it does not compete with the sender for
the GIL); it accepts everything and counts messages and bytes. Papers are made of real titles and abstract
sentences from digest/data/sample-papers.jsonl; each subscriber has 1-3 interests drawn from those titles.
`--naive N` also times N messages built the straightforward way (EmailMessage + as_bytes) for comparison.
Stage seconds: render/build are summed over the worker processes that render (forked for a big edition),
send is the sender thread's busy time (SMTP plus the ledger write per message); they overlap, so the total
is less than their sum. Peak memory is the main process's peak RSS (workers share its pages copy-on-write).
"""

from __future__ import annotations

import argparse
import asyncio
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
                self.transport.write(b"250-sink\r\n250-8BITMIME\r\n250 SIZE 52428800\r\n")
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


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=10_000)
    parser.add_argument("--papers", type=int, default=1_000)
    parser.add_argument("--naive", type=int, default=200, help="messages to build the naive way for comparison (0: skip)")
    args = parser.parse_args()

    from digest.config import load_settings
    from digest.delivery.message import build_message
    from digest.delivery.transport import SMTPTransport
    from digest.pipeline.job import preview_email, run_job
    from digest.store import init_db, open_engine, session_scope
    from digest.store.papers import upsert_papers
    from digest.store.sources import ensure_source

    rng = random.Random(7)
    corpus = [json.loads(line) for line in (ROOT / "digest/data/sample-papers.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    home = Path(tempfile.mkdtemp(prefix="digest-bench-send-"))
    settings = load_settings(home, env={}, overrides={"secret_key": "benchmark-secret-key-0123456789", "from_address": "digest@example.org", "base_url": "https://digest.example.org"})
    engine = open_engine(settings.database_url)
    init_db(engine)
    setup = time.perf_counter()
    with session_scope(engine) as session:
        source = ensure_source(session, "arxiv-bench", "arxiv-rss", "https://rss.arxiv.org/rss/cs.LG", NOW)
        source_id = source.id
    upsert_papers(engine, source_id, make_papers(corpus, args.papers, rng), NOW - timedelta(hours=2))
    make_subscribers(engine, corpus, args.subscribers, rng)
    print(f"setup: {args.papers} papers, {args.subscribers} subscribers in {time.perf_counter() - setup:.1f}s (not counted); database {home / 'digest.db'}")

    naive_line = ""
    if args.naive:  # before the run, while the first subscriber still has a full edition waiting
        rendered, message, _ = preview_email(engine, settings, NOW, "reader00000@example.org")
        started = time.perf_counter()
        for n in range(args.naive):
            build_message(rendered, to=f"reader{n}@example.org", name=f"Reader {n}", settings=settings, message_id=f"<{n}@example.org>", unsubscribe_url="https://example.org/unsubscribe/x", date=NOW)
        ours = (time.perf_counter() - started) / args.naive
        naive = time_naive_build(settings, rendered, args.naive)
        naive_line = (f"building one {len(message) / 1024:.0f} KB message: build_message {ours * 1e3:.3f} ms, EmailMessage + as_bytes {naive * 1e3:.2f} ms ({naive / ours:.0f}x)")

    ctx = multiprocessing.get_context("fork")
    port_q, stats_q, stop = ctx.Queue(), ctx.Queue(), ctx.Event()
    sink = ctx.Process(target=_run_sink, args=(port_q, stop, stats_q), daemon=True)
    sink.start()
    port = port_q.get(timeout=30)
    smtp_settings = settings.replace(smtp_host="127.0.0.1", smtp_port=port, smtp_security="none")

    started, cpu, children = time.perf_counter(), time.process_time(), _children_cpu()
    load = os.getloadavg()[0]
    with SMTPTransport(smtp_settings) as transport:
        report = run_job(engine, smtp_settings, NOW, fetch=False, transport=transport)
    total, cpu = time.perf_counter() - started, time.process_time() - cpu
    stop.set()
    stats = stats_q.get(timeout=30)
    sink.join(10)
    children = _children_cpu() - children - stats["cpu"]

    sent = report.sent or 1
    print(f"edition: sent {report.sent}, skipped {report.skipped}, failed {report.failed}, deferred {report.deferred} in {total:.1f}s -> {report.sent / total:.0f} emails/s")
    for stage in ("plan", "rank", "render", "build", "send"):
        seconds = report.timings.get(stage, 0.0)
        print(f"  {stage:<7} {seconds:7.2f}s   {seconds / sent * 1e3:7.3f} ms per email")
    print(f"sink: {stats['messages']} messages, {stats['bytes'] / max(stats['messages'], 1) / 1024:.1f} KB each on average, {stats['connections']} SMTP connection(s)")
    print(f"peak memory (RSS): {peak_mb():.0f} MB")
    print(f"rendering: {report.workers or 'no'} worker processes")
    print(f"CPU seconds: digest {cpu:.1f} (ranking, sending, ledger), render workers {children:.1f}, sink {stats['cpu']:.1f}; load average {load:.1f} at the start (2 cores: above ~2, other work slows the figures)")
    if naive_line:
        print(naive_line)

if __name__ == "__main__":
    main()
