"""Tests for the pure parsers (digest.sources.parse and the modules behind it) on real captured feeds.

The captures live in tests/fixtures/real (copied from the shared fixtures; their provenance is in the shared
SOURCES.md). Every count asserted here was read off the files themselves.
"""

from __future__ import annotations

import collections
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from digest.errors import FeedError
from digest.sources.parse import parse_file, parse_source

REAL = Path(__file__).parent / "fixtures" / "real"
UTC = timezone.utc


# The full cs.CL day is also the demo's bundled sample: one copy, in the package.
BUNDLED = {"arxiv-rss/rss-cs.CL-2026-08-13.xml": Path(__file__).parent.parent / "digest" / "data" / "sample-arxiv-cs.CL.xml"}


def read(name: str) -> bytes:
    return BUNDLED.get(name, REAL / name).read_bytes()


def parse(name: str):
    return parse_file(read(name), name)


def by_ident(result) -> dict:
    return {paper.ident: paper for paper in result.papers}


# --- arXiv listings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "counts"),
    [
        pytest.param("arxiv-rss/rss-cs.CL-2026-08-13.xml", {"new": 56, "cross": 36, "replace": 32, "replace-cross": 15},
                     id="rss20-cs.CL-full-day"),
        pytest.param("arxiv-rss/rss-cs.SD-2026-06-12.xml", {"new": 8, "cross": 8, "replace": 5, "replace-cross": 2},
                     id="rss20-cs.SD-full-day"),
        pytest.param("arxiv-rss/rss-cs.LG+cs.AI+cs.CL+stat.ML-2026-09-24-trimmed.xml", {"new": 2, "cross": 1, "replace": 1},
                     id="rss20-combined-categories"),
        pytest.param("arxiv-rss/rss-arxiv-org-atom-cs.AI-2025-08-20-trimmed.xml", {"cross": 5, "new": 2}, id="atom-cs.AI"),
        pytest.param("arxiv-rss/rdf-math-2012-09-12-lanl-mirror.xml", {"new": 48, "cross": 24, "replace": 43, "replace-cross": 11},
                     id="legacy-rdf-math"),
    ],
)
def test_parse_source_arxiv_listing_counts_announce_types(name, counts):
    result = parse_source("arxiv-rss", read(name))
    assert result.kind == "arxiv-rss"
    assert result.warnings == []
    assert dict(collections.Counter(paper.announce_type for paper in result.papers)) == counts
    assert all(paper.key == f"arxiv:{paper.arxiv_id}" and paper.version for paper in result.papers)


@pytest.fixture(scope="module")
def cs_cl():
    """The full cs.CL day, parsed once for the tests that only read it."""
    return parse_source("arxiv-rss", read("arxiv-rss/rss-cs.CL-2026-08-13.xml"))


def test_parse_source_arxiv_rss20_reads_every_field(cs_cl):
    result = cs_cl
    assert result.title == "cs.CL updates on arXiv.org"
    assert len(result.papers) == 139
    papers = by_ident(result)
    first = result.papers[0]
    assert first.ident == "2608.11232"
    assert first.title == "Backtrader-Bench: Benchmarking LLM Agents on Algorithmic Trading with Self-Generated MCQs"
    assert first.abstract.startswith("Evaluating LLM coding agents in algorithmic trading is difficult")
    assert first.authors == ["Ruoxi Zhao", "Maziar Raissi"]
    assert first.categories == ["cs.CL", "cs.AI"]
    assert (first.version, first.announce_type, first.item_id) == (1, "new", "oai:arXiv.org:2608.11232v1")
    assert (first.url, first.pdf_url) == ("https://arxiv.org/abs/2608.11232", "https://arxiv.org/pdf/2608.11232")
    assert first.published == first.updated == datetime(2026, 8, 13, 4, 0, tzinfo=UTC)
    # A replacement keeps its version; its first publication date is not in the listing.
    replaced = papers["2602.04718"]
    assert (replaced.version, replaced.announce_type) == (5, "replace-cross")
    assert replaced.published is None and replaced.updated == datetime(2026, 8, 13, 4, 0, tzinfo=UTC)
    assert {p.ident: p.doi for p in result.papers if p.doi} == {
        "2608.11433": "10.1145/3800935.3830853", "2608.11531": "10.1007/978-3-032-30839-9",
        "2608.11788": "10.18653/v1/2026.findings-eacl.84", "2608.11513": "10.1007/s10664-026-10934-z",
        "2602.13452": "10.59297/vtqcsb52", "2604.02512": "10.63317/4znakjz42poe", "2606.00671": "10.5281/zenodo.21906509",
    }
    assert not any("Announce Type" in p.abstract or p.abstract.startswith("arXiv:") for p in result.papers)
    assert "CT-$\\Delta$Bench" in " ".join(p.title for p in result.papers)  # LaTeX left as written


@pytest.mark.parametrize(
    ("ident", "authors"),
    [
        pytest.param("2608.11332", ["Oğuz Akif Tüfekcioğlu", "Ezgi Ekin", "Mustafa Kaan Çevik", "Hacer Yalim Keles"], id="turkish"),
        pytest.param("2608.11352", ["Tuğçe Kızıltepe", "Hacer Yalim Keles"], id="dotless-i"),
        pytest.param("2602.04718", ["Moritz Miller", "Florent Draye", "Bernhard Schölkopf"], id="umlaut"),
    ],
)
def test_parse_source_arxiv_rss20_converts_tex_names(ident, authors, cs_cl):
    papers = by_ident(cs_cl)
    assert papers[ident].authors == authors
    assert "Bernal Jiménez Gutiérrez" in papers["2608.11338"].authors


