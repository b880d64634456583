"""Hypothesis strategies for hostile source documents, and the check of one fuzz case through parse and store.

Shared by tests/test_fuzz.py (a fixed seed and a bounded count, in CI) and benchmarks/fuzz.py (longer runs that
count cases per second). Documents: RSS 2.0, Atom, arXiv listings (RSS) and API answers (Atom), Hugging Face daily
JSON and JSON Lines, with wrong types, huge integers, far dates, deep nesting, long fields, invalid UTF-8, markup
and entity tricks (billion-laughs style declarations, character references to NUL and surrogates).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any
from xml.sax.saxutils import escape

import sqlalchemy as sa
from hypothesis import strategies as st

from digest.errors import DigestError
from digest.models import Paper, PaperSource, Source
from digest.sources import ParsedPaper
from digest.sources.check import EARLIEST, LATEST, MAX_INT, UNEXPECTED, check_paper
from digest.sources.parse import parse_file, parse_source

NOW = datetime(2026, 8, 13, 21, 0, tzinfo=timezone.utc)
FETCHED_KINDS = ("feed", "arxiv-rss", "arxiv-api", "hf-daily")

# --- values --------------------------------------------------------------------------------------------

TOKENS = [
    "<script", "<script>", "</script>", "<style>", "<!--", "-->", "<a ", "<b>", "</p>", "<", ">", "&", "&lt;", "&amp;",
    "&#0;", "&#xD800;", "&#1114112;", "&nbsp;", "&undefined;", "]]>", "<![CDATA[", "(arXiv:", "arXiv:", "arxiv.org/abs/",
    "oai:arXiv.org:", "10.1234/", "10.48550/arXiv.", "2401.12345", "v", "9", ")", "(", ",", ";", " and ", " ", "\t", "\n",
    "\\'", "\\u{g}", "{", "}", "Ã¼", "ü", "\u2028", "\x00", "\x07", "\ufeff", "onclick=", '"', "'", "javascript:", "?", "#",
    "[cs.LG]", " UPDATED)", " updates on arXiv.org", "Announce Type: new", "Abstract:", "<b>Authors:</b>",
    "<b>Upvotes:</b>", "<b>Summary:</b>",
]
SPECIALS = [
    "9999-12-31T23:59:59-01:00", "0001-01-01", "2999-06-01T00:00:00Z", "1899-12-31", "Fri, 31 Dec 9999 23:59:59 -0100",
    "not a date", "", " ", "-1", "1" * 30, "9" * 5000, "1e400", "NaN", "\x00", "\ud800", "\udfff\ud800",
    "https://arxiv.org/abs/2401.12345v" + "9" * 30, "arXiv:2401.12345v" + "7" * 5000, "10.1234/" + ")" * 300,
    "https://doi.org/10.5555/" + "d" * 400, "https://example.org/" + "a" * 700, "2401.12345", "hep-th/9711200v2",
    "https://huggingface.co/papers/2401.12345", "<script>alert(1)</script>", "javascript:alert(1)",
]


def _repeated(pair: tuple[str, int]) -> str:
    return pair[0] * pair[1]


surrogate_text = st.text(st.characters(exclude_categories=()), max_size=12)  # lone surrogates included
text = st.one_of(
    st.text(max_size=30),
    st.sampled_from(SPECIALS),
    st.tuples(st.sampled_from(TOKENS), st.integers(1, 3000)).map(_repeated),
    st.lists(st.one_of(st.sampled_from(SPECIALS), st.sampled_from(TOKENS), st.text(max_size=6), surrogate_text), max_size=8).map("".join),
)
integers = st.one_of(st.integers(-5, 5000), st.integers(-(10**30), 10**30), st.sampled_from([2**31 - 1, 2**31, 2**63, -(2**63) - 1]))
json_leaf = st.one_of(st.none(), st.booleans(), integers, st.floats(), text)
json_any = st.recursive(json_leaf, lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                        max_leaves=8)
arxiv_ids = st.one_of(st.sampled_from(["2401.12345", "2401.54321", "1706.03762", "hep-th/9711200", "math.GT/0309136"]),
                      st.integers(1, 99_999).map(lambda n: f"24{n % 12 + 1:02d}.{n:05d}"))
versions = st.one_of(st.integers(1, 9).map(str), st.sampled_from(["0", "1" * 20, "9" * 5000, ""]))


def hostile(proper: st.SearchStrategy) -> st.SearchStrategy:
    """Mostly a proper value, sometimes any JSON value at all (a wrong type)."""
    return st.one_of(proper, proper, json_any)


# --- documents -----------------------------------------------------------------------------------------


@dataclass
class Case:
    """One fuzz case: what kind of source serves it, its bytes and a file name for `digest import`."""

    kind: str  # feed, arxiv-rss, arxiv-api, hf-daily, jsonl
    data: bytes
    name: str

    def describe(self) -> str:
        head = self.data[:300].decode("utf-8", "backslashreplace")
        return f"{self.kind} {self.name} ({len(self.data):,} bytes): {head}"


def _encode(document: str, mutation: tuple[str, int]) -> bytes:
    data = document.encode("utf-8", "surrogatepass")  # a lone surrogate becomes bytes that are not UTF-8
    how, where = mutation
    where = where % (len(data) + 1)
    if how == "truncate":
        return data[:where]
    if how == "garbage":
        return data[:where] + b"\xff\xfe\xc3\x28\x00" + data[where:]
    if how == "deep":
        return data[:where] + b"[" * 5000 + b"<x>" * 3000 + data[where:]
    return data


mutations = st.tuples(st.sampled_from(["none", "none", "none", "truncate", "garbage", "deep"]), st.integers(0, 10**9))


@st.composite
def hf_documents(draw) -> Case:
    items = []
    for _ in range(draw(st.integers(1, 4))):
        paper = {
            "id": draw(hostile(arxiv_ids)), "title": draw(hostile(text)), "summary": draw(hostile(text)),
            "authors": draw(hostile(st.lists(st.one_of(st.fixed_dictionaries({"name": text}), text), max_size=4))),
            "upvotes": draw(hostile(integers)), "publishedAt": draw(hostile(st.one_of(st.sampled_from(SPECIALS), text))),
            "ai_summary": draw(hostile(text)), "githubRepo": draw(hostile(text)),
        }
        paper = {k: v for k, v in paper.items() if draw(st.integers(0, 9))}  # now and then a field is missing
        shape = draw(st.sampled_from(["wrapped", "bare", "wrapped-with-item-fields", "garbage"]))
        if shape == "wrapped":
            items.append({"paper": paper})
        elif shape == "bare":
            items.append(paper)
        elif shape == "wrapped-with-item-fields":
            items.append({"paper": paper, "title": draw(hostile(text)), "summary": draw(hostile(text)), "publishedAt": draw(hostile(text))})
        else:
            items.append(draw(json_any))
    document = items[0] if len(items) == 1 and draw(st.booleans()) else items
    text_json = json.dumps(document, ensure_ascii=draw(st.booleans()))
    return Case("hf-daily", _encode(text_json, draw(mutations)), "papers.json")


@st.composite
def jsonl_documents(draw) -> Case:
    lines = []
    for _ in range(draw(st.integers(1, 6))):
        record = {
            "id": draw(hostile(st.one_of(arxiv_ids, st.text(max_size=10), st.integers()))), "title": draw(hostile(text)),
            "abstract": draw(hostile(text)), "authors": draw(hostile(st.one_of(text, st.lists(text, max_size=4)))),
            "url": draw(hostile(st.one_of(st.sampled_from(SPECIALS), text))), "published": draw(hostile(text)),
            "categories": draw(hostile(st.one_of(text, st.lists(text, max_size=3)))), "doi": draw(hostile(text)),
            "upvotes": draw(hostile(st.one_of(integers, integers.map(str)))),
        }
        record = {k: v for k, v in record.items() if k in ("id", "title", "abstract") or draw(st.booleans())}
        line = json.dumps(record, ensure_ascii=draw(st.booleans())) if draw(st.integers(0, 7)) else draw(st.text(max_size=20))
        lines.append(line)
    return Case("jsonl", _encode("\n".join(lines), draw(mutations)), "papers.jsonl")


def _xml_value(draw, value: str) -> str:
    """A field's value as it appears in the XML: escaped, in CDATA, or raw (which may break the document)."""
    how = draw(st.sampled_from(["escaped", "escaped", "cdata", "raw"]))
    if how == "escaped":
        return escape(value)
    if how == "cdata":
        return "<![CDATA[" + value.replace("]]>", "]]]]><![CDATA[>") + "]]>"
    return value


