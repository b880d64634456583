"""Any RSS or Atom feed (journals, bioRxiv, medRxiv, mirrors of Hugging Face papers) -> ParsedPaper.

`read_feed` is the one place feedparser is called, for this module and arxiv.py: on a byte stream, so it
never fetches a URL or opens a file. Pure: no network, no database, no clock.
"""

from __future__ import annotations

import io
import re
import xml.sax
from urllib.parse import urljoin

import feedparser

from digest.errors import FeedError
from digest.sources import ParsedPaper, ParseResult
from digest.sources.check import check_paper, unexpected
from digest.sources.clean import (
    arxiv_id_in,
    arxiv_urls,
    html_to_text,
    normalise_doi,
    paper_key,
    plain_to_text,
    split_authors,
    time_from_struct,
    whole_number,
)
from digest.sources.shape import check_markup
from digest.sources.sniff import html_page, mentions_html, refuse_non_feed

# python-feedgen mirrors of HF daily papers (huangboming) put authors, upvotes and the abstract in the description.
# The authors and summary are cut out with str.find (a lazy regex retried at every "<b>Authors:</b>" was quadratic).
_HF_MIRROR_UPVOTES = re.compile(r"<b>Upvotes:</b>\s*+(\d+)")
_ENTRY_CLOSE = (b"</entry>", b"</item>", b":entry>", b":item>")
MAX_WARNINGS = 20  # warnings kept per feed; the rest are counted
ARXIV_QUERY_HINT = "fix the query: `digest sources remove` the source and add it again with the corrected arxiv-api:QUERY"
# feedparser's lenient parser turns "&#xD800;" into chr(0xD800).encode() and fails (a lone surrogate has no UTF-8):
# a reference to a surrogate or past U+10FFFF stands for U+FFFD instead, and one to NUL for nothing (neither is a
# character XML allows).
_CHARACTER_REFERENCE = re.compile(rb"&#([xX][0-9a-fA-F]++|[0-9]++);")


# feedparser looks for an e-mail address in each RSS author (author, dc:creator, managingEditor...) with a regex that
# rescans a run of address characters from each of its positions: 20 kB of "a." took 6 s, 1 MB would take hours. A run
# longer than 256 such characters (no name or address has one) gets a space every 256, in those elements only.
_AUTHOR_OPEN = re.compile(rb"<(?:[\w.-]+:)?(?:author|creator|contributor|publisher|managingEditor|webMaster)\b[^<>]*+>")
_LONG_RUN = re.compile(rb"(?<![A-Za-z0-9_.+\-])[A-Za-z0-9_.+\-]{257,}")
_RUN_PIECE = 256


def _break_long_author_runs(data: bytes) -> bytes:
    pieces, start = [], 0
    for opening in _AUTHOR_OPEN.finditer(data):
        if opening.start() < start:
            continue
        end = data.find(b"</", opening.end())
        end = len(data) if end < 0 else end
        text = data[opening.end():end]
        if _LONG_RUN.search(text):
            pieces += [data[start:opening.end()], _LONG_RUN.sub(_spaced, text)]
            start = end
    return b"".join(pieces) + data[start:] if pieces else data


def _spaced(run: re.Match) -> bytes:
    text = run.group()
    return b" ".join(text[i:i + _RUN_PIECE] for i in range(0, len(text), _RUN_PIECE))


def _storable_reference(match: re.Match) -> bytes:
    digits = match.group(1)
    if len(digits) <= 9:
        code = int(digits[1:], 16) if digits[:1] in b"xX" else int(digits)
        if code == 0:
            return b""
        if code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF:
            return match.group()
    return b"&#xFFFD;"


def _reason(exc: BaseException | None) -> str:
    if isinstance(exc, xml.sax.SAXParseException):
        return f"{exc.getMessage()} at line {exc.getLineNumber()}, column {exc.getColumnNumber()}"
    return str(exc) if exc is not None else "unknown problem"


