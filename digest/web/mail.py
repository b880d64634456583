"""The confirmation email of the double opt-in, as RFC 5322 bytes for a digest.deliver transport.

It must not send anything or touch the database: the subscribe page builds the message, then hands it to
the configured transport. Header encoding is digest.deliver's, so hostile text never breaks a header.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from email.utils import format_datetime

from flask import render_template

from ..config import Settings
from ..deliver import address_domain, assemble_alternative, check_address, encode_words, format_address
from ..tokens import action_url


def compose_confirmation(settings: Settings, to: str, token: str, now: datetime) -> bytes:
    """multipart/alternative (text, then HTML) with the /confirm link under base_url; no List-Unsubscribe
    (the reader is not on the list yet)."""
    url = action_url(settings.base_url, "confirm", token)
    site = settings.from_name or "Paper digest"
    text = render_template("confirm_email.txt", url=url, site_name=site)
    html = render_template("confirm_email.html", url=url, site_name=site)
    headers = [
        f"From: {format_address(settings.from_name, settings.from_address)}",
        *([f"Reply-To: {check_address(settings.reply_to)}"] if settings.reply_to else []),
        f"To: {check_address(to)}",
        f"Subject: {encode_words(f'Confirm your subscription to {site}', 9)}",
        f"Date: {format_datetime(now)}",
        f"Message-ID: <confirm.{secrets.token_hex(8)}@{address_domain(settings.from_address)}>",
        "Auto-Submitted: auto-generated",  # RFC 3834: no vacation replies to a confirmation
    ]
    return assemble_alternative(headers, text, html)
