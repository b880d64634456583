"""Building each letter's message: its ranking when it has none yet (the claimed batch ranked together by the
`rank` the pipeline passes), the reader's signed links, the rendered email (digest.render) and its bytes
(digest.delivery.message). Two strategies behind one Builder interface: in the calling thread (InlineBuilder), or,
for a big edition in a process with no other thread, in forked worker processes that inherit the letters and the
prepared ranking, so ranking and rendering use every core while this process sends (ForkedBuilder). builder_for
picks one. Either way a batch is ranked only once claimed, so a worker holds the results of its batches in hand,
never those of every due subscriber.

It must not send, write the ledger or decide who gets what. Whatever building one letter raises is that letter's
Unbuilt problem (a wall), never the edition's.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import multiprocessing
import multiprocessing.pool
import os
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Protocol

from ..children import die_with_parent, usable_cores
from ..config import Settings
from ..errors import DigestError, InputError, one_line
from ..log import log_event
from ..models import Subscriber
from ..rank import RankResult
from ..render import Links, RenderedEmail, default_renderer, render_digest
from ..tokens import action_url, edition_url, make_token, vote_urls
from .message import build_message
from .work import Built, Contents, Letter, Unbuilt, contents_of

log = logging.getLogger("digest.delivery")

POOL_FROM = 1000  # letters from which rendering is spread over worker processes
MAX_WORKERS = 4
SKIPPED_REASON = "nothing new for this subscriber"

Rank = Callable[[Sequence[Letter]], Sequence[RankResult | Exception]]  # each letter's result, or why it has none


def is_empty(result: RankResult) -> bool:
    """Nothing to show: no pick and no trending paper (only then does skip_empty skip)."""
    return not result.picks and not result.trending


def make_links(settings: Settings, subscriber: Subscriber, paper_ids: Sequence[int], edition: str | None = None) -> Links:
    """The reader's signed links under base_url (ConfigError when secret_key is missing): three signatures per
    email (unsubscribe, preferences, and one "vote" token shared by every like and dislike link), and a fourth with
    `edition` (YYYY-MM-DD): the "view in your browser" link of that edition."""
    key, base, version = settings.secret_key, settings.base_url, subscriber.token_version
    sub_id = subscriber.id or 0
    like, dislike = vote_urls(base, make_token(key, "vote", sub_id, version), paper_ids)
    return Links(
        # The address is signed in: this link must unsubscribe them after a resubscription bumps the version.
        unsubscribe=action_url(base, "unsubscribe", make_token(key, "unsubscribe", sub_id, version, address=subscriber.email)),
        preferences=action_url(base, "preferences", make_token(key, "preferences", sub_id, version)),
        like=like,
        dislike=dislike,
        edition=edition_url(base, key, sub_id, version, edition) if edition is not None else None,
    )


@dataclass(frozen=True)
class Composed:
    """One subscriber's email as rendered and as the exact bytes that would be sent, with the seconds of each step."""

    rendered: RenderedEmail
    message: bytes
    render_seconds: float
    build_seconds: float


def compose(settings: Settings, subscriber: Subscriber, edition: str, result: RankResult, *, message_id: str, date_: datetime) -> Composed:
    """The rendered email of `result` for `subscriber` and its bytes (also what `digest preview` shows)."""
    started = time.perf_counter()
    links = make_links(settings, subscriber, [pid for r in result.picks if (pid := r.candidate.paper_id) is not None], edition)
    rendered = render_digest(result, name=subscriber.name, email=subscriber.email, edition=date.fromisoformat(edition), links=links,
                             site_name=settings.from_name, interests=subscriber.interests or ())
    built = time.perf_counter()
    message = build_message(rendered, to=subscriber.email, name=subscriber.name, settings=settings, message_id=message_id, unsubscribe_url=links.unsubscribe, date=date_)
    return Composed(rendered, message, built - started, time.perf_counter() - built)


def build_letter(settings: Settings, letter: Letter, date_: datetime, rank_seconds: float = 0.0) -> Built:
    """The letter's message, or its problem: InputError is the subscriber's data (the address), anything else a bug
    or a row edited by hand, kept with its traceback for the log."""
    assert letter.result is not None, "ranked first (build_letters)"
    try:
        composed = compose(settings, letter.subscriber, letter.edition, letter.result, message_id=letter.message_id, date_=date_)
    except InputError as exc:
        return Built(letter, None, Unbuilt(str(exc)), rank_seconds=rank_seconds)
    except Exception as exc:  # noqa: BLE001 - a wall: whatever one subscriber's email raises is their failed delivery
        return Built(letter, None, _unbuilt(exc), rank_seconds=rank_seconds)
    return Built(letter, composed.message, None, composed.render_seconds, composed.build_seconds, contents_of(letter.result), rank_seconds=rank_seconds)


