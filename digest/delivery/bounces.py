"""Bounce messages that arrive after a relay accepted an edition: read them (one message, an mbox or a Maildir),
find the edition each one returns, and say what it reports (RFC 3464 delivery status notifications).

A relay (the usual smarthost on port 587) answers 250 for every recipient and learns only later that an address
is dead; the news comes back as a DSN to the envelope sender. Only reports that return one of digest's own
editions count: the returned message's Message-ID (in its message/rfc822 or text/rfc822-headers part, or the
report's References) must be in the ledger, which a forged report cannot guess. Parsing is pure; the ledger is
written by digest.store.bounces.
"""

from __future__ import annotations

import email
import email.policy
import mailbox
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from pathlib import Path

from ..errors import InputError

# RFC 3463 status codes that say the address itself is dead: bad mailbox or domain (5.1.x), mailbox disabled
# (5.2.1). One is enough. Other permanent failures (5.0.0, mailbox full 5.2.2, policy 5.7.x) count towards the
# bounce limit, as a 5xx in the SMTP conversation does; delays (4.x.x) count for nothing.
DEAD_ADDRESS = re.compile(r"^5\.(1\.\d+|2\.1)$")
_MESSAGE_ID = re.compile(r"<[^<>\s]+@[^<>\s]+>")


@dataclass(frozen=True)
class Report:
    """What one message says about one returned edition: `kind` is 'failed', 'delayed' or 'other' (relayed,
    delivered, expanded); `status` the RFC 3463 code; `message_ids` the ids it returns, to look up in the ledger."""

    recipient: str
    kind: str
    status: str
    diagnostic: str
    message_ids: tuple[str, ...]

    @property
    def dead_address(self) -> bool:
        return self.kind == "failed" and bool(DEAD_ADDRESS.match(self.status))

    def describe(self) -> str:
        return f"{self.status} {self.diagnostic}".strip()


@dataclass(frozen=True)
class Returned:
    """One message read: its subject (to name it) and the reports it holds (none: not a delivery report)."""

    subject: str
    reports: tuple[Report, ...]


def parse_bounce(raw: bytes) -> Returned:
    """The delivery reports of one message: RFC 3464's multipart/report, or Exim's X-Failed-Recipients alone."""
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    subject = _one_line(str(message.get("Subject", "")))
    returned_ids = _returned_message_ids(message)
    reports: list[Report] = []
    for part in message.walk():
        if part.get_content_type() != "message/delivery-status":
            continue
        for fields in _status_groups(part):
            recipient = _address(fields.get("final-recipient") or fields.get("original-recipient") or "")
            action = fields.get("action", "").strip().lower()
            if not recipient or not action:
                continue
            kind = action if action in ("failed", "delayed") else "other"
            status = (fields.get("status") or "").strip().split(" ")[0]
            status = status if re.fullmatch(r"[245]\.\d{1,3}\.\d{1,3}", status) else ("5.0.0" if kind == "failed" else "4.0.0")
            diagnostic = _diagnostic(fields.get("diagnostic-code", ""))
            reports.append(Report(recipient, kind, status, diagnostic, returned_ids))
    if not reports and message.get("X-Failed-Recipients") and returned_ids:
        for recipient in str(message["X-Failed-Recipients"]).split(","):
            if _address(recipient):
                reports.append(Report(_address(recipient), "failed", "5.0.0", "", returned_ids))
    return Returned(subject, tuple(reports))


def _status_groups(part: Message) -> Iterator[dict[str, str]]:
    """Each per-recipient group of a message/delivery-status part (the per-message group first, then one per
    recipient), as {lower-case field: value}. The email package parses the part into header blocks."""
    payload = part.get_payload()
    blocks = payload if isinstance(payload, list) else [email.message_from_string(str(payload))]
    for block in blocks:
        if isinstance(block, Message):
            yield {key.lower(): _one_line(str(value)) for key, value in block.items()}


def _returned_message_ids(message: Message) -> tuple[str, ...]:
    """The Message-IDs the report returns: the returned message's or headers' own, then the report's References and
    In-Reply-To (Exim sets References to the returned message's id)."""
    found: list[str] = []
    for part in message.walk():
        kind = part.get_content_type()
        if kind == "message/rfc822":
            inner = part.get_payload()
            headers = inner[0] if isinstance(inner, list) and inner else None
        elif kind == "text/rfc822-headers":
            text = part.get_payload(decode=True) or b""
            headers = email.message_from_bytes(bytes(text), policy=email.policy.compat32)
        else:
            continue
        if isinstance(headers, Message) and headers.get("Message-ID"):
            found += _MESSAGE_ID.findall(str(headers["Message-ID"]))
    for header in ("References", "In-Reply-To"):
        found += _MESSAGE_ID.findall(str(message.get(header, "")))
    return tuple(dict.fromkeys(found))


def _address(value: str) -> str:
    """The address of a Final-Recipient field ("rfc822; ada@example.org") or a plain one, lower-cased."""
    value = value.split(";", 1)[1] if ";" in value else value
    return value.strip().strip("<>").strip().lower()


def _diagnostic(value: str) -> str:
    """A Diagnostic-Code without its type ("smtp; 550 5.1.1 ..." -> "550 5.1.1 ..."), on one line, at most 200 characters."""
    text = value.split(";", 1)[1] if ";" in value else value
    text = _one_line(text)
    return text if len(text) <= 200 else text[:199] + "…"


def _one_line(value: str) -> str:
    return " ".join(value.split())


# --- reading messages -------------------------------------------------------------------------------------------


def read_messages(path: str) -> Iterator[tuple[str, bytes, Path | None]]:
    """Each message at `path`, as (where, its bytes, its file in a Maildir's new/): "-" is one message on standard
    input (an MTA's pipe); a Maildir its new messages (the caller marks each one seen once it is recorded); an
    mbox file each message in it; another file one message. Nothing is changed here."""
    if path == "-":
        yield "standard input", sys.stdin.buffer.read(), None
        return
    where = Path(path).expanduser()
    if where.is_dir():
        if not all((where / sub).is_dir() for sub in ("cur", "new", "tmp")):
            raise InputError(f"{where} is a directory but not a Maildir (no cur, new and tmp in it)", "give a Maildir, an mbox file, a message file or - for standard input")
        for unseen in sorted(p for p in (where / "new").iterdir() if not p.name.startswith(".")):
            yield f"{where} message {unseen.name}", unseen.read_bytes(), unseen
        return
    try:
        with open(where, "rb") as handle:
            first = handle.read(5)
    except OSError as exc:
        raise InputError(f"cannot read {where}: {exc.strerror or exc}", "give a Maildir, an mbox file, a message file or - for standard input") from None
    if first == b"From ":
        for number, msg in enumerate(mailbox.mbox(where, factory=None, create=False), 1):
            yield f"{where} message {number}", msg.as_bytes(), None
        return
    yield str(where), where.read_bytes(), None


def mark_seen(unseen: Path) -> None:
    """Move a Maildir message from new/ to cur/, flagged seen (the Maildir rule: info ":2,S"), so it is read once;
    a rename, as mail clients do, never a rewrite of the message."""
    unseen.rename(unseen.parent.parent / "cur" / f"{unseen.name}:2,S")

