"""`digest serve` (the scheduler daemon) and `digest status` (health for people and monitors).

Thin: when to run lives in digest.schedule, what is a problem in digest.health, the queries in digest.store.status.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timezone

import click

from ..errors import ConfigError
from ..health import beat_note, edition_problems, finished_since, heartbeat_problems, source_note, source_problems
from ..log import enable_event_logging
from ..pipeline.heartbeat import Heartbeat
from ..schedule import fetch_due, fetch_trigger, next_fire_times, pipeline_job
from ..schedule import serve as serve_forever
from ..store.deliveries import editions_summary, finished_editions, unfinished_deliveries
from ..store.fleet import LeaseHolder, clock_offset, clock_problem, is_shared, lease_holders
from ..store.status import active_schedules, heartbeats, source_health
from ..tokens import secret_key_hint, secret_key_problem
from . import EXIT_ERROR, AppContext, main, pass_app, settings_problems

EDITIONS_SHOWN = 7


@main.command()
@click.option("--tick-seconds", type=click.IntRange(min=1), default=60, show_default=True, metavar="N",
              help="Every N seconds: fetch if a fetch is due, then send to subscribers whose send time has come.")
@pass_app
def serve(app: AppContext, tick_seconds: int) -> None:
    """Run the scheduler: fetch at fetch_cron (in fetch_tz), send each edition when it is due.

    Every tick (at start, then every N seconds) fetches if a fetch_cron time has passed since the last fetch
    (so a fetch missed while it was down runs at start) or a failed fetch is due a retry, then sends whatever
    is due. Shares `digest run`'s job and lock, so cron or a person running `digest run` never causes a
    double send. SIGTERM or SIGINT lets the message in flight finish (a fetch is given up at once), then exits 0.
    Each tick, a beat every N seconds and the stop are written to this host's heartbeat (`digest status`).
    """
    enable_event_logging()
    settings = app.settings
    fetch_trigger(settings)  # a bad fetch_cron is reported before anything starts
    if problem := secret_key_problem(settings.secret_key):  # not at the first due subscriber, on every tick after it
        raise ConfigError(f"secret_key is {problem}", secret_key_hint(settings.secret_key))
    engine = app.engine
    heartbeat = Heartbeat(engine, settings, "daemon", tick_seconds=tick_seconds)
    code = serve_forever(settings, pipeline_job(engine, settings), lambda now: fetch_due(engine, settings, now), tick_seconds=tick_seconds, heartbeat=heartbeat)
    click.get_current_context().exit(code)


def _when(value: datetime | None) -> str:
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC") if value else "never"


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--check", is_flag=True, help="Print one line per problem and exit 1 when there is one (for monitors).")
@pass_app
def status(app: AppContext, as_json: bool, check: bool) -> None:
    """Health of sources, editions, daemons and runs; tells an arXiv weekend from a broken source.

    Per source: last success, papers in the last fetch, errors in a row. Per edition: sent, skipped,
    failed, deferred, pending. Per host: its daemon (last tick, pid, last outcome) and its last run.
    --check fails (exit 1, one "fail: ..." line per problem) when the last fetch of a source failed (saying
    so when it failed 3 times in a row), stored nothing because every entry was refused, or an arXiv source
    brought 0 papers after a weekday announcement; when a host's last run or daemon tick failed; when a
    daemon has not ticked for 3 ticks (killed or hung), or was stopped and nothing has run since; when an
    edition due more than an hour ago is not finished for an active subscriber, or deliveries have been
    'sending' for over an hour (the run that sent them died); otherwise prints "ok: ...".
    """
    now = app.now()
    engine = app.existing_engine  # a status of nothing: no home or database is made by looking
    sources = source_health(engine)
    editions = editions_summary(engine, limit=EDITIONS_SHOWN)
    beats = heartbeats(engine)
    problems = source_problems(sources, now) + heartbeat_problems(beats, now) + edition_problems(active_schedules(engine), finished_editions(engine, since=finished_since(now)), unfinished_deliveries(engine), now)
    holders = lease_holders(engine) if is_shared(engine) else []  # PostgreSQL: who holds the deliveries being sent
    if is_shared(engine) and (skew := clock_problem(clock_offset(engine, now))):  # one clock for a fleet: the database's
        problems.append(skew)
    upcoming = next_fire_times(fetch_trigger(app.settings), now, 1)
    # A source never fetched, a missed fetch_cron time or a failed fetch's retry: the next run or tick fetches.
    due_now = fetch_due(engine, app.settings, now)
    next_fetch = now if due_now else upcoming[0] if upcoming else None
    if as_json:
        click.echo(json.dumps({
            "ok": not problems,
            "problems": problems,
            "sources": [{**{k: getattr(s, k) for k in s.__dataclass_fields__}, "note": source_note(s)} for s in sources],
            "editions": [{k: getattr(e, k) for k in ("edition", "sent", "skipped", "failed", "deferred", "pending")} for e in editions],
            "leases": [{"worker": h.worker, "deliveries": h.rows, "editions": list(h.editions), "connected": h.connected,
                        "lease_seconds_left": round(h.seconds_left, 1)} for h in holders],
            "next_fetch": next_fetch,
            "heartbeats": [{**{k: getattr(b, k) for k in b.__dataclass_fields__}, "note": beat_note(b, now)} for b in beats],
        }, indent=2, default=lambda v: v.isoformat()))
    elif check:
        for problem in problems:
            click.echo(f"fail: {problem}")
        if not problems:
            click.echo(_ok_line(sources, next_fetch, due_now))
    else:
        _print_status(sources, editions, problems, next_fetch, app.settings, due_now, holders, [beat_note(b, now) for b in beats])
    if check and problems:
        click.get_current_context().exit(EXIT_ERROR)


def _ok_line(sources, next_fetch: datetime | None, due_now: bool = False) -> str:
    """`status --check`'s line when nothing is wrong; a source not fetched yet is said so, with when it will be."""
    enabled = [s for s in sources if s.enabled]
    line = f"ok: {len(enabled)} source{'s' if len(enabled) != 1 else ''} enabled"
    if not enabled:
        return line + " (add one with `digest sources add`)"
    fetched = [s for s in enabled if s.last_fetch_at is not None]
    last = max((s.last_success_at for s in fetched if s.last_success_at), default=None)
    if fetched:
        line += f", last success {_when(last)}"
    waiting = len(enabled) - len(fetched)
    if waiting:
        which = f"{waiting} not fetched yet" if fetched else "not fetched yet"
        when = ("the next `digest run` or daemon tick fetches" if due_now else f"the next fetch is {_when(next_fetch)}" if next_fetch
                else "no fetch is scheduled (fetch_cron)")
        line += f"{', ' if fetched else ', '}{which}: {when}, or `digest fetch` now (a problem only if a day passes)"
    return line


