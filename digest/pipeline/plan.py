"""The one edition planner: who is due, and for each due subscriber the edition's window, its candidate papers
and the profile they are ranked with. `digest run`, `send`, `preview`, `rank` and the daemon all plan here, so
the rules (the window above all) exist once.

The window of an edition: papers first seen in (since, until], until being the run's instant and since the
later of the subscriber's last digest and 7 days back for a weekly subscriber (window_days back otherwise).
An edition asked for by date is never due before its day has come in the subscriber's own time zone.
It must not send, render or write: it reads the store and ranks (rank_plans, PlansRanking), nothing else.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy.engine import Engine

from ..config import Settings
from ..delivery.loop import retry_wait
from ..editions import due_edition, earliest_local_day, is_weekly, local_day, parse_frequency, publishes_on
from ..errors import DigestError, InputError, one_line
from ..log import log_event
from ..models import Subscriber
from ..rank import Candidate, Profile, RankedPaper, Ranking, RankResult, build_profile
from ..rank.score import MAX_VOTES
from ..rank.semantic import embed_for  # light: it imports the embedding model (torch) only when asked to embed
from ..store import deliveries as ledger
from ..store import session_scope
from ..store.candidates import candidate_papers, profile_rows_for, sent_among, voted_among
from ..store.subscribers import get_subscriber, list_subscribers

log = logging.getLogger("digest.pipeline")

WEEKLY_WINDOW_DAYS = 7  # a weekly edition covers its week, whatever window_days says


@dataclass(frozen=True)
class Due:
    """A subscriber whose edition (their local date, YYYY-MM-DD) is to be sent."""

    subscriber: Subscriber
    edition: str


@dataclass(frozen=True)
class EditionPlan:
    """What one subscriber's edition is made of: its window, the papers first seen in it (those already sent to
    them included; the profile excludes those) and the profile they are ranked with."""

    subscriber: Subscriber
    edition: str
    since: datetime
    until: datetime
    candidates: tuple[Candidate, ...]
    profile: Profile  # exclude_paper_ids: the candidates already sent to this subscriber

    @property
    def candidate_ids(self) -> frozenset[int]:
        """The papers this edition may show: first seen in its window and never sent to this subscriber."""
        return frozenset(c.paper.id for c in self.candidates if c.paper.id is not None) - self.profile.exclude_paper_ids


@dataclass(frozen=True)
class Unplanned:
    """A due subscriber whose profile cannot be built (a row edited by hand, a bug): their failed delivery."""

    subscriber: Subscriber
    edition: str
    error: Exception


# --- the window -----------------------------------------------------------------------------------------


def edition_window(subscriber: Subscriber, now: datetime, window_days: int) -> tuple[datetime, datetime]:
    """(since, until): papers first seen after the subscriber's last digest, but never more than a week back for a
    weekly subscriber (window_days back otherwise), until `now`."""
    floor = now - timedelta(days=WEEKLY_WINDOW_DAYS if is_weekly(subscriber.frequency) else window_days)
    last = subscriber.last_digest_at
    return (max(last, floor) if last is not None else floor), now


def longest_window(window_days: int) -> int:
    """How many days back any edition's window reaches (window_days, or a week for a weekly subscriber): a paper
    first seen longer ago is never a candidate again, which digest.store.retention relies on."""
    return max(window_days, WEEKLY_WINDOW_DAYS)


# --- who is due -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Waiting:
    """A due subscriber whose edition a 4xx deferred: no run tries it before `retry_at` (delivery.loop.retry_wait)."""

    subscriber: Subscriber
    edition: str
    retry_at: datetime


def due_subscribers(engine: Engine, settings: Settings, now: datetime, *, only: str | None = None, edition: str | None = None) -> list[Due]:
    """Active subscribers whose edition is due at `now` (or, given `edition`, who publish on that day and have
    not finished it), by id. `only`: that subscriber alone, InputError when they are not active."""
    return who_is_due(engine, settings, now, only=only, edition=edition)[0]


def who_is_due(engine: Engine, settings: Settings, now: datetime, *, only: str | None = None, edition: str | None = None) -> tuple[list[Due], list[Waiting]]:
    """(due, waiting): due_subscribers, and those left out of it because their delivery of that edition was deferred
    and its retry time has not come. `only` (the operator asking for one subscriber now) never waits."""
    with session_scope(engine) as session:
        if only:
            sub = get_subscriber(session, only)
            if sub.status != "active":
                raise InputError(f"{sub.email} is {sub.status}, not active: nothing to send", "`digest subscribers resume` makes them active again")
            subs = [sub]
        else:
            subs = sorted(list_subscribers(session, status="active"), key=lambda s: s.id or 0)
    wanted: Callable[[Subscriber], str | None]
    if edition is not None:
        day = date.fromisoformat(edition)
        subs = _edition_begun(subs, day, now)
        done = {d.subscriber_id for d in ledger.deliveries_for(engine, edition=edition) if d.state in ledger.DONE_STATES}
        since = edition

        def wanted(sub: Subscriber) -> str | None:
            return edition if sub.id not in done and publishes_on(parse_frequency(sub.frequency), day) else None
    else:
        since = earliest_local_day(now).isoformat()
        finished = ledger.finished_editions(engine, since=since)
        # Subscribers share schedules (send_at, tz, frequency, last edition): each is worked out once per call, not once
        # per subscriber (zoneinfo arithmetic: 0.06-0.1 s for 10,000).
        edition_due = functools.cache(due_edition)

        def wanted(sub: Subscriber) -> str | None:
            return edition_due(now, sub.send_at, sub.tz, sub.frequency, finished.get(sub.id or 0))

    retries = {} if only else {(row.subscriber_id, row.edition): row.at + retry_wait(row.attempts) for row in ledger.deferred_rows(engine, since)}
    out, waiting = [], []
    for sub in subs:
        try:
            due = wanted(sub)
        except ValueError as exc:  # one bad schedule never stops the others (`digest status --check` names it)
            log_event(log, "bad-schedule", logging.WARNING, subscriber=sub.email, error=str(exc))
            continue
        if due is None:
            continue
        retry_at = retries.get((sub.id or 0, due))
        if retry_at is not None and retry_at > now:
            waiting.append(Waiting(sub, due, retry_at))
        else:
            out.append(Due(sub, due))
    return out, waiting


def _edition_begun(subs: list[Subscriber], day: date, now: datetime) -> list[Subscriber]:
    """The subscribers whose own local date at `now` is `day` or later: an edition is never sent before its day.
    Sent early, it would count as their newest (due_edition), and their every daily edition until that day would
    be "not due". InputError when the day has come for none of them; the others are logged (a warning: the CLI
    prints it) and left out, not due."""
    begun: list[Subscriber] = []
    waiting: list[Subscriber] = []
    for sub in subs:
        try:
            today = local_day(now, sub.tz)
        except ValueError:
            begun.append(sub)  # a bad time zone is reported as the bad schedule it is, below
            continue
        (begun if today >= day else waiting).append(sub)
    if waiting and not begun:
        latest = max(local_day(now, sub.tz) for sub in waiting).isoformat()
        whose = f"{waiting[0].email} (their local date is {latest})" if len(waiting) == 1 else f"every active subscriber (their local dates are {latest} at the latest)"
        raise InputError(f"edition {day.isoformat()} is in the future for {whose}: sent now, it would stop their daily editions until that day",
                         f"send it on its day; `digest preview EMAIL --date {day.isoformat()}` shows it now without sending or recording anything")
    if waiting:
        names = ", ".join(sub.email for sub in waiting[:5]) + (f" and {len(waiting) - 5} more" if len(waiting) > 5 else "")
        log_event(log, "edition-not-begun", logging.WARNING, edition=day.isoformat(), subscribers=len(waiting),
                  note=f"not due: their local date is still before it: {names}")
    return begun


# --- the plans ------------------------------------------------------------------------------------------


def plan_editions(engine: Engine, settings: Settings, now: datetime, dues: Sequence[Due]) -> list[EditionPlan | Unplanned]:
    """Every due edition planned over one candidate pool (one query, the widest window), in the order of `dues`."""
    if not dues:
        return []
    windows = [edition_window(d.subscriber, now, settings.window_days) for d in dues]
    subscribers = [d.subscriber for d in dues]
    with session_scope(engine) as session:
        pool = [c for s in candidate_papers(session, min(since for since, _ in windows), now)
                for c in [Candidate(s.paper, s.sources, s.source_kinds)] if settings.include_replacements or not c.only_replaced]
        sent = sent_among(session, [s.id for s in subscribers], [c.paper.id for c in pool])
        # The vote model reads the newest MAX_VOTES likes and dislikes; a paper voted on longer ago is still known to
        # its reader, so never a candidate: those of the pool are asked for by id.
        rows_of = profile_rows_for(session, subscribers, votes=MAX_VOTES)
        for sub_id, voted in voted_among(session, [s.id for s in subscribers], [c.paper.id for c in pool]).items():
            sent.setdefault(sub_id, set()).update(voted)
    inside: dict[datetime, tuple[Candidate, ...]] = {}  # most subscribers share a window: one tuple each
    out: list[EditionPlan | Unplanned] = []
    for due, (since, until) in zip(dues, windows):
        sub, rows = due.subscriber, rows_of[due.subscriber.id]
        if since not in inside:
            inside[since] = tuple(c for c in pool if c.paper.first_seen is not None and c.paper.first_seen > since)
        try:
            profile = build_profile(sub, rows.seed_papers, rows.liked, rows.disliked, sent.get(sub.id, ()))
        except Exception as exc:  # noqa: BLE001 - a wall: one subscriber's bad row is their failure, not the run's
            out.append(Unplanned(sub, due.edition, exc))
            continue
        out.append(EditionPlan(sub, due.edition, since, until, inside[since], profile))
    return out


def replayed(plan: EditionPlan, contents: tuple[Sequence[tuple[int, Sequence[str]]], Sequence[int]]) -> RankResult | None:
    """The result an earlier copy of the plan's edition showed (its picks with their reasons, then its trending
    papers), over the plan's candidates: a resend under the same Message-ID, after a copy that may have arrived, must
    carry the same papers (a mail client may hide it as a duplicate of the first). None when one of them is no longer
    in the edition's window (gone since): the letter is then ranked afresh."""
    by_id = {c.paper.id: c for c in plan.candidates}  # a paper voted on since (from that copy) included: it was shown
    picks, trending = contents
    if not all(pid in by_id for pid in (*(pid for pid, _ in picks), *trending)):
        return None
    return RankResult(plan.subscriber.id or 0, ranked=[RankedPaper(by_id[pid], 0.0, 0.0, 0.0, tuple(reasons), in_digest=True) for pid, reasons in picks],
                      trending=[RankedPaper(by_id[pid], 0.0, 0.0, 0.0) for pid in trending], matched=bool(picks))


