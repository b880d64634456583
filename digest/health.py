"""Is digest healthy? Tells an expected quiet day (arXiv's weekend or a holiday) from a broken source.

arXiv announces new papers Sunday to Thursday at 20:00 US/Eastern, so a fetch between Friday 20:00 and
Sunday 20:00 Eastern finds no new mailing: zero entries then is expected. Zero entries from an arXiv
listing after a weekday announcement means a broken feed (or an arXiv holiday, which only a person can
tell). Pure: it judges the rows digest.store.status returns and never reads the database or the clock.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Sequence
from zoneinfo import ZoneInfo

from .store.status import SourceHealth

ARXIV_TZ = ZoneInfo("America/New_York")
ANNOUNCE_HOUR = 20  # arXiv's announcements go out at 20:00 US/Eastern
ANNOUNCE_WEEKDAYS = (6, 0, 1, 2, 3)  # Sunday to Thursday (datetime.weekday(): Monday = 0)
ERROR_LIMIT = 3  # failed fetches in a row that make a source broken


def after_announcement(instant: datetime) -> bool:
    """True when the newest arXiv announcement before `instant` is a regular one (not a Fri/Sat silence)."""
    local = instant.astimezone(ARXIV_TZ).replace(tzinfo=None)
    # Shift the day boundary to 20:00: the evening's announcement belongs to the day it was made.
    return (local - timedelta(hours=ANNOUNCE_HOUR)).weekday() in ANNOUNCE_WEEKDAYS


def is_arxiv(source: SourceHealth) -> bool:
    return source.kind.startswith("arxiv")


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
    return f"{skipped} in the last fetch (`digest -v fetch` names them)" if skipped else ""


def source_problems(sources: Sequence[SourceHealth]) -> list[str]:
    """One line per broken enabled source: its last fetch failed (3 failures in a row say so), it stored nothing
    because every entry was refused, or an arXiv announcement brought nothing."""
    problems = []
    for source in sources:
        if not source.enabled:
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