def test_parse_source_arxiv_atom_listing_reads_guid_version_and_tex():
    result = parse_source("arxiv-rss", read("arxiv-rss/rss-arxiv-org-atom-cs.AI-2025-08-20-trimmed.xml"))
    first = result.papers[0]
    assert (first.ident, first.version, first.announce_type) == ("2508.13426", 1, "cross")
    assert first.authors == ["Chunhua Liu", "Kabir Manandhar Shrestha", "Sukai Huang"]
    assert first.published == datetime(2025, 8, 20, 4, 0, tzinfo=UTC)
    assert by_ident(result)["2508.13429"].authors == ["Paulo André Lima de Castro"]


def test_parse_source_arxiv_combined_feed_keeps_doi_and_old_ids():
    papers = by_ident(parse_source("arxiv-rss", read("arxiv-rss/rss-cs.LG+cs.AI+cs.CL+stat.ML-2026-09-24-trimmed.xml")))
    cross = papers["2205.06398"]
    assert (cross.version, cross.announce_type, cross.doi) == (2, "cross", "10.1093/bioinformatics/btac431")
    assert cross.categories == ["stat.ME", "stat.AP", "stat.ML"]
    assert (papers["2009.13987"].version, papers["2009.13987"].announce_type) == (3, "replace")


def test_parse_source_legacy_rdf_strips_title_suffix_and_author_links():
    result = parse_source("arxiv-rss", read("arxiv-rss/rdf-math-2012-09-12-lanl-mirror.xml"))
    assert len(result.papers) == 126
    papers = by_ident(result)
    first = papers["1209.2411"]
    assert first.title == "On the first time that an Ito process hits a barrier."
    assert (first.version, first.categories, first.announce_type) == (1, ["math.PR"], "new")
    assert first.authors == ["Gerardo Hernandez-del-Valle"]
    assert first.url == "https://arxiv.org/abs/1209.2411"
    assert first.published == datetime(2012, 9, 13, 1, 30, tzinfo=UTC)  # the channel's dc:date
    assert first.abstract.startswith("This work deals with first hitting time densities")
    assert "$\\mathcal{B}^2$" in first.abstract
    updated = papers["0804.1418"]
    assert (updated.title, updated.version, updated.announce_type) == ("Smooth Yamabe invariant and surgery.", 4, "replace")
    assert papers["1209.2442"].announce_type == "cross"  # cond-mat primary in the math feed
    assert (papers["0901.1155"].announce_type, papers["0901.1155"].published) == ("cross", None)  # CROSS LISTED
    assert papers["1209.2448"].authors == ["Alan Adolphson", "Steven Sperber"]
    for paper in result.papers:
        assert "(arXiv:" not in paper.title and "UPDATED" not in paper.title
        assert not any("<" in name or "href" in name for name in paper.authors)


# --- arXiv API -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "ident", "version", "categories", "doi"),
    [
        pytest.param("arxiv-atom/api-2026-08-idlist-hep-th-9711200.xml", "hep-th/9711200", 3, ["hep-th"],
                     "10.1023/a:1026654312961", id="2026-old-style-hep-th"),
        pytest.param("arxiv-atom/api-2026-04-idlist-oldstyle-astro-ph-0601001.xml", "astro-ph/0601001", 1, ["astro-ph"],
                     None, id="2026-old-style-astro-ph"),
        pytest.param("arxiv-atom/api-2026-08-idlist-1706.03762.xml", "1706.03762", 7, ["cs.CL", "cs.LG"], None,
                     id="2026-new-style"),
        pytest.param("arxiv-atom/api-2016-search-au-del_maestro.xml", "1201.4869", 1, ["cond-mat.mes-hall", "cond-mat.other"],
                     "10.1142/s021797921244002x", id="2016-format"),
    ],
)
def test_parse_source_arxiv_api_reads_ids_categories_and_doi(name, ident, version, categories, doi):
    result = parse_source("arxiv-api", read(name))
    assert result.kind == "arxiv-api"
    paper = result.papers[0]
    assert (paper.ident, paper.key, paper.version) == (ident, f"arxiv:{ident}", version)
    assert (paper.categories, paper.doi) == (categories, doi)
    assert paper.url == f"https://arxiv.org/abs/{ident}" and paper.pdf_url == f"https://arxiv.org/pdf/{ident}"
    assert paper.published.tzinfo == UTC and paper.updated >= paper.published
    assert "\n" not in paper.abstract and not paper.abstract.startswith(" ")