def plan_edition(engine: Engine, subscriber: Subscriber, now: datetime, settings: Settings, *, edition: str | None = None) -> EditionPlan:
    """The plan of `subscriber`'s edition at `now`, whatever their schedule (`preview`, `rank`); `edition`
    defaults to their local today. A profile that cannot be built raises what building it raised."""
    try:
        day = edition or local_day(now, subscriber.tz).isoformat()
    except ValueError as exc:
        raise InputError(f"{subscriber.email}: {exc}") from None
    plan = plan_editions(engine, settings, now, [Due(subscriber, day)])[0]
    if isinstance(plan, Unplanned):
        raise plan.error
    return plan


def plan_for(engine: Engine, email: str, now: datetime, settings: Settings, *, edition: str | None = None) -> EditionPlan:
    """plan_edition for the subscriber with this address (NotFoundError when there is none)."""
    with session_scope(engine) as session:
        subscriber = get_subscriber(session, email)
    return plan_edition(engine, subscriber, now, settings, edition=edition)


# --- ranking the plans ----------------------------------------------------------------------------------


def rank_plans(plans: Sequence[EditionPlan], settings: Settings, now: datetime, *, limit: int | None = None, engine: Engine | None = None) -> list[RankResult | Exception]:
    """Every plan ranked at once over one pool (PlansRanking: the widest window's candidates, every window ends at
    `now`, so it holds the others'), each excluding what was first seen before its own window and what it was already
    sent. A subscriber whose ranking raises gets the exception in place of a result; DigestError when even an empty
    profile cannot be ranked (see PlansRanking)."""
    if not plans:
        return []
    return PlansRanking(plans, settings, now, limit=limit, engine=engine).rank(plans)


