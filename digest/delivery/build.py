"""Building each letter's message: the reader's signed links, the rendered email (digest.render) and its bytes
(digest.delivery.message). Two strategies behind one Builder interface: in the calling thread (InlineBuilder), or,
for a big edition in a process with no other thread, in forked worker processes that inherit the ranked results,
so rendering uses every core while this process sends (ForkedBuilder). builder_for picks one.

It must not send, write the ledger or decide who gets what. Whatever building one letter raises is that letter's
Unbuilt problem (a wall), never the edition's.
"""

from __future__ import annotations

import gc
import multiprocessing
import multiprocessing.pool
import os
import threading
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Protocol

from ..children import die_with_parent, usable_cores
from ..config import Settings
from ..errors import InputError
from ..models import Subscriber
from ..rank import RankResult
from ..render import Links, RenderedEmail, render_digest
from ..tokens import action_url, edition_url, make_token, vote_url
from .message import build_message
from .work import Built, Contents, Letter, Unbuilt, contents_of

POOL_FROM = 1000  # letters from which rendering is spread over worker processes
MAX_WORKERS = 4


def make_links(settings: Settings, subscriber: Subscriber, paper_ids: Sequence[int], edition: str | None = None) -> Links:
    """The reader's signed links under base_url (ConfigError when secret_key is missing): three signatures per
    email (unsubscribe, preferences, and one "vote" token shared by every like and dislike link), and a fourth with
    `edition` (YYYY-MM-DD): the "view in your browser" link of that edition."""
    key, base, version = settings.secret_key, settings.base_url, subscriber.token_version
    sub_id = subscriber.id or 0
    vote = make_token(key, "vote", sub_id, version)
    return Links(
        unsubscribe=action_url(base, "unsubscribe", make_token(key, "unsubscribe", sub_id, version)),
        preferences=action_url(base, "preferences", make_token(key, "preferences", sub_id, version)),
        like={p: vote_url(base, vote, p, 1) for p in paper_ids},
        dislike={p: vote_url(base, vote, p, -1) for p in paper_ids},
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
    links = make_links(settings, subscriber, [r.paper.id for r in result.picks if r.paper.id is not None], edition)
    rendered = render_digest(result, name=subscriber.name, email=subscriber.email, edition=date.fromisoformat(edition), links=links,
                             site_name=settings.from_name, interests=subscriber.interests or ())
    built = time.perf_counter()
    message = build_message(rendered, to=subscriber.email, name=subscriber.name, settings=settings, message_id=message_id, unsubscribe_url=links.unsubscribe, date=date_)
    return Composed(rendered, message, built - started, time.perf_counter() - built)


def build_letter(settings: Settings, letter: Letter, date_: datetime) -> Built:
    """The letter's message, or its problem: InputError is the subscriber's data (the address), anything else a bug
    or a row edited by hand, kept with its traceback for the log."""
    try:
        composed = compose(settings, letter.subscriber, letter.edition, letter.result, message_id=letter.message_id, date_=date_)
    except InputError as exc:
        return Built(letter, None, Unbuilt(str(exc)))
    except Exception as exc:  # noqa: BLE001 - a wall: whatever one subscriber's email raises is their failed delivery
        text = " ".join(f"cannot build the edition: {type(exc).__name__}: {exc}".split())[:500]
        return Built(letter, None, Unbuilt(text, traceback.format_exc()))
    return Built(letter, composed.message, None, composed.render_seconds, composed.build_seconds, contents_of(letter.result))


class Builder(Protocol):
    """Builds letters into messages, in the order given."""

    workers: int  # processes that render (0: the calling thread does)

    def build(self, letters: Sequence[Letter]) -> Iterator[Built]: ...

    def close(self) -> None: ...


class InlineBuilder:
    """Each letter built when its message is asked for, in the calling thread."""

    workers = 0

    def __init__(self, settings: Settings, date_: datetime) -> None:
        self.settings, self.date = settings, date_

    def build(self, letters: Sequence[Letter]) -> Iterator[Built]:
        return (build_letter(self.settings, letter, self.date) for letter in letters)

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class _Product:
    """What a worker process sends back for one letter: its index, and the Built without the letter (the parent
    has it; pickling the ranked results back would cost more than rendering them)."""

    index: int
    message: bytes | None
    problem: Unbuilt | None
    render_seconds: float
    build_seconds: float
    contents: Contents | None  # the picks' reasons come back too: the parent would have to explain them again


_JOB: tuple[Settings, Sequence[Letter], datetime] | None = None  # what forked workers inherit instead of receiving it


def _build_at(index: int) -> _Product:
    assert _JOB is not None, "set before the workers are forked"
    settings, letters, date_ = _JOB
    built = build_letter(settings, letters[index], date_)
    return _Product(index, built.message, built.problem, built.render_seconds, built.build_seconds, built.contents)


class ForkedBuilder:
    """Letters built by forked worker processes, which inherit the edition's letters (no pickling of the ranked
    results): build() hands them indexes and starts at once, so a batch renders while the one before is sent.
    Fork only from a process with one thread (builder_for checks): a forked copy of a lock another thread holds
    would deadlock the worker."""

    def __init__(self, settings: Settings, letters: Sequence[Letter], date_: datetime, workers: int) -> None:
        global _JOB
        self.workers = workers
        self.index = {letter.delivery_id: k for k, letter in enumerate(letters)}
        _JOB = (settings, letters, date_)
        # Each worker dies with this process, even by SIGKILL (it would wait on the task queue forever). gc.freeze():
        # the workers' collector never walks (and so never copies, page by page) the objects they inherit.
        gc.freeze()
        try:
            self.pool: multiprocessing.pool.Pool | None = multiprocessing.get_context("fork").Pool(workers, initializer=die_with_parent, initargs=(os.getpid(),))
        finally:
            gc.unfreeze()

    def build(self, letters: Sequence[Letter]) -> Iterator[Built]:
        assert self.pool is not None, "build() after close()"
        if not letters:
            return iter(())
        chunk = max(1, len(letters) // (4 * self.workers))  # small: the first message of a batch comes quickly
        products = self.pool.imap(_build_at, [self.index[letter.delivery_id] for letter in letters], chunksize=chunk)
        return (Built(letter, p.message, p.problem, p.render_seconds, p.build_seconds, p.contents) for letter, p in zip(letters, products))

    def close(self) -> None:
        global _JOB
        _JOB = None
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
            self.pool = None


def builder_for(settings: Settings, letters: Sequence[Letter], date_: datetime) -> InlineBuilder | ForkedBuilder:
    """Forked workers for an edition of POOL_FROM letters or more, in a process that may use more than one core,
    from a process with no other thread (a daemon has its scheduler's); the calling thread otherwise."""
    workers = min(usable_cores(), MAX_WORKERS)
    if len(letters) >= POOL_FROM and workers > 1 and threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods():
        return ForkedBuilder(settings, letters, date_, workers)
    return InlineBuilder(settings, date_)
