"""`digest prune`: delete what the database no longer needs (spent links, expired subscribe requests, addresses that
never confirmed; papers and ledger rows as keep_days and keep_ledger_days say); a thin command over
digest.store.retention, which says what goes and what never does."""

from __future__ import annotations

import click

from ..pipeline.plan import longest_window
from ..store.retention import BATCH, prune_store
from . import AppContext, main, pass_app


@main.command()
@click.option("--dry-run", is_flag=True, help="Print what would be deleted; delete nothing.")
@click.option("--keep-days", type=click.IntRange(min=0), default=None, metavar="N",
              help="Delete papers no source has listed for N days (default: the keep_days setting; 0 keeps them).")
@click.option("--keep-ledger-days", type=click.IntRange(min=0), default=None, metavar="N",
              help="Delete finished deliveries of editions older than N days (default: the keep_ledger_days setting; 0 keeps them).")
@click.option("--batch", type=click.IntRange(min=1), default=BATCH, show_default=True, metavar="N", help="Rows deleted per transaction.")
@pass_app
def prune(app: AppContext, dry_run: bool, keep_days: int | None, keep_ledger_days: int | None, batch: int) -> None:
    """Delete old papers and old deliveries, as keep_days and keep_ledger_days say, and spent links.

    Whatever those say, spent confirmation links and subscribe requests go once their link has expired (8 days), and
    an address that asked on the subscribe page and never confirmed goes 30 days after its last confirmation email
    (unless it has a vote, a delivery or a seed paper). A paper goes once no source has listed it for keep_days days, unless it was sent to someone, voted on or named as
    a seed, with its search-index rows and embeddings. A finished delivery goes once its edition is older than
    keep_ledger_days, with the record of the papers it sent (its /edition page is then gone). Each batch of rows is
    its own short transaction: the web pages, a run and other hosts keep working, and a prune stopped half-way loses
    nothing (run it again). The daily run prunes too. On SQLite the file keeps its size and reuses the space;
    docs/deployment.md says how to shrink it.
    """
    settings = app.settings
    keep = settings.keep_days if keep_days is None else keep_days
    ledger_days = settings.keep_ledger_days if keep_ledger_days is None else keep_ledger_days
    engine = app.existing_engine
    report = prune_store(engine, app.now(), keep_days=keep, keep_ledger_days=ledger_days, candidate_days=longest_window(settings.window_days),
                         dry_run=dry_run, batch=batch)
    click.echo(report.summary())
    if not keep and not ledger_days:
        click.echo("set keep_days and keep_ledger_days in digest.toml (or give --keep-days, --keep-ledger-days) to prune papers and deliveries too")
