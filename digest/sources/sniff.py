"""What a document that is not a feed is: an HTML page, JSON of another kind, binary data or plain text. A source's
error then names the cause ("an HTML page, not a feed"), not the first thing a parser tripped on in it ("undefined
entity at line 3", "elements nested more than 256 deep" for random bytes).

It only looks at bytes and never decides that a feed is not one: a document that opens with markup, or that holds a
feed's root element after some junk (a PHP warning printed before the XML, which feedparser reads past), goes on to
the parsers. Pure: no network, no database, no clock.
"""

from __future__ import annotations

import json
import re
from urllib.parse import urljoin

from digest.errors import FeedError
from digest.sources.hf import parse_hf_daily
from digest.sources.shape import check_json

HEAD_BYTES = 4096  # enough for an XML declaration, comments and a doctype before the first element
BROWSER_HINT = "check the URL in a browser: it should show the feed itself"
HTML_HINT = "is the URL the feed's own address? A site's page links to its RSS or Atom feed: use that link"
_UTF8_BOM = b"\xef\xbb\xbf"
# UTF-16 by its byte order mark, or (no mark) by "<" next to a NUL: markup, read by the XML parser.
_UTF16_STARTS = (b"\xff\xfe", b"\xfe\xff", b"\x00<", b"<\x00")
# What may come before the first element of an XML or HTML document: space, the XML declaration, processing
# instructions, comments.
_PROLOG = re.compile(rb"(?:\s++|<\?[^>]*+>|<!--(?:[^-]|-(?!->))*+-->)*+")
_HTML_START = re.compile(rb"<!doctype\s++html\b|<(?:html|head|body)\b", re.IGNORECASE)
_HTML_ANYWHERE = re.compile(rb"<(?:html|body)\b[^>]*+>", re.IGNORECASE)
# A feed's root element (or the XML declaration) anywhere: feedparser reads a feed after junk, so it is not refused.
_FEED_ROOT = re.compile(rb"<(?:\?xml\b|rss\b|feed\b|(?:[\w.-]++:)?RDF\b)")
# <link rel="alternate" type="application/rss+xml" href="..."> (attributes in any order): the feed the page names.
_FEED_LINK = re.compile(rb"<link\b[^>]*?\btype\s*+=\s*+[\"']application/(?:rss|atom)\+xml[\"'][^>]*+>", re.IGNORECASE)
_HREF = re.compile(rb"""\bhref\s*+=\s*+(?:"([^"]*+)"|'([^']*+)')""", re.IGNORECASE)
_MAGIC = ((b"\x1f\x8b", "gzip-compressed data"), (b"%PDF-", "a PDF document"), (b"PK\x03\x04", "a ZIP archive"))
_CONTROL = bytes(c for c in range(32) if c not in b"\t\n\r\f") + b"\x7f"
_SHOWN = 60  # characters of a plain text shown in its error


def refuse_non_feed(data: bytes, source_url: str = "") -> None:
    """Raise FeedError naming what `data` is when it is plainly not RSS or Atom: an HTML page, binary data, plain
    text. Anything that opens with markup, or holds a feed's root element, passes (the parsers decide)."""
    head = data[:HEAD_BYTES]
    if head.startswith(_UTF16_STARTS):
        return
    head = head.removeprefix(_UTF8_BOM)
    start = _PROLOG.match(head)
    assert start is not None  # the pattern matches the empty string
    if _HTML_START.match(head, start.end()):
        raise html_page(data, source_url)
    if head[start.end():start.end() + 1] in (b"<", b"") or _FEED_ROOT.search(data):  # "": all comments, or a long prolog
        return
    if mentions_html(head):
        raise html_page(data, source_url)
    raise FeedError(f"{_what_it_is(head)}, not RSS, Atom or JSON", BROWSER_HINT)


def mentions_html(data: bytes) -> bool:
    """An <html> or <body> tag near the start: what a parser could not read was an HTML page (one without a
    doctype, or after some junk)."""
    return _HTML_ANYWHERE.search(data, 0, HEAD_BYTES) is not None


def html_page(data: bytes, source_url: str = "") -> FeedError:
    """The error for an HTML page; its hint names the feed the page links to, when it names one."""
    link = _FEED_LINK.search(data, 0, 256 * 1024)  # a page's <link>s are in its <head>
    href = _HREF.search(link.group()) if link else None
    if href:
        target = (href.group(1) or href.group(2) or b"").decode("utf-8", "replace").strip()
        target = urljoin(source_url, target) if source_url else target
        if target and len(target) <= 500 and target.isprintable() and " " not in target:
            return FeedError("an HTML page, not a feed", f"is the URL the feed's own address? The page names its feed: {target}")
    return FeedError("an HTML page, not a feed", HTML_HINT)


def refuse_json(data: bytes, source_url: str = "") -> FeedError:
    """The error for JSON where RSS or Atom was expected: Hugging Face daily papers (with the kind that reads them),
    a JSON Feed, or any other JSON."""
    try:
        hf = parse_hf_daily(data, source_url=source_url)
    except FeedError:
        hf = None
    if hf is not None and hf.papers:
        return FeedError("Hugging Face daily papers (JSON), not an RSS or Atom feed",
                         f"this source needs --kind hf-daily: `digest sources remove` it, then "
                         f"`digest sources add {source_url or 'URL'} --kind hf-daily`")
    if _is_json_feed(data):
        return FeedError("a JSON Feed (jsonfeed.org), not an RSS or Atom feed",
                         "digest reads RSS, Atom and Hugging Face daily papers: use the site's RSS or Atom feed")
    return FeedError("JSON, not an RSS or Atom feed",
                     "check the URL in a browser; a source of kind feed reads RSS or Atom, and Hugging Face daily papers "
                     "need --kind hf-daily")


def _is_json_feed(data: bytes) -> bool:
    try:
        check_json(data)
        document = json.loads(data)
    except (FeedError, ValueError, RecursionError):
        return False
    version = document.get("version") if isinstance(document, dict) else None
    return isinstance(version, str) and "jsonfeed.org" in version


def _what_it_is(head: bytes) -> str:
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    if b"\x00" in head or len(head) - len(head.translate(None, _CONTROL)) > len(head) // 20:
        return "binary data"
    first = head.decode("utf-8", "replace").strip().split("\n", 1)[0]
    first = "".join(c for c in first if c.isprintable()).strip()
    if len(first) > _SHOWN:
        first = first[:_SHOWN - 1] + "…"
    return f'plain text ("{first}")' if first else "plain text"
