"""The public pages: the front page (`/`: the last days' papers ordered by the trending score, with the Subscribe
box on top), one day's papers (`/day/YYYY-MM-DD`), search over titles and abstracts (`/search`) and the Atom feed
of the front page's list (`/feed.xml`).

Nothing here is personal and nothing needs a token: pages are rendered once per day and data version
(digest.web.cache) and answer 304 to a browser that has them. Papers come from digest.store (days, search),
their order from digest.rank.trending_scores (the email's "Trending today" uses the same score), the look of a
paper from digest.render's paper_view (the email's). The Subscribe box posts to /subscribe (digest.web.pages):
double opt-in, CSRF, rate limit and caps are that page's, and each ticked "More like this" becomes a seed paper.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from urllib.parse import urlsplit

from flask import Blueprint, abort, request

from ..rank import Candidate, trending_scores
from ..render import clean_text, long_date, paper_view, reason_line, web_url
from ..store.candidates import StoredPaper
from ..store.days import DayPaper, day_of, day_papers, day_start, neighbour_days, papers_by_ids
from ..store.search import search_papers
from .cache import cached_page, render_with_slots
from .context import web_context

front = Blueprint("front", __name__)
FRONT_DAYS = 3  # `/` and the feed: today and the two days before
FRONT_PER_DAY = 20  # papers of each day on `/` (the rest on /day/...)
DAY_PAGE = 50  # papers per page of /day/...
SEARCH_PAGE = 20
SEARCH_MAX = 200  # characters of a search query
MAX_PAGE = 1_000  # ?page= beyond this is refused (no one pages that far; OFFSET grows with it)
FOLD_AT = 320  # characters of abstract shown before "more"
AUTHORS_IN_FEED = 50
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(])")
# Dropped from a search query, which the page shows back: control characters (a NUL was written into the page) and
# the bidi embeddings, overrides and isolates (U+202E in a crafted link reversed the sentence around the query). No
# title or abstract is found by them; a right-to-left word is kept, and the page isolates the query in <bdi>.
_QUERY_NOISE = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


@dataclass(frozen=True)
class DaySection:
    day: date
    title: str
    count: int
    cards: list[dict]


# --- what the pages show ------------------------------------------------------------------------------


def fold_abstract(text: str, limit: int = FOLD_AT) -> tuple[str, str]:
    """(lead, rest): the abstract cut after the last sentence (or word) that fits in `limit` characters; rest is ""
    when the whole abstract fits. The page shows the lead, and the rest behind a native <details>."""
    if len(text) <= limit + 80:  # a few words more are not worth a fold
        return text, ""
    cut = 0
    for match in _SENTENCE_END.finditer(text):
        if match.start() > limit:
            break
        cut = match.start()
    if cut < limit // 2:
        cut = text.rfind(" ", 0, limit)
        cut = cut if cut > limit // 2 else limit
    return text[:cut].rstrip(), text[cut:].lstrip()


def seed_ident(paper) -> str:
    """The identifier a "More like this" tick sends: the arXiv id where known (what the preferences page shows)."""
    return paper.arxiv_id or paper.doi or paper.ident


def paper_card(stored: StoredPaper, reasons: Sequence[str] = ()) -> dict:
    """What a page shows of one paper: the email's card (title, authors, badges, upvotes, links), the whole
    abstract folded, the code link, and the reason line of an edition's pick."""
    paper = stored.paper
    lead, rest = fold_abstract(clean_text(paper.abstract))
    code = (paper.github_repo or "").strip()
    if code and "://" not in code and re.fullmatch(r"[\w.-]+/[\w.-]+", code):  # "owner/name"
        code = f"https://github.com/{code}"
    return {
        **paper_view(Candidate(paper, stored.sources, stored.source_kinds)), "id": paper.id, "key": paper.key, "anchor": f"paper-{paper.id}", "ident": seed_ident(paper),
        "lead": lead, "rest": rest, "abstract": " ".join(part for part in (lead, rest) if part), "code_url": web_url(code),
        "reason": reason_line(reasons) if reasons else "", "first_seen": paper.first_seen,
        "author_names": [name for name in (clean_text(a) for a in (paper.authors or ())[:AUTHORS_IN_FEED]) if name],
    }


def trending_order(papers: Sequence[DayPaper]) -> list[DayPaper]:
    """Best first by digest.rank.trending_scores over `papers` (one day's); ties keep the order papers were stored."""
    scores = trending_scores([p.upvotes for p in papers], [p.sources for p in papers], [p.first_seen for p in papers]).tolist()
    return [p for _, p in sorted(zip(scores, papers), key=lambda pair: (-pair[0], pair[1].id))]


def front_sections(engine, today: date) -> list[DaySection]:
    """The front page's list: each of the last FRONT_DAYS days that has papers, newest first, its best
    FRONT_PER_DAY papers by the trending score."""
    by_day: dict[date, list[DayPaper]] = {}
    for paper in day_papers(engine, today - timedelta(days=FRONT_DAYS - 1), today):
        by_day.setdefault(day_of(paper.first_seen), []).append(paper)
    sections = []
    for day in sorted(by_day, reverse=True):
        shown = trending_order(by_day[day])[:FRONT_PER_DAY]
        cards = [paper_card(c) for c in papers_by_ids(engine, [p.id for p in shown])]
        sections.append(DaySection(day, long_date(day), len(by_day[day]), cards))
    return sections


