"""Tests for digest.render: golden files of a fixed edition, hostile text, the no-match day, size, inlined
styles, absolute links, and the inline-once + card cache shortcut giving the same email as the naive way.

DIGEST_UPDATE_GOLDEN=1 rewrites tests/golden/ from the current output (review the diff before committing).
"""

from __future__ import annotations

import os
import random
import re
import textwrap
from datetime import date
from pathlib import Path

import lxml.html
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from jinja2 import DictLoader, Environment
from markupsafe import Markup, escape

from digest.errors import ConfigError
from digest.models import Paper
from digest.rank import Candidate, RankedPaper, RankResult
from digest.render import (
    HTML_BUDGET,
    TEXT_WIDTH,
    TITLE_MAX,
    DigestRenderer,
    Links,
    RenderedEmail,
    SplitShell,
    _wrap,
    abstract_url,
    author_line,
    html_text,
    render_digest,
    source_badges,
    subject_line,
    truncate_words,
)
from digest.tokens import action_url, make_token

GOLDEN = Path(__file__).parent / "golden"
EDITION = date(2026, 11, 27)
BASE = "https://digest.example.org"
SECRET = "test-secret-key-0123456789"
HOSTILE_TITLE = "Attention <script>alert(1)</script> is \"all\" you 'need'\r\nBcc: victim@example.org"


def make_paper(pid: int, title: str, **fields) -> Paper:
    values = dict(key=f"arxiv:2511.{pid:05d}", ident=f"2511.{pid:05d}", arxiv_id=f"2511.{pid:05d}", version=1, abstract="", authors=[], upvotes=0)
    values.update(fields)
    return Paper(id=pid, title=title, **values)


def pick(paper: Paper, sources=("arxiv-cs.LG",), reasons=("Matches your interest \"diffusion models\"",), in_digest=True) -> RankedPaper:
    return RankedPaper(Candidate(paper, tuple(sources)), 1.0, 0.6, 0.2, tuple(reasons), in_digest)


def links_for(subscriber_id: int, paper_ids, signed: bool = False) -> Links:
    """Fixed links (golden files), or real signed ones, as long as the pipeline makes them (they carry a time)."""
    def url(action, **kw):
        token = make_token(SECRET, action, subscriber_id, **kw) if signed else f"{action}-s{subscriber_id}-" + "-".join(f"{k}{v}" for k, v in kw.items())
        return action_url(BASE, action, token)

    return Links(
        unsubscribe=url("unsubscribe"), preferences=url("preferences"),
        like={pid: url("feedback", paper_id=pid, value=1) for pid in paper_ids},
        dislike={pid: url("feedback", paper_id=pid, value=-1) for pid in paper_ids},
        edition=url("edition", edition=EDITION.isoformat()),
    )


ABSTRACT = ("We introduce a diffusion model that learns to denoise scientific figures. Unlike prior work, it conditions on "
            "the caption and the surrounding text, which lets it recover axis labels and legends. On three benchmarks it "
            "beats the strongest baseline by 4.1 points, and a user study finds its figures preferred 71% of the time. "
            "Code and data are released.")


def fixed_edition() -> RankResult:
    """The golden edition: three picks (arXiv + Hugging Face with upvotes; a blog feed without arXiv id or PDF;
    a hostile title with a long unbroken word), three trending papers, one of them already a pick."""
    p1 = make_paper(1, "Denoising Scientific Figures with Caption-Conditioned Diffusion", abstract=ABSTRACT,
                    authors=["Ada Lovelace", "Alan Turing", "Grace Hopper", "Edsger W. Dijkstra", "Barbara Liskov"], upvotes=42)
    p2 = make_paper(2, "What We Learned Training Small Language Models on Textbooks", key="url:blog/2", ident="blog/2", arxiv_id=None,
                    url="https://blog.example.com/posts/small-models", abstract="A field report. " * 3, authors=["Katherine Johnson"])
    p3 = make_paper(3, HOSTILE_TITLE + " Pneumonoultramicroscopicsilicovolcanoconiosis" * 3, abstract=ABSTRACT[:120],
                    authors=["Mallory <b>Evil</b>", "Eve & Co"], url="javascript:alert(1)")
    t1 = make_paper(11, "Scaling Laws for Sparse Mixture-of-Experts Retrieval", authors=["Claude Shannon", "John von Neumann"], upvotes=130)
    t2 = make_paper(12, "A Benchmark for Long-Horizon Agents", authors=["Frances Allen"], upvotes=77)
    return RankResult(
        subscriber_id=7,
        ranked=[pick(p1, ("arxiv-cs.LG", "hf-daily"), ("Matches your interest \"diffusion models\"", "Similar to a paper you liked")),
                pick(p2, ("Example ML blog",), ("Matches your interest \"language models\"",)),
                pick(p3, ("arxiv-cs.CR",), ("Matches your interest \"security\"",)),
                pick(t1, ("hf-daily",), ("Below your relevance floor",), in_digest=False)],
        trending=[pick(t1, ("hf-daily", "arxiv-cs.LG")), pick(t2, ("hf-daily",)), pick(p1, ("arxiv-cs.LG", "hf-daily"))],
    )


