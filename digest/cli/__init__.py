"""The `digest` command: thin click commands over the library. Each noun group lives in its own module.

Errors: a DigestError prints one line (`error: ...`) and exits 1; --verbose adds the traceback. Another run holding
the lock is not an error: one line on stdout, exit 75 (EXIT_LOCKED). Ctrl-C is one line
too (`error: interrupted...`) and exit 1, as `send` exits 1 when stopped with the rest of an edition unsent.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import os
import pkgutil
import secrets
import sys
import traceback
from collections.abc import Iterable
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any

import click

from .. import __version__
from ..config import (
    OPTION_BY_NAME,
    URL_SETTINGS,
    Settings,
    load_settings,
    mask_secrets,
    render_config_file,
    url_secrets,
)
from ..errors import ConfigError, DigestError, LockedError, StoreError
from ..log import configure_logging_lazily, secret_values
from ..store import describe, ensure_ready, has_schema, init_db, open_engine, sqlite_file
from ..tokens import PREVIOUS_KEY_HINT, SECRET_KEY_HINT, secret_key_hint, secret_key_problem

EXIT_ERROR = 1
EXIT_LOCKED = 75  # EX_TEMPFAIL (sysexits.h): another run holds the lock, nothing done (the units' SuccessExitStatus=)


class AppContext:
    """What every command needs: settings (loaded once) and the engine (opened on first use)."""

    def __init__(self, home: str | None, config_file: str | None, verbose: bool, overrides: dict[str, Any], *, home_given: bool = False):
        self.home, self.config_file, self.verbose, self.overrides = home, config_file, verbose, overrides
        self.home_given = home_given  # --home on the command line, not DIGEST_HOME (which `digest demo` ignores)

    @cached_property
    def settings(self) -> Settings:
        return load_settings(self.home, self.config_file, overrides=self.overrides)

    def now(self) -> datetime:
        """The CLI's one clock: the current instant, aware UTC (tests move it with time_machine)."""
        return datetime.now(timezone.utc)

    def secrets(self) -> tuple[str, ...]:
        """What must never be printed: the configured secrets, or, when the settings cannot be loaded,
        whatever may be a password in a database URL given by flag or environment."""
        try:
            return secret_values(self.settings)
        except Exception:  # noqa: BLE001 - a broken config is what is being reported
            urls = [url for name in URL_SETTINGS for url in (self.overrides.get(name), os.environ.get(f"DIGEST_{name.upper()}"))]
            return tuple(secret for url in urls if url for secret in url_secrets(url))

    @cached_property
    def engine(self):
        """The engine of the commands that write: the SQLite file (and DIGEST_HOME) and the schema made if missing,
        but not in a home `digest init` made whose database file has gone (moved, deleted, a wrong volume mounted):
        a new empty one would stand in for it, send nothing and look healthy to `status --check`."""
        settings = self.settings
        path = sqlite_file(settings.database_url)
        if path is not None and not path.exists() and settings.config_path.exists() and path.parent == settings.home:
            raise StoreError(f"no database at {path}, though {settings.config_path} is there: was it moved or deleted?",
                             "put it back (or check DIGEST_HOME and database_url); `digest init` makes a new, empty one")
        engine = open_engine(settings.database_url)
        ensure_ready(engine)
        return engine

    @cached_property
    def existing_engine(self):
        """The engine of the commands that only read: a missing DIGEST_HOME, SQLite file or schema is an error, never
        made (an older schema is upgraded in place, as every command does)."""
        settings = self.settings
        path = sqlite_file(settings.database_url)
        if path is not None and not path.exists():
            if not settings.home.exists() and settings.home in path.parents:
                raise StoreError(f"no digest home at {settings.home}", "run `digest init` to make one, or give --home (DIGEST_HOME) the one you made")
            raise StoreError(f"no database at {path}", "run `digest init` to make it, or check database_url and DIGEST_HOME")
        engine = open_engine(settings.database_url, create_dir=False)
        if not has_schema(engine):
            engine.dispose()
            raise StoreError(f"the database {describe(engine)} holds no digest tables", "run `digest init` to make them, or check database_url")
        ensure_ready(engine)
        return engine


pass_app = click.make_pass_decorator(AppContext)


