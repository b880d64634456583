"""Is digest healthy? Tells an expected quiet day (arXiv's weekend or a holiday) from a broken source.

arXiv announces new papers Sunday to Thursday at 20:00 US/Eastern, so a fetch between Friday 20:00 and
Sunday 20:00 Eastern finds no new mailing: zero entries then is expected. Zero entries from an arXiv
listing after a weekday announcement means a broken feed (or an arXiv holiday, which only a person can
tell). Is each edition sent? One that was due more than EDITION_GRACE ago and is not finished, or a delivery
'sending' for longer than a run keeps one there, is a problem. Is anything running? A host whose last run or tick
failed, and a daemon that has not been seen for MISSED_TICKS ticks, are problems at once (the heartbeats).
Pure: it judges the rows digest.store returns and never reads the database or the clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from .delivery.loop import retry_wait
from .editions import WEEKDAYS, due_edition, earliest_local_day, local_day, publishes_on, send_instant
from .store.deliveries import UnfinishedDelivery
from .store.status import Beat, Schedule, SourceHealth

ARXIV_TZ = ZoneInfo("America/New_York")
ANNOUNCE_HOUR = 20  # arXiv's announcements go out at 20:00 US/Eastern
ANNOUNCE_WEEKDAYS = tuple(WEEKDAYS.index(day) for day in ("sun", "mon", "tue", "wed", "thu"))  # as datetime.weekday() numbers them
ERROR_LIMIT = 3  # failed fetches in a row that make a source broken
# A source added this long ago and never fetched means nothing fetches: a daily fetch_cron would have run by now.
NEVER_FETCHED_AFTER = timedelta(hours=26)


def after_announcement(instant: datetime) -> bool:
    """True when the newest arXiv announcement before `instant` is a regular one (not a Fri/Sat silence)."""
    local = instant.astimezone(ARXIV_TZ).replace(tzinfo=None)
    # Shift the day boundary to 20:00: the evening's announcement belongs to the day it was made.
    return (local - timedelta(hours=ANNOUNCE_HOUR)).weekday() in ANNOUNCE_WEEKDAYS


def is_arxiv(source: SourceHealth) -> bool:
    return source.kind.startswith("arxiv")


def never_fetched_too_long(source: SourceHealth, now: datetime) -> bool:
    return (source.last_fetch_at is None and source.last_success_at is None and not source.consecutive_errors
            and source.created_at is not None and now - source.created_at > NEVER_FETCHED_AFTER)


def source_note(source: SourceHealth) -> str:
    """A few words on a source's state for `digest status`."""
    if not source.enabled:
        return f"disabled: {source.disabled_reason}" if source.disabled_reason else "disabled"
    if source.consecutive_errors:
        return f"{source.consecutive_errors} error{'s' if source.consecutive_errors > 1 else ''} in a row: {source.last_error or 'unknown error'}"
    if source.last_success_at is None:
        return "never fetched"
    skipped = f"{source.last_fetch_skipped} entr{'ies' if source.last_fetch_skipped > 1 else 'y'} skipped" if source.last_fetch_skipped else ""
    if source.last_fetch_count == 0 and is_arxiv(source) and not skipped:
        if after_announcement(source.last_success_at):
            return "EMPTY after an announcement (arXiv holiday, or a broken feed)"
        return "quiet: no arXiv announcement (weekend)"
    # The parser's skips are warnings the fetch printed (`-v` adds nothing: they are never logged one by one).
    return f"{skipped} in the last fetch (`digest fetch` named each in a warning)" if skipped else ""


