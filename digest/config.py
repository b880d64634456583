"""Settings: defaults < digest.toml < DIGEST_* environment < command-line flags, validated at load.

One table, the typed fields of Settings, drives loading, validation, `digest config`, the commented digest.toml
that `digest init` writes and the configuration reference in docs/ (OPTIONS is that table read back). Secrets may
come from DIGEST_<KEY>_FILE and are redacted whenever printed.
This module reads files and the environment; it never opens the database or the network.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, quote_plus, unquote

from . import __version__
from .errors import ConfigError

REDACTED = "********"


@dataclass(frozen=True)
class Option:
    """One setting as the table describes it: what `digest config`, `digest init` and the docs show."""

    name: str
    default: Any
    help: str
    kind: str = "str"  # str, int, float, bool, path, choice, list (of strings): from the field's type
    secret: bool = False
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None


def setting(default: Any, help: str, *, secret: bool = False, minimum: float | None = None,
            maximum: float | None = None) -> Any:
    """A field of Settings: its default (None: computed at load from DIGEST_HOME or another setting), its help
    line and its bounds. Its type is the field's annotation."""
    return field(metadata={"default": default, "help": help, "secret": secret, "minimum": minimum, "maximum": maximum})


@dataclass(frozen=True, kw_only=True)
class Settings:
    """The effective settings: one typed field per setting. Built by load_settings; never mutated (`replace`)."""

    home: Path
    database_url: str = setting(None, "SQLAlchemy URL; default: a SQLite file digest.db in DIGEST_HOME", secret=True)
    contact_email: str = setting("", "your address, sent in the User-Agent so feed owners can reach you")
    fetch_timeout: float = setting(20.0, "seconds before a feed request gives up", minimum=0.1)
    fetch_deadline: float = setting(
        300.0, "seconds one feed request may take in all, body included (a server trickling bytes is cut off)", minimum=0.1)
    max_feed_bytes: int = setting(20_000_000, "largest feed body accepted, in bytes", minimum=1024)
    retry_after_max: float = setting(60.0, "longest wait honoured from a Retry-After header, in seconds", minimum=0)
    fetch_retries: int = setting(2, "extra tries after a 429 or 503", minimum=0)
    arxiv_api_delay: float = setting(3.0, "seconds between arXiv API requests (arXiv asks for at least 3)", minimum=3.0)
    window_days: int = setting(3, "how many days back a paper can still be a candidate", minimum=1)
    keep_days: int = setting(
        0, "days a paper is kept once no source lists it, unless it was sent to someone, voted on or named as a seed: "
           "`digest prune` and the daily run delete older ones with their search-index rows and embeddings; 0 = keep "
           "every paper (docs/deployment.md#retention)", minimum=0)
    keep_ledger_days: int = setting(
        0, "days the delivery ledger keeps a finished edition (its row, how it showed its papers, the record of what "
           "it sent): `digest prune` and the daily run delete older ones, and their /edition pages are gone; 0 = keep "
           "them all", minimum=0)
    relevance_floor: float = setting(0.05, "similarity below which a paper is never picked", minimum=0)
    include_replacements: bool = setting(False, "also offer papers first met in an arXiv listing's replacements (a new "
                                                "version of an older paper; a third of a cs.CL day); a replaced paper "
                                                "another source carries (Hugging Face's trending list) is offered anyway")
    rank_model: Literal["tfidf", "hybrid"] = setting(
        "tfidf", "tfidf, or hybrid: TF-IDF blended with MiniLM sentence embeddings (pip install 'digest[semantic]')")
    smtp_host: str = setting("", "SMTP server; empty: write messages to outbox_dir instead")
    smtp_port: int = setting(587, "SMTP port", minimum=1, maximum=65535)
    smtp_security: Literal["starttls", "tls", "none"] = setting("starttls", "starttls, tls (implicit) or none")
    smtp_user: str = setting("", "SMTP login; empty: no AUTH")
    smtp_password: str = setting("", "SMTP password (or DIGEST_SMTP_PASSWORD_FILE)", secret=True)
    smtp_timeout: float = setting(30.0, "seconds before an SMTP command gives up", minimum=0.1)
    smtp_data_timeout: float = setting(600.0, "seconds to wait for the server's answer once a whole message is sent (RFC "
                                              "5321 advises 10 minutes: a relay may scan it first); past it the message is "
                                              "deferred to the next run, as it may have been accepted", minimum=0.1)
    smtp_connections: int = setting(
        32, "SMTP connections a sending process keeps open and uses at once (1: one message at a time)", minimum=1,
        maximum=200)
    send_rate: float = setting(0.0, "messages per second, across every worker and host sharing the database (PostgreSQL, "
                                    "or Redis when redis_url is set); 0 = unlimited", minimum=0)
    lease_seconds: float = setting(
        60.0, "PostgreSQL: how long a worker's claim on a delivery lasts without its heartbeat (renewed every third of "
        "it); a dead worker's deliveries are taken over after this", minimum=1)
    redis_url: str = setting("", "Redis (redis://host:6379/0) keeping send_rate across workers and hosts, and `digest "
                                 "web`'s rate limits unless web_rate_limit_storage says otherwise; empty: the database "
                                 "keeps send_rate, each web process its own limits", secret=True)
    from_address: str = setting("digest@localhost", "From address of every digest")
    from_name: str = setting("Paper digest", "From display name")
    reply_to: str = setting("", "optional Reply-To address")
    bounce_address: str = setting("", "envelope sender (Return-Path) of every email: where mail servers send bounce "
                                      "reports, for `digest bounces read`; empty: from_address")
    base_url: str = setting("http://127.0.0.1:8080", "public URL of `digest web`, used in every link")
    secret_key: str = setting("", "signs the tokens in links; `digest init` writes a random one into the config file it "
                                  "creates (or DIGEST_SECRET_KEY_FILE)", secret=True)
    previous_secret_keys: tuple[str, ...] = setting(
        (), "older secret_keys that still verify the links and forms they signed, while every new one is signed with "
            "secret_key: rotating the key without breaking the links already sent (docs/web.md#rotating-secret_key); a "
            "list in the config file, comma-separated (or one per line in the _FILE) in the environment", secret=True)
    list_id: str = setting("", "List-Id header; default: digest.<from domain>")
    outbox_dir: Path = setting(None, "where the outbox transport writes .eml files; default: DIGEST_HOME/outbox")
    skip_empty: bool = setting(True, "send nothing to a subscriber on a day with nothing new")
    fetch_cron: str = setting("30 20 * * sun-thu",
                              "when `digest serve` fetches (cron fields: minute hour day month weekday)")
    fetch_tz: str = setting("America/New_York", "time zone of fetch_cron (arXiv announces at 20:00 US/Eastern)")
    log_format: Literal["text", "json"] = setting("text", "text (key=value) or json")
    log_level: Literal["debug", "info", "warning", "error"] = setting("info", "debug, info, warning or error")
    web_host: str = setting("127.0.0.1", "address `digest web` listens on")
    web_port: int = setting(8080, "port `digest web` listens on", minimum=1, maximum=65535)
    subscribe_limit: int = setting(10, "subscribe attempts allowed per client address in each subscribe_window",
                                   minimum=1)
    subscribe_window: float = setting(600.0, "seconds of the subscribe rate-limit window", minimum=1)
    web_rate_limit_storage: str = setting(
        "", "where `digest web` counts subscribe attempts: memory:// (each process alone, each of `digest web "
        "--processes N` too) or a storage URI shared by every `digest web` process and host, e.g. "
        "redis://127.0.0.1:6379/0 (?key_prefix=NAME when installations share it); empty: redis_url when that is set, "
        "else memory://", secret=True)
    confirm_interval: float = setting(
        600.0, "least seconds between two confirmation emails to one address, whoever asks for them", minimum=0)
    confirm_daily_limit: int = setting(
        3, "most confirmation emails one address gets in 24 hours, whoever asks for them", minimum=1)
    web_connection_limit: int = setting(
        1000, "connections `digest web` holds open at once; at the limit the longest idle are closed (it raises its "
              "open-files limit to fit)", minimum=10)
    web_idle_timeout: int = setting(
        30, "seconds `digest web` keeps a connection with no request in progress open", minimum=1)
    web_request_timeout: int = setting(
        30, "seconds a client has to send a whole request once it began; a slower one (slow loris) is disconnected",
        minimum=1)
    origins: Mapping[str, str] = field(default_factory=dict, compare=False)  # setting -> where its value came from
    files: Mapping[str, Path] = field(default_factory=dict, compare=False)  # setting -> the file it was read from
    config_file: Path | None = field(default=None, compare=False)  # the config file read (--config, DIGEST_CONFIG or the home's), if any

    @property
    def config_path(self) -> Path:
        return self.home / "digest.toml"

    @property
    def envelope_sender(self) -> str:
        """The SMTP MAIL FROM of every message: bounce_address, else from_address."""
        return self.bounce_address or self.from_address

    @property
    def lock_path(self) -> Path:
        return self.home / "digest.lock"

    @property
    def user_agent(self) -> str:
        contact = f"; mailto:{self.contact_email}" if self.contact_email else ""
        return f"digest/{__version__} (+https://pypi.org/project/digest/{contact})"

    @property
    def values(self) -> dict[str, Any]:
        """Every setting by name (not home), for code that walks the table."""
        return {opt.name: getattr(self, opt.name) for opt in OPTIONS}

    def replace(self, **changes: Any) -> Settings:
        """A copy with `changes` checked and converted as a setting from the command line is."""
        values = {key: _coerce(OPTION_BY_NAME[key], raw, "override") for key, raw in changes.items()}
        files = {name: path for name, path in self.files.items() if name not in changes}
        return dataclasses.replace(self, **values, origins={**self.origins, **dict.fromkeys(changes, "override")}, files=files)

    def redacted(self) -> dict[str, Any]:
        out: dict[str, Any] = {"home": str(self.home)}
        for opt in OPTIONS:
            value = getattr(self, opt.name)
            if opt.secret and value:
                value = redact_url(value) if opt.name in URL_SETTINGS else REDACTED
            out[opt.name] = str(value) if isinstance(value, Path) else list(value) if isinstance(value, tuple) else value
        return out


