"""Hybrid ranking cost (rank_model = "hybrid"): what the stored embeddings save. Prints seconds.

    python benchmarks/hybrid.py [--papers 2000] [--subscribers 10000]

Builds a SQLite store (in a temporary DIGEST_HOME) with `--papers` synthetic papers made of real titles and abstract
sentences from digest/data/sample-papers.jsonl, first seen in the last day, and `--subscribers` subscribers with 1-3
interests drawn from the titles. Then times, each as the operator runs it:
- `digest rank EMAIL` (a new process) with rank_model tfidf, then hybrid three times: the first embeds every
  candidate and stores it, the next ones only read the stored vectors (they do not even load the model);
- the daily run's planning and ranking stage (plan_editions and rank_plans, every subscriber due) with tfidf and with hybrid when
  the papers' vectors are stored but no subscriber's interests are (the first hybrid day), when both are stored,
  and when only the interests are (2,000 new papers: a steady day).
Needs the semantic extra. The load average is printed: the machine is shared, and embedding is all CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def load() -> str:
    return Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?"


def build(engine, papers: int, subscribers: int, now: datetime, rng: random.Random) -> None:
    import sqlalchemy as sa

    from digest.models import Paper, Subscriber

    corpus = [json.loads(line) for line in (ROOT / "digest" / "data" / "sample-papers.jsonl").read_text().splitlines() if line.strip()]
    sentences = [s for d in corpus for s in re.split(r"(?<=\.)\s+", d["abstract"]) if len(s) > 40]
    titles = [re.findall(r"[A-Za-z][A-Za-z-]+", d["title"]) for d in corpus]

    def phrase() -> str:
        words = rng.choice(titles)
        size = rng.randint(1, min(3, len(words)))
        start = rng.randint(0, len(words) - size)
        return " ".join(words[start : start + size])

    seen = now - timedelta(hours=12)
    with engine.begin() as conn:
        conn.execute(sa.insert(Paper), [
            {"key": f"bench:{n}", "ident": f"bench-{n}", "title": corpus[n % len(corpus)]["title"], "abstract": " ".join(rng.sample(sentences, rng.randint(5, 10))),
             "authors": [], "categories": ["cs.LG"], "upvotes": 0, "first_seen": seen, "last_seen": seen}
            for n in range(papers)])
        conn.execute(sa.insert(Subscriber), [
            {"email": f"reader{n}@example.org", "status": "active", "interests": [phrase() for _ in range(rng.randint(1, 3))], "seed_papers": [], "muted_terms": [],
             "muted_authors": [], "categories": [], "created_at": now - timedelta(days=30), "token_version": n}
            for n in range(subscribers)])


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--papers", type=int, default=2000)
    parser.add_argument("--subscribers", type=int, default=10000)
    args = parser.parse_args()
    import sqlalchemy as sa

    from digest.config import load_settings
    from digest.models import InterestEmbedding, PaperEmbedding
    from digest.pipeline.plan import Due, plan_editions, rank_plans
    from digest.store import init_db, open_engine, session_scope
    from digest.store.subscribers import list_subscribers

    now = datetime.now(timezone.utc)
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "DIGEST_HOME": home}
        os.environ["DIGEST_HOME"] = home
        settings = load_settings()
        engine = open_engine(settings.database_url)
        init_db(engine)
        build(engine, args.papers, args.subscribers, now, random.Random(7))
        digest = [sys.executable, "-m", "digest", "rank", "reader0@example.org", "--limit", "20"]
        run = lambda model: subprocess.run(digest, env={**env, "DIGEST_RANK_MODEL": model}, check=True, capture_output=True)  # noqa: E731
        print(f"{args.papers:,} candidate papers, {args.subscribers:,} subscribers; load average {load()}")
        print(f"digest rank (tfidf): {timed(lambda: run('tfidf')):.1f} s")
        print(f"digest rank (hybrid), first: {timed(lambda: run('hybrid')):.1f} s (embeds and stores every candidate)")
        for _ in range(2):
            print(f"digest rank (hybrid), stored vectors: {timed(lambda: run('hybrid')):.1f} s; load average {load()}")
        with session_scope(engine) as session:
            subs = sorted(list_subscribers(session, status="active"), key=lambda s: s.id)
        dues = [Due(sub, now.date().isoformat()) for sub in subs]

        def rank_due(engine, settings, now, dues):
            return rank_plans(plan_editions(engine, settings, now, dues), settings, now, engine=engine)

        rank_due(engine, settings, now, dues[:10])  # imports and first-use costs out of the figures
        print(f"daily ranking stage (tfidf): {timed(lambda: rank_due(engine, settings, now, dues)):.1f} s")
        hybrid = settings.replace(rank_model="hybrid")
        print(f"daily ranking stage (hybrid), papers stored, no interests yet: {timed(lambda: rank_due(engine, hybrid, now, dues)):.1f} s; load average {load()}")
        print(f"daily ranking stage (hybrid), everything stored: {timed(lambda: rank_due(engine, hybrid, now, dues)):.1f} s")
        with engine.begin() as conn:
            conn.execute(sa.delete(PaperEmbedding))
        print(f"daily ranking stage (hybrid), {args.papers:,} new papers, interests stored: {timed(lambda: rank_due(engine, hybrid, now, dues)):.1f} s; load average {load()}")
        with session_scope(engine) as session:
            counts = (session.exec(sa.select(sa.func.count()).select_from(PaperEmbedding)).scalar_one(), session.exec(sa.select(sa.func.count()).select_from(InterestEmbedding)).scalar_one())
        print(f"stored: {counts[0]:,} paper embeddings, {counts[1]:,} subscribers' interest embeddings")
        engine.dispose()


if __name__ == "__main__":
    main()
