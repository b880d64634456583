"""`digest preview`, `digest send`, `digest run`, `digest worker` and `digest demo`: thin commands over digest.pipeline.

They print and exit; deciding who is due, what they get and how it is delivered is the pipeline's job.
"""

from __future__ import annotations

import email
import email.policy
import signal
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..config import load_settings
from ..errors import InputError, LockedError
from ..log import echo_events
from ..pipeline.heartbeat import Heartbeat, handed_over
from ..schedule import fetch_due, fetch_trigger, next_fire_times
from ..store import deliveries as ledger
from ..store import ensure_ready, open_engine, session_scope
from ..store.subscribers import SubscriberInput, add_subscriber, find_subscriber, list_subscribers
from ..tokens import DEMO_SECRET, edition_url
from . import EXIT_ERROR, AppContext, main, pass_app
from .sources import echo_report, nothing_to_fetch

if TYPE_CHECKING:
    from click._termui_impl import ProgressBar

    from ..pipeline.job import RunReport

DEMO_CONFIG = f"""# written by `digest demo`: an offline demo, mail goes to the outbox directory
secret_key = "{DEMO_SECRET}"
from_address = "digest@example.org"
from_name = "Paper digest (demo)"
"""
DEMO_SUBSCRIBERS = (
    ("ada@example.org", "Ada", ["coding agents", "mechanistic interpretability", "language model benchmarks"]),
    ("grace@example.org", "Grace", ["speech recognition", "text to speech", "audio language models"]),
    ("alan@example.org", "Alan", ["robot learning", "reinforcement learning", "embodied agents"]),
)


def _edition(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value).isoformat()
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date YYYY-MM-DD", param_hint="--date") from None


class _Progress:
    """A click progress bar on a terminal (stderr), fed from the sending thread; nothing otherwise."""

    def __init__(self) -> None:
        self.bar: ProgressBar[int] | None = None
        self.lock = threading.Lock()
        self.enabled = sys.stderr.isatty()

    def plan(self, total: int) -> None:
        if self.enabled and total:
            self.bar = click.progressbar(length=total, label="sending", file=sys.stderr, show_pos=True)
            self.bar.__enter__()

    def step(self, n: int) -> None:
        if self.bar is not None:
            with self.lock:
                self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)


class _Interruption:
    """Ctrl-C or SIGTERM while sending: finish and record the message in flight, leave the rest 'pending'
    (not 'sending', which would mean "may have arrived"). Before sending starts, or a second time, it
    interrupts at once as usual: fetching and ranking leave nothing half-written."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.sending = False
        self.previous: dict = {}

    def __enter__(self) -> _Interruption:
        if threading.current_thread() is threading.main_thread():
            self.previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, _frame: object) -> None:
        if not self.sending:
            raise KeyboardInterrupt
        if self.stop.is_set():  # the rows being sent stay 'sending': the next run takes them up again (event=resume)
            raise KeyboardInterrupt("interrupted while sending: the next run sends what was not recorded as sent (a message in flight may arrive twice)")
        self.stop.set()
        click.echo(f"{signal.Signals(signum).name}: stopping after the message in flight (again to abort at once)", err=True)


def _deliver(app: AppContext, *, fetch: bool | Callable[[], bool], only: str | None = None, dry_run: bool = False, edition: str | None = None,
             follow: bool = False, kind: str | None = None) -> None:
    """Run the job and print what it did; with a `kind` ("run", "send", "worker"), its outcome is written to this
    host's heartbeat for `digest status --check` (a run that stopped early or raised: failed, with its error)."""
    heartbeat = Heartbeat(app.engine, app.settings, kind) if kind is not None else None
    started = app.now()
    try:
        report = _run(app, fetch=fetch, only=only, dry_run=dry_run, edition=edition, follow=follow)
    except LockedError:  # another run holds the lock: it writes its own outcome
        raise
    except Exception as exc:
        if heartbeat is not None:
            heartbeat.finished(app.now(), exc, started_at=started)
        raise
    if heartbeat is not None and (report.error is not None or handed_over(report)):
        heartbeat.finished(app.now(), report.error, started_at=started)
    elif heartbeat is not None:  # it sent nothing: the last outcome stands (Heartbeat.idle)
        heartbeat.idle(app.now())
    _print_report(app, report, only)


