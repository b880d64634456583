"""The parsers' front door: `parse_source` for a source of a known kind, `parse_file` for a local file whose format
is detected from its bytes. Both hand back one ParseResult with one paper per dedupe key.

Kinds: "arxiv-rss", "arxiv-api", "hf-daily", "feed", "jsonl". ParseResult.kind says what was actually read:
"arxiv-rss", "arxiv-api", "hf-daily", "jsonl", or feedparser's version for any other feed (rss10, rss20, atom10,
atom03, rss090, rss...). Pure: no network, no database, no clock.
"""

from __future__ import annotations

import json

from digest.errors import FeedError
from digest.sources import FETCHED_KINDS, ParsedPaper, ParseResult
from digest.sources.arxiv import api_result, is_arxiv_api, is_arxiv_listing, listing_result
from digest.sources.feed import papers_from_feed, read_feed
from digest.sources.hf import parse_hf_daily
from digest.sources.jsonl import parse_jsonl
from digest.sources.shape import check_json
from digest.sources.sniff import refuse_json

SOURCE_KINDS = (*FETCHED_KINDS, "jsonl")
_JSONL_SUFFIXES = (".jsonl", ".ndjson", ".jsonl.txt")
_BOMS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")


def parse_source(kind: str, data: bytes, *, source_url: str = "") -> ParseResult:
    """Parse the bytes one source sent. XML is read by what it is (an arXiv API answer given as "feed" is still
    read as the API, and an error answer raises), so a source registered with a near-miss kind still works."""
    if kind not in SOURCE_KINDS:
        raise FeedError(f"unknown source kind {kind!r} (known: {', '.join(SOURCE_KINDS)})")
    if kind == "jsonl":
        return dedupe_papers(parse_jsonl(data, source_url=source_url))
    if _first_byte(data) in (b"[", b"{"):
        if kind == "hf-daily":
            return dedupe_papers(parse_hf_daily(data, source_url=source_url))
        raise refuse_json(data, source_url)  # names the kind that reads it, when it is Hugging Face's
    return dedupe_papers(_parse_xml(data, source_url))  # any kind: an HTML page or junk is named as such there


def parse_file(data: bytes, filename: str = "") -> ParseResult:
    """Parse a local file, detecting its format: RSS 1.0/2.0, Atom, arXiv listing or API Atom,
    Hugging Face daily-papers JSON (a list, or one paper record), JSON Lines."""
    first = _first_byte(data)
    if not first:
        raise FeedError("empty file")
    if filename.lower().endswith(_JSONL_SUFFIXES):
        return dedupe_papers(parse_jsonl(data))
    if first == b"[":
        return dedupe_papers(parse_hf_daily(data))
    if first == b"{":
        return dedupe_papers(parse_hf_daily(data) if _is_hf_paper_record(data) else parse_jsonl(data))
    return dedupe_papers(_parse_xml(data, ""))


def _first_byte(data: bytes) -> bytes:
    head = data[:4096]
    for bom in _BOMS:
        if head.startswith(bom):
            return b"<" if bom != _BOMS[0] else head[len(bom):].lstrip()[:1]  # UTF-16 text is only ever XML here
    return head.lstrip()[:1]


def _is_hf_paper_record(data: bytes) -> bool:
    """One JSON object for the whole file is a Hugging Face paper record (/api/papers/<id>); anything else that
    opens with "{" is JSON Lines (a one-line JSON Lines file is one object too, but with "abstract").
    Raises FeedError for a single JSON document that is neither."""
    if b"\n{" not in data:  # JSON Lines stops the decoder at its second line; one document is read whole
        check_json(data)
    try:
        document = json.loads(data)
    except ValueError:
        return False  # several lines of JSON: JSON Lines
    except RecursionError:  # {"paper": {"paper": ... 100,000 deep
        raise FeedError("JSON nested too deeply") from None
    if not isinstance(document, dict):
        return False
    if "paper" in document or ("summary" in document and "abstract" not in document):
        return True
    if b"\n" in data.strip() or not {"id", "title", "abstract"} & document.keys():  # one document, not lines
        keys = ", ".join(sorted(map(str, document))[:6])
        raise FeedError(f"a JSON document of an unknown kind (keys: {keys}); expected JSON Lines or Hugging Face papers")
    return False


def _parse_xml(data: bytes, source_url: str) -> ParseResult:
    parsed, warnings = read_feed(data, source_url)
    if is_arxiv_api(parsed):
        return api_result(parsed, warnings)
    if is_arxiv_listing(parsed):
        return listing_result(parsed, warnings)
    return papers_from_feed(parsed, warnings)


def dedupe_papers(result: ParseResult) -> ParseResult:
    """One paper per key, so a batch upsert never meets the same key twice (PostgreSQL refuses that):
    the highest version wins, else the first seen."""
    seen: dict[str, int] = {}
    papers: list[ParsedPaper] = []
    for paper in result.papers:
        index = seen.get(paper.key)
        if index is None:
            seen[paper.key] = len(papers)
            papers.append(paper)
            continue
        kept = papers[index]
        if (paper.version or 0) > (kept.version or 0):
            papers[index] = paper
        if paper.key.startswith("title:") and paper.ident != kept.ident:
            # Two entries of their own (two links, two guids) taken for one paper by their title alone: say so.
            result.warnings.append(f"{paper.ident}: same title as {kept.ident}, taken for the same paper; one kept")
        else:
            result.warnings.append(f"{paper.ident}: listed twice, one kept")
    result.papers = papers
    return result