def read_feed(data: bytes, source_url: str = "") -> tuple[feedparser.FeedParserDict, list[str]]:
    """feedparser's reading of the bytes, with the recovered problems as warnings.

    Raises FeedError when nothing can be recovered: no bytes, not a feed (an HTML page, binary data or plain text
    is named as such: digest.sources.sniff), broken XML with no entries, or a shape (too many tags, too deep) that
    would take feedparser gigabytes (digest.sources.shape).
    An entry cut off by a truncated download is dropped (with a warning) rather than kept half-read."""
    if not data or not data.strip():
        raise FeedError("empty document")
    refuse_non_feed(data, source_url)  # before the shape check: random bytes are "binary data", not "nested too deep"
    check_markup(data)  # a shape that would take feedparser gigabytes is refused before it starts
    if b"&#" in data:
        data = _CHARACTER_REFERENCE.sub(_storable_reference, data)
    data = _break_long_author_runs(data)
    # feedparser flags headers without a content-type as bozo (NonXMLContentType); application/xml keeps the
    # document's own encoding declaration in charge.
    headers = {"content-location": source_url, "content-type": "application/xml"} if source_url else None
    try:
        parsed = feedparser.parse(io.BytesIO(data), response_headers=headers, sanitize_html=True)
    except Exception as exc:  # noqa: BLE001 - the library's own failure on hostile bytes is this feed's error
        raise FeedError(f"the feed parser failed on it ({type(exc).__name__}: {str(exc)[:200]})") from None
    warnings: list[str] = []
    broken = broken_xml(parsed)
    if broken:
        closed = sum(data.count(tag) for tag in _ENTRY_CLOSE)
        if closed < len(parsed.entries):
            del parsed.entries[closed:]
            warnings.append("the last entry was cut off and is dropped")
        if not parsed.entries:
            if mentions_html(data):  # an HTML page is rarely XML: its first &nbsp; breaks it
                raise html_page(data, source_url)
            raise FeedError(f"not well-formed XML: {broken}")
        warnings.append(f"not well-formed XML ({broken}): kept the {len(parsed.entries)} entries read before it")
    elif not parsed.entries and not parsed.get("version"):
        if mentions_html(data):
            raise html_page(data, source_url)
        raise FeedError("not an RSS or Atom feed")
    elif parsed.get("bozo"):
        warnings.append(f"encoding: {parsed.get('bozo_exception')}")
    _raise_arxiv_error(parsed)
    return parsed, warnings


def broken_xml(parsed: feedparser.FeedParserDict) -> str | None:
    """Why the XML is broken, or None when it is well-formed (a mere encoding override is not broken)."""
    exc = parsed.get("bozo_exception") if parsed.get("bozo") else None
    if exc is None or isinstance(exc, feedparser.CharacterEncodingOverride):
        return None
    return _reason(exc)


def _raise_arxiv_error(parsed: feedparser.FeedParserDict) -> None:
    """The arXiv API reports errors as a feed with one entry titled "Error": never a paper."""
    for entry in parsed.entries:
        if "arxiv.org/api/errors" in entry.get("id", ""):
            message = html_to_text(entry.get("summary")) or entry.get("id", "")
            # The answer is a valid feed: the query is what is wrong, and it stays wrong until it is changed.
            raise FeedError(f"arXiv API error: {message}", ARXIV_QUERY_HINT)


def entry_authors(entry) -> list[str]:
    """Every author of an entry: all dc:creator / author elements (entry.author keeps only the last one),
    each possibly a comma-joined list."""
    names: list[str] = []
    for author in entry.get("authors") or ():
        name = author.get("name") if hasattr(author, "get") else None
        if name:
            names.extend(split_authors(name))
    if not names and entry.get("author"):
        names = split_authors(entry.get("author"))
    return names


def entry_links(entry) -> list[str]:
    links = [entry.get("id", ""), entry.get("link", "")]
    links.extend(link.get("href", "") for link in entry.get("links") or ())
    return [link for link in links if link]


def entry_doi(entry, links: list[str]) -> str | None:
    for field in ("prism_doi", "arxiv_doi", "dc_identifier"):
        doi = normalise_doi(entry.get(field))
        if doi:
            return doi
    for link in links:
        if "doi.org/" in link:
            doi = normalise_doi(link)
            if doi:
                return doi
    return None