def source_problems(sources: Sequence[SourceHealth], now: datetime | None = None) -> list[str]:
    """One line per broken enabled source: its last fetch failed (3 failures in a row say so), it stored nothing
    because every entry was refused, an arXiv announcement brought nothing, or (given `now`) it was added more than
    NEVER_FETCHED_AFTER ago and never fetched (no timer or daemon is running `digest run` / `digest serve`)."""
    problems = []
    for source in sources:
        if not source.enabled:
            continue
        if now is not None and never_fetched_too_long(source, now):
            added = source.created_at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC") if source.created_at else "?"
            problems.append(f"source {source.name} was added {added} and has never been fetched: is the timer (`digest run`) or `digest serve` running?")
            continue
        if source.consecutive_errors >= ERROR_LIMIT:
            problems.append(f"source {source.name} failed {source.consecutive_errors} times in a row (last error: {source.last_error or 'unknown'})")
        elif source.consecutive_errors:
            problems.append(f"source {source.name}: the last fetch failed ({source.last_error or 'unknown error'})")
        elif source.last_success_at is not None and source.last_fetch_count == 0 and source.last_fetch_skipped:
            problems.append(f"source {source.name} stored nothing from its last fetch: all {source.last_fetch_skipped} entries were refused")
        elif is_arxiv(source) and source.last_success_at is not None and source.last_fetch_count == 0 and after_announcement(source.last_success_at):
            when = source.last_success_at.astimezone(ARXIV_TZ).strftime("%a %Y-%m-%d %H:%M %Z")
            problems.append(f"source {source.name} brought 0 papers on an announcement day (fetched {when})")
    return problems


# --- editions -------------------------------------------------------------------------------------------

EDITION_GRACE = timedelta(hours=1)  # an edition not finished this long after its send time was not sent
# A run marks a delivery 'sending' just before handing it over and records the outcome right after (at most a few
# hundred are marked ahead: seconds at full speed, minutes at a slow send_rate); an hour means the run died.
SENDING_STUCK_AFTER = timedelta(hours=1)
NAMES_SHOWN = 5  # subscribers named in one problem line


LOOKBACK_DAYS = 8  # days back from today that last_due_edition looks for a subscriber's last edition (a week and a day)


def finished_since(now: datetime) -> str:
    """The oldest edition edition_problems(..., now) can ask about: the ledger's finished editions before it never
    change its answer (digest.store.deliveries.finished_editions reads from there on)."""
    return (earliest_local_day(now - EDITION_GRACE) - timedelta(days=LOOKBACK_DAYS)).isoformat()


def last_due_edition(now: datetime, send_at: str, tz: str, frequency: str) -> tuple[str, datetime] | None:
    """The newest edition whose send time is at or before `now`, with that instant (None if none in a week)."""
    today = local_day(now, tz)
    for back in range(LOOKBACK_DAYS):
        day = today - timedelta(days=back)
        if not publishes_on(frequency, day):
            continue
        instant = send_instant(day, send_at, tz)
        if instant <= now:
            return day.isoformat(), instant
    return None