def _option(f: dataclasses.Field[Any], annotation: Any) -> Option:
    """The table row of a Settings field: the kind of value from its annotation, the rest from setting()."""
    meta = f.metadata
    kinds: dict[Any, str] = {str: "str", int: "int", float: "float", bool: "bool", Path: "path", tuple[str, ...]: "list"}
    if typing.get_origin(annotation) is Literal:
        kind, choices = "choice", tuple(typing.get_args(annotation))
    else:
        kind, choices = kinds[annotation], ()
    return Option(f.name, meta["default"], meta["help"], kind, meta["secret"], choices, meta["minimum"], meta["maximum"])


_HINTS = typing.get_type_hints(Settings)
OPTIONS: tuple[Option, ...] = tuple(_option(f, _HINTS[f.name]) for f in dataclasses.fields(Settings) if "help" in f.metadata)
OPTION_BY_NAME = {o.name: o for o in OPTIONS}


def default_home() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("digest", appauthor=False))


# Query parameters that carry a secret: libpq's password, sslpassword and passfile, and the names people try.
_SECRET_PARAMS = re.compile(r"pass|pwd|secret|token|key", re.IGNORECASE)


BARE_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:(?!//)")  # a URL's scheme with no '//' after it (RFC 3986)


def _url_parts(url: str) -> tuple[str, str, str, str, str]:
    """(scheme://, userinfo, host[:port], path, ?query) of a URL as typed, without validating anything: a
    typo (a missing '@', a bad port, a '/' in a password) must still be cut where a password could be."""
    scheme, sep, rest = url.partition("://")
    bare = BARE_SCHEME.match(url)
    if not sep and bare and "@" not in url:
        # RFC 3986: without '//' there is no authority, so no user info and no password: sqlite:/x.db is a scheme and
        # a path (which open_engine refuses, saying what was meant). An '@' still says user info was meant.
        path, qmark, query = url[bare.end() :].partition("?")
        return bare.group(), "", "", path, qmark + query
    if not sep:
        scheme, rest = "", url
    else:
        scheme += sep
    rest, qmark, query = rest.partition("?")
    # The last '@' before the query ends the user info (a password may hold '/', '@' or ':' unencoded);
    # an empty authority (sqlite:///path) has none, whatever the path holds.
    at = -1 if rest.startswith("/") else rest.rfind("@")
    userinfo, rest = (rest[:at], rest[at + 1 :]) if at >= 0 else ("", rest)
    slash = rest.find("/")
    host, path = (rest[:slash], rest[slash:]) if slash >= 0 else (rest, "")
    return scheme, userinfo + ("@" if at >= 0 else ""), host, path, qmark + query


URL_SETTINGS = ("database_url", "redis_url", "web_rate_limit_storage")  # URLs that may carry a password (url_secrets)


def url_secrets(url: str) -> tuple[str, ...]:
    """Every part of a database URL that may be a password, as typed, percent-decoded and re-encoded:
    the password after user:, the value of ?password= (or sslpassword, ...), and a 'port' that is not a
    number when there is no '@' (user:password typed without its host)."""
    _, userinfo, host, _, query = _url_parts(url or "")
    found = []
    if userinfo:
        found.append(userinfo[:-1].partition(":")[2])
    elif ":" in host and not host.endswith("]"):
        port = host.rpartition(":")[2]
        if not port.isdigit():
            found.append(port)
    for pair in query[1:].split("&"):
        key, _, value = pair.partition("=")
        if _SECRET_PARAMS.search(unquote(key)):
            found.append(value)
    found.extend([value for key, value in parse_qsl(query[1:], keep_blank_values=True) if _SECRET_PARAMS.search(key)])
    try:  # and what SQLAlchemy makes of it, which drivers may quote back
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
        found.append(str(parsed.password or ""))
        for name, given in parsed.query.items():
            if _SECRET_PARAMS.search(name):
                found.extend([given] if isinstance(given, str) else given)
    except Exception:  # noqa: BLE001 - not a URL SQLAlchemy reads: the cuts above are all there is
        pass
    out: list[str] = []
    for secret in found:
        for form in (secret, unquote(secret), unquote(secret.replace("+", " ")), quote(unquote(secret), safe=""), quote_plus(unquote(secret))):
            if form and form not in out:
                out.append(form)
    return tuple(out)


def redact_url(url: str) -> str:
    """`url` with every part that may be a password replaced by ***, whether or not it parses: for
    errors, logs and `digest config`. The structure stays readable (user, host, database)."""
    scheme, userinfo, host, path, query = _url_parts(url or "")
    if userinfo and ":" in userinfo:
        userinfo = userinfo.partition(":")[0] + ":***@"
    elif not userinfo and ":" in host and not host.endswith("]") and not host.rpartition(":")[2].isdigit():
        host = host.rpartition(":")[0] + ":***"
    if query:
        pairs = [(key, "***" if _SECRET_PARAMS.search(key) else value) for key, _, value in (pair.partition("=") for pair in query[1:].split("&"))]
        query = "?" + "&".join(f"{key}={value}" if value or key else "" for key, value in pairs)
    return scheme + userinfo + host + path + query


def mask_secrets(text: str, secrets: tuple[str, ...] | list[str]) -> str:
    """`text` with every secret replaced by ********, longest first (so one inside another goes whole)."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text

# RFC 2919: a list-id is a dot-atom (RFC 5322's atext in dot-separated parts), a label and a namespace (a domain
# or "localhost"), so at least one dot; 255 characters at most. Written bare (papers.example.org) or in its <>.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LIST_ID = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})+")


def _check_list_id(value: str) -> str:
    bare = value[1:-1] if value.startswith("<") and value.endswith(">") else value
    if bare and (len(bare) > 255 or not _LIST_ID.fullmatch(bare)):
        raise ValueError("expected a list id such as papers.example.org (RFC 2919: letters, digits and "
                         "!#$%&'*+/=?^_`{|}~- in two or more dot-separated parts, no spaces or <>)")
    return bare


# Rules a setting's value must follow beyond its type: a function that returns the value to keep or raises
# ValueError saying what was expected.
_VALUE_RULES: dict[str, Any] = {"list_id": _check_list_id}


def _coerce(opt: Option, raw: Any, where: str) -> Any:
    def bad(why: str) -> ConfigError:
        shown = REDACTED if opt.secret else repr(raw)  # a numeric password left unquoted must not be printed
        return ConfigError(f"invalid {opt.name} = {shown} in {where}: {why}")

    if raw is None:
        return None
    try:
        if opt.kind == "int":
            if isinstance(raw, bool) or isinstance(raw, float) and not raw.is_integer():
                raise ValueError
            value: Any = int(raw)
        elif opt.kind == "float":
            if isinstance(raw, bool):
                raise ValueError
            value = float(raw)
        elif opt.kind == "bool":
            if isinstance(raw, bool):
                value = raw
            elif str(raw).strip().lower() in ("1", "true", "yes", "on"):
                value = True
            elif str(raw).strip().lower() in ("0", "false", "no", "off"):
                value = False
            else:
                raise ValueError
        elif opt.kind == "list":  # a TOML list, or one string (the environment) split at commas and line breaks
            items = re.split(r"[,\n]", raw) if isinstance(raw, str) else raw
            if not isinstance(items, (list, tuple)) or not all(isinstance(item, str) for item in items):
                raise ValueError
            value = tuple(item.strip() for item in items if item.strip())
        elif opt.kind == "path":
            if not isinstance(raw, str) or "\x00" in raw:
                raise ValueError
            value = Path(raw).expanduser()
        else:
            if not isinstance(raw, str):
                raise ValueError
            value = raw.strip()
    except RuntimeError:  # Path.expanduser() of ~user for a user that does not exist
        raise bad("no such user's home directory") from None
    except (TypeError, ValueError, OverflowError):
        expected = {"bool": "true or false", "int": "a whole number", "float": "a number", "path": "a path",
                    "list": "a list of strings, or one string of comma-separated values"}
        raise bad("expected " + expected.get(opt.kind, "a string")) from None
    if opt.choices and value not in opt.choices:
        raise bad(f"expected one of {', '.join(opt.choices)}")
    if opt.minimum is not None and value < opt.minimum:
        raise bad(f"must be at least {opt.minimum:g}")
    if opt.maximum is not None and value > opt.maximum:
        raise bad(f"must be at most {opt.maximum:g}")
    if opt.name in _VALUE_RULES:
        try:
            value = _VALUE_RULES[opt.name](value)
        except ValueError as exc:
            raise bad(str(exc)) from None
    return value

def load_settings(
    home: str | Path | None = None,
    config_file: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    problems: list[ConfigError] | None = None,
) -> Settings:
    """Build the effective settings. `overrides` are the command-line flags (None values ignored).

    The first bad setting raises its ConfigError; given a `problems` list, each bad setting's error is appended
    there instead and its default kept, so `digest config` can show everything else along with what is wrong."""
    env = os.environ if env is None else env
    # Absolute from here on: the default database URL is made from it, and a relative one means another file
    # under cron or systemd than in the shell that ran `digest init`.
    home_path = _expand(home or env.get("DIGEST_HOME") or default_home(), "DIGEST_HOME (--home)").absolute()
    values: dict[str, Any] = {o.name: o.default for o in OPTIONS}
    origins = {o.name: "default" for o in OPTIONS}
    files: dict[str, Path] = {}

    def fail(error: ConfigError) -> None:
        if problems is None:
            raise error
        problems.append(error)

    def take(opt: Option, raw: Any, where: str, origin: str, file: Path | None = None) -> None:
        try:
            values[opt.name] = _coerce(opt, raw, where)
            origins[opt.name] = origin
        except ConfigError as exc:
            fail(exc)
            return
        if file is None:
            files.pop(opt.name, None)
        else:
            files[opt.name] = file.absolute()

    explicit = config_file or env.get("DIGEST_CONFIG")
    path = _expand(explicit, "--config" if config_file else "DIGEST_CONFIG") if explicit else home_path / "digest.toml"
    data: dict[str, Any] = {}
    if explicit and not path.exists():  # named on purpose: a typo must not silently mean the defaults
        fail(ConfigError(f"config file {path} ({'--config' if config_file else 'DIGEST_CONFIG'}) does not exist", "`digest init` writes it"))
    elif path.exists():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as exc:
            fail(ConfigError(f"cannot read config file {path}: {exc}"))
    for key, raw in data.items():
        if key not in OPTION_BY_NAME:
            close = difflib.get_close_matches(key, list(OPTION_BY_NAME), n=1)
            meant = f"did you mean {close[0]}? " if close else ""
            fail(ConfigError(f"unknown setting {key!r} in {path}", f"{meant}`digest config` lists the known ones"))
            continue
        take(OPTION_BY_NAME[key], raw, str(path), str(path), path)

    for opt in OPTIONS:
        var = f"DIGEST_{opt.name.upper()}"
        if f"{var}_FILE" in env:
            file = _expand(env[f"{var}_FILE"], f"{var}_FILE")
            try:
                raw = file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                fail(ConfigError(f"cannot read {var}_FILE={file}: {exc.strerror or exc}"))
                continue
            except UnicodeDecodeError:
                fail(ConfigError(f"cannot read {var}_FILE={file}: not UTF-8 text"))
                continue
            if not raw:  # a file named on purpose: empty is a mistake (a failed write, a wrong path), never "unset"
                fail(ConfigError(f"{var}_FILE={file} is empty", f"write the {opt.name} into it, or unset {var}_FILE"))
                continue
            take(opt, raw, f"{var}_FILE", f"{var}_FILE", file)
        elif var in env:
            if opt.secret and not env[var].strip() and values[opt.name] and origins[opt.name] != "default":
                # An empty secret left in an environment file (a template's `DIGEST_SECRET_KEY=`) must not silently
                # replace the one the config file holds: every link and login would then fail far from the cause.
                fail(ConfigError(f"{var} is set but empty, and would override {opt.name} from {origins[opt.name]}",
                                 f"remove the empty {var} from the environment (e.g. /etc/digest/digest.env), or give it a value"))
                continue
            take(opt, env[var], var, var)

    for key, raw in (overrides or {}).items():
        if raw is not None:
            take(OPTION_BY_NAME[key], raw, "command line", "command line")

    if not values["database_url"]:
        values["database_url"] = f"sqlite:///{home_path / 'digest.db'}"
    if values["outbox_dir"] is None:
        values["outbox_dir"] = home_path / "outbox"
    if not values["list_id"]:
        domain = values["from_address"].rpartition("@")[2] or "localhost"
        values["list_id"] = f"digest.{domain}"
    return Settings(home=home_path, origins=origins, files=files, config_file=path.absolute() if path.exists() else None, **values)

def _expand(value: str | Path, where: str) -> Path:
    """A path from a flag or the environment, with ~ expanded; ConfigError naming `where` when it cannot be."""
    try:
        if "\x00" in str(value):
            raise ValueError
        return Path(value).expanduser()
    except RuntimeError:  # ~user for a user that does not exist
        raise ConfigError(f"{where} {str(value)!r}: no such user's home directory") from None
    except ValueError:
        raise ConfigError(f"{where} {str(value)!r} is not a usable path") from None


def render_config_file(secret_key: str | None = None) -> str:
    """The commented digest.toml written by `digest init`: every key, commented out, with its default; and
    `secret_key` set, when one is given (init makes a random one unless the environment provides it)."""
    lines = [
        "# digest configuration. Precedence: defaults < this file < DIGEST_* environment < command-line flags.",
        "# `digest init` writes a random secret_key into the file it creates, readable only by its owner (mode 600).",
        "# Secrets may live in files of their own instead: DIGEST_SECRET_KEY_FILE, DIGEST_SMTP_PASSWORD_FILE.",
        "",
    ]
    for opt in OPTIONS:
        lines.append(f"# {opt.help}")
        default = opt.default
        if opt.name == "secret_key" and secret_key:
            lines.append(f'{opt.name} = "{secret_key}"  # random, made by `digest init`: keep it, or the links already sent break')
        elif default is None:
            lines.append(f"# {opt.name} =")
        elif isinstance(default, bool):
            lines.append(f"# {opt.name} = {'true' if default else 'false'}")
        elif isinstance(default, tuple):
            lines.append(f"# {opt.name} = []")
        elif isinstance(default, (int, float)):
            lines.append(f"# {opt.name} = {default!r}")
        else:
            lines.append(f'# {opt.name} = "{default}"')
        lines.append("")
    return "\n".join(lines)

