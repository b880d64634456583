"""The record check at the parse boundary (digest.sources.check), through every parser: each hostile value of issue 9
is dropped, cut or refused with a warning naming the entry, never raised, and what comes out fits the paper table."""

from __future__ import annotations

import json
from copy import deepcopy
from datetime import datetime, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from digest.errors import FeedError
from digest.sources import ParsedPaper, check
from digest.sources.check import MAX_AUTHORS, MAX_INT, MAX_TITLE, check_paper
from digest.sources.clean import MAX_KEY, paper_key
from digest.sources.parse import parse_file, parse_source

UTC = timezone.utc
FAR_DATE = "9999-12-31T23:59:59-01:00"  # year 10000 once in UTC
DEEP = "[" * 100_000 + "]" * 100_000


def jsonl(**fields) -> bytes:
    """Two JSON Lines: a record with `fields` over a plain one, then a plain second record."""
    record = {"id": "r1", "title": "First paper", "abstract": "About the first.", **fields}
    other = {"id": "r2", "title": "Second paper", "abstract": "About the second."}
    return (json.dumps(record) + "\n" + json.dumps(other) + "\n").encode()


def hf(**fields) -> bytes:
    """A Hugging Face daily list: an item whose paper has `fields` over a plain one, then a plain item."""
    paper = {"id": "2401.12345", "title": "First paper", "summary": "About the first.", "upvotes": 3,
             "authors": [{"name": "Ana Garcia"}], "publishedAt": "2024-01-12T00:00:00.000Z", **fields}
    other = {"id": "2401.54321", "title": "Second paper", "summary": "About the second.", "upvotes": 1}
    return json.dumps([{"paper": paper}, {"paper": other}]).encode()


def rss(item: str, channel_title: str = "A journal") -> bytes:
    return (f'<?xml version="1.0"?><rss version="2.0" xmlns:prism="http://prismstandard.org/namespaces/basic/2.0/">'
            f"<channel><title>{channel_title}</title><link>https://example.org/</link>"
            f"<item>{item}</item><item><title>Second paper</title><link>https://example.org/p/2</link></item>"
            f"</channel></rss>").encode()


def api(entry_id: str) -> bytes:
    return ('<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom" xmlns:opensearch="http://a9.com/-/spec/opensearch/1.1/">'
            "<id>https://arxiv.org/api/x</id><title>arXiv Query: search_query=all:x</title>"
            "<opensearch:totalResults>2</opensearch:totalResults>"
            f"<entry><id>{entry_id}</id><title>First paper</title><summary>About it.</summary></entry>"
            "<entry><id>http://arxiv.org/abs/2401.54321v1</id><title>Second paper</title><summary>About it.</summary></entry>"
            "</feed>").encode()


def parse(kind: str, data: bytes):
    if kind == "jsonl":
        return parse_file(data, "papers.jsonl")
    return parse_source(kind, data)