def build_letters(settings: Settings, letters: Sequence[Letter], date_: datetime, rank: Rank | None) -> Iterator[Built]:
    """Each letter built in order; those without a result first ranked together by `rank` (at the first letter
    asked for). A ranked letter with nothing to show is skipped when skip_empty is set; one whose ranking raised is
    its failed delivery (a wall), as is every letter of the batch when the batch's ranking raised as a whole."""
    todo = [letter for letter in letters if letter.result is None]
    ranked: dict[int, RankResult | Exception] = {}
    seconds = 0.0
    if todo:
        assert rank is not None, "letters without a result need a rank"
        started = time.perf_counter()
        try:
            results: Sequence[RankResult | Exception] = list(rank(todo))
        except Exception as exc:  # noqa: BLE001 - a wall: the batch's subscribers fail, the edition goes on
            results = [exc] * len(todo)
        seconds = (time.perf_counter() - started) / len(todo)
        log_event(log, "ranked", logging.DEBUG, letters=len(todo), first=todo[0].delivery_id, last=todo[-1].delivery_id)
        ranked = {letter.delivery_id: result for letter, result in zip(todo, results, strict=True)}
    for letter in letters:
        result = ranked.get(letter.delivery_id)
        if result is None:
            yield build_letter(settings, letter, date_)
        elif isinstance(result, Exception):
            yield Built(letter, None, _unbuilt(result), rank_seconds=seconds)
        elif settings.skip_empty and is_empty(result):
            yield Built(letter, None, skipped=True, rank_seconds=seconds)
        else:
            yield build_letter(settings, dataclasses.replace(letter, result=result), date_, seconds)


def _unbuilt(exc: Exception) -> Unbuilt:
    """Why a letter could not be ranked or built: a DigestError says what is wrong; anything else keeps its traceback."""
    trace = None if isinstance(exc, DigestError) else "".join(traceback.format_exception(exc))
    return Unbuilt(f"cannot build the edition: {one_line(exc)}"[:500], trace)


class Builder(Protocol):
    """Builds letters into messages, in the order given."""

    workers: int  # processes that render (0: the calling thread does)

    def build(self, letters: Sequence[Letter]) -> Iterator[Built]: ...

    def close(self) -> None: ...


class InlineBuilder:
    """Each letter built when its message is asked for, in the calling thread (a batch ranked at its first)."""

    workers = 0

    def __init__(self, settings: Settings, date_: datetime, rank: Rank | None = None) -> None:
        self.settings, self.date, self.rank = settings, date_, rank

    def build(self, letters: Sequence[Letter]) -> Iterator[Built]:
        return build_letters(self.settings, letters, self.date, self.rank)

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class _Product:
    """What a worker process sends back for one letter: its index, and the Built without the letter (the parent
    has it, unranked; pickling the ranked results back would cost more than ranking and rendering them)."""

    index: int
    message: bytes | None
    problem: Unbuilt | None
    render_seconds: float
    build_seconds: float
    contents: Contents | None  # the picks' reasons come back too: the parent records them and the papers they name
    skipped: bool
    rank_seconds: float


class _QuietPool(multiprocessing.pool.Pool):
    """A Pool whose worker-handler thread sleeps until a worker exits or the pool changes state. The stock one also
    wakes on the result pipe's reader, and so spins, taking the GIL each time, for as long as a chunk of messages is
    in the pipe and not yet read by the result-handler thread: with 40 KB messages that is most of the edition, a
    quarter of the sending process's CPU (py-spy --gil). Nothing it does needs that wake-up: worker exits have their
    sentinels, close() and terminate() put to the change notifier, as does the task cache when it empties."""

    def _get_sentinels(self) -> list:
        return [self._change_notifier._reader]  # type: ignore[attr-defined]


_JOB: tuple[Settings, Sequence[Letter], datetime, Rank | None] | None = None  # what forked workers inherit instead of receiving it