def _typed(value: str | None, kind: object) -> str:
    """A text construct as plain text: read as HTML unless feedparser says it is text (Atom's type="text", or an RSS
    element it found no HTML in), where a <think> or <eos> of the abstract is a word, not a tag."""
    return plain_to_text(value) if kind == "text/plain" else html_to_text(value)


def entry_text(entry, field: str) -> str:
    """An entry's title or summary as plain text, read as what it is (see _typed)."""
    detail = entry.get(f"{field}_detail")
    return _typed(entry.get(field), detail.get("type") if hasattr(detail, "get") else None)


def entry_abstract(entry) -> tuple[str, object]:
    """The longer of summary and content, as given, and its type (text/html, text/plain...)."""
    summary = entry.get("summary") or ""
    detail = entry.get("summary_detail")
    kind = detail.get("type") if hasattr(detail, "get") else None
    for content in entry.get("content") or ():
        value = content.get("value") or ""
        if len(value) > len(summary):
            summary, kind = value, content.get("type")
    return summary, kind


# A guid shorter than this that is not a URI (no ":") is a counter or a position in the feed ("1", "42"), which the
# next day's feed may give to another entry: the link identifies such an entry instead.
_SHORT_GUID = 8


def entry_item_id(entry, unusable: frozenset[str] = frozenset()) -> str | None:
    """The entry's own identifier in its feed, by which a later fetch finds the same paper whatever its title then
    says (as rss2email and feed readers find an entry): its guid (RSS <guid>, Atom <id>), else its link; None when
    neither identifies it. A counter ("1", see _SHORT_GUID) is no identifier, nor is a value in `unusable`
    (unusable_item_ids)."""
    for value in (_text_of(entry.get("id")), _text_of(entry.get("link"))):
        if value and value not in unusable and not _is_counter(value):
            return value
    return None


def unusable_item_ids(entries, base: str = "") -> frozenset[str]:
    """The guids and links of one fetch that identify no entry: those several entries with different titles carry (a
    feed that gives every entry its front page as link, or one guid to all), and a counter guid that feedparser made a
    URL by resolving it against the feed's address `base` (RSS's <guid>17</guid> claims to be a permalink unless
    isPermaLink="false": "17" in https://example.org/feed.xml becomes https://example.org/17). The same entry listed
    twice (same title) shares its guid rightly, and is one paper anyway."""
    folder = urljoin(base, ".") if base else ""
    titles: dict[str, str] = {}
    unusable: set[str] = set()
    for entry in entries:
        title = entry.get("title")
        title = title if isinstance(title, str) else ""
        for value in {_text_of(entry.get("id")), _text_of(entry.get("link"))}:
            if value and titles.setdefault(value, title) != title:
                unusable.add(value)
        guid = _text_of(entry.get("id"))
        if folder and entry.get("guidislink") and guid.startswith(folder) and _is_counter(guid[len(folder):]):
            unusable.add(guid)
    return frozenset(unusable)


def _is_counter(value: str) -> bool:
    return len(value) < _SHORT_GUID and ":" not in value and "/" not in value


def _text_of(value) -> str:
    return value.strip() if isinstance(value, str) else ""


def paper_from_entry(entry, unusable: frozenset[str] = frozenset()) -> ParsedPaper | None:
    """A generic feed entry as a paper; None when it has no title. `unusable`: see entry_item_id."""
    title = entry_text(entry, "title")
    if not title:
        return None
    links = entry_links(entry)
    found = None
    for link in links:
        found = arxiv_id_in(link)
        if found:
            break
    doi = entry_doi(entry, links)
    if found is None and doi:
        found = arxiv_id_in(doi)
    arxiv_id, version = found if found else (None, None)
    raw_abstract, kind = entry_abstract(entry)
    authors = entry_authors(entry)
    upvotes = None
    if "<b>Summary:</b>" in raw_abstract:
        raw_abstract, mirror_authors, upvotes = _read_hf_mirror(raw_abstract)
        authors, kind = authors or mirror_authors, "text/html"
    url = entry.get("link") or None
    pdf_url = None
    if arxiv_id:
        url, pdf_url = arxiv_urls(arxiv_id)
    item_id = entry_item_id(entry, unusable)
    return ParsedPaper(
        key=paper_key(arxiv_id, doi, title),
        ident=arxiv_id or doi or item_id or entry.get("id") or entry.get("link") or title,
        title=title,
        abstract=_typed(raw_abstract, kind),
        authors=authors,
        categories=[tag["term"] for tag in entry.get("tags") or () if tag.get("term")],
        arxiv_id=arxiv_id,
        version=version,
        doi=doi,
        url=url,
        pdf_url=pdf_url,
        # dict.get: FeedParserDict.get("updated_parsed") silently falls back to published_parsed (and warns).
        published=time_from_struct(dict.get(entry, "published_parsed") or dict.get(entry, "updated_parsed")),
        updated=time_from_struct(dict.get(entry, "updated_parsed")),
        upvotes=upvotes,
        item_id=item_id,
    )


