"""arXiv's own formats -> ParsedPaper: the announcement listings of rss.arxiv.org (RSS 2.0 and Atom), the legacy
RSS 1.0/RDF listing, and the API's Atom (2016 and 2026 shapes).

Pure: no network (fetching, paging and the 3-second pause live with the fetcher), no database, no clock.
"""

from __future__ import annotations

import re

import feedparser

from digest.sources import ParsedPaper, ParseResult
from digest.sources.clean import (
    arxiv_id_in,
    arxiv_urls,
    clean_name,
    normalise_doi,
    paper_key,
    time_from_struct,
    whole_number,
)
from digest.sources.feed import (
    entry_authors,
    entry_doi,
    entry_links,
    entry_text,
    feed_title,
    paper_from_entry,
    papers_from_entries,
)

# rss.arxiv.org descriptions open with "arXiv:2608.11232v1 Announce Type: new \nAbstract: ".
_LISTING_PREFIX = re.compile(r"^arXiv:\S+ Announce Type: ?[\w-]+ Abstract: ?")
# Legacy RDF titles end with "(arXiv:1209.2411v1 [math.PR])", "(arXiv:0804.1418v4 [math.DG] UPDATED)" or
# "(arXiv:0901.1155v2 [cs.DS] CROSS LISTED)" (an older paper newly cross-listed).
# Matched from the last "(arXiv:" only (see _rdf_suffix): searched from every one, it was quadratic.
_RDF_TITLE_SUFFIX = re.compile(r"\s*\(arXiv:\S+?(?:v(\d+))?\s+\[([^\]]+)\](?:\s+(UPDATED|CROSS LISTED))?\)\s*")
_LISTING_TITLE = re.compile(r"(.*?) updates on arXiv\.org", re.I)  # on a space-collapsed title (see _listing_title)


def is_arxiv_api(parsed: feedparser.FeedParserDict) -> bool:
    feed = parsed.feed
    return "opensearch_totalresults" in feed and "arxiv" in f"{feed.get('id', '')} {feed.get('title', '')}".lower()


def _listing_title(parsed: feedparser.FeedParserDict) -> re.Match | None:
    title = parsed.feed.get("title", "")
    # Spaces collapsed first: "\s+updates" tried at each space of a long run was quadratic.
    return _LISTING_TITLE.fullmatch(" ".join(title.split())) if "updates on" in title.lower() else None


def is_arxiv_listing(parsed: feedparser.FeedParserDict) -> bool:
    if _listing_title(parsed):
        return True
    return any(entry.get("arxiv_announce_type") for entry in parsed.entries[:5])


def _listed_categories(parsed: feedparser.FeedParserDict) -> frozenset[str]:
    """The archives or categories a listing is for, from its title: "math updates on arXiv.org" -> {"math"}."""
    match = _listing_title(parsed)
    return frozenset(re.split(r"[\s,+]+", match.group(1))) if match else frozenset()


def _rdf_suffix(title: str) -> re.Match | None:
    """The legacy RDF "(arXiv:ID [cat] UPDATED)" at the end of a title, from the last "(arXiv:" on."""
    start = title.rfind("(arXiv:")
    if start < 0:
        return None
    while start > 0 and title[start - 1].isspace():  # the spaces before it go with it
        start -= 1
    return _RDF_TITLE_SUFFIX.fullmatch(title, start)


def _legacy_announce_type(primary: str, marker: str | None, listed: frozenset[str]) -> str | None:
    """The RDF listing has no announce type: "UPDATED" marks a replacement, "CROSS LISTED" an older paper
    cross-listed today, and a paper whose primary category is outside the feed's archive was cross-listed into it."""
    updated = marker == "UPDATED"
    if marker == "CROSS LISTED":
        return "cross"
    if not listed:
        return "replace" if updated else None
    own = primary in listed or primary.split(".")[0] in listed
    if updated:
        return "replace" if own else "replace-cross"
    return "new" if own else "cross"


