"""The text model behind digest.rank: TF-IDF vectors of the day's candidates and of every profile, and the chunked
sparse float32 product that scores them. Pure numpy / scipy / scikit-learn: no database, no clock, no network.

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
from functools import lru_cache
from typing import Sequence

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, CountVectorizer, TfidfVectorizer
from sklearn.preprocessing import normalize
from snowballstemmer import stemmer as snowball_stemmer

# Tuned on the "tune" half of benchmarks/eval (figures in docs/benchmarks.md, "Ranking quality").
TITLE_WEIGHT = 2  # a term in the title counts this many times one in the abstract
BM25_K1, BM25_B = 2.0, 0.75  # papers' term weights: BM25's tf saturation and length normalisation, times IDF
INTEREST_WEIGHT, PAPER_WEIGHT, DISLIKE_WEIGHT = 1.0, 0.75, 0.5  # Rocchio's alpha, beta, gamma
CENTROID_SHARE = 0.8  # relevance = share * centroid cosine + (1 - share) * best single interest or paper
DISLIKE_PENALTY = 0.5  # times the cosine to the nearest disliked paper, subtracted
PRF_DOCS, PRF_WEIGHT = 3, 1.5  # pseudo relevance feedback: the best PRF_DOCS matches lift papers like them
NEAREST_MIN = 0.12  # cosine from which the nearest seed / liked paper is named as a reason
NEAR_DUPLICATE, NEAR_DUPLICATE_PENALTY = 0.6, 2.0  # MMR: beyond this cosine to a pick, a paper loses score fast
SEMANTIC_SHARE, SEMANTIC_BASE = 0.1, 0.2  # hybrid (tuned on the "tune" half): embedding weight; cosine taken as unrelated
SHARED_SIMS_BYTES = 256 << 20  # cosines of shared profile rows kept for the whole ranking
TERM_CANDIDATES = 6  # overlapping terms looked at for the "matched terms" reason
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


def _identity(tokens: list[str]) -> list[str]:
    return tokens


class Corpus:
    """The candidates as L2-normalised TF-IDF rows, their pairwise cosines, and their trending scores."""

    def __init__(self, pool: Sequence, model: str = "tfidf"):
        self.size, self.model = len(pool), model
        titles = [analyse(c.paper.title or "") for c in pool]
        abstracts = [analyse(c.paper.abstract or "") for c in pool]
        self.vectorizer = TfidfVectorizer(analyzer=_identity, sublinear_tf=True, norm=None, dtype=np.float32)
        if any(titles) or any(abstracts):
            self.vectorizer.fit([t + a for t, a in zip(titles, abstracts)])
            self.counter = CountVectorizer(analyzer=_identity, vocabulary=self.vectorizer.vocabulary_, dtype=np.float32)
            self.avgdl: float | None = None
            self.docs = self._papers(titles, abstracts)
            forms = readable_forms([f"{c.paper.title or ''} {c.paper.abstract or ''}" for c in pool])
            self.terms = np.array([forms.get(t, t) for t in self.vectorizer.get_feature_names_out()], dtype=object)
        else:  # no candidates, or none with a word: nothing can match
            self.vectorizer = None
            self.docs = sp.csr_matrix((self.size, 1), dtype=np.float32)
            self.terms = np.array([""], dtype=object)
        self.term_words = [tuple(t.split(" ")) for t in (self.vectorizer.get_feature_names_out() if self.vectorizer is not None else self.terms)]
        self.docs_t = self.docs.T.tocsr()
        self.gram = (self.docs @ self.docs_t).toarray().astype(np.float32)
        self.trending = trending_scores(pool)
        self.trending_rounded = np.round(self.trending.astype(np.float64), 6).tolist()
        self.trending_order = np.lexsort((np.arange(self.size), -self.trending))
        self.embeddings: np.ndarray | None = None
        if model == "hybrid":  # sentence embeddings join the cosines; PRF and MMR see the blended similarity
            from .rank_semantic import embed, paper_text

            self.embeddings = embed([paper_text(c.paper.title or "", c.paper.abstract or "") for c in pool])
            self.gram = ((1 - SEMANTIC_SHARE) * self.gram + SEMANTIC_SHARE * _shifted(self.embeddings @ self.embeddings.T)).astype(np.float32)

    def _papers(self, titles: list[list[str]], abstracts: list[list[str]]) -> sp.csr_matrix:
        """BM25's saturating, length-normalised tf (title tokens counted TITLE_WEIGHT times) x IDF, L2-normalised."""
        counts = self.counter.transform([t * TITLE_WEIGHT + a for t, a in zip(titles, abstracts)]).astype(np.float32).tocsr()
        lengths = np.asarray(counts.sum(axis=1)).ravel()
        if self.avgdl is None:  # the candidates set the average length; profile papers are measured against it
            self.avgdl = float(max(lengths.mean(), 1.0))
        rows = np.repeat(np.arange(counts.shape[0]), np.diff(counts.indptr))
        tf = counts.data
        counts.data = tf * (BM25_K1 + 1) / (tf + BM25_K1 * (1 - BM25_B + BM25_B * lengths[rows] / self.avgdl))
        return normalize(counts @ sp.diags(self.vectorizer.idf_.astype(np.float32))).astype(np.float32).tocsr()

    def vectorise(self, interests: list[str], papers: list[tuple[str, str]]) -> sp.csr_matrix:
        """Rows for interest texts, then for (title, abstract) papers, in the candidates' vocabulary."""
        width = self.docs.shape[1]
        if self.vectorizer is None:
            return sp.csr_matrix((len(interests) + len(papers), width), dtype=np.float32)
        blocks = []
        if interests:
            blocks.append(normalize(self.vectorizer.transform([analyse(t) for t in interests]).astype(np.float32)))
        if papers:
            blocks.append(self._papers([analyse(t) for t, _ in papers], [analyse(a) for _, a in papers]))
        return sp.vstack(blocks, format="csr", dtype=np.float32) if blocks else sp.csr_matrix((0, width), dtype=np.float32)


