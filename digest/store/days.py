"""Papers by announcement day, for the public pages: what a day brought (light rows to order by the trending
score, then the few papers a page shows), the days before and after with papers, and a version of the stored
papers that changes whenever a fetch or import may have changed what the pages show.

A paper's announcement day is the UTC date it was first seen (Paper.first_seen): the day it came out on one of
the sources, whichever source brought it first. It must not rank or render: digest.rank orders, digest.web shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from ..models import Paper, PaperSource, Source, table_of
from . import read_rows

PAPER, PAPER_SOURCE, SOURCE = table_of(Paper), table_of(PaperSource), table_of(Source)


@dataclass(frozen=True)
class StoredPaper:
    """A stored paper with the names of the sources carrying it, and their kinds (arxiv-rss, arxiv-api, hf-daily,
    feed, file), in the same order."""

    paper: Paper
    sources: tuple[str, ...] = ()
    source_kinds: tuple[str, ...] = ()


@dataclass(frozen=True)
class DayPaper:
    """What ordering a day's papers needs: no text."""

    id: int
    upvotes: int
    sources: int  # distinct sources carrying it
    first_seen: datetime


@dataclass(frozen=True)
class PapersVersion:
    """Changes whenever the pages may change: a paper added, a fetch or import recorded, a source removed."""

    newest_id: int
    changed_at: datetime | None  # the latest fetch or first sighting: a page's Last-Modified
    sources: int

    @property
    def tag(self) -> str:
        stamp = self.changed_at.isoformat() if self.changed_at else "-"
        return f"{self.newest_id}.{stamp}.{self.sources}"


def day_start(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=timezone.utc)


def day_of(instant: datetime) -> date:
    return instant.astimezone(timezone.utc).date()


def day_papers(engine: Engine, first: date, last: date | None = None) -> list[DayPaper]:
    """Every paper first seen on the days first..last (UTC, inclusive), with its upvotes and number of sources."""
    since, until = day_start(first), day_start((last or first) + timedelta(days=1))
    carried = sa.func.count(sa.distinct(PAPER_SOURCE.c.source_id))
    query = (
        sa.select(PAPER.c.id, PAPER.c.upvotes, carried, PAPER.c.first_seen)
        .select_from(PAPER.outerjoin(PAPER_SOURCE, PAPER_SOURCE.c.paper_id == PAPER.c.id))
        .where(PAPER.c.first_seen >= since, PAPER.c.first_seen < until)
        .group_by(PAPER.c.id, PAPER.c.upvotes, PAPER.c.first_seen)
    )
    return [DayPaper(pid, upvotes or 0, count, seen) for pid, upvotes, count, seen in read_rows(engine, query)]


def papers_by_ids(target: Engine | Connection, ids: Sequence[int]) -> list[StoredPaper]:
    """The papers with these ids, in this order (ids not stored are left out), each with its sources' names and kinds."""
    if not ids:
        return []
    wanted = list(dict.fromkeys(ids))
    rows = _rows(target, sa.select(PAPER).where(PAPER.c.id.in_(wanted)))
    carried: dict[int, list[tuple[str, str]]] = {pid: [] for pid in wanted}
    query = (
        sa.select(PAPER_SOURCE.c.paper_id, SOURCE.c.name, SOURCE.c.kind)
        .join(SOURCE, SOURCE.c.id == PAPER_SOURCE.c.source_id)
        .where(PAPER_SOURCE.c.paper_id.in_(wanted))
        .order_by(PAPER_SOURCE.c.first_seen, PAPER_SOURCE.c.id)
    )
    for pid, name, kind in _rows(target, query):
        carried[pid].append((name, kind))
    papers = {row.id: Paper.model_validate(dict(row._mapping)) for row in rows}
    return [StoredPaper(papers[pid], tuple(n for n, _ in carried[pid]), tuple(k for _, k in carried[pid])) for pid in wanted if pid in papers]


def neighbour_days(engine: Engine, day: date) -> tuple[date | None, date | None]:
    """The nearest day before `day` with papers, and the nearest after it (None where there is none)."""
    before = read_rows(engine, sa.select(sa.func.max(PAPER.c.first_seen)).where(PAPER.c.first_seen < day_start(day)))[0][0]
    after = read_rows(engine, sa.select(sa.func.min(PAPER.c.first_seen)).where(PAPER.c.first_seen >= day_start(day + timedelta(days=1))))[0][0]
    return (day_of(before) if before else None, day_of(after) if after else None)


# One statement, built once: four aggregates over indexed columns (paper) or a tiny table (source).
_VERSION = sa.select(
    sa.select(sa.func.max(PAPER.c.id)).scalar_subquery(),
    sa.select(sa.func.max(PAPER.c.first_seen)).scalar_subquery(),
    sa.select(sa.func.max(SOURCE.c.last_fetch_at)).scalar_subquery(),
    sa.select(sa.func.count()).select_from(SOURCE).scalar_subquery(),
)


def papers_version(engine: Engine) -> PapersVersion:
    """What the pages' caches are keyed on; one cheap query."""
    newest_id, newest_seen, fetched, sources = read_rows(engine, _VERSION)[0]
    moments = [t for t in (newest_seen, fetched) if t is not None]
    return PapersVersion(newest_id or 0, max(moments) if moments else None, int(sources or 0))


def _rows(target: Engine | Connection, statement) -> list:
    if isinstance(target, Connection):
        return list(target.execute(statement))
    return read_rows(target, statement)
