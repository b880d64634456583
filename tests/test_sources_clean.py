"""Tests for digest.sources.clean: plain text, TeX names, authors, arXiv ids, DOIs, keys and times."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from digest.sources.clean import (
    _NOT_ONE_LINE,
    arxiv_id_in,
    clean_name,
    html_to_text,
    normalise_doi,
    normalise_title,
    one_line,
    paper_key,
    parse_time,
    plain_to_text,
    split_authors,
    tex_to_unicode,
)


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        pytest.param("<p>Hello</p><p>world</p>", "Hello world", id="block-tags-become-spaces"),
        pytest.param("Catalysis of an S<sub>N</sub>2 pathway", "Catalysis of an SN2 pathway", id="inline-tags-join"),
        pytest.param("Tom &amp; Jerry &eacute;t&eacute; &#8230;", "Tom & Jerry été …", id="entities-decoded"),
        pytest.param("a\r\n  b\t\tc\u00a0d ", "a b c d", id="whitespace-collapsed"),
        pytest.param("We bound $x^2 < y$ and $a<b$ for $\\mathcal{B}^1$", "We bound $x^2 < y$ and $a<b$ for $\\mathcal{B}^1$",
                     id="latex-left-as-written"),
        pytest.param("&lt;p&gt;escaped twice&lt;/p&gt;", "escaped twice", id="double-escaped-markup"),
        pytest.param("bell\x07 and nul\x00", "bell and nul", id="control-characters-dropped"),
        pytest.param("", "", id="empty"),
        pytest.param(None, "", id="none"),
    ],
)
def test_html_to_text_gives_plain_text(raw, text):
    assert html_to_text(raw) == text


@pytest.mark.parametrize(
    "hostile",
    [
        pytest.param('safe<script type="text/javascript">location.href="http://x/";</script> text', id="script-block"),
        pytest.param("<SCRIPT>alert(1)</SCRIPT>unclosed <script>alert(2)", id="script-unclosed-and-upper"),
        pytest.param('<img src=x onload="alert(1)"><a href="javascript:alert(1)">x</a>', id="handlers-in-tags"),
        pytest.param("&lt;script&gt;alert(1)&lt;/script&gt; &lt;body onload=&quot;x()&quot;&gt;", id="escaped-script"),
        pytest.param("<!-- <script> --> <!-- \n<script> \n--> tail", id="script-in-comments"),
    ],
)
def test_html_to_text_leaves_no_hostile_markup(hostile):
    text = html_to_text(hostile).lower()
    assert "<script" not in text
    assert "onload=" not in text
    assert "javascript:" not in text


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        pytest.param('text &amp; onload="evil()" and javascript:void(0)', 'text & onload="evil()" and javascript:void(0)', id="handler-in-text"),
        pytest.param("click JavaScript: here", "click JavaScript: here", id="javascript-url-in-plain-text"),
        pytest.param('We study "javascript: URLs" and onload="x" handlers.', 'We study "javascript: URLs" and onload="x" handlers.', id="an-abstract-about-xss"),
    ],
)
def test_html_to_text_keeps_text_as_the_source_wrote_it(raw, text):
    # Tags go; words stay: templates escape whatever they show (tests/test_render.py, tests/test_web_front.py).
    assert html_to_text(raw) == text


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        pytest.param("emits <swi> to enter and </swi> to exit", "emits <swi> to enter and </swi> to exit", id="special-tokens-kept"),
        pytest.param("<s> and <eos>, <image>, <mask>, <think>x</think>", "<s> and <eos>, <image>, <mask>, <think>x</think>", id="more-tokens"),
        pytest.param("&lt;think&gt; first", "<think> first", id="escaped-token"),
        pytest.param("S<sub>N</sub>2 <I>in vivo</I><p>next</p><BR/>end", "SN2 in vivo next end", id="html-tags-go"),
        pytest.param("<jats:p>JATS <mml:mi>x</mml:mi></jats:p>", "JATS x", id="namespaced-tags-go"),
        pytest.param("&lt;b&gt;escaped twice&lt;/b&gt;", "escaped twice", id="double-escaped-markup"),
        pytest.param("<bold>not html</bold>", "<bold>not html</bold>", id="a-longer-name-is-not-b"),
        pytest.param("Tom &amp; Jerry\r\n  a\x00", "Tom & Jerry a", id="entities-space-control"),
        pytest.param(None, "", id="none"),
    ],
)
def test_plain_to_text_keeps_words_in_angle_brackets_and_drops_markup(raw, text):
    assert plain_to_text(raw) == text


@pytest.mark.parametrize("hostile", [
    '<script>alert(1)</script>x', "<SCRIPT>alert(1)</SCRIPT>unclosed <script>alert(2)", '<img src=x onerror="alert(1)">',
    "&lt;script&gt;alert(1)&lt;/script&gt;", '<a href="javascript:alert(1)">x</a>', "<!-- <script> --> tail",
])
def test_plain_to_text_leaves_no_hostile_markup(hostile):
    text = plain_to_text(hostile).lower()
    assert "<script" not in text and "onerror=" not in text and "javascript:" not in text


@pytest.mark.parametrize(
    ("tex", "name"),
    [
        pytest.param("O\\u{g}uz Akif T\\\"ufekcio\\u{g}lu", "Oğuz Akif Tüfekcioğlu", id="breve-and-umlaut"),
        pytest.param("Bernal Jim\\'enez Guti\\'errez", "Bernal Jiménez Gutiérrez", id="acute"),
        pytest.param("Mustafa Kaan \\c{C}evik", "Mustafa Kaan Çevik", id="cedilla-capital"),
        pytest.param("Tu\\u{g}\\c{c}e K{\\i}z{\\i}ltepe", "Tuğçe Kızıltepe", id="dotless-i-in-braces"),
        pytest.param("Fran\\c{c}ois", "François", id="cedilla"),
        pytest.param("Nikola Pi\\v{z}urica", "Nikola Pižurica", id="caron"),
        pytest.param("Jan Jakub\\r{u}v", "Jan Jakubův", id="ring"),
        pytest.param("Hendrik Kra{\\ss}", "Hendrik Kraß", id="eszett"),
        pytest.param("Anders S{\\o}gaard", "Anders Søgaard", id="slashed-o"),
        pytest.param("In\\`es Blin", "Inès Blin", id="grave"),
        pytest.param("Rodr\\'{\\i}guez", "Rodríguez", id="acute-on-dotless-i"),
        pytest.param("Erd\\H{o}s and \\L ukasz", "Erdős and Łukasz", id="double-acute-and-l-stroke"),
        pytest.param("Plain Name", "Plain Name", id="untouched"),
    ],
)
def test_tex_to_unicode_converts_accents(tex, name):
    assert tex_to_unicode(tex) == name


def test_clean_name_repairs_double_encoded_utf8_but_not_latin1():
    assert clean_name("Dirk WÃ¼bben") == "Dirk Wübben"
    assert clean_name("Jürgen Müller") == "Jürgen Müller"


@pytest.mark.parametrize(
    ("joined", "authors"),
    [
        pytest.param("Ruoxi Zhao, Maziar Raissi", ["Ruoxi Zhao", "Maziar Raissi"], id="arxiv-comma-joined"),
        pytest.param("Facundo Franchino (University of York, UK), St\\'ephane Letz (GRAME-CNCM)",
                     ["Facundo Franchino (University of York, UK)", "Stéphane Letz (GRAME-CNCM)"], id="affiliations"),
        pytest.param("LAPALU, N., SIMON, A., Plaumann, P.-L., O'Connell, R. J.",
                     ["N. LAPALU", "A. SIMON", "P.-L. Plaumann", "R. J. O'Connell"], id="biorxiv-last-initials"),
        pytest.param("Smith, J.; Doe, A. B.", ["J. Smith", "A. B. Doe"], id="semicolons"),
        pytest.param("Ann Lee, Bo Chen and Cy Diaz", ["Ann Lee", "Bo Chen", "Cy Diaz"], id="and"),
        pytest.param('<a href="http://lanl.arxiv.org/find/math/1/au:+Adolphson_A">Alan Adolphson</a>, <a href="x">Steven Sperber</a>',
                     ["Alan Adolphson", "Steven Sperber"], id="rdf-links"),
        pytest.param("", [], id="empty"),
    ],
)
def test_split_authors_splits_joined_names(joined, authors):
    assert split_authors(joined) == authors


@pytest.mark.parametrize(
    ("value", "found"),
    [
        pytest.param("2401.01234", ("2401.01234", None), id="bare-new-style"),
        pytest.param("0704.0001v2", ("0704.0001", 2), id="bare-four-digit-with-version"),
        pytest.param("hep-th/9901001", ("hep-th/9901001", None), id="bare-old-style"),
        pytest.param("arXiv:astro-ph/0601001v3", ("astro-ph/0601001", 3), id="prefixed-old-style"),
        pytest.param("math.GT/0309136", ("math/0309136", None), id="old-style-subject-class-dropped"),
        pytest.param("oai:arXiv.org:2608.11232v1", ("2608.11232", 1), id="oai-guid"),
        pytest.param("https://arxiv.org/abs/2608.11232", ("2608.11232", None), id="abs-link"),
        pytest.param("http://arxiv.org/abs/hep-th/9711200v3", ("hep-th/9711200", 3), id="abs-link-old-style"),
        pytest.param("https://arxiv.org/pdf/2401.01234v4.pdf", ("2401.01234", 4), id="pdf-link"),
        pytest.param("http://lanl.arxiv.org/abs/1209.2411", ("1209.2411", None), id="mirror-link"),
        pytest.param("https://doi.org/10.48550/arXiv.2401.01234", ("2401.01234", None), id="arxiv-doi"),
        pytest.param("10.48550/arxiv.hep-th/9901001", ("hep-th/9901001", None), id="arxiv-doi-old-style"),
        pytest.param("https://huggingface.co/papers/2604.21003", ("2604.21003", None), id="hf-page"),
        pytest.param("https://tldr.takara.ai/p/2604.26238", ("2604.26238", None), id="mirror-last-segment"),
        pytest.param("http://biorxiv.org/cgi/content/short/2023.12.16.571984v1?rss=1", None, id="biorxiv-is-not"),
        pytest.param("https://www.nature.com/articles/s41586-024-07811-4", None, id="nature-is-not"),
        pytest.param("2413.01234", None, id="month-13-is-not"),
        pytest.param("foo-bar/1234567", None, id="unknown-archive-is-not"),
        pytest.param("s001", None, id="jsonl-id-is-not"),
        pytest.param("", None, id="empty"),
    ],
)
def test_arxiv_id_in_finds_ids(value, found):
    assert arxiv_id_in(value) == found


@pytest.mark.parametrize(
    ("value", "doi"),
    [
        pytest.param("10.1038/s41586-024-07811-4", "10.1038/s41586-024-07811-4", id="bare"),
        pytest.param("doi:10.1101/2023.12.16.571984", "10.1101/2023.12.16.571984", id="doi-prefix"),
        pytest.param("http://dx.doi.org/10.1142/S021797921244002X", "10.1142/s021797921244002x", id="dx-url-lowercased"),
        pytest.param("https://doi.org/10.1016/S0140-6736(20)30183-5.", "10.1016/s0140-6736(20)30183-5", id="parens-kept"),
        pytest.param("(see 10.1000/xyz123)", "10.1000/xyz123", id="unbalanced-paren-dropped"),
        pytest.param("https://doi.org/10.1000%2Fabc", "10.1000/abc", id="percent-encoded"),
        pytest.param("not a doi", None, id="none"),
    ],
)
def test_normalise_doi_gives_lowercase_bare_doi(value, doi):
    assert normalise_doi(value) == doi


def test_normalise_title_ignores_case_accents_and_punctuation():
    assert normalise_title("Schrödinger's  Cat: A “Quantum” Story!") == "schrodinger s cat a quantum story"
    assert normalise_title("SCHRODINGER'S CAT -- a quantum story") == "schrodinger s cat a quantum story"
    assert len(normalise_title("word " * 500)) <= 400


def test_paper_key_prefers_arxiv_then_doi_then_title():
    assert paper_key("2401.01234", "10.1/x", "T") == "arxiv:2401.01234"
    assert paper_key(None, "10.1/x", "T") == "doi:10.1/x"
    assert paper_key(None, None, "A Title.") == "title:a title"


@pytest.mark.parametrize(
    ("value", "moment"),
    [
        pytest.param("2024-05-24T17:34:15.000Z", datetime(2024, 5, 24, 17, 34, 15, tzinfo=timezone.utc), id="iso-z"),
        pytest.param("2025-08-20T00:00:00-04:00", datetime(2025, 8, 20, 4, 0, tzinfo=timezone.utc), id="iso-offset"),
        pytest.param("2024-07-18", datetime(2024, 7, 18, tzinfo=timezone.utc), id="date-only"),
        pytest.param("2024-07-18T10:00:00", datetime(2024, 7, 18, 10, tzinfo=timezone.utc), id="naive-is-utc"),
        pytest.param("Thu, 13 Aug 2026 00:00:00 -0400", datetime(2026, 8, 13, 4, tzinfo=timezone.utc), id="rfc822"),
        pytest.param(None, None, id="none"),
    ],
)
def test_parse_time_gives_aware_utc(value, moment):
    parsed = parse_time(value)
    assert parsed == moment
    if parsed is not None:
        assert parsed.tzinfo == timezone.utc


def test_parse_time_refuses_non_dates():
    with pytest.raises(ValueError, match="not a date"):
        parse_time("last Tuesday")


@pytest.mark.parametrize(
    "value, line",
    [
        ("Ada Lovelace", "Ada Lovelace"),
        ("  two  spaces ", "two spaces"),
        ("tab\there", "tab here"),
        ("line\r\nBcc: x@example.org", "line Bcc: x@example.org"),
        ("nul\x00inside", "nul inside"),
        ("zero\u200bwidth", "zero width"),
        ("unit\x1fseparator", "unit separator"),
        ("", ""),
        (None, ""),
        (42, "42"),
    ],
    ids=["plain", "spaces", "tab", "header-injection", "nul", "zero-width", "unit-separator", "empty", "none", "number"],
)
def test_one_line_collapses_space_control_and_invisible_characters(value, line):
    assert one_line(value) == line


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.characters(max_codepoint=0x2100)) | st.text(alphabet=" \t\n\r\x0b\x0c\x1c\x1fab~"))
def test_one_line_fast_path_gives_what_the_regex_gives(value):
    """Printable ASCII is returned as it is (no regex pass): the same line the regex and strip() make."""
    assert one_line(value) == _NOT_ONE_LINE.sub(" ", value).strip()
