"""Benchmark: rendering 1,000 digests of 10 picks each over 1,000 papers, naive vs. inline-once.

naive: premailer over every whole email (what the issue measured at ~10 ms an email).
inline-once: templates inlined once, per-paper cards cached, per-reader slots joined in (digest.render).
Prints ms per email for each; no assertions (figures, not timed tests).

    python benchmarks/render.py [--emails 1000] [--papers 1000] [--picks 10] [--naive-emails 200]
"""

from __future__ import annotations

import argparse
import random
import time
from datetime import date

from digest.models import Paper
from digest.rank import Candidate, RankedPaper, RankResult
from digest.render import DigestRenderer, Links

WORDS = "model learning neural attention diffusion graph language training data robust sparse efficient transformer agent reward policy benchmark".split()


def make_papers(n: int, rng: random.Random) -> list[Candidate]:
    out = []
    for i in range(1, n + 1):
        paper = Paper(
            id=i, key=f"arxiv:2511.{i:05d}", ident=f"2511.{i:05d}", arxiv_id=f"2511.{i:05d}", version=1,
            title=" ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 14))).capitalize(),
            abstract=" ".join(rng.choice(WORDS) for _ in range(rng.randint(120, 250))),
            authors=[f"Author {i}-{k}" for k in range(rng.randint(1, 9))], upvotes=rng.randint(0, 80),
        )
        out.append(Candidate(paper, tuple(rng.sample(["arxiv-cs.LG", "arxiv-cs.CL", "hf-daily", "Distill"], rng.randint(1, 2)))))
    return out


def make_results(candidates: list[Candidate], emails: int, picks: int, rng: random.Random) -> list[RankResult]:
    results = []
    for sid in range(1, emails + 1):
        chosen = rng.sample(candidates, picks + 5)
        ranked = [RankedPaper(c, 1.0, 0.5, 0.1, (f"Matches your interest \"{rng.choice(WORDS)}\"",), True) for c in chosen[:picks]]
        trending = [RankedPaper(c, 0.5, 0.0, 1.0, ("Trending",), False) for c in candidates[:5]]
        results.append(RankResult(sid, ranked, trending))
    return results


def links_for(result: RankResult) -> Links:
    base = f"https://digest.example.org/feedback/s{result.subscriber_id}"
    ids = [r.paper.id for r in result.ranked]
    return Links(f"https://digest.example.org/unsubscribe/s{result.subscriber_id}", f"https://digest.example.org/preferences/s{result.subscriber_id}",
                 {i: f"{base}-{i}-like" for i in ids}, {i: f"{base}-{i}-dislike" for i in ids})


def time_renders(renderer: DigestRenderer, results: list[RankResult]) -> tuple[float, int]:
    start, size = time.perf_counter(), 0
    for result in results:
        email = renderer.render(result, name="Reader", email=f"r{result.subscriber_id}@example.org", edition=date(2026, 11, 27), links=links_for(result), interests=("diffusion", "agents"))
        size = max(size, len(email.html.encode()))
    return (time.perf_counter() - start) * 1000 / len(results), size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emails", type=int, default=1000)
    parser.add_argument("--papers", type=int, default=1000)
    parser.add_argument("--picks", type=int, default=10)
    parser.add_argument("--naive-emails", type=int, default=1000, help="emails for the naive run (it is slow)")
    args = parser.parse_args()
    rng = random.Random(7)
    candidates = make_papers(args.papers, rng)
    results = make_results(candidates, args.emails, args.picks, rng)

    start = time.perf_counter()
    fast = DigestRenderer()
    setup_ms = (time.perf_counter() - start) * 1000
    cold, size = time_renders(fast, results)
    warm, _ = time_renders(fast, results)
    naive, naive_size = time_renders(DigestRenderer(inline_once=False), results[: args.naive_emails])
    print(f"{args.emails} emails, {args.picks} picks each, over {args.papers} papers")
    print(f"setup (compile + inline templates once): {setup_ms:.1f} ms")
    print(f"naive (premailer per email, {min(args.naive_emails, args.emails)} emails): {naive:.2f} ms/email")
    print(f"inline-once, cold card cache:  {cold:.3f} ms/email")
    print(f"inline-once, warm card cache:  {warm:.3f} ms/email  ({naive / warm:.0f}x faster than naive)")
    print(f"largest HTML: {size / 1024:.1f} KB (naive {naive_size / 1024:.1f} KB)")


if __name__ == "__main__":
    main()