def _run(app: AppContext, *, fetch: bool | Callable[[], bool], only: str | None, dry_run: bool, edition: str | None, follow: bool) -> RunReport:
    # Imported here, not at the top: the job loads ranking and rendering (numpy, scipy, premailer), which
    # `digest --help` and the other commands must not wait for.
    from ..pipeline.follow import run_until_done
    from ..pipeline.job import run_job

    echo_events("fetched")  # the run prints each fetched source's line below
    progress = _Progress()
    interruption = _Interruption()

    def plan(total: int) -> None:
        interruption.sending = not dry_run
        progress.plan(total)

    try:
        with interruption:
            if follow:
                report = run_until_done(app.engine, app.settings, app.now, fetch=fetch, on_plan=plan, stop_event=interruption.stop)
            else:
                report = run_job(app.engine, app.settings, app.now(), fetch=fetch, only=only, dry_run=dry_run, edition=edition,
                                 progress=progress.step, on_plan=plan, stop_event=interruption.stop)
    finally:
        progress.close()
    return report


def _print_report(app: AppContext, report: RunReport, only: str | None) -> None:
    for source in report.fetched:
        echo_report(source)  # as `digest fetch` prints it: a failed source on stderr (cron's MAILTO), then its warnings
    if report.fetch_error:
        click.echo(f"error: the fetch failed, so only papers already stored were sent: {report.fetch_error}", err=True)
    if report.error is not None:  # the server down, the database locked: how far it got, then the error
        click.echo(report.summary())
        raise report.error
    if not report.due:
        click.echo(f"nothing due for {only}" if only else _nothing_due(app, report.waiting))
    click.echo(report.summary())
    if report.unserved:
        next_run = "; ".join((["the next run sends those not attempted"] if report.not_attempted else [])
                             + (["deferred ones are retried by the next run"] if report.deferred else []) + ["`digest status` shows the ledger"])
        click.echo(f"error: {report.unserved} due subscriber{'s were' if report.unserved != 1 else ' was'} not served ({next_run})", err=True)
    # Rows a killed or cut-off worker still leases are due and nobody is sending them: as with deferred ones, the run
    # that finds them says so and fails (cron mails it), though the first run after the lease takes them over.
    held = sum(holder.rows for holder in report.gone)
    if held:
        click.echo(f"error: {held} due subscriber{'s are' if held != 1 else ' is'} held by a worker that is gone; the first run after its lease ends sends them (`digest status` shows the leases)", err=True)
    if report.unserved or held or report.fetch_error:
        click.get_current_context().exit(EXIT_ERROR)


def _nothing_due(app: AppContext, waiting: int = 0) -> str:
    """The empty state of send and run: nobody to send to (and who is there instead), everyone served, or the rest
    waiting for the retry of a deferred delivery (the summary line says how many and when)."""
    if waiting:
        return "nothing due now: the mail servers of the rest deferred them; each is tried again at its retry time (`digest send --only EMAIL` tries one at once)"
    with session_scope(app.engine) as session:
        statuses = Counter(s.status for s in list_subscribers(session))
    if statuses["active"]:
        return "nothing due: every active subscriber has today's edition or their send time has not come"
    if not statuses:
        return "nothing due: no active subscribers (add one with `digest subscribers add EMAIL --interests TOPIC`)"
    others = ", ".join(f"{n} {status}" for status, n in sorted(statuses.items()))
    return f"nothing due: no active subscribers ({others}; `digest subscribers list` shows them)"


@main.command()
@click.option("--dry-run", is_flag=True, help="Rank, render and build every email, but send and record nothing.")
@click.option("--only", metavar="EMAIL", help="Only this subscriber (if their edition is due).")
@click.option("--date", "edition", metavar="YYYY-MM-DD", help="Send this edition to every subscriber who has not had it, whatever their send time (never before that day has come in their time zone).")
@pass_app
def send(app: AppContext, dry_run: bool, only: str | None, edition: str | None) -> None:
    """Render and deliver today's edition to every due subscriber (no fetching).

    Ends with one line: sent, skipped, failed, deferred and time; exits 1 when a due subscriber was not
    served. A rerun sends only what the mail server has not accepted yet.
    """
    # A dry run or one subscriber's send says nothing of the day's run: no heartbeat.
    _deliver(app, fetch=False, only=only, dry_run=dry_run, edition=_edition(edition), kind=None if dry_run or only else "send")


