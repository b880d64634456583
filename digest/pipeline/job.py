"""The daily job, shared by `digest run`, `digest send`, `digest worker`, `digest serve` and `digest demo`: fetch
(optional) -> plan -> rank -> deliver, each step's result handed to the next.

On SQLite one run at a time holds the lock file in DIGEST_HOME. On PostgreSQL any number of runs on any number of
hosts share the work through the database (digest.store.fleet): one fetches while the others wait on an advisory
lock (and then find the fetch done), every one plans (the ledger keeps one row per subscriber and edition) and each
delivery is claimed by one worker under a lease (digest.delivery.claim.LeaseClaimer).

Exactly-once as far as SMTP allows: digest.delivery claims a letter 'sending' (committed) before its message is
handed over and records 'sent' right after the server accepted it, so a rerun or a run after SIGKILL sends only what
was not accepted and at most the message in flight twice. It must not parse feeds, score papers, write templates or
speak SMTP itself: those are the other steps.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy.engine import Connection, Engine

from ..collector import paused_collector
from ..config import Settings
from ..delivery.build import builder_for, compose, is_empty, make_links
from ..delivery.claim import LeaseClaimer, LedgerClaimer, worker_name
from ..delivery.loop import DeliveryReport, deliver_edition
from ..delivery.message import check_sender_settings, make_message_id
from ..delivery.pace import SharedPace
from ..delivery.senders import InlineSender, sender_for
from ..delivery.transport import Transport
from ..delivery.work import Letter
from ..errors import DigestError, LockedError, one_line
from ..ingest import SourceReport, fetch_sources
from ..log import log_event
from ..rank import RankResult
from ..render import RenderedEmail
from ..store import deliveries as ledger
from ..store import fleet, retention
from ..store.pace import RedisPace, reserve_slots_postgres
from .plan import (
    EditionPlan,
    PlansRanking,
    Unplanned,
    longest_window,
    plan_editions,
    plan_for,
    rank_plans,
    replayed,
    who_is_due,
)

log = logging.getLogger("digest.pipeline")


@dataclass(frozen=True)
class RunReport:
    """What one run did. `seconds` is the whole run; `timings` the seconds of each stage. `error`: what stopped the
    delivery early (the server down or unusable, the database locked); the counts say how far it got."""

    sent: int = 0
    skipped: int = 0
    failed: int = 0
    deferred: int = 0
    due: int = 0
    not_attempted: int = 0  # due but left for the next run (stopped, server down)
    left_sending: int = 0  # left 'sending' because the ledger could not be put right (the database stayed locked)
    elsewhere: int = 0  # due, but finished or being sent by other workers (PostgreSQL)
    gone: tuple[fleet.LeaseHolder, ...] = ()  # workers holding some of those with no session on the database (killed, cut off)
    waiting: int = 0  # due, but deferred by a 4xx and waiting for their retry time (delivery.loop.retry_wait): not sent now
    next_retry: datetime | None = None  # the first of those retry times
    dry_run: bool = False
    stopped: bool = False
    workers: int = 0  # processes that rendered the emails (0: the calling thread did)
    seconds: float = 0.0
    timings: Mapping[str, float] = field(default_factory=dict)  # fetch, plan, rank, render, build, send (render and build summed over workers)
    editions: list[str] = field(default_factory=list)
    fetched: list[SourceReport] = field(default_factory=list)  # one per source
    fetch_error: str | None = None  # the fetch as a whole failed; what was already stored was still sent
    error: DigestError | None = None

    @property
    def unserved(self) -> int:
        """Due subscribers who got neither their email nor a deliberate skip."""
        return self.failed + self.deferred + self.not_attempted

    def summary(self) -> str:
        if self.dry_run:
            return f"dry run: would send {self.sent}, skip {self.skipped} (nothing sent or recorded) in {self.seconds:.1f}s"
        left = f", not attempted {self.not_attempted}" if self.not_attempted else ""
        stuck = f", left 'sending' {self.left_sending}" if self.left_sending else ""
        held = sum(h.rows for h in self.gone)
        others = f", {self.elsewhere - held} by other workers" if self.elsewhere > held else ""
        # A worker killed mid-send holds its rows until its lease passes: they are not being sent by anyone.
        others += "".join(f", {h.rows} held by {h.describe()}" for h in self.gone)
        return f"sent {self.sent}, skipped {self.skipped}, failed {self.failed}, deferred {self.deferred}{left}{stuck}{others} in {self.seconds:.1f}s{self.waits()}"

    def waits(self) -> str:
        """The deferred deliveries left for later, in a few words ("" when none)."""
        if not self.waiting or self.next_retry is None:
            return ""
        many = self.waiting != 1
        at = self.next_retry.astimezone(timezone.utc).strftime("%H:%M UTC")
        return f"; {self.waiting} deferred deliver{'ies wait' if many else 'y waits'} for {'their retries, the first' if many else 'its retry'} at {at}"


# --- the lock ---------------------------------------------------------------------------------------


# The errors of a file system that cannot flock(2) a directory (NFS emulates flock with fcntl locks, which a
# descriptor opened read-only cannot take): the lock file alone guards the run there.
_NO_DIRECTORY_LOCK = {errno.EBADF, errno.ENOLCK, errno.EINVAL, errno.EOPNOTSUPP}


@contextlib.contextmanager
def run_lock(settings: Settings) -> Iterator[None]:
    """One run at a time across cron, the timer, the daemon and the terminal; never waits (LockedError).

    flock(2), which the kernel grants to one process and drops when that process dies, even by SIGKILL: the lock is
    never stale and its file must never be deleted. It is taken on settings.lock_path, as earlier versions take it (a
    daemon not yet restarted after an upgrade still excludes this run), and on DIGEST_HOME itself: a lock file deleted
    during a run (taken for a stale one) let the next run lock a new file of the same name and run alongside; the
    directory cannot be replaced under a run.
    """
    settings.home.mkdir(parents=True, exist_ok=True)
    held: list[int] = []
    try:
        for path, flags in ((settings.lock_path, os.O_RDWR | os.O_CREAT), (settings.home, os.O_RDONLY | os.O_DIRECTORY)):
            fd = os.open(path, flags | os.O_CLOEXEC, 0o600)
            held.append(fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise LockedError(f"another digest run holds the lock {settings.lock_path}: nothing done") from None
            except OSError as exc:
                if path != settings.home or exc.errno not in _NO_DIRECTORY_LOCK:
                    raise
        yield
    finally:
        for fd in reversed(held):
            os.close(fd)  # closing the descriptor drops its flock


@contextlib.contextmanager
def _one_at_a_time(engine: Engine, settings: Settings) -> Iterator[None]:
    """The run lock file on SQLite (one host); nothing on PostgreSQL, where the ledger's leases share the work."""
    if fleet.is_shared(engine):
        yield
        return
    with run_lock(settings):
        yield