# (parser, document, field of the first paper, value expected there, words of the warning)
DROPPED = [
    pytest.param("jsonl", jsonl(upvotes=10**30), "upvotes", None, "upvotes a number of more than 12 digits is out of range", id="jsonl-upvotes-1e30"),
    pytest.param("jsonl", jsonl(upvotes="9" * 5000), "upvotes", None, "upvotes a number of more than 12 digits", id="jsonl-upvotes-5000-digit-text"),
    pytest.param("hf-daily", hf(upvotes=10**30), "upvotes", None, "upvotes a number of more than 12 digits is out of range", id="hf-upvotes-1e30"),
    pytest.param("hf-daily", hf(upvotes=-4), "upvotes", None, "upvotes -4 is out of range", id="hf-upvotes-negative"),
    pytest.param("jsonl", jsonl(url="https://arxiv.org/abs/2401.12345v" + "9" * 20), "version", None,
                 "version a number of more than 12 digits is out of range", id="jsonl-version-20-digits"),
    pytest.param("jsonl", jsonl(id="arXiv:2401.12345v" + "7" * 5000), "version", None, "version", id="jsonl-version-5000-digits"),
    pytest.param("feed", rss("<title>First paper</title><link>https://arxiv.org/abs/2401.12345v" + "9" * 5000 + "</link>"),
                 "version", None, "version", id="rss-version-5000-digits"),
    pytest.param("arxiv-api", api("http://arxiv.org/abs/2401.12345v" + "1" * 20), "version", None, "version", id="api-version-20-digits"),
    pytest.param("arxiv-rss", rss("<title>First paper (arXiv:2401.12345v" + "3" * 30 + " [cs.LG] UPDATED)</title>"
                                  "<link>https://arxiv.org/abs/2401.12345</link>", channel_title="cs.LG updates on arXiv.org"),
                 "version", None, "version", id="rdf-title-version-30-digits"),
    pytest.param("jsonl", jsonl(published=FAR_DATE), "published", None, "date out of range", id="jsonl-published-year-10000"),
    pytest.param("hf-daily", hf(publishedAt=FAR_DATE), "published", None, "date out of range", id="hf-published-year-10000"),
    pytest.param("jsonl", jsonl(published="0001-01-01"), "published", None, "publication date 0001-01-01 is out of range", id="jsonl-published-year-1"),
    pytest.param("jsonl", jsonl(published="2999-06-01T00:00:00Z"), "published", None, "publication date 2999-06-01 is out of range",
                 id="jsonl-published-year-2999"),
    pytest.param("feed", rss("<title>First paper</title><pubDate>Fri, 31 Dec 9999 23:59:59 -0100</pubDate>"), "published", None, None,
                 id="rss-pubdate-year-10000"),  # feedparser leaves out a date it cannot read: no warning to give
    pytest.param("hf-daily", hf(authors=5), "authors", [], "'authors' is not a list", id="hf-authors-number"),
    pytest.param("hf-daily", hf(ai_summary=5), "ai_summary", None, "'ai_summary' is not text", id="hf-ai-summary-number"),
    pytest.param("hf-daily", hf(summary={"text": "x"}), "abstract", "", "'summary' is not text", id="hf-summary-object"),
    pytest.param("hf-daily", hf(githubRepo=["x"]), "github_repo", None, "'githubRepo' is not text", id="hf-github-list"),
    pytest.param("feed", rss("<title>First paper</title><description>&lt;b&gt;Upvotes:&lt;/b&gt; " + "9" * 40
                             + " &lt;b&gt;Summary:&lt;/b&gt; About it.</description>"), "upvotes", None, "upvotes", id="hf-mirror-upvotes-40-digits"),
    pytest.param("jsonl", jsonl(doi="10.1234/" + "x" * 2000), "doi", None, "DOI longer than 1,000 characters, dropped", id="jsonl-doi-2000"),
    pytest.param("jsonl", jsonl(url="https://example.org/" + "x" * 10_000), "url", None, "link longer than 8,192 characters, dropped",
                 id="jsonl-url-10000"),
]


@pytest.mark.parametrize(("kind", "data", "field", "expected", "warning"), DROPPED)
def test_parse_drops_a_value_out_of_range_with_a_warning(kind, data, field, expected, warning):
    result = parse(kind, data)
    assert [p.title for p in result.papers] == ["First paper", "Second paper"]  # the record and the next one kept
    assert getattr(result.papers[0], field) == expected
    assert warning is None or any(warning in w for w in result.warnings), result.warnings
    assert not any("unexpected" in w for w in result.warnings)


@pytest.mark.parametrize(("kind", "data", "warning"), [
    pytest.param("hf-daily", hf(title=["x"]), "item 1: 'title' is not text, skipped", id="hf-title-list"),
    pytest.param("hf-daily", hf(title={"a": 1}), "item 1: 'title' is not text, skipped", id="hf-title-object"),
    pytest.param("jsonl", jsonl(title=["x"]), "line 1: 'title' is not a string, skipped", id="jsonl-title-list"),
    pytest.param("jsonl", jsonl(authors="DEEP").replace(b'"DEEP"', DEEP.encode()), "line 1: JSON nested too deeply",
                 id="jsonl-nested-100000"),
])
def test_parse_refuses_a_record_without_a_usable_title_and_keeps_the_rest(kind, data, warning):
    result = parse(kind, data)
    assert [p.title for p in result.papers] == ["Second paper"]
    assert warning in result.warnings and result.skipped == 1


@pytest.mark.parametrize("data,name", [
    pytest.param(DEEP.encode(), "papers.json", id="list-100000-deep"),
    pytest.param(b'{"paper": ' * 100_000 + b"{}" + b"}" * 100_000, "papers.json", id="object-100000-deep"),
])
def test_parse_file_refuses_json_nested_too_deeply_in_one_line(data, name):
    with pytest.raises(FeedError, match="nested too deeply"):
        parse_file(data, name)
    with pytest.raises(FeedError, match="nested too deeply"):
        parse_source("hf-daily", data)