def test_parse_source_arxiv_api_reads_totals_dates_and_authors():
    attention = parse_source("arxiv-api", read("arxiv-atom/api-2026-08-idlist-1706.03762.xml")).papers[0]
    assert attention.title == "Attention Is All You Need"
    assert attention.authors[:3] == ["Ashish Vaswani", "Noam Shazeer", "Niki Parmar"]
    assert attention.published == datetime(2017, 6, 12, 17, 57, 34, tzinfo=UTC)
    assert attention.updated == datetime(2023, 8, 2, 0, 41, 18, tzinfo=UTC)
    maestro = parse_source("arxiv-api", read("arxiv-atom/api-2016-search-au-del_maestro.xml"))
    assert (maestro.total_results, len(maestro.papers)) == (31, 10)
    assert [p.ident for p in maestro.papers if "/" in p.ident] == [
        "cond-mat/0412498", "cond-mat/0603029", "cond-mat/0607501", "cond-mat/0702661"]
    page = parse_source("arxiv-api", read("arxiv-atom/api-2026-04-search-all-testing-page1-start0.xml"))
    assert (page.total_results, len(page.papers), page.papers[0].ident) == (214881, 10, "2202.12139")
    missing = parse_source("arxiv-api", read("arxiv-atom/api-2026-04-idlist-two-ids-one-missing.xml"))
    assert (missing.total_results, [p.ident for p in missing.papers]) == (1, ["1707.08567"])
    assert "Dirk Wübben" in missing.papers[0].authors  # arXiv serves "WÃ¼bben"


@pytest.mark.parametrize(
    "name", ["arxiv-atom/api-2026-04-empty-zero-results.xml", "arxiv-atom/api-2026-08-search-zero-results.xml"],
    ids=["idlist-0000.0000", "search-nothing"],
)
def test_parse_source_arxiv_api_zero_results_is_empty_not_error(name):
    result = parse_source("arxiv-api", read(name))
    assert (result.papers, result.total_results, result.warnings) == ([], 0, [])


@pytest.mark.parametrize(
    ("name", "message"),
    [
        pytest.param("arxiv-atom/api-2026-04-error-http400-malformed-id.xml", "arXiv API error: incorrect id format for abc",
                     id="malformed-id"),
        pytest.param("arxiv-atom/api-2026-08-error-bad-start-param.xml", "arXiv API error: start must be an integer",
                     id="bad-start"),
    ],
)
@pytest.mark.parametrize("kind", ["arxiv-api", "feed", "arxiv-rss", None])
def test_parse_source_arxiv_api_error_entry_raises_never_a_paper(name, message, kind):
    with pytest.raises(FeedError) as caught:
        parse_file(read(name), name) if kind is None else parse_source(kind, read(name))
    assert caught.value.args[0] == message


# --- Hugging Face ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "count", "ident", "upvotes", "with_github", "with_summary"),
    [
        pytest.param("hf-daily/daily_papers-date-2024-05-27-reindented.json", 13, "2405.15738", 32, 0, 0, id="2024-05-oldest"),
        pytest.param("hf-daily/daily_papers-date-2024-10-25-reindented.json", 25, "2410.17243", 39, 0, 0, id="2024-10"),
        pytest.param("hf-daily/daily_papers-date-2025-06-13-reindented.json", 26, "2506.09513", 31, 11, 26, id="2025-06"),
        pytest.param("hf-daily/daily_papers-date-2026-08-21-reindented.json", 17, "2608.19880", 163, 12, 16, id="2026-08"),
        pytest.param("hf-daily/api-papers-2605.15320-detail.json", 1, "2605.15320", 1, 0, 1, id="single-paper-record"),
    ],
)
def test_parse_source_hf_daily_reads_every_shape(name, count, ident, upvotes, with_github, with_summary):
    result = parse_source("hf-daily", read(name))
    assert (result.kind, len(result.papers), result.warnings) == ("hf-daily", count, [])
    first = result.papers[0]
    assert (first.ident, first.key, first.upvotes) == (ident, f"arxiv:{ident}", upvotes)
    assert first.url == f"https://arxiv.org/abs/{ident}"
    assert first.title and len(first.abstract) > 200 and first.authors
    assert first.published.tzinfo == UTC
    assert sum(p.github_repo is not None for p in result.papers) == with_github
    assert sum(p.ai_summary is not None for p in result.papers) == with_summary
    assert all(isinstance(p.upvotes, int) for p in result.papers)


def test_parse_source_hf_daily_2025_fields():
    paper = parse_source("hf-daily", read("hf-daily/daily_papers-date-2025-06-13-reindented.json")).papers[0]
    assert paper.authors[0] == "Yu Sun" and len(paper.authors) == 10
    assert paper.github_repo == "https://github.com/YuSun-Work/ReasonMed"
    assert paper.ai_summary.startswith("ReasonMed, a large medical reasoning dat")
    assert paper.published == datetime(2025, 6, 11, 8, 36, 55, tzinfo=UTC)


def test_parse_source_hf_daily_skips_bad_items_and_refuses_garbage():
    good = json.loads(read("hf-daily/api-papers-2605.15320-detail.json"))
    data = json.dumps([{"paper": {"title": "no id"}}, "text", {"paper": good}]).encode()
    result = parse_source("hf-daily", data)
    assert [p.ident for p in result.papers] == ["2605.15320"]
    assert result.warnings == ["item 1: no paper id, skipped", "item 2: not a JSON object, skipped"]
    with pytest.raises(FeedError, match="^not valid JSON"):
        parse_source("hf-daily", b"{oops")
    with pytest.raises(FeedError, match="^Hugging Face API error: Invalid date"):
        parse_source("hf-daily", b'{"error": "Invalid date"}')
    with pytest.raises(FeedError, match="^no usable paper among 1 items"):
        parse_source("hf-daily", b'[{"paper": {}}]')