def _between(text: str, start: str, end: str | None) -> str | None:
    """The text after the first `start`, up to the next `end` (None: to the end); None when either is missing."""
    found = text.find(start)
    if found < 0:
        return None
    found += len(start)
    if end is None:
        return text[found:]
    stop = text.find(end, found)
    return text[found:stop] if stop >= 0 else None


def _read_hf_mirror(description: str) -> tuple[str, list[str], int | None]:
    authors = _between(description, "<b>Authors:</b>", "</p>")
    upvotes_match = _HF_MIRROR_UPVOTES.search(description)
    summary = _between(description, "<b>Summary:</b>", None)
    if summary is not None:
        summary = summary.rstrip()
        summary = summary[:-4] if summary.endswith("</p>") else summary
    upvotes = whole_number(upvotes_match.group(1)) if upvotes_match else None
    return (description if summary is None else summary), split_authors(html_to_text(authors)) if authors else [], upvotes


def papers_from_entries(entries, convert) -> tuple[list[ParsedPaper], list[str], int]:
    """Convert and check (digest.sources.check) each entry: (papers, warnings, entries skipped). An entry that cannot
    be a paper, or that the converter trips on, is skipped with a warning naming it; a value out of range is dropped
    with a warning. Raises FeedError when there are entries and none of them is a paper."""
    papers: list[ParsedPaper] = []
    warnings: list[str] = []
    skipped, more, first_refusal = 0, 0, ""
    for number, entry in enumerate(entries, 1):
        problems: list[str] = []
        try:
            paper = convert(entry)
            if paper is None:
                raise ValueError("no title")
            problems += check_paper(paper)
            papers.append(paper)
        except ValueError as exc:
            skipped += 1
            problems.append(f"{exc}, skipped")
        except Exception as exc:  # noqa: BLE001 - a wall around each entry: one the parser trips on is skipped
            skipped += 1
            problems.append(f"{unexpected(exc)}, skipped")
        if problems:
            label = _entry_label(entry)
            named = [f"entry {number}{f' ({label})' if label else ''}: {problem}" for problem in problems]
            first_refusal = first_refusal or (named[-1] if skipped else "")
            more += max(0, len(warnings) + len(named) - MAX_WARNINGS)
            warnings += named[:MAX_WARNINGS - len(warnings)]
    if entries and not papers:
        raise FeedError(f"no usable entry among {len(entries)} ({first_refusal})")
    if more:  # kept short as it grows: 100,000 bad entries would otherwise hold 100,000 warnings
        warnings.append(f"... and {more} more warnings")
    return papers, warnings, skipped


def _entry_label(entry) -> str:
    label = entry.get("id") or entry.get("link") or ""
    return label if isinstance(label, str) and len(label) <= 200 else ""


def feed_title(parsed: feedparser.FeedParserDict) -> str:
    return html_to_text(parsed.feed.get("title"))


def papers_from_feed(parsed: feedparser.FeedParserDict, warnings: list[str]) -> ParseResult:
    unusable = unusable_item_ids(parsed.entries, parsed.get("headers", {}).get("content-location", ""))
    papers, problems, skipped = papers_from_entries(parsed.entries, lambda entry: paper_from_entry(entry, unusable))
    return ParseResult(papers=papers, kind=parsed.get("version") or "feed", title=feed_title(parsed),
                       warnings=warnings + problems, skipped=skipped)

