"""The tables. Only digest.store opens the database; other modules may read these classes as plain records.

Lists (authors, interests...) are JSON columns so SQLite and PostgreSQL store them alike.
Times are timezone-aware UTC in Python and stored as UTC.
Primary keys and NOT NULL times are typed as every stored row has them (int, datetime): on a new object they are
None only until the code that makes it sets them or the session flushes it.
Every change to these classes needs an Alembic revision in digest/migrations/versions.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator
from sqlmodel import JSON, Column, Field, SQLModel


class UTCDateTime(TypeDecorator):
    """Aware UTC datetimes in and out, whatever the backend (SQLite keeps no zone)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


def table_of(model: type[SQLModel]) -> sa.Table:
    """The Core table of a model class, for bulk statements (SQLModel sets __table__ but does not declare it)."""
    table = sa.inspect(model).local_table
    assert isinstance(table, sa.Table)
    return table


def _ts(nullable: bool = True, index: bool = False) -> Any:
    return Field(default=None, sa_column=Column(UTCDateTime(), nullable=nullable, index=index))


def _json(default: Any = list) -> Any:
    return Field(default_factory=default, sa_column=Column(JSON, nullable=False))


class Paper(SQLModel, table=True):
    """One row per paper, whatever the source: `key` is the canonical dedupe key."""

    id: int = Field(default=None, primary_key=True)
    # TEXT, not VARCHAR(n), for identifiers: PostgreSQL enforces a VARCHAR's length (SQLite does not), so one long
    # guid or DOI stopped a whole fetch there only. Lengths are bounded by digest.sources.check instead, and the key
    # by paper_key (at most 512 characters, small enough for the unique btree index).
    key: str = Field(sa_column=Column(sa.Text, nullable=False, unique=True))
    ident: str = Field(sa_column=Column(sa.Text, nullable=False, index=True))  # id as the source gave it
    arxiv_id: str | None = Field(default=None, sa_column=Column(sa.Text, index=True))
    version: int | None = None
    doi: str | None = Field(default=None, sa_column=Column(sa.Text, index=True))
    title: str = Field(sa_column=Column(sa.Text, nullable=False))
    abstract: str = Field(default="", sa_column=Column(sa.Text, nullable=False))
    authors: list = _json()
    categories: list = _json()
    url: str | None = Field(default=None, sa_column=Column(sa.Text))
    pdf_url: str | None = Field(default=None, sa_column=Column(sa.Text))
    announce_type: str | None = Field(default=None, sa_column=Column(sa.String(32)))
    upvotes: int = 0
    ai_summary: str | None = Field(default=None, sa_column=Column(sa.Text))
    github_repo: str | None = Field(default=None, sa_column=Column(sa.Text))
    published: datetime | None = _ts()
    updated: datetime | None = _ts()
    first_seen: datetime = _ts(nullable=False, index=True)
    last_seen: datetime = _ts(nullable=False)


class Source(SQLModel, table=True):
    """A place papers come from, and its polite-fetching state."""

    id: int = Field(default=None, primary_key=True)
    name: str = Field(sa_column=Column(sa.Text, nullable=False, unique=True))  # "file:" + a file name may pass 255
    kind: str = Field(sa_column=Column(sa.String(32), nullable=False))  # arxiv-rss, arxiv-api, hf-daily, feed, file
    url: str = Field(sa_column=Column(sa.Text, nullable=False))
    enabled: bool = True
    etag: str | None = Field(default=None, sa_column=Column(sa.Text))
    last_modified: str | None = Field(default=None, sa_column=Column(sa.Text))
    created_at: datetime = _ts(nullable=False)
    last_fetch_at: datetime | None = _ts()
    last_success_at: datetime | None = _ts()
    last_error_at: datetime | None = _ts()
    last_error: str | None = Field(default=None, sa_column=Column(sa.Text))
    consecutive_errors: int = 0
    last_fetch_count: int = 0  # papers stored by the last successful fetch (0 on a quiet day)
    last_fetch_skipped: int = Field(default=0, sa_column=Column(sa.Integer, nullable=False, server_default="0"))  # entries it refused
    papers_seen: int = 0
    disabled_reason: str | None = Field(default=None, sa_column=Column(sa.Text))


