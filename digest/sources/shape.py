"""A cheap look at a document's shape before feedparser or the JSON decoder reads it: refuse the shapes that would
take them gigabytes or minutes, so a feed of any shape up to max_feed_bytes is read in bounded memory and time.

- feedparser keeps a few hundred bytes per open element, per tag and per entity reference it reads: 2.7 million
  nested tags in 18.9 MB peaked at 1.14 GB, 1 million empty tags in 4 MB at 333 MB, 4 million references to one
  entity in 20 MB at 1 GB. At most MAX_TAGS tags and MAX_REFERENCES references, nested at most MAX_DEPTH deep.
- xml.sax looks each attribute up by a linear search of the element's attributes (getValueByQName, for every
  one): one tag with 400,000 attributes would take hours. At most MAX_ATTRIBUTES attributes per tag.
- feedparser keeps ~130 bytes per attribute it reads: 99 attributes on a tag of each of 29,000 entries (2.9 million,
  every tag within the limit above) peaked at 419 MB. At most MAX_ALL_ATTRIBUTES attributes in all.
- json builds an object per {...} and [...]: 6.7 million "{}" in 20 MB took 1.2 GB. At most MAX_JSON_CONTAINERS.

Only counts bytes: it never parses, never builds a tree, and runs in time linear in the document (C-speed counting,
then a Python scan of the tags only when the counts cannot rule the problems out). Pure: no network, no database.
"""

from __future__ import annotations

import re

from digest.errors import FeedError

# No real feed comes near these: a 1,000-entry arXiv listing has ~35,000 tags and nests 5 deep; a 2,000-entry arXiv
# API page ~90,000. Just inside all the limits at once a feed peaks at ~300 MB (benchmarks/hostile.py memory).
MAX_TAGS = 500_000
MAX_REFERENCES = 500_000  # "&": a real feed has ~1 per 100 bytes (escaped HTML)
MAX_DEPTH = 256
MAX_JSON_CONTAINERS = 200_000  # a day of Hugging Face papers has ~500
MAX_ATTRIBUTES = 100  # per tag; an rss root declaring 30 namespaces is the most seen
MAX_ALL_ATTRIBUTES = 500_000  # a 2,000-entry arXiv API page has ~40,000 (its links and categories)
_FEW_EQUALS = 10_000  # with fewer "=" than this in the whole document, no tag can cost xml.sax more than ~1 s
_CHUNK = 1024  # bytes per counted piece: few enough tags per piece that the depth bound stays tight
_HINT = "the document is not a feed digest can read; check the URL in a browser"
_UTF16 = {b"\xff\xfe": 2, b"\xfe\xff": 3}  # byte order mark -> index of the first ASCII byte after it


def check_markup(data: bytes) -> None:
    """Raise FeedError when XML `data` holds more than MAX_TAGS tags or MAX_REFERENCES entity references, nests
    elements more than MAX_DEPTH deep, gives a tag more than MAX_ATTRIBUTES attributes or all tags more than
    MAX_ALL_ATTRIBUTES."""
    start = _UTF16.get(data[:2])
    if start is not None:  # UTF-16: markup characters are every other byte
        data = data[start::2]
    tags = data.count(b"<")
    if tags > MAX_TAGS:
        raise FeedError(f"too many tags ({tags:,}; a feed may have {MAX_TAGS:,})", _HINT)
    references = data.count(b"&")
    if references > MAX_REFERENCES:
        raise FeedError(f"too many entity references ({references:,}; a feed may have {MAX_REFERENCES:,})", _HINT)
    deep = tags > MAX_DEPTH and _depth_bound(data) > MAX_DEPTH
    if not deep and data.count(b"=") <= _FEW_EQUALS:
        return
    depth, attributes, every = _scan(data)
    if depth > MAX_DEPTH:
        raise FeedError(f"elements nested more than {MAX_DEPTH} deep", _HINT)
    if attributes > MAX_ATTRIBUTES:
        raise FeedError(f"a tag with more than {MAX_ATTRIBUTES} attributes", _HINT)
    if every > MAX_ALL_ATTRIBUTES:
        raise FeedError(f"too many attributes ({every:,}; a feed may have {MAX_ALL_ATTRIBUTES:,})", _HINT)