def pace_for(engine: Engine, settings: Settings) -> SharedPace | None:
    """send_rate across every worker: in Redis when redis_url is set, else in PostgreSQL; None on SQLite alone
    (the transport paces its own process)."""
    if not settings.send_rate:
        return None
    if settings.redis_url:
        return SharedPace(settings.send_rate, RedisPace(settings.redis_url, "smtp").reserve)
    if fleet.is_shared(engine):
        return SharedPace(settings.send_rate, lambda count, interval: reserve_slots_postgres(engine, "smtp", count, interval))
    return None


# --- preview ----------------------------------------------------------------------------------------


def preview_email(engine: Engine, settings: Settings, now: datetime, email: str, *, edition: str | None = None) -> tuple[RenderedEmail, bytes, RankResult]:
    """Exactly the email the next run would send to `email`, whatever their schedule; nothing sent or recorded."""
    check_sender_settings(settings)  # as a run does: a bad From or base_url named as the setting, not as a recipient
    plan = plan_for(engine, email, now, settings, edition=edition)
    try:
        result = rank_plans([plan], settings, now, engine=engine)[0]
        if isinstance(result, Exception):
            raise result
        composed = compose(settings, plan.subscriber, plan.edition, result, message_id=make_message_id(settings.from_address, plan.subscriber.id or 0, plan.edition), date_=now)
    except DigestError:
        raise
    except Exception as exc:  # noqa: BLE001 - one line for the operator; -v shows the traceback
        raise DigestError(f"cannot build the edition of {plan.subscriber.email}: {one_line(exc)}", "`digest -v preview` shows the traceback") from exc
    return composed.rendered, composed.message, result


# --- the job ----------------------------------------------------------------------------------------


