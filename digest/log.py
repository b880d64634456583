"""Logging for every command: one line per event on stderr, key=value text (journald, cron mail) or JSON lines.

`log_event(logger, "fetched", source="arxiv")` is the one way digest logs an event; a record from a library
(waitress, APScheduler) is written with its message as `msg`. Every configured secret value is masked before a line
is written (before its values are escaped), and so is the token of every reader's link a line names.
It must not decide what is logged, only how: the steps log their own events.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from .config import OPTIONS, REDACTED, URL_SETTINGS, Settings, url_secrets
from .errors import DigestError
from .tokens import hide_link_tokens

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
SECRET_KEYS = re.compile(r"password|secret|token|api_key", re.IGNORECASE)
# Libraries whose INFO lines are noise here (APScheduler logs every tick, httpx every request, alembic every check).
QUIET_LOGGERS = ("apscheduler", "httpx", "httpcore", "alembic")
_BARE = re.compile(r"^[^\s\"=\\]+$")


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, *, exc_info: BaseException | None = None, **fields: Any) -> None:
    """Log one event with its fields (source=, subscriber=, edition=...), rendered by the configured format;
    `exc_info`: the exception behind it (its traceback is shown unless it is a DigestError, see EventFormatter)."""
    if logger.isEnabledFor(level):
        logger.log(level, event, exc_info=exc_info, extra={"digest_fields": fields, "digest_event": event})


def format_value(value: Any) -> str:
    """One field value as logfmt: bare when it can be, else double-quoted with escapes; never a newline."""
    text = value.isoformat() if isinstance(value, datetime) else str(value)
    if text and _BARE.match(text):
        return text
    return json.dumps(text, ensure_ascii=False)


class EventFormatter(logging.Formatter):
    """Renders a record as `ts level=... logger=... event=... k=v` or as one JSON object."""

    def __init__(self, fmt: str = "text", secrets: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.fmt = fmt
        # Longest first, so a secret containing another is masked whole.
        self.secrets = tuple(sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True))

    def fields_of(self, record: logging.LogRecord) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        given: dict[str, Any] = {}
        if hasattr(record, "digest_fields"):
            out["event"] = vars(record)["digest_event"]  # set by log_event with the fields
            given = record.digest_fields
        else:  # a library's own line: its message as it wrote it
            out["msg"] = record.getMessage()
        for key, value in given.items():
            out[key] = REDACTED if SECRET_KEYS.search(key) and value else value
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            out.setdefault("error", f"{type(exc).__name__}: {exc}")
            # A DigestError explains itself in one line; anything else is a bug to report: its traceback, always.
            if not isinstance(exc, DigestError) or record.levelno <= logging.DEBUG or logging.getLogger().isEnabledFor(logging.DEBUG):
                out["traceback"] = self.formatException(record.exc_info)
        return {key: self._masked(value) for key, value in out.items()}

    def format(self, record: logging.LogRecord) -> str:
        fields = self.fields_of(record)
        if self.fmt == "json":
            line = json.dumps(fields, ensure_ascii=False, default=str)
        else:
            ts = fields.pop("ts")
            line = ts + " " + " ".join(f"{key}={format_value(value)}" for key, value in fields.items())
        return hide_link_tokens(self.mask(line))

    def _masked(self, value: Any) -> Any:
        """`value` with every secret masked before the format escapes it: both formats quote a value, writing a quote,
        backslash or control character of a secret escaped (`pa\\"ss`), where the mask of the whole line no longer
        finds it. A value that holds no secret is kept as it is (a number stays a number)."""
        if not self.secrets or value is None or isinstance(value, (bool, int, float)):
            return value
        text = value.isoformat() if isinstance(value, datetime) else str(value)
        masked = self.mask(text)
        return value if masked == text else masked

    def mask(self, line: str) -> str:
        for secret in self.secrets:
            line = line.replace(secret, REDACTED)
        return line


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the moment (test runners swap it)."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self):  # noqa: ANN201
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:  # noqa: ANN001
        pass


class LazyHandler(_StderrHandler):
    """Configures itself from the settings on the first record, so `--help` never loads a broken config.

    Until a command calls enable_event_logging(), only warnings and errors pass (or everything with -v):
    at a terminal, `digest fetch` prints its own lines and info events would only repeat them. The events a command
    prints a line for itself (echo_events) are left out too, warnings included, unless -v.
    """

    def __init__(self, load_settings: Callable[[], Settings], fallback_format: str | None, fallback_level: str | None) -> None:
        super().__init__()
        self.load_settings = load_settings
        self.fallback = (fallback_format or "text", fallback_level or "info")
        self.resolved = False
        self.floor = logging.DEBUG if fallback_level == "debug" else logging.WARNING
        self.echoed: set[str] = set()

    def resolve(self) -> None:
        if self.resolved:
            return
        self.resolved = True
        try:
            settings = self.load_settings()
        except Exception:  # noqa: BLE001 - the command itself reports a bad config; log with what the flags said
            self.setFormatter(EventFormatter(self.fallback[0]))
            self.setLevel(max(LEVELS[self.fallback[1]], self.floor))
            return
        self.setFormatter(EventFormatter(settings.log_format, secret_values(settings)))
        self.setLevel(max(LEVELS[settings.log_level], self.floor))

    def handle(self, record: logging.LogRecord) -> bool:
        self.resolve()
        if record.levelno < self.level:  # the logger checked the level before it was known
            return False
        if self.floor > logging.DEBUG and getattr(record, "digest_event", None) in self.echoed:
            return False
        return super().handle(record)


def enable_event_logging() -> None:
    """Let every event at settings.log_level through: for the unattended commands (serve, run, send)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, LazyHandler):
            handler.floor = logging.DEBUG
            handler.resolved = False  # recompute the level on the next record...
            handler.setLevel(logging.NOTSET)  # ...which the logger must let through to the handler first


