"""Queries that feed ranking: candidate papers for an edition, and what a subscriber's profile refers to.

(Interface fixed here; implementation by the ranking work.)
"""

from __future__ import annotations

from dataclasses import dataclass

from ..models import Paper


@dataclass(frozen=True)
class Candidate:
    """A stored paper with what ranking needs besides the row: the names of the sources carrying it."""

    paper: Paper
    sources: tuple[str, ...] = ()
