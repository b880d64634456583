"""Scoring every profile against the day's candidates, one chunk of profiles per sparse matrix product: relevance
(the interests' text, blended with the vote model for those who voted), evidence (may a paper enter the digest at
all?), pseudo relevance feedback and MMR; and the material of the reasons. Pure numpy / scipy: no database, no
clock, no network. The text model is digest.rank.text's, the vote model digest.rank.votes'.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from . import text as rank_text
from .semantic import interest_key
from .text import Corpus, shifted
from .votes import fit_votes

# Tuned on the "tune" half of benchmarks/eval (figures in docs/benchmarks.md, "Ranking quality").
EVIDENCE_SHARE = 0.5  # an interest is in a paper when the paper holds more than this share of its words (IDF-weighted)
# An interest that this share of the day's papers hold is the listing's own topic ("language models" in 62 % of a cs.CL
# listing; of the judged interests over the sample papers, at most 30 %): its papers may be picked under the floor.
COMMON_SHARE = 0.35
# A one-word interest in a paper's title lets the paper in at this fraction of relevance_floor (here half of it). One
# word against a paper's many: its cosine is that word's weight in the paper's vector, about 1/sqrt(2) of what a two-
# word interest of which the paper holds both reaches, and the floor was chosen on interests of two words and more.
# "reasoning" on a cs.CL day: 9 titles say it, 1 paper was picked (cosines 0.04-0.05 under the floor 0.05), now 9.
# Interests of more words keep the floor: the same rule for them cost the tune profiles 0.863 -> 0.857 (default) and
# 0.864 -> 0.851 (hybrid); the judged set's three one-word interests (Mamba, fMRI, StyleGAN) do not move.
TITLE_LENIENCY = 2.0
INTEREST_WEIGHT, PAPER_WEIGHT = 1.0, 0.75  # Rocchio's alpha and beta (seed papers) in the text relevance
CENTROID_SHARE = 0.8  # text relevance = share * centroid cosine + (1 - share) * best single interest or paper
PRF_DOCS, PRF_WEIGHT = 3, 1.5  # pseudo relevance feedback: the best PRF_DOCS digest papers lift papers like them
VOTE_C = 1.0  # the vote model's C (scikit-learn's inverse regularisation) on L2-normalised paper vectors
MAX_VOTES = 60  # the most recent likes and dislikes (each) a subscriber's model learns from; seeds always count
VOTE_EMBEDDING_SHARE = 0.3  # hybrid: the vote model's paper vectors are text (1 - share) and embedding (share)


@dataclass(frozen=True)
class VoteTuning:
    """How a subscriber's votes count, per ranking model (each tuned on the tune profiles of benchmarks/eval, the
    feedback benchmark included; figures in docs/benchmarks.md)."""

    like_weight: float  # Rocchio's beta for liked papers in the interests' centroid (seeds have PAPER_WEIGHT)
    interest_sample: float  # each interest is a liked example of this weight in the vote model (a paper weighs 1)
    dislike_sample: float  # each disliked paper's weight as a negative example
    background_weight: float  # the day's average paper, a negative example, weighs this x the liked ones together
    half: float  # the vote model's share of relevance: votes / (votes + half); all of it without interests
    scale: float  # its relevance: scale x the cosine of the paper to the model's weight vector
    evidence: float  # that cosine from which the vote model's word lets a paper into the digest


# TF-IDF: liked papers teach the vote model only (in the centroid as well they pulled the next digest towards
# their own words: residual nDCG@10 gain +0.093 -> +0.112, worst profile -0.429 -> -0.028), and the model has a
# smaller, slower-growing share. The hybrid's was re-tuned on the 18 tune profiles (docs/benchmarks.md): a slower-
# growing, smaller share, likes out of the centroid and the vote model's vectors mostly text, so that three likes
# no longer trade a profile's remaining relevant papers for their own neighbours (with SEMANTIC_BASE 0.4, tune residual
# gain +0.008 -> +0.124, worst profile -0.613 -> 0.000; tune nDCG@10 0.873 -> 0.866, the seed profiles' cost).
VOTES_TFIDF = VoteTuning(like_weight=0.0, interest_sample=1.0, dislike_sample=2.0, background_weight=1.0, half=5.0, scale=0.5, evidence=0.07)
VOTES_HYBRID = VoteTuning(like_weight=0.0, interest_sample=1.25, dislike_sample=2.0, background_weight=1.25, half=6.0, scale=0.45, evidence=0.25)
SEMANTIC_EVIDENCE = 0.6  # hybrid: an embedding cosine to an interest that is evidence on its own
NEAREST_MIN = 0.12  # similarity from which the nearest seed / liked paper is named as a reason
NEAR_DUPLICATE, NEAR_DUPLICATE_PENALTY = 0.6, 2.0  # MMR: beyond this cosine to a pick, a paper loses score fast
NEAR_MISS = 3.0  # subtracted from the MMR score of a paper without evidence: near misses come after the digest
SHARED_SIMS_BYTES = 256 << 20  # cosines of shared profile rows kept for the whole ranking
TERM_CANDIDATES = 6  # overlapping terms looked at for the "matched terms" reason


class ProfileRows:
    """Every distinct interest text and profile paper as one row of Q (interests first); each profile its rows:
    interests, positive papers (seeds and likes) and negative ones (dislikes)."""

    def __init__(self, corpus: Corpus, profiles: Sequence, embeddings=None):
        self.corpus, self.profiles = corpus, profiles
        self.tuning = VOTES_TFIDF if embeddings is None else VOTES_HYBRID
        self.readable: dict[tuple[int, ...], list[str]] = {}  # terms -> the names a reason shows
        interests: dict[str, int] = {}
        papers: dict[tuple[str, str], int] = {}
        paper_ids: dict[tuple[str, str], int | None] = {}  # where each paper row's embedding is kept
        self.interest_rows: list[list[int]] = []
        self.pos: list[list[int]] = []  # rows of seed and liked papers
        self.neg: list[list[int]] = []  # rows of disliked papers
        self.labels: list[list[tuple]] = []  # (kind, ProfilePaper) of each pos row, in pos order
        # Interests are numbered first (rows 0..), then papers (rows after the last interest): two passes, so that
        # no row number is shifted afterwards. An interest text written alike by many is normalised once.
        rows_of: dict[str, int] = {}  # an interest as written -> its row
        for p in profiles:
            i_rows = []
            for t in p.interests:
                row = rows_of.get(t)
                if row is None:
                    if not t.strip():
                        continue
                    row = rows_of[t] = interests.setdefault(interest_key(t), len(interests))
                if row not in i_rows:
                    i_rows.append(row)
            self.interest_rows.append(i_rows)
        offset = self.interest_count = len(interests)
        for p in profiles:
            if not (p.seed_texts or p.liked_texts or p.disliked_texts):
                self.pos.append([])
                self.neg.append([])
                self.labels.append([])
                continue
            pairs = [("seed", x) for x in p.seed_texts] + [("liked", x) for x in p.liked_texts[-MAX_VOTES:]]
            pos = [offset + papers.setdefault((x.title, x.abstract), len(papers)) for _, x in pairs]
            neg = [offset + papers.setdefault((x.title, x.abstract), len(papers)) for x in p.disliked_texts[-MAX_VOTES:]]
            for x in (*(x for _, x in pairs), *p.disliked_texts[-MAX_VOTES:]):
                paper_ids.setdefault((x.title, x.abstract), x.paper_id)
            self.pos.append(pos)
            self.neg.append(neg)
            self.labels.append(pairs)
        self.queries = corpus.vectorise(list(interests), list(papers))
        self.evidence, self.leniency, self.one_word = corpus.evidence_terms(list(interests))
        self.query_embeddings: np.ndarray | None = None
        if embeddings is not None:
            assert corpus.embeddings is not None  # the hybrid embeds the candidates and the profiles alike
            vectors = [embeddings.of_text(t) for t in interests] + [embeddings.of_paper(paper_ids[key], *key) for key in papers]
            self.query_embeddings = np.stack(vectors).astype(np.float32) if vectors else np.zeros((0, corpus.embeddings.shape[1]), np.float32)
        # The text relevance: a Rocchio centroid of the interests and positive papers, and the best single one.
        w_rows, w_cols, w_vals = [], [], []
        for n, (i_rows, pos, labels) in enumerate(zip(self.interest_rows, self.pos, self.labels)):
            seeds = sum(kind == "seed" for kind, _ in labels)  # the seeds come first
            for rows, weight in ((i_rows, INTEREST_WEIGHT), (pos[:seeds], PAPER_WEIGHT), (pos[seeds:], self.tuning.like_weight)):
                for r in rows:
                    w_rows.append(n)
                    w_cols.append(r)
                    w_vals.append(weight / len(rows))
        columns = np.array(w_cols, dtype=np.intp)
        weights = sp.csr_matrix((np.array(w_vals, dtype=np.float32), (np.array(w_rows, dtype=np.intp), columns)), shape=(len(profiles), self.queries.shape[0]))
        self.weights = weights
        used_rows = [r for rows in (self.interest_rows, self.pos, self.neg) for mine in rows for r in mine]
        uses = np.bincount(np.array(used_rows, dtype=np.intp), minlength=self.queries.shape[0])
        self._share_sims(uses)
        # The profiles' centroids (weights @ queries) are made a chunk at a time where they are needed, in the
        # scoring threads and for the reasons: all 100,000 at once were 1.5 s of serial work and hundreds of MB.
        if self.query_embeddings is not None:
            norms = np.linalg.norm(np.asarray(weights @ self.query_embeddings), axis=1).astype(np.float32)
            self.embedding_norm = np.where(norms > 0, norms, 1.0).astype(np.float32)

    def _centroids(self, profiles) -> sp.csr_matrix:
        """The Rocchio centroids of `profiles` (indexes), one row each: the same rows whichever profiles are asked
        together (each row of a sparse product is computed on its own)."""
        return (self.weights[profiles] @ self.queries).tocsr()

    def _centroid_norms(self, profiles) -> np.ndarray:
        norms = rank_text.row_norms(self._centroids(profiles))
        return np.where(norms > 0, norms, 1.0).astype(np.float32)

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

    def score_chunk(self, chunk: list[int], excluded: np.ndarray, floor: float, lengths: list[int], mmr_lambda: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(picks, score, relevance, digestable) of a chunk of profiles: picks (profiles x length, -1 = none) in
        order, the papers that may enter the digest first; the blended score, the direct relevance and whether each
        paper may enter the digest (profiles x candidates)."""
        corpus, n = self.corpus, self.corpus.size
        used = sorted({r for i in chunk for r in self.interest_rows[i] + self.pos[i] + self.neg[i]})
        local = {r: k for k, r in enumerate(used)}
        rows = np.array(used, dtype=np.intp)
        at = self.shared_at[rows]
        have = at >= 0
        sims = np.empty((len(rows), n), np.float32)
        sims[have] = np.take(self.shared_sims, at[have], axis=0)
        sims[~have] = self._sims(rows[~have])
        embedded, docs_embedded = self.query_embeddings, corpus.embeddings
        semantic = (embedded[rows] @ docs_embedded.T).astype(np.float32) if embedded is not None and docs_embedded is not None else None
        relevance = self._relevance(chunk, sims, local, self._centroid_norms(chunk))
        if semantic is not None:
            share = rank_text.SEMANTIC_SHARE
            relevance = (1 - share) * relevance + share * self._relevance(chunk, shifted(semantic), local, self.embedding_norm[chunk])
        lenient = self._interest_evidence(chunk, rows, semantic)
        evidence = lenient > 0
        voted = [k for k, i in enumerate(chunk) if self.pos[i] or self.neg[i]]
        if voted:
            tuning = self.tuning
            liking = self._liking([chunk[k] for k in voted], sims, semantic, local)
            votes = np.array([len(self.pos[chunk[k]]) + len(self.neg[chunk[k]]) for k in voted], dtype=np.float32)
            vote_share = np.where([bool(self.interest_rows[chunk[k]]) for k in voted], votes / (votes + tuning.half), 1.0).astype(np.float32)[:, None]
            relevance[voted] = (1 - vote_share) * relevance[voted] + vote_share * tuning.scale * liking
            evidence[voted] |= liking >= tuning.evidence
        empty = np.array([self.profiles[i].is_empty for i in chunk])
        relevance[empty] = 0.0
        weight = np.array([self.profiles[i].trending_weight for i in chunk], dtype=np.float32)[:, None]
        free = (empty | (weight[:, 0] >= 1.0))[:, None]  # empty profile or purely trending: no evidence needed
        # The floor, lowered for the papers that hold an interest of the day's commonest words (_interest_evidence).
        digestable = ~excluded & (free | (evidence & (relevance * np.maximum(lenient, 1.0) >= floor)))
        expanded = relevance + PRF_WEIGHT * self._feedback(relevance, ~digestable, floor)
        some = digestable.any(axis=1, keepdims=True)
        top = np.where(np.where(some, digestable, ~excluded), expanded, 0).max(axis=1, initial=0.0)[:, None]
        scaled = np.clip(np.divide(expanded, top, out=np.zeros_like(expanded), where=top > 0), 0, None)
        weight = np.where(empty[:, None], 1.0, weight)
        score = ((1 - weight) * scaled + weight * corpus.trending[None, :]).astype(np.float32)
        order = np.where(digestable, score, np.where(excluded, -np.inf, score - NEAR_MISS))
        picks = _mmr(order, corpus.gram, max(lengths, default=0), mmr_lambda)
        return picks, score, relevance, digestable

    def _relevance(self, chunk: list[int], sims: np.ndarray, local: dict[int, int], norms: np.ndarray) -> np.ndarray:
        """CENTROID_SHARE x the cosine to the profile's Rocchio centroid + the rest x the best single interest or
        positive paper; `sims` holds the chunk's rows (in `local` order), `norms` the chunk's centroid lengths."""
        n = self.corpus.size
        centroid = np.asarray(self.weights[chunk][:, list(local)] @ sims) / norms[:, None] if local else np.zeros((len(chunk), n), np.float32)
        best = _segment_max(sims, [[local[r] for r in self.interest_rows[i] + self.pos[i]] for i in chunk], n)
        return (CENTROID_SHARE * centroid + (1 - CENTROID_SHARE) * best).astype(np.float32)

    def _interest_evidence(self, chunk: list[int], rows: np.ndarray, semantic: np.ndarray | None) -> np.ndarray:
        """Profiles x candidates: does the paper hold one of the profile's interests (more than EVIDENCE_SHARE of
        its words, IDF-weighted; or, in the hybrid, an embedding cosine of SEMANTIC_EVIDENCE)? 0 where not, else how
        far below the floor it may be picked: 1, or for an interest that COMMON_SHARE of the day's papers hold, made
        of words common that day, its leniency (Corpus.evidence_terms), or for a one-word interest in the paper's
        title TITLE_LENIENCY, whichever is larger. Sparse throughout: an interest's words are in
        few papers (a common interest's in many, which is what makes it common)."""
        mine = np.flatnonzero(rows < self.interest_count)
        held = (self.evidence[rows[mine]] @ self.corpus.presence_t).tocsr()
        held.data = (held.data > EVIDENCE_SHARE).astype(np.float32)
        held.eliminate_zeros()
        common = np.diff(held.indptr) >= COMMON_SHARE * max(self.corpus.size, 1)
        held = (sp.diags(np.where(common, self.leniency[rows[mine]], 1.0).astype(np.float32)) @ held).tocsr()
        if semantic is not None:
            held = held.maximum(sp.csr_matrix(semantic[mine] >= SEMANTIC_EVIDENCE, dtype=np.float32))
        dense = held.toarray().astype(np.float32)
        one_word = np.flatnonzero(self.one_word[rows[mine]])
        if len(one_word):  # a one-word interest that a paper's title holds: TITLE_LENIENCY (its rows alone: few)
            titled = (self.evidence[rows[mine][one_word]] @ self.corpus.title_presence_t).toarray() > EVIDENCE_SHARE
            dense[one_word] = np.where(titled, np.maximum(dense[one_word], TITLE_LENIENCY), dense[one_word])
        at = {r: k for k, r in enumerate(rows[mine].tolist())}
        return _segment_max(dense, [[at[r] for r in self.interest_rows[i]] for i in chunk], self.corpus.size)

    def _liking(self, profiles: list[int], sims: np.ndarray, semantic: np.ndarray | None, local: dict[int, int]) -> np.ndarray:
        """How much each of `profiles` would like every candidate (profiles x candidates), by its vote model: its
        interests, seed and liked papers against its disliked ones and the day's average paper, all fitted at once.
        The interests are examples too, so that disliking a paper that shares their words does not unlearn them."""
        corpus = self.corpus
        paper_rows = sorted({r for i in profiles for r in self.interest_rows[i] + self.pos[i] + self.neg[i]})
        at = {r: k for k, r in enumerate(paper_rows)}
        index = np.array([local[r] for r in paper_rows], dtype=np.intp)
        # The model's kernel: inner products of the paper vectors (text; in the hybrid text and embedding, weighted).
        q = self.queries[np.array(paper_rows, dtype=np.intp)]
        among = (q @ q.T).toarray().astype(np.float64)
        to_candidates = sims[index].astype(np.float64)
        mean_sims, mean_self = corpus.mean_sims.astype(np.float64), corpus.mean_self
        if semantic is not None and self.query_embeddings is not None:
            vectors = self.query_embeddings[np.array(paper_rows, dtype=np.intp)].astype(np.float64)
            s = VOTE_EMBEDDING_SHARE
            among = (1 - s) * among + s * (vectors @ vectors.T)
            to_candidates = (1 - s) * to_candidates + s * semantic[index]
            mean_sims = (1 - s) * mean_sims + s * corpus.mean_embedding_sims
            mean_self = (1 - s) * mean_self + s * corpus.mean_embedding_self
        to_mean = to_candidates.mean(axis=1) if corpus.size else np.zeros(len(paper_rows))
        members = [[at[r] for r in self.interest_rows[i] + self.pos[i] + self.neg[i]] for i in profiles]
        width = max(map(len, members)) + 1  # + the day's average paper, last
        count = len(profiles)
        point = np.zeros((count, width - 1), dtype=np.intp)
        labels = np.zeros((count, width))
        weights = np.zeros((count, width))
        for p, (i, mine) in enumerate(zip(profiles, members)):
            e, liked = len(self.interest_rows[i]), len(self.pos[i])
            point[p, : len(mine)] = mine
            labels[p, : e + liked] = 1.0
            weights[p, :e] = self.tuning.interest_sample
            weights[p, e : e + liked] = 1.0
            weights[p, e + liked : len(mine)] = self.tuning.dislike_sample
        weights[:, -1] = self.tuning.background_weight * np.maximum((weights[:, :-1] * labels[:, :-1]).sum(axis=1), 1.0)
        used = weights[:, :-1] > 0  # padding has no weight and no inner products
        kernel = np.zeros((count, width, width))
        kernel[:, :-1, :-1] = among[point[:, :, None], point[:, None, :]] * (used[:, :, None] & used[:, None, :])
        kernel[:, :-1, -1] = kernel[:, -1, :-1] = to_mean[point] * used
        kernel[:, -1, -1] = mean_self
        alpha, _ = fit_votes(kernel, labels, weights, VOTE_C)
        # The learned weight vector w = sum of alpha_i x_i: its cosine with each candidate (the decision without the
        # bias, over |w|), on the scale of the text cosines. The model's probabilities would not do: a new paper's
        # cosine to any training paper is small, so every probability sits near the bias.
        norm = np.sqrt(np.maximum(np.einsum("pi,pij,pj->p", alpha, kernel, alpha), 1e-12))
        combination = sp.csr_matrix((alpha[:, :-1].ravel(), (np.repeat(np.arange(count), width - 1), point.ravel())), shape=(count, len(paper_rows)))
        decision = np.asarray(combination @ to_candidates) + alpha[:, -1:] * mean_sims[None, :]
        return (decision / norm[:, None]).astype(np.float32)

    def _feedback(self, relevance: np.ndarray, excluded: np.ndarray, floor: float) -> np.ndarray:
        """Mean cosine of each candidate to the profile's best PRF_DOCS matches above the floor."""
        n = relevance.shape[1]
        m = min(PRF_DOCS, n)
        if m == 0:
            return np.zeros_like(relevance)
        masked = np.where(excluded, -np.inf, relevance)
        everyone = np.arange(len(masked))
        gram = self.corpus.gram
        lifted = np.zeros_like(relevance)
        valid_count = np.zeros((len(masked), 1), np.float32)
        for _ in range(m):  # the best, then the next best...: m passes of argmax beat one argpartition for m = 3
            top = masked.argmax(axis=1)
            valid = (masked[everyone, top] >= max(floor, 1e-9)).astype(np.float32)[:, None]
            masked[everyone, top] = -np.inf
            part = np.take(gram(top), top, axis=0)
            part *= valid
            lifted += part
            valid_count += valid
        return lifted / np.maximum(valid_count, 1.0)

    def terms_of(self, chunk: list[int], chosen: list[list[int]]) -> list[list[list[str]]]:
        """For every pick of the chunk, the top overlapping terms with its profile (one sparse product for the
        whole chunk); a bigram hides the words it is made of."""
        owners = np.repeat(np.array(chunk, dtype=np.intp), [len(c) for c in chosen])
        docs = np.array([d for c in chosen for d in c], dtype=np.intp)
        if not len(docs):
            return [[] for _ in chunk]
        centroids = self._centroids(owners)
        centroids.data = np.maximum(centroids.data, 0)  # what the reasons look at: the profile's positive terms
        centroids.eliminate_zeros()
        overlap = self.corpus.docs[docs].multiply(centroids).tocsr()
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
        paper when their similarity (the vote model's) reaches NEAREST_MIN (the first such paper on a tie), else None."""
        out: list[list[tuple | None]] = [[None] * len(c) for c in chosen]
        spans = [(k, self.pos[i], picks) for k, (i, picks) in enumerate(zip(chunk, chosen)) if self.pos[i] and picks]
        if not spans:
            return out
        rows = sorted({r for _, r_list, _ in spans for r in r_list})
        docs = sorted({d for _, _, picks in spans for d in picks})
        # one small product: the block's profile papers x the block's picks
        sims = (self.queries[rows] @ self.corpus.docs[docs].T).toarray().astype(np.float32, copy=False)
        embedded, docs_embedded = self.query_embeddings, self.corpus.embeddings
        if embedded is not None and docs_embedded is not None:
            s = VOTE_EMBEDDING_SHARE
            sims = (1 - s) * sims + s * (embedded[rows] @ docs_embedded[docs].T)
        for k, r_list, picks in spans:
            block = sims[np.ix_(np.searchsorted(rows, r_list), np.searchsorted(docs, picks))]
            best = block.argmax(axis=0).tolist()
            labels = self.labels[chunk[k]]
            out[k] = [labels[b] if block[b, j] >= NEAREST_MIN else None for j, b in enumerate(best)]
        return out


def _readable(terms: tuple[int, ...], names, words, cache: dict, size: int = 3) -> list[str]:
    """The first `size` terms, a bigram hiding the words it is made of (shown before or after it), numbers left out;
    `cache` keeps the answers, as the same overlaps recur across subscribers."""
    if terms in cache:
        return cache[terms]
    chosen: list[int] = []
    covered: set[str] = set()
    for term in terms:
        mine = words[term]
        if all(word.isdigit() for word in mine):  # "11": a number shared says nothing of the topic
            continue
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


def _segment_any(held: np.ndarray, groups: list[list[int]], n: int) -> np.ndarray:
    """Per group of rows of the boolean `held`, are any of them true (False for an empty group): _segment_max's
    padded groups, or-ed column by column."""
    filled = [k for k, g in enumerate(groups) if g]
    out = np.zeros((len(groups), n), dtype=bool)
    if not filled:
        return out
    width = max(len(groups[k]) for k in filled)
    index = np.array([groups[k] + [groups[k][0]] * (width - len(groups[k])) for k in filled], dtype=np.intp)
    block = np.take(held, index[:, 0], axis=0)
    for j in range(1, width):
        block |= np.take(held, index[:, j], axis=0)
    out[filled] = block
    return out


def _segment_max(sims: np.ndarray, groups: list[list[int]], n: int) -> np.ndarray:
    """Per group of rows of `sims`, their element-wise max (0 for an empty group). Groups are padded with their
    first row to one width and maxed column by column: ten times faster than np.maximum.reduceat over axis 0."""
    filled = [k for k, g in enumerate(groups) if g]
    if not filled:
        return np.zeros((len(groups), n), dtype=sims.dtype)
    width = max(len(groups[k]) for k in filled)
    index = np.array([groups[k] + [groups[k][0]] * (width - len(groups[k])) for k in filled], dtype=np.intp)
    block = np.take(sims, index[:, 0], axis=0)
    for j in range(1, width):
        np.maximum(block, np.take(sims, index[:, j], axis=0), out=block)
    if len(filled) == len(groups):
        return block
    out = np.zeros((len(groups), n), dtype=sims.dtype)
    out[filled] = block
    return out


def _mmr(score: np.ndarray, gram, length: int, lam: float) -> np.ndarray:
    """Maximal marginal relevance over each row's best candidates: picks (rows x length), -1 where none is left;
    gram(rows) is the candidates' similarity matrix with those rows filled in (Corpus.gram)."""
    rows, n = score.shape
    picks = np.full((rows, length), -1, dtype=np.int64)
    if length == 0 or n == 0:
        return picks
    size = min(n, max(3 * length, length + 10))
    pool = np.argpartition(-score, size - 1, axis=1)[:, :size] if n > size else np.tile(np.arange(n), (rows, 1))
    pooled = np.take_along_axis(score, pool, axis=1)
    order = np.lexsort((pool, -pooled), axis=1)  # best first, ties by paper id
    pool, pooled = np.take_along_axis(pool, order, axis=1), np.take_along_axis(pooled, order, axis=1)
    near = np.take(gram(pool).ravel(), pool[:, :, None] * n + pool[:, None, :])
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
