"""Which edition a subscriber is due for at a given instant: pure calendar arithmetic, no database, no clock.

An edition is named by the subscriber's local date (YYYY-MM-DD). A daily subscriber is due once their
local send time has passed on their local day; a weekly one only on their weekday. Times that do not
exist (spring-forward gap) count as passed at the first instant after the gap; times that happen twice
(fall-back) count as passed at their first occurrence.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# The one weekday table: datetime.weekday() order (Monday = 0). Frequencies ("weekly:fri"), crontab day names
# (digest.schedule), arXiv's announcement days (digest.health) and the emails' dates come from it.
DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
WEEKDAYS = tuple(name[:3].lower() for name in DAY_NAMES)  # mon ... sun


def parse_send_at(value: str) -> time:
    try:
        hours, minutes = value.strip().split(":")
        return time(int(hours), int(minutes))
    except (ValueError, AttributeError):
        raise ValueError(f"send time {value!r} is not HH:MM") from None


def parse_zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (use an IANA name such as Europe/London)") from None


def parse_frequency(value: str) -> str:
    value = value.strip().lower()
    if value == "daily" or (value.startswith("weekly:") and value[7:] in WEEKDAYS):
        return value
    if value == "weekly":  # the word a newcomer types first: which day is the question
        raise ValueError(f"{value!r} names no day: weekly:mon ... weekly:sun (did you mean weekly:mon?)")
    day = value.partition(":")[2].strip()[:3]
    guess = f" (did you mean weekly:{day}?)" if value.startswith("weekly") and day in WEEKDAYS else ""
    raise ValueError(f"{value!r} is not daily or weekly:mon ... weekly:sun{guess}")


def send_instant(day: date, send_at: str, tz: str) -> datetime:
    """The UTC instant at which `send_at` local time happens on local `day` (first occurrence; after a gap)."""
    zone = parse_zone(tz)
    wall = datetime.combine(day, parse_send_at(send_at))
    first = wall.replace(tzinfo=zone, fold=0).astimezone(timezone.utc)
    # In a spring-forward gap, the wall time does not exist: round-tripping changes it. Use the gap's end.
    if first.astimezone(zone).replace(tzinfo=None) != wall:
        later = wall.replace(tzinfo=zone, fold=1).astimezone(timezone.utc)
        return min(first, later) if later.astimezone(zone).replace(tzinfo=None) == wall else _gap_end(wall, zone)
    return first


def _gap_end(wall: datetime, zone: ZoneInfo) -> datetime:
    probe = wall.replace(tzinfo=zone, fold=0).astimezone(timezone.utc)
    # Walk back to the transition: the first UTC minute whose local time is after the wall time.
    candidate = probe - timedelta(hours=3)
    while candidate.astimezone(zone).replace(tzinfo=None) < wall:
        candidate += timedelta(minutes=1)
    return candidate


def local_day(now: datetime, tz: str) -> date:
    return now.astimezone(parse_zone(tz)).date()


def earliest_local_day(now: datetime) -> date:
    """A day before which no edition can be due at `now` (due_edition looks back at most WEEKLY_CATCH_UP days; UTC-12
    is the furthest behind; a day more to spare). A finished edition older than it never decides whether an edition
    is due (due_edition compares the newest finished one with the one due), so the ledger is read from there on, not
    all of it."""
    return now.astimezone(timezone.utc).date() - timedelta(days=WEEKLY_CATCH_UP + 2)


def is_weekly(frequency: str) -> bool:
    return frequency.startswith("weekly:")


def publishes_on(frequency: str, day: date) -> bool:
    """Whether a subscriber on `frequency` has an edition on their local `day`: every day, or their weekday."""
    return not is_weekly(frequency) or WEEKDAYS[day.weekday()] == frequency[7:]


# How long after its send time yesterday's edition is still due once the local day has changed: a run every 15
# minutes (the deployment default) never came between a send time of 23:50 and midnight, and the next run's only
# candidate was the new day's edition, so such a subscriber got no email ever (found by benchmarks/soak.py). An hour,
# digest.health's grace for an edition: longer, and a run back after downtime would send yesterday's and today's.
LATE_EDITION_DUE = timedelta(hours=1)
# A weekly subscriber's edition not sent on its day (the mail server down all that day, no run) is still due for the
# rest of the week: without it, such a reader got nothing that week, and the papers of the week before the next edition's
# seven-day window never (found by benchmarks/soak.py). Never the week before's on the day of the next one.
WEEKLY_CATCH_UP = 6


def due_edition(now: datetime, send_at: str, tz: str, frequency: str, last_edition: str | None) -> str | None:
    """The edition (local date) due at `now`, or None if nothing is due.

    `last_edition` is the newest edition already accepted for this subscriber. The newest edition whose send time
    has come is due unless accepted: for a daily subscriber today's (after downtime one catch-up edition is sent, not
    one per missed day), or yesterday's within LATE_EDITION_DUE of its send time, before today's is due; for a weekly
    one, this week's, up to WEEKLY_CATCH_UP days after its day once they have had an edition (a new subscriber's
    first is their next day's).
    """
    today = local_day(now, tz)
    weekly = is_weekly(frequency)
    for back in range((WEEKLY_CATCH_UP + 1 if last_edition is not None else 1) if weekly else 2):
        day = today - timedelta(days=back)
        if not publishes_on(frequency, day):
            continue
        instant = send_instant(day, send_at, tz)
        if now < instant or (back and not weekly and now >= instant + LATE_EDITION_DUE):
            continue
        edition = day.isoformat()
        return None if last_edition is not None and last_edition >= edition else edition
    return None