def render_fixed(renderer: DigestRenderer | None = None, result: RankResult | None = None, subscriber_id: int = 7, signed: bool = False) -> RenderedEmail:
    result = result or fixed_edition()
    return render_digest(result, name="Ada", email="ada@example.org", edition=EDITION, links=links_for(subscriber_id, [r.paper.id for r in result.ranked], signed),
                         site_name="Paper digest", interests=["diffusion models", "language models", "security"], renderer=renderer)


def hrefs(html: str) -> list[str]:
    return [a.get("href") for a in lxml.html.document_fromstring(html).iter("a")]


def element_tree(html: str) -> list[tuple]:
    """Tags, attributes and stripped text of every element: what both renderers must agree on."""
    out = []
    for el in lxml.html.document_fromstring(html).iter():
        if isinstance(el.tag, str):
            text = " ".join((el.text or "").split())
            out.append((el.tag, sorted(el.attrib.items()), text, " ".join((el.tail or "").split())))
    return out


@pytest.fixture(scope="module")
def renderer() -> DigestRenderer:
    return DigestRenderer()


@pytest.mark.parametrize("part", ["html", "text", "subject"])
def test_render_digest_matches_golden_files(renderer, part):
    email = render_fixed(renderer)
    actual = getattr(email, part)
    path = GOLDEN / f"digest.{ {'html': 'html', 'text': 'txt', 'subject': 'subject.txt'}[part] }"
    if os.environ.get("DIGEST_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(exist_ok=True)
        path.write_text(actual, encoding="utf-8")
    assert path.exists(), f"{path} is missing: run with DIGEST_UPDATE_GOLDEN=1"
    assert actual == path.read_text(encoding="utf-8"), f"{path.name} differs: review, then DIGEST_UPDATE_GOLDEN=1"


def test_render_digest_shows_hostile_title_as_text(renderer):
    email = render_fixed(renderer)
    doc = lxml.html.document_fromstring(email.html)
    assert not doc.xpath("//script") and not doc.xpath("//b"), "feed text became markup"
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in email.html
    titles = [el.text_content() for el in doc.find_class("title")]
    assert titles[2].startswith("Attention <script>alert(1)</script> is \"all\" you 'need' Bcc: victim@example.org")
    assert "Mallory <b>Evil</b>, Eve & Co" in [el.text_content() for el in doc.find_class("authors")]
    assert "javascript:" not in email.html
    assert "Attention <script>alert(1)</script>" in email.text  # the text part shows it as it is


def test_render_digest_escapes_reader_and_reason_text(renderer):
    result = RankResult(7, [pick(make_paper(1, "Fine"), ("<i>feed</i>",), ("Matches your interest \"<img src=x onerror=alert(1)>\"",))])
    email = render_digest(result, name="<b>Ada</b>\r\n", email="ada@example.org", edition=EDITION, links=links_for(7, [1]),
                          site_name="Site <script>", interests=["<u>x</u>"], renderer=renderer)
    doc = lxml.html.document_fromstring(email.html)
    assert not doc.xpath("//body//img | //body//b | //body//i | //body//u | //script")
    assert "Hi &lt;b&gt;Ada&lt;/b&gt;," in email.html and "&lt;img src=x onerror=alert(1)&gt;" in email.html
    assert doc.find_class("badge-feed")[0].text_content() == "<i>feed</i>"


@pytest.mark.parametrize("title", [HOSTILE_TITLE, "Line\none", "Tab\tand\x00nul\x1b[31m", "Bidi \u202eevil\u2028sep\u0085nel"], ids=["crlf-script", "lf", "controls", "unicode-separators"])
def test_subject_line_never_carries_control_characters(title):
    subject = subject_line(RankResult(1, [pick(make_paper(1, title))]), EDITION)
    assert subject.startswith("Papers for Fri 27 Nov: ")
    assert not re.search("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202e]", subject), repr(subject)


def test_subject_line_names_top_pick_and_count_within_120_characters():
    long_title = "A Very Long Title " * 20
    result = RankResult(1, [pick(make_paper(i, long_title if i == 1 else f"Paper {i}")) for i in range(1, 9)])
    subject = subject_line(result, EDITION)
    assert len(subject) <= 120
    assert subject.startswith("Papers for Fri 27 Nov: A Very Long Title") and subject.endswith("\u2026 (+7 more)")
    assert subject_line(RankResult(1, [pick(make_paper(1, "Short"))]), EDITION) == "Papers for Fri 27 Nov: Short"


def test_render_digest_no_match_day_says_so_and_shows_trending(renderer):
    trending = [pick(make_paper(11, "Trending Paper One", upvotes=50), ("hf-daily",)), pick(make_paper(12, "Trending Paper Two"), ("hf-daily",))]
    result = RankResult(7, ranked=[pick(make_paper(1, "Weak match"), in_digest=False)], trending=trending, matched=False)
    email = render_fixed(renderer, result)
    assert email.subject == "Papers for Fri 27 Nov: no match today; trending: Trending Paper One"
    for body in (email.html, email.text):
        assert "Nothing new matched your interests today" in body
        assert "Trending Paper One" in body and "Trending Paper Two" in body
        assert "Here is what is trending instead" in body
        assert "Weak match" not in body
    doc = lxml.html.document_fromstring(email.html)
    assert not doc.find_class("card") and len(doc.find_class("trend")) == 2


def test_render_digest_empty_day_has_plain_subject(renderer):
    email = render_fixed(renderer, RankResult(7, matched=False))
    assert email.subject == "Papers for Fri 27 Nov: nothing new today"
    assert "Trending today" not in email.html and "Nothing new matched your interests today" in email.html
    for body in (email.html, email.text):
        assert "trending instead" not in body  # no promise of trending papers that are not there


def test_render_digest_trending_skips_papers_already_picked(renderer):
    doc = lxml.html.document_fromstring(render_fixed(renderer).html)
    trending = [el.text_content() for el in doc.find_class("trend-title")]
    assert trending == ["Scaling Laws for Sparse Mixture-of-Experts Retrieval", "A Benchmark for Long-Horizon Agents"]
    assert len(doc.find_class("card")) == 3  # the paper ranked but not in_digest is not a pick


def long_picks(count: int) -> list[RankedPaper]:
    long_abstract = "Transformers " * 2000
    return [pick(make_paper(i, f"Paper {i}: " + "an extremely long and detailed title " * 6, abstract=long_abstract,
                            authors=[f"Author Number {k}" for k in range(40)], upvotes=999),
                 ("arxiv-cs.LG", "hf-daily", "Some Feed With A Long Name"), ("Matches your interest \"transformers\"", "Similar to a paper you liked", "Trending on Hugging Face"))
            for i in range(1, count + 1)]


@pytest.mark.parametrize("count", [30, 100])  # 100: the most max_papers allows
def test_render_digest_stays_under_gmail_clip_with_the_most_picks(renderer, count):
    """Gmail clips an HTML part past ~102 KB and hides the rest, the footer's unsubscribe link with it (100 picks of
    real papers made 244 KB): the first picks are whole cards, the rest brief rows, every pick still linked."""
    trending = [pick(make_paper(1000 + i, "Trending " * 20, authors=["A", "B", "C", "D"]), ("hf-daily",)) for i in range(5)]
    email = render_fixed(renderer, RankResult(7, long_picks(count), trending), signed=True)
    size = len(email.html.encode())
    assert size <= HTML_BUDGET < 102 * 1000, f"{size} bytes: Gmail clips at 102 KB"
    doc = lxml.html.document_fromstring(email.html)
    cards, briefs = doc.find_class("card"), doc.find_class("brief")
    assert len(cards) >= 3 and len(cards) + len(briefs) == count and len(doc.find_class("trend")) == 5
    titles = [el.text_content() for el in doc.find_class("title") + doc.find_class("brief-title")]
    assert titles == [truncate_words((f"Paper {i}: " + "an extremely long and detailed title " * 6).strip(), TITLE_MAX) for i in range(1, count + 1)]
    more = doc.find_class("more")[0]
    assert more.text_content().strip().startswith(f"{len(briefs)} more papers, by title only")
    assert [a.get("href") for a in more.iter("a")] == [doc.find_class("browser-link")[0].get("href")]  # the edition on the web
    assert "Unsubscribe" in doc.find_class("footer")[0].text_content()
    assert all(len(el.text_content()) <= 300 for el in doc.find_class("snippet"))
    assert email.text.count("\n- Paper ") == count  # the text part keeps every card, its vote links too
    assert email.text.count("More like this: ") == count


def test_render_digest_past_the_budget_without_an_edition_link_still_fits(renderer):
    links = links_for(7, range(1, 101))
    email = render_digest(RankResult(7, long_picks(100), []), name="Ada", email="ada@example.org", edition=EDITION,
                          links=Links(links.unsubscribe, links.preferences, links.like, links.dislike, edition=None), renderer=renderer)
    doc = lxml.html.document_fromstring(email.html)
    assert len(email.html) <= HTML_BUDGET and len(doc.find_class("card")) + len(doc.find_class("brief")) == 100
    assert not list(doc.find_class("more")[0].iter("a"))  # no page to link to: the line only says what it shows


def test_render_digest_within_budget_has_no_brief_rows(renderer):
    email = render_fixed(renderer, RankResult(7, long_picks(10), []))
    assert len(email.html) < HTML_BUDGET
    assert 'class="brief' not in email.html and 'class="more' not in email.html


def test_render_digest_inlines_styles_on_elements(renderer):
    email = render_fixed(renderer)
    doc = lxml.html.document_fromstring(email.html)
    classed = [el for el in doc.body.iter() if isinstance(el.tag, str) and el.get("class")]
    assert len(classed) > 30
    unstyled = [el.get("class") for el in classed if not el.get("style")]
    assert not unstyled, f"elements without inline style: {unstyled}"
    assert "border:1px solid #e5e7eb" in doc.find_class("card")[0].get("style")
    assert "max-width:600px" in doc.find_class("wrap")[0].get("style")
    # the dark-mode and phone rules stay in <style>, where only they can work
    style = doc.find(".//style").text
    assert "prefers-color-scheme: dark" in style and "max-width: 480px" in style and "!important" in style
    body = lxml.html.tostring(doc.body, encoding="unicode").replace("max-width:600px", "")
    assert not re.search(r"\bwidth\s*[:=]\s*\"?([4-9]\d\d|\d{4,})(px|\")", body), "a fixed width wider than a phone"


def test_render_digest_links_are_absolute(renderer):
    email = render_fixed(renderer)
    links = hrefs(email.html)
    assert len(links) >= 15
    assert all(link.startswith("https://") for link in links), [link for link in links if not link.startswith("https://")]
    assert "https://blog.example.com/posts/small-models" in links and "https://arxiv.org/pdf/2511.00001" in links
    assert "View in your browser: https://digest.example.org/edition/" in email.text
    for url in re.findall(r"(?:Abstract|PDF|More like this|Less like this|Preferences|Unsubscribe|View in your browser): (\S+)", email.text):
        assert url.startswith("https://")


@pytest.mark.parametrize("bad", ["relative", "missing-like", "relative-edition"])
def test_render_digest_rejects_links_that_would_not_work(renderer, bad):
    result = fixed_edition()
    links = links_for(7, [1, 2, 3])
    if bad == "relative":
        links = Links("/unsubscribe/x", links.preferences, links.like, links.dislike)
    elif bad == "relative-edition":
        links = Links(links.unsubscribe, links.preferences, links.like, links.dislike, edition="/edition/x")
    else:
        links = Links(links.unsubscribe, links.preferences, {}, links.dislike)
    with pytest.raises(ConfigError, match="not absolute"):
        render_digest(result, name="Ada", email="ada@example.org", edition=EDITION, links=links, renderer=renderer)


def test_render_digest_cached_output_is_identical_to_uncached():
    warm = DigestRenderer()
    for sid in (1, 2, 3):  # warm the card cache with other readers, other reasons, the same papers
        other = fixed_edition()
        other = RankResult(sid, [RankedPaper(r.candidate, r.score, r.relevance, r.trending, (f"Reason for {sid}",), r.in_digest) for r in other.ranked], other.trending)
        render_fixed(warm, other, subscriber_id=sid)
    assert len(warm._cache) >= 5
    assert render_fixed(warm) == render_fixed(DigestRenderer())


def test_render_digest_feedback_links_differ_per_subscriber_with_cached_cards():
    cached = DigestRenderer()
    first, second = render_fixed(cached, subscriber_id=7), render_fixed(cached, subscriber_id=8)
    like_7, like_8 = links_for(7, [1]).like[1], links_for(8, [1]).like[1]
    assert like_7 != like_8
    assert like_7 in hrefs(first.html) and like_7 not in hrefs(second.html)
    assert like_8 in hrefs(second.html) and like_8 in second.text and like_7 not in second.text


def test_render_digest_inline_once_gives_the_same_email_as_premailer_per_email():
    fast, naive = render_fixed(DigestRenderer()), render_fixed(DigestRenderer(inline_once=False))
    assert element_tree(fast.html) == element_tree(naive.html)
    assert fast.text == naive.text and fast.subject == naive.subject


def shapes() -> dict[str, tuple[RankResult, dict]]:
    """An email of each shape the shells know (which optional blocks show), and hostile reader text."""
    trending = [pick(make_paper(11, "Trending <b>One</b>", upvotes=50), ("hf-daily",))]
    return {
        "picks": (fixed_edition(), {}),
        "one-pick": (RankResult(7, [pick(make_paper(1, "Only one"))]), {}),
        "no-match-trending": (RankResult(7, [], trending=trending, matched=False), {}),
        "empty": (RankResult(7, matched=False), {}),
        "no-edition-link": (fixed_edition(), {"edition": None}),
        "hostile-reader": (fixed_edition(), {"name": "<b>Ada</b> & \"Co\" 'x'", "email": "a&b@example.org", "interests": ["<i>x</i>", "a & b"], "site_name": "Site <script>"}),
        "no-name-no-interests": (fixed_edition(), {"name": "", "interests": []}),
        "non-ascii-reader": (fixed_edition(), {"name": "Ad\u00e0 \u00b7 \U0001d6c2", "interests": ["r\u00e9seaux"], "site_name": "R\u00e9sum\u00e9s"}),
    }


def render_shape(renderer: DigestRenderer, result: RankResult, changes: dict) -> RenderedEmail:
    links = links_for(7, [r.paper.id for r in result.ranked])
    if "edition" in changes:
        links = Links(links.unsubscribe, links.preferences, links.like, links.dislike, changes["edition"])
    return render_digest(result, name=changes.get("name", "Ada"), email=changes.get("email", "ada@example.org"), edition=EDITION, links=links,
                         site_name=changes.get("site_name", "Paper digest"), interests=changes.get("interests", ["diffusion models"]), renderer=renderer)


def test_render_digest_split_shells_give_the_bytes_of_a_jinja_pass(monkeypatch):
    split = DigestRenderer()
    emails = {name: render_shape(split, *case) for name, case in shapes().items()}
    emails_again = {name: render_shape(split, *case) for name, case in shapes().items()}  # from the shapes' splits
    assert emails_again == emails
    for shell in (split._split_html, split._split_text):
        assert shell._shapes and None not in shell._shapes.values(), "a shape fell back to Jinja"
    monkeypatch.setattr("digest.render.SplitShell.render", lambda self, **context: self._jinja(context))
    jinja = DigestRenderer()
    assert {name: render_shape(jinja, *case) for name, case in shapes().items()} == emails
    assert "Hi &lt;b&gt;Ada&lt;/b&gt; &amp; &#34;Co&#34; &#39;x&#39;," in emails["hostile-reader"].html
    # The HTML is ASCII: the message's HTML part is its bytes, and a reader sees each reference as its character.
    assert all(e.html.isascii() for e in emails.values())
    doc = lxml.html.document_fromstring(emails["non-ascii-reader"].html)
    assert doc.find_class("intro")[0].text_content().startswith("Hi Ad\u00e0 \u00b7 \U0001d6c2, 3 new papers")
    assert doc.find_class("site")[0].text_content() == "R\u00e9sum\u00e9s" and "\u2026" in doc.find_class("snippet")[0].text_content()


def test_split_shell_keeps_jinja_for_a_template_that_transforms_a_value():
    env = Environment(loader=DictLoader({"t.html": "<p>{{ name|upper }}</p>{% for c in cards %}{{ loop.index }}{{ c }}{% endfor %}", "u.html": "<p>{{ name }}</p>"}), autoescape=True)
    upper = SplitShell(env.get_template("t.html"), html=True)
    assert upper.render(name="<ada>", cards=["<hr>", "<br>"]) == "<p>&lt;ADA&gt;</p>1<hr>2<br>"
    assert upper.render(name="bob", cards=["x"]) == "<p>BOB</p>1x"
    assert set(upper._shapes.values()) == {None}
    plain = SplitShell(env.get_template("u.html"), html=True)
    assert plain.render(name="<ada>") == "<p>&lt;ada&gt;</p>" and plain.render(name="bob") == "<p>bob</p>"
    assert None not in plain._shapes.values()


def test_render_digest_card_cache_is_bounded():
    small = DigestRenderer(cache_size=2)
    render_fixed(small)
    assert len(small._cache) == 2


def test_render_digest_pick_without_reason_has_no_reason_line(renderer):
    result = RankResult(7, [pick(make_paper(1, "No reason given"), reasons=())])
    email = render_fixed(renderer, result)
    assert not lxml.html.document_fromstring(email.html).find_class("reason") and "Why:" not in email.text


def test_render_digest_text_wraps_at_78_columns(renderer):
    text = render_fixed(renderer).text
    long_lines = [line for line in text.splitlines() if len(line) > 78 and "https://" not in line]
    assert not long_lines
    assert "- Denoising Scientific Figures with Caption-Conditioned Diffusion\n  Ada Lovelace, Alan Turing, Grace Hopper et al." in text
    assert "TRENDING TODAY" in text and "Preferences: https://" in text and "Unsubscribe: https://" in text


@pytest.mark.parametrize(("text", "limit", "expected"), [
    ("short", 10, "short"),
    ("one two three four", 12, "one two\u2026"),
    ("Supercalifragilistic", 10, "Supercali\u2026"),
    ("ends with comma, then more", 17, "ends with comma\u2026"),
], ids=["fits", "word-boundary", "one-long-word", "trailing-punctuation"])
def test_truncate_words_cuts_on_a_word_boundary(text, limit, expected):
    assert truncate_words(text, limit) == expected
    assert len(truncate_words(text, limit)) <= limit


def test_author_line_names_first_three_then_et_al():
    assert author_line(["A", "B", "C", "D"]) == "A, B, C et al."
    assert author_line(["A", " B\n"]) == "A, B"
    assert author_line([]) == ""


def test_source_badges_name_arxiv_hugging_face_and_feeds():
    paper = make_paper(1, "x")
    assert source_badges(Candidate(paper, ("arxiv-cs.LG", "arxiv-cs.CL", "hf-daily", "My Blog"))) == (("arxiv", "arXiv"), ("hf", "Hugging Face"), ("feed", "My Blog"))
    assert source_badges(Candidate(paper, ())) == (("arxiv", "arXiv"),)
    assert source_badges(Candidate(paper, ("file:lab-picks.jsonl",))) == (("feed", "lab-picks"),)
    # With kinds (as the store gives them), the kind decides, whatever the name.
    kinds = Candidate(paper, ("cs.SD", "daily", "file:lab-picks.jsonl", "Nature"), ("arxiv-rss", "hf-daily", "file", "feed"))
    assert source_badges(kinds) == (("arxiv", "arXiv"), ("hf", "Hugging Face"), ("feed", "lab-picks"), ("feed", "Nature"))
    files = Candidate(paper, ("file:sample-arxiv-cs.CL.xml", "file:hugging-face-2026-08-21.json"), ("file", "file"))
    assert source_badges(files) == (("arxiv", "arXiv"), ("hf", "Hugging Face"))


@pytest.mark.parametrize(("fields", "expected"), [
    ({"url": "https://openreview.net/forum?id=1"}, "https://openreview.net/forum?id=1"),
    ({"url": "javascript:alert(1)"}, "https://arxiv.org/abs/2511.00001"),
    ({"url": None, "arxiv_id": None, "doi": "10.1000/xyz"}, "https://doi.org/10.1000/xyz"),
    ({"url": "http://a b", "arxiv_id": None}, None),
], ids=["own-url", "javascript-url", "doi", "nothing-usable"])
def test_abstract_url_prefers_a_safe_web_url(fields, expected):
    assert abstract_url(make_paper(1, "x", **fields)) == expected


@pytest.mark.parametrize("indents", [("  ", "  "), ("- ", "  "), ("  Why: ", "       "), ("", "")], ids=["body", "title", "reason", "footer"])
def test_wrap_is_textwrap_fill_word_for_word(indents: tuple[str, str]) -> None:
    """render._wrap's greedy fill gives textwrap's lines: words at, under and over the width, non-breaking and other
    white space (handed to textwrap), double spaces, leading and trailing ones, the empty text."""
    rng = random.Random(11)
    first, rest = indents
    for _ in range(3000):
        words = ["".join(rng.choice("ab-\u00e9.,\u00a0\u2003") for _ in range(rng.choice([1, 2, 5, 13, 40, 70, 76, 77, 78, 79, 90]))) for _ in range(rng.randint(0, 25))]
        text = "".join(word + rng.choice([" ", " ", " ", "  ", "\t", "\n"]) for word in words)
        text = text.strip() if rng.random() < 0.7 else text
        expected = textwrap.fill(text, TEXT_WIDTH, initial_indent=first, subsequent_indent=rest, break_long_words=False, break_on_hyphens=False)
        assert _wrap(text, first, rest) == expected, text
    for total in (TEXT_WIDTH - 1, TEXT_WIDTH, TEXT_WIDTH + 1):  # one line, exactly full, one character over
        text = "x" * (total - len(first) - 2) + " y"
        assert _wrap(text, first, rest) == textwrap.fill(text, TEXT_WIDTH, initial_indent=first, subsequent_indent=rest, break_long_words=False, break_on_hyphens=False)


@given(st.one_of(st.text(), st.text().map(Markup), st.integers()))
@example("<a href=\"x\">'&' \u00e9\U0001d6c2</a>")
def test_html_text_is_markupsafe_escape_in_ascii(value: object) -> None:
    expected = str(escape(value))
    assert html_text(value) == expected.encode("ascii", "xmlcharrefreplace").decode("ascii")
    assert html_text(value).isascii()


@pytest.mark.parametrize("odd", ["&", "'", "\u00e9"], ids=["ampersand", "quote", "non-ascii"])
def test_render_digest_escapes_vote_links_that_need_it(renderer, odd):
    """The like and dislike links go into the HTML as they are only when none of them holds a character to escape
    or beyond ASCII (render._html_texts); one such link, and each is escaped as autoescape would."""
    result = fixed_edition()
    links = links_for(7, [1, 2, 3])
    like = {**links.like, 2: links.like[2] + f"?a=1{odd}b=2"}
    email = render_digest(result, name="Ada", email="ada@example.org", edition=EDITION, links=Links(links.unsubscribe, links.preferences, like, links.dislike, links.edition), renderer=renderer)
    shown = html_text(like[2])
    assert shown != like[2] and f'href="{shown}"' in email.html
    assert f'href="{html_text(links.like[1])}"' in email.html and f'href="{links.dislike[3]}"' in email.html


def test_render_digest_card_cache_follows_what_a_paper_shows():
    """A card is cached by what it shows (numbered once per distinct content): a paper whose upvotes or title changed
    during the day gets a new card, also after the table of numbers was emptied (past 4,096 contents), and never
    another paper's card."""
    small = DigestRenderer(cache_size=1)
    for n in range(4200):
        paper = make_paper(1, f"Title number {n}", upvotes=n % 7)
        email = render_fixed(small, RankResult(7, [pick(paper)]))
        assert f"Title number {n}<" in email.html and f"Title number {n}\n" in email.text
        assert (f"{n % 7} upvotes" in email.text) == bool(n % 7)
    assert len(small._shown) < 4200 and small._numbered == 4200
