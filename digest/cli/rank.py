"""`digest rank EMAIL`: what the next digest for a subscriber would contain, and why. It prints and never decides:
the candidates come from digest.store.candidates and the order from digest.rank."""

from __future__ import annotations

import json
import textwrap
from datetime import datetime, timezone

import click

from . import AppContext, main, pass_app

NOTHING_MATCHED = "nothing matched your interests today: the day's trending papers instead"


def _entries(result, limit: int) -> list[dict]:
    """The JSON contract: best first, `id`, `title`, `score`, `in_digest`, `reasons` (and a few more)."""
    if result.matched:
        rows = [(r, r.in_digest, list(r.reasons)) for r in result.ranked]
    else:  # the digest says so and shows the trending papers; the near misses follow, out of the digest
        shown = {r.paper.id for r in result.trending}
        rows = [(r, True, [NOTHING_MATCHED, *r.reasons]) for r in result.trending]
        rows += [(r, False, list(r.reasons)) for r in result.ranked if r.paper.id not in shown]
    return [
        {
            "rank": n, "id": r.paper.ident, "title": r.paper.title, "score": r.score, "in_digest": in_digest,
            "reasons": reasons, "relevance": r.relevance, "trending": r.trending, "paper_id": r.paper.id,
            "authors": list(r.paper.authors or []), "url": r.paper.url, "sources": list(r.candidate.sources),
        }
        for n, (r, in_digest, reasons) in enumerate(rows[:limit], start=1)
    ]


@main.command("rank")
@click.argument("email")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000), help="Papers listed; may run past the digest's size to show near misses.")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON list (id, title, score, in_digest, reasons...).")
@pass_app
def rank_cmd(app: AppContext, email: str, limit: int, as_json: bool) -> None:
    """What the next digest for EMAIL would contain, best first, with the reasons for each paper."""
    from ..rank import build_profile, rank_papers
    from ..store import session_scope
    from ..store.candidates import candidate_papers, candidate_window, profile_rows
    from ..store.subscribers import get_subscriber

    now = datetime.now(timezone.utc)
    with session_scope(app.engine) as session:
        sub = get_subscriber(session, email)
        since, until = candidate_window(sub.last_digest_at, now, app.settings.window_days)
        candidates = candidate_papers(session, since, until)
        rows = profile_rows(session, sub)
        profile = build_profile(sub, rows.seed_papers, rows.liked, rows.disliked, rows.sent_ids)
        address, max_papers = sub.email, sub.max_papers
    embeddings = None
    if app.settings.rank_model == "hybrid":
        from ..rank_semantic import embed_for

        embeddings = embed_for([c.paper for c in candidates], [profile])
    result = rank_papers(candidates, profile, now, limit=max(limit, max_papers), relevance_floor=app.settings.relevance_floor, model=app.settings.rank_model, embeddings=embeddings)
    entries = _entries(result, limit)
    if as_json:
        click.echo(json.dumps(entries, indent=2, ensure_ascii=False))
        return
    _print_table(address, entries, len(candidates), since, result.matched)


def _print_table(address: str, entries: list[dict], candidates: int, since: datetime, matched: bool) -> None:
    click.echo(f"{address}: {candidates} candidate papers first seen since {since:%Y-%m-%d %H:%M} UTC")
    if not entries:
        click.echo("nothing to send: no candidate papers" if not candidates else "nothing to send")
        return
    if not matched:
        click.echo(NOTHING_MATCHED)
    width = max(len(e["id"]) for e in entries)
    click.echo(f"{'#':>3}  {'id':<{width}}  {'score':>5}  {'digest':<6}  title")
    for e in entries:
        title = textwrap.shorten(e["title"], 90, placeholder="...")
        click.echo(f"{e['rank']:>3}  {e['id']:<{width}}  {e['score']:5.3f}  {'yes' if e['in_digest'] else '-':<6}  {title}")
        for reason in e["reasons"]:
            click.echo(f"{'':>{width + 22}}{textwrap.shorten(reason, 100, placeholder='...')}")