def _page_number() -> int:
    try:
        page = int(request.args.get("page", "1"))
    except ValueError:
        abort(404)
    if not 1 <= page <= MAX_PAGE:
        abort(404)
    return page


def _last_modified(changed_at: datetime | None, today: date) -> datetime:
    """The data's last change, but never before today began: the pages change with the day too."""
    start = day_start(today)
    return max(changed_at, start) if changed_at else start


# --- pages --------------------------------------------------------------------------------------------


def front_page_key(ctx) -> tuple[tuple, date, datetime]:
    """(the cache key of `/` now, today, its Last-Modified): for index() and digest.web.fast alike."""
    today = day_of(ctx.now())
    version = ctx.papers_version()
    return ("front", today, version.tag), today, _last_modified(version.changed_at, today)


@front.get("/")
def index():
    ctx = web_context()
    key, today, last_modified = front_page_key(ctx)

    def render() -> str:
        sections = front_sections(ctx.engine, today)
        quiet_since = None
        if not sections or sections[0].day != today:
            quiet_since = neighbour_days(ctx.engine, today + timedelta(days=1))[0]  # the last day with papers
        return render_with_slots("page_front.html", sections=sections, today=today, today_long=long_date(today), last_day=quiet_since,
                                 last_day_long=long_date(quiet_since) if quiet_since else "")

    return cached_page(ctx.page_cache, ctx.csrf, key, last_modified, render, with_form=True)


@front.get("/day/<day>")
def day(day: str):
    try:
        shown = date.fromisoformat(day)
    except ValueError:
        abort(404)
    if shown.isoformat() != day:  # one address per day: 2026-1-5 is not a page
        abort(404)
    page = _page_number()
    ctx = web_context()
    today = day_of(ctx.now())
    version = ctx.papers_version()

    def render() -> str:
        ordered = trending_order(day_papers(ctx.engine, shown))
        pages = max(1, -(-len(ordered) // DAY_PAGE))
        if page > pages:
            abort(404)
        chunk = ordered[(page - 1) * DAY_PAGE : page * DAY_PAGE]
        cards = [paper_card(c) for c in papers_by_ids(ctx.engine, [p.id for p in chunk])]
        before, after = neighbour_days(ctx.engine, shown)
        return render_with_slots("page_day.html", day=shown, day_long=long_date(shown), cards=cards, count=len(ordered), page=page, pages=pages,
                                 first=(page - 1) * DAY_PAGE + 1, before=before, after=after, is_today=shown == today)

    return cached_page(ctx.page_cache, ctx.csrf, ("day", shown, page, today, version.tag), _last_modified(version.changed_at, today), render)


@front.get("/search")
def search():
    query = " ".join(_QUERY_NOISE.sub(" ", request.args.get("q", "")).split())[:SEARCH_MAX]
    page = _page_number()
    ctx = web_context()
    today = day_of(ctx.now())
    version = ctx.papers_version()

    def render() -> str:
        results = search_papers(ctx.engine, query, limit=SEARCH_PAGE, offset=(page - 1) * SEARCH_PAGE)
        pages = max(1, -(-results.total // SEARCH_PAGE))
        if page > pages:
            abort(404)
        return render_with_slots("page_search.html", query=query, cards=[paper_card(c) for c in results.papers], total=results.total,
                                 page=page, pages=pages, first=(page - 1) * SEARCH_PAGE + 1, pending=results.pending)

    # Not kept in memory (queries are many and seldom repeated), but a browser's repeat gets its 304.
    return cached_page(None, ctx.csrf, ("search", query, page, today, version.tag), _last_modified(version.changed_at, today), render)


@front.get("/feed.xml")
def feed():
    ctx = web_context()
    today = day_of(ctx.now())
    version = ctx.papers_version()
    base = ctx.settings.base_url.rstrip("/")

    def render() -> str:
        sections = front_sections(ctx.engine, today)
        entries = [(section.day, card, entry_id(card["key"])) for section in sections for card in section.cards]
        updated = _last_modified(version.changed_at, today)
        return render_with_slots("feed.xml", entries=entries, base=base, feed_id=feed_id(base), updated=atom_time(updated), atom_time=atom_time)

    return cached_page(ctx.page_cache, ctx.csrf, ("feed", base, today, version.tag), _last_modified(version.changed_at, today), render,
                       mimetype="application/atom+xml")


# --- the feed's identifiers ---------------------------------------------------------------------------


def entry_id(paper_key: str) -> str:
    """A paper's Atom id: stable for ever (from its dedupe key, not from the site's address or the day)."""
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, 'digest:paper:' + paper_key)}"


def feed_id(base_url: str) -> str:
    host = urlsplit(base_url).netloc or "localhost"
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, 'digest:feed:' + host + urlsplit(base_url).path)}"


def atom_time(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
