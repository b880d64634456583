"""Rendering: pure functions from ranked picks to the email's subject, HTML and plain text.

Jinja2 (autoescape for .html, StrictUndefined). premailer costs ~10 ms a document, so it never runs per
email: the loader hides every Jinja tag of a template behind a placeholder, inlines the CSS of the template
source once, and puts the tags back, so Jinja renders HTML that is already inlined. A paper's card is
rendered once and cached across subscribers, with slots for what is personal (the reason line, the like and
dislike links) filled per email by string joins; so are the two shells (digest.html, digest.txt), rendered once per
shape (which optional blocks show) with a slot for every value. The HTML is written in ASCII, each other character
of the text as a character reference, so the message's HTML part is the string's bytes with no conversion per email.
No database, no network, no clock.
"""

from __future__ import annotations

import logging
import re
import textwrap
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import premailer
from jinja2 import (
    BaseLoader,
    Environment,
    FileSystemLoader,
    StrictUndefined,
    Template,
    pass_eval_context,
    select_autoescape,
)
from jinja2.nodes import EvalContext
from markupsafe import Markup, escape

from . import templates_dir
from .editions import DAY_NAMES
from .errors import ConfigError
from .rank import Candidate, RankResult
from .sources.clean import one_line

SUBJECT_MAX = 120  # characters; longer subjects are cut by most clients anyway
SNIPPET_MAX = 300  # characters of abstract: two or three lines at 600 px
HTML_BUDGET = 90_000  # bytes of HTML: Gmail clips past ~102 KB, hiding the rest (the unsubscribe link too); room for the relay's additions
TITLE_MAX = 250  # a title longer than this is a feed bug; it would crowd the email past Gmail's 102 KB clip
REASON_MAX = 200
AUTHORS_SHOWN = 3
TEXT_WIDTH = 78
CSS_INCLUDE = '{% include "email.css" %}'
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December")


@dataclass(frozen=True)
class Links:
    """The reader's personal links (each carries a signed token, see digest.tokens); absolute http(s) URLs."""

    unsubscribe: str
    preferences: str
    like: dict[int, str]  # paper id -> URL
    dislike: dict[int, str]
    edition: str | None = None  # "view in your browser": this email on the web (/edition/<token>)


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    html: str
    text: str


# --- hostile text -------------------------------------------------------------------------------------

# Feed text made safe to show and to put in a header: control and invisible characters (digest.sources.clean's one
# table) become spaces, runs of white space one space. (Also what keeps the \x00 slot markers below unambiguous.)
clean_text = one_line