class PlansRanking:
    """The ranking of a run's plans, prepared once over one pool (the widest window's candidates) and then applied
    to any of those plans, batch after batch: a sending worker ranks only the deliveries it has claimed, so it never
    holds every due subscriber's results (issue 11), and forked render workers inherit it to rank their share.

    Built before anything is recorded: when even an empty profile cannot be ranked, the candidates are the problem,
    not a subscriber: DigestError, so nobody's edition is spent on it. A subscriber whose ranking raises (a row edited
    by hand, a bug) gets the exception in place of a result, and the others are ranked (see rank_isolating). With
    rank_model = "hybrid", the embeddings are `engine`'s stored ones (digest.embed: only what is new is embedded), or
    computed here without it."""

    def __init__(self, plans: Sequence[EditionPlan], settings: Settings, now: datetime, *, limit: int | None = None, engine: Engine | None = None) -> None:
        self.limit, self.relevance_floor = limit, settings.relevance_floor
        pool = min(plans, key=lambda p: p.since).candidates if plans else ()
        self.pool_ids = frozenset(c.paper.id for c in pool)
        self.too_old: dict[datetime, frozenset[int]] = {}
        embeddings = None
        if settings.rank_model == "hybrid" and engine is not None:
            from ..embed import embeddings_for

            papers = [(c.paper.id, c.paper.title, c.paper.abstract) for c in pool]
            papers += [(x.paper_id, x.title, x.abstract) for p in plans for x in (*p.profile.seed_texts, *p.profile.liked_texts, *p.profile.disliked_texts) if x.paper_id is not None]
            embeddings = embeddings_for(engine, papers, [plan.subscriber for plan in plans], now)
        elif settings.rank_model == "hybrid":
            embeddings = embed_for([c.paper for c in pool], [self.profile_of(p) for p in plans])
        try:
            self.ranking = Ranking(pool, now, model=settings.rank_model, embeddings=embeddings)
            self._rank([Profile(subscriber_id=0)])
        except Exception as exc:  # noqa: BLE001 - whose fault: the candidates', since no one can be ranked
            raise _candidates_unreadable(exc) from exc

    def profile_of(self, plan: EditionPlan) -> Profile:
        """The plan's profile, also excluding what the pool holds from before its own window."""
        if plan.since not in self.too_old:
            self.too_old[plan.since] = self.pool_ids - {c.paper.id for c in plan.candidates}
        extra = self.too_old[plan.since]
        return dataclasses.replace(plan.profile, exclude_paper_ids=plan.profile.exclude_paper_ids | extra) if extra else plan.profile

    def _rank(self, profiles: Sequence[Profile]) -> list[RankResult]:
        return self.ranking.rank(profiles, limit=self.limit, relevance_floor=self.relevance_floor)

    def rank(self, plans: Sequence[EditionPlan]) -> list[RankResult | Exception]:
        """Each plan's result (or the exception its ranking raised), in order."""
        return rank_isolating(self._rank, [self.profile_of(plan) for plan in plans])