@pytest.mark.parametrize(
    ("name", "count", "title", "with_upvotes"),
    [
        pytest.param("hf-daily/huangboming-hf-daily-papers-rss-2026-04-30.xml", 22, "Hugging Face Daily Papers", 22,
                     id="huangboming-feedgen"),
        pytest.param("hf-daily/takara-tldr-hf-papers-rss-2026-04-30.xml", 50, "Takara TLDR - Daily AI Papers", 0, id="takara"),
    ],
)
def test_parse_file_hf_mirror_feeds_key_on_arxiv_id(name, count, title, with_upvotes):
    result = parse(name)
    assert (result.kind, len(result.papers), result.title) == ("rss20", count, title)
    assert all(p.key == f"arxiv:{p.arxiv_id}" for p in result.papers)
    assert sum(p.upvotes is not None for p in result.papers) == with_upvotes
    assert parse_source("hf-daily", read(name)) == result  # an "hf-daily" source pointed at a mirror feed


def test_parse_file_huangboming_reads_authors_upvotes_and_abstract_from_description():
    paper = parse("hf-daily/huangboming-hf-daily-papers-rss-2026-04-30.xml").papers[0]
    assert (paper.ident, paper.title, paper.upvotes) == ("2604.21003", "The Last Harness You'll Ever Build", 1)
    assert paper.authors == ["Haebin Seong", "Li Yin", "Haoran Zhang"]
    assert paper.abstract.startswith("AI agents are increasingly deployed") and "Upvotes" not in paper.abstract


# --- other feeds --------------------------------------------------------------------------------


def test_parse_source_feed_nature_keeps_every_creator_and_doi():
    result = parse_source("feed", read("other-feeds/nature-rss1-current-2024-07-18.xml"))
    assert (result.kind, result.title, len(result.papers)) == ("rss10", "Nature", 75)
    first = result.papers[0]
    assert first.title == "Catalysis of an SN2 pathway by geometric preorganization"
    assert first.authors == ["Gabriel J. Lovinger", "Marcus H. Sak", "Eric N. Jacobsen"]  # entry.author has only the last
    assert (first.key, first.doi) == ("doi:10.1038/s41586-024-07811-4", "10.1038/s41586-024-07811-4")
    assert first.published == datetime(2024, 7, 18, tzinfo=UTC)
    assert sum(len(p.authors) > 1 for p in result.papers) == 38
    assert sum(not p.authors for p in result.papers) == 4
    assert all(p.key.startswith("doi:10.1038/") for p in result.papers)


def test_parse_source_feed_biorxiv_reads_doi_and_last_first_authors():
    paper = parse_source("feed", read("other-feeds/biorxiv-rss1-genomics-2023-12-trimmed.xml")).papers[0]
    assert paper.key == "doi:10.1101/2023.12.16.571984" and paper.arxiv_id is None
    assert paper.url == "http://biorxiv.org/cgi/content/short/2023.12.16.571984v1?rss=1"
    assert len(paper.authors) == 10
    assert (paper.authors[0], paper.authors[-1]) == ("N. LAPALU", "R. J. O'Connell")


def test_parse_source_feed_keys_on_arxiv_link_guid_or_doi():
    feed = b"""<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>
    <item><title>By link</title><link>https://arxiv.org/abs/2401.01234v2</link></item>
    <item><title>By guid</title><guid>oai:arXiv.org:hep-th/9901001v1</guid></item>
    <item><title>By DOI</title><link>https://doi.org/10.48550/arXiv.2402.00001</link></item>
    <item><title>Plain  Title\r\nHere</title><link>https://example.org/a</link></item>
    </channel></rss>"""
    papers = parse_source("feed", feed).papers
    assert [(p.key, p.version) for p in papers] == [
        ("arxiv:2401.01234", 2), ("arxiv:hep-th/9901001", 1), ("arxiv:2402.00001", None), ("title:plain title here", None)]
    assert papers[3].title == "Plain Title Here"


def test_parse_source_feed_says_when_two_entries_are_one_paper_by_their_title():
    # Two items of a lab's feed with their own links and one title: "roundup/2: listed twice" said it was repeated.
    data = (b'<rss version="2.0"><channel><title>Lab</title>'
            b"<item><title>Weekly roundup</title><link>https://lab.example.org/roundup/1</link></item>"
            b"<item><title>Weekly roundup</title><link>https://lab.example.org/roundup/2</link></item>"
            b"<item><title>Weekly roundup</title><link>https://lab.example.org/roundup/1</link></item></channel></rss>")
    result = parse_source("feed", data)
    assert [p.ident for p in result.papers] == ["https://lab.example.org/roundup/1"]
    assert result.warnings == [
        "https://lab.example.org/roundup/2: same title as https://lab.example.org/roundup/1, taken for the same paper; one kept",
        "https://lab.example.org/roundup/1: listed twice, one kept",
    ]


def test_parse_source_feed_dedupes_keys_keeping_highest_version():
    feed = b"""<rss version="2.0"><channel><title>t</title>
    <item><title>A</title><link>https://arxiv.org/abs/2401.01234v1</link></item>
    <item><title>A again</title><link>https://arxiv.org/abs/2401.01234v3</link></item>
    </channel></rss>"""
    result = parse_source("feed", feed)
    assert [(p.title, p.version) for p in result.papers] == [("A again", 3)]
    assert result.warnings == ["2401.01234: listed twice, one kept"]


# --- malformed ----------------------------------------------------------------------------------