def listing_paper(entry, listed: frozenset[str], feed_date) -> ParsedPaper | None:
    """One announcement; an entry with no arXiv id is read as a plain feed entry."""
    title = entry_text(entry, "title")
    if not title:
        return None
    found = None
    for link in entry_links(entry):
        candidate = arxiv_id_in(link)
        if candidate and (found is None or (found[1] is None and candidate[1] is not None)):
            found = candidate  # the guid (oai:arXiv.org:2608.11232v1) carries the version, the link does not
    if found is None:
        return paper_from_entry(entry)
    arxiv_id, version = found
    categories = [tag["term"] for tag in entry.get("tags") or () if tag.get("term")]
    announce_type = entry.get("arxiv_announce_type") or None
    old_paper = False  # a legacy "CROSS LISTED" paper was first published long ago
    suffix = _rdf_suffix(title)
    if suffix:
        old_paper = suffix.group(3) == "CROSS LISTED"
        title = title[: suffix.start()]
        version = version or (whole_number(suffix.group(1)) if suffix.group(1) else None)
        primary = suffix.group(2).strip()
        categories = categories or [primary]
        announce_type = announce_type or _legacy_announce_type(primary, suffix.group(3), listed)
    abstract = _LISTING_PREFIX.sub("", entry_text(entry, "summary"), count=1)
    date = time_from_struct(dict.get(entry, "published_parsed") or dict.get(entry, "updated_parsed")) or feed_date
    replacement = announce_type in ("replace", "replace-cross")
    url, pdf_url = arxiv_urls(arxiv_id)
    doi = normalise_doi(entry.get("arxiv_doi"))
    return ParsedPaper(
        key=paper_key(arxiv_id, doi, title),
        ident=arxiv_id,
        title=title,
        abstract=abstract,
        authors=entry_authors(entry),
        categories=categories,
        arxiv_id=arxiv_id,
        version=version,
        doi=doi,
        url=url,
        pdf_url=pdf_url,
        announce_type=announce_type,
        # A replacement is announced today but was first published long ago, on a date the listing does not give.
        published=None if replacement or old_paper else date,
        updated=date,
        item_id=entry.get("id") or entry.get("link") or None,
    )


def listing_result(parsed: feedparser.FeedParserDict, warnings: list[str]) -> ParseResult:
    listed = _listed_categories(parsed)
    feed_date = time_from_struct(dict.get(parsed.feed, "updated_parsed") or dict.get(parsed.feed, "published_parsed"))
    papers, problems, skipped = papers_from_entries(parsed.entries, lambda entry: listing_paper(entry, listed, feed_date))
    return ParseResult(papers=papers, kind="arxiv-rss", title=feed_title(parsed), warnings=warnings + problems, skipped=skipped)


def api_paper(entry) -> ParsedPaper | None:
    title = entry_text(entry, "title")
    found = arxiv_id_in(entry.get("id"))
    if not title or found is None:
        return None
    arxiv_id, version = found
    primary = (entry.get("arxiv_primary_category") or {}).get("term")
    categories = [primary] if primary else []
    categories += [tag["term"] for tag in entry.get("tags") or () if tag.get("term") and tag["term"] != primary]
    doi = entry_doi(entry, [link.get("href", "") for link in entry.get("links") or () if link.get("title") == "doi"])
    url, pdf_url = arxiv_urls(arxiv_id)
    return ParsedPaper(
        key=paper_key(arxiv_id, doi, title),
        ident=arxiv_id,
        title=title,
        abstract=entry_text(entry, "summary"),  # type="text": an abstract's "<think>" is a word
        authors=[name for name in (clean_name(a.get("name") or "") for a in entry.get("authors") or ()) if name],
        categories=categories,
        arxiv_id=arxiv_id,
        version=version,
        doi=doi,
        url=url,
        pdf_url=pdf_url,
        published=time_from_struct(dict.get(entry, "published_parsed")),
        updated=time_from_struct(dict.get(entry, "updated_parsed")),
        item_id=entry.get("id"),
    )


def api_result(parsed: feedparser.FeedParserDict, warnings: list[str]) -> ParseResult:
    papers, problems, skipped = papers_from_entries(parsed.entries, api_paper)
    total = parsed.feed.get("opensearch_totalresults")
    try:
        total_results = int(total) if total is not None else None
    except ValueError:
        total_results = None
        warnings = [*warnings, f"opensearch:totalResults is not a number: {total!r}"]
    return ParseResult(
        papers=papers, kind="arxiv-api", title=feed_title(parsed), warnings=warnings + problems,
        total_results=total_results, skipped=skipped,
    )

