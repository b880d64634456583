"""The text model behind digest.rank: TF-IDF vectors of the day's candidates and of every profile's texts, which
words of an interest a paper holds (the evidence rule), and the day's trending scores. Pure numpy / scipy (no
scikit-learn: importing it cost 2 s of every `digest rank`): no database, no clock, no network. Scoring profiles
against the candidates is digest.rank.score's job.

Tokens are lower-cased words without English stop words, stemmed by the English Snowball stemmer (so
"autoencoders" meets "autoencoder" and "compatible" meets "compatibility"), unigrams and bigrams; reasons show each
stem as its most frequent plural-stripped word among the candidates. Interests are TF-IDF vectors (sublinear tf); papers
(candidates, seed, liked and disliked ones) weight each term by BM25's saturating, length-normalised tf over title
(counted twice) + abstract, times the same IDF. Every row is L2-normalised, so scores are cosines.
The IDF is fitted on the candidates alone, so a profile scores the same whichever other profiles are ranked with it.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import scipy.sparse as sp
from snowballstemmer import stemmer as snowball_stemmer

from .semantic import DIMENSIONS
from .stop_words import ENGLISH_STOP_WORDS

# Tuned on the "tune" half of benchmarks/eval (figures in docs/benchmarks.md, "Ranking quality").
TITLE_WEIGHT = 2  # a term in the title counts this many times one in the abstract
BM25_K1, BM25_B = 2.0, 0.75  # papers' term weights: BM25's tf saturation and length normalisation, times IDF
# A word of an interest that no candidate holds is what sets the interest apart ("interferometer" in "signal processing
# for interferometer noise"): it weighs twice the IDF of a word in no paper, so the other, generic words alone never
# make "most of the interest" (the off-topic profiles of benchmarks/eval: one padded paper before, none now).
UNSEEN_WEIGHT = 2.0
SEMANTIC_SHARE, SEMANTIC_BASE = 0.1, 0.3  # hybrid (tuned on the "tune" half): embedding weight; cosine taken as unrelated
TOKEN = re.compile(r"(?u)\b\w\w+\b")
STOP_WORDS = frozenset(ENGLISH_STOP_WORDS)
_STEMMER, _STEMMER_LOCK = snowball_stemmer("english"), threading.Lock()


@lru_cache(maxsize=200_000)
def plural(word: str) -> str:
    """Harman's S-stemmer: plural endings only; the readable form of a word that reasons show."""
    if len(word) <= 3:
        return word
    if word.endswith("ies") and not word.endswith(("eies", "aies")):
        return word[:-3] + "y"
    if word.endswith("es") and not word.endswith(("aes", "ees", "oes")):
        return word[:-1]
    if word.endswith("s") and not word.endswith(("us", "ss", "is")):
        return word[:-1]
    return word


@lru_cache(maxsize=200_000)
def stem(word: str) -> str:
    """The English Snowball (Porter 2) stem, so "compatible" meets "compatibility" and "efficient" "efficiency"."""
    with _STEMMER_LOCK:  # a Snowball stemmer object keeps its state while it works
        return _STEMMER.stemWord(word)


def words_of(text: str) -> list[str]:
    """Lower-cased words of `text` without English stop words."""
    return [w for w in TOKEN.findall(text.lower()) if w not in STOP_WORDS]


def analyse(text: str) -> list[str]:
    """Stemmed unigrams and bigrams of `text` (bigrams are formed after stop words are dropped, as scikit-learn does)."""
    words = [stem(w) for w in words_of(text)]
    return words + [f"{a} {b}" for a, b in zip(words, words[1:])]


def readable_forms(texts: Sequence[str]) -> dict[str, str]:
    """For every stemmed unigram and bigram of `texts`, the words a reason shows: its most frequent plural-stripped
    form (ties: the alphabetically first), so a reason says "mechanistic interpretability", not the stems."""
    counts: dict[tuple[str, str], int] = {}
    for text in texts:
        words = words_of(text)
        roots, forms = [stem(w) for w in words], [plural(w) for w in words]
        pairs = list(zip(roots, forms)) + [(f"{a} {b}", f"{c} {d}") for a, b, c, d in zip(roots, roots[1:], forms, forms[1:])]
        for key in pairs:
            counts[key] = counts.get(key, 0) + 1
    best: dict[str, tuple[int, str]] = {}
    for (root, form), n in counts.items():
        if root not in best or (-n, form) < (-best[root][0], best[root][1]):
            best[root] = (n, form)
    return {root: form for root, (_, form) in best.items()}