MALFORMED = [
    # (file, papers kept or None when refused, text in the warning or in the error)
    ("arxiv-atom-cs.AI-2025-08-20-truncated.xml", 86, "not well-formed XML (no element found at line 1233, column 84)"),
    ("fastfeedparser-rss-double-xml-decl-namespaced-elements.xml", None, "not well-formed XML: not well-formed (invalid token)"),
    ("feed-rs-rss-reuters-server-error-truncated.xml", None, "not well-formed XML: no element found at line 19"),
    ("feedparser-atom-big5-no-encoding-declared.xml", 0, "encoding: document declared as utf-8, but parsed as"),
    ("feedparser-atom03-relative-uri-xml-base.xml", 0, None),
    ("feedparser-atom03-title-script-in-cdata.xml", 1, None),
    ("feedparser-empty-document.xml", None, "not well-formed XML: no element found at line 6"),
    ("feedparser-rss-bom-plus-invalid-utf8.xml", None, "not well-formed XML: unclosed token"),
    ("feedparser-rss-cp1252-smart-quote-undeclared.xml", None, "no usable entry among 1 (entry 1: no title, skipped)"),
    ("feedparser-rss-description-hostile-html.xml", None, "no usable entry among 1 (entry 1: no title, skipped)"),
    ("feedparser-rss-double-encoded-mojibake-entities.xml", None, "no usable entry among 1"),
    ("feedparser-rss-incomplete-cdata.xml", None, "not well-formed XML: XML or text declaration not at start of entity"),
    ("feedparser-rss-unclosed-root-amp-in-link.xml", None, "no usable entry among 1 (entry 1 (http://link/get?a=1&b=2)"),
    ("feedparser-rss-undeclared-namespace-prefix.xml", None, "not well-formed XML: unbound prefix"),
    ("feedparser-rss-undefined-entity-in-title.xml", None, "not well-formed XML: undefined entity"),
    ("feedparser-rss-utf8-linenoise-cdata.xml", None, "no usable entry among 1"),
    ("feedparser-utf16le-bom.xml", 0, None),
    ("miniflux-rss-iso-8859-1-no-declaration-real.xml", 9, "entry 4: no title, skipped"),
    ("miniflux-rss-windows-1251-real.xml", 50, None),
]


def test_malformed_table_covers_every_fixture():
    assert sorted(name for name, _, _ in MALFORMED) == sorted(p.name for p in (REAL / "malformed").iterdir())


@pytest.mark.parametrize(("name", "kept", "problem"), MALFORMED, ids=[name.rsplit(".", 1)[0] for name, _, _ in MALFORMED])
def test_parse_file_malformed_recovers_or_refuses_in_one_line(name, kept, problem):
    data = read(f"malformed/{name}")
    if kept is None:
        with pytest.raises(FeedError) as caught:
            parse_file(data, name)
        message = caught.value.args[0]
        assert problem in message and "\n" not in message
        return
    result = parse_file(data, name)
    assert len(result.papers) == kept
    if problem is None:
        assert result.warnings == []
    else:
        assert any(problem in warning for warning in result.warnings), result.warnings
    for paper in result.papers:
        assert paper.title and "\n" not in paper.title and "\r" not in paper.title


def test_parse_file_truncated_arxiv_atom_keeps_entries_before_the_cut():
    result = parse_file(read("malformed/arxiv-atom-cs.AI-2025-08-20-truncated.xml"))
    assert result.kind == "arxiv-rss"
    assert result.warnings[0] == "the last entry was cut off and is dropped"
    assert dict(collections.Counter(p.announce_type for p in result.papers)) == {"new": 41, "cross": 45}
    assert (result.papers[0].ident, result.papers[-1].ident) == ("2508.13167", "2508.13434")
    assert all(p.abstract and p.authors for p in result.papers)
    assert {"Daniel Fišer", "Jörg Hoffmann"} <= set(by_ident(result)["2508.13876"].authors)


def test_parse_file_real_encodings_are_decoded():
    russian = parse_file(read("malformed/miniflux-rss-windows-1251-real.xml")).papers[0]
    assert russian.title == "Цитата #17703" and russian.key == "title:цитата 17703"
    french = parse_file(read("malformed/miniflux-rss-iso-8859-1-no-declaration-real.xml")).papers[0]
    assert french.title == "Perturbateurs endocriniens : quels effets sur le cerveau ?"
    assert "études" in french.abstract


def test_parse_file_script_in_title_is_removed():
    paper = parse_file(read("malformed/feedparser-atom03-title-script-in-cdata.xml")).papers[0]
    assert paper.title == "safe description"


# The real sentence of 2606.13106 in Hugging Face's daily papers of 2026-06-12, its special tokens stored as
# "The model emits to enter latent mode and to exit." before: the plain-text fields were read as HTML.
SWI = "The model emits <swi> to enter latent mode and </swi> to exit. Findings: (i) <swi> is a sharply localised policy."