def _print_status(sources, editions, problems, next_fetch, settings, due_now: bool = False, holders: Sequence[LeaseHolder] = (),
                  beats: Sequence[str] = ()) -> None:
    if not sources:
        click.echo("sources: none (add one with `digest sources add`)")
    else:
        width = max(len("SOURCE"), *(len(s.name) for s in sources))
        click.echo(f"{'SOURCE':<{width}}  {'KIND':<9}  {'LAST SUCCESS':<20}  {'PAPERS':>6}  {'ERRORS':>6}  NOTE")
        for s in sources:
            click.echo(f"{s.name:<{width}}  {s.kind:<9}  {_when(s.last_success_at):<20}  {s.last_fetch_count:>6}  {s.consecutive_errors:>6}  {source_note(s)}".rstrip())
    click.echo("")
    if not editions:
        click.echo("editions: none sent yet")
    else:
        click.echo(f"{'EDITION':<10}  {'SENT':>5}  {'SKIPPED':>7}  {'FAILED':>6}  {'DEFERRED':>8}  {'PENDING':>7}")
        for e in editions:
            click.echo(f"{e.edition:<10}  {e.sent:>5}  {e.skipped:>7}  {e.failed:>6}  {e.deferred:>8}  {e.pending:>7}")
    for h in holders:  # PENDING counts them; this says whose they are and whether that worker is still there
        click.echo(f"leased: {h.rows} {'delivery' if h.rows == 1 else 'deliveries'} of {', '.join(h.editions)} held by {h.describe()}")
    click.echo("")
    if due_now:
        click.echo(f"next fetch: due now, at the next `digest run` or daemon tick (fetch_cron \"{settings.fetch_cron}\" in {settings.fetch_tz})")
    else:
        zone_time = next_fetch.strftime("%Y-%m-%d %H:%M %Z") if next_fetch else "never"
        click.echo(f"next fetch: {zone_time} (fetch_cron \"{settings.fetch_cron}\" in {settings.fetch_tz})")
    for note in beats:  # each host's daemon and last run (none: no daemon or run has written its heartbeat yet)
        click.echo(note)
    for problem in problems:
        click.echo(f"problem: {problem}")


@main.command()
@click.option("--to", "to", metavar="ADDRESS", help="Also send a test email to ADDRESS through the configured transport.")
@pass_app
def doctor(app: AppContext, to: str | None) -> None:
    """Check a live setup end to end, without sending to any subscriber.

    One line per check, ok or FAIL with what to do: the config, secret_key and from_address; the database and
    its migrations (nothing is created or upgraded); each enabled source, fetched once and parsed (nothing is
    stored); the SMTP server (connect, TLS, login); base_url's /healthz from this machine; and with --to, a test
    email to ADDRESS. Exits 1 when a check fails.
    """
    from ..config import Settings, load_settings
    from ..doctor import run_checks
    from ..errors import DigestError

    def load(problems: list[DigestError]) -> Settings:
        bad_values: list[ConfigError] = []
        settings = load_settings(app.home, app.config_file, overrides=app.overrides, problems=bad_values)
        problems += [*bad_values, *settings_problems(settings)]  # and what the commands that use them refuse
        return settings

    failed = 0
    for check in run_checks(load, to=to, now=app.now()):
        click.echo(check.line())
        failed += check.ok is False
    if failed:
        click.echo(f"{failed} problem{'s' if failed != 1 else ''}: fix {'them' if failed != 1 else 'it'} and run `digest doctor` again")
        click.get_current_context().exit(EXIT_ERROR)
    click.echo("all checks passed" + ("" if to else " (no test email: --to ADDRESS sends one)"))