def edition_problems(schedules: Sequence[Schedule], finished: Mapping[int, str], unfinished: Sequence[UnfinishedDelivery], now: datetime) -> list[str]:
    """One line per edition that was due more than EDITION_GRACE ago and is not finished (grouped by why: no
    delivery recorded, pending, deferred), per edition with deliveries 'sending' for over SENDING_STUCK_AFTER,
    and per subscriber whose schedule cannot be read (they get no email at all)."""
    problems = []
    open_rows = {(row.subscriber_id, row.edition): row for row in unfinished}
    missed: dict[tuple[str, str], list[str]] = {}
    errors: dict[tuple[str, str], str] = {}
    retries: dict[tuple[str, str], datetime] = {}  # a deferred group's first retry time (digest.delivery.loop.retry_wait)
    probe = now - EDITION_GRACE
    for sub in schedules:
        try:
            due = last_due_edition(probe, sub.send_at, sub.tz, sub.frequency)
            if due is None:
                continue
            edition, instant = due
            # Someone who became active after the send time was due from then on, if the runs still had the grace
            # period to send it before that day ended (joining at 23:59 does not make a missed edition).
            due_at = max(instant, sub.active_since)
            if due_at > probe or (due_at > instant and local_day(due_at + EDITION_GRACE, sub.tz).isoformat() != edition):
                continue
            # The same rule the run applies: due and not finished for this subscriber.
            if due_edition(due_at, sub.send_at, sub.tz, sub.frequency, finished.get(sub.subscriber_id)) != edition:
                continue
        except ValueError as exc:
            problems.append(f"subscriber {sub.email} gets no email: {exc}")
            continue
        row = open_rows.get((sub.subscriber_id, edition))
        if row is not None and row.state == "sending":
            continue  # being sent now, or stuck: the check below says which
        state = row.state if row is not None else "none"
        missed.setdefault((edition, state), []).append(sub.email)
        if row is not None and row.last_error and (edition, state) not in errors:
            errors[(edition, state)] = row.last_error
        if row is not None and state == "deferred":
            retry_at = row.since + retry_wait(row.attempts)
            retries[(edition, state)] = min(retries.get((edition, state), retry_at), retry_at)
    why = {"none": "no delivery recorded: no run since their send time?", "pending": "pending", "deferred": "deferred"}
    for (edition, state), emails in sorted(missed.items()):
        error = f", last error: {errors[(edition, state)]}" if (edition, state) in errors else ""
        if (edition, state) in retries:
            retry_at = retries[(edition, state)]
            clock = retry_at.astimezone(timezone.utc).strftime("%H:%M UTC")
            error += f"; next try at {clock}" if retry_at > now else f"; to be tried again since {clock}: no run since?"
        problems.append(f"edition {edition} not sent to {_count(len(emails), 'due subscriber')} more than {_span(EDITION_GRACE)} after their send time "
                        f"({why.get(state, state)}{error}): {_names(emails)}")
    stuck: dict[str, list[UnfinishedDelivery]] = {}
    for row in unfinished:
        if row.state == "sending" and row.since <= now - SENDING_STUCK_AFTER:
            stuck.setdefault(row.edition, []).append(row)
    for edition, rows in sorted(stuck.items()):
        since = min(row.since for row in rows).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        problems.append(f"{_count(len(rows), 'delivery', 'deliveries')} of edition {edition} 'sending' since {since}, over {_span(SENDING_STUCK_AFTER)} "
                        f"(the run sending them was killed, or could not record them; the next run sends them, and one handed over before it died may arrive twice): {_names([row.email for row in rows])}")
    return problems


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"