@pytest.mark.parametrize("kind,data", [
    pytest.param("hf-daily", json.dumps([{"paper": {"id": "2606.13106", "title": "Demystifying <swi> recurrence",
                                                    "summary": SWI, "ai_summary": "Uses <swi> tokens."}}]).encode(), id="hf-json"),
    pytest.param("arxiv-api", ('<feed xmlns="http://www.w3.org/2005/Atom" xmlns:opensearch="http://a9.com/-/spec/opensearch/1.1/">'
                               "<title>arXiv Query: x</title><id>https://arxiv.org/api/x</id><opensearch:totalResults>1</opensearch:totalResults>"
                               "<entry><id>http://arxiv.org/abs/2606.13106v1</id><title>Demystifying &lt;swi&gt; recurrence</title>"
                               f"<summary>{SWI.replace('<', '&lt;').replace('>', '&gt;')}</summary></entry></feed>").encode(), id="arxiv-api-atom-text"),
    pytest.param("feed", ('<feed xmlns="http://www.w3.org/2005/Atom"><title>Lab</title><entry><id>urn:x:1</id>'
                          '<title type="text">Demystifying &lt;swi&gt; recurrence</title>'
                          f"<summary type=\"text\">{SWI.replace('<', '&lt;').replace('>', '&gt;')}</summary></entry></feed>").encode(), id="atom-text"),
])
def test_parse_source_keeps_a_plain_text_fields_angle_bracket_words(kind, data):
    paper = parse_source(kind, data).papers[0]
    assert paper.title == "Demystifying <swi> recurrence"
    assert paper.abstract == SWI
    if kind == "hf-daily":
        assert paper.ai_summary == "Uses <swi> tokens."


def test_parse_source_still_reads_html_fields_as_html():
    # An RSS title with a real HTML tag (Nature's S<sub>N</sub>2): the tag goes, the token stays; an HTML description
    # is read as HTML, as before (feedparser's sanitiser has already dropped what is not HTML there).
    data = (b'<rss version="2.0"><channel><title>j</title><item><title>An S&lt;sub&gt;N&lt;/sub&gt;2 pathway &lt;think&gt;</title>'
            b"<description>&lt;p&gt;We &lt;i&gt;show&lt;/i&gt; it.&lt;/p&gt;&lt;script&gt;alert(1)&lt;/script&gt;</description></item></channel></rss>")
    paper = parse_source("feed", data).papers[0]
    assert (paper.title, paper.abstract) == ("An SN2 pathway <think>", "We show it.")
    atom = (b'<feed xmlns="http://www.w3.org/2005/Atom"><title>j</title><entry><id>urn:x:1</id><title type="text">T</title>'
            b'<summary type="text">&lt;jats:p&gt;Text &lt;i&gt;in&lt;/i&gt; JATS.&lt;/jats:p&gt; &lt;script&gt;alert(1)&lt;/script&gt;ok</summary></entry></feed>')
    assert parse_source("feed", atom).papers[0].abstract == "Text in JATS. ok"


def test_parse_source_hostile_description_leaves_no_script_or_handler():
    # The real hostile description, given a title so that the entry becomes a paper.
    data = read("malformed/feedparser-rss-description-hostile-html.xml").replace(b"<item>", b"<item><title>t</title>", 1)
    paper = parse_source("feed", data).papers[0]
    assert paper.abstract.startswith("Crazy HTML -- Can Your Regex Parse This?")
    lowered = paper.abstract.lower()
    assert "<script" not in lowered and "onload=" not in lowered and "javascript:" not in lowered
    assert "alert(" not in lowered and "<" not in lowered


def test_parse_source_feed_never_opens_a_path_or_url():
    for data in (b"/etc/passwd", b"https://example.org/feed.xml"):
        with pytest.raises(FeedError):
            parse_source("feed", data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(b"", "empty document", id="empty"),
        pytest.param(b"   \n", "empty document", id="blank"),
        pytest.param(b"<html><body>Service unavailable</body></html>", "an HTML page, not a feed", id="html-page"),
        pytest.param(b'{"items": []}', "JSON, not an RSS or Atom feed", id="json"),
    ],
)
def test_parse_source_feed_refuses_what_is_not_a_feed(data, message):
    with pytest.raises(FeedError, match=message):
        parse_source("feed", data)


