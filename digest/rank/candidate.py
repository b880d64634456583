"""What ranking works on: a Candidate (a stored paper with the sources carrying it) and a subscriber's Profile
(interests, seed and voted papers resolved to their texts, what to leave out). Plain frozen data: the pipeline builds
them from the store's rows (digest.store.candidates), and rank never reads the store itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple, Protocol

from ..models import Paper

ARXIV_KINDS = frozenset({"arxiv-rss", "arxiv-api"})  # the source kinds that are arXiv itself
REPLACEMENTS = frozenset({"replace", "replace-cross"})  # arXiv announce types of a new version of an older paper


@dataclass(frozen=True)
class Candidate:
    """A stored paper with what ranking needs besides the row: the names of the sources carrying it, and
    their kinds (arxiv-rss, arxiv-api, hf-daily, feed, file), in the same order."""

    paper: Paper
    sources: tuple[str, ...] = ()
    source_kinds: tuple[str, ...] = ()

    @cached_property
    def outlets(self) -> int:
        """How many independent sources carry the paper, for trending: every arXiv listing or query counts as one
        (a cross-list in two category feeds is one announcement, not two signs that people care)."""
        if len(self.source_kinds) != len(self.sources):
            return len(set(self.sources))
        return len({"arxiv" if kind in ARXIV_KINDS else name for name, kind in zip(self.sources, self.source_kinds)})

    @cached_property
    def only_replaced(self) -> bool:
        """First met in an arXiv listing's replacement announcement (a new version of an older paper) and carried by
        arXiv alone: not new research. Another kind of source (Hugging Face's daily list) makes it news again."""
        return self.paper.announce_type in REPLACEMENTS and all(kind in ARXIV_KINDS for kind in self.source_kinds)

    @cached_property
    def paper_id(self) -> int | None:
        """The stored paper's id, read from the row once: an email reads each pick's id four times (links, cards,
        what it carried, its contents), and a read of a row's attribute costs ~0.3 us where this costs ~0.02."""
        return self.paper.id


class ProfilePaper(NamedTuple):
    """A seed, liked or disliked paper resolved to its text (and its stored id, where its embedding is kept)."""

    ident: str
    title: str
    abstract: str = ""
    paper_id: int | None = None


@dataclass(frozen=True)
class Profile:
    """What a subscriber wants, resolved to texts (seed and feedback papers already looked up)."""

    subscriber_id: int
    interests: tuple[str, ...] = ()
    seed_texts: tuple[ProfilePaper, ...] = ()
    liked_texts: tuple[ProfilePaper, ...] = ()
    disliked_texts: tuple[ProfilePaper, ...] = ()
    muted_terms: tuple[str, ...] = ()
    muted_authors: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    max_papers: int = 10
    trending_weight: float = 0.2
    exclude_paper_ids: frozenset[int] = frozenset()  # already sent to this subscriber, or named by them (seeds, votes)

    @cached_property
    def excludes_anything(self) -> bool:
        return bool(self.exclude_paper_ids or self.muted_terms or self.muted_authors or self.categories)

    @cached_property
    def is_empty(self) -> bool:
        """No interests, seeds or likes: such a subscriber gets the day's trending papers."""
        return not (any(i.strip() for i in self.interests) or self.seed_texts or self.liked_texts)


class PaperText(Protocol):
    """What a profile reads of a paper it names: a stored Paper, or the store's lighter VotedPaper."""

    @property
    def id(self) -> int | None: ...
    @property
    def ident(self) -> str: ...
    @property
    def title(self) -> str: ...
    @property
    def abstract(self) -> str | None: ...


def _profile_paper(paper: PaperText) -> ProfilePaper:
    return ProfilePaper(paper.ident, paper.title, paper.abstract or "", paper.id)


def build_profile(subscriber, seed_papers: Iterable[PaperText] = (), liked: Iterable[PaperText] = (), disliked: Iterable[PaperText] = (),
                  sent_ids: Iterable[int] = ()) -> Profile:
    """The Profile of a Subscriber row, given the papers its seeds and feedback refer to. Those papers are never
    candidates: the subscriber named them, so they know them (a seed paper is not news, a liked one was read, a
    disliked one is unwanted), whether or not an email carried them."""
    seed_papers, liked, disliked = tuple(seed_papers), tuple(liked), tuple(disliked)
    known = {p.id for p in (*seed_papers, *liked, *disliked) if p.id is not None}
    return Profile(
        subscriber_id=subscriber.id,
        interests=tuple(i for i in subscriber.interests or () if i.strip()),
        seed_texts=tuple(map(_profile_paper, seed_papers)),
        liked_texts=tuple(map(_profile_paper, liked)),
        disliked_texts=tuple(map(_profile_paper, disliked)),
        muted_terms=tuple(subscriber.muted_terms or ()),
        muted_authors=tuple(subscriber.muted_authors or ()),
        categories=tuple(subscriber.categories or ()),
        max_papers=subscriber.max_papers,
        trending_weight=subscriber.trending_weight,
        exclude_paper_ids=frozenset(sent_ids) | known,
    )
