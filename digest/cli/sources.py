"""`digest sources ...`, `digest fetch` and `digest import`: thin commands over digest.ingest and digest.store.sources."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..errors import InputError
from ..log import echo_events
from ..sources import FETCHED_KINDS
from ..store import session_scope
from ..store.sources import add_source, list_sources, remove_source, set_source_enabled
from . import EXIT_ERROR, AppContext, main, pass_app

if TYPE_CHECKING:
    from ..ingest import SourceReport


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else "-"


@main.group()
def sources() -> None:
    """Where papers come from: arXiv listings, the arXiv API, Hugging Face daily papers, any RSS/Atom feed."""


@sources.command("add")
@click.argument("spec")
@click.option("--name", help="Name to refer to the source by (default: the spec, or host/path of a URL).")
@click.option("--kind", type=click.Choice(FETCHED_KINDS),
              help="How to read an http(s) URL (default: feed), e.g. arxiv-rss for a mirror of an arXiv listing.")
@pass_app
def sources_add(app: AppContext, spec: str, name: str | None, kind: str | None) -> None:
    """Add a source. SPEC is arxiv:CAT[+CAT...] (e.g. arxiv:cs.LG+cs.CL), arxiv-api:QUERY, hf-daily, or an http(s) URL."""
    from ..ingest import resolve_spec

    resolved_kind, url, default_name = resolve_spec(spec, kind)
    with session_scope(app.engine) as session:
        # The same feed twice is fetched twice, and each of its papers counts as "carried by 2 sources" in trending.
        name = name or default_name
        same = next((s for s in list_sources(session, include_files=False) if s.url == url and s.name != name), None)
        if same is not None:  # (under the same name it is add_source's "already exists")
            raise InputError(f"{url} is already the source {same.name!r}",
                             "`digest sources remove` it first to add it under another name or kind")
        source = add_source(session, name, resolved_kind, url, app.now())
    click.echo(f"added {source.name} ({source.kind}): {source.url}")


@sources.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def sources_list(app: AppContext, as_json: bool) -> None:
    """Show each source: kind, URL, last success, last error, consecutive errors, entries skipped, papers seen."""
    with session_scope(app.existing_engine) as session:
        found = list_sources(session)
    if as_json:
        keys = ("name", "kind", "url", "enabled", "disabled_reason", "last_fetch_at", "last_success_at", "last_error",
                "last_error_at", "consecutive_errors", "last_fetch_count", "last_fetch_skipped", "papers_seen")
        rows = [{k: (v.isoformat() if isinstance(v, datetime) else v) for k in keys for v in [getattr(s, k)]} for s in found]
        click.echo(json.dumps(rows, indent=2))
        return
    if not found:
        click.echo("no sources yet: add one with `digest sources add arxiv:cs.LG` (or hf-daily, or a feed URL)")
        return
    for s in found:
        state = "enabled" if s.enabled else f"DISABLED: {s.disabled_reason}"
        click.echo(f"{s.name}  [{s.kind}, {state}]")
        click.echo(f"  url: {s.url}")
        skipped = f" ({s.last_fetch_skipped} skipped)" if s.last_fetch_skipped else ""
        click.echo(f"  last success: {_when(s.last_success_at)}  papers seen: {s.papers_seen}  last count: {s.last_fetch_count}{skipped}")
        if s.last_error:
            click.echo(f"  last error: {_when(s.last_error_at)} ({s.consecutive_errors} in a row): {s.last_error}")


@sources.command("remove")
@click.argument("name")
@pass_app
def sources_remove(app: AppContext, name: str) -> None:
    """Remove a source (the papers it brought stay)."""
    with session_scope(app.engine) as session:
        remove_source(session, name)
    click.echo(f"removed {name}")


@sources.command("enable")
@click.argument("name")
@pass_app
def sources_enable(app: AppContext, name: str) -> None:
    """Fetch a source again: one disabled by hand, or by an HTTP 410 (Gone) from a feed that is back."""
    with session_scope(app.engine) as session:
        changed = set_source_enabled(session, name, True)
    click.echo(f"enabled {name}: the next fetch reads it" if changed else f"{name} is already enabled")


@sources.command("disable")
@click.argument("name")
@pass_app
def sources_disable(app: AppContext, name: str) -> None:
    """Stop fetching a source, keeping it, its state and its papers (`sources enable` turns it on again)."""
    with session_scope(app.engine) as session:
        changed = set_source_enabled(session, name, False)
    click.echo(f"disabled {name}: fetches skip it until `digest sources enable {name}`; its papers stay" if changed
               else f"{name} is already disabled")


def nothing_to_fetch(session) -> str | None:
    """Why a fetch has nothing to do (no source, or every source disabled), or None when a source is enabled."""
    if any(list_sources(session, enabled_only=True, include_files=False)):
        return None
    if list_sources(session, include_files=False):
        return "no sources to fetch: every source is disabled (`digest sources list` says why)"
    return "no sources to fetch: add one with `digest sources add`"


@main.command("fetch")
@click.option("--source", "names", multiple=True, metavar="NAME", help="Fetch only this source (repeatable; also fetches a disabled one).")
@pass_app
def fetch_cmd(app: AppContext, names: tuple[str, ...]) -> None:
    """Fetch every enabled source and store the new papers: one line per source, exit 1 if any failed."""
    from ..ingest import fetch_sources

    echo_events("fetched")  # each source's line is printed below, a failure's `error:` too (on stderr, for cron's MAILTO)
    engine, settings = app.engine, app.settings
    with session_scope(engine) as session:
        count = len(names) or sum(1 for s in list_sources(session, enabled_only=True, include_files=False))
        nothing = None if count else nothing_to_fetch(session)
    if nothing:
        click.echo(nothing)
        return
    if sys.stdout.isatty():
        with click.progressbar(length=count, label="fetching", show_pos=True) as bar:
            reports = fetch_sources(engine, settings, app.now(), only=names or None, progress=lambda _r: bar.update(1))
        for report in reports:
            echo_report(report)
    else:
        reports = fetch_sources(engine, settings, app.now(), only=names or None, progress=echo_report)
    if any(r.status == "error" for r in reports):
        sys.exit(EXIT_ERROR)


@main.command("import")
@click.argument("file", type=click.Path(path_type=str))
@pass_app
def import_cmd(app: AppContext, file: str) -> None:
    """Import papers from a local FILE, its format detected.

    RSS 1.0/2.0, Atom, arXiv API Atom, Hugging Face daily-papers JSON or JSON Lines (id, title, abstract per line).
    """
    from ..ingest import import_file

    if Path(file).is_dir():  # as "no such file": the operator's input, one line and exit 1, not a usage error
        raise InputError(f"{file}: is a directory, not a file", "give one feed or JSON Lines file; `digest import --help` lists the formats")

    echo_report(import_file(app.engine, file, app.now()))


def echo_report(report: SourceReport) -> None:
    """One source's line and its first warnings; a failed source's line on stderr (cron's MAILTO reads it)."""
    click.echo(report.line(), err=report.status == "error")
    for line in report.warning_lines():
        click.echo(line)
