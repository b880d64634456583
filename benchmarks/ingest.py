"""Ingest benchmark: 100,000 JSON Lines papers imported into a fresh SQLite database, and 10 feeds of 1,000 arXiv
entries (RSS 2.0 in the rss.arxiv.org format) parsed and stored. Prints papers per second and peak memory.

    python benchmarks/ingest.py [--papers 100000] [--feeds 10] [--entries 1000] [--profile]

Synthetic records recombine the words of the bundled real sample (digest/data), with unique ids, so lengths and
vocabulary look like real abstracts. Target: at least 20,000 papers/s for the JSON Lines import (2 cores).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import resource
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from xml.sax.saxutils import escape

from digest.ingest import SAMPLE_FILES, import_file
from digest.sources.parse import parse_file, parse_source
from digest.store import init_db, open_engine, session_scope
from digest.store.papers import count_papers, upsert_papers
from digest.store.sources import add_source

NOW = datetime(2026, 8, 13, 21, 0, tzinfo=timezone.utc)
CATEGORIES = ["cs.LG", "cs.CL", "cs.AI", "cs.CV", "stat.ML", "cs.IR", "cs.RO", "math.OC", "eess.AS", "q-bio.NC"]


def load_sample() -> list[dict]:
    return [json.loads(line) for line in SAMPLE_FILES[0].read_text(encoding="utf-8").splitlines() if line.strip()]


def synthetic_papers(n: int, seed: int = 7):
    """n realistic records: titles and abstracts recombined from real sentences and words, unique ids."""
    rng = random.Random(seed)
    sample = load_sample()
    title_words = [w for p in sample for w in p["title"].split()]
    sentences = [s.strip() + "." for p in sample for s in re.split(r"(?<=\.)\s+", p["abstract"]) if len(s) > 30]
    surnames = ["Zhao", "Raissi", "Oved", "Pony", "Garcia", "Müller", "Kızıltepe", "Jiménez", "Nguyen", "Okafor", "Smith", "Ivanova"]
    given = ["Ruoxi", "Maziar", "Tal", "Roi", "Ana", "Jonas", "Oğuz", "Lucía", "Minh", "Chidi", "Alex", "Olga"]
    base = datetime(2024, 1, 1, tzinfo=timezone.utc)
    for i in range(n):
        title = " ".join(rng.choices(title_words, k=rng.randint(6, 14)))
        record = {
            "id": f"syn-{i:06d}",
            "title": title,
            "abstract": " ".join(rng.choices(sentences, k=rng.randint(4, 8))),
            "authors": [f"{rng.choice(given)} {rng.choice(surnames)}" for _ in range(rng.randint(1, 6))],
            "categories": rng.sample(CATEGORIES, k=rng.randint(1, 3)),
            "published": (base + timedelta(minutes=7 * i)).isoformat(),
        }
        if i % 2 == 0:  # half of them carry an arXiv URL (the key is then the arXiv id), half a title key
            record["url"] = f"https://arxiv.org/abs/{24 + i // 900_000:02d}{(i // 90_000) % 12 + 1:02d}.{i % 90_000 + 10_000:05d}"
        if i % 5 == 0:
            record["doi"] = f"10.5555/syn.{i}"
        if i % 7 == 0:
            record["upvotes"] = rng.randint(0, 200)
        yield record


def write_jsonl(path: Path, n: int) -> None:
    with path.open("w", encoding="utf-8") as out:
        for record in synthetic_papers(n):
            out.write(json.dumps(record, ensure_ascii=False) + "\n")


def arxiv_rss(feed_no: int, entries: int) -> bytes:
    """One rss.arxiv.org RSS 2.0 day of `entries` items, built on the real capture's channel and item template."""
    real = SAMPLE_FILES[1].read_text(encoding="utf-8")
    head = real[: real.index("<item>")]
    item_template = real[real.index("<item>"): real.index("</item>") + len("</item>")]
    rng = random.Random(feed_no)
    records = synthetic_papers(entries, seed=100 + feed_no)
    kinds = ["new"] * 5 + ["cross"] * 3 + ["replace", "replace-cross"]
    items = []
    for i, record in enumerate(records):
        arxiv_id = f"2608.{feed_no * entries + i + 20_000:05d}"
        kind = rng.choice(kinds)
        version = 1 if kind in ("new", "cross") else rng.randint(2, 4)
        fields = {
            "title": escape(record["title"]),
            "link": f"https://arxiv.org/abs/{arxiv_id}",
            "description": f"arXiv:{arxiv_id}v{version} Announce Type: {kind} \nAbstract: {escape(record['abstract'])}",
            "guid": f"oai:arXiv.org:{arxiv_id}v{version}",
            "arxiv:announce_type": kind,
            "dc:creator": escape(", ".join(record["authors"])),
        }
        item = item_template
        for tag, value in fields.items():
            item = re.sub(rf"(<{tag}[^>]*>).*?(</{tag}>)", lambda m, v=value: m.group(1) + v + m.group(2), item, flags=re.S)
        items.append(item)
    return (head + "\n    ".join(items) + "\n  </channel>\n</rss>\n").encode("utf-8")