def _doctype(draw) -> tuple[str, str]:
    """A DOCTYPE with entities (nested, billion-laughs style, or with a long value) and a reference to use, or none."""
    how = draw(st.sampled_from(["none", "none", "laughs", "long", "external"]))
    if how == "laughs":
        levels = "".join(f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, draw(st.integers(2, 6))))
        top = levels.count("<!ENTITY")
        return f'<!DOCTYPE rss [<!ENTITY l0 "lol">{levels}]>\n', f"&l{top};"
    if how == "long":
        return f'<!DOCTYPE rss [\n<!ENTITY big "{"x" * draw(st.integers(1, 50_000))}">\n]>\n', "&big;" * draw(st.integers(1, 50))
    if how == "external":
        return '<!DOCTYPE rss [\n<!ENTITY ext SYSTEM "file:///etc/passwd">\n]>\n', "&ext;"
    return "", ""


@st.composite
def rss_documents(draw, listing: bool = False) -> Case:
    doctype, reference = _doctype(draw)
    value = lambda strategy=text: _xml_value(draw, draw(strategy))  # noqa: E731
    items = []
    for _ in range(draw(st.integers(1, 4))):
        arxiv_id, version = draw(arxiv_ids), draw(versions)
        fields = [
            f"<title>{value()}{reference if draw(st.booleans()) else ''}</title>",
            f"<link>{value(st.one_of(st.just(f'https://arxiv.org/abs/{arxiv_id}'), st.sampled_from(SPECIALS), text))}</link>",
            f"<description>{value()}</description>",
            f"<guid>{value(st.one_of(st.just(f'oai:arXiv.org:{arxiv_id}v{version}'), text))}</guid>",
            f"<pubDate>{value(st.one_of(st.sampled_from(SPECIALS), text))}</pubDate>",
            f"<dc:creator>{value()}</dc:creator>", f"<category>{value()}</category>",
            f"<prism:doi>{value(st.one_of(st.sampled_from(SPECIALS), text))}</prism:doi>",
        ]
        if listing:
            fields.append(f"<arxiv:announce_type>{value(st.one_of(st.sampled_from(['new', 'cross', 'replace', 'replace-cross']), text))}</arxiv:announce_type>")
            fields[0] = f"<title>{value()} (arXiv:{arxiv_id}v{version} [{value()}]{draw(st.sampled_from(['', ' UPDATED', ' CROSS LISTED']))})</title>"
        items.append("<item>" + "".join(f for f in fields if draw(st.integers(0, 5))) + "</item>")
    title = "cs.LG updates on arXiv.org" if listing else draw(text)
    document = (f'<?xml version="1.0" encoding="UTF-8"?>\n{doctype}<rss version="2.0" xmlns:dc="http://purl.org/dc/elements/1.1/" '
                f'xmlns:arxiv="http://arxiv.org/schemas/atom" xmlns:prism="http://prismstandard.org/namespaces/basic/2.0/">'
                f"<channel><title>{_xml_value(draw, title)}</title><link>https://example.org/</link>{''.join(items)}</channel></rss>")
    return Case("arxiv-rss" if listing else "feed", _encode(document, draw(mutations)), "feed.xml")


