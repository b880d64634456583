"""What many subscribers cost `digest prune`: the longest write transaction of a prune of a few thousand papers while
--subscribers subscribers (30 % with a seed paper) are stored. The prune must honour a seed named while it runs; how
it checks that inside each batch's write transaction is what this measures. Prints figures; no assertions.

    python benchmarks/prune_seeds.py [--subscribers 100000] [--days 3] [--papers 2000] [--repeat 3]
    python benchmarks/prune_seeds.py --url postgresql+psycopg://postgres@127.0.0.1:5432/test   # a database of its own on that server

The database is benchmarks/retention.py's (its build_world, store_day and add_seeds: subscribers bulk-inserted, each
day's papers stored by the store's own upsert, 30 % of the subscribers naming one of day 0's first 50 papers), with no
ledger: every paper but the seeds is prunable. Each repeat builds it anew and prunes it with keep_days 30.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import retention as aged  # noqa: E402 - the year-old database's builders

KEEP_DAYS = 30


def prune_once(url: str, home: Path, subscribers: int, days: int, per_day: int) -> tuple[float, float, int, int]:
    """(longest batch, whole prune, batches, papers deleted) of one prune of a fresh database."""
    from digest.store.retention import prune_store

    world = aged.build_world(url, home, subscribers, per_day)
    for day in range(days):
        aged.store_day(world, day)
        if day == 0:
            aged.add_seeds(world)
    started = time.perf_counter()
    report = prune_store(world.engine, aged.run_at(days + KEEP_DAYS), keep_days=KEEP_DAYS, keep_ledger_days=0, candidate_days=7)
    took = time.perf_counter() - started
    world.engine.dispose()
    return report.longest_batch, took, report.batches, report.papers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=3, help="days of papers, all past keep_days")
    parser.add_argument("--papers", type=int, default=2000, help="papers a day")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--url", default=None, help="a PostgreSQL URL: a database of its own is made (and dropped) on that server")
    args = parser.parse_args()
    print(f"{args.subscribers:,} subscribers, {args.days * args.papers:,} papers; {aged.load_average()}")
    longest, whole = [], []
    for n in range(args.repeat):
        with aged.bench_database(args.url, "digest-bench-prune-seeds") as (url, home):
            batch, took, batches, papers = prune_once(url, home, args.subscribers, args.days, args.papers)
        longest.append(batch)
        whole.append(took)
        print(f"  prune {n + 1}: {papers:,} papers in {batches} batches, {took:.2f} s; longest batch {batch * 1e3:.1f} ms")
    print(f"longest batch (one write transaction): median {statistics.median(longest) * 1e3:.1f} ms, "
          f"best {min(longest) * 1e3:.1f} ms; whole prune median {statistics.median(whole):.2f} s; {aged.load_average()}")


if __name__ == "__main__":
    main()
