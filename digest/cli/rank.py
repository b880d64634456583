"""`digest rank EMAIL`: what the next digest for a subscriber would contain, and why. It prints and never decides:
the window and candidates come from the edition planner (digest.pipeline.plan, as for preview and send), the order
from digest.rank."""

from __future__ import annotations

import json
import textwrap
from datetime import datetime

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
    # Imported here, not at the top: planning loads ranking (numpy, scipy), which `digest --help` must not wait for.
    from ..pipeline.plan import plan_for, rank_plans

    now = app.now()
    plan = plan_for(app.existing_engine, email, now, app.settings)
    result = rank_plans([plan], app.settings, now, limit=max(limit, plan.subscriber.max_papers), engine=app.existing_engine)[0]
    if isinstance(result, Exception):
        raise result
    address, since, candidates = plan.subscriber.email, plan.since, len(plan.candidates)
    entries = _entries(result, limit)
    if as_json:
        click.echo(json.dumps(entries, indent=2, ensure_ascii=False))
        return
    _print_table(address, entries, candidates, since, result.matched, plan)


def nothing_to_send(plan) -> str:
    """Why an edition has no paper at all, and what to do about it: the empty state of `rank` (and `preview`)."""
    from ..rank import in_categories

    sub, ids = plan.subscriber, plan.candidate_ids
    if not plan.candidates:
        return "nothing to send: no candidate papers (`digest fetch` or `digest import FILE` brings some)"
    if not ids:
        return f"nothing to send: the {len(plan.candidates)} candidate papers were all sent to {sub.email} already"
    if sub.categories and not any(in_categories(sub.categories, c.paper.categories or ()) for c in plan.candidates if c.paper.id in ids):
        return (f"nothing to send: none of the {len(ids)} candidate papers is in {', '.join(sub.categories)}, {sub.email}'s category filter "
                f"(papers without categories, as in JSON Lines files and most feeds, never pass it; "
                f"`digest subscribers update {sub.email} --category ''` removes the filter)")
    return (f"nothing to send: none of the {len(ids)} candidate papers matches {sub.email}'s interests and none is trending "
            f"(muted terms and authors leave papers out too: `digest subscribers show {sub.email}`)")


def _print_table(address: str, entries: list[dict], candidates: int, since: datetime, matched: bool, plan) -> None:
    click.echo(f"{address}: {candidates} candidate papers first seen since {since:%Y-%m-%d %H:%M} UTC")
    status = plan.subscriber.status
    if status != "active":  # the ranking is shown all the same, but no email goes out: say so before it
        click.echo(f"{address} is {status}: no digest is sent until `digest subscribers resume {address}`")
    if not entries:
        click.echo(nothing_to_send(plan))
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