def test_parse_cuts_long_text_and_bounds_lists():
    names = [f"Author {i}" for i in range(MAX_AUTHORS + 10)]
    result = parse("jsonl", jsonl(title="Long " * 1_000_000, authors=names + ["x" * 301]))
    first = result.papers[0]
    assert len(first.title) == MAX_TITLE and first.title.endswith("…")
    assert first.authors == names[:MAX_AUTHORS]
    assert {"line 1: title longer than 2,000 characters, cut", "line 1: 5,010 authors, only the first 5,000 kept",
            "line 1: 1 authors dropped (empty, not text, or longer than 300 characters)"} <= set(result.warnings)
    assert len(first.key) <= MAX_KEY


def test_parse_removes_what_no_database_stores():
    result = parse("jsonl", jsonl(id="r\x001", title="Caf\ud800 paper", doi="10.1234/a\x00b", categories=["cs.LG\udfff"]))
    first = result.papers[0]
    assert (first.ident, first.title, first.doi, first.categories) == ("r1", "Caf\ufffd paper", "10.1234/ab", ["cs.LG\ufffd"])
    assert "\x00" not in first.key


def test_parse_keeps_long_real_identifiers():
    """The PostgreSQL cases of the issue: a 671-character link without a guid, a 308-character DOI."""
    link = "https://example.org/" + "a" * 651
    doi = "10.1234/" + "d" * 300
    result = parse("feed", rss(f"<title>First paper</title><link>{link}</link><prism:doi>{doi}</prism:doi>"))
    first = result.papers[0]
    assert (first.url, first.ident, first.item_id, first.doi, first.key) == (link, doi, link, doi, f"doi:{doi}")
    assert result.warnings == []


def test_paper_key_hashes_only_keys_too_long_for_an_index():
    assert paper_key(None, "10.1/x", "T") == "doi:10.1/x"
    doi = "10.1234/" + "d" * 504  # "doi:" + 512 characters
    key = paper_key(None, doi, "T")
    assert len(key) == MAX_KEY and key.startswith("doi:10.1234/ddd") and key == paper_key(None, doi, "T")
    assert paper_key(None, doi + "e", "T") != key  # same start, another DOI: another key
    assert paper_key(None, doi[:-4], "T") == f"doi:{doi[:-4]}"  # exactly 512 characters: unchanged
    assert len(paper_key(None, None, "ü" * 5000)) <= MAX_KEY


@pytest.mark.parametrize("changes,problem", [
    ({"version": True}, "version is not a whole number, dropped"),
    ({"version": 0}, "version 0 is out of range (1 to 2,147,483,647), dropped"),
    ({"upvotes": MAX_INT + 1}, "upvotes 2,147,483,648 is out of range (0 to 2,147,483,647), dropped"),
    ({"published": datetime(2024, 1, 1)}, "publication date is not a date with a time zone, dropped"),
    ({"updated": datetime(1899, 12, 31, tzinfo=UTC)}, "update date 1899-12-31 is out of range (1900 to 2099), dropped"),
    ({"doi": 5}, "DOI is not text, dropped"),
    ({"authors": "A, B"}, "authors is not a list, dropped"),
    ({"categories": ["cs.LG", 3, ""]}, "2 categories dropped (empty, not text, or longer than 200 characters)"),
    ({"announce_type": "x" * 33}, "announce type longer than 32 characters, dropped"),
    ({"abstract": "a" * 50_001}, "abstract longer than 50,000 characters, cut"),
])
def test_check_paper_drops_or_cuts_what_does_not_fit(changes, problem):
    paper = ParsedPaper(key="title:t", ident="t", title="T", **changes)
    assert check_paper(paper) == [problem]


@pytest.mark.parametrize("changes,message", [
    ({"title": ["x"]}, "title is not text"),
    ({"title": " "}, "empty title"),
    ({"ident": 5}, "identifier is not text"),
    ({"key": ""}, "no usable dedupe key"),
    ({"key": "doi:" + "x" * MAX_KEY}, "no usable dedupe key"),
])
def test_check_paper_refuses_a_record_it_cannot_store(changes, message):
    paper = ParsedPaper(**{"key": "title:t", "ident": "t", "title": "T", **changes})
    with pytest.raises(ValueError, match=message):
        check_paper(paper)


def test_parse_drops_names_that_are_empty_once_cleaned():
    """Found by the fuzz suite: a category of one NUL was kept as "" and changed by a second check."""
    result = parse("feed", rss("<title>First paper</title><category>&#0;</category><category>\x07</category><category>cs.LG</category>"
                               "<dc:creator>\x00</dc:creator>").replace(b"<rss ", b'<rss xmlns:dc="http://purl.org/dc/elements/1.1/" '))
    first = result.papers[0]
    assert first.categories == ["cs.LG"] and first.authors == []
    assert check_paper(ParsedPaper(**vars(first))) == []