def _span(delta: timedelta) -> str:
    hours, rest = divmod(int(delta.total_seconds()), 3600)
    return _count(hours, "hour") if not rest else _count(int(delta.total_seconds()) // 60, "minute")


def _names(emails: Sequence[str]) -> str:
    shown = ", ".join(emails[:NAMES_SHOWN])
    return shown + (f" and {len(emails) - NAMES_SHOWN} more" if len(emails) > NAMES_SHOWN else "")


# --- heartbeats: is a daemon alive, did the last run work? ------------------------------------------------

MISSED_TICKS = 3  # a daemon not seen for this many ticks (and TICK_MARGIN) is dead, hung or cut off from the database
TICK_MARGIN = timedelta(minutes=2)  # a slow write, a busy database, a clock a little off
# A host silent while the others kept running for this long was taken out of service (a replaced container, a retired
# server): its last failure or its dead daemon is no longer reported (`digest status` still lists it until the prune).
RETIRED_AFTER = timedelta(days=1)
DEFAULT_TICK_SECONDS = 60  # `digest serve`'s default, for a row that does not say
JOBS = {"daemon": "a `digest serve` tick", "run": "`digest run`", "send": "`digest send`", "worker": "`digest worker`"}
RETRIES = {"daemon": "the next tick tries again", "run": "the next `digest run` tries again", "send": "the next run tries again",
           "worker": "the next run tries again"}


def daemon_overdue_after(tick_seconds: int | None) -> timedelta:
    """How long a daemon may go unseen: MISSED_TICKS of its ticks and TICK_MARGIN (its own heartbeat beats every tick,
    while a long tick sends)."""
    return MISSED_TICKS * timedelta(seconds=tick_seconds or DEFAULT_TICK_SECONDS) + TICK_MARGIN


def retired(beat: Beat, beats: Sequence[Beat]) -> bool:
    """Another host was seen more than RETIRED_AFTER after this one was last: it was taken out of service."""
    return any(other.host != beat.host and other.seen_at - beat.seen_at > RETIRED_AFTER for other in beats)


def last_jobs(beats: Sequence[Beat]) -> dict[str, Beat]:
    """Each host's newest finished job (a daemon's tick, a run, a send), by host."""
    newest: dict[str, Beat] = {}
    for beat in beats:
        if beat.finished_at is not None and beat.outcome is not None:
            if beat.host not in newest or beat.finished_at > newest[beat.host].finished_at:  # type: ignore[operator]
                newest[beat.host] = beat
    return newest


def heartbeat_problems(beats: Sequence[Beat], now: datetime) -> list[str]:
    """One line per host whose newest run or tick failed (a later one that works clears it), per daemon not seen for
    daemon_overdue_after(its tick), and per daemon stopped cleanly when nothing has run anywhere since (nothing sends).
    A host that never ran a daemon (cron, a timer) has no daemon row, so nothing is said of its silence; a host
    silent while others kept running for RETIRED_AFTER is taken for retired."""
    problems = []
    for host, beat in sorted(last_jobs(beats).items()):
        if beat.outcome == "failed" and not retired(beat, beats):
            problems.append(f"the last run on {host} ({JOBS.get(beat.kind, beat.kind)}) at {_clock(beat.finished_at)} failed: {beat.error or 'unknown error'}; "
                            f"{RETRIES.get(beat.kind, 'the next run tries again')}, and what is due stays due (`digest doctor` checks the mail server, the database and the sources)")
    for beat in beats:
        if beat.kind != "daemon":
            continue
        allowed = daemon_overdue_after(beat.tick_seconds)
        if beat.stopped_at is not None:
            # A clean stop is a problem once it is plain nothing replaced it: no daemon restarted, no cron run since.
            if now - beat.stopped_at > allowed and not any(other is not beat and other.seen_at > beat.stopped_at for other in beats):
                problems.append(f"daemon on {beat.host} (pid {beat.pid}) was stopped at {_clock(beat.stopped_at)} (SIGTERM or SIGINT), and nothing has run "
                                f"since: it was the only thing sending, so no edition goes out; start `digest serve` again, or schedule `digest run`")
        elif now - beat.seen_at > allowed and not retired(beat, beats):
            problems.append(f"daemon on {beat.host} (pid {beat.pid}) last ticked {_ago(now - beat.seen_at)} ago (it ticks every {beat.tick_seconds or DEFAULT_TICK_SECONDS} s): "
                            "is it running? It did not stop cleanly (killed, crashed, its host down or the database out of its reach); check its service and its log")
    return problems


def beat_note(beat: Beat, now: datetime) -> str:
    """A heartbeat for `digest status`: who, when last seen, how its last job ended."""
    who = f"daemon on {beat.host} (pid {beat.pid}, every {beat.tick_seconds or DEFAULT_TICK_SECONDS} s)" if beat.kind == "daemon" else f"`digest {beat.kind}` on {beat.host} (pid {beat.pid})"
    if beat.kind == "daemon":
        state = f"stopped at {_clock(beat.stopped_at)}" if beat.stopped_at is not None else f"last ticked {_ago(now - beat.seen_at)} ago"
        if beat.stopped_at is None and beat.started_at is not None and (beat.finished_at is None or beat.finished_at < beat.started_at):
            state += f", a tick running since {_clock(beat.started_at)}"
    else:
        state = f"last ran {_ago(now - beat.seen_at)} ago"
    last = ""
    if beat.finished_at is not None and beat.outcome is not None:
        last = f"; last {'tick' if beat.kind == 'daemon' else 'run'} {_clock(beat.finished_at)} {beat.outcome}" + (f": {beat.error}" if beat.outcome == "failed" and beat.error else "")
    return f"{who}: {state}{last}"


def _clock(instant: datetime | None) -> str:
    return instant.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC") if instant else "?"


def _ago(delta: timedelta) -> str:
    seconds = max(int(delta.total_seconds()), 0)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 120 * 60:
        return f"{seconds // 60} min"
    if seconds < 48 * 3600:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} days"