class PaperSource(SQLModel, table=True):
    """Which sources carry a paper: the same paper from arXiv and Hugging Face keeps both."""

    __tablename__ = "paper_source"
    __table_args__ = (
        sa.UniqueConstraint("paper_id", "source_id", name="uq_paper_source"),
        # A source's entry found again by its guid whatever its title now says (digest.store.papers); it leads with
        # source_id, so it also serves every lookup and cascade by source (migration 0011 replaced that index by it).
        sa.Index("ix_paper_source_item", "source_id", "item_id"),
    )
    id: int = Field(default=None, primary_key=True)
    paper_id: int = Field(sa_column=Column(sa.ForeignKey("paper.id", ondelete="CASCADE"), nullable=False, index=True))
    source_id: int = Field(sa_column=Column(sa.ForeignKey("source.id", ondelete="CASCADE"), nullable=False))
    # The entry's id inside that source (a feed's guid, else its link; a JSON Lines record's id), at most 512
    # characters as keys are, so the index above holds it on PostgreSQL.
    item_id: str | None = Field(default=None, sa_column=Column(sa.Text))
    first_seen: datetime = _ts(nullable=False)


class Subscriber(SQLModel, table=True):
    id: int = Field(default=None, primary_key=True)
    email: str = Field(sa_column=Column(sa.String(320), nullable=False, unique=True))  # stored lower-cased
    name: str = ""
    status: str = Field(default="active", sa_column=Column(sa.String(16), nullable=False, index=True))
    interests: list = _json()
    seed_papers: list = _json()
    muted_terms: list = _json()
    muted_authors: list = _json()
    categories: list = _json()
    max_papers: int = 10
    trending_weight: float = 0.2
    send_at: str = "07:00"
    tz: str = "UTC"
    frequency: str = "daily"  # daily | weekly:mon ... weekly:sun
    consecutive_bounces: int = 0
    # Bumped to revoke outstanding links (confirm is usable once). It starts random because SQLite may give a
    # deleted subscriber's id to a new one: old links (id + version) must not act for the newcomer.
    token_version: int = Field(default_factory=lambda: secrets.randbelow(2**31))
    created_at: datetime = _ts(nullable=False)
    confirmed_at: datetime | None = _ts()
    unsubscribed_at: datetime | None = _ts()
    last_digest_at: datetime | None = _ts()
    # When the confirmation emails of the last 24 hours went to this address (ISO times), and a counter bumped with each
    # one: a record (the prune deletes an address that never confirmed a month after its last, unless one was claimed
    # since it read the row). The caps themselves count per inbox, on ConfirmInbox (since migration 0013).
    confirm_emails: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False, server_default="[]"))
    confirm_version: int = Field(default=0, sa_column=Column(sa.Integer, nullable=False, server_default="0"))
    # When the ranking profile (interests, seed papers...: RANKING_FIELDS in digest.store.subscribers) was last set: by
    # every add, and by an update, import or confirmed request that changes it; NULL for one not changed since 0012. `digest prune` reads every seed list
    # once and then only those changed since (digest.store.retention).
    profile_changed_at: datetime | None = _ts(index=True)


class Feedback(SQLModel, table=True):
    __table_args__ = (sa.UniqueConstraint("subscriber_id", "paper_id", name="uq_feedback"),)
    id: int = Field(default=None, primary_key=True)
    subscriber_id: int = Field(sa_column=Column(sa.ForeignKey("subscriber.id", ondelete="CASCADE"), nullable=False, index=True))
    paper_id: int = Field(sa_column=Column(sa.ForeignKey("paper.id", ondelete="CASCADE"), nullable=False, index=True))  # prune's cascade
    value: int = 1  # +1 like, -1 dislike
    created_at: datetime = _ts(nullable=False)


