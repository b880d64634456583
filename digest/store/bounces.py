"""The ledger's side of a bounce that arrives after the relay accepted an edition (digest.delivery.bounces reads
the report): the edition's row becomes 'failed', and its subscriber is marked 'bounced' when the address is dead
or BOUNCE_LIMIT editions in a row have failed. A report is matched by the returned Message-ID, never by address
alone: a forged report cannot stop anyone's mail without the id of an email sent to them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from ..models import Delivery, Subscriber
from . import wrap_db_error
from .deliveries import BOUNCE_LIMIT

_delivery = Delivery.__table__  # type: ignore[attr-defined]
_subscriber = Subscriber.__table__  # type: ignore[attr-defined]
BOUNCED_PREFIX = "bounced after the relay accepted it: "
# A row the relay may have accepted: sent; sending or deferred when the answer to the whole message never came.
_RETURNABLE = ("sent", "sending", "deferred")


@dataclass(frozen=True)
class Recorded:
    """What one report did: 'bounced' (the subscriber gets no more mail), 'counted' (one more failed edition),
    'already' (this edition's failure was recorded before) or 'unknown' (no edition of ours has that Message-ID)."""

    result: str
    email: str | None = None
    edition: str | None = None
    failed_in_a_row: int = 0


def record_returned_edition(engine: Engine, message_ids: Sequence[str], *, dead_address: bool, error: str, now: datetime) -> Recorded:
    """Record that the edition sent with one of `message_ids` came back undelivered (`error` says why)."""
    if not message_ids:
        return Recorded("unknown")
    try:
        with engine.begin() as conn:
            row = conn.execute(sa.select(_delivery.c.id, _delivery.c.subscriber_id, _delivery.c.edition, _delivery.c.state)
                               .where(_delivery.c.message_id.in_(list(message_ids))).limit(1)).first()
            if row is None:
                return Recorded("unknown")
            sub = conn.execute(sa.select(_subscriber.c.email, _subscriber.c.status, _subscriber.c.consecutive_bounces)
                               .where(_subscriber.c.id == row.subscriber_id)).one()
            changed = conn.execute(_delivery.update().where(_delivery.c.id == row.id, _delivery.c.state.in_(_RETURNABLE))
                                   .values(state="failed", last_error=BOUNCED_PREFIX + error, updated_at=now, worker=None,
                                           lease_expires_at=None)).rowcount
            if not changed:  # read before (the same report twice), or failed in the SMTP conversation itself
                if dead_address and row.state == "failed" and sub.status in ("active", "paused"):
                    conn.execute(_subscriber.update().where(_subscriber.c.id == row.subscriber_id).values(status="bounced"))
                    return Recorded("bounced", sub.email, row.edition, sub.consecutive_bounces)
                return Recorded("already", sub.email, row.edition, sub.consecutive_bounces)
            recent = conn.execute(sa.select(_delivery.c.state).where(_delivery.c.subscriber_id == row.subscriber_id,
                                                                     _delivery.c.state.in_(("sent", "failed")))
                                  .order_by(_delivery.c.edition.desc()).limit(BOUNCE_LIMIT)).scalars().all()
            in_a_row = next((n for n, state in enumerate(recent) if state != "failed"), len(recent))
            failed = max(in_a_row, sub.consecutive_bounces)  # the SMTP conversation's own count, if it is higher
            values: dict = {"consecutive_bounces": failed}
            bounced = (dead_address or failed >= BOUNCE_LIMIT) and sub.status in ("active", "paused")
            if bounced:
                values["status"] = "bounced"
            conn.execute(_subscriber.update().where(_subscriber.c.id == row.subscriber_id).values(**values))
            return Recorded("bounced" if bounced else "counted", sub.email, row.edition, failed)
    except SQLAlchemyError as exc:
        raise wrap_db_error(exc, engine) from None
