"""Sent editions as the web shows them (/edition/<token>): what the ledger recorded an email carried, and how it
showed it (the picks with their reasons, then the trending papers), so the page stays the same whatever the
ranking does later.

record_edition_contents is written by the delivery loop next to record_sent (same transaction; for several sent
emails at once, record_sent_many writes edition_contents with them); sent_edition reads it back. It must not rank, render or send.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from ..models import Delivery, table_of
from . import read_rows

_delivery = table_of(Delivery)


@dataclass(frozen=True)
class SentEdition:
    """One sent email: its papers in the email's order; `picks` (paper id, reasons) and `trending` (paper ids) when
    the delivery recorded how it showed them (None for emails sent before that was recorded)."""

    delivery_id: int
    subscriber_id: int
    edition: str  # YYYY-MM-DD
    sent_at: datetime | None
    papers: list[int]
    picks: list[tuple[int, tuple[str, ...]]] | None = None
    trending: list[int] | None = None


def edition_contents(picks: Sequence[tuple[int, Sequence[str]]], trending: Sequence[int], until: datetime | None = None) -> dict:
    """The JSON kept in delivery.contents: the picks in order with their reasons, then the trending papers not
    among the picks (as the email shows them); `until`, of a deferred copy that may have arrived, where its window
    ended (read_replay)."""
    shown = {pid for pid, _ in picks}
    # Typed ints and strs already (the JSON is the same from a tuple as from a list): no conversion per value, for
    # this is made for every email sent.
    out = {"picks": [[pid, list(reasons)] for pid, reasons in picks], "trending": [pid for pid in dict.fromkeys(trending) if pid not in shown]}
    if until is not None:
        out["until"] = until.isoformat()
    return out


_CONTENTS = sa.update(_delivery).where(_delivery.c.id == sa.bindparam("delivery_id_")).values(contents=sa.bindparam("contents_", type_=_delivery.c.contents.type))


def record_edition_contents(conn: Connection, delivery_id: int, picks: Sequence[tuple[int, Sequence[str]]], trending: Sequence[int], until: datetime | None = None) -> None:
    """Record how delivery `delivery_id` showed its papers; call it with record_sent (or record_deferred), in the same
    transaction."""
    conn.execute(_CONTENTS, {"delivery_id_": delivery_id, "contents_": edition_contents(picks, trending, until)})


def sent_edition(engine: Engine, subscriber_id: int, edition: str) -> SentEdition | None:
    """The subscriber's edition `edition` if the mail server accepted it ('sent'), else None."""
    query = (sa.select(_delivery.c.id, _delivery.c.papers, _delivery.c.contents, _delivery.c.sent_at)
             .where(_delivery.c.subscriber_id == subscriber_id, _delivery.c.edition == edition, _delivery.c.state == "sent"))
    rows = read_rows(engine, query)
    if not rows:
        return None
    delivery_id, papers, contents, sent_at = rows[0]
    picks, trending = read_contents(contents) or (None, None)
    return SentEdition(delivery_id, subscriber_id, edition, sent_at, [int(p) for p in papers or ()],
                       list(picks) if picks is not None else None, list(trending) if trending is not None else None)


def read_contents(contents: object) -> tuple[tuple[tuple[int, tuple[str, ...]], ...], tuple[int, ...]] | None:
    """(picks with their reasons, trending ids) from delivery.contents as edition_contents wrote it; None when there
    is none (an older row) or it is not that shape."""
    if not (isinstance(contents, dict) and isinstance(contents.get("picks"), list)):
        return None
    picks = tuple((int(pid), tuple(str(r) for r in reasons)) for pid, reasons in contents["picks"])
    return picks, tuple(int(pid) for pid in contents.get("trending") or ())


def read_replay(contents: object) -> tuple[tuple[tuple[tuple[int, tuple[str, ...]], ...], tuple[int, ...]], datetime] | None:
    """(contents, until) of a deferred copy that may have arrived (record_deferred wrote them), else None."""
    shown = read_contents(contents)
    if shown is None or not isinstance(contents, dict) or not isinstance(contents.get("until"), str):
        return None
    try:
        return shown, datetime.fromisoformat(contents["until"])
    except ValueError:
        return None