def run_job(
    engine: Engine,
    settings: Settings,
    now: datetime,
    *,
    fetch: bool | Callable[[], bool] = True,
    only: str | None = None,
    dry_run: bool = False,
    transport: Transport | None = None,
    client: object | None = None,
    stop_event: threading.Event | None = None,
    edition: str | None = None,
    sleep: Callable[[float], object] | None = None,
    progress: Callable[[int], None] | None = None,
    on_plan: Callable[[int], None] | None = None,
    worker: str | None = None,
) -> RunReport:
    """Do whatever is due at `now`: fetch (optional), then plan, rank, render and deliver each due edition.

    LockedError when another run holds the lock; ConfigError when a setting no message can do without is wrong;
    DigestError when today's candidates cannot be ranked for anyone: each before anything is recorded. What stops
    the delivery once begun (ServerDownError, a DeliveryError, a StoreError) is the report's `error`.
    `on_plan(n)` is told how many subscribers are due before ranking starts, `progress(k)` as each k more are done.
    `fetch` may be a question (is a fetch still due?), asked once the fetch lock is held: on PostgreSQL the hosts
    that waited for another's fetch then find it done. `worker` names this run in the ledger's leases (PostgreSQL).
    """
    started = time.monotonic()
    stop_event = stop_event or threading.Event()
    timings: dict[str, float] = {}

    def clock() -> datetime:  # the run's instant, moved on by the time it has taken
        return now + timedelta(seconds=time.monotonic() - started)

    if fleet.is_shared(engine) and not dry_run and (skew := fleet.clock_problem(fleet.clock_offset(engine, now))):
        log_event(log, "clock-skew", logging.WARNING, note=skew)  # the leases are safe (the database's clock); the schedule is not
    with _one_at_a_time(engine, settings):
        fetched, fetch_error = _fetch_once(engine, settings, now, fetch, client, timings, stop_event)
        if stop_event.is_set():  # stopped while fetching (the daemon's SIGTERM): nothing planned, nothing left pending
            log_event(log, "run-stopped", logging.INFO, note="stopped before sending; what is due stays due for the next run")
            return RunReport(stopped=True, seconds=time.monotonic() - started, timings=timings, fetched=fetched, fetch_error=fetch_error)
        mark = time.perf_counter()
        with paused_collector():  # loading and planning every due subscriber makes no cycle for the collector to find
            dues, waiting = who_is_due(engine, settings, now, only=only, edition=edition)
            if on_plan is not None:
                on_plan(len(dues))
            if dues:
                make_links(settings, dues[0].subscriber, [])  # no secret_key: fail before anything is recorded
                check_sender_settings(settings)  # nor with a From, Reply-To or base_url no message can carry
            planned = plan_editions(engine, settings, now, dues)
            mark = _stage(timings, "plan", mark)
            plans = [p for p in planned if isinstance(p, EditionPlan)]
            ranking = PlansRanking(plans, settings, now, engine=engine) if plans else None  # DigestError here: nothing recorded yet
            mark = _stage(timings, "rank", mark)
        if dry_run:
            results = _rank(planned, ranking)
            _stage(timings, "rank", mark)
            delivered = _rehearse(settings, now, planned, results, timings, progress)
        else:
            delivered = _deliver(engine, settings, now, planned, ranking, clock=clock, transport=transport, stop_event=stop_event, sleep=sleep, progress=progress,
                                 worker=worker or worker_name())
        if fetched and not dry_run:  # once a day: by the run that fetched (on PostgreSQL, the one host that did)
            retention.prune_daily(engine, settings, now, candidate_days=longest_window(settings.window_days), stop=stop_event)
    report = RunReport(
        sent=delivered.sent, skipped=delivered.skipped, failed=delivered.failed, deferred=delivered.deferred, due=len(dues),
        not_attempted=delivered.not_attempted, left_sending=delivered.left_sending, elsewhere=delivered.elsewhere, gone=delivered.gone,
        waiting=len(waiting), next_retry=min((w.retry_at for w in waiting), default=None), dry_run=dry_run, stopped=stop_event.is_set(),
        workers=delivered.workers, seconds=time.monotonic() - started,
        timings={**timings, **delivered.timings, "rank": timings.get("rank", 0.0) + delivered.timings.get("rank", 0.0)},
        editions=sorted({d.edition for d in dues}), fetched=fetched, fetch_error=fetch_error, error=delivered.error,
    )
    # A daemon checks every minute: a run that had nothing due is a debug line, not an info line a minute.
    waits: dict[str, Any] = {"waiting": report.waiting, "next_retry": report.next_retry.isoformat()} if report.next_retry is not None else {}
    log_event(log, "run-done", logging.INFO if report.due or report.fetched else logging.DEBUG, sent=report.sent, skipped=report.skipped,
              failed=report.failed, deferred=report.deferred, not_attempted=report.not_attempted, seconds=round(report.seconds, 1), **waits)  # a number in JSON logs
    for holder in report.gone:  # the daemon has no summary line: its log says whose rows nobody is sending
        log_event(log, "held-by-gone-worker", logging.WARNING, holder=holder.worker, deliveries=holder.rows, lease_ends_in=round(holder.seconds_left),
                  note="that worker has no session on the database (it ended or died, or is reconnecting); any run takes its rows over once its lease ends")
    return report