@st.composite
def atom_documents(draw, api: bool = False) -> Case:
    doctype, reference = _doctype(draw)
    value = lambda strategy=text: _xml_value(draw, draw(strategy))  # noqa: E731
    entries = []
    for _ in range(draw(st.integers(1, 4))):
        arxiv_id, version = draw(arxiv_ids), draw(versions)
        fields = [
            f"<id>{value(st.one_of(st.just(f'http://arxiv.org/abs/{arxiv_id}v{version}'), text))}</id>",
            f"<title>{value()}{reference if draw(st.booleans()) else ''}</title>", f"<summary>{value()}</summary>",
            f"<published>{value(st.one_of(st.sampled_from(SPECIALS), text))}</published>",
            f"<updated>{value(st.one_of(st.sampled_from(SPECIALS), text))}</updated>",
            f"<author><name>{value()}</name></author>" * draw(st.integers(0, 3)),
            f'<link href="{escape(draw(text), {chr(34): "&quot;"})}" rel="alternate"/>',
            f'<category term="{escape(draw(text), {chr(34): "&quot;"})}"/>',
            f'<content type="xhtml"><div xmlns="http://www.w3.org/1999/xhtml">{value()}</div></content>',
        ]
        if api:
            fields += [f'<arxiv:primary_category term="{escape(draw(text), {chr(34): "&quot;"})}"/>',
                       f"<arxiv:doi>{value(st.one_of(st.sampled_from(SPECIALS), text))}</arxiv:doi>",
                       f'<link title="doi" href="{escape(draw(st.sampled_from(SPECIALS)), {chr(34): "&quot;"})}"/>']
        entries.append("<entry>" + "".join(f for f in fields if draw(st.integers(0, 5))) + "</entry>")
    head = ("<id>https://arxiv.org/api/query</id><title>arXiv Query: search_query=all:x</title>"
            f"<opensearch:totalResults>{value(st.one_of(integers.map(str), text))}</opensearch:totalResults>" if api
            else f"<id>urn:x</id><title>{value()}</title>")
    document = (f'<?xml version="1.0" encoding="UTF-8"?>\n{doctype.replace("rss", "feed", 1)}<feed xmlns="http://www.w3.org/2005/Atom" '
                f'xmlns:opensearch="http://a9.com/-/spec/opensearch/1.1/" xmlns:arxiv="http://arxiv.org/schemas/atom">'
                f"{head}{''.join(entries)}</feed>")
    return Case("arxiv-api" if api else "feed", _encode(document, draw(mutations)), "feed.xml")


