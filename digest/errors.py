"""The DigestError tree: every error the operator can see, each with a hint saying what to do next.

It must not import anything from the rest of the package: every module raises these.

    DigestError
     +-- ConfigError         a setting is missing or invalid
     +-- StoreError          the database cannot be opened, is locked, or refuses a write
     +-- SourceError         a source is unknown, unreachable, or sends what we cannot read
     |    +-- FeedError      the bytes of one feed cannot be parsed
     |    +-- RefusedError   the database refused every entry a source brought
     +-- InputError          a file, address or identifier given by the user is wrong
     |    +-- NotFoundError  an unknown subscriber, source or paper
     +-- DeliveryError       the mail server refused or dropped us
     |    +-- TransientDeliveryError   4xx or a dropped connection: try again later
     |    |    +-- UnconfirmedDeliveryError  the whole message went, its answer never came: the next run
     |    +-- PermanentDeliveryError   5xx for one recipient
     |    +-- ServerDownError          too many failures in a row: the server, not the recipients
     +-- LockedError         another run holds the lock
     +-- TokenError          a link's token is tampered, expired or replayed

    KeyboardInterrupt
     +-- Interrupted         Ctrl-C, saying what was kept: not a DigestError, so no wall that turns an Exception
                             into one source's or one stage's error (`except Exception`) can swallow it
"""

from __future__ import annotations


class DigestError(Exception):
    """Base of every error digest reports; `hint` tells the operator what to do next."""

    hint: str = ""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint

    def __str__(self) -> str:
        message = super().__str__()
        return f"{message} ({self.hint})" if self.hint else message


class ConfigError(DigestError):
    hint = "check digest.toml and the DIGEST_* environment variables; `digest config` shows what is in effect"


class StoreError(DigestError):
    hint = "check database_url (DIGEST_DATABASE_URL) and that the database is reachable and not locked"


class SourceError(DigestError):
    hint = "`digest sources list` shows each source's state"


class FeedError(SourceError):
    hint = "the feed is not valid RSS, Atom or JSON; check the URL in a browser"


class RefusedError(SourceError):
    hint = "its entries hold values the database refuses; `digest -v fetch` logs each one"


class InputError(DigestError):
    pass


class NotFoundError(InputError):
    pass


class DeliveryError(DigestError):
    hint = "check smtp_host, smtp_port, smtp_security and the credentials"


class TransientDeliveryError(DeliveryError):
    hint = "the server asked us to try later; a run retries it after a wait of 5 to 60 minutes"


class UnconfirmedDeliveryError(TransientDeliveryError):
    """The whole message was sent and the connection went (or smtp_data_timeout passed) before the server answered:
    it may have been accepted. Sent again by the next run, never at once (RFC 5321 leaves the message the client's
    until the answer; resending at once is how a recipient gets the same email several times)."""

    hint = "the server may have accepted it: the next run sends it again, and it may arrive twice"


class PermanentDeliveryError(DeliveryError):
    hint = "the server refused this recipient"


class ServerDownError(DeliveryError):
    hint = "the mail server, not the recipients, is failing: check smtp_host and its logs, then run again"


class LockedError(DigestError):
    """Not a failure: another run is doing the work. The CLI prints it on stdout and exits 75 (EX_TEMPFAIL), which
    the systemd units count as success and cron's MAILTO never sees."""

    hint = ("it is in progress (cron, the timer, `digest serve` or a terminal) and the next run does what is left; "
            "the lock goes when that process ends, even by a crash, so never delete the file")


class TokenError(DigestError):
    hint = "ask for a new link"


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) during a command, with what of its work was kept: "interrupted: nothing of this import was
    stored". The CLI prints it as one `error:` line."""


def one_line(exc: BaseException) -> str:
    """`Type: message` on one line, at most 500 characters (the ledger's last_error, a log field); a DigestError's
    own text, which already says what is wrong."""
    text = str(exc) if isinstance(exc, DigestError) else f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())[:500]
