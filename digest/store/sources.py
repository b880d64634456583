"""Sources in the store: add, list, find and remove them, and record each fetch's outcome (the polite-fetching state).

Nothing here fetches or parses; the caller passes the outcome in. Functions take a Session and leave the
commit to the caller's session_scope, so a fetch's papers and its state commit together.
"""

from __future__ import annotations

import re
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session, col

from ..errors import InputError, NotFoundError
from ..models import Source
from ..sources import FETCHED_KINDS, FILE_KIND
from ..sources.clean import CONTROL_CHARS

KINDS = (*FETCHED_KINDS, FILE_KIND)
ERROR_TEXT_MAX = 1_000


def add_source(session: Session, name: str, kind: str, url: str, now: datetime) -> Source:
    """A new enabled source; a name already taken is an InputError."""
    if kind not in KINDS:
        raise InputError(f"unknown source kind {kind!r}", f"expected one of {', '.join(KINDS)}")
    if not name.strip():
        raise InputError("a source needs a name")
    if find_source(session, name) is not None:
        raise InputError(f"a source named {name!r} already exists", "pick another --name or `digest sources remove` it first")
    source = Source(name=name, kind=kind, url=url, created_at=now)
    session.add(source)
    session.flush()
    return source


def find_source(session: Session, name: str) -> Source | None:
    return session.execute(sa.select(Source).where(col(Source.name) == name)).scalars().first()


def get_source(session: Session, name: str) -> Source:
    source = find_source(session, name)
    if source is None:
        raise NotFoundError(f"no source named {name!r}", "`digest sources list` shows the names")
    return source


def list_sources(session: Session, *, enabled_only: bool = False, include_files: bool = True) -> list[Source]:
    query = sa.select(Source).order_by(col(Source.id))
    if enabled_only:
        query = query.where(col(Source.enabled).is_(True))
    if not include_files:
        query = query.where(col(Source.kind) != FILE_KIND)
    return list(session.execute(query).scalars())


def remove_source(session: Session, name: str) -> None:
    """Forget a source and its links to papers (the papers stay: another source may carry them)."""
    source = get_source(session, name)
    session.delete(source)
    session.flush()


def set_source_enabled(session: Session, name: str, enabled: bool) -> bool:
    """Turn a source on or off by hand; False when it already was. Turned on, its errors in a row start again from
    zero (a 410 disabled it; the feed may be back); turned off, it says so in place of a reason."""
    source = get_source(session, name)
    if source.enabled == enabled:
        return False
    source.enabled = enabled
    source.disabled_reason = None if enabled else "disabled by hand (`digest sources enable` turns it on again)"
    if enabled:
        source.consecutive_errors = 0
    session.add(source)
    return True


def ensure_source(session: Session, name: str, kind: str, url: str, now: datetime) -> Source:
    """The source named `name`, created when missing (imported files become sources this way)."""
    source = find_source(session, name)
    if source is None:
        return add_source(session, name, kind, url, now)
    source.url = url
    return source


def _row(session: Session, source: Source | int) -> Source:
    if not isinstance(source, int):
        return source
    row = session.get(Source, source)
    if row is None:  # removed while its fetch ran
        raise NotFoundError(f"no source with id {source}")
    return row


def record_fetch_success(
    session: Session,
    source: Source | int,
    now: datetime,
    *,
    count: int | None,
    new_papers: int = 0,
    skipped: int = 0,
    etag: str | None = None,
    last_modified: str | None = None,
    url: str | None = None,
) -> None:
    """A fetch that worked. `count` (papers stored) None means the server said "not modified" (the last count and
    `skipped` stay); `new_papers` adds to papers_seen (papers this source carried for the first time); `skipped` is
    how many entries were refused (by the record check or the database); `url` is the new address after a permanent
    redirect. `source`: the row or its id."""
    source = _row(session, source)
    source.last_fetch_at = source.last_success_at = now
    source.consecutive_errors = 0
    source.last_error = None
    if count is not None:
        source.last_fetch_count = count
        source.last_fetch_skipped = skipped
        source.etag, source.last_modified = etag, last_modified
    source.papers_seen += new_papers
    if url and url != source.url:
        source.url = url
    session.add(source)


def record_fetch_error(session: Session, source: Source | int, now: datetime, error: str, *, disable: bool = False) -> None:
    """A fetch that failed; `disable` (HTTP 410 Gone) turns the source off and says why. `source`: the row or its id."""
    source = _row(session, source)
    error = error_text(error)
    source.last_fetch_at = source.last_error_at = now
    source.last_error = error
    source.consecutive_errors += 1
    if disable:
        source.enabled = False
        source.disabled_reason = error
    session.add(source)


# An error may quote the feed (an arXiv error entry's id, an entry's guid): control characters go, as PostgreSQL
# refuses NUL and a terminal would obey an escape sequence; a lone surrogate (no UTF-8) becomes U+FFFD.
_NOT_PRINTABLE = re.compile(f"[{CONTROL_CHARS}\ud800-\udfff]")


def error_text(error: str) -> str:
    """`error` as one storable, printable line of at most ERROR_TEXT_MAX characters."""
    error = error[:ERROR_TEXT_MAX]
    if error.isprintable():
        return error
    return _NOT_PRINTABLE.sub(lambda m: "\ufffd" if m.group() >= "\ud800" else " ", error)
