"""`digest papers ...`: list what the store holds; thin commands over digest.store.papers."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import click

from ..store import session_scope
from ..store.papers import count_papers, papers_since, source_names_of
from ..store.sources import get_source
from . import AppContext, main, pass_app


@main.group()
def papers() -> None:
    """The papers in the store."""


@papers.command("list")
@click.option("--since", type=click.DateTime(formats=["%Y-%m-%d"]), metavar="YYYY-MM-DD", help="Only papers first stored on or after this day (UTC).")
@click.option("--source", metavar="NAME", help="Only papers this source carries.")
@click.option("--limit", type=click.IntRange(min=0), default=50, show_default=True, help="At most N papers, newest first; 0 = all.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def papers_list(app: AppContext, since: datetime | None, source: str | None, limit: int, as_json: bool) -> None:
    """List stored papers, newest first, each with its ident (arXiv id, DOI or imported id)."""
    with session_scope(app.existing_engine) as session:
        if source is not None:
            get_source(session, source)  # an unknown name is an error, not an empty list
        found = papers_since(session, since.replace(tzinfo=timezone.utc) if since else None, source, limit or None)
        carried = source_names_of(session, [p.id for p in found])
        total = count_papers(session, source)
    if as_json:
        rows = [{
            "ident": p.ident, "key": p.key, "title": p.title, "authors": p.authors, "abstract": p.abstract,
            "arxiv_id": p.arxiv_id, "version": p.version, "doi": p.doi, "url": p.url, "categories": p.categories,
            "announce_type": p.announce_type, "upvotes": p.upvotes, "ai_summary": p.ai_summary, "github_repo": p.github_repo,
            "published": p.published.isoformat() if p.published else None, "first_seen": p.first_seen.isoformat(),
            "sources": carried[p.id],
        } for p in found]
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    if not found:
        click.echo("no papers" + (" since then" if since else "") + ": `digest fetch` or `digest import FILE` brings some")
        return
    for p in found:
        title = p.title if len(p.title) <= 90 else p.title[:89] + "…"
        click.echo(f"{p.ident:<16} {p.first_seen:%Y-%m-%d}  {title}  [{', '.join(carried[p.id])}]")
    if len(found) < total and not since:
        click.echo(f"({len(found)} of {total}; --limit 0 shows all)")
