"""The bundled arXiv taxonomy: every category a real arXiv feed carries is known, and a name or typo gets a guess."""

from __future__ import annotations

from pathlib import Path

import feedparser
import pytest

from digest.taxonomy import arxiv_categories, canonical_category, suggest_categories

DATA = Path(__file__).resolve().parent.parent / "digest" / "data"


def test_arxiv_categories_are_the_155_active_ones_and_their_archives():
    codes = arxiv_categories()
    assert len([c for c in codes if c not in ("astro-ph", "cond-mat", "cs", "econ", "eess", "math", "nlin", "physics", "q-bio", "q-fin", "stat")]) == 155
    assert codes["cs.LG"] == "Machine Learning" and codes["stat.ML"] == "Machine Learning" and codes["quant-ph"] == "Quantum Physics"


def test_every_category_of_the_bundled_arxiv_day_is_known():
    feed = feedparser.parse((DATA / "sample-arxiv-cs.CL.xml").read_bytes())
    seen = {tag.term for entry in feed.entries for tag in entry.get("tags", [])}
    assert len(seen) > 20
    assert {code for code in seen if canonical_category(code) != code} == set()


@pytest.mark.parametrize("value, code", [("cs.LG", "cs.LG"), ("CS.lg", "cs.LG"), (" eess ", "eess"), ("astro-ph.co", "astro-ph.CO"),
                                         ("machine learning", None), ("cs.XY", None), ("", None)],
                         ids=["exact", "case", "archive", "dashed-archive", "a-name", "unknown", "empty"])
def test_canonical_category(value, code):
    assert canonical_category(value) == code


@pytest.mark.parametrize("value, first", [("machine learning", ["cs.LG", "stat.ML"]), ("Computer Vision", ["cs.CV"]), ("cs.ML", ["stat.ML"]),
                                          ("cs.LGG", ["cs.LG"]), ("physics.optic", ["physics.optics"]), ("robotics", ["cs.RO"])],
                         ids=["name", "name-case", "wrong-archive", "typo", "typo-long", "one-word-name"])
def test_suggest_categories_puts_the_likely_meaning_first(value, first):
    guesses = suggest_categories(value)
    assert guesses[: len(first)] == first and len(guesses) <= 3


def test_suggest_categories_of_nonsense_is_empty():
    assert suggest_categories("zzzzzz qqqq") == [] and suggest_categories("  ") == []
