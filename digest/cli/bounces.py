"""`digest bounces read`: bounce messages that came back after the relay accepted an edition; a thin command over
digest.delivery.bounces (reading) and digest.store.bounces (the ledger)."""

from __future__ import annotations

import sys
from collections import Counter

import click

from ..delivery.bounces import mark_seen, parse_bounce, read_messages
from ..store.bounces import record_returned_edition
from . import AppContext, main, pass_app


@main.group()
def bounces() -> None:
    """Bounce messages that arrive after the mail server accepted an edition."""


@bounces.command("read")
@click.argument("paths", metavar="[PATH]...", nargs=-1)
@pass_app
def bounces_read(app: AppContext, paths: tuple[str, ...]) -> None:
    """Read bounce messages and stop mail to the addresses they report dead.

    Each PATH is one message, an mbox file, a Maildir (its new messages, then marked seen) or - (one message on
    standard input, as an MTA's pipe or alias delivers it; the default). A delivery report (RFC 3464) that returns
    one of digest's editions, found by its Message-ID, marks that edition failed; a dead address (5.1.x, 5.2.1)
    marks its subscriber bounced at once, other permanent failures after three editions in a row. Delays and other
    messages (auto-replies) change nothing.
    """
    if not paths and sys.stdin.isatty():  # nothing piped in: say so rather than wait for a message typed by hand
        raise click.UsageError("give a PATH (a message, an mbox or a Maildir), or pipe one message in")
    engine = app.engine
    tally: Counter[str] = Counter()
    for where, raw, unseen in (message for path in (paths or ("-",)) for message in read_messages(path)):
        returned = parse_bounce(raw)
        tally["message"] += 1
        if not returned.reports:
            click.echo(f"{where}: not a delivery report ({returned.subject or 'no subject'!r}), skipped")
            tally["not a report"] += 1
        for report in returned.reports:
            if report.kind != "failed":
                click.echo(f"{report.recipient}: {report.kind} ({report.describe()}), nothing recorded")
                tally[report.kind] += 1
                continue
            done = record_returned_edition(engine, report.message_ids, dead_address=report.dead_address, error=report.describe(),
                                           now=app.now())
            tally[done.result] += 1
            if done.result == "unknown":
                click.echo(f"{report.recipient}: failed ({report.describe()}), but it returns no edition digest sent: skipped")
            elif done.result == "already":
                click.echo(f"{done.email}: the {done.edition} edition's failure was already recorded")
            elif done.result == "bounced":
                click.echo(f"{done.email}: bounced ({report.describe()}): no more mail until `digest subscribers resume`")
            else:
                click.echo(f"{done.email}: the {done.edition} edition failed ({report.describe()}); {done.failed_in_a_row} in a row")
        if unseen is not None:
            mark_seen(unseen)
    counts = ", ".join(f"{tally[k]} {k}" for k in ("bounced", "counted", "already", "unknown", "delayed", "other", "not a report") if tally[k])
    click.echo(f"{tally['message']} message{'s' if tally['message'] != 1 else ''} read" + (f": {counts}" if counts else ""))
