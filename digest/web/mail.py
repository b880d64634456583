"""The confirmation email of the double opt-in, as RFC 5322 bytes for a digest.delivery transport.

It must not send anything or touch the database: the subscribe page builds the message, then hands it to
the configured transport. The message is digest.delivery.message's, as for a digest, so hostile text never breaks
a header.
"""

from __future__ import annotations

from datetime import datetime

from flask import render_template

from ..config import Settings
from ..delivery.message import build_confirmation
from ..tokens import action_url


def compose_confirmation(settings: Settings, to: str, token: str, now: datetime) -> bytes:
    """multipart/alternative (text, then HTML) with the /confirm link under base_url; no List-Unsubscribe
    (the reader is not on the list yet)."""
    url = action_url(settings.base_url, "confirm", token)
    site = settings.from_name or "Paper digest"
    text = render_template("confirm_email.txt", url=url, site_name=site)
    html = render_template("confirm_email.html", url=url, site_name=site)
    return build_confirmation(settings, to=to, subject=f"Confirm your subscription to {site}", text=text, html=html, date=now)