def _stage(timings: dict[str, float], name: str, since: float) -> float:
    now = time.perf_counter()
    timings[name] = timings.get(name, 0.0) + now - since
    return now


def _fetch_once(engine: Engine, settings: Settings, now: datetime, fetch: bool | Callable[[], bool], client: object | None,
                timings: dict[str, float], stop_event: threading.Event | None = None) -> tuple[list[SourceReport], str | None]:
    """The fetch, when asked for: on PostgreSQL under an advisory lock, so one host fetches while the others wait,
    and a question (`fetch` callable) is asked only once the lock is held (the others then find the fetch done)."""
    if not fetch:
        return [], None
    lock = fleet.advisory_lock(engine, "fetch") if fleet.is_shared(engine) else contextlib.nullcontext()
    with lock:
        if callable(fetch) and not fetch():
            log_event(log, "fetch-skipped", logging.DEBUG, note="no longer due: another run fetched")
            return [], None
        return _fetch(engine, settings, now, client, timings, stop_event)


def _fetch(engine: Engine, settings: Settings, now: datetime, client: object | None, timings: dict[str, float],
           stop_event: threading.Event | None) -> tuple[list[SourceReport], str | None]:
    """Every source fetched (until a stop request), or the error of a fetch that failed as a whole (what is stored is
    still sent)."""
    mark = time.perf_counter()
    try:
        return fetch_sources(engine, settings, now, client=client, stop_event=stop_event), None
    except Exception as exc:  # noqa: BLE001 - a wall: a fetch that breaks must not also stop the day's email
        error = one_line(exc)
        log_event(log, "fetch-failed", logging.ERROR, error=error, note="sending what is already stored", exc_info=None if isinstance(exc, DigestError) else exc)
        return [], error
    finally:
        _stage(timings, "fetch", mark)


def _rank(planned: Sequence[EditionPlan | Unplanned], ranking: PlansRanking | None) -> list[RankResult | Exception]:
    """Each plan's ranking, in order; an unplanned subscriber's error in their place (a dry run ranks them all)."""
    ranked = iter(ranking.rank([p for p in planned if isinstance(p, EditionPlan)]) if ranking is not None else [])
    return [p.error if isinstance(p, Unplanned) else next(ranked) for p in planned]


@dataclass(frozen=True)
class _Delivered:
    """The delivery step's counts: the loop's report, with the skipped and the editions that could not be built."""

    sent: int = 0
    skipped: int = 0
    failed: int = 0
    deferred: int = 0
    not_attempted: int = 0
    left_sending: int = 0
    workers: int = 0
    timings: Mapping[str, float] = field(default_factory=dict)
    error: DigestError | None = None
    elsewhere: int = 0
    gone: tuple[fleet.LeaseHolder, ...] = ()

    @classmethod
    def of(cls, report: DeliveryReport, skipped: int, unbuildable: int) -> _Delivered:
        return cls(report.sent, skipped, report.failed + unbuildable, report.deferred, report.not_attempted, report.left_sending,
                   report.workers, report.timings, report.error, report.elsewhere, report.gone)


