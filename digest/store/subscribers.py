"""Subscribers in the store: validation of addresses and profiles, add / update / status / remove,
feedback, the web's double opt-in, and CSV import / export.

It must not rank, render, send mail or know about HTTP; callers pass `now` (aware UTC) and own the session
(digest.store.session_scope commits once at the end, so a failing call leaves nothing half-written).
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from dataclasses import fields as dc_fields
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import IO, Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import CursorResult
from sqlmodel import Session, col, select

from ..addresses import ascii_address
from ..editions import parse_frequency, parse_send_at, parse_zone
from ..errors import InputError, NotFoundError
from ..models import Delivery, Feedback, Paper, PendingProfile, SentPaper, Subscriber, UsedToken
from ..sources.clean import arxiv_id_in
from ..taxonomy import TAXONOMY_URL, canonical_category, suggest_categories
from ..tokens import MAX_AGE
from . import begin_write
from .caps import claim_confirmation, recent_emails
from .papers import get_paper_by_ident

STATUSES = ("pending", "active", "paused", "unsubscribed", "bounced")
LIST_FIELDS = ("interests", "seed_papers", "muted_terms", "muted_authors", "categories")
CSV_COLUMNS = ("email", "name", *LIST_FIELDS, "max_papers", "trending_weight", "send_at", "tz", "frequency", "status")
# What the ranking reads of a row (rank.Profile): a change to one of them moves profile_changed_at; a new name, send
# time, time zone or frequency is saved without it (nothing read by that stamp depends on them).
RANKING_FIELDS = frozenset({*LIST_FIELDS, "max_papers", "trending_weight"})
LIST_SEPARATOR = ";"  # inside one CSV cell; an entry given with ';' in it becomes several entries
MAX_PAPERS_RANGE = (1, 100)
# The free-text lists' limits, one rule for the CLI, CSV import and the web pages: (entries, characters per entry). An
# interest is a few keywords or a sentence; thousands of them (or one of 60,000 characters) only slow every ranking.
LIST_LIMITS = {"interests": (20, 200), "muted_terms": (100, 200), "muted_authors": (100, 200)}
NAME_LIMIT = 200  # characters of a display name (the To line's); the longest interest may be as long
LIST_HINT = "`digest subscribers list` shows who is subscribed"


class FieldError(InputError):
    """A bad value in one profile field; `field` lets CSV import name the column."""

    def __init__(self, field: str, reason: str, hint: str | None = None) -> None:
        super().__init__(f"{field}: {reason}", hint)
        self.field, self.reason = field, reason


@dataclass(frozen=True)
class SubscriberInput:
    """Profile fields given by a user; None means "not given" (keep the current value, or the default)."""

    name: str | None = None
    interests: Sequence[str] | None = None
    seed_papers: Sequence[str] | None = None
    muted_terms: Sequence[str] | None = None
    muted_authors: Sequence[str] | None = None
    categories: Sequence[str] | None = None
    max_papers: int | str | None = None
    trending_weight: float | str | None = None
    send_at: str | None = None
    tz: str | None = None
    frequency: str | None = None


@dataclass(frozen=True)
class ImportReport:
    added: int
    updated: int  # something in the row changed
    unchanged: int


# --- validation -------------------------------------------------------------------------------------


def validate_email(address: str) -> str:
    """The normalised, lower-cased address; InputError naming the address and why it is not one.
    Mail goes out without SMTPUTF8, so the address must fit an ASCII envelope: a non-ASCII local part is
    refused and an internationalised domain is kept in its ASCII (IDNA) form."""
    try:
        return ascii_address(address).lower()
    except ValueError as exc:
        raise InputError(f"invalid email address {address!r}: {exc}", "give an address such as ada@example.org") from None


def validate_profile(fields: SubscriberInput) -> SubscriberInput:
    """A normalised copy of `fields`; FieldError names the first bad field and its value."""
    values: dict = {}
    if fields.name is not None:
        values["name"] = " ".join(str(fields.name).split())
        if len(values["name"]) > NAME_LIMIT:
            raise FieldError("name", f"keep the name to {NAME_LIMIT} characters at most ({len(values['name']):,} given)")
    for name in LIST_FIELDS:
        entries = getattr(fields, name)
        if entries is not None:
            values[name] = _check_limits(name, _clean_list(entries))
    if values.get("categories"):
        values["categories"] = list(dict.fromkeys(_category(c) for c in values["categories"]))
    if fields.max_papers is not None:
        values["max_papers"] = _whole_number("max_papers", fields.max_papers, *MAX_PAPERS_RANGE)
    if fields.trending_weight is not None:
        values["trending_weight"] = _fraction("trending_weight", fields.trending_weight)
    for name, parse in (("send_at", _send_at), ("tz", _zone), ("frequency", parse_frequency)):
        value = getattr(fields, name)
        if value is not None:
            try:
                values[name] = parse(str(value))
            except ValueError as exc:
                raise FieldError(name, str(exc)) from None
    return replace(fields, **values)


def _clean_list(entries: Iterable[str]) -> list[str]:
    if isinstance(entries, str):
        entries = [entries]
    kept, seen = [], set()
    for entry in entries:
        for part in str(entry).split(LIST_SEPARATOR):
            part = " ".join(part.split())
            if part and part.lower() not in seen:
                kept.append(part)
                seen.add(part.lower())
    return kept


def _check_limits(field: str, entries: list[str]) -> list[str]:
    """`entries` when within LIST_LIMITS; FieldError saying which limit and by how much otherwise."""
    if field not in LIST_LIMITS:
        return entries
    most, longest = LIST_LIMITS[field]
    noun = field.replace("_", " ")
    if len(entries) > most:
        raise FieldError(field, f"give at most {most} {noun} ({len(entries):,} given)")
    for entry in entries:
        if len(entry) > longest:
            raise FieldError(field, f"keep each of the {noun} to {longest} characters at most ({entry[:20]!r}... has {len(entry):,})")
    return entries


def _category(value: str) -> str:
    """The arXiv category or archive as arXiv writes it; a name or a typo gets a FieldError with a guess (a
    category no paper carries would silently empty every digest)."""
    code = canonical_category(value)
    if code is None:
        guesses = suggest_categories(value)
        meant = f"did you mean {' or '.join(guesses)}? " if guesses else ""
        raise FieldError("categories", f"{value!r} is not an arXiv category", f"{meant}the codes are listed at {TAXONOMY_URL}")
    return code


def _whole_number(field: str, value: int | str, low: int, high: int) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        raise FieldError(field, f"{value!r} is not a whole number") from None
    if not low <= number <= high:
        raise FieldError(field, f"{number} is not between {low} and {high}")
    return number


def _fraction(field: str, value: float | str) -> float:
    try:
        number = float(str(value).strip())
    except ValueError:
        raise FieldError(field, f"{value!r} is not a number") from None
    if math.isnan(number) or not 0.0 <= number <= 1.0:
        raise FieldError(field, f"{value!r} is not between 0 and 1")
    return number


def _send_at(value: str) -> str:
    parsed = parse_send_at(value)
    if not re.fullmatch(r"\d{1,2}:\d{2}", value.strip()):
        raise ValueError(f"send time {value!r} is not HH:MM")
    return parsed.strftime("%H:%M")


def _zone(value: str) -> str:
    parse_zone(value.strip())
    return value.strip()


def _validate_status(status: str) -> str:
    status = status.strip().lower()
    if status not in STATUSES:
        raise FieldError("status", f"{status!r} is not one of {', '.join(STATUSES)}")
    return status


# --- papers the profile refers to -------------------------------------------------------------------

_ARXIV_PREFIX = re.compile(r"^(?:arxiv:|https?://(?:www\.)?arxiv\.org/(?:abs|pdf)/)", re.I)
_DOI_PREFIX = re.compile(r"^(?:doi:|https?://(?:dx\.)?doi\.org/)", re.I)


def normalise_ident(ident: str) -> str:
    """The form an identifier is kept in: no arXiv / DOI URL prefix, DOIs lower-cased; another link that names an
    arXiv paper (arxiv.org/html/..., huggingface.co/papers/..., alphaxiv.org/abs/...) its arXiv id."""
    text = ident.strip()
    if _ARXIV_PREFIX.match(text):
        return _ARXIV_PREFIX.sub("", text).removesuffix(".pdf")
    if _DOI_PREFIX.match(text) or text.startswith("10."):
        return _DOI_PREFIX.sub("", text).lower()
    if re.match(r"^https?://", text, re.I) and (found := arxiv_id_in(text)) is not None:
        arxiv_id, version = found
        return f"{arxiv_id}v{version}" if version else arxiv_id
    return text


def resolve_papers(session: Session, idents: Iterable[str]) -> list[Paper]:
    """The stored papers named by arXiv ids (with or without version), DOIs or imported ids, in order."""
    papers = []
    for ident in idents:
        paper = get_paper_by_ident(session, normalise_ident(ident))
        if paper is None:
            raise NotFoundError(f"no paper {ident.strip()!r} in the store", "fetch or import it first: `digest fetch` or `digest import FILE`")
        papers.append(paper)
    return papers


# --- subscribers ------------------------------------------------------------------------------------


def find_subscriber(session: Session, email: str) -> Subscriber | None:
    try:
        address = validate_email(email)  # the stored form: carol@exämple.org is found as carol@xn--exmple-cua.org
    except InputError:
        address = email.strip().lower()
    return session.exec(select(Subscriber).where(Subscriber.email == address)).first()


def find_subscriber_by_id(session: Session, subscriber_id: int) -> Subscriber | None:
    """The subscriber with this id, or None (a link may name one who deleted their data)."""
    return session.get(Subscriber, subscriber_id)


def get_subscriber(session: Session, email_or_id: str | int) -> Subscriber:
    """The subscriber with this address (any case) or numeric id; NotFoundError otherwise."""
    if isinstance(email_or_id, int) or str(email_or_id).strip().isdigit():
        sub = session.get(Subscriber, int(email_or_id))
    else:
        sub = find_subscriber(session, str(email_or_id))
    if sub is None:
        raise NotFoundError(f"no subscriber {str(email_or_id).strip()}", LIST_HINT)
    return sub


def list_subscribers(session: Session, status: str | None = None) -> list[Subscriber]:
    query = select(Subscriber).order_by(Subscriber.email)
    if status is not None:
        query = query.where(Subscriber.status == _validate_status(status))
    return list(session.exec(query))


def add_subscriber(session: Session, email: str, fields: SubscriberInput, *, status: str = "active", now: datetime) -> Subscriber:
    """A new subscriber; an address already present in any case is an InputError."""
    address = validate_email(email)
    if find_subscriber(session, address) is not None:
        raise InputError(f"{address} is already subscribed", "use `digest subscribers update` to change it")
    sub = Subscriber(email=address, status=_validate_status(status), created_at=now, profile_changed_at=now)
    _apply(session, sub, validate_profile(fields), now)
    if sub.status == "active":
        sub.confirmed_at = now  # added by an administrator, who vouches for the address
    elif sub.status == "unsubscribed":
        sub.unsubscribed_at = now
    session.add(sub)
    session.flush()
    return sub


def update_subscriber(
    session: Session,
    sub: Subscriber,
    fields: SubscriberInput,
    add_interests: Iterable[str] = (),
    remove_interests: Iterable[str] = (),
    now: datetime | None = None,
) -> Subscriber:
    """Change the given fields; interests may also be added to or removed from (a missing one is an error).

    `now` (default: the clock's) is when the profile changed: profile_changed_at, by which a running prune finds a
    seed paper named since it read them all. A save that changes nothing of the ranking profile (RANKING_FIELDS)
    leaves it as it was.
    """
    checked = validate_profile(fields)
    if add_interests or remove_interests:
        interests = list(sub.interests if checked.interests is None else checked.interests)
        for gone in _clean_list(remove_interests):
            match = [i for i in interests if i.lower() == gone.lower()]
            if not match:
                raise FieldError("interests", f"{gone!r} is not one of {sub.email}'s interests")
            interests.remove(match[0])
        checked = replace(checked, interests=_check_limits("interests", _clean_list([*interests, *add_interests])))
    _apply(session, sub, checked, now or datetime.now(timezone.utc))
    session.add(sub)
    session.flush()
    return sub


def _apply(session: Session, sub: Subscriber, fields: SubscriberInput, now: datetime) -> None:
    """Copy validated fields onto the row, and say when the ranking profile changed (profile_changed_at: a save
    that changes none of RANKING_FIELDS leaves it as it was); seed papers must resolve."""
    if _profile_changes(sub, fields) & RANKING_FIELDS:
        sub.profile_changed_at = now
    for field in dc_fields(SubscriberInput):
        value = getattr(fields, field.name)
        if value is None:
            continue
        if field.name == "seed_papers":
            value = _checked_seeds(session, value)
        setattr(sub, field.name, list(value) if field.name in LIST_FIELDS else value)


def check_seed_papers(session: Session, idents: Iterable[str]) -> list[str]:
    """Seed papers as a subscriber row keeps them (normalised identifiers); FieldError("seed_papers") names the
    first one not in the store."""
    return _checked_seeds(session, idents)


def _checked_seeds(session: Session, idents: Iterable[str]) -> list[str]:
    """Seed papers as kept on the row (normalised identifiers); each must name a stored paper."""
    value = [normalise_ident(v) for v in idents]
    try:
        resolve_papers(session, value)
    except NotFoundError as exc:
        raise FieldError("seed_papers", exc.args[0], exc.hint) from None
    return value


def set_status(session: Session, sub: Subscriber, status: str, now: datetime) -> Subscriber:
    """Move to a status, keeping the timestamps true; only an active subscriber can be paused."""
    status = _validate_status(status)
    if status == "paused" and sub.status not in ("active", "paused"):
        raise InputError(f"{sub.email} is {sub.status}: only an active subscriber can be paused", "resume it first")
    if status == "unsubscribed" and sub.status != "unsubscribed":
        sub.unsubscribed_at = now
    elif status == "active":
        sub.confirmed_at = sub.confirmed_at or now
        sub.unsubscribed_at = None
        sub.consecutive_bounces = 0
    sub.status = status
    session.add(sub)
    session.flush()
    return sub


def remove_subscriber(session: Session, sub: Subscriber) -> None:
    """Delete the subscriber and all their personal data (feedback, deliveries, papers sent)."""
    # The foreign keys cascade, but a database opened without them (an old SQLite file) must not keep orphans.
    for table in (SentPaper, Feedback, Delivery, PendingProfile):
        session.execute(sa.delete(table).where(col(table.subscriber_id) == sub.id))
    session.delete(sub)
    session.flush()


def token_used(session: Session, digest: str) -> bool:
    """Whether the single-use token with this fingerprint (tokens.Claim.digest) was already spent."""
    return session.exec(select(UsedToken).where(UsedToken.digest == digest)).first() is not None


def spend_token(session: Session, digest: str, now: datetime) -> bool:
    """Record a single-use token as spent; False if it already was (also when two clicks race: the
    UNIQUE column decides, inside a savepoint so the caller's transaction goes on)."""
    if token_used(session, digest):
        return False
    try:
        with session.begin_nested():
            session.add(UsedToken(digest=digest, used_at=now))
    except sa.exc.IntegrityError:
        return False
    return True


def bump_token_version(session: Session, sub: Subscriber) -> int:
    """Invalidate every outstanding link of this subscriber; returns the new version."""
    sub.token_version = (sub.token_version or 0) + 1
    session.add(sub)
    session.flush()
    return sub.token_version


# --- double opt-in (the web's subscribe page) -------------------------------------------------------


@dataclass(frozen=True)
class ConfirmationRequest:
    """Whom to send a confirmation email and which request its link applies: a PendingProfile id, or None for an
    active or paused subscriber (their link changes nothing)."""

    subscriber: Subscriber
    request: int | None


# A request waits as long as its link works (the confirm token's max age); older ones are dropped as new ones come.
PENDING_LIFETIME = timedelta(seconds=MAX_AGE["confirm"])


def subscribe_pending(session: Session, email: str, fields: SubscriberInput, now: datetime) -> ConfirmationRequest:
    """Start (or restart) a double opt-in; never creates a second subscriber for one address, and never changes a
    stored subscriber: whoever fills in the form may not be the address's owner.

    A new address becomes a pending subscriber with the requested profile. Every request of a pending, unsubscribed
    or bounced subscriber (and a new one's) is kept as a PendingProfile row, which only the link of its own
    confirmation email applies (confirm_subscriber); an active or paused subscriber's request keeps nothing.
    """
    address = validate_email(email)
    sub = find_subscriber(session, address)
    if sub is None:
        sub = add_subscriber(session, address, fields, status="pending", now=now)
    if sub.status in ("active", "paused"):
        return ConfirmationRequest(sub, None)
    checked = validate_profile(fields)
    if checked.seed_papers is not None:
        checked = replace(checked, seed_papers=_checked_seeds(session, checked.seed_papers))
    given = {f.name: (list(v) if f.name in LIST_FIELDS else v) for f in dc_fields(SubscriberInput) for v in [getattr(checked, f.name)] if v is not None}
    session.execute(sa.delete(PendingProfile).where(col(PendingProfile.subscriber_id) == sub.id, col(PendingProfile.created_at) < now - PENDING_LIFETIME))
    row = PendingProfile(subscriber_id=sub.id, fields=given, created_at=now)
    session.add(row)
    session.flush()
    return ConfirmationRequest(sub, row.id)


def pending_profile(session: Session, sub: Subscriber, request: int | None) -> SubscriberInput | None:
    """The profile a confirmation link would apply (None: the link applies none), for the confirm page to show;
    NotFoundError when the request is not this subscriber's or is gone (confirmed or expired)."""
    if request is None:
        return None
    row = session.get(PendingProfile, request)
    if row is None or row.subscriber_id != sub.id:
        raise NotFoundError("this confirmation request is no longer waiting", "subscribe again for a new link")
    return SubscriberInput(**row.fields)




def request_confirmation(session: Session, email: str, fields: SubscriberInput, now: datetime, *, interval: float,
                         daily_limit: int) -> ConfirmationRequest | None:
    """Whom to send a confirmation email now and the request it confirms (subscribe_pending); None when the
    address's inbox is capped (an email less than `interval` seconds ago, or `daily_limit` in the last 24 hours:
    digest.store.caps, which counts ada+1@ and Ada@ as ada@), and then nothing is kept.

    Whoever asks, from however many client addresses, web processes or hosts: the counts live in the database.
    Never a second row for one address, also when two requests race to add it (the UNIQUE email decides; the
    loser uses the winner's row). The subscriber row records when its confirmation emails went (the prune reads it)."""
    address = validate_email(email)
    _lock_for_write(session)
    if not claim_confirmation(session, address, now, interval=interval, daily_limit=daily_limit):
        return None
    sub = find_subscriber(session, address) or _add_pending(session, address, fields, now)
    _record_confirmation(session, sub, now)
    return subscribe_pending(session, address, fields, now)


def _lock_for_write(session: Session) -> None:
    """SQLite: take the write lock before reading what the write depends on. A deferred transaction that
    has read cannot start writing once another connection has committed (SQLITE_BUSY at once, whatever
    busy_timeout says); BEGIN IMMEDIATE waits its turn instead. PostgreSQL needs nothing: the
    compare-and-set and the UNIQUE email decide there."""
    begin_write(session.connection())


def _add_pending(session: Session, address: str, fields: SubscriberInput, now: datetime) -> Subscriber:
    try:
        with session.begin_nested():
            return add_subscriber(session, address, fields, status="pending", now=now)
    except (sa.exc.IntegrityError, InputError):  # a concurrent request added the address first
        sub = find_subscriber(session, address)
        if sub is None:  # something else was wrong: let it speak
            raise
        return sub


def _record_confirmation(session: Session, sub: Subscriber, now: datetime) -> None:
    """Add `now` to the times of `sub`'s confirmation emails (those of the last day kept) and bump confirm_version,
    which a running prune checks before it deletes an address that never confirmed."""
    recent = recent_emails(sub.confirm_emails, now)
    session.execute(sa.update(Subscriber).where(col(Subscriber.id) == sub.id)
                    .values(confirm_emails=[t.isoformat() for t in sorted([*recent, now])], confirm_version=Subscriber.confirm_version + 1)
                    .execution_options(synchronize_session=False))
    session.expire(sub, ["confirm_emails", "confirm_version"])


def confirm_subscriber(session: Session, sub: Subscriber, now: datetime, request: int | None = None) -> Subscriber:
    """Apply the confirmed request's profile and make the subscriber active; bumps the token version so the link
    works once, and forgets the other waiting requests (their links die with the version). An active or paused
    subscriber is left as they are. A link without a request (sent before requests were kept) activates a pending
    subscriber as they are stored."""
    if sub.status in ("active", "paused"):
        return sub
    fields = pending_profile(session, sub, request)
    if fields is None and sub.status != "pending":
        return sub
    if fields is not None:
        if fields.seed_papers:  # a paper removed from the store since the request is left out, not an error
            fields = replace(fields, seed_papers=[p for p in fields.seed_papers if get_paper_by_ident(session, p) is not None])
        _apply(session, sub, validate_profile(fields), now)
    session.execute(sa.delete(PendingProfile).where(col(PendingProfile.subscriber_id) == sub.id))
    sub.status, sub.confirmed_at, sub.unsubscribed_at, sub.consecutive_bounces = "active", now, None, 0
    bump_token_version(session, sub)
    return sub


# --- feedback ---------------------------------------------------------------------------------------


def record_feedback(session: Session, sub: Subscriber, paper: Paper, value: int, now: datetime) -> Feedback:
    """Like (+1) or dislike (-1) a paper; one row per subscriber and paper, the newest opinion wins."""
    if value not in (1, -1):
        raise InputError(f"feedback value {value!r} is not +1 or -1")
    row = _feedback_row(session, sub, paper)
    if row is None:
        try:
            with session.begin_nested():  # a concurrent click on the same link may insert first
                row = Feedback(subscriber_id=sub.id, paper_id=paper.id, value=value, created_at=now)
                session.add(row)
        except sa.exc.IntegrityError:
            row = _feedback_row(session, sub, paper)
            assert row is not None  # the concurrent click's row, which made this insert fail
    row.value, row.created_at = value, now
    session.add(row)
    session.flush()
    return row


def _feedback_row(session: Session, sub: Subscriber, paper: Paper) -> Feedback | None:
    return session.exec(select(Feedback).where(col(Feedback.subscriber_id) == sub.id, col(Feedback.paper_id) == paper.id)).first()


def feedback_value(session: Session, sub: Subscriber, paper: Paper) -> int | None:
    """The subscriber's opinion of a paper: +1, -1, or None when they gave none."""
    row = _feedback_row(session, sub, paper)
    return row.value if row is not None else None


def remove_feedback(session: Session, sub: Subscriber, paper: Paper) -> bool:
    """Forget the subscriber's opinion of a paper (the web's undo); False when there was none."""
    result = cast(CursorResult[Any], session.execute(
        sa.delete(Feedback).where(col(Feedback.subscriber_id) == sub.id, col(Feedback.paper_id) == paper.id)))
    return bool(result.rowcount)


def feedback_for(session: Session, sub: Subscriber) -> tuple[list[Paper], list[Paper]]:
    """(liked papers, disliked papers), oldest opinion first."""
    rows = session.exec(
        select(col(Feedback.value), Paper).join(Paper, col(Paper.id) == col(Feedback.paper_id))
        .where(col(Feedback.subscriber_id) == sub.id).order_by(col(Feedback.created_at), col(Feedback.id))
    ).all()
    return [p for v, p in rows if v > 0], [p for v, p in rows if v < 0]


# --- CSV --------------------------------------------------------------------------------------------


def import_csv(session: Session, path_or_text: str | Path, now: datetime) -> ImportReport:
    """Add or update subscribers from CSV; every row is checked before anything is written.

    A column left out of the header is left unchanged; an empty cell means an empty list or the default.
    An empty or missing status keeps an existing subscriber's status (an import never re-subscribes
    someone who unsubscribed unless the file says so); new subscribers are active.
    """
    name, text = _read_csv_source(path_or_text)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [h.strip() for h in reader.fieldnames or []]
    unknown = [h for h in header if h not in CSV_COLUMNS]
    if "email" not in header or unknown:
        what = f"unknown column {unknown[0]!r}" if unknown else "no 'email' column"
        raise InputError(f"{name} line 1: {what}", f"columns: {', '.join(CSV_COLUMNS)}")
    reader.fieldnames = header
    rows: list[tuple[str, SubscriberInput, str | None]] = []
    seen: dict[str, int] = {}
    line = 1
    for record in reader:
        start, line = line + 1, reader.line_num
        if None in record:
            raise InputError(f"{name} line {start}: more cells than columns")
        if not any((v or "").strip() for v in record.values()):
            continue
        record = {k: _unescape_cell(v) for k, v in record.items()}
        try:
            rows.append(_parse_row(session, record, seen, start))
        except FieldError as exc:
            raise InputError(f"{name} line {start}, column {exc.field}: {exc.reason}") from None
    added = updated = 0
    for address, fields, status in rows:
        sub = find_subscriber(session, address)
        if sub is None:
            add_subscriber(session, address, fields, status=status or "active", now=now)
            added += 1
            continue
        # A row as stored is left alone (update_subscriber stamps profile_changed_at only when the ranking profile
        # changes: a prune running meanwhile reads its seed list again, digest.store.retention).
        changed = bool(_profile_changes(sub, fields))
        if changed:
            update_subscriber(session, sub, fields, now=now)
        if status and status != sub.status:
            set_status(session, sub, status, now)
            changed = True
        updated += changed
    return ImportReport(added=added, updated=updated, unchanged=len(rows) - added - updated)


def _profile_changes(sub: Subscriber, fields: SubscriberInput) -> set[str]:
    """The fields that applying the validated `fields` (those given, not None) would change on the row, as _apply
    stores them: one rule for import's "unchanged" and for when profile_changed_at moves."""
    changed = set()
    for field in dc_fields(SubscriberInput):
        value = getattr(fields, field.name)
        if value is None:
            continue
        if field.name == "seed_papers":
            value = [normalise_ident(v) for v in value]
        if (list(value) if field.name in LIST_FIELDS else value) != getattr(sub, field.name):
            changed.add(field.name)
    return changed


def _read_csv_source(path_or_text: str | Path) -> tuple[str, str]:
    if isinstance(path_or_text, str) and "\n" in path_or_text:
        return "CSV", path_or_text
    path = Path(path_or_text)
    try:
        return str(path_or_text), path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path_or_text} is not UTF-8 text: {exc.reason} at byte {exc.start}") from None


def _parse_row(session: Session, record: dict, seen: dict[str, int], line: int) -> tuple[str, SubscriberInput, str | None]:
    cell = {k: (v or "").strip() for k, v in record.items()}
    if not cell["email"]:
        raise FieldError("email", "missing")
    try:
        address = validate_email(cell["email"])
    except InputError as exc:
        raise FieldError("email", exc.args[0]) from None
    if address in seen:
        raise FieldError("email", f"{address} is already on line {seen[address]}")
    seen[address] = line
    defaults = {"max_papers": 10, "trending_weight": 0.2, "send_at": "07:00", "tz": "UTC", "frequency": "daily"}
    given: dict = {}
    for column, value in cell.items():
        if column in LIST_FIELDS:
            given[column] = value.split(LIST_SEPARATOR) if value else []
        elif column in defaults:
            given[column] = value or defaults[column]
        elif column == "name":
            given[column] = value
    fields = validate_profile(SubscriberInput(**given))
    if fields.seed_papers:
        _checked_seeds(session, fields.seed_papers)
    status = _validate_status(cell["status"]) if cell.get("status") else None
    return address, fields, status


def export_csv(session: Session, path_or_stream: str | Path | IO[str]) -> int:
    """Write every subscriber, by address, in the columns import_csv reads; returns how many."""
    subs = list_subscribers(session)
    if isinstance(path_or_stream, (str, Path)):
        with open(path_or_stream, "w", encoding="utf-8", newline="") as out:
            _write_csv(out, subs)
    else:
        _write_csv(path_or_stream, subs)
    return len(subs)


# A cell starting with = + - @ runs as a formula when the file is opened in a spreadsheet (CSV injection,
# OWASP). Export prefixes such cells, and cells already starting with the prefix, with one "'"; import
# removes exactly that one "'", so export -> import still round-trips every value.
_FORMULA_START = ("=", "+", "-", "@", "'")


def _escape_cell(value: object) -> object:
    return "'" + value if isinstance(value, str) and value.startswith(_FORMULA_START) else value


def _unescape_cell(value: str | None) -> str | None:
    return value[1:] if value and value.startswith("'") and value[1:].startswith(_FORMULA_START) else value


def _write_csv(out: IO[str], subs: list[Subscriber]) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for sub in subs:
        writer.writerow([_escape_cell(LIST_SEPARATOR.join(v) if c in LIST_FIELDS else v) for c in CSV_COLUMNS for v in [getattr(sub, c)]])
