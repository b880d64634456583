"""`digest subscribers ...`: thin commands over digest.store.subscribers; they print and never decide."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from ..errors import InputError
from ..models import Subscriber
from ..store import session_scope
from ..store.subscribers import (
    LIST_FIELDS,
    SubscriberInput,
    add_subscriber,
    export_csv,
    feedback_for,
    get_subscriber,
    import_csv,
    list_subscribers,
    record_feedback,
    remove_feedback,
    remove_subscriber,
    resolve_papers,
    set_status,
    update_subscriber,
)
from . import AppContext, main, pass_app


def _profile_options(command):
    """The profile options shared by `add` and `update`."""
    options = [
        click.option("--name", help="Display name."),
        click.option("--interests", multiple=True, help="An interest: keywords or a sentence (repeatable)."),
        click.option("--seed-paper", "seed_papers", multiple=True, metavar="ID", help="arXiv id, DOI or imported id of a paper like the ones wanted (repeatable)."),
        click.option("--mute-term", "muted_terms", multiple=True, metavar="TERM", help="Leave out papers mentioning TERM (repeatable)."),
        click.option("--mute-author", "muted_authors", multiple=True, metavar="NAME", help="Leave out papers by NAME (repeatable)."),
        click.option("--category", "categories", multiple=True, metavar="CAT", help="Only papers in these categories, e.g. cs.LG (repeatable)."),
        click.option("--max-papers", type=str, metavar="N", help="Papers per email, 1-100 (default 10)."),
        click.option("--trending-weight", type=str, metavar="W", help="0 = purely personal, 1 = purely trending (default 0.2)."),
        click.option("--send-at", metavar="HH:MM", help="Local send time (default 07:00)."),
        click.option("--tz", metavar="ZONE", help="IANA time zone, e.g. Europe/London (default UTC)."),
        click.option("--frequency", metavar="FREQ", help="daily, or weekly:mon ... weekly:sun (default daily)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _input(options: dict):
    # A repeatable option left out arrives as (); that means "not given", not "empty the list".
    given: dict[str, Any] = {k: (list(v) if v else None) if k in LIST_FIELDS else v for k, v in options.items()}
    return SubscriberInput(**given)


def _record(session, sub: Subscriber) -> dict:
    liked, disliked = feedback_for(session, sub)
    stamp = lambda value: value.isoformat() if value else None  # noqa: E731
    return {
        "email": sub.email, "name": sub.name, "status": sub.status,
        "interests": sub.interests, "seed_papers": sub.seed_papers, "muted_terms": sub.muted_terms,
        "muted_authors": sub.muted_authors, "categories": sub.categories,
        "max_papers": sub.max_papers, "trending_weight": sub.trending_weight,
        "send_at": sub.send_at, "tz": sub.tz, "frequency": sub.frequency,
        "created_at": stamp(sub.created_at), "confirmed_at": stamp(sub.confirmed_at), "unsubscribed_at": stamp(sub.unsubscribed_at),
        "feedback": {"liked": [p.ident for p in liked], "disliked": [p.ident for p in disliked]},
    }


def _summary(sub: Subscriber) -> str:
    return f"{sub.email} ({sub.status}, {sub.frequency} at {sub.send_at} {sub.tz}, {sub.max_papers} papers)"


@main.group()
def subscribers() -> None:
    """Add, change, list, import and export subscribers, and record their feedback."""


@subscribers.command()
@click.argument("email")
@_profile_options
@pass_app
def add(app: AppContext, email: str, **options) -> None:
    """Add an active subscriber (the administrator vouches for the address)."""
    with session_scope(app.engine) as session:
        sub = add_subscriber(session, email, _input(options), now=app.now())
        click.echo(f"added {_summary(sub)}")


@subscribers.command("list")
@click.option("--status", type=click.Choice(["pending", "active", "paused", "unsubscribed", "bounced"]), help="Only subscribers with this status.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@pass_app
def list_cmd(app: AppContext, status: str | None, as_json: bool) -> None:
    """List subscribers by address."""
    with session_scope(app.existing_engine) as session:
        subs = list_subscribers(session, status)
        if as_json:
            click.echo(json.dumps([_record(session, s) for s in subs], indent=2, ensure_ascii=False))
            return
        for sub in subs:
            interests = "; ".join(sub.interests) or "-"
            click.echo(f"{sub.email:<32} {sub.status:<12} {sub.frequency:<10} {sub.send_at} {sub.tz:<20} {interests}")
        click.echo(f"{len(subs)} subscriber{'s' if len(subs) != 1 else ''}")


@subscribers.command()
@click.argument("email")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def show(app: AppContext, email: str, as_json: bool) -> None:
    """Show one subscriber's profile, status and feedback."""
    with session_scope(app.existing_engine) as session:
        record = _record(session, get_subscriber(session, email))
    if as_json:
        click.echo(json.dumps(record, indent=2, ensure_ascii=False))
        return
    for key, value in record.items():
        if key == "feedback":
            value = f"liked {', '.join(value['liked']) or '-'}; disliked {', '.join(value['disliked']) or '-'}"
        elif isinstance(value, list):
            value = "; ".join(value) or "-"
        click.echo(f"{key + ':':<17}{'-' if value is None or value == '' else value}")


