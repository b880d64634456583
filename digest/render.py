"""Rendering: pure functions from ranked picks to the email's subject, HTML and plain text.

Jinja2 with autoescape; CSS inlined with premailer once per template and per paper card, never per
subscriber. No database, no network, no clock. (Interface fixed here; implementation by the email work.)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from .rank import RankResult


@dataclass(frozen=True)
class Links:
    """The reader's personal links (each carries a signed token, see digest.tokens)."""

    unsubscribe: str
    preferences: str
    like: dict[int, str]  # paper id -> URL
    dislike: dict[int, str]


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    html: str
    text: str


def render_digest(result: RankResult, *, name: str, email: str, edition: date, links: Links, site_name: str = "Paper digest") -> RenderedEmail:
    raise NotImplementedError