def rank_isolating(rank: Callable[[Sequence[Profile]], list[RankResult]], profiles: Sequence[Profile]) -> list[RankResult | Exception]:
    """rank(profiles), or, when that raises, each profile's result or the exception that ranking it alone
    raises: halves are ranked apart and only a failing half is split again, so one bad profile among n
    costs about twice the ranking of n. DigestError when an empty profile cannot be ranked either."""
    if not profiles:
        return []
    try:
        return list(rank(profiles))
    except Exception as exc:  # noqa: BLE001 - see below whose fault it is
        first = exc
    try:
        rank([Profile(subscriber_id=0)])
    except Exception as exc:  # noqa: BLE001
        raise _candidates_unreadable(exc) from exc
    return _bisect(rank, list(profiles), first)


def _candidates_unreadable(exc: Exception) -> DigestError:
    """When even an empty profile cannot be ranked: the candidates are the problem, not a subscriber."""
    return DigestError(f"cannot rank today's candidates for anyone: {one_line(exc)}", "a candidate paper the ranking cannot read? `digest -v send --dry-run` shows the traceback")


def _bisect(rank: Callable[[Sequence[Profile]], list[RankResult]], profiles: list[Profile], error: Exception) -> list[RankResult | Exception]:
    """The results of `profiles`, whose ranking together raised `error`."""
    if len(profiles) == 1:
        return [error]
    out: list[RankResult | Exception] = []
    middle = len(profiles) // 2
    for half in (profiles[:middle], profiles[middle:]):
        try:
            out.extend(rank(half))
        except Exception as exc:  # noqa: BLE001 - narrowed down to the profiles that raise it
            out.extend(_bisect(rank, half, exc))
    return out