def trending_scores(pool: Sequence) -> np.ndarray:
    """In [0, 1]: log-scaled upvotes over the day's most upvoted (3/4) and extra sources carrying it (1/4)."""
    upvotes = np.log1p(np.array([max(c.paper.upvotes or 0, 0) for c in pool], dtype=np.float32))
    sources = np.array([max(len(set(c.sources)), 1) for c in pool], dtype=np.float32) - 1
    parts = []
    if len(pool) and upvotes.max() > 0:
        parts.append((0.75, upvotes / upvotes.max()))
    if len(pool) and sources.max() > 0:
        parts.append((0.25, sources / sources.max()))
    if not parts:
        return np.zeros(len(pool), dtype=np.float32)
    total = sum(w for w, _ in parts)
    return (sum(w * v for w, v in parts) / total).astype(np.float32)


class ProfileRows:
    """Every distinct interest text and profile paper as one row of Q; each profile a weighted set of rows."""

    def __init__(self, corpus: Corpus, profiles: Sequence):
        self.corpus, self.profiles = corpus, profiles
        self.readable: dict[tuple[int, ...], list[str]] = {}  # terms -> the names a reason shows
        interests: dict[str, int] = {}
        papers: dict[tuple[str, str], int] = {}
        self.pos: list[list[int]] = []  # rows of interests, seed and liked papers
        self.neg: list[list[int]] = []  # rows of disliked papers
        self.labels: list[list[tuple]] = []  # (kind, ProfilePaper) of each seed / liked row, in pos order after interests
        w_rows, w_cols, w_vals = [], [], []
        for n, p in enumerate(profiles):
            i_rows = [interests.setdefault(t.strip().lower(), len(interests)) for t in p.interests if t.strip()]
            i_rows = list(dict.fromkeys(i_rows))
            p_pairs = [("seed", x) for x in p.seed_texts] + [("liked", x) for x in p.liked_texts]
            p_rows = [~papers.setdefault((x.title, x.abstract), len(papers)) for _, x in p_pairs]  # ~: paper rows, fixed below
            d_rows = [~papers.setdefault((x.title, x.abstract), len(papers)) for x in p.disliked_texts]
            self.pos.append(i_rows + p_rows)
            self.neg.append(d_rows)
            self.labels.append(p_pairs)
            for rows, weight in ((i_rows, INTEREST_WEIGHT), (p_rows, PAPER_WEIGHT), (d_rows, -DISLIKE_WEIGHT)):
                for r in rows:
                    w_rows.append(n)
                    w_cols.append(r)
                    w_vals.append(weight / len(rows))
        offset = len(interests)
        fix = lambda r: r if r >= 0 else offset + ~r  # noqa: E731 - paper rows come after interest rows
        self.pos = [[fix(r) for r in rows] for rows in self.pos]
        self.neg = [[fix(r) for r in rows] for rows in self.neg]
        self.queries = corpus.vectorise(list(interests), list(papers))
        self.query_embeddings: np.ndarray | None = None
        if corpus.embeddings is not None:
            from .rank_semantic import embed, paper_text

            self.query_embeddings = embed(list(interests) + [paper_text(t, a) for t, a in papers])
        columns = np.array([fix(c) for c in w_cols], dtype=np.intp)
        weights = sp.csr_matrix((np.array(w_vals, dtype=np.float32), (np.array(w_rows, dtype=np.intp), columns)), shape=(len(profiles), self.queries.shape[0]))
        self.weights = weights
        self._share_sims(np.bincount(columns, minlength=self.queries.shape[0]))
        centroid = (weights @ self.queries).tocsr()
        norms = np.sqrt(np.asarray(centroid.multiply(centroid).sum(axis=1)).ravel()).astype(np.float32)
        self.centroid_norm = np.where(norms > 0, norms, 1.0).astype(np.float32)
        if self.query_embeddings is not None:
            norms = np.linalg.norm(np.asarray(weights @ self.query_embeddings), axis=1).astype(np.float32)
            self.embedding_norm = np.where(norms > 0, norms, 1.0).astype(np.float32)
        centroid.data = np.maximum(centroid.data, 0)  # what the reasons look at: the profile's positive terms
        centroid.eliminate_zeros()
        self.centroid_pos = centroid

    def _share_sims(self, uses: np.ndarray) -> None:
        """Cosines of the rows several profiles use (an interest many share, a popular seed paper), computed once
        rather than in every chunk, the most used first, within SHARED_SIMS_BYTES. A row's cosines are the same
        numbers whichever way they are computed (each row of a sparse product is computed on its own)."""
        n = max(self.corpus.size, 1)
        shared = np.flatnonzero(uses >= 2)
        shared = shared[np.lexsort((shared, -uses[shared]))][: SHARED_SIMS_BYTES // (4 * n)]
        self.shared_at = np.full(self.queries.shape[0], -1, dtype=np.intp)
        self.shared_at[shared] = np.arange(len(shared))
        self.shared_sims = self._sims(shared)

    def _sims(self, rows: np.ndarray) -> np.ndarray:
        if not len(rows):
            return np.zeros((0, self.corpus.size), np.float32)
        return (self.queries[rows] @ self.corpus.docs_t).toarray().astype(np.float32, copy=False)

    def score_chunk(self, chunk: list[int], excluded: np.ndarray, floor: float, lengths: list[int], mmr_lambda: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(picks, score, relevance) of a chunk of profiles: picks (profiles x length, -1 = none) in order, the
        blended score and the direct relevance (profiles x candidates)."""
        corpus, n = self.corpus, self.corpus.size
        used = sorted({r for i in chunk for r in self.pos[i] + self.neg[i]})
        local = {r: k for k, r in enumerate(used)}
        rows = np.array(used, dtype=np.intp)
        at = self.shared_at[rows]
        have = at >= 0
        sims = np.empty((len(rows), n), np.float32)
        sims[have] = np.take(self.shared_sims, at[have], axis=0)
        sims[~have] = self._sims(rows[~have])
        relevance = self._relevance(chunk, sims, local, self.centroid_norm)
        if self.query_embeddings is not None:
            semantic = _shifted(self.query_embeddings[rows] @ corpus.embeddings.T)
            relevance = (1 - SEMANTIC_SHARE) * relevance + SEMANTIC_SHARE * self._relevance(chunk, semantic, local, self.embedding_norm)
        empty = np.array([self.profiles[i].is_empty for i in chunk])
        relevance[empty] = 0.0
        expanded = relevance + PRF_WEIGHT * self._feedback(relevance, excluded, floor)
        weight = np.array([self.profiles[i].trending_weight for i in chunk], dtype=np.float32)[:, None]
        free = (empty | (weight[:, 0] >= 1.0))[:, None]  # empty profile or purely trending: no floor
        eligible = ~excluded & ((relevance >= floor) | free)
        top = np.where(eligible, expanded, 0).max(axis=1, initial=0.0)[:, None]
        scaled = np.clip(np.divide(expanded, top, out=np.zeros_like(expanded), where=top > 0), 0, None)
        weight = np.where(empty[:, None], 1.0, weight)
        score = ((1 - weight) * scaled + weight * corpus.trending[None, :]).astype(np.float32)
        picks = _mmr(np.where(eligible, score, -np.inf), corpus.gram, max(lengths, default=0), mmr_lambda)
        return picks, score, relevance

    def _relevance(self, chunk: list[int], sims: np.ndarray, local: dict[int, int], norms: np.ndarray) -> np.ndarray:
        """CENTROID_SHARE x the cosine to the profile's Rocchio centroid + the rest x the best single row, minus
        DISLIKE_PENALTY x the nearest disliked paper; `sims` holds the chunk's rows (in `local` order)."""
        n = self.corpus.size
        centroid = np.asarray(self.weights[chunk][:, list(local)] @ sims) / norms[chunk, None] if local else np.zeros((len(chunk), n), np.float32)
        best = _segment_max(sims, [[local[r] for r in self.pos[i]] for i in chunk], n)
        worst = _segment_max(sims, [[local[r] for r in self.neg[i]] for i in chunk], n)
        return (CENTROID_SHARE * centroid + (1 - CENTROID_SHARE) * best - DISLIKE_PENALTY * worst).astype(np.float32)

    def _feedback(self, relevance: np.ndarray, excluded: np.ndarray, floor: float) -> np.ndarray:
        """Mean cosine of each candidate to the profile's best PRF_DOCS matches above the floor."""
        n = relevance.shape[1]
        m = min(PRF_DOCS, n)
        if m == 0:
            return np.zeros_like(relevance)
        masked = np.where(excluded, -np.inf, relevance)
        top = np.argpartition(-masked, m - 1, axis=1)[:, :m] if n > m else np.tile(np.arange(n), (len(masked), 1))
        valid = (np.take_along_axis(masked, top, axis=1) >= max(floor, 1e-9)).astype(np.float32)
        gram = self.corpus.gram
        lifted = np.take(gram, top[:, 0], axis=0)
        lifted *= valid[:, :1]
        for j in range(1, m):  # row by row: gathering (profiles x m x candidates) at once cost 4 times more
            part = np.take(gram, top[:, j], axis=0)
            part *= valid[:, j : j + 1]
            lifted += part
        return lifted / np.maximum(valid.sum(axis=1, keepdims=True), 1.0)

    def terms_of(self, chunk: list[int], chosen: list[list[int]]) -> list[list[list[str]]]:
        """For every pick of the chunk, the top overlapping terms with its profile (one sparse product for the
        whole chunk); a bigram hides the words it is made of."""
        owners = np.repeat(np.array(chunk, dtype=np.intp), [len(c) for c in chosen])
        docs = np.array([d for c in chosen for d in c], dtype=np.intp)
        if not len(docs):
            return [[] for _ in chunk]
        overlap = self.corpus.docs[docs].multiply(self.centroid_pos[owners]).tocsr()
        overlap.eliminate_zeros()
        rows = np.repeat(np.arange(overlap.shape[0]), np.diff(overlap.indptr))
        # One stable sort: row first, then the larger contribution (1 / (2 + x) falls as x grows, stays in (0, 0.5]).
        order = np.argsort(rows + 1.0 / (2.0 + overlap.data.astype(np.float64)), kind="stable")
        rank = np.arange(len(order)) - overlap.indptr[rows[order]]
        keep = order[rank < TERM_CANDIDATES]
        terms = overlap.indices[keep].tolist()
        bounds = np.searchsorted(rows[keep], np.arange(overlap.shape[0] + 1)).tolist()
        names, words = self.corpus.terms, self.corpus.term_words
        out, pair = [], 0
        for picks in chosen:
            out.append([_readable(tuple(terms[bounds[pair + k] : bounds[pair + k + 1]]), names, words, self.readable) for k in range(len(picks))])
            pair += len(picks)
        return out

    def nearest_of(self, chunk: list[int], chosen: list[list[int]]) -> list[list[tuple | None]]:
        """For every pick of the chunk, ("seed" | "liked", ProfilePaper) of the profile's nearest seed or liked
        paper when its cosine reaches NEAREST_MIN (the first such paper on a tie), else None."""
        out: list[list[tuple | None]] = [[None] * len(c) for c in chosen]
        spans = [(k, self.pos[i][-len(self.labels[i]):], picks) for k, (i, picks) in enumerate(zip(chunk, chosen)) if self.labels[i] and picks]
        if not spans:
            return out
        rows = sorted({r for _, r_list, _ in spans for r in r_list})
        docs = sorted({d for _, _, picks in spans for d in picks})
        # one small product: the block's profile papers x the block's picks
        sims = (self.queries[rows] @ self.corpus.docs[docs].T).toarray().astype(np.float32, copy=False)
        for k, r_list, picks in spans:
            block = sims[np.ix_(np.searchsorted(rows, r_list), np.searchsorted(docs, picks))]
            best = block.argmax(axis=0).tolist()
            labels = self.labels[chunk[k]]
            out[k] = [labels[b] if block[b, j] >= NEAREST_MIN else None for j, b in enumerate(best)]
        return out


def _readable(terms: tuple[int, ...], names, words: list[tuple[str, ...]], cache: dict, size: int = 3) -> list[str]:
    """The first `size` terms, a bigram hiding the words it is made of (shown before or after it); `cache` keeps
    the answers, as the same overlaps recur across subscribers."""
    if terms in cache:
        return cache[terms]
    chosen: list[int] = []
    covered: set[str] = set()
    for term in terms:
        mine = words[term]
        if len(mine) == 1:
            if mine[0] in covered:
                continue
        else:
            chosen = [c for c in chosen if len(words[c]) > 1 or words[c][0] not in mine]
            covered.update(mine)
        chosen.append(term)
        if len(chosen) == size:
            break
    if len(cache) > 100_000:
        cache.clear()
    cache[terms] = found = [names[t] for t in chosen]
    return found


def _shifted(cosines: np.ndarray) -> np.ndarray:
    """Embedding cosines rescaled so that unrelated texts (cosine about SEMANTIC_BASE) sit near 0, like TF-IDF's."""
    return ((cosines - SEMANTIC_BASE) / (1 - SEMANTIC_BASE)).astype(np.float32)


def _segment_max(sims: np.ndarray, groups: list[list[int]], n: int) -> np.ndarray:
    """Per group of rows of `sims`, their element-wise max (0 for an empty group). Groups are padded with their
    first row to one width and maxed column by column: ten times faster than np.maximum.reduceat over axis 0."""
    filled = [k for k, g in enumerate(groups) if g]
    if not filled:
        return np.zeros((len(groups), n), dtype=np.float32)
    width = max(len(groups[k]) for k in filled)
    index = np.array([groups[k] + [groups[k][0]] * (width - len(groups[k])) for k in filled], dtype=np.intp)
    block = np.take(sims, index[:, 0], axis=0)
    for j in range(1, width):
        np.maximum(block, np.take(sims, index[:, j], axis=0), out=block)
    if len(filled) == len(groups):
        return block
    out = np.zeros((len(groups), n), dtype=np.float32)
    out[filled] = block
    return out


def _mmr(score: np.ndarray, gram: np.ndarray, length: int, lam: float) -> np.ndarray:
    """Maximal marginal relevance over each row's best candidates: picks (rows x length), -1 where none is left."""
    rows, n = score.shape
    picks = np.full((rows, length), -1, dtype=np.int64)
    if length == 0 or n == 0:
        return picks
    size = min(n, max(3 * length, length + 10))
    pool = np.argpartition(-score, size - 1, axis=1)[:, :size] if n > size else np.tile(np.arange(n), (rows, 1))
    pooled = np.take_along_axis(score, pool, axis=1)
    order = np.lexsort((pool, -pooled), axis=1)  # best first, ties by paper id
    pool, pooled = np.take_along_axis(pool, order, axis=1), np.take_along_axis(pooled, order, axis=1)
    near = np.take(gram.ravel(), pool[:, :, None] * n + pool[:, None, :])
    available = np.isfinite(pooled)
    closest = np.zeros_like(pooled)
    everyone = np.arange(rows)
    for step in range(min(length, size)):
        redundancy = (1 - lam) * closest + NEAR_DUPLICATE_PENALTY * np.maximum(closest - NEAR_DUPLICATE, 0)
        value = np.where(available, lam * pooled - redundancy, -np.inf)
        best = value.argmax(axis=1)
        ok = np.isfinite(value[everyone, best])
        if not ok.any():
            break
        picks[ok, step] = pool[ok, best[ok]]
        available[everyone[ok], best[ok]] = False
        closest[ok] = np.maximum(closest[ok], near[everyone[ok], best[ok]])
    return picks