def _build_chunk(indexes: Sequence[int]) -> list[_Product]:
    """A worker's share of a batch: ranked together (when not yet ranked), then built letter by letter."""
    assert _JOB is not None, "set before the workers are forked"
    settings, letters, date_, rank = _JOB
    built = build_letters(settings, [letters[k] for k in indexes], date_, rank)
    return [_Product(k, b.message, b.problem, b.render_seconds, b.build_seconds, b.contents, b.skipped, b.rank_seconds) for k, b in zip(indexes, built)]


def _widen_pipe(connection: object) -> None:
    """The result pipe widened to 1 MB (Linux, F_SETPIPE_SZ; the default is 64 KB): a worker's share of 100 messages
    of 40 KB each went through it 64 KB at a time, each write waking the reader and waiting for it (context switches
    of the 10,000 edition, every process: 22,900-23,800 -> 10,000-11,200)."""
    try:
        import fcntl

        fcntl.fcntl(connection.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)  # type: ignore[attr-defined]
    except (OSError, AttributeError, ImportError):  # another system, or a lower pipe-max-size: the default pipe
        pass


class ForkedBuilder:
    """Letters built by forked worker processes, which inherit the edition's letters and `rank` (the prepared
    ranking: no pickling of ranked results either way): build() hands them a batch's indexes in chunks, each chunk
    ranked and rendered by one worker, and starts at once, so a batch is ranked and rendered while the one before is
    sent.
    Fork only from a process with one thread (builder_for checks): a forked copy of a lock another thread holds
    would deadlock the worker."""

    def __init__(self, settings: Settings, letters: Sequence[Letter], date_: datetime, workers: int, rank: Rank | None = None) -> None:
        global _JOB
        self.workers = workers
        self.index = {letter.delivery_id: k for k, letter in enumerate(letters)}
        _JOB = (settings, letters, date_, rank)
        default_renderer()  # templates compiled and inlined once, here, rather than once in each worker (~0.1 s each)
        # Each worker dies with this process, even by SIGKILL (it would wait on the task queue forever). gc.freeze():
        # the workers' collector never walks (and so never copies, page by page) the objects they inherit; nor, until
        # close(), does this process's: a full collection while sending walked the edition's subscribers and plans
        # again to free nothing (0.16 s per 10,000 emails).
        gc.freeze()
        try:
            self.pool: multiprocessing.pool.Pool | None = _QuietPool(workers, initializer=die_with_parent, initargs=(os.getpid(),), context=multiprocessing.get_context("fork"))
        except BaseException:
            gc.unfreeze()
            raise
        _widen_pipe(self.pool._outqueue._writer)  # type: ignore[attr-defined]

    def build(self, letters: Sequence[Letter]) -> Iterator[Built]:
        assert self.pool is not None, "build() after close()"
        if not letters:
            return iter(())
        # One share per worker: each rank() call has a fixed cost (scipy's set-up of each sparse operation, the explain
        # pass), 0.28 M instructions per letter more in shares of 25 than of 100 (issue 11, sixth pass). The batch after
        # this one is claimed and started before this one is sent, so the workers are not waited for between batches.
        chunk = max(1, -(-len(letters) // self.workers))
        indexes = [self.index[letter.delivery_id] for letter in letters]
        chunks = self.pool.imap(_build_chunk, [indexes[k : k + chunk] for k in range(0, len(indexes), chunk)])
        products = (p for chunk_products in chunks for p in chunk_products)
        return (Built(letter, p.message, p.problem, p.render_seconds, p.build_seconds, p.contents, p.skipped, p.rank_seconds) for letter, p in zip(letters, products))

    def close(self) -> None:
        global _JOB
        _JOB = None
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
            self.pool = None
            gc.unfreeze()


def builder_for(settings: Settings, letters: Sequence[Letter], date_: datetime, rank: Rank | None = None) -> InlineBuilder | ForkedBuilder:
    """Forked workers for an edition of POOL_FROM letters or more, in a process that may use more than one core,
    from a process with no other thread (a daemon has its scheduler's); the calling thread otherwise. `rank` ranks
    the letters that have no result yet, batch by batch, in whichever process builds them."""
    workers = min(usable_cores(), MAX_WORKERS)
    if len(letters) >= POOL_FROM and workers > 1 and threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods():
        return ForkedBuilder(settings, letters, date_, workers, rank)
    return InlineBuilder(settings, date_, rank)