def _deliver(engine: Engine, settings: Settings, now: datetime, planned: Sequence[EditionPlan | Unplanned], ranking: PlansRanking | None, *,
             clock: Callable[[], datetime], transport: Transport | None, stop_event: threading.Event, sleep: Callable[[float], object] | None,
             progress: Callable[[int], None] | None, worker: str) -> _Delivered:
    """Open each edition's ledger row, record the unplanned ones, and deliver the rest: each batch of letters is
    ranked once claimed (by the builder, with `ranking`), so this worker ranks only what it sends and holds the
    results of the batches in hand, not those of every due subscriber (issue 11)."""
    if not planned:
        return _Delivered()
    with paused_collector():  # a ledger row per due subscriber: nothing cyclic, and the collector would walk them all
        rows = ledger.open_deliveries(engine, [(p.subscriber.id or 0, p.edition) for p in planned], clock(), lambda sub, ed: make_message_id(settings.from_address, sub, ed))
    shared = fleet.is_shared(engine)
    resumed = sum(row.state == "sending" for row in rows.values())
    if resumed and not shared:  # on PostgreSQL other workers are sending: the claimer logs the rows it takes over
        log_event(log, "resume", logging.WARNING, deliveries=resumed, note="a message in flight when the last run died may arrive twice")
    letters: list[Letter] = []
    plan_of: dict[int, EditionPlan] = {}  # delivery id -> its plan, ranked when claimed
    unbuildable: list[tuple[EditionPlan | Unplanned, int, Exception]] = []
    for plan in planned:
        row = rows[(plan.subscriber.id or 0, plan.edition)]
        if isinstance(plan, Unplanned):
            unbuildable.append((plan, row.id, plan.error))
        else:
            plan_of[row.id] = plan
            letters.append(Letter(row.id, plan.subscriber, plan.edition, row.message_id or make_message_id(settings.from_address, plan.subscriber.id or 0, plan.edition), None,
                                  replay=row.replay, replay_until=row.replay_until))
    _record_unbuildable(engine, unbuildable, clock())
    if progress is not None and unbuildable:
        progress(len(unbuildable))

    def rank(batch: Sequence[Letter]) -> list[RankResult | Exception]:
        """The batch's results: a letter whose earlier copy may have arrived shows that copy's papers (replayed),
        the others are ranked together."""
        assert ranking is not None, "letters come from plans, and plans have a ranking"
        again = {letter.delivery_id: result for letter in batch if letter.replay is not None
                 and (result := replayed(plan_of[letter.delivery_id], letter.replay)) is not None}
        fresh = [letter for letter in batch if letter.delivery_id not in again]
        ranked = dict(zip((letter.delivery_id for letter in fresh), ranking.rank([plan_of[letter.delivery_id] for letter in fresh]) if fresh else [], strict=True))
        return [again.get(letter.delivery_id) or ranked[letter.delivery_id] for letter in batch]

    pace = pace_for(engine, settings)
    # The builder before the sender's threads start (it may fork), and closed whatever happens next: its workers end,
    # and the collector it froze runs again.
    with contextlib.closing(builder_for(settings, letters, clock(), rank)) as builder:
        out = sender_for(settings, transport, len(letters), pace=pace)
        try:
            claimer = (LeaseClaimer(engine, letters, clock=clock, covered_until=now, worker=worker, lease=settings.lease_seconds) if shared
                       else LedgerClaimer(engine, letters, clock=clock, covered_until=now))
            report = deliver_edition(letters, claimer=claimer, builder=builder, transport=out,
                                     sender=settings.envelope_sender, stop_event=stop_event, sleep=sleep, progress=progress)
        finally:
            out.close()
            if transport is None and isinstance(out, InlineSender):
                out.transport.close()
    return _Delivered.of(report, report.skipped, len(unbuildable))


def _rehearse(settings: Settings, now: datetime, planned: Sequence[EditionPlan | Unplanned], results: Sequence[RankResult | Exception],
              timings: dict[str, float], progress: Callable[[int], None] | None) -> _Delivered:
    """A dry run: every email built as the run would build it, nothing sent or recorded."""
    sent = skipped = failed = 0
    for plan, result in zip(planned, results):
        try:
            if isinstance(result, Exception):
                raise result
            if settings.skip_empty and is_empty(result):
                skipped += 1
            else:
                composed = compose(settings, plan.subscriber, plan.edition, result, message_id=make_message_id(settings.from_address, plan.subscriber.id or 0, plan.edition), date_=now)
                timings["render"] = timings.get("render", 0.0) + composed.render_seconds
                timings["build"] = timings.get("build", 0.0) + composed.build_seconds
                sent += 1
        except Exception as exc:  # noqa: BLE001 - this subscriber's edition cannot be built; the others go on
            failed += 1
            _log_unbuildable(plan, exc)
        if progress is not None:
            progress(1)
    return _Delivered(sent=sent, skipped=skipped, failed=failed)


def _record_unbuildable(engine: Engine, unbuildable: Sequence[tuple[EditionPlan | Unplanned, int, Exception]], now: datetime) -> None:
    """Each subscriber whose edition cannot be built: a 'failed' delivery with the error, in one transaction."""
    if not unbuildable:
        return

    def work(conn: Connection) -> None:
        for plan, row_id, exc in unbuildable:
            ledger.record_failed(conn, row_id, plan.subscriber.id or 0, f"cannot build the edition: {one_line(exc)}", 0, now, bounce=False)

    ledger.write(engine, work)
    for plan, _, exc in unbuildable:
        _log_unbuildable(plan, exc)


def _log_unbuildable(plan: EditionPlan | Unplanned, exc: Exception) -> None:
    # A DigestError says what is wrong; anything else is a bug or a row edited by hand: keep its traceback.
    log_event(log, "failed", logging.WARNING, subscriber=plan.subscriber.email, edition=plan.edition, error=f"cannot build the edition: {one_line(exc)}",
              exc_info=None if isinstance(exc, DigestError) else exc)