class Vocabulary:
    """The candidates' terms (sorted, as scikit-learn numbers them) with their smoothed IDF, log((1 + n) / (1 + df)) + 1,
    and the count and sublinear TF-IDF rows of analysed texts over them: what TfidfVectorizer(sublinear_tf=True,
    norm=None) and CountVectorizer did here, in scipy, because importing scikit-learn cost about 2 s of every
    `digest rank` (tests/test_rank_text.py checks the rows against scikit-learn's)."""

    def __init__(self, docs: Sequence[list[str]]):
        self.features = sorted({t for d in docs for t in d})
        self.index = {t: n for n, t in enumerate(self.features)}
        df = np.bincount(self.counts(docs).indices, minlength=len(self.features)).astype(np.float32)
        self.idf = (np.log(np.float32(len(docs) + 1) / (df + 1)) + 1).astype(np.float32)

    def counts(self, docs: Sequence[list[str]]) -> sp.csr_matrix:
        """Term counts (docs x terms, float32); terms not in the vocabulary are left out."""
        index, indptr = self.index, [0]
        indices: list[int] = []
        for doc in docs:
            indices.extend(index[t] for t in doc if t in index)
            indptr.append(len(indices))
        counts = sp.csr_matrix((np.ones(len(indices), np.float32), np.array(indices, dtype=np.intp), np.array(indptr, dtype=np.intp)), shape=(len(docs), len(self.features)))
        counts.sum_duplicates()
        return counts

    def tfidf(self, docs: Sequence[list[str]]) -> sp.csr_matrix:
        """(1 + log tf) x IDF, not normalised."""
        rows = self.counts(docs)
        rows.data = (np.log(rows.data) + 1) * self.idf[rows.indices]
        return rows


def l2_rows(matrix: sp.csr_matrix) -> sp.csr_matrix:
    """Each row over its Euclidean length (rows of zeros stay zeros), float32 CSR."""
    rows = sp.csr_matrix(matrix, dtype=np.float32, copy=True)
    norms = np.sqrt(np.asarray(rows.multiply(rows).sum(axis=1)).ravel())
    rows.data /= np.repeat(np.where(norms > 0, norms, 1), np.diff(rows.indptr)).astype(np.float32)
    return rows


