"""Several sending processes on one PostgreSQL database: 100,000 subscribers x 2,000 papers sent by 1, 2 and 4
worker processes, each with its own DIGEST_HOME (as if on separate hosts), to the sink of benchmarks/send.py in its
own process. Prints, per number of workers: emails/s, CPU per email, peak memory per worker, duplicates, and the
scaling ratio against one worker; no assertions (figures, not timed tests).

    DIGEST_BENCH_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test python benchmarks/fleet.py \
        [--subscribers 100000] [--papers 2000] [--workers 1,2,4] [--command worker] [--pin]
        [--relay 0.05 --connections 8]

`--relay SECONDS` sends to tests/smtp_server.py's aiosmtpd server answering every command SECONDS late (a relay
across the internet, as in benchmarks/send.py) instead of the sink, and `--connections N` sets each worker's
`smtp_connections`: there the workers wait on the relay rather than on the CPU, so the scaling ratio shows whether
the coordination through PostgreSQL (claims, leases, the ledger) lets a second host add its connections' worth.

`--pin` gives each worker one core of its own (worker k on core k mod the cores; Linux sched_setaffinity), as if
each were a one-core host: on one 2-core machine an unpinned worker already uses both cores (its forked render
workers), so two unpinned workers cannot show how the fleet scales across hosts.

Each run gets a database of its own (created and dropped on the server). `--command` is the digest command each
worker runs: `worker` (a claiming worker, issue 11 item 5) when the CLI has it, else `send`, which before PostgreSQL
coordinates the senders sends the edition once per worker: the duplicates column says so. CPU and peak memory come
from each worker's rusage (os.wait4).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import send as single  # noqa: E402 - the data and the sink of the one-process benchmark

SECRET = "benchmark-secret-key-0123456789"


def server_url(url: str, database: str) -> str:
    return url.rsplit("/", 1)[0] + "/" + database


def create_database(url: str, name: str, drop: bool = False) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(server_url(url, "postgres"), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
        if not drop:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    engine.dispose()


def prepare(url: str, subscribers: int, papers: int) -> None:
    """Papers first seen two hours ago and `subscribers` subscribers due since midnight UTC, in the database at `url`."""
    import sqlalchemy as sa

    from digest.models import Subscriber
    from digest.store import init_db, open_engine, session_scope
    from digest.store.papers import upsert_papers
    from digest.store.sources import ensure_source

    now = datetime.now(timezone.utc)
    rng = random.Random(7)
    corpus = [json.loads(line) for line in (ROOT / "digest/data/sample-papers.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    engine = open_engine(url)
    init_db(engine)
    with session_scope(engine) as session:
        source_id = ensure_source(session, "arxiv-bench", "arxiv-rss", "https://rss.arxiv.org/rss/cs.LG", now).id
    upsert_papers(engine, source_id, single.make_papers(corpus, papers, rng), now - timedelta(hours=2))
    single.make_subscribers(engine, corpus, subscribers, rng)
    with engine.begin() as conn:  # due now, whatever the hour
        conn.execute(sa.update(Subscriber.__table__).values(send_at="00:00"))
    engine.dispose()


def run_fleet(url: str, workers: int, command: str, port: int, pin: bool = False, connections: int | None = None) -> dict:
    """`workers` processes of `digest COMMAND`, each with its own home; their wall time, CPU and peak memory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    env.update(DIGEST_DATABASE_URL=url, DIGEST_SECRET_KEY=SECRET, DIGEST_FROM_ADDRESS="digest@example.org", DIGEST_BASE_URL="https://digest.example.org",
               DIGEST_SMTP_HOST="127.0.0.1", DIGEST_SMTP_PORT=str(port), DIGEST_SMTP_SECURITY="none")
    if connections:
        env["DIGEST_SMTP_CONNECTIONS"] = str(connections)
    load = os.getloadavg()
    started = time.perf_counter()
    procs = []
    for n in range(workers):
        home = tempfile.mkdtemp(prefix=f"digest-bench-fleet-{n}-")
        with open(Path(home) / "output.txt", "wb") as out:  # a file, not a pipe: nobody reads a pipe while the workers run
            core = sorted(os.sched_getaffinity(0))[n % len(os.sched_getaffinity(0))] if pin else None
            pinned = (lambda core=core: os.sched_setaffinity(0, {core})) if pin else None
            argv = [command, "--fetch", "never"] if command == "worker" else [command]  # no fetch: the papers are in; no DNS wait
            proc = subprocess.Popen([sys.executable, "-m", "digest", *argv], env={**env, "DIGEST_HOME": home}, stdout=out, stderr=subprocess.STDOUT,
                                    preexec_fn=pinned)
        procs.append((proc, Path(home) / "output.txt"))
    cpu, peak, lines = 0.0, 0.0, []
    for proc, output in procs:
        _, _, usage = os.wait4(proc.pid, 0)
        proc.returncode = 0  # reaped here: Popen must not wait for it again
        cpu += usage.ru_utime + usage.ru_stime  # includes its waited-for children (render workers)
        peak = max(peak, usage.ru_maxrss / 1024)
        lines.append(output.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-1:] or ["(no output)"])
    return {"wall": time.perf_counter() - started, "cpu": cpu, "peak": peak, "load": load, "lines": lines}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--papers", type=int, default=2_000)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--command", default=None, help="worker (default when `digest worker` exists) or send")
    parser.add_argument("--pin", action="store_true", help="each worker on one core of its own, as if on one-core hosts")
    parser.add_argument("--relay", type=float, default=None, metavar="SECONDS", help="send through an aiosmtpd relay answering every command this late")
    parser.add_argument("--connections", type=int, default=None, help="smtp_connections of each worker (default: the setting's default)")
    args = parser.parse_args()
    url = os.environ.get("DIGEST_BENCH_POSTGRES_URL")
    if not url:
        sys.exit("set DIGEST_BENCH_POSTGRES_URL to a PostgreSQL server's URL (a database per run is created on it)")
    from digest.cli import main as cli

    command = args.command or ("worker" if "worker" in getattr(cli, "commands", {}) else "send")
    rates = {}
    for workers in [int(w) for w in args.workers.split(",")]:
        name = f"digest_bench_fleet_{os.getpid()}_{workers}"
        create_database(url, name)
        try:
            setup = time.perf_counter()
            prepare(server_url(url, name), args.subscribers, args.papers)
            print(f"setup: {args.papers} papers, {args.subscribers} subscribers in {time.perf_counter() - setup:.0f}s (not counted)")
            sink = single.Server(args.relay)
            run = run_fleet(server_url(url, name), workers, command, sink.port, pin=args.pin, connections=args.connections)
            stats = sink.close()
        finally:
            create_database(url, name, drop=True)
        unique = min(stats["messages"], args.subscribers)
        rates[workers] = unique / run["wall"]
        where = f" via a {args.relay * 1e3:.0f} ms relay" if args.relay is not None else ""
        conns = f", {args.connections} connections each" if args.connections else ""
        print(f"{workers} x `digest {command}`{' (one core each)' if args.pin else ''}{where}{conns}: {stats['messages']} messages ({stats['messages'] - unique} duplicates) in {run['wall']:.1f}s -> {rates[workers]:.0f} emails/s;"
              f" CPU per email {run['cpu'] / max(stats['messages'], 1) * 1e3:.2f} ms; peak memory per worker {run['peak']:.0f} MB;"
              f" load average {' '.join(f'{x:.1f}' for x in run['load'])} at the start")
        for line in run["lines"]:
            print("   ", line[0])
    if 1 in rates:
        print("scaling against one worker: " + ", ".join(f"{w} workers {rate / rates[1]:.2f}x" for w, rate in rates.items() if w != 1))


if __name__ == "__main__":
    main()