def _nothing_to_fetch(app: AppContext) -> str | None:
    with session_scope(app.engine) as session:
        return nothing_to_fetch(session)


@main.command("run")
@click.option("--fetch", "fetch_mode", type=click.Choice(["due", "always", "never"]), default="due", show_default=True,
              help="Fetch the sources when a fetch_cron time has passed since the last fetch (due), every time, or never.")
@pass_app
def run_cmd(app: AppContext, fetch_mode: str) -> None:
    """Fetch the sources when a fetch is due, then send whatever is due: the one-shot for cron and systemd timers.

    Safe to start every 15 minutes: sources are fetched on the fetch_cron schedule (arXiv announces once a
    day), not on every run; a lock keeps two runs from overlapping, and the ledger keeps an edition from
    going out twice.
    """
    _deliver(app, fetch=_fetch_wanted(app, fetch_mode), kind="run")


def _fetch_wanted(app: AppContext, fetch_mode: str) -> bool | Callable[[], bool]:
    """Whether the run fetches: --fetch always or never; for due, a question the job asks again under its fetch
    lock (on PostgreSQL another host may have fetched meanwhile)."""
    if fetch_mode == "never":
        return False
    if nothing := _nothing_to_fetch(app):
        click.echo(f"{nothing} (the papers already stored are sent)")
        return False
    if fetch_mode == "always":
        return True
    now = app.now()
    if not fetch_due(app.engine, app.settings, now):
        upcoming = next_fire_times(fetch_trigger(app.settings), now, 1)
        when = upcoming[0].strftime("%Y-%m-%d %H:%M %Z") if upcoming else "never"
        click.echo(f"fetch not due (next: {when}; `digest run --fetch always` fetches now)")
        return False
    return lambda: fetch_due(app.engine, app.settings, now)


@main.command()
@click.option("--fetch", "fetch_mode", type=click.Choice(["due", "always", "never"]), default="due", show_default=True,
              help="Fetch the sources when a fetch_cron time has passed since the last fetch (due), every time, or never.")
@pass_app
def worker(app: AppContext, fetch_mode: str) -> None:
    """Like run, then keep claiming until every due edition is finished: one of a fleet on one PostgreSQL database.

    Start any number, on any number of hosts: each delivery is claimed by one worker under a lease, one worker
    fetches while the others wait, and a worker that dies has its deliveries taken over once its lease
    (lease_seconds) has passed. Ends when nothing due is pending or held by another worker. On SQLite it is `run`.
    """
    _deliver(app, fetch=_fetch_wanted(app, fetch_mode), follow=True, kind="worker")


@main.command()
@click.argument("email")
@click.option("--out", "html_out", type=click.Path(dir_okay=False, writable=True), metavar="FILE", help="Write the HTML part to FILE (open it in a browser).")
@click.option("--text", "show_text", is_flag=True, help="Print the plain-text part instead of the summary.")
@click.option("--eml", "eml_out", type=click.Path(dir_okay=False, writable=True), metavar="FILE", help="Write the whole message (headers and both parts) to FILE.")
@click.option("--date", "edition", metavar="YYYY-MM-DD", help="Label the email with this edition (default: the subscriber's local today).")
@pass_app
def preview(app: AppContext, email: str, html_out: str | None, show_text: bool, eml_out: str | None, edition: str | None) -> None:
    """Exactly the email EMAIL's next edition would be, without sending or recording anything."""
    from ..pipeline.job import preview_email

    rendered, message, result = preview_email(app.existing_engine, app.settings, app.now(), email, edition=_edition(edition))
    if show_text:
        click.echo(rendered.text, nl=False)
    else:
        click.echo(f"To: {email.strip().lower()}")
        click.echo(f"Subject: {rendered.subject}")
        click.echo(f"{len(result.picks)} picks, {len(result.trending)} trending; {len(message):,} bytes")
    for path, data in ((html_out, rendered.html.encode("utf-8")), (eml_out, message)):
        if path:
            Path(path).write_bytes(data)
            click.echo(f"wrote {path}", err=show_text)


def _is_demo_config(config: Path) -> bool:
    try:
        return config.read_text(encoding="utf-8").startswith(DEMO_CONFIG.splitlines()[0])
    except (OSError, UnicodeDecodeError):
        return False