def truncate_words(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters on a word boundary, with an ellipsis when cut."""
    if len(text) <= limit:
        return text
    cut = text[: max(limit - 1, 0)]
    space = cut.rfind(" ")
    if not text[len(cut)].isspace() and space > limit // 2:  # the cut split a word: back up to its start
        cut = cut[:space]
    return cut.rstrip(" ,;:.-\u2013\u2014") + "\u2026"


def web_url(value: object) -> str | None:
    """`value` if it is an absolute http(s) URL without white space or control characters, else None
    (a feed's `javascript:` link must not become a button)."""
    url = str(value or "").strip()
    if not url or " " in url or one_line(url) != url:  # white space, control or invisible characters
        return None
    parts = urlsplit(url)
    return url if parts.scheme in ("http", "https") and parts.netloc else None


def abstract_url(paper) -> str | None:
    return web_url(paper.url) or (f"https://arxiv.org/abs/{quote(paper.arxiv_id)}" if paper.arxiv_id else None) or (f"https://doi.org/{quote(paper.doi, safe='/')}" if paper.doi else None)


def pdf_url(paper) -> str | None:
    return web_url(paper.pdf_url) or (f"https://arxiv.org/pdf/{quote(paper.arxiv_id)}" if paper.arxiv_id else None)


def author_line(authors: Sequence[object], shown: int = AUTHORS_SHOWN) -> str:
    names = [name for name in (clean_text(a) for a in authors or ()) if name]
    line = ", ".join(truncate_words(name, 60) for name in names[:shown])
    return line + " et al." if len(names) > shown else line


KIND_BADGES = {"arxiv-rss": ("arXiv", "arxiv"), "arxiv-api": ("arXiv", "arxiv"), "hf-daily": ("Hugging Face", "hf")}


def _feed_label(name: str) -> str:
    """An imported file shows as its stem ("file:lab-picks.jsonl" -> "lab-picks"), a feed as its name."""
    if name.startswith("file:"):
        stem = name[5:].rsplit("/", 1)[-1]
        return stem.rsplit(".", 1)[0] if "." in stem else stem
    return name


def source_badges(candidate: Candidate) -> tuple[tuple[str, str], ...]:
    """(kind, label) per distinct source: arXiv, Hugging Face, or the feed's own name. The source's kind
    decides (a source may be named anything, e.g. "cs.SD"); for imported files and without kinds, the name."""
    badges: dict[str, str] = {}
    kinds = candidate.source_kinds if len(candidate.source_kinds) == len(candidate.sources) else (None,) * len(candidate.sources)
    for name, kind in zip(candidate.sources, kinds):
        low = name.lower()
        if kind in KIND_BADGES:
            label, css = KIND_BADGES[kind]
            badges.setdefault(label, css)
        elif kind in (None, "file") and "arxiv" in low:  # an imported file says what it holds by its name, if at all
            badges.setdefault("arXiv", "arxiv")
        elif kind in (None, "file") and (low.startswith(("hf", "file:hf")) or "hugging" in low):
            badges.setdefault("Hugging Face", "hf")
        elif label := truncate_words(clean_text(_feed_label(name)), 40):
            badges.setdefault(label, "feed")
    if not badges and candidate.paper.arxiv_id:
        badges["arXiv"] = "arxiv"
    return tuple((kind, label) for label, kind in badges.items())


def long_date(day: date) -> str:
    return f"{DAY_NAMES[day.weekday()]} {day.day} {MONTHS[day.month - 1]} {day.year}"


def subject_line(result: RankResult, edition: date) -> str:
    """'Papers for Fri 27 Nov: <top pick> (+7 more)', at most SUBJECT_MAX characters, no CR/LF."""
    prefix = f"Papers for {DAY_NAMES[edition.weekday()][:3]} {edition.day} {MONTHS[edition.month - 1][:3]}: "
    picks, suffix = result.picks, ""
    if picks:
        topic = _clean_repeated(picks[0].paper.title) or "(untitled)"
        suffix = f" (+{len(picks) - 1} more)" if len(picks) > 1 else ""
    elif result.trending:
        topic = "no match today; trending: " + (clean_text(result.trending[0].paper.title) or "(untitled)")
    else:
        topic = "nothing new today"
    return prefix + truncate_words(topic, SUBJECT_MAX - len(prefix) - len(suffix)) + suffix


_NOT_PLAIN = re.compile(r"[^\S ]|  |^ | $")  # white space textwrap treats otherwise than single spaces between words


def _wrap(text: str, first: str = "  ", rest: str = "  ") -> str:
    """textwrap.fill at TEXT_WIDTH, no word broken, no break at hyphens. Shown text is one line with single spaces
    (clean_text), where a greedy fill gives the same lines as textwrap's chunk machinery: each line ends at the last
    space within the width (one rfind per line, not a step per word: the reason lines and the footer are wrapped anew
    for every email, 1.7 -> 0.6 us a reason line), or after a word longer than the width. Anything else goes to
    textwrap."""
    if not text:
        return ""
    # A printable text has no white space but " " (str.isprintable is false for every other space, line break and
    # control character), which two C scans tell; the regular expression (1.1 us a reason line) only for the rest.
    plain = text.isprintable() and "  " not in text and text[0] != " " and text[-1] != " "
    if not plain and _NOT_PLAIN.search(text):
        return textwrap.fill(text, TEXT_WIDTH, initial_indent=first, subsequent_indent=rest, break_long_words=False, break_on_hyphens=False)
    room = TEXT_WIDTH - len(first)
    if len(text) <= room:  # one line (most reason lines)
        return first + text
    lines: list[str] = []
    indent, start, size = first, 0, len(text)
    while size - start > room:
        cut = text.rfind(" ", start, start + room + 1)
        if cut < 0:  # the first word is longer than the width: it has the line to itself
            cut = text.find(" ", start + room + 1)
            if cut < 0:
                break
        lines.append(indent + text[start:cut])
        start, indent, room = cut + 1, rest, TEXT_WIDTH - len(rest)
    lines.append(indent + text[start:])
    return "\n".join(lines)


# Titles and single reasons ("matched terms: ...", "trending: ...") repeat across an edition's emails, in new
# combinations: each is cleaned once.
_clean_repeated = lru_cache(maxsize=16384)(clean_text)


def reason_line(reasons: Sequence[str]) -> str:
    """A pick's reasons as the email's "why" line (and the web edition page's): cleaned, joined, cut."""
    return truncate_words(" \u00b7 ".join(r for r in map(_clean_repeated, reasons) if r), REASON_MAX)


@lru_cache(maxsize=8192)  # reasons repeat across subscribers ("Matches your interest ...")
def _reason_text(reasons: tuple[str, ...]) -> tuple[str, str]:
    line = reason_line(reasons)
    return html_text(line), _wrap(line, "  Why: ", "       ")


def ascii_html(html: str) -> str:
    """`html` (text or elements, no <style> or <script>) in ASCII: each other character as a character reference
    (&#183;), which every HTML reader shows as the character, in text and in attribute values alike. A 30 KB email
    of which a few characters are not ASCII is a two-byte string in Python: encoding it with references cost 37 us
    an email in the message's HTML part, and its <style> check 15 us; an ASCII string is copied as it is."""
    return html if html.isascii() else html.encode("ascii", "xmlcharrefreplace").decode("ascii")


def html_text(value: object) -> str:
    """`value` escaped as autoescape does (markupsafe.escape; markup stays as it is), in ASCII (ascii_html).

    A plain string is escaped here with markupsafe's five replacements: markupsafe.escape and Markup() ask each
    string for __html__, and the AttributeError of that hasattr cost ~2 us a value (rendering 0.21 -> 0.175 ms)."""
    if type(value) is str:
        text = value.replace("&", "&amp;").replace(">", "&gt;").replace("<", "&lt;").replace("'", "&#39;").replace('"', "&#34;")
    else:
        text = str(escape(value))
    return ascii_html(text)


def _html_texts(values: list) -> list:
    """html_text of each of `values` (an email's like or dislike links): the values themselves when, all together, they
    hold no character to escape and none beyond ASCII (signed links never do), found by six scans of their join rather
    than a call per link (20 an email, ~0.7 us each)."""
    joined = "".join(values)
    if joined.isascii() and not ("&" in joined or "<" in joined or ">" in joined or "'" in joined or '"' in joined):
        return values
    return [html_text(value) for value in values]


@pass_eval_context
def _finalize(eval_ctx: EvalContext, value: object) -> object:
    """What each {{ value }} of the email's templates writes: in HTML, html_text; in text, the value as it is."""
    return Markup(html_text(value)) if eval_ctx.autoescape and isinstance(value, str) else value


def paper_view(candidate: Candidate) -> dict:
    """What a card shows of one paper, cleaned, for both the HTML and the text template."""
    paper = candidate.paper
    title = truncate_words(clean_text(paper.title), TITLE_MAX) or "(untitled)"
    authors = author_line(paper.authors)
    badges = source_badges(candidate)
    upvotes = paper.upvotes if paper.upvotes and paper.upvotes > 0 else 0
    snippet = truncate_words(clean_text(paper.abstract), SNIPPET_MAX)
    sources_line = " \u00b7 ".join([label for _, label in badges] + ([f"{upvotes} upvotes"] if upvotes else []))
    return {
        "title": title, "authors": authors, "badges": badges, "upvotes": upvotes, "snippet": snippet,
        "abs_url": abstract_url(paper), "pdf_url": pdf_url(paper), "sources_line": sources_line,
        "title_wrapped": _wrap(title, "- "), "authors_wrapped": _wrap(authors) if authors else "",
        "snippet_wrapped": _wrap(snippet) if snippet else "",
    }


# --- inlining once per template -----------------------------------------------------------------------

_JINJA_TAG = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.S)
_HIDDEN = re.compile(r"<!--jinja(\d+)-->|&lt;!--jinja(\d+)--&gt;|jinja(\d+)x")
_STYLE_ELEMENT = re.compile(r"(<style\b.*?(?:</style\s*>|$))", re.S | re.I)


def inline_css(html: str, css: str | None = None) -> str:
    """premailer over one document: class rules become style="..." attributes; @media rules (dark mode, phone)
    stay in <style> with their !important. Classes are kept so those rules still apply."""
    return premailer.Premailer(html, css_text=css, remove_classes=False, strip_important=False, disable_validation=True, allow_network=False, cssutils_logging_level=logging.CRITICAL).transform()


def inline_template_source(source: str, css: str) -> str:
    """A Jinja template's source with `css` inlined into its HTML, Jinja tags untouched.

    Tags inside an HTML tag (attribute values) hide as a bare word, tags between elements as a comment,
    so the HTML parser keeps them where they are. Needs single-class CSS selectors: styles must not depend
    on content that only exists once the template is rendered."""
    source = source.replace(CSS_INCLUDE, css)
    blanked = _JINJA_TAG.sub(lambda m: " " * len(m.group()), source)
    tags: list[str] = []

    def hide(match: re.Match) -> str:
        tags.append(match.group())
        before = blanked[: match.start()]
        in_tag = before.rfind("<") > before.rfind(">")
        return f"jinja{len(tags) - 1}x" if in_tag else f"<!--jinja{len(tags) - 1}-->"

    hidden = _JINJA_TAG.sub(hide, source)
    if "<html" in hidden[:1000].lower():
        inlined = inline_css(hidden)
    else:  # a file of macros: inline it as the body of a document carrying the CSS
        inlined = inline_css(f"<html><head></head><body>{hidden}</body></html>", css)
        inlined = inlined[inlined.index("<body>") + len("<body>") : inlined.rindex("</body>")]
    inlined = _HIDDEN.sub(lambda m: tags[int(next(g for g in m.groups() if g is not None))], inlined)
    # premailer writes &middot; and &nbsp; as characters: back to references (ascii_html), except in <style>, where
    # a reference would not be read as one.
    return "".join(part if k % 2 else ascii_html(part) for k, part in enumerate(_STYLE_ELEMENT.split(inlined)))


class InliningLoader(BaseLoader):
    """Serves the .html templates with email.css already inlined; other files as they are."""

    def __init__(self, directory: Path) -> None:
        self.files = FileSystemLoader(str(directory))

    def get_source(self, environment: Environment, template: str):
        source, filename, uptodate = self.files.get_source(environment, template)
        if template.endswith(".html"):
            css = self.files.get_source(environment, "email.css")[0]
            source = inline_template_source(source, css)
        return source, filename, uptodate


# --- rendering ----------------------------------------------------------------------------------------

_SLOT = re.compile("\x00(\\w+)\x00")  # clean_text strips \x00 from feed text, so only our slots match
_SLOTS = {name: Markup(f"\x00{name}\x00") for name in ("reason", "like", "dislike")}


def _fill(parts: tuple[str, ...], values: dict) -> str:
    """Join a card split on its slots (even items text, odd items slot names) with this reader's values."""
    out = list(parts)
    for i in range(1, len(out), 2):
        out[i] = values[out[i]]
    return "".join(out)


class SplitShell:
    """A shell template rendered by joins: once per shape with a slot in place of every value, split on the slots,
    then filled per email (HTML values escaped as autoescape would and in ASCII, see html_text; lists joined as the
    template's loop would).

    A Jinja pass over the two shells (a new context and its ChainMap of globals, a generator per block) was about a
    third of rendering a warm email: 83 -> 60 us for the golden edition of three picks. The shape is what the template decides from the values: which strings are empty, the
    booleans and None, which lists are empty. A list renders from two slot items, and the text between them is its
    separator. The first email of each shape is also rendered by Jinja: a template that transforms a value (a
    filter, loop.index, a length) does not match its split and keeps the Jinja pass for that shape."""

    def __init__(self, template: Template, html: bool) -> None:
        self.template, self.html = template, html
        self._shapes: dict[tuple, tuple[tuple[str, ...], dict[str, str]] | None] = {}

    def render(self, **context: Any) -> str:
        shape = tuple((k, bool(v) if isinstance(v, (str, list)) else v) for k, v in context.items())
        if shape not in self._shapes:
            split = self._split(context)
            filled = self._fill(split, context) if split is not None else None
            if filled is None or filled != self._jinja(context):
                split = None
            self._shapes[shape] = split
        split = self._shapes[shape]
        return self._fill(split, context) if split is not None else self._jinja(context)  # None: does not split

    def _jinja(self, context: dict) -> str:
        """The template rendered by Jinja; in HTML, list items are markup (the cards), not text to escape."""
        if self.html:
            context = {k: [Markup(item) for item in v] if isinstance(v, list) else v for k, v in context.items()}
        return self.template.render(context)

    def _split(self, context: dict) -> tuple[tuple[str, ...], dict[str, str]] | None:
        """The template's text split on its slots (even items text, odd items names), and each list's separator."""
        markers = {k: Markup(f"\x00{k}\x00") if isinstance(v, str) and v else [Markup(f"\x00{k}\x00")] * 2 if isinstance(v, list) and v else v for k, v in context.items()}
        parts = _SLOT.split(self.template.render(markers))
        separators: dict[str, str] = {}
        for name, value in context.items():
            if not (isinstance(value, list) and value):
                continue
            found = [i for i in range(1, len(parts), 2) if parts[i] == name]
            if len(found) != 2 or found[1] != found[0] + 2:  # not one loop over the items: Jinja
                return None
            separators[name] = parts[found[0] + 1]
            del parts[found[0] + 1 : found[1] + 1]
        if any(parts[i] not in context for i in range(1, len(parts), 2)):
            return None
        return tuple(parts), separators

    def _fill(self, split: tuple[tuple[str, ...], dict[str, str]], context: dict) -> str:
        parts, separators = split
        out = list(parts)
        for i in range(1, len(out), 2):
            name = out[i]
            value = context[name]
            if name in separators:
                out[i] = separators[name].join(value)  # the items are HTML (the cards) or text already
            else:
                out[i] = html_text(value) if self.html else value
        return "".join(out)


def _is_absolute(url: object) -> bool:
    return isinstance(url, str) and url.startswith(("https://", "http://"))


class DigestRenderer:
    """Renders digests; holds the compiled, pre-inlined templates and the per-paper card cache.

    Make one per run (or per process) and reuse it for every subscriber. `inline_once=False` is the naive
    way (premailer over each whole email, no card cache), kept for the benchmark and the equivalence test."""

    def __init__(self, directory: Path | str | None = None, *, inline_once: bool = True, cache_size: int = 4096) -> None:
        directory = Path(directory) if directory else templates_dir()
        loader = InliningLoader(directory) if inline_once else FileSystemLoader(str(directory))
        env = Environment(loader=loader, autoescape=select_autoescape(["html"]), undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                          finalize=_finalize)
        self.inline_once = inline_once
        self.cache_size = cache_size if inline_once else 0
        self._shell_html = env.get_template("digest.html")
        self._shell_text = env.get_template("digest.txt")
        self._split_html, self._split_text = SplitShell(self._shell_html, html=True), SplitShell(self._shell_text, html=False)
        # Each template's macros (card, trend), attributes that exist only once the template is loaded.
        self._cards_html: Any = env.get_template("digest_card.html").module
        self._cards_text: Any = env.get_template("digest_card.txt").module
        self._cache: OrderedDict[tuple, tuple[tuple[str, ...], tuple[str, ...]]] = OrderedDict()
        self._keys: dict[int, tuple[Candidate, int]] = {}  # id(candidate) -> (candidate, the number of what it shows)
        self._shown: dict[tuple, int] = {}
        self._numbered = 0

    def _card(self, kind: str, candidate: Candidate, has_reason: bool = False) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The HTML and text of one paper's card (kind "card") or trending row, split on its slots."""
        # Keyed by everything shown, not just id + version: upvotes and sources change during a day. The key of a
        # candidate object is made once (reading a dozen ORM attributes per card and email cost more than the join).
        seen = self._keys.get(id(candidate))
        if seen is None or seen[0] is not candidate:
            p = candidate.paper
            shown = (p.id, p.version, p.title, p.abstract, tuple(p.authors or ()), p.url, p.pdf_url, p.arxiv_id, p.doi, p.upvotes, candidate.sources, candidate.source_kinds)
            # What is shown, numbered (never twice the same number): the card cache's key is three small values,
            # hashed per card and email, not this tuple of twelve.
            number = self._shown.get(shown)
            if number is None:
                if len(self._shown) > 4 * max(self.cache_size, 1024):
                    self._shown.clear()  # those cards leave the cache as it fills: their numbers are not given again
                number = self._shown[shown] = self._numbered = self._numbered + 1
            seen = (candidate, number)
            self._keys[id(candidate)] = seen  # holds the candidate: its id() cannot be reused while the entry lives
            if len(self._keys) > 4 * max(self.cache_size, 1024):
                self._keys.clear()
        key = (kind, has_reason, seen[1])
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        view = paper_view(candidate)
        if kind == "card":
            reason = _SLOTS["reason"] if has_reason else ""
            html = self._cards_html.card(view, reason, _SLOTS["like"], _SLOTS["dislike"])
            text = self._cards_text.card(view, reason, _SLOTS["like"], _SLOTS["dislike"])
        elif kind == "brief":  # HTML only: the text part keeps every card (see _fit_budget)
            html, text = self._cards_html.brief(view), ""
        else:
            html, text = self._cards_html.trend(view), self._cards_text.trend(view)
        value = (tuple(_SLOT.split(str(html))), tuple(_SLOT.split(str(text).strip("\n"))))
        if self.cache_size:
            self._cache[key] = value
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return value

    def render(self, result: RankResult, *, name: str, email: str, edition: date, links: Links, site_name: str = "Paper digest", interests: Sequence[str] = ()) -> RenderedEmail:
        picks = result.picks
        ids = [r.candidate.paper_id for r in picks]  # read from the row once per candidate (Candidate.paper_id)
        likes, dislikes = [links.like.get(i) if i is not None else None for i in ids], [links.dislike.get(i) if i is not None else None for i in ids]
        for url in (links.unsubscribe, links.preferences, *((links.edition,) if links.edition is not None else ()), *likes, *dislikes):
            if not _is_absolute(url):
                raise ConfigError(f"a link in the email is missing or not absolute: {url!r}", "set base_url to the absolute https:// address of `digest web`, such as https://example.org/digest")
        cards_html, cards_text = [], []
        for ranked, like, dislike, like_html, dislike_html in zip(picks, likes, dislikes, _html_texts(likes), _html_texts(dislikes)):
            reasons = ranked.reasons
            html_parts, text_parts = self._card("card", ranked.candidate, bool(reasons))
            reason_html, reason_text = _reason_text(reasons) if reasons else ("", "")
            cards_html.append(_fill(html_parts, {"reason": reason_html, "like": like_html, "dislike": dislike_html}))
            cards_text.append(_fill(text_parts, {"reason": reason_text, "like": like, "dislike": dislike}))
        shown = set(ids)
        trending = [self._card("trend", r.candidate) for r in result.trending if r.candidate.paper_id not in shown]

        subject = subject_line(result, edition)
        site, shown_name = clean_text(site_name) or "Paper digest", clean_text(name)
        greeting = f"Hi {shown_name}," if shown_name else "Hi,"
        interest_names = [i for i in (clean_text(i) for i in interests) if i]
        interests_line = truncate_words(f"your interests: {', '.join(interest_names)}.", 300) if interest_names else "you have not listed any interests yet."
        if picks:
            intro = f"{greeting} {len(picks)} new paper{'s' if len(picks) != 1 else ''} matched your interests today."
            preheader = truncate_words(" \u00b7 ".join(_clean_repeated(r.candidate.paper.title) for r in picks[:3]), 150)
        else:
            intro = f"{greeting} a quiet day for your interests."
            preheader = "Nothing new matched your interests today." + (" Here is what is trending." if trending else "")
        context = {
            "subject": subject, "preheader": preheader, "site_name": site, "date_long": long_date(edition), "intro": intro,
            "matched": bool(result.matched and picks), "email": clean_text(email), "interests_line": interests_line,
            "preferences_url": links.preferences, "unsubscribe_url": links.unsubscribe, "edition_url": links.edition,
        }
        footer = _wrap(f"You get this because you subscribed to {site} with {context['email']}; {interests_line}", "", "")
        trending_html, trending_text = ["".join(parts) for parts, _ in trending], ["".join(parts) for _, parts in trending]
        html = self._html(context, cards_html, trending_html)
        if len(html) > HTML_BUDGET:  # the HTML is ASCII (ascii_html): its length is its size in bytes
            html = self._html(context, self._fit_budget(picks, cards_html, len(html), links.edition), trending_html)
        if self.inline_once:
            text = self._split_text.render(**context, cards=cards_text, trending=trending_text, footer=footer, rule="-" * TEXT_WIDTH)
        else:
            text = self._shell_text.render(context, cards=cards_text, trending=trending_text, footer=footer, rule="-" * TEXT_WIDTH)
        return RenderedEmail(subject, html, text)

    def _html(self, context: dict, cards: list[str], trending: list[str]) -> str:
        if self.inline_once:
            return self._split_html.render(**context, cards=cards, trending=trending)
        # the naive way: Jinja over the shell, premailer over each email
        return inline_css(self._shell_html.render(context, cards=[Markup(c) for c in cards], trending=[Markup(c) for c in trending]))

    def _fit_budget(self, picks: Sequence, cards: list[str], size: int, edition_url: str | None) -> list[str]:
        """The cards of an email whose HTML would pass HTML_BUDGET: the first ones whole, the rest as brief rows
        (title and authors, ~0.5 KB where a card is ~2.4 KB), introduced by a line that links to the edition on the
        web. Gmail cuts an HTML part past ~102 KB and hides the rest behind a "[Message clipped]" link, the footer's
        unsubscribe link included: at 100 picks (max_papers allows that) the HTML was 244 KB. The text part keeps
        every card."""
        briefs = ["".join(self._card("brief", r.candidate)[0]) for r in picks]
        # Each card of the shell's loop is followed by a line end (digest.html); the shell is what remains.
        # The line before the brief rows is measured once, with the most digits its count can have.
        room = HTML_BUDGET - (size - sum(len(c) + 1 for c in cards)) - len(str(self._cards_html.more(len(cards), edition_url)))
        used = sum(len(b) + 1 for b in briefs)  # every pick brief, then one card at a time in place of its brief row
        whole = 0
        while whole < len(cards) and used - len(briefs[whole]) + len(cards[whole]) <= room:
            used += len(cards[whole]) - len(briefs[whole])
            whole += 1
        if whole == len(cards):
            return cards
        return [*cards[:whole], str(self._cards_html.more(len(cards) - whole, edition_url)) + briefs[whole], *briefs[whole + 1 :]]


_default: list[DigestRenderer] = []


def default_renderer() -> DigestRenderer:
    """One shared renderer per process (templates compiled and inlined once, cards cached)."""
    if not _default:
        _default.append(DigestRenderer())
    return _default[0]


def render_digest(result: RankResult, *, name: str, email: str, edition: date, links: Links, site_name: str = "Paper digest", interests: Sequence[str] = (), renderer: DigestRenderer | None = None) -> RenderedEmail:
    """Subject, HTML and text of one subscriber's email for `edition`. Pure: same input, same bytes."""
    return (renderer or default_renderer()).render(result, name=name, email=email, edition=edition, links=links, site_name=site_name, interests=interests)