RANDOM_BYTES = bytes((i * 7919 + 13) * 104729 % 251 for i in range(100_000))  # fixed noise: 400 "<", an unclosed nest
HTML_PAGE = b"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Lab papers</title>
<link rel="alternate" type="application/rss+xml" title="Papers" href="/papers/feed.xml"></head>
<body><p>Welcome&nbsp;to our papers &mdash; &copy; 2026</p></body></html>
"""


@pytest.mark.parametrize(("kind", "data", "message", "hint"), [
    pytest.param("feed", HTML_PAGE, "an HTML page, not a feed",
                 "is the URL the feed's own address? The page names its feed: https://lab.example.org/papers/feed.xml",
                 id="html-page-naming-its-feed"),
    pytest.param("feed", HTML_PAGE.replace(b"<link", b"<meta"), "an HTML page, not a feed",
                 "is the URL the feed's own address? A site's page links to its RSS or Atom feed: use that link",
                 id="html-page"),
    pytest.param("feed", b'<?xml version="1.0"?>\n<!-- a CMS -->\n<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Strict//EN" "x">'
                 b'<html xmlns="http://www.w3.org/1999/xhtml"><body>Login</body></html>', "an HTML page, not a feed", None, id="xhtml"),
    pytest.param("feed", b"Warning: session_start() in /var/www/index.php on line 3\n<html><body>&nbsp;</body></html>",
                 "an HTML page, not a feed", None, id="html-after-junk"),
    pytest.param("hf-daily", HTML_PAGE, "an HTML page, not a feed", None, id="html-as-hf-daily"),
    pytest.param("feed", RANDOM_BYTES, "binary data, not RSS, Atom or JSON", "check the URL in a browser: it should show the feed itself",
                 id="random-bytes"),
    pytest.param("hf-daily", RANDOM_BYTES, "binary data, not RSS, Atom or JSON", None, id="random-bytes-as-hf-daily"),
    pytest.param("feed", b"\x1f\x8b\x08\x00" + RANDOM_BYTES[:500], "gzip-compressed data, not RSS, Atom or JSON", None, id="gzip"),
    pytest.param("feed", b"404 page not found\n", 'plain text ("404 page not found"), not RSS, Atom or JSON', None, id="plain-text"),
    pytest.param("feed", read("hf-daily/daily_papers-date-2024-05-27-reindented.json"),
                 "Hugging Face daily papers (JSON), not an RSS or Atom feed",
                 "this source needs --kind hf-daily: `digest sources remove` it, then "
                 "`digest sources add https://lab.example.org/papers --kind hf-daily`", id="hf-daily-as-feed"),
    pytest.param("arxiv-rss", read("hf-daily/api-papers-2605.15320-detail.json"),
                 "Hugging Face daily papers (JSON), not an RSS or Atom feed", None, id="hf-paper-as-arxiv-rss"),
    pytest.param("feed", b'{"version": "https://jsonfeed.org/version/1.1", "title": "Blog", "items": []}',
                 "a JSON Feed (jsonfeed.org), not an RSS or Atom feed", None, id="json-feed"),
    pytest.param("feed", read("other-feeds/pubmed-esearch.json"), "JSON, not an RSS or Atom feed",
                 "check the URL in a browser; a source of kind feed reads RSS or Atom, and Hugging Face daily papers need --kind hf-daily",
                 id="other-json"),
])
def test_parse_source_names_what_a_document_that_is_not_a_feed_is(kind, data, message, hint):
    """What the document is, not what a parser tripped on first in it ("undefined entity" in an HTML page, "nested
    more than 256 deep" for random bytes, "got JSON" with a hint saying JSON is fine); the hint never contradicts it."""
    with pytest.raises(FeedError) as caught:
        parse_source(kind, data, source_url="https://lab.example.org/papers")
    assert caught.value.args[0] == message
    if hint is not None:
        assert caught.value.hint == hint
    assert "not valid RSS, Atom or JSON" not in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("junk", [
    pytest.param(b"Warning: session_start() in /var/www/feed.php on line 3\n", id="php-warning"),
    pytest.param(b"\n\n   ", id="blank-lines"),
    pytest.param(b"\xef\xbb\xbf", id="bom"),
])
def test_parse_source_reads_a_feed_after_junk(junk):
    assert len(parse_source("feed", junk + read("arxiv-rss/rss-cs.SD-2026-06-12.xml")).papers) > 0


def test_parse_source_unknown_kind_is_refused():
    with pytest.raises(FeedError, match="unknown source kind 'pwc'"):
        parse_source("pwc", b"[]")


# --- JSON Lines ---------------------------------------------------------------------------------


def test_parse_source_jsonl_reads_the_seed_file():
    result = parse_source("jsonl", read("seed/papers-first-20.jsonl"))
    assert (result.kind, len(result.papers), result.warnings) == ("jsonl", 20, [])
    first = result.papers[0]
    assert first.ident == "s001"
    assert first.title.startswith("LF-Steering: Latent Feature Activation Steering")
    assert first.key == "title:lf steering latent feature activation steering for enhancing semantic consistency in large language models"
    assert "``polysemanticity issue''" in first.abstract


def test_parse_source_jsonl_reads_optional_fields_and_keys_like_other_sources():
    lines = [
        {"id": "2401.01234v2", "title": "<b>Bold</b> &amp; new", "abstract": "A\nB", "authors": "A. One, B. Two",
         "categories": ["cs.LG", "cs.AI"], "published": "2024-01-02", "upvotes": 7},
        {"id": "r2", "title": "By URL", "abstract": "", "url": "https://arxiv.org/abs/hep-th/9901001",
         "authors": [{"name": "C. Three"}, "D. Four"], "categories": "cs.CL stat.ML"},
        {"id": 17, "title": "By DOI", "abstract": "x", "doi": "https://doi.org/10.1038/ABC"},
        {"id": "r4", "title": "Attention Is All You Need", "abstract": "x", "doi": "10.48550/arXiv.1706.03762"},
    ]
    data = "\n".join(json.dumps(line) for line in lines).encode()
    papers = parse_source("jsonl", data).papers
    assert [(p.ident, p.key) for p in papers] == [
        ("2401.01234v2", "arxiv:2401.01234"), ("r2", "arxiv:hep-th/9901001"), ("17", "doi:10.1038/abc"),
        ("r4", "arxiv:1706.03762")]
    first = papers[0]
    assert (first.title, first.abstract, first.version) == ("Bold & new", "A B", 2)
    assert (first.authors, first.categories, first.upvotes) == (["A. One", "B. Two"], ["cs.LG", "cs.AI"], 7)
    assert first.published == datetime(2024, 1, 2, tzinfo=UTC)
    assert papers[1].authors == ["C. Three", "D. Four"] and papers[1].categories == ["cs.CL", "stat.ML"]
    # The same paper from arXiv's API and from a JSON Lines file has the same key.
    api = parse_source("arxiv-api", read("arxiv-atom/api-2026-08-idlist-1706.03762.xml")).papers[0]
    assert api.key == papers[3].key


def test_parse_source_jsonl_skips_bad_lines_with_their_numbers():
    data = b"\n".join([
        b'{"id": "a", "title": "Good", "abstract": "x"}',
        b"not json",
        b'{"id": "b", "abstract": "x"}',
        b"",
        b'["a", "list"]',
        b'{"id": "c", "title": "Bad date", "abstract": "x", "published": "someday", "upvotes": "many"}',
        b'{"id": "d", "title": 5, "abstract": "x"}',
    ])
    result = parse_source("jsonl", data)
    assert [p.ident for p in result.papers] == ["a", "c"]
    assert result.papers[1].published is None and result.papers[1].upvotes is None
    assert result.warnings == [
        "line 6: not a date: 'someday'; field ignored",
        "line 6: 'upvotes' is not a whole number: 'many'; field ignored",
        "line 2: not valid JSON (Expecting value)",
        "line 3: missing 'title', skipped",
        "line 5: not a JSON object",
        "line 7: 'title' is not a string, skipped",
    ]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(b"", "empty file: no JSON lines", id="empty"),
        pytest.param(b"nope\n{]\n", "no valid line among 2 (line 1: not valid JSON", id="no-json"),
        pytest.param(b'{"id": "x", "title": "t"}\n', "no valid line among 1 (line 1: missing 'abstract', skipped)",
                     id="missing-abstract"),
    ],
)
def test_parse_source_jsonl_refuses_a_file_without_valid_lines(data, message):
    with pytest.raises(FeedError) as caught:
        parse_source("jsonl", data)
    assert caught.value.args[0].startswith(message)