DOCUMENTS = {
    "rss": rss_documents(),
    "atom": atom_documents(),
    "arxiv-listing": rss_documents(listing=True),
    "arxiv-api": atom_documents(api=True),
    "hf-daily": hf_documents(),
    "jsonl": jsonl_documents(),
}


# --- the checks ----------------------------------------------------------------------------------------

# How digest reports an exception it did not expect ("unexpected RecursionError: ..."): a bug the fuzz has found.
# Not any "unexpected": a refusal may quote the JSON decoder ("unexpected end of data").
_BUG = re.compile(rf"\b{UNEXPECTED} [A-Z]\w*: ")


def is_bug(message: str) -> bool:
    return _BUG.search(message) is not None


def parse_problems(case: Case) -> list[str]:
    """What is wrong with parsing `case`: an exception other than DigestError escaping, a warning that says the
    parser tripped on an entry, or a paper the record check would still change."""
    problems = []
    for label, parse in (("parse_file", lambda: parse_file(case.data, case.name)),
                         ("parse_source", lambda: parse_source("jsonl" if case.kind == "jsonl" else case.kind, case.data))):
        try:
            result = parse()
        except DigestError:
            continue
        except Exception as exc:  # noqa: BLE001 - what the fuzz looks for
            problems.append(f"{label} raised {type(exc).__name__}: {exc}"[:300])
            continue
        problems += [f"{label}: {w}"[:300] for w in result.warnings if is_bug(w)]
        problems += [f"{label}: {p}" for paper in result.papers for p in paper_problems(paper)]
    return problems


def paper_problems(paper: ParsedPaper) -> list[str]:
    """The record check's complaints about a paper already checked (none expected), and values out of range."""
    copy = ParsedPaper(**asdict(paper))
    try:
        problems = check_paper(copy)
    except ValueError as exc:
        return [f"{paper.key!r}: refused by a second check: {exc}"]
    if copy != paper:
        problems.append("the record check changed it again")
    return [f"{paper.key[:60]!r}: {p}" for p in problems]


def row_problems(row: dict[str, Any]) -> list[str]:
    """Values a stored row must never hold (the validation rules, read back from the database)."""
    problems = []
    for column in ("version", "upvotes"):
        value = row[column]
        if value is not None and not 0 <= value <= MAX_INT:
            problems.append(f"{column} {value} out of range")
    for column in ("published", "updated"):
        value = row[column]
        if value is not None and not EARLIEST <= value < LATEST:
            problems.append(f"{column} {value} out of range")
    for column in ("key", "ident", "title", "abstract", "doi", "url", "arxiv_id", "ai_summary"):
        value = row[column]
        if isinstance(value, str) and ("\x00" in value or any("\ud800" <= c <= "\udfff" for c in value)):
            problems.append(f"{column} holds NUL or a surrogate")
    if not row["title"] or not row["key"] or len(row["key"]) > 512:
        problems.append("no title, or no usable key")
    return [f"row {row['key'][:60]!r}: {p}" for p in problems]


def snapshot(engine) -> list[tuple]:
    """Every paper row and link, in a stable order: what a failed fetch must leave exactly as it was."""
    with engine.connect() as conn:
        papers = [tuple(r) for r in conn.execute(sa.select(Paper.__table__).order_by(Paper.__table__.c.id))]
        links = [tuple(r) for r in conn.execute(sa.select(PaperSource.__table__).order_by(PaperSource.__table__.c.id))]
    return papers + links


def stored_problems(engine, source_name: str) -> list[str]:
    """The rows a source carries, checked against the validation rules."""
    paper, link, source = Paper.__table__, PaperSource.__table__, Source.__table__
    query = sa.select(paper).join(link, link.c.paper_id == paper.c.id).join(source, source.c.id == link.c.source_id).where(source.c.name == source_name)
    with engine.connect() as conn:
        return [p for row in conn.execute(query).mappings() for p in row_problems(dict(row))]