class Delivery(SQLModel, table=True):
    """The ledger: one row per (subscriber, edition). An edition is the subscriber's local date."""

    __table_args__ = (
        sa.UniqueConstraint("subscriber_id", "edition", name="uq_delivery"),
        # The rows a worker may still claim, in claim order: finished rows (nearly all, after a while) are not scanned.
        sa.Index("ix_delivery_open", "edition", "id", postgresql_where=sa.text("state IN ('pending', 'sending', 'deferred')"),
                 sqlite_where=sa.text("state IN ('pending', 'sending', 'deferred')")),
    )
    id: int = Field(default=None, primary_key=True)
    # Indexed by uq_delivery, which leads with it: a second index of its own cost every row written (migration 0007).
    subscriber_id: int = Field(sa_column=Column(sa.ForeignKey("subscriber.id", ondelete="CASCADE"), nullable=False))
    edition: str = Field(sa_column=Column(sa.String(10), nullable=False, index=True))  # YYYY-MM-DD
    state: str = Field(default="pending", sa_column=Column(sa.String(16), nullable=False, index=True))
    # pending -> sending -> sent | failed | skipped ; deferred = 4xx, retried next run
    attempts: int = 0
    last_error: str | None = Field(default=None, sa_column=Column(sa.Text))
    message_id: str | None = Field(default=None, sa_column=Column(sa.String(255)))
    papers: list = _json()  # paper ids carried, in order
    # How the email showed them (digest.store.editions): {"picks": [[id, [reason, ...]], ...], "trending": [id, ...]};
    # NULL when not recorded. /edition/<token> shows the edition from here, not from a new ranking.
    contents: dict | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    created_at: datetime = _ts(nullable=False)
    updated_at: datetime | None = _ts()
    sent_at: datetime | None = _ts()
    # On PostgreSQL, the worker that claimed the row and until when (the database's clock) its claim holds; its
    # heartbeat moves lease_expires_at on while it sends, and another worker takes the row over once it has passed.
    # NULL when no worker holds it (always on SQLite, where the run lock is a file).
    worker: str | None = Field(default=None, sa_column=Column(sa.String(128), nullable=True))
    lease_expires_at: datetime | None = _ts()


class SendPace(SQLModel, table=True):
    """A send_rate shared by every worker on every host (PostgreSQL): the earliest instant, on the database's clock,
    at which the next message may be handed over. Each worker moves it on by its reservation in one statement."""

    __tablename__ = "send_pace"
    name: str = Field(sa_column=Column(sa.String(64), primary_key=True))
    next_at: datetime = _ts(nullable=False)


class SentPaper(SQLModel, table=True):
    """A paper sent to a subscriber is never sent to them again."""

    __tablename__ = "sent_paper"
    __table_args__ = (sa.UniqueConstraint("subscriber_id", "paper_id", name="uq_sent_paper"),)
    id: int = Field(default=None, primary_key=True)
    # Indexed by uq_sent_paper, which leads with it: a second index of its own cost every row written (migration 0007).
    subscriber_id: int = Field(sa_column=Column(sa.ForeignKey("subscriber.id", ondelete="CASCADE"), nullable=False))
    paper_id: int = Field(sa_column=Column(sa.ForeignKey("paper.id", ondelete="CASCADE"), nullable=False, index=True))  # sent_among, prune
    delivery_id: int | None = Field(default=None, sa_column=Column(sa.ForeignKey("delivery.id", ondelete="SET NULL"), index=True))
    sent_at: datetime = _ts(nullable=False)


class PendingProfile(SQLModel, table=True):
    """A profile asked for on the subscribe page, kept apart until its confirmation link is clicked: one row per
    confirmation email sent (the caps bound them), named by that email's link, so a request from a stranger never
    rewrites a stored profile and an earlier link never applies a later request (digest.store.subscribers)."""

    __tablename__ = "pending_profile"
    id: int = Field(default=None, primary_key=True)
    subscriber_id: int = Field(sa_column=Column(sa.ForeignKey("subscriber.id", ondelete="CASCADE"), nullable=False, index=True))
    fields: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))  # SubscriberInput's given fields, validated
    created_at: datetime = _ts(nullable=False)


class ConfirmInbox(SQLModel, table=True):
    """The caps on confirmation emails, per inbox (digest.addresses.canonical_address: ada+1@ and Ada@ are ada@): when
    those of the last 24 hours went out (ISO times), and a counter bumped with each change for a compare-and-set
    (digest.store.caps). In the database, so every web process and host counts alike."""

    __tablename__ = "confirm_inbox"
    id: int = Field(default=None, primary_key=True)
    inbox: str = Field(sa_column=Column(sa.String(320), nullable=False, unique=True))
    emails: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    version: int = Field(default=0, sa_column=Column(sa.Integer, nullable=False))
    updated_at: datetime = _ts(nullable=False, index=True)  # the last claim: `digest prune` deletes a row a day after