def test_parse_source_jsonl_caps_warnings():
    data = b"\n".join([b'{"id": "ok", "title": "t", "abstract": "a"}'] + [b"bad"] * 50)
    result = parse_source("jsonl", data)
    assert len(result.warnings) == 21 and result.warnings[-1] == "... and 30 more lines skipped"


# --- detection, determinism, invariants ---------------------------------------------------------

DETECTED = [
    ("arxiv-rss/rss-cs.CL-2026-08-13.xml", "arxiv-rss"),
    ("arxiv-rss/rss-arxiv-org-atom-cs.AI-2025-08-20-trimmed.xml", "arxiv-rss"),
    ("arxiv-rss/rdf-math-2012-09-12-lanl-mirror.xml", "arxiv-rss"),
    ("arxiv-atom/api-2016-search-au-del_maestro.xml", "arxiv-api"),
    ("arxiv-atom/api-2026-08-idlist-1706.03762.xml", "arxiv-api"),
    ("hf-daily/daily_papers-date-2024-05-27-reindented.json", "hf-daily"),
    ("hf-daily/api-papers-2605.15320-detail.json", "hf-daily"),
    ("hf-daily/takara-tldr-hf-papers-rss-2026-04-30.xml", "rss20"),
    ("other-feeds/nature-rss1-current-2024-07-18.xml", "rss10"),
    ("malformed/feedparser-atom03-title-script-in-cdata.xml", "atom03"),
    ("seed/papers-first-20.jsonl", "jsonl"),
]


@pytest.mark.parametrize(("name", "kind"), DETECTED, ids=[name.split("/")[-1] for name, _ in DETECTED])
def test_parse_file_detects_the_format(name, kind):
    assert parse_file(read(name), name).kind == kind
    assert parse_file(read(name)).kind == kind  # from the bytes alone, without the file name


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(read("other-feeds/arxiv-oaipmh-getrecord-oai_dc-1706.03762.xml"), "not an RSS or Atom feed", id="oai-pmh"),
        pytest.param(read("other-feeds/pubmed-esearch.json"),
                     "a JSON document of an unknown kind (keys: esearchresult, header); expected JSON Lines or Hugging Face papers",
                     id="other-json"),
        pytest.param(b"\n\n", "empty file", id="empty"),
    ],
)
def test_parse_file_refuses_unknown_formats(data, message):
    with pytest.raises(FeedError) as caught:
        parse_file(data)
    assert caught.value.args[0] == message


def test_parse_file_single_jsonl_line_is_jsonl():
    result = parse_file(b'{"id": "s9", "title": "One", "abstract": "line"}')
    assert (result.kind, result.papers[0].ident) == ("jsonl", "s9")


ALL_PARSEABLE = [name for name, _ in DETECTED] + [
    "arxiv-rss/rss-cs.SD-2026-06-12.xml", "hf-daily/huangboming-hf-daily-papers-rss-2026-04-30.xml",
    "hf-daily/daily_papers-date-2026-08-21-reindented.json", "other-feeds/biorxiv-rss1-genomics-2023-12-trimmed.xml",
    "malformed/arxiv-atom-cs.AI-2025-08-20-truncated.xml", "malformed/miniflux-rss-iso-8859-1-no-declaration-real.xml",
]


@pytest.mark.parametrize("name", ALL_PARSEABLE, ids=[name.split("/")[-1] for name in ALL_PARSEABLE])
def test_parse_file_is_deterministic_with_clean_utc_papers(name):
    first, second = parse_file(read(name), name), parse_file(read(name), name)
    assert first == second
    assert len({paper.key for paper in first.papers}) == len(first.papers)
    for paper in first.papers:
        assert paper.title == paper.title.strip() and not any(c in paper.title for c in "\r\n\t")
        assert "  " not in paper.abstract and "<p>" not in paper.abstract
        for moment in (paper.published, paper.updated):
            assert moment is None or moment.tzinfo == UTC
