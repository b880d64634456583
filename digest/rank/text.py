"""The text model behind digest.rank: TF-IDF vectors of the day's candidates and of every profile's texts, which
words of an interest a paper holds (the evidence rule), and the day's trending scores. Pure numpy / scipy (no
scikit-learn: importing it cost 2 s of every `digest rank`): no database, no clock, no network. Scoring profiles
against the candidates is digest.rank.score's job.

Tokens are lower-cased words without English stop words, stemmed by the English Snowball stemmer (so
"autoencoders" meets "autoencoder" and "compatible" meets "compatibility"), unigrams and bigrams; reasons show each
stem as its most frequent plural-stripped word among the candidates. Interests are TF-IDF vectors (sublinear tf); papers
(candidates, seed, liked and disliked ones) weight each term by BM25's saturating, length-normalised tf over title
(counted twice) + abstract, times the same IDF: BM25's, log(1 + (n - df + 0.5) / (df + 0.5)). Every row is
L2-normalised, so scores are cosines.
The IDF is fitted on the candidates alone, so a profile scores the same whichever other profiles are ranked with it.
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
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
# An interest whose words' mean IDF is under SPECIFIC_IDF x the IDF of a word in no paper is made of common words: if
# it is also the day's common topic (digest.rank.score.COMMON_SHARE), its papers may be picked below relevance_floor,
# by the ratio of the two (at most MAX_LENIENCY times below).
SPECIFIC_IDF, MAX_LENIENCY = 0.25, 10.0
SEMANTIC_SHARE, SEMANTIC_BASE = 0.1, 0.4  # hybrid (tuned on the tune profiles): embedding weight; cosine taken as unrelated
TOKEN = re.compile(r"(?u)\b\w\w+\b")
STOP_WORDS = frozenset(ENGLISH_STOP_WORDS)
_STEMMER, _STEMMER_LOCK = snowball_stemmer("english"), threading.Lock()
STEM_CACHE = 500_000  # words whose stems are kept (about 100 MB at most; a day of papers holds some 30,000)
_STEMS: dict[str, str] = {}


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


def stem(word: str) -> str:
    """The English Snowball (Porter 2) stem, so "compatible" meets "compatibility" and "efficient" "efficiency"."""
    found = _STEMS.get(word)
    return found if found is not None else stem_words((word,))[word]


def stem_words(words: Iterable[str]) -> dict[str, str]:
    """{word: stem} for the distinct `words`, those not stemmed before in one call. snowballstemmer hands out
    PyStemmer's C stemmer when it is installed (a dependency): the same stems as its pure Python one
    (tests/test_rank_text.py), 20 times faster (20,130 words: 0.48 s -> 0.022 s)."""
    known: dict[str, str] = {}
    missing: list[str] = []
    for w in set(words):
        found = _STEMS.get(w)
        if found is None:
            missing.append(w)
        else:
            known[w] = found
    if missing:
        with _STEMMER_LOCK:  # a Snowball stemmer object keeps its state while it works
            stems = _STEMMER.stemWords(missing) if hasattr(_STEMMER, "stemWords") else [_STEMMER.stemWord(w) for w in missing]
        if len(_STEMS) + len(missing) > STEM_CACHE:
            _STEMS.clear()
        _STEMS.update(zip(missing, stems))
        known.update(zip(missing, stems))
    return known


def words_of(text: str) -> list[str]:
    """Lower-cased words of `text` without English stop words."""
    return [w for w in TOKEN.findall(text.lower()) if w not in STOP_WORDS]


def grams(roots: list[str]) -> list[str]:
    """Unigrams and bigrams of stemmed words (bigrams are formed after stop words are dropped, as scikit-learn does)."""
    return roots + [f"{a} {b}" for a, b in zip(roots, roots[1:])]


def analyse(text: str) -> list[str]:
    """Stemmed unigrams and bigrams of `text`."""
    words = words_of(text)
    stems = stem_words(words)
    return grams([stems[w] for w in words])


def readable_forms(texts: Sequence[str]) -> dict[str, str]:
    """For every stemmed unigram and bigram of `texts`, the words a reason shows: its most frequent plural-stripped
    form (ties: the alphabetically first), so a reason says "mechanistic interpretability", not the stems. Each
    text's counts are made once (an edition asks this of every subscriber's interests, which recur across
    subscribers in new combinations) and summed."""
    counts: dict[tuple[str, str], int] = {}
    for text in texts:
        for key, n in _form_counts(text):
            counts[key] = counts.get(key, 0) + n
    best: dict[str, tuple[int, str]] = {}
    for (root, form), n in counts.items():
        if root not in best or (-n, form) < (-best[root][0], best[root][1]):
            best[root] = (n, form)
    return {root: form for root, (_, form) in best.items()}


@lru_cache(maxsize=16384)
def _form_counts(text: str) -> tuple[tuple[tuple[str, str], int], ...]:
    """How often each (stemmed term, plural-stripped form) occurs in `text`: words and word pairs are counted first
    (Counter counts in C), then each distinct one is stemmed and plural-stripped once."""
    words = words_of(text)
    singles = Counter(words)
    pairs = Counter(zip(words, words[1:]))
    stems = stem_words(singles)
    forms = {w: plural(w) for w in singles}
    counts: dict[tuple[str, str], int] = {}
    for word, n in singles.items():
        key = (stems[word], forms[word])
        counts[key] = counts.get(key, 0) + n
    for (a, b), n in pairs.items():
        key = (stems[a] + " " + stems[b], forms[a] + " " + forms[b])
        counts[key] = counts.get(key, 0) + n
    return tuple(counts.items())


class ReadableTerms:
    """The words a reason shows for each term of a vocabulary, as readable_forms gives them (the most frequent
    plural-stripped form among the texts, ties alphabetically first), worked out for a term when a reason first
    shows it: a ranking shows a few hundred of its tens of thousands of terms. A bigram's forms are the pairs of its
    two stems' words, looked up among the texts' word pairs, so each term costs a few dictionary look-ups."""

    def __init__(self, features: Sequence[str], texts: Sequence[list[str]]):
        self.features = features
        self.singles: Counter[str] = Counter()
        self.pairs: Counter[tuple[str, str]] = Counter()
        for words in texts:
            self.singles.update(words)
            self.pairs.update(zip(words, words[1:]))
        stems = stem_words(self.singles)
        self.words_of_stem: dict[str, list[str]] = {}
        for word in self.singles:
            self.words_of_stem.setdefault(stems[word], []).append(word)
        self.shown: dict[int, str] = {}

    def __getitem__(self, term: int) -> str:
        found = self.shown.get(term)
        if found is None:
            found = self.shown[term] = self._form(self.features[term])
        return found

    def _form(self, root: str) -> str:
        counts: Counter[str] = Counter()
        parts = root.split(" ")
        if len(parts) == 1:
            for word in self.words_of_stem.get(root, ()):
                counts[plural(word)] += self.singles[word]
        else:
            first, second = parts
            for a in self.words_of_stem.get(first, ()):
                for b in self.words_of_stem.get(second, ()):
                    n = self.pairs.get((a, b))
                    if n:
                        counts[f"{plural(a)} {plural(b)}"] += n
        return min(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0] if counts else root


class TermWords:
    """The words of each term of a vocabulary (a bigram's two), split when a reason asks for them."""

    def __init__(self, features: Sequence[str]):
        self.features = features

    def __getitem__(self, term: int) -> tuple[str, ...]:
        return tuple(self.features[term].split(" "))


class Vocabulary:
    """The candidates' terms (sorted, as scikit-learn numbers them) with BM25's IDF, log(1 + (n - df + 0.5) / (df +
    0.5)), and the count and sublinear TF-IDF rows of analysed texts over them: what CountVectorizer and
    TfidfVectorizer(sublinear_tf=True, norm=None) did here, in scipy, because importing scikit-learn cost about 2 s of
    every `digest rank` (tests/test_rank_text.py checks the rows against scikit-learn's, with this IDF).

    Why not scikit-learn's smoothed IDF, log((1 + n) / (1 + df)) + 1, used until 2026-11-29: its "+ 1" narrows the gap
    between a rare word and a common one (1.8 to 1 for words in 3 and 40 of 237 papers; BM25's 2.4 to 1), so an
    interest's common phrase ("self-supervised") outweighed its rare words ("audio") where BM25 alone did not. On the
    hand-judged set (benchmarks/eval) BM25's IDF raised nDCG@10 on the tune profiles (0.855 -> 0.863) and on the two
    batches of held-out profiles that were first run to decide it, the default's and the hybrid's alike
    (docs/benchmarks.md)."""

    def __init__(self, docs: Sequence[list[str]]):
        self._number_terms(docs)
        self._weigh_terms(self.counts(docs, known=True))

    @classmethod
    def fit(cls, titles: Sequence[list[str]], abstracts: Sequence[list[str]]) -> tuple[Vocabulary, sp.csr_matrix, sp.csr_matrix]:
        """The vocabulary of papers (title + abstract terms), with the counts of their titles and abstracts apart:
        each text is counted once, for the IDF and for the papers' rows alike."""
        vocabulary = cls.__new__(cls)
        vocabulary._number_terms((*titles, *abstracts))
        title_counts, abstract_counts = vocabulary.counts(titles, known=True), vocabulary.counts(abstracts, known=True)
        vocabulary._weigh_terms(title_counts + abstract_counts)
        return vocabulary, title_counts, abstract_counts

    def _number_terms(self, docs: Sequence[list[str]]) -> None:
        features: set[str] = set()
        for doc in docs:
            features.update(doc)
        self.features = sorted(features)
        self.index = {t: n for n, t in enumerate(self.features)}

    def _weigh_terms(self, counts: sp.csr_matrix) -> None:
        df = np.bincount(counts.indices, minlength=len(self.features)).astype(np.float32)
        self.idf = bm25_idf(df, counts.shape[0])

    def counts(self, docs: Sequence[list[str]], known: bool = False) -> sp.csr_matrix:
        """Term counts (docs x terms, float32); terms not in the vocabulary are left out (`known`: every term is in)."""
        index, indptr = self.index, [0]
        indices: list[int] = []
        for doc in docs:
            if known:
                indices.extend(map(index.__getitem__, doc))
            else:
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


def bm25_idf(df: np.ndarray | float, n: int) -> np.ndarray:
    """BM25's inverse document frequency of terms in `df` of `n` documents (float32): log(1 + (n - df + 0.5) /
    (df + 0.5)), Lucene's form of Robertson and Spärck Jones's weight, never negative."""
    df = np.asarray(df, dtype=np.float64)
    return np.log1p((n - df + 0.5) / (df + 0.5)).astype(np.float32)


def row_norms(matrix: sp.csr_matrix) -> np.ndarray:
    """The Euclidean length of each row of a CSR matrix (float32), from its stored values: the squares summed by
    row in place of scipy's element-wise product of the matrix with itself, a copy of it (0.5 s and 160 MB for the
    100,000 profile centroids of benchmarks/rank.py)."""
    squares = np.square(matrix.data, dtype=np.float32)
    sums = np.zeros(matrix.shape[0], np.float32)
    filled = np.diff(matrix.indptr) > 0
    if squares.size:  # each filled row's values run from its start to the next filled row's start
        sums[filled] = np.add.reduceat(squares, matrix.indptr[:-1][filled])
    return np.sqrt(sums)


def l2_rows(matrix: sp.csr_matrix) -> sp.csr_matrix:
    """Each row over its Euclidean length (rows of zeros stay zeros), float32 CSR."""
    rows = sp.csr_matrix(matrix, dtype=np.float32, copy=True)
    norms = row_norms(rows)
    rows.data /= np.repeat(np.where(norms > 0, norms, 1), np.diff(rows.indptr)).astype(np.float32)
    return rows


class Corpus:
    """The candidates as L2-normalised TF-IDF rows, their pairwise cosines, and their trending scores (given: the
    score is digest.rank.trending_scores)."""

    def __init__(self, pool: Sequence, trending: np.ndarray, embeddings=None):
        """`embeddings` (semantic.Embeddings, hybrid only): the candidates' sentence embeddings."""
        self.size = len(pool)
        # Each text is split into words once: the terms and the readable forms of the reasons both come from them.
        words = [(words_of(c.paper.title or ""), words_of(c.paper.abstract or "")) for c in pool]
        stems = stem_words(w for title, abstract in words for w in (*title, *abstract))
        stem_of = stems.__getitem__
        titles = [grams(list(map(stem_of, title))) for title, _ in words]
        abstracts = [grams(list(map(stem_of, abstract))) for _, abstract in words]
        self.vectorizer: Vocabulary | None = None
        if any(titles) or any(abstracts):
            self.vectorizer, title_counts, abstract_counts = Vocabulary.fit(titles, abstracts)
            self.avgdl: float | None = None
            self.docs = self._bm25(TITLE_WEIGHT * title_counts + abstract_counts)
            self.title_presence_t = (title_counts.T > 0).astype(np.float32).tocsr()  # which terms each title holds
            self.terms: ReadableTerms | list[str] = ReadableTerms(self.vectorizer.features, [title + abstract for title, abstract in words])
            self.term_words: TermWords | list[tuple[str, ...]] = TermWords(self.vectorizer.features)
        else:  # no candidates, or none with a word: nothing can match
            self.docs = sp.csr_matrix((self.size, 1), dtype=np.float32)
            self.title_presence_t = sp.csr_matrix((1, self.size), dtype=np.float32)
            self.terms = [""]
            self.term_words = [("",)]
        self.docs_t = self.docs.T.tocsr()
        self.presence_t = (self.docs_t > 0).astype(np.float32).tocsr()  # which terms each candidate holds
        # The day's average paper (a negative example of every vote model): its products with each candidate and itself.
        total = np.asarray(self.docs.sum(axis=0), dtype=np.float32).ravel()
        self.mean_sims = (self.docs @ total / max(self.size, 1)).astype(np.float32)
        self.mean_self = float(total @ total) / max(self.size, 1) ** 2
        self.trending = np.asarray(trending, dtype=np.float32)
        self.trending_rounded = np.round(self.trending.astype(np.float64), 6).tolist()
        self.trending_order = np.lexsort((np.arange(self.size), -self.trending))
        self.embeddings: np.ndarray | None = None
        if embeddings is not None:  # sentence embeddings join the cosines; PRF and MMR see the blended similarity
            vectors = [embeddings.of_paper(c.paper.id, c.paper.title or "", c.paper.abstract or "") for c in pool]
            self.embeddings = np.stack(vectors).astype(np.float32) if vectors else np.zeros((0, DIMENSIONS), np.float32)
            total = self.embeddings.sum(axis=0)
            self.mean_embedding_sims = (self.embeddings @ total / max(self.size, 1)).astype(np.float32)
            self.mean_embedding_self = float(total @ total) / max(self.size, 1) ** 2
        # The candidates' pairwise similarities, filled a block of rows at a time as the ranking first needs them
        # (see gram): `digest rank` for one subscriber needs a few dozen of the rows, a daily run most of them.
        self._gram = np.empty((self.size, self.size), np.float32)
        self._gram_filled = np.zeros(self.size, dtype=bool)
        self._gram_lock = threading.Lock()

    def gram(self, rows: np.ndarray) -> np.ndarray:
        """The candidates' pairwise similarity matrix (TF-IDF cosines; in the hybrid blended with the embeddings'),
        with at least `rows` filled in: read only those rows (other threads fill theirs meanwhile)."""
        rows = np.asarray(rows, dtype=np.intp).ravel()
        missing = np.unique(rows[~self._gram_filled[rows]])
        if len(missing):
            with self._gram_lock:
                missing = missing[~self._gram_filled[missing]]
                if len(missing):
                    block = (self.docs[missing] @ self.docs_t).toarray().astype(np.float32)
                    if self.embeddings is not None:
                        block = ((1 - SEMANTIC_SHARE) * block + SEMANTIC_SHARE * shifted(self.embeddings[missing] @ self.embeddings.T)).astype(np.float32)
                    self._gram[missing] = block
                    self._gram_filled[missing] = True
        return self._gram

    def _bm25(self, counts: sp.csr_matrix) -> sp.csr_matrix:
        """BM25's saturating, length-normalised tf of term counts (title terms counted TITLE_WEIGHT times) x IDF,
        L2-normalised."""
        vectorizer = self.vectorizer
        assert vectorizer is not None  # only called when the candidates have words
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
            counts = self.vectorizer.counts
            blocks.append(self._bm25(TITLE_WEIGHT * counts([analyse(t) for t, _ in papers]) + counts([analyse(a) for _, a in papers])))
        return sp.vstack(blocks, format="csr", dtype=np.float32) if blocks else sp.csr_matrix((0, width), dtype=np.float32)

    def evidence_terms(self, interests: list[str]) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
        """One row per interest: the IDF share of each of its words (unigram stems) among the candidates' terms, so
        that `evidence_terms @ presence_t` is the share of the interest a paper holds. A word no candidate holds
        counts UNSEEN_WEIGHT x the highest IDF in the total: "quantum error correction" is not two-thirds present in a
        paper that says "error" and "correction". Rare words weigh more than generic ones, as in the ranking itself.

        And per interest, how far below relevance_floor a paper holding it may be picked should the interest be one
        of the day's commonest (digest.rank.score decides that): 1 for most; for an interest whose words' mean IDF is
        under SPECIFIC_IDF x the IDF of a word in no paper, the ratio of the two (at most MAX_LENIENCY). A paper's
        vector is mostly its rarer words, so such an interest ("language models", in 62 % of a cs.CL listing) has a
        low cosine to every paper: none of its papers met the floor, and its reader got nothing.

        And per interest, whether it is one word that some candidate holds ("reasoning"): its title rule
        (digest.rank.score.TITLE_LENIENCY)."""
        width = self.docs.shape[1]
        leniency = np.ones(len(interests), dtype=np.float32)
        one_word = np.zeros(len(interests), dtype=bool)
        if self.vectorizer is None or not interests:
            return sp.csr_matrix((len(interests), width), dtype=np.float32), leniency, one_word
        vocabulary, idf = self.vectorizer.index, self.vectorizer.idf
        never = float(bm25_idf(0.0, self.size))  # the IDF of a term in no document
        unseen, specific = UNSEEN_WEIGHT * never, SPECIFIC_IDF * never
        rows, cols, vals = [], [], []
        for n, text in enumerate(interests):
            words = list(dict.fromkeys(stem(w) for w in words_of(text)))
            weights = [float(idf[vocabulary[w]]) if w in vocabulary else unseen for w in words]
            total = sum(weights)
            one_word[n] = len(words) == 1 and words[0] in vocabulary
            if words and total / len(words) < specific:  # a word in no paper makes an interest specific (unseen)
                leniency[n] = min(MAX_LENIENCY, specific * len(words) / max(total, 1e-6))
            for word, weight in zip(words, weights):
                if word in vocabulary:
                    rows.append(n)
                    cols.append(vocabulary[word])
                    vals.append(weight / total)
        terms = sp.csr_matrix((np.array(vals, dtype=np.float32), (np.array(rows, dtype=np.intp), np.array(cols, dtype=np.intp))), shape=(len(interests), width))
        return terms, leniency, one_word


def shifted(cosines: np.ndarray) -> np.ndarray:
    """Embedding cosines rescaled so that unrelated texts (cosine about SEMANTIC_BASE) sit near 0, like TF-IDF's."""
    return ((cosines - SEMANTIC_BASE) / (1 - SEMANTIC_BASE)).astype(np.float32)
