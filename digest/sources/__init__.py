"""Sources: one module per kind of source. Fetching (network, polite) is kept apart from parsing (pure, over bytes).

Every parser is a pure function `parse_<kind>(data: bytes, *, source_url: str = "") -> ParseResult` and
never touches the network, the database or the clock. Every ParsedPaper it yields has passed
digest.sources.check.check_paper (types, ranges, lengths). This package knows nothing about the store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

# The one list of source kinds. A fetched source is parsed by its kind (digest.sources.parse.parse_source); an
# imported file is stored as a source of kind "file" and never fetched.
FETCHED_KINDS = ("arxiv-rss", "arxiv-api", "hf-daily", "feed")
FILE_KIND = "file"


@dataclass
class ParsedPaper:
    """One paper as a source gave it, cleaned to plain text, with its canonical dedupe key."""

    key: str  # "arxiv:2401.01234" | "doi:10.1234/abc" | "title:normalised title"
    ident: str  # the identifier as the source gave it (arXiv id for arXiv papers, the record's id for JSONL)
    title: str
    abstract: str = ""
    authors: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    arxiv_id: str | None = None  # versionless
    version: int | None = None
    doi: str | None = None  # normalised, lower-case, no https://doi.org/ prefix
    url: str | None = None
    pdf_url: str | None = None
    announce_type: str | None = None  # new, cross, replace, replace-cross (arXiv listings)
    published: datetime | None = None  # aware UTC
    updated: datetime | None = None  # aware UTC
    upvotes: int | None = None  # Hugging Face; None = this source does not say
    ai_summary: str | None = None
    github_repo: str | None = None
    item_id: str | None = None  # guid / id inside the source


@dataclass
class ParseResult:
    papers: list[ParsedPaper]
    kind: str  # detected format: rss10, rss20, atom10, arxiv-api, hf-daily, jsonl...
    title: str = ""  # the feed's own title, when it has one
    warnings: list[str] = field(default_factory=list)  # recovered problems (bozo feeds, skipped records)
    skipped: int = 0  # entries refused (no title, unreadable...): each also has a warning, until the warnings are capped
    total_results: int | None = None  # arXiv API opensearch:totalResults, for paging