class Corpus:
    """The candidates as L2-normalised TF-IDF rows, their pairwise cosines, and their trending scores (given: the
    score is digest.rank.trending_scores)."""

    def __init__(self, pool: Sequence, trending: np.ndarray, embeddings=None):
        """`embeddings` (semantic.Embeddings, hybrid only): the candidates' sentence embeddings."""
        self.size = len(pool)
        titles = [analyse(c.paper.title or "") for c in pool]
        abstracts = [analyse(c.paper.abstract or "") for c in pool]
        self.vectorizer: Vocabulary | None = None
        if any(titles) or any(abstracts):
            self.vectorizer = Vocabulary([t + a for t, a in zip(titles, abstracts)])
            self.avgdl: float | None = None
            self.docs = self._papers(titles, abstracts)
            forms = readable_forms([f"{c.paper.title or ''} {c.paper.abstract or ''}" for c in pool])
            self.terms = np.array([forms.get(t, t) for t in self.vectorizer.features], dtype=object)
        else:  # no candidates, or none with a word: nothing can match
            self.docs = sp.csr_matrix((self.size, 1), dtype=np.float32)
            self.terms = np.array([""], dtype=object)
        self.term_words = [tuple(t.split(" ")) for t in (self.vectorizer.features if self.vectorizer is not None else self.terms)]
        self.docs_t = self.docs.T.tocsr()
        self.presence_t = (self.docs_t > 0).astype(np.float32).tocsr()  # which terms each candidate holds
        self.gram = (self.docs @ self.docs_t).toarray().astype(np.float32)
        # The day's average paper (a negative example of every vote model): its products with each candidate and itself.
        self.mean_sims = self.gram.mean(axis=1) if self.size else np.zeros(0, np.float32)
        self.mean_self = float(self.gram.mean()) if self.size else 0.0
        self.trending = np.asarray(trending, dtype=np.float32)
        self.trending_rounded = np.round(self.trending.astype(np.float64), 6).tolist()
        self.trending_order = np.lexsort((np.arange(self.size), -self.trending))
        self.embeddings: np.ndarray | None = None
        if embeddings is not None:  # sentence embeddings join the cosines; PRF and MMR see the blended similarity
            vectors = [embeddings.of_paper(c.paper.id, c.paper.title or "", c.paper.abstract or "") for c in pool]
            self.embeddings = np.stack(vectors).astype(np.float32) if vectors else np.zeros((0, DIMENSIONS), np.float32)
            cosines = self.embeddings @ self.embeddings.T
            self.mean_embedding_sims = cosines.mean(axis=1) if self.size else np.zeros(0, np.float32)
            self.mean_embedding_self = float(cosines.mean()) if self.size else 0.0
            self.gram = ((1 - SEMANTIC_SHARE) * self.gram + SEMANTIC_SHARE * shifted(cosines)).astype(np.float32)

    def _papers(self, titles: list[list[str]], abstracts: list[list[str]]) -> sp.csr_matrix:
        """BM25's saturating, length-normalised tf (title tokens counted TITLE_WEIGHT times) x IDF, L2-normalised."""
        vectorizer = self.vectorizer
        assert vectorizer is not None  # only called when the candidates have words
        counts = vectorizer.counts([t * TITLE_WEIGHT + a for t, a in zip(titles, abstracts)])
        lengths = np.asarray(counts.sum(axis=1)).ravel()
        if self.avgdl is None:  # the candidates set the average length; profile papers are measured against it
            self.avgdl = float(max(lengths.mean(), 1.0))
        rows = np.repeat(np.arange(counts.shape[0]), np.diff(counts.indptr))
        tf = counts.data
        counts.data = tf * (BM25_K1 + 1) / (tf + BM25_K1 * (1 - BM25_B + BM25_B * lengths[rows] / self.avgdl))
        return l2_rows(counts @ sp.diags(vectorizer.idf))

    def vectorise(self, interests: list[str], papers: list[tuple[str, str]]) -> sp.csr_matrix:
        """Rows for interest texts, then for (title, abstract) papers, in the candidates' vocabulary."""
        width = self.docs.shape[1]
        if self.vectorizer is None:
            return sp.csr_matrix((len(interests) + len(papers), width), dtype=np.float32)
        blocks = []
        if interests:
            blocks.append(l2_rows(self.vectorizer.tfidf([analyse(t) for t in interests])))
        if papers:
            blocks.append(self._papers([analyse(t) for t, _ in papers], [analyse(a) for _, a in papers]))
        return sp.vstack(blocks, format="csr", dtype=np.float32) if blocks else sp.csr_matrix((0, width), dtype=np.float32)

    def evidence_terms(self, interests: list[str]) -> sp.csr_matrix:
        """One row per interest: the IDF share of each of its words (unigram stems) among the candidates' terms, so
        that `evidence_terms @ presence_t` is the share of the interest a paper holds. A word no candidate holds
        counts UNSEEN_WEIGHT x the highest IDF in the total: "quantum error correction" is not two-thirds present in a
        paper that says "error" and "correction". Rare words weigh more than generic ones, as in the ranking itself."""
        width = self.docs.shape[1]
        if self.vectorizer is None or not interests:
            return sp.csr_matrix((len(interests), width), dtype=np.float32)
        vocabulary, idf = self.vectorizer.index, self.vectorizer.idf
        unseen = UNSEEN_WEIGHT * float(np.log(1.0 + self.size) + 1.0)  # scikit-learn's smoothed IDF of a term in no document
        rows, cols, vals = [], [], []
        for n, text in enumerate(interests):
            words = list(dict.fromkeys(stem(w) for w in words_of(text)))
            weights = [float(idf[vocabulary[w]]) if w in vocabulary else unseen for w in words]
            total = sum(weights)
            for word, weight in zip(words, weights):
                if word in vocabulary:
                    rows.append(n)
                    cols.append(vocabulary[word])
                    vals.append(weight / total)
        return sp.csr_matrix((np.array(vals, dtype=np.float32), (np.array(rows, dtype=np.intp), np.array(cols, dtype=np.intp))), shape=(len(interests), width))


def shifted(cosines: np.ndarray) -> np.ndarray:
    """Embedding cosines rescaled so that unrelated texts (cosine about SEMANTIC_BASE) sit near 0, like TF-IDF's."""
    return ((cosines - SEMANTIC_BASE) / (1 - SEMANTIC_BASE)).astype(np.float32)