class Heartbeat(SQLModel, table=True):
    """The last sign of life of each daemon and one-shot command, one row per host and kind ('daemon', 'run', 'send',
    'worker'), upserted in place (digest.store.heartbeats): when it was last seen, how its last job ended, and for a
    daemon its tick and whether it was stopped cleanly. Keyed on the host, not the pid, so a restart never adds a row;
    `digest prune` deletes a host's rows 30 days after it was last seen. `digest status --check` judges them
    (digest.health.heartbeat_problems)."""

    __tablename__ = "heartbeat"
    __table_args__ = (sa.UniqueConstraint("kind", "host", name="uq_heartbeat"),)
    id: int = Field(default=None, primary_key=True)
    kind: str = Field(sa_column=Column(sa.String(16), nullable=False))
    host: str = Field(sa_column=Column(sa.String(255), nullable=False))
    pid: int = Field(sa_column=Column(sa.Integer, nullable=False))  # the process that wrote last
    tick_seconds: int | None = Field(default=None, sa_column=Column(sa.Integer, nullable=True))  # a daemon's tick
    seen_at: datetime = _ts(nullable=False, index=True)  # the last beat: a tick, the daemon's own heartbeat, a command's end
    started_at: datetime | None = _ts()  # the last job's start
    finished_at: datetime | None = _ts()  # and its end (before started_at: a job is running)
    outcome: str | None = Field(default=None, sa_column=Column(sa.String(16), nullable=True))  # ok | failed
    error: str | None = Field(default=None, sa_column=Column(sa.Text, nullable=True))  # a failed job's error, secrets masked
    stopped_at: datetime | None = _ts()  # a daemon stopped cleanly (SIGTERM, SIGINT); NULL while it runs


class UsedToken(SQLModel, table=True):
    """Single-use tokens (confirmation links) already spent, by their signature digest."""

    __tablename__ = "used_token"
    id: int = Field(default=None, primary_key=True)
    digest: str = Field(sa_column=Column(sa.String(128), nullable=False, unique=True))
    used_at: datetime = _ts(nullable=False)


class PaperEmbedding(SQLModel, table=True):
    """A paper's sentence embedding (rank_model = "hybrid"), computed once per model and text: `model` names the
    model and its version, `text_hash` the text it was computed from (a revised abstract is embedded again)."""

    __tablename__ = "paper_embedding"
    __table_args__ = (sa.UniqueConstraint("paper_id", "model", name="uq_paper_embedding"),)
    id: int = Field(default=None, primary_key=True)
    paper_id: int = Field(sa_column=Column(sa.ForeignKey("paper.id", ondelete="CASCADE"), nullable=False))
    model: str = Field(sa_column=Column(sa.Text, nullable=False))
    text_hash: str = Field(sa_column=Column(sa.String(64), nullable=False))
    vector: bytes = Field(sa_column=Column(sa.LargeBinary, nullable=False))  # little-endian float32
    created_at: datetime = _ts(nullable=False)


class InterestEmbedding(SQLModel, table=True):
    """A subscriber's interest embeddings, one float32 row per interest in order, kept until the interests change
    (`interests_hash`) or the model does."""

    __tablename__ = "interest_embedding"
    __table_args__ = (sa.UniqueConstraint("subscriber_id", "model", name="uq_interest_embedding"),)
    id: int = Field(default=None, primary_key=True)
    subscriber_id: int = Field(sa_column=Column(sa.ForeignKey("subscriber.id", ondelete="CASCADE"), nullable=False))
    model: str = Field(sa_column=Column(sa.Text, nullable=False))
    interests_hash: str = Field(sa_column=Column(sa.String(64), nullable=False))
    vectors: bytes = Field(sa_column=Column(sa.LargeBinary, nullable=False))  # little-endian float32, interests x dimensions
    created_at: datetime = _ts(nullable=False)