def check_json(data: bytes) -> None:
    """Raise FeedError when `data` holds more than MAX_JSON_CONTAINERS objects and arrays (counting "{" and "[",
    inside strings too: the count only errs high)."""
    containers = data.count(b"{") + data.count(b"[")
    if containers > MAX_JSON_CONTAINERS:
        raise FeedError(f"too many JSON objects and arrays ({containers:,}; a feed may have {MAX_JSON_CONTAINERS:,})", _HINT)


def _depth_bound(data: bytes) -> int:
    """An upper bound of the nesting depth, from counts per piece (each piece ends just after a ">", so no "</" is
    cut): the depth at the start of a piece plus the tags it opens. Self-closing tags count as opened and never
    closed ("/>" may also sit inside an attribute's value): the bound only ever errs high."""
    bound = depth = start = 0
    end = len(data)
    while start < end:
        stop = data.find(b">", min(start + _CHUNK, end) - 1) + 1 or end
        closes = data.count(b"</", start, stop)
        opens = data.count(b"<", start, stop) - closes - data.count(b"<!", start, stop) - data.count(b"<?", start, stop)
        bound = max(bound, depth + opens)
        depth = max(0, depth + opens - closes)
        start = stop
    return bound


_TAG_STOP = re.compile(rb"[\"'>]")
_QUOTED = {b'"': re.compile(rb'[^"<]*+'), b"'": re.compile(rb"[^'<]*+")}  # a value ends at its quote, or at a "<"


def _tag_end(data: bytes, start: int) -> tuple[int, int]:
    """(index of the ">" that ends the tag opened before `start`, its attributes), past quoted values (which may hold
    ">", "/>" and "="). A value that meets a "<" before its quote ends the (broken) tag there; the index is -1 when
    the document ends first. Each byte is looked at once."""
    attributes = 0
    while (stop := _TAG_STOP.search(data, start)) is not None:
        attributes += data.count(b"=", start, stop.start())
        quote = stop.group()
        if quote == b">":
            return stop.start(), attributes
        value = _QUOTED[quote].match(data, stop.end())
        assert value is not None  # the patterns match the empty string
        end = value.end()
        if end >= len(data):
            break
        if data[end:end + 1] == b"<":
            return end - 1, attributes
        start = end + 1
    return -1, attributes


def _scan(data: bytes) -> tuple[int, int, int]:
    """(nesting depth, most "=" in one tag, "=" in all tags), tag by tag (comments and CDATA skipped), stopping as
    soon as one passes its limit."""
    depth = deepest = most = every = pos = 0
    find = data.find
    while (lt := find(b"<", pos)) >= 0:
        if data.startswith(b"<!--", lt):
            closed = find(b"-->", lt + 4)
            pos = closed + 3 if closed >= 0 else len(data)
            continue
        if data.startswith(b"<![CDATA[", lt):
            closed = find(b"]]>", lt + 9)
            pos = closed + 3 if closed >= 0 else len(data)
            continue
        kind = data[lt + 1:lt + 2]
        if kind in (b"/", b"!", b"?"):
            gt, attributes = find(b">", lt + 1), 0
        else:
            gt, attributes = _tag_end(data, lt + 1)
        most = max(most, attributes)
        every += attributes
        if gt < 0 or most > MAX_ATTRIBUTES or every > MAX_ALL_ATTRIBUTES:
            break
        if kind == b"/":
            depth = max(0, depth - 1)
        elif kind not in (b"!", b"?"):
            if data[gt - 1:gt] != b"/":
                depth += 1
                deepest = max(deepest, depth)
                if deepest > MAX_DEPTH:
                    break
        pos = gt + 1  # every "<" before this ">" belonged to the tag
    return deepest, most, every