def echo_events(*events: str) -> None:
    """The command prints a line of its own for each of these events (`digest fetch` and `digest run` one per
    source, its error included): they are not logged at the terminal too, where a failed source's warning would
    repeat its `error:` line. The daemon, which prints nothing, logs them; -v shows them anyway."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, LazyHandler):
            handler.echoed.update(events)


def secret_values(settings: Settings) -> tuple[str, ...]:
    """Every configured secret (passwords, keys, whatever may be a password inside database_url, redis_url or
    web_rate_limit_storage, typo or not: see config.url_secrets), to be masked in logs."""
    out: list[str] = []
    for opt in OPTIONS:
        value = getattr(settings, opt.name)
        # A URL setting is masked by its secret parts (below), not whole: which database failed is worth saying.
        if opt.secret and value and opt.name not in URL_SETTINGS:  # a list of keys (previous_secret_keys): key by key
            out.extend(str(item) for item in (value if isinstance(value, tuple) else (value,)))
    for name in URL_SETTINGS:
        out.extend(url_secrets(getattr(settings, name) or ""))
    return tuple(out)


def masked_line(text: str, settings: Settings) -> str:
    """`text` as a log line would show it: every configured secret masked, every reader's link token hidden (for an
    error kept in the database, which `digest status` prints)."""
    return hide_link_tokens(EventFormatter(secrets=secret_values(settings)).mask(text))


def _install(handler: logging.Handler, level: int) -> logging.Handler:
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(min(level, root.level) if root.level else level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    return handler


def configure_logging_lazily(load_settings: Callable[[], Settings], log_format: str | None = None, log_level: str | None = None) -> logging.Handler:
    """Send every log line to stderr in settings.log_format at settings.log_level (replacing an earlier setup); the
    settings are loaded on the first log line, so `--help` never loads them (the CLI's entry point)."""
    # The root logger lets DEBUG through; the handler filters at the configured level once it knows it.
    return _install(LazyHandler(load_settings, log_format, log_level), logging.DEBUG)
