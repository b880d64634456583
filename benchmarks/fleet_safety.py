"""Two hosts on one PostgreSQL database, with real processes (tests/fleet_world.py): how many recipients get their
edition twice when two `digest send` start at given offsets; how long after a SIGKILL the other `digest worker`
has sent the dead one's deliveries; the rate a shared send_rate lets through. Prints figures, asserts nothing.

    python benchmarks/fleet_safety.py [--url postgresql+psycopg://postgres@127.0.0.1:5432/test] [--subscribers 500]
                               [--offsets 0,0.5,1,3] [--kill] [--rate 50]

Each scenario gets a new database (created next to --url's, dropped afterwards). The processes run `python -m
digest` from whatever the interpreter imports: PYTHONPATH=/path/to/other/checkout measures that code instead (that
is how the figures "before" in the issue 11 note were taken on main).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import sqlalchemy as sa  # noqa: E402
from fleet_world import FleetWorld  # noqa: E402
from smtp_server import start_smtp_server  # noqa: E402


class Database:
    def __init__(self, url: str) -> None:
        self.base = url
        self.admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")

    def __enter__(self) -> str:
        self.name = f"digest_bench_fleet_{uuid.uuid4().hex[:10]}"
        with self.admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{self.name}"'))
        return sa.engine.make_url(self.base).set(database=self.name).render_as_string(hide_password=False)

    def __exit__(self, *exc: object) -> None:
        with self.admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))


def offsets(url: str, root: Path, n: int, offset: float) -> None:
    with Database(url) as db, start_smtp_server() as server:
        world = FleetWorld.create(db, root / f"offset-{offset}", server, subscribers=n, lease_seconds="10")
        started = time.monotonic()
        a = world.start("send", "a")
        time.sleep(offset)
        b = world.start("send", "b")
        codes = world.wait(a, b)
        twice = sum(1 for count in world.counts().values() if count > 1)
        print(f"offset {offset:>4}s: {len(server.messages)} messages to {len(world.counts())} of {n} recipients, {twice} twice; "
              f"exit codes {codes['a']}, {codes['b']}; {time.monotonic() - started:.1f}s")
        for worker in (a, b):
            error = [line for line in worker.output().splitlines() if "error" in line.lower()]
            if error:
                print(f"    {worker.name}: {error[0][:160]}")


def kill(url: str, root: Path, n: int, lease: float) -> None:
    with Database(url) as db, start_smtp_server() as server:
        world = FleetWorld.create(db, root / "kill", server, subscribers=n, lease_seconds=str(lease), smtp_connections="4")
        server.data_delay = 0.01
        a, b = world.start("worker", "a"), world.start("worker", "b")
        world.wait_for_messages(n // 4)
        a.process.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        world.wait(b)
        last = max(m.at for m in server.messages)
        print(f"SIGKILL after {n // 4} messages: all {len(world.counts())} of {n} recipients served, {world.duplicates()} duplicate(s); "
              f"the last message {last - killed:.1f}s after the kill (lease {lease:g}s, 4 SMTP connections per worker)")


def rate(url: str, root: Path, n: int, limit: float) -> None:
    with Database(url) as db, start_smtp_server() as server:
        world = FleetWorld.create(db, root / "rate", server, subscribers=n, send_rate=str(limit))
        a, b = world.start("send", "a"), world.start("send", "b")
        world.wait(a, b)
        times = sorted(m.at for m in server.messages)
        busiest = max(sum(1 for t in times[i:] if t < start + 1.0) for i, start in enumerate(times))
        print(f"send_rate {limit:g} over two workers: {(len(times) - 1) / (times[-1] - times[0]):.1f} messages/s overall, at most {busiest} in any one second")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("DIGEST_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--subscribers", type=int, default=500)
    parser.add_argument("--offsets", default="0,0.5,1,3")
    parser.add_argument("--kill", action="store_true", help="also the SIGKILL takeover")
    parser.add_argument("--lease", type=float, default=3.0)
    parser.add_argument("--rate", type=float, default=0.0, help="also send_rate with two workers")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for offset in [float(x) for x in args.offsets.split(",") if x]:
            offsets(args.url, root, args.subscribers, offset)
        if args.kill:
            kill(args.url, root, args.subscribers, args.lease)
        if args.rate:
            rate(args.url, root, args.subscribers, args.rate)


if __name__ == "__main__":
    main()