@main.command()
@click.option("--home", "demo_home", type=click.Path(file_okay=False), metavar="DIR",
              help="Keep the demo in DIR (default: a new temporary directory); `digest --home DIR demo` does the same.")
@pass_app
def demo(app: AppContext, demo_home: str | None) -> None:
    """Offline demo on bundled real papers: 3 subscribers, the whole run, emails in an outbox.

    Imports a day of arXiv cs.CL and a day of Hugging Face daily papers, adds three subscribers, sends their
    editions to an outbox, writes each email as an HTML file and tells how to see the front page and the emails
    on the web. Needs no network, no mail server and no configuration; DIGEST_HOME and DIGEST_* settings are
    ignored (`digest --home DIR demo` is not: it is the demo's --home). Remove the demo by removing its directory.
    """
    from ..ingest import DEMO_FILES, import_file
    from ..pipeline.job import run_job

    given = [Path(where).expanduser().resolve() for where in (demo_home, app.home if app.home_given else None) if where]
    if len(set(given)) > 1:
        raise click.UsageError(f"two homes given, {given[1]} (digest --home) and {given[0]} (demo --home): give one")
    home = given[0] if given else Path(tempfile.mkdtemp(prefix="digest-demo-"))
    config = home / "digest.toml"
    if home.is_dir() and any(home.iterdir()) and not _is_demo_config(config):
        # A real DIGEST_HOME: the demo would add its subscribers there and spend everyone's edition on the outbox.
        raise InputError(f"{home} is not a demo home (it is not empty and its digest.toml was not written by `digest demo`)",
                         "give a new or empty directory, or no --home for a temporary one")
    home.mkdir(parents=True, exist_ok=True)
    if not config.exists():  # so `digest --home DIR preview ...` works on the demo afterwards
        config.write_text(DEMO_CONFIG, encoding="utf-8")
    settings = load_settings(home, env={}, overrides={"smtp_host": ""})
    engine = open_engine(settings.database_url)
    ensure_ready(engine)
    now = app.now()
    click.echo(f"demo home: {home}")
    for path in DEMO_FILES:
        click.echo("imported " + import_file(engine, path, now).line())
    readers = []  # (address, subscriber id, token version)
    with session_scope(engine) as session:
        for address, name, interests in DEMO_SUBSCRIBERS:
            sub = find_subscriber(session, address)
            if sub is None:
                sub = add_subscriber(session, address, SubscriberInput(name=name, interests=interests, send_at="00:00", tz="UTC"), now=now)
            readers.append((address, sub.id or 0, sub.token_version))
            click.echo(f"subscriber {address}: {'; '.join(interests)}")
    report = run_job(engine, settings, now, fetch=False)
    click.echo(report.summary())
    if report.error is not None:
        raise report.error
    outbox = Path(settings.outbox_dir)
    files = sorted(outbox.glob("*.eml"))
    click.echo(f"emails (.eml, one per subscriber) in the outbox {outbox}:")
    for path in files:
        click.echo(f"  {path.name}")
    newest: dict[str, email.message.EmailMessage] = {}  # recipient -> their latest email (file names sort by time)
    for path in files:
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        newest[message["To"].addresses[0].addr_spec] = message
    pages = []
    for address, _, _ in readers:
        if address in newest:
            html_path = home / f"{address.split('@')[0]}.html"
            body = newest[address].get_body(("html",))
            assert body is not None  # every digest has its HTML part
            html_path.write_text(body.get_content(), encoding="utf-8")
            pages.append(html_path)
    if pages:
        click.echo("open in a browser, one email per subscriber:")
        for html_path in pages:
            click.echo(f"  {html_path}")
    base = settings.base_url.rstrip("/")
    click.echo(f"try: digest --home {home} web, then open")
    click.echo(f"  {base}/  the front page: today's papers and the Subscribe box")
    address, sub_id, version = readers[0]
    sent = [row for row in ledger.deliveries_for(engine, subscriber_id=sub_id) if row.state == "sent"]
    if sent:
        click.echo(f"  {edition_url(base, settings.secret_key, sub_id, version, sent[-1].edition)}  {address.split('@')[0].title()}'s email on the web")
    click.echo(f"remove the demo: rm -r {home}")
    engine.dispose()