class UsageLine(click.ClickException):
    """A wrong command line (unknown command or option, missing or bad argument) as one line like every other
    error, naming the help to read; exit status 2, click's convention for usage errors, kept for scripts."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.message}", err=True)


def one_line_usage(exc: click.UsageError) -> UsageLine:
    names, ctx = [], exc.ctx
    while ctx is not None:
        names.append(ctx.info_name or "")
        ctx = ctx.parent
    command = " ".join(["digest", *reversed(names[:-1])])  # the root is `digest`, whatever name ran it
    message = exc.format_message().strip().rstrip(".")
    return UsageLine(f"{message[:1].lower()}{message[1:]} (`{command} --help` shows the usage)")


class DigestGroup(click.Group):
    """Turns DigestError (and a few OS errors) into one clear line and a non-zero exit, usage errors too."""

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: Any) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as exc:
            raise one_line_usage(exc) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            raise one_line_usage(exc) from None
        except LockedError as exc:  # not a failure: on stdout, so cron (stdout to /dev/null) mails nothing
            click.echo(str(exc))
            ctx.exit(EXIT_LOCKED)
        except DigestError as exc:
            _fail(ctx, str(exc))
        except BrokenPipeError:
            # `digest papers list | head`: the reader left; that is not an error worth a message.
            sys.stderr.close()
            ctx.exit(0)
        except OSError as exc:
            _fail(ctx, f"{exc.filename}: {exc.strerror or exc} (check the path and its permissions)" if exc.filename else str(exc))
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except KeyboardInterrupt as exc:  # Ctrl-C: one line (an Interrupted says what was kept), not click's "Aborted!"
            _fail(ctx, str(exc) or "interrupted")
        except Exception as exc:  # noqa: BLE001 - a bug: its traceback is shown, never a secret it quotes
            app = ctx.find_object(AppContext)
            secrets = app.secrets() if app is not None else ()
            click.echo(mask_secrets(traceback.format_exc(), secrets), err=True, nl=False)
            said = mask_secrets(str(exc), secrets).splitlines()[0][:300] if str(exc) else ""
            click.echo(f"error: unexpected {type(exc).__name__}: {said} (a bug in digest: the traceback above says where)", err=True)
            ctx.exit(EXIT_ERROR)


def _fail(ctx: click.Context, message: str) -> None:
    app = ctx.find_object(AppContext)
    secrets = app.secrets() if app is not None else ()
    if app is not None and app.verbose:
        click.echo(mask_secrets(traceback.format_exc(), secrets), err=True, nl=False)
    click.echo(_error_line(message, secrets), err=True)
    ctx.exit(EXIT_ERROR)


def _error_line(message: str, secrets: Iterable[str]) -> str:
    """`error: message`, every secret it quotes masked. Each message is redacted where it is made; masked here too,
    as the tracebacks and log lines are, so that one that quotes other words (a path, a server's reply) never prints
    a secret. Not a value under 8 characters: the line that refuses secret_key = "short" as too short must still
    say so (and such a key is refused anyway)."""
    return f"error: {mask_secrets(message, [s for s in secrets if len(s) >= 8])}"


def _no_password(ctx: click.Context, param: click.Parameter, url: str | None) -> str | None:
    """--database-url without a password: the command line is in the process list (`ps`, /proc/PID/cmdline) of every
    user of the machine while the command runs, and in the shell's history. Secrets come from the environment or a
    file. The message never repeats the URL."""
    if url and url_secrets(url):
        raise click.BadParameter("it holds a password (or what may be one), which the command line shows every user of this "
                                 "machine (ps) and keeps in your shell's history: give the URL in DIGEST_DATABASE_URL, "
                                 "DIGEST_DATABASE_URL_FILE or digest.toml's database_url", ctx, param)
    return url


@click.group(cls=DigestGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="digest")
@click.option("--home", envvar="DIGEST_HOME", metavar="DIR", help="Directory of the database, config and outbox (DIGEST_HOME).")
@click.option("--config", "config_file", metavar="FILE", help="Config file (default: DIGEST_HOME/digest.toml).")
@click.option("--database-url", metavar="URL", callback=_no_password,
              help="Database URL without a password (overrides DIGEST_DATABASE_URL, which is where one with a password goes).")
@click.option("--log-format", type=click.Choice(["text", "json"]), help="Log lines as key=value text or JSON.")
@click.option("-v", "--verbose", is_flag=True, help="Show tracebacks and debug logs.")
@click.pass_context
def main(ctx: click.Context, home: str | None, config_file: str | None, database_url: str | None, log_format: str | None, verbose: bool) -> None:
    """digest: the new research papers that matter to each subscriber, by email, once a day."""
    # What digest creates (DIGEST_HOME, the database and its -wal/-shm, the outbox and its emails, the lock) is for its
    # owner alone, whatever umask cron or a root shell gives (022: the subscribers' addresses readable by every user):
    # the same as the units' UMask=0077. A stricter umask is kept.
    os.umask(os.umask(0o077) | 0o077)
    overrides = {"database_url": database_url, "log_format": log_format}
    if verbose:
        overrides["log_level"] = "debug"
    home_given = ctx.get_parameter_source("home") == click.core.ParameterSource.COMMANDLINE
    ctx.obj = AppContext(home, config_file, verbose, overrides, home_given=home_given)

    configure_logging_lazily(lambda: ctx.obj.settings, log_format, overrides.get("log_level"))


@main.command()
@pass_app
def init(app: AppContext) -> None:
    """Create DIGEST_HOME, the database and a commented digest.toml with a random secret_key (safe to run twice)."""
    explicit = app.config_file or os.environ.get("DIGEST_CONFIG")  # the file in effect, if not DIGEST_HOME's
    made, new_dirs = None, []
    if explicit:  # written first: loading the settings needs the file named
        path = Path(explicit).expanduser()
        if not path.exists():
            new_dirs = [folder for folder in (path.parent, *path.parent.parents) if not folder.exists()]
            path.parent.mkdir(parents=True, exist_ok=True)
        made = _write_config(path, "set --config (DIGEST_CONFIG) to a file in a directory you can write")
    try:
        settings = app.settings
        origin = settings.origins.get("secret_key", "")
        if origin.startswith("DIGEST_SECRET_KEY") and (problem := secret_key_problem(settings.secret_key)):
            # The environment's key is the one in effect (init writes none then): refused now, not at the first send.
            raise ConfigError(f"secret_key from {origin} is {problem}", SECRET_KEY_HINT)
        try:
            settings.home.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create DIGEST_HOME {settings.home}: {exc.strerror or exc}", "set DIGEST_HOME (or --home) to a directory you can write") from None
        engine = open_engine(settings.database_url)  # a database_url that cannot be used is refused before any file is written
    except DigestError:
        if made is not None:  # nothing half-done: the file this run wrote goes with it, and the folders it made
            path.unlink(missing_ok=True)
            for folder in new_dirs:
                with contextlib.suppress(OSError):
                    folder.rmdir()
        raise
    if not explicit:
        path = settings.config_path
        made = _write_config(path, "set DIGEST_HOME (or --home) to a directory you can write")
    click.echo({None: f"kept {path}", False: f"wrote {path}", True: f"wrote {path} with a new random secret_key (only you can read it)"}[made])
    init_db(engine)
    click.echo(f"database ready: {describe(engine)}")


def _write_config(path: Path, hint: str) -> bool | None:
    """Write the commented config file, readable only by its owner, unless it exists (None). True when it holds a
    new random secret_key: a first `preview` or `send` must not fail for want of one. None is made when the
    environment already provides the key (DIGEST_SECRET_KEY or DIGEST_SECRET_KEY_FILE): it would be ignored."""
    if path.exists():
        return None
    key = None if {"DIGEST_SECRET_KEY", "DIGEST_SECRET_KEY_FILE"} & set(os.environ) else secrets.token_urlsafe(32)
    # O_EXCL: never over a file that appeared meanwhile; 0600 from the first byte, not chmod after the write.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:  # a home it may not write in (another user's, a read-only mount): `hint` names the setting
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}", hint) from None
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(render_config_file(secret_key=key))
    return key is not None


@main.command("config")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def config_cmd(app: AppContext, as_json: bool) -> None:
    """Show the effective settings and where each came from; secrets are redacted.

    A bad setting is shown as the error the other commands report (exit 1), with everything else in effect.
    """
    bad_values: list[ConfigError] = []
    settings = load_settings(app.home, app.config_file, overrides=app.overrides, problems=bad_values)
    problems = [*bad_values, *settings_problems(settings)]
    if settings.secret_key and (key := secret_key_problem(settings.secret_key)):  # a key given that every command refuses
        problems.append(ConfigError(f"secret_key is {key}", secret_key_hint(settings.secret_key)))  # (none at all: `digest doctor` says so)
    problems += [ConfigError(f"previous_secret_keys holds a key that is {problem}", PREVIOUS_KEY_HINT)
                 for problem in filter(None, map(secret_key_problem, settings.previous_secret_keys))]
    values = settings.redacted()
    if as_json:
        click.echo(json.dumps(values, indent=2, default=str))
    else:
        width = max(map(len, values))
        for key, value in values.items():
            origin = settings.origins.get(key, "DIGEST_HOME" if key == "home" else "")
            click.echo(f"{key:<{width}}  {value!s:<40}  {origin}".rstrip())
    # Each message already shows a URL with its password cut out (redact_url): mask the passwords, not whole URLs.
    hidden = tuple(secret for secret in app.secrets() if secret not in {getattr(settings, name) for name in URL_SETTINGS})
    for problem in problems:
        click.echo(_error_line(str(problem), hidden), err=True)
    if problems:
        click.get_current_context().exit(EXIT_ERROR)


def settings_problems(settings: Settings) -> list[DigestError]:
    """What the commands that use a setting refuse in it, each found by the code that uses it (the rule lives there
    once): database_url (the store), fetch_cron and fetch_tz (the scheduler), from_address, reply_to and base_url
    (the messages). For `digest config` and `digest doctor`, which report every problem rather than the first:
    each setting is checked with the others of its check at their defaults."""
    from ..delivery.message import check_sender_settings
    from ..schedule import fetch_trigger

    def engine_check(checked: Settings) -> None:
        open_engine(checked.database_url, create_dir=False).dispose()  # parses the URL; connects to nothing

    groups = ((engine_check, ("database_url",)), (fetch_trigger, ("fetch_tz", "fetch_cron")),
              (check_sender_settings, ("from_address", "reply_to", "bounce_address", "base_url")))
    problems: list[DigestError] = []
    for check, names in groups:
        for name in names:
            alone = dataclasses.replace(settings, **{other: OPTION_BY_NAME[other].default for other in names if other != name})
            try:
                check(alone)
            except DigestError as exc:
                problems.append(exc)
    return problems


def _register() -> None:
    """Attach the command modules; each adds its commands to `main`."""
    for module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
        importlib.import_module(f"{__name__}.{module}")


_register()