@subscribers.command()
@click.argument("email")
@_profile_options
@click.option("--add-interests", multiple=True, metavar="TEXT", help="Add an interest, keeping the others (repeatable).")
@click.option("--remove-interests", multiple=True, metavar="TEXT", help="Remove an interest (repeatable).")
@pass_app
def update(app: AppContext, email: str, add_interests: tuple, remove_interests: tuple, **options) -> None:
    """Change a subscriber's profile; a list option given replaces that whole list."""
    with session_scope(app.engine) as session:
        sub = get_subscriber(session, email)
        update_subscriber(session, sub, _input(options), add_interests, remove_interests, now=app.now())
        click.echo(f"updated {_summary(sub)}")


def _status_command(name: str, status: str, doc: str) -> None:
    @subscribers.command(name, help=doc)
    @click.argument("email")
    @pass_app
    def command(app: AppContext, email: str) -> None:
        with session_scope(app.engine) as session:
            sub = set_status(session, get_subscriber(session, email), status, app.now())
            click.echo(f"{sub.email} is now {sub.status}")


_status_command("pause", "paused", "Stop sending to a subscriber until `resume`.")
_status_command("resume", "active", "Send to a paused (or pending, or unsubscribed) subscriber again.")


@subscribers.command()
@click.argument("email")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_app
def remove(app: AppContext, email: str, yes: bool) -> None:
    """Delete a subscriber and all their data: feedback, deliveries, papers sent."""
    with session_scope(app.engine) as session:
        sub = get_subscriber(session, email)
        if not yes:
            try:
                agreed = click.confirm(f"delete {sub.email} and all their data?")
            except click.Abort:  # no answer (end of input: cron, a script) is a no, said like every other error
                click.echo()  # end the prompt's line
                agreed = False
            if not agreed:
                raise InputError(f"{sub.email} not removed", "answer y, or pass --yes")
        remove_subscriber(session, sub)
        click.echo(f"removed {sub.email} and their data")


@subscribers.command("import")
@click.argument("path", type=click.Path(dir_okay=False))
@pass_app
def import_cmd(app: AppContext, path: str) -> None:
    """Add or update subscribers from a CSV file; nothing is written if any line is wrong.

    Says how many rows were added, updated (something changed) and unchanged (left as they were).
    """
    with session_scope(app.engine) as session:
        report = import_csv(session, path, app.now())
    click.echo(f"imported {path}: {report.added} added, {report.updated} updated, {report.unchanged} unchanged")


@subscribers.command()
@click.argument("path", type=click.Path(dir_okay=False, allow_dash=True))
@pass_app
def export(app: AppContext, path: str) -> None:
    """Write every subscriber to a CSV file (- for standard output) that `import` reads back."""
    with session_scope(app.existing_engine) as session:
        count = export_csv(session, sys.stdout if path == "-" else path)
    if path != "-":
        click.echo(f"exported {count} subscriber{'s' if count != 1 else ''} to {path}")


@subscribers.command()
@click.argument("email")
@click.option("--like", multiple=True, metavar="ID", help="A paper the subscriber liked (repeatable).")
@click.option("--dislike", multiple=True, metavar="ID", help="A paper the subscriber disliked (repeatable).")
@click.option("--clear", multiple=True, metavar="ID", help="Forget the feedback on a paper (repeatable).")
@pass_app
def feedback(app: AppContext, email: str, like: tuple, dislike: tuple, clear: tuple) -> None:
    """Record likes and dislikes (arXiv ids, DOIs or imported ids); the next ranking uses them.

    A paper given to two of --like, --dislike and --clear is an error, and nothing is recorded."""
    if not (like or dislike or clear):
        raise click.UsageError("give --like, --dislike or --clear")
    now = app.now()
    with session_scope(app.engine) as session:
        sub = get_subscriber(session, email)
        liked, disliked, cleared = (resolve_papers(session, idents) for idents in (like, dislike, clear))
        # One paper under two of the options (even by two names: 2406.04093 and its v1) was the last one's, silently.
        seen: dict[int, str] = {}
        for option, idents, papers in (("--like", like, liked), ("--dislike", dislike, disliked), ("--clear", clear, cleared)):
            for given, paper in zip(idents, papers):
                if seen.setdefault(paper.id, option) != option:
                    raise InputError(f"{given.strip()} is given to both {seen[paper.id]} and {option}", "give each paper to one of them")
        for papers, value in ((liked, 1), (disliked, -1)):
            for paper in papers:
                record_feedback(session, sub, paper, value, now)
        for paper in cleared:
            remove_feedback(session, sub, paper)
        liked, disliked = _record(session, sub)["feedback"].values()
    click.echo(f"{sub.email}: {len(liked)} liked, {len(disliked)} disliked")