@pytest.mark.parametrize("reference", ["&#xD800;", "&#XDFFF;", "&#0;", "&#1114112;", "&#" + "9" * 50 + ";"])
def test_parse_survives_a_character_reference_to_no_character(reference):
    """Found by the fuzz suite: feedparser's lenient parser raised UnicodeEncodeError for "&#xD800;"."""
    data = rss(f"<title>Caf{reference}</title><author><name>{reference}</name></author>")
    result = parse("feed", data.replace(b"</rss>", b"</rss"))  # broken XML: the lenient parser reads it
    assert result.papers[0].title in ("Caf\ufffd", "Caf")


# check_paper's one-pass path for ordinary records (digest.sources.check._ordinary) must agree with the full check on
# any record: same record after, same problems, same refusal. Values drawn near every limit and of every odd type.



_plain = st.text(st.sampled_from(["a", " ", "é", "Z", "1", "-"]), min_size=1, max_size=6).filter(str.strip)
_odd_text = st.sampled_from(["", " ", "\n", "a\tb", "\x00", "a\x1f", "\x7f", "\ud800", "\u2028", "\xad", "é\n"])
_odd_type = st.sampled_from([None, 0, 3, True, ["x"], b"x"])
_limits = {"key": MAX_KEY, "ident": check.MAX_IDENTIFIER, "title": MAX_TITLE, "abstract": check.MAX_ABSTRACT,
           **{field: limit for field, _, limit, _ in check._OPTIONAL_TEXTS}}


def _odd(field: str):
    """A value of `field` the one-pass path must step aside for (or may take: the full check decides)."""
    if field in _limits:
        limit = _limits[field]
        return st.one_of(_odd_text, _odd_type, st.integers(limit - 1, limit + 1).map(lambda n: "a" * n))
    if field in ("authors", "categories"):
        most = check.MAX_AUTHORS if field == "authors" else check.MAX_CATEGORIES
        each = check.MAX_AUTHOR if field == "authors" else check.MAX_CATEGORY
        return st.one_of(_odd_type, st.just("a, b"), st.lists(st.one_of(_odd_text, _odd_type, st.just("a" * (each + 1))), min_size=1, max_size=3),
                         st.just(["a"] * (most + 1)))
    if field in ("version", "upvotes"):
        return st.one_of(st.integers(-2, 0), st.just(MAX_INT), st.just(MAX_INT + 1), st.just(True), st.just("3"), st.just(1.0))
    return st.one_of(st.datetimes(timezones=st.just(UTC)), st.datetimes(), st.just("2024-01-01"))  # published, updated


_valid = {"key": _plain, "ident": _plain, "title": _plain, "abstract": _plain, "authors": st.lists(_plain, max_size=3),
          "categories": st.lists(_plain, max_size=3), "version": st.none() | st.integers(1, 1000), "upvotes": st.none() | st.integers(0, 1000),
          "published": st.none() | st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2099, 12, 31), timezones=st.just(UTC)),
          **{field: st.none() | _plain for field, _, _, _ in check._OPTIONAL_TEXTS}}
_valid["updated"] = _valid["published"]


@settings(max_examples=600, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_check_paper_fast_path_agrees_with_the_full_check(data):
    """A valid record with none, one or two fields made odd: check_paper (the one-pass path when it applies) and the
    full check leave the same record, report the same problems, refuse the same way."""
    odd = data.draw(st.lists(st.sampled_from(sorted(_valid)), max_size=2, unique=True))
    values = {name: data.draw(_odd(name) if name in odd else strategy) for name, strategy in _valid.items()}
    paper = ParsedPaper(**values)
    fast, full = deepcopy(paper), deepcopy(paper)

    def outcome(run, record):
        try:
            return run(record), record
        except ValueError as exc:
            return f"refused: {exc}", None

    assert outcome(check.check_paper, fast) == outcome(check._check_in_full, full)
    ORDINARY.append(check._ordinary(deepcopy(paper)))


ORDINARY: list[bool] = []


def test_check_paper_fast_path_is_taken_and_refused_in_the_property_above():
    if not ORDINARY:
        test_check_paper_fast_path_agrees_with_the_full_check()
    assert 0.05 < sum(ORDINARY) / len(ORDINARY) < 0.95, f"{sum(ORDINARY)} of {len(ORDINARY)} records ordinary"
