"""What every page of the web front shares: the per-app WebContext (settings, engine, clock, limiter, CSRF,
mail transport), the LinkGone error and the one-paragraph message page.

It must not define routes or open the database itself: digest.web.app builds the context once per app,
the page modules read it with web_context().
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from flask import current_app, render_template

from ..config import Settings
from ..delivery.transport import transport_for
from ..errors import TokenError
from ..store.days import PapersVersion, papers_version
from ..tokens import Claim, make_token, names_address, read_token, verifying_keys
from .cache import PageCache, Recent
from .security import Csrf, SharedLimiter, SlidingWindowLimiter


class LinkGone(TokenError):
    """A well-signed link that no longer works: already used, revoked, or its subscriber is gone (410)."""


@dataclass
class WebContext:
    """What the pages need, injected once per app (never module globals)."""

    settings: Settings
    engine: Any
    now: Callable[[], datetime]
    limiter: SlidingWindowLimiter | SharedLimiter
    csrf: Csrf
    transport: Any = None
    send_lock: threading.Lock = field(default_factory=threading.Lock)
    page_cache: PageCache = field(default_factory=PageCache)  # the public pages, rendered (digest.web.cache)
    version: Recent[PapersVersion] = field(default_factory=lambda: Recent(1.0))  # what page_cache is keyed on

    def papers_version(self) -> PapersVersion:
        """The stored papers' version, at most a second old: a fetch shows on the pages within a second."""
        return self.version.get(lambda: papers_version(self.engine))

    def read_claim(self, action: str, token: str) -> Claim:
        """The claim of a link signed with secret_key or one of previous_secret_keys."""
        return read_token(self.settings.secret_key, action, token, previous_keys=self.settings.previous_secret_keys)

    def names_address(self, claim: Claim, address: str) -> bool:
        """Whether an unsubscribe link was made for `address` (digest.tokens.address_tag)."""
        return names_address(verifying_keys(self.settings.secret_key, self.settings.previous_secret_keys), claim, address)

    def make_token(self, action: str, sub: Any) -> str:
        return make_token(self.settings.secret_key, action, sub.id, sub.token_version)

    def send(self, message: bytes, recipient: str) -> None:
        """Send one message through the configured transport (SMTP or outbox), made on first use.

        The connection is closed after each message: a web front sends rarely, and an idle SMTP
        connection would only be dropped by the server."""
        with self.send_lock:  # one SMTP connection is not shared between waitress's threads
            if self.transport is None:
                self.transport = transport_for(self.settings)
            try:
                self.transport.send(message, sender=self.settings.envelope_sender, recipient=recipient)
            finally:
                self.transport.close()


def web_context() -> WebContext:
    return current_app.extensions["digest"]


def message_page(title: str, message: str, status: int = 200, **extra: Any):
    """A page with a heading and a paragraph: confirmations, thank-yous and every error."""
    return render_template("page_message.html", title=title, message=message, **extra), status
