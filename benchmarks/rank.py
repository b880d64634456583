"""Ranking speed: rank_many for 100,000 subscribers x 2,000 candidate papers; prints seconds and peak memory.

    python benchmarks/rank.py [--subscribers 100000] [--papers 2000] [--chunk 1000] [--threads 2]

Candidates are synthetic papers made of real titles and abstract sentences from digest/data/sample-papers.jsonl
(so the vocabulary and lengths are those of real papers), with Hugging Face upvotes and 1-2 sources. Profiles draw
1-3 interests of 1-3 consecutive title words from the same corpus; 30 % have a seed paper, 20 % have voted (1-8
likes, and for half of them 1-4 dislikes too: every one of them trains a vote model), 5 % a muted term, 10 % papers
already sent. Peak memory is the process's peak RSS (ru_maxrss).
CPU seconds are printed next to wall seconds: on a shared machine the wall clock also counts other processes, and
with two threads the CPU seconds may exceed the wall seconds. Reasons are made when first read (as the emails are
rendered); the last line times making them for every pick, which the daily job spreads over its render workers.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import resource
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import digest.rank.text  # noqa: E402,F401 - import scipy and the stemmer before the clock starts
from digest.models import Paper  # noqa: E402
from digest.rank import (  # noqa: E402
    Candidate,  # noqa: E402
    Profile,
    ProfilePaper,
    default_threads,
    rank_many,
)

NOW = datetime(2025, 1, 1, tzinfo=timezone.utc)


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def make_candidates(corpus: list[dict], count: int, rng: random.Random) -> list[Candidate]:
    sentences = [s for d in corpus for s in re.split(r"(?<=\.)\s+", d["abstract"]) if len(s) > 40]
    out = []
    for n in range(count):
        base = corpus[n % len(corpus)]
        abstract = " ".join(rng.sample(sentences, rng.randint(5, 10)))
        paper = Paper(id=n + 1, key=f"bench:{n}", ident=f"bench-{n}", title=base["title"], abstract=abstract,
                      authors=[f"Author {rng.randint(1, 5000)}" for _ in range(3)], categories=[rng.choice(["cs.LG", "cs.CV", "cs.CL"])],
                      upvotes=rng.choice([0, 0, 0, rng.randint(1, 300)]), first_seen=NOW)
        out.append(Candidate(paper, ("arxiv", "hf-daily") if rng.random() < 0.2 else ("arxiv",)))
    return out


def make_profiles(corpus: list[dict], count: int, paper_ids: list[int], rng: random.Random) -> list[Profile]:
    titles = [re.findall(r"[A-Za-z][A-Za-z-]+", d["title"]) for d in corpus]
    papers = [ProfilePaper(d["id"], d["title"], d["abstract"]) for d in corpus]

    def phrase() -> str:
        words = rng.choice(titles)
        size = rng.randint(1, min(3, len(words)))
        start = rng.randint(0, len(words) - size)
        return " ".join(words[start : start + size])

    profiles = []
    for n in range(count):
        r, voter = rng.random(), rng.random() < 0.2
        profiles.append(Profile(
            subscriber_id=n + 1,
            interests=tuple(phrase() for _ in range(rng.randint(1, 3))),
            seed_texts=(rng.choice(papers),) if r < 0.3 else (),
            liked_texts=tuple(rng.sample(papers, rng.randint(1, 8))) if voter else (),
            disliked_texts=tuple(rng.sample(papers, rng.randint(1, 4))) if voter and rng.random() < 0.5 else (),
            muted_terms=(rng.choice(["survey", "benchmark", "medical"]),) if rng.random() < 0.05 else (),
            trending_weight=rng.choice([0.0, 0.2, 0.2, 0.5]),
            exclude_paper_ids=frozenset(rng.sample(paper_ids, 20)) if rng.random() < 0.1 else frozenset(),
        ))
    return profiles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--papers", type=int, default=2_000)
    parser.add_argument("--chunk", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=default_threads(), help="threads scoring chunks")
    args = parser.parse_args()
    rng = random.Random(7)
    corpus = [json.loads(line) for line in (ROOT / "digest" / "data" / "sample-papers.jsonl").read_text().splitlines() if line.strip()]
    candidates = make_candidates(corpus, args.papers, rng)
    profiles = make_profiles(corpus, args.subscribers, [c.paper.id for c in candidates], rng)
    before = peak_mb()
    start, cpu = time.perf_counter(), time.process_time()
    results = rank_many(candidates, profiles, NOW, chunk_size=args.chunk, threads=args.threads)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    peak = peak_mb()
    picks = sum(len(r.picks) for r in results)
    matched = sum(r.matched for r in results)
    print(f"rank_many: {args.subscribers:,} subscribers x {args.papers:,} candidates in {seconds:.1f} s "
          f"({seconds / args.subscribers * 1e6:.0f} us per subscriber; {cpu:.1f} s of CPU; {args.threads} thread(s))")
    print(f"peak memory (RSS): {peak:.0f} MB; {before:.0f} MB before ranking (inputs and interpreter)")
    voters = sum(1 for p in profiles if p.seed_texts or p.liked_texts or p.disliked_texts)
    print(f"picks: {picks:,} ({picks / max(len(results), 1):.1f} per subscriber); matched: {matched:,}; with a vote model (seeds, likes or dislikes): {voters:,}")
    start, cpu = time.perf_counter(), time.process_time()
    reasons = sum(len(r.reasons) for result in results for r in result.picks)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(f"reasons of every pick, made on first read: {seconds:.1f} s ({cpu:.1f} s of CPU) for {reasons:,} reasons "
          f"({cpu / max(picks, 1) * 1e6:.1f} us of CPU per pick); peak memory then {peak_mb():.0f} MB")


if __name__ == "__main__":
    main()
