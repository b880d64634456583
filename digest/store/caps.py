"""The caps on confirmation emails: at most one per confirm_interval seconds and confirm_daily_limit per 24 hours to
one inbox, whoever asks, from however many clients, web processes or hosts. It must not send, and knows nothing of
subscribers: digest.store.subscribers.request_confirmation claims a slot here before it keeps a request.

Counted per inbox (digest.addresses.canonical_address: ada+1@, ada+2@ and Ada@ reach ada@'s one inbox), one
confirm_inbox row each, in the database every `digest web` process shares. A claim is a compare-and-set on the row's
version: of two requests that read the same row (threads, processes, hosts; SQLite or PostgreSQL) one passes, and
the other matches nothing and is refused; a first claim inserts the row, and of two inserts the UNIQUE inbox keeps
one (the other reads the winner's row and is held to it).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import CursorResult
from sqlmodel import Session, col, select

from ..addresses import canonical_address
from ..models import ConfirmInbox

CONFIRM_WINDOW = timedelta(days=1)  # confirm_daily_limit counts the emails of the last 24 hours


def claim_confirmation(session: Session, address: str, now: datetime, *, interval: float, daily_limit: int) -> bool:
    """Count one confirmation email to `address`'s inbox at `now` unless that breaks a cap; True if it may be sent.
    On SQLite the caller holds the write lock (BEGIN IMMEDIATE) before it asks."""
    if daily_limit < 1:
        return False
    inbox = canonical_address(address)
    row = _inbox_row(session, inbox)
    if row is None:
        try:
            with session.begin_nested():
                session.add(ConfirmInbox(inbox=inbox, emails=[now.isoformat()], version=1, updated_at=now))
                session.flush()
            return True
        except sa.exc.IntegrityError:  # a concurrent request claimed this inbox's first slot
            row = _inbox_row(session, inbox)
            if row is None:
                raise
    version = row.version
    recent = recent_emails(row.emails, now)
    if recent and now - max(recent) < timedelta(seconds=interval) or len(recent) >= daily_limit:
        return False
    return _set_emails(session, row, version, [*recent, now], now)


def recent_emails(times: list[str] | None, now: datetime) -> list[datetime]:
    """The times (ISO strings, as stored) of the confirmation emails of the CONFIRM_WINDOW before `now`."""
    return [t for t in map(datetime.fromisoformat, times or []) if t > now - CONFIRM_WINDOW]


def release_confirmation(session: Session, address: str, sent_at: datetime) -> None:
    """Give back the slot claimed at `sent_at` when that email could not be sent, so the reader may ask again."""
    row = _inbox_row(session, canonical_address(address))
    if row is None:
        return
    times = [t for t in map(datetime.fromisoformat, row.emails or []) if t != sent_at]
    if len(times) < len(row.emails or []):
        _set_emails(session, row, row.version, times, row.updated_at)  # lost to a concurrent change: the slot stays taken


def _inbox_row(session: Session, inbox: str) -> ConfirmInbox | None:
    # populate_existing: another request may have claimed since this session first loaded the row
    return session.exec(select(ConfirmInbox).where(col(ConfirmInbox.inbox) == inbox).execution_options(populate_existing=True)).first()


def _set_emails(session: Session, row: ConfirmInbox, version: int, times: list[datetime], now: datetime) -> bool:
    result = cast(CursorResult[Any], session.execute(
        sa.update(ConfirmInbox)
        .where(col(ConfirmInbox.id) == row.id, col(ConfirmInbox.version) == version)
        .values(emails=[t.isoformat() for t in sorted(times)], version=version + 1, updated_at=now)
        .execution_options(synchronize_session=False)
    ))
    session.expire(row)  # the loaded values are stale either way
    return result.rowcount == 1
