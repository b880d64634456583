"""digest.rank.text without scikit-learn: its stop words and TF-IDF rows are scikit-learn's, which the ranking
was tuned with (scikit-learn stays a test dependency for these checks)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, CountVectorizer, TfidfVectorizer
from sklearn.preprocessing import normalize
from snowballstemmer.english_stemmer import EnglishStemmer

from digest.rank.stop_words import ENGLISH_STOP_WORDS as OURS
from digest.rank.text import (
    ReadableTerms,
    Vocabulary,
    analyse,
    l2_rows,
    readable_forms,
    row_norms,
    stem,
    stem_words,
    words_of,
)

SAMPLE = Path(__file__).resolve().parent.parent / "digest" / "data" / "sample-papers.jsonl"

TEXTS = [
    "Sparse autoencoders find interpretable features in language models",
    "Dictionary learning of sparse features: autoencoders and interpretability",
    "Weather forecasting with neural operators beats numerical weather prediction",
    "",
    "Robots robots robots walk",
]


def _identity(tokens: list[str]) -> list[str]:
    return tokens


def test_stop_words_are_scikit_learns():
    assert OURS == frozenset(ENGLISH_STOP_WORDS)


@pytest.mark.parametrize("queries", [["sparse autoencoders", "weather robots", "nothing known here"]], ids=["queries"])
def test_vocabulary_rows_are_scikit_learns(queries):
    docs = [analyse(t) for t in TEXTS]
    ours = Vocabulary(docs)
    theirs = TfidfVectorizer(analyzer=_identity, sublinear_tf=True, norm=None, dtype=np.float32).fit(docs)
    assert ours.features == list(theirs.get_feature_names_out())
    counts = CountVectorizer(analyzer=_identity, vocabulary=theirs.vocabulary_, dtype=np.float32).transform(docs)
    np.testing.assert_array_equal(ours.counts(docs).toarray(), counts.toarray())
    # The IDF is BM25's, log(1 + (n - df + 0.5) / (df + 0.5)), not scikit-learn's smoothed one; the rest is theirs.
    df = (counts.toarray() > 0).sum(axis=0)
    bm25 = np.log(1 + (len(docs) - df + 0.5) / (df + 0.5))
    np.testing.assert_allclose(ours.idf, bm25, rtol=1e-6)
    assert not np.allclose(ours.idf, theirs.idf_)
    theirs.idf_ = bm25
    asked = [analyse(q) for q in queries]
    np.testing.assert_allclose(ours.tfidf(asked).toarray(), theirs.transform(asked).toarray(), rtol=1e-6)
    np.testing.assert_allclose(l2_rows(ours.tfidf(asked)).toarray(), normalize(theirs.transform(asked)).toarray(), rtol=1e-6, atol=1e-7)


def test_stem_words_are_the_pure_python_snowball_stems():
    """The C stemmer (PyStemmer) stems as snowballstemmer's own English stemmer, which the ranking was tuned with."""
    papers = [json.loads(line) for line in SAMPLE.read_text().splitlines() if line.strip()]
    words = sorted({w for p in papers for w in words_of(f"{p['title']} {p['abstract']}")})
    reference = EnglishStemmer()
    stems = stem_words(words)
    assert len(words) > 3000
    assert stems == {w: reference.stemWord(w) for w in words}
    assert [stem(w) for w in words[:50]] == [reference.stemWord(w) for w in words[:50]]


def test_row_norms_are_the_rows_euclidean_lengths_empty_rows_included():
    """Rows of zeros at the start, in the middle and at the end have length 0 (np.add.reduceat would sum past them)."""
    dense = np.array([[0, 0, 0], [3, 4, 0], [0, 0, 0], [1, 0, 0], [0, 2, 0], [0, 0, 0]], dtype=np.float32)
    matrix = sp.csr_matrix(dense)
    np.testing.assert_allclose(row_norms(matrix), [0, 5, 0, 1, 2, 0], rtol=1e-6)
    assert row_norms(sp.csr_matrix((2, 3), dtype=np.float32)).tolist() == [0.0, 0.0]


def test_readable_terms_are_the_forms_of_every_term():
    """Worked out term by term when a reason shows one, the forms are those of the whole corpus counted at once."""
    papers = [json.loads(line) for line in SAMPLE.read_text().splitlines() if line.strip()]
    texts = [words_of(f"{p['title']} {p['abstract']}") for p in papers]
    forms = readable_forms([f"{p['title']} {p['abstract']}" for p in papers])
    features = sorted(forms)
    terms = ReadableTerms(features, texts)
    assert len(features) > 10_000 and any(" " in f and forms[f] != f for f in features)
    assert [terms[n] for n in range(len(features))] == [forms[f] for f in features]
    assert terms[len(features) - 1] == forms[features[-1]]  # the second look-up answers from what the first kept


def test_readable_forms_summed_per_text_are_those_of_the_texts_counted_at_once():
    """readable_forms keeps each text's counts and sums them: the forms are those of all the texts counted together
    (a form frequent in one text and rare in another, ties broken alphabetically), whichever texts are combined."""
    papers = [json.loads(line) for line in SAMPLE.read_text().splitlines() if line.strip()][:60]
    titles = [p["title"] for p in papers] + ["Sparse autoencoders", "sparse autoencoder features", "A sparse autoencoder"]
    for k in range(0, len(titles), 3):
        group = titles[k : k + 7]
        assert readable_forms(group) == _counted_at_once(group)
    assert readable_forms(["sparse autoencoders", "sparse autoencoder features", "a sparse autoencoder"])["spars autoencod"] == "sparse autoencoder"


def _counted_at_once(texts: list[str]) -> dict[str, str]:
    """The forms by their definition: every (stem, plural-stripped form) of the texts counted in one pass."""
    from collections import Counter

    from digest.rank.text import plural, stem

    counts: Counter[tuple[str, str]] = Counter()
    for words in (words_of(t) for t in texts):
        counts.update((stem(w), plural(w)) for w in words)
        counts.update((f"{stem(a)} {stem(b)}", f"{plural(a)} {plural(b)}") for a, b in zip(words, words[1:]))
    best: dict[str, tuple[int, str]] = {}
    for (root, form), n in sorted(counts.items(), key=lambda item: (-item[1], item[0][1])):
        best.setdefault(root, (n, form))
    return {root: form for root, (_, form) in best.items()}