def peak_mb(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # Linux reports KiB; for RUSAGE_CHILDREN, the largest child


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # waited-for children: the forked parsing process
    return usage.ru_utime + usage.ru_stime


def fresh_engine(directory: Path, name: str):
    engine = open_engine(f"sqlite:///{directory / name}")
    init_db(engine)
    return engine


def timed(call):
    """(result, wall seconds, CPU seconds of this process and its children): the CPU figure is steadier on a
    machine shared with other work."""
    wall, cpu = time.perf_counter(), time.process_time() + children_cpu()
    result = call()
    return result, time.perf_counter() - wall, time.process_time() + children_cpu() - cpu


def bench_jsonl(directory: Path, n: int) -> None:
    path = directory / "papers.jsonl"
    write_jsonl(path, n)
    engine = fresh_engine(directory, "jsonl.db")
    with open("/proc/loadavg") as f:
        load = f.read().split()[0]
    parent = time.process_time()
    report, wall, cpu = timed(lambda: import_file(engine, path, NOW))
    parent = time.process_time() - parent
    peak, child_peak = peak_mb(), peak_mb(resource.RUSAGE_CHILDREN)
    again, wall2, cpu2 = timed(lambda: import_file(engine, path, NOW + timedelta(days=1)))
    with session_scope(engine) as s:
        stored = count_papers(s)
    print(f"JSON Lines import, fresh SQLite: {n:,} papers ({path.stat().st_size / 1e6:.0f} MB, {report.new:,} new, {stored:,} rows) "
          f"in {wall:.2f} s = {n / wall:,.0f} papers/s wall, {n / cpu:,.0f} papers per CPU-second "
          f"({cpu:.2f} CPU-s: {parent:.2f} storing in this process, {cpu - parent:.2f} parsing in the forked one); "
          f"peak RSS {peak:.0f} MB (parsing process {child_peak:.0f} MB); load average before: {load}")
    print(f"  re-import of the same file ({again.unchanged:,} unchanged, {again.new + again.updated} written): {wall2:.2f} s = "
          f"{n / wall2:,.0f} papers/s wall, {n / cpu2:,.0f}/CPU-s; peak RSS {peak_mb():.0f} MB (parsing process {peak_mb(resource.RUSAGE_CHILDREN):.0f} MB)")
    _, parse_wall, parse_cpu = timed(lambda: parse_file(path.read_bytes(), path.name))
    print(f"  parse_file of the whole file alone (held in memory): {n / parse_cpu:,.0f} papers/CPU-s")


def bench_feeds(directory: Path, feeds: int, entries: int) -> None:
    bodies = [arxiv_rss(f, entries) for f in range(feeds)]
    engine = fresh_engine(directory, "feeds.db")
    with session_scope(engine) as s:
        ids = [add_source(s, f"arxiv:feed{f}", "arxiv-rss", f"https://rss.arxiv.org/rss/feed{f}", NOW).id for f in range(feeds)]
    parse_s = store_s = wall = 0.0
    total = 0
    for source_id, body in zip(ids, bodies):
        result, w1, c1 = timed(lambda body=body: parse_source("arxiv-rss", body))
        _, w2, c2 = timed(lambda source_id=source_id, result=result: upsert_papers(engine, source_id, result.papers, NOW))
        parse_s, store_s, wall = parse_s + c1, store_s + c2, wall + w1 + w2
        total += len(result.papers)
    print(f"arXiv RSS feeds: {feeds} x {entries:,} entries ({sum(map(len, bodies)) / 1e6:.1f} MB): {total:,} papers in {wall:.2f} s "
          f"= {total / wall:,.0f} papers/s wall, {total / (parse_s + store_s):,.0f}/CPU-s (parsing {total / parse_s:,.0f}/CPU-s, "
          f"storing {total / store_s:,.0f}/CPU-s); peak RSS so far {peak_mb():.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--papers", type=int, default=100_000)
    parser.add_argument("--feeds", type=int, default=10)
    parser.add_argument("--entries", type=int, default=1_000)
    parser.add_argument("--profile", action="store_true", help="profile the JSON Lines import (cProfile, top 25)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="digest-bench-") as tmp:
        directory = Path(tmp)
        if args.profile:
            import cProfile
            import pstats

            cProfile.runctx("bench_jsonl(directory, args.papers)", globals(), locals(), str(directory / "prof"))
            pstats.Stats(str(directory / "prof")).sort_stats("cumulative").print_stats(25)
            return
        bench_jsonl(directory, args.papers)
        bench_feeds(directory, args.feeds, args.entries)


if __name__ == "__main__":
    main()
