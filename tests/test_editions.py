"""Which edition is due, from fixed instants: DST gaps and folds, zones far from UTC, weekly subscribers,
catch-up after downtime. `simulate` replays a clock minute by minute with a ledger of one (the newest edition)."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from digest.editions import (
    LATE_EDITION_DUE,
    due_edition,
    local_day,
    parse_frequency,
    parse_send_at,
    parse_zone,
    send_instant,
)

UTC = timezone.utc


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def simulate(send_at: str, tz: str, frequency: str, start: datetime, end: datetime, last: str | None = None, step: timedelta = timedelta(minutes=1)) -> list[tuple[datetime, str]]:
    """Every (instant, edition) a run every `step` would send between start and end."""
    sent = []
    now = start
    while now < end:
        edition = due_edition(now, send_at, tz, frequency, last)
        if edition is not None:
            sent.append((now, edition))
            last = edition
        now += step
    return sent


# --- daylight saving ---------------------------------------------------------------------------------


@pytest.mark.parametrize("tz, day, send_at, expected_utc", [
    # New York springs forward at 02:00 -> 03:00: 02:30 does not exist; sent at the gap's end (03:00 EDT).
    ("America/New_York", date(2025, 3, 9), "02:30", utc(2025, 3, 9, 7, 0)),
    # London springs forward at 01:00 -> 02:00: 01:30 does not exist; sent at 02:00 BST.
    ("Europe/London", date(2025, 3, 30), "01:30", utc(2025, 3, 30, 1, 0)),
    # ...while 02:30 exists in London that day (BST), and in New York on its own fall-back day (EST).
    ("Europe/London", date(2025, 3, 30), "02:30", utc(2025, 3, 30, 1, 30)),
    ("America/New_York", date(2025, 11, 2), "02:30", utc(2025, 11, 2, 7, 30)),
    # Fall back: 01:30 happens twice; the first occurrence (still on summer time) counts.
    ("America/New_York", date(2025, 11, 2), "01:30", utc(2025, 11, 2, 5, 30)),
    ("Europe/London", date(2025, 10, 26), "01:30", utc(2025, 10, 26, 0, 30)),
], ids=["ny-gap-0230", "london-gap-0130", "london-spring-0230", "ny-fallback-0230", "ny-fold-0130", "london-fold-0130"])
def test_send_instant_across_dst(tz, day, send_at, expected_utc):
    assert send_instant(day, send_at, tz) == expected_utc


@pytest.mark.parametrize("tz, send_at, day", [
    ("America/New_York", "02:30", date(2025, 3, 9)),  # does not exist
    ("America/New_York", "01:30", date(2025, 11, 2)),  # happens twice
    ("Europe/London", "01:30", date(2025, 3, 30)),  # does not exist
    ("Europe/London", "01:30", date(2025, 10, 26)),  # happens twice
    ("America/New_York", "02:30", date(2025, 11, 2)),  # the hour after the fold
], ids=["ny-gap", "ny-fold", "london-gap", "london-fold", "ny-after-fold"])
def test_due_edition_sends_once_on_dst_days(tz, send_at, day):
    start = datetime.combine(day - timedelta(days=1), datetime.min.time(), UTC)
    sent = simulate(send_at, tz, "daily", start, start + timedelta(days=2), last=(day - timedelta(days=1)).isoformat())
    editions = [edition for _, edition in sent]
    assert day.isoformat() in editions and editions.count(day.isoformat()) == 1
    first = next(instant for instant, edition in sent if edition == day.isoformat())
    assert first == send_instant(day, send_at, tz)


def test_due_edition_not_before_the_gap_ends():
    # 01:59 EST is the last minute before New York's gap: 02:30 has not "passed" yet.
    assert due_edition(utc(2025, 3, 9, 6, 59), "02:30", "America/New_York", "daily", "2025-03-08") is None
    assert due_edition(utc(2025, 3, 9, 7, 0), "02:30", "America/New_York", "daily", "2025-03-08") == "2025-03-09"


def test_due_edition_second_occurrence_of_fold_sends_nothing_more():
    # 01:30 EST (06:30 UTC) is the second 01:30 of the day: the edition went out at the first.
    assert due_edition(utc(2025, 11, 2, 6, 30), "01:30", "America/New_York", "daily", "2025-11-02") is None
    assert due_edition(utc(2025, 11, 2, 5, 29), "01:30", "America/New_York", "daily", "2025-11-01") is None


# --- zones far from UTC ------------------------------------------------------------------------------


@pytest.mark.parametrize("tz, now, before, edition", [
    # Kiritimati is UTC+14: its 07:00 on 15 June is 17:00 UTC on 14 June.
    ("Pacific/Kiritimati", utc(2025, 6, 14, 17, 0), utc(2025, 6, 14, 16, 59), "2025-06-15"),
    # Kolkata is UTC+5:30: 07:00 IST is 01:30 UTC.
    ("Asia/Kolkata", utc(2025, 6, 15, 1, 30), utc(2025, 6, 15, 1, 29), "2025-06-15"),
    # St John's is UTC-3:30 in winter (07:00 NST = 10:30 UTC) and UTC-2:30 in summer (09:30 UTC).
    ("America/St_Johns", utc(2025, 1, 15, 10, 30), utc(2025, 1, 15, 10, 29), "2025-01-15"),
    ("America/St_Johns", utc(2025, 6, 15, 9, 30), utc(2025, 6, 15, 9, 29), "2025-06-15"),
], ids=["kiritimati+14", "kolkata+5:30", "st-johns-3:30", "st-johns-summer-2:30"])
def test_due_edition_far_from_utc(tz, now, before, edition):
    yesterday = (date.fromisoformat(edition) - timedelta(days=1)).isoformat()
    assert due_edition(before, "07:00", tz, "daily", yesterday) is None
    assert due_edition(now, "07:00", tz, "daily", yesterday) == edition
    assert due_edition(now + timedelta(hours=12), "07:00", tz, "daily", edition) is None


def test_due_edition_kiritimati_edition_is_named_by_local_day():
    # At 23:00 UTC on the 14th it is already 13:00 on the 15th in Kiritimati.
    assert local_day(utc(2025, 6, 14, 23, 0), "Pacific/Kiritimati") == date(2025, 6, 15)
    sent = simulate("07:00", "Pacific/Kiritimati", "daily", utc(2025, 6, 13), utc(2025, 6, 16), last="2025-06-13")
    assert [e for _, e in sent] == ["2025-06-14", "2025-06-15", "2025-06-16"]


# --- weekly subscribers and catch-up -----------------------------------------------------------------


def test_due_edition_weekly_one_edition_on_its_weekday():
    # 2025-06-09 is a Monday; simulate two full weeks in Asia/Kolkata.
    sent = simulate("08:00", "Asia/Kolkata", "weekly:mon", utc(2025, 6, 7), utc(2025, 6, 21), step=timedelta(minutes=5))
    assert [e for _, e in sent] == ["2025-06-09", "2025-06-16"]
    assert all(date.fromisoformat(e).weekday() == 0 for _, e in sent)


def test_due_edition_weekly_not_on_other_days_for_a_new_subscriber():
    assert due_edition(utc(2025, 6, 10, 12), "08:00", "UTC", "weekly:mon", None) is None
    assert due_edition(utc(2025, 6, 9, 12), "08:00", "UTC", "weekly:mon", None) == "2025-06-09"


def test_due_edition_weekly_missed_on_its_day_is_due_for_the_rest_of_the_week():
    """Found by the soak: a weekly reader whose Monday passed while the mail server was down got nothing that week
    (the row of Monday's edition left 'pending', `status --check` failing all week), and the papers older than the
    next edition's seven days never. Monday's edition is now sent by the first run that can, up to Sunday."""
    last = "2025-06-02"  # last week's went out
    assert due_edition(utc(2025, 6, 10, 3), "08:00", "UTC", "weekly:mon", last) == "2025-06-09"  # Tuesday, before 08:00
    assert due_edition(utc(2025, 6, 15, 23, 59), "08:00", "UTC", "weekly:mon", last) == "2025-06-09"  # Sunday night
    assert due_edition(utc(2025, 6, 10, 3), "08:00", "UTC", "weekly:mon", "2025-06-09") is None  # sent: once
    assert due_edition(utc(2025, 6, 16, 7, 59), "08:00", "UTC", "weekly:mon", last) is None  # not on the next Monday
    assert due_edition(utc(2025, 6, 16, 8), "08:00", "UTC", "weekly:mon", last) == "2025-06-16"  # that one's own
    # As a daemon ticking every 15 minutes sees it when the server is down all Monday: one edition, on Tuesday.
    sent = simulate("08:00", "UTC", "weekly:mon", utc(2025, 6, 10, 0, 0), utc(2025, 6, 20), last=last)
    assert [e for _, e in sent] == ["2025-06-09", "2025-06-16"] and sent[0][0] == utc(2025, 6, 10, 0, 0) and sent[1][0] == utc(2025, 6, 16, 8)


def test_due_edition_catch_up_after_two_days_down_is_one_edition_for_today():
    last = "2025-06-12"  # the daemon died after the 12th's edition; back on the 15th
    assert due_edition(utc(2025, 6, 15, 6, 59), "07:00", "UTC", "daily", last) is None  # not before today's send time
    sent = simulate("07:00", "UTC", "daily", utc(2025, 6, 15, 6, 0), utc(2025, 6, 15, 23, 59), last=last)
    assert [e for _, e in sent] == ["2025-06-15"]


@pytest.mark.parametrize("send_at, tz", [("23:55", "America/Los_Angeles"), ("23:50", "UTC"), ("23:46", "Asia/Kolkata")], ids=["la-2355", "utc-2350", "kolkata-2346"])
def test_due_edition_a_send_time_after_the_last_run_of_the_day_is_sent_by_the_first_run_after_midnight(send_at, tz):
    # The soak (benchmarks/soak.py seed 1): a run every 15 minutes (the deployment default) never came between a send
    # time of 23:46 to 23:59 and local midnight, and the next run's only candidate was the new day's edition: no email ever.
    sent = simulate(send_at, tz, "daily", utc(2026, 3, 2), utc(2026, 3, 6, 12), last="2026-03-01", step=timedelta(minutes=15))
    assert [e for _, e in sent] == ["2026-03-02", "2026-03-03", "2026-03-04", "2026-03-05"]
    first = send_instant(date(2026, 3, 2), send_at, tz)
    assert all(timedelta(0) <= at - first - timedelta(days=k) < timedelta(minutes=15) for k, (at, _) in enumerate(sent))
    # ...but only for a little while: after downtime, still only today's edition (and not yesterday's before it).
    assert due_edition(first + LATE_EDITION_DUE, send_at, tz, "daily", "2026-03-01") is None


def test_due_edition_first_edition_for_a_new_subscriber():
    assert due_edition(utc(2025, 6, 15, 7, 0), "07:00", "UTC", "daily", None) == "2025-06-15"


# --- parsing -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["7", "25:00", "07:60", "seven", ""])
def test_parse_send_at_rejects_bad_times(value):
    with pytest.raises(ValueError, match="HH:MM"):
        parse_send_at(value)


def test_parse_zone_and_frequency_reject_unknown_names():
    with pytest.raises(ValueError, match="IANA"):
        parse_zone("Mars/Olympus")
    with pytest.raises(ValueError, match="weekly"):
        parse_frequency("weekly:funday")
    assert parse_frequency(" Weekly:MON ") == "weekly:mon"
