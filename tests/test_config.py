import dataclasses
import json
import os
from datetime import datetime, timezone
from pathlib import Path

import pytest

from digest.config import OPTIONS, load_settings, render_config_file
from digest.errors import ConfigError


def test_load_settings_precedence(tmp_path):
    (tmp_path / "digest.toml").write_text('smtp_host = "file.example"\nsmtp_port = 2525\nfrom_name = "From file"\n')
    env = {"DIGEST_SMTP_PORT": "2626", "DIGEST_FROM_NAME": "From env"}
    settings = load_settings(tmp_path, env=env, overrides={"from_name": "From flag"})
    assert settings.smtp_host == "file.example"
    assert settings.smtp_port == 2626
    assert settings.from_name == "From flag"
    assert settings.origins["smtp_port"] == "DIGEST_SMTP_PORT"
    assert settings.database_url == f"sqlite:///{tmp_path / 'digest.db'}"
    assert settings.outbox_dir == tmp_path / "outbox"


def test_load_settings_secret_from_file_is_redacted(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("hunter2hunter2\n")
    settings = load_settings(tmp_path, env={"DIGEST_SMTP_PASSWORD_FILE": str(secret), "DIGEST_DATABASE_URL": "postgresql://u:pw123@db/x"})
    assert settings.smtp_password == "hunter2hunter2"
    shown = settings.redacted()
    assert "hunter2" not in str(shown) and "pw123" not in str(shown)
    assert shown["smtp_password"] == "********"



def test_load_settings_every_value_has_its_fields_type(tmp_path):
    """Settings is typed: each field holds a value of its annotated type, from the defaults or from strings."""
    import typing
    from pathlib import Path

    from digest.config import Settings

    hints = typing.get_type_hints(Settings)
    env = {f"DIGEST_{name.upper()}": value for name, value in {"smtp_port": "2525", "send_rate": "1.5", "skip_empty": "no",
                                                               "outbox_dir": "~/out", "rank_model": "hybrid"}.items()}
    for settings in (load_settings(tmp_path, env={}), load_settings(tmp_path, env=env)):
        for opt in OPTIONS:
            value, hint = getattr(settings, opt.name), hints[opt.name]
            if typing.get_origin(hint) is typing.Literal:
                assert value in typing.get_args(hint), opt.name
            elif typing.get_origin(hint) is tuple:  # previous_secret_keys: tuple[str, ...]
                assert type(value) is tuple and all(type(item) is str for item in value), opt.name
            else:
                assert type(value) is hint or hint is Path and isinstance(value, Path), opt.name
    assert (settings.smtp_port, settings.send_rate, settings.skip_empty, settings.rank_model) == (2525, 1.5, False, "hybrid")
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.smtp_port = 25  # type: ignore[misc]


@pytest.mark.parametrize(
    "toml, message",
    [
        ("smtp_port = 'x'", "invalid smtp_port"),
        ("smtp_security = 'ssl3'", "expected one of starttls, tls, none"),
        ("no_such_key = 1", "unknown setting 'no_such_key'"),
        ("smtp_port = ", "cannot read config file"),
        ("window_days = 0", "must be at least 1"),
        ("smtp_port = 99999", "must be at most 65535"),
        ("web_port = 70000", "must be at most 65535"),
    ],
    ids=["not-an-int", "bad-choice", "unknown-key", "broken-toml", "below-minimum", "smtp-port-above-maximum", "web-port-above-maximum"],
)
def test_load_settings_rejects_bad_config(tmp_path, toml, message):
    (tmp_path / "digest.toml").write_text(toml)
    with pytest.raises(ConfigError, match=message):
        load_settings(tmp_path, env={})


@pytest.mark.parametrize("toml", ["smtp_password = 987654321", "secret_key = 12345678901234567890", "database_url = 424242424242"],
                         ids=["smtp_password", "secret_key", "database_url"])
def test_load_settings_error_about_a_secret_never_shows_its_value(tmp_path, toml):
    (tmp_path / "digest.toml").write_text(toml + "\n")
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path, env={})
    name, value = (part.strip() for part in toml.split("="))
    assert f"invalid {name} = ******** in " in str(info.value) and value not in str(info.value)


@pytest.mark.parametrize("toml, message", [("smtp_port = 25.5", "expected a whole number"), ("fetch_timeout = 'x'", "expected a number")],
                         ids=["fraction-for-an-int", "text-for-a-float"])
def test_load_settings_names_the_expected_kind(tmp_path, toml, message):
    (tmp_path / "digest.toml").write_text(toml + "\n")
    with pytest.raises(ConfigError, match=message):
        load_settings(tmp_path, env={})


def test_render_config_file_lists_every_option_and_parses(tmp_path):
    import tomllib

    text = render_config_file()
    for opt in OPTIONS:
        assert f"# {opt.name} =" in text
    names = tuple(f"# {opt.name} = " for opt in OPTIONS)
    uncommented = "\n".join(line[2:] for line in text.splitlines() if line.startswith(names) and not line.endswith("= "))
    assert tomllib.loads(uncommented)


def test_cli_init_twice_and_config(cli, home):
    first = cli("init")
    assert first.exit_code == 0 and (home / "digest.toml").exists() and (home / "digest.db").exists()
    second = cli("init")
    assert second.exit_code == 0 and "kept" in second.output


def test_cli_bad_config_is_one_line_and_nonzero(cli, home):
    (home / "digest.toml").write_text("smtp_port = 'nope'\n")
    result = cli("status")
    assert result.exit_code == 1
    assert result.output.strip().count("\n") == 0 and result.output.startswith("error: invalid smtp_port")


def test_cli_config_shows_the_settings_and_the_problem_the_other_commands_report(cli, home):
    (home / "digest.toml").write_text("smtp_prot = 25\nfrom_name = 'Lab papers'\n")
    other = cli("status")
    assert other.exit_code == 1 and other.output == (
        f"error: unknown setting 'smtp_prot' in {home / 'digest.toml'} (did you mean smtp_port? `digest config` lists the known ones)\n")
    result = cli("config")  # what the hint sends the reader to: it must work, show the settings, and the problem
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert any(line.split()[:2] == ["smtp_port", "587"] for line in lines)
    assert any(line.split()[:3] == ["from_name", "Lab", "papers"] and line.endswith(str(home / "digest.toml")) for line in lines)
    assert lines[-1] == other.output.strip()
    assert json.loads(cli("config", "--json").stdout)["from_name"] == "Lab papers"


def test_cli_config_shows_a_bad_value_as_the_error_and_keeps_the_default(cli, home):
    result = cli("config", env={"DIGEST_SMTP_PORT": "abc"})
    assert result.exit_code == 1
    assert any(line.split()[:3] == ["smtp_port", "587", "default"] for line in result.output.splitlines())
    assert result.output.splitlines()[-1].startswith("error: invalid smtp_port = 'abc' in DIGEST_SMTP_PORT: expected a whole number")


def test_cli_init_writes_a_random_secret_key_into_a_file_only_its_owner_reads(cli, home):
    result = cli("init")
    assert result.exit_code == 0, result.output
    path = home / "digest.toml"
    assert result.output.splitlines()[0] == f"wrote {path} with a new random secret_key (only you can read it)"
    assert path.stat().st_mode & 0o777 == 0o600
    key = load_settings(home, env={}).secret_key
    assert len(key) >= 40 and key in path.read_text(encoding="utf-8")
    assert cli("init").output.splitlines()[0] == f"kept {path}"
    assert load_settings(home, env={}).secret_key == key  # a second init keeps the key: the links already sent stay valid
    other = home.parent / "other"
    assert cli("--home", str(other), "init").exit_code == 0
    assert load_settings(other, env={}).secret_key != key


@pytest.mark.parametrize("env", [{"DIGEST_SECRET_KEY": "k" * 40}, {"DIGEST_SECRET_KEY_FILE": "{file}"}], ids=["environment", "file"])
def test_cli_init_writes_no_secret_key_when_one_is_set(cli, home, tmp_path, env):
    key_file = tmp_path / "key"
    key_file.write_text("f" * 40)
    result = cli("init", env={name: value.format(file=key_file) for name, value in env.items()})
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == f"wrote {home / 'digest.toml'}"
    assert load_settings(home, env={}).secret_key == ""
    assert (home / "digest.toml").stat().st_mode & 0o777 == 0o600


def test_cli_init_with_a_config_file_of_the_operator_writes_no_key_into_it(cli, home, tmp_path):
    target = tmp_path / "etc" / "digest.toml"
    target.parent.mkdir()
    target.write_text('from_name = "Lab papers"\n')
    result = cli("--config", str(target), "init")
    assert result.exit_code == 0 and result.output.splitlines()[0] == f"kept {target}"
    assert target.read_text() == 'from_name = "Lab papers"\n'


@pytest.mark.parametrize("url", ["sqlite:///nonexistent/dir/x.db", "sqlite:///x.db"], ids=["in-a-folder", "bare-name"])
def test_cli_refuses_a_relative_sqlite_path_and_creates_nothing(cli, home, tmp_path, monkeypatch, url):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    result = cli("init", env={"DIGEST_DATABASE_URL": url})
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    relative = url.removeprefix("sqlite:///")
    assert result.output == (f"error: database_url {url} is a path relative to the current directory, which differs between cron, "
                             f"systemd and your shell (write the absolute path after four slashes: sqlite:///{work / relative})\n")
    assert list(work.iterdir()) == []


def test_configuration_reference_documents_every_setting():
    import importlib.util
    from pathlib import Path

    docs = Path(__file__).resolve().parent.parent / "docs"
    page = (docs / "configuration.md").read_text(encoding="utf-8")
    spec = importlib.util.spec_from_file_location("digest_docs_hooks", docs / "hooks.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    assert hooks.MARKER in page, "docs/configuration.md lost the generated settings table"
    table = hooks.on_page_markdown(page, None, None, None)
    missing = [opt.name for opt in OPTIONS if f"### `{opt.name}` {{#{opt.name}}}\n" not in table
               or f"Environment: `DIGEST_{opt.name.upper()}`" not in table]
    assert not missing, f"settings missing from the generated configuration reference: {missing}"
    assert all(opt.help.split(";")[0][1:] in table for opt in OPTIONS)  # (the first letter is capitalised)


def test_load_settings_digest_config_naming_a_missing_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="config file .*nope.toml .*does not exist"):
        load_settings(tmp_path, env={"DIGEST_CONFIG": str(tmp_path / "nope.toml")})


@pytest.mark.parametrize("how", ["flag", "env"])
def test_cli_init_writes_the_config_file_in_effect(cli, home, tmp_path, how):
    target = tmp_path / "etc" / "digest.toml"
    args, env = (["--config", str(target)], None) if how == "flag" else ([], {"DIGEST_CONFIG": str(target)})
    first = cli(*args, "init", env=env)
    assert first.exit_code == 0, first.output
    assert first.output.startswith(f"wrote {target} with a new random secret_key") and target.exists() and not (home / "digest.toml").exists()
    second = cli(*args, "init", env=env)
    assert second.exit_code == 0 and second.output.startswith(f"kept {target}\n")


def test_cli_init_under_a_file_names_digest_home_in_one_line(cli, tmp_path):
    (tmp_path / "file").write_text("not a directory")
    result = cli("--home", str(tmp_path / "file" / "home"), "init")
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert result.output.startswith(f"error: cannot create DIGEST_HOME {tmp_path / 'file' / 'home'}: Not a directory")


def unwritable_directory(tmp_path: Path) -> Path:
    """A directory this process cannot create a file in: mode 0500 for a user; root ignores modes, but not sysfs."""
    if os.geteuid() == 0:
        if not Path("/sys/kernel").is_dir():
            pytest.skip("root, and no /sys/kernel to stand for a directory root cannot write")
        return Path("/sys/kernel")
    folder = tmp_path / "read-only"
    folder.mkdir(mode=0o500)
    return folder


@pytest.mark.parametrize("how", ["home", "config"])
def test_cli_init_in_a_directory_it_cannot_write_says_what_to_do_in_one_line(cli, tmp_path, how):
    folder = unwritable_directory(tmp_path)
    args, hint = ((["--home", str(folder)], "set DIGEST_HOME (or --home) to a directory you can write") if how == "home" else
                  (["--config", str(folder / "digest.toml")], "set --config (DIGEST_CONFIG) to a file in a directory you can write"))
    result = cli(*args, "init")
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert result.output.startswith(f"error: cannot write {folder / 'digest.toml'}: ")
    assert result.output.endswith(f" ({hint})\n"), result.output
    assert not (folder / "digest.db").exists()


def test_cli_in_a_home_it_cannot_write_names_the_directory_and_digest_home(cli, tmp_path):
    """`digest subscribers add` (any command that writes) in a DIGEST_HOME that exists but is not this user's: the
    line named database_url and DIGEST_DATABASE_URL, which nobody had set, and a lock as what might be wrong."""
    folder = unwritable_directory(tmp_path)
    result = cli("--home", str(folder), "subscribers", "add", "ada@example.org", "--interests", "language models")
    assert result.exit_code == 1
    assert result.output == (f"error: cannot open the database (sqlite:///{folder / 'digest.db'}): unable to open database file "
                             f"(digest writes the database and its -wal beside it in {folder}: check DIGEST_HOME (or database_url) and its permissions)\n")


@pytest.mark.parametrize("url, backend", [("sqlit:///srv/digest.db", "sqlit"), ("mysql://digest@127.0.0.1/digest", "mysql")], ids=["typo", "mysql"])
def test_cli_init_with_a_database_other_than_sqlite_or_postgresql_says_which_two_it_takes(cli, home, url, backend):
    """A typo in the scheme, or a database digest does not support, is not a driver to install (the line said
    "for PostgreSQL: pip install 'digest[postgres]'" to both)."""
    result = cli("--database-url", url, "init")
    assert result.exit_code == 1
    assert result.output == (f"error: database_url {url}: digest works with SQLite and PostgreSQL, not {backend} (a database URL looks like "
                             "postgresql+psycopg://user:password@host:5432/name or sqlite:////path/to/digest.db)\n")
    assert not (home / "digest.toml").exists()


# --- secrets never printed, config errors one line ------------------------------------------------------

PASSWORD = "s3cret pw/x"  # a space and a slash: it shows up raw, percent-encoded and form-encoded
BAD_URLS = {
    "bad-port": "postgresql+psycopg://digest:s3cret%20pw%2Fx@127.0.0.1:notaport/digest",
    "missing-at": "postgresql+psycopg://digest:s3cret%20pw%2Fx127.0.0.1/digest",
    "double-at": "postgresql+psycopg://digest:s3cret%20pw%2Fx@@127.0.0.1:1/digest",
    "query-password": "postgresql+psycopg://digest@127.0.0.1:1/digest?password=s3cret%20pw%2Fx",
    "query-password-form-encoded": "postgresql+psycopg://digest@127.0.0.1:1/digest?sslmode=disable&password=s3cret+pw%2Fx",
    "unencoded-slash": "postgresql+psycopg://digest:s3cret pw/x@127.0.0.1:1/digest",
    "no-scheme": "digest:s3cret%20pw%2Fx@127.0.0.1/digest",
    "unknown-driver": "nosuchdb://digest:s3cret%20pw%2Fx@127.0.0.1/digest",
    "bad-query-argument": "postgresql+psycopg://digest:s3cret%20pw%2Fx@127.0.0.1:1/digest?connect_timeout=soon",
}
PASSWORD_FORMS = ("s3cret", "pw%2Fx", "pw/x")


def assert_no_password(text: str) -> None:
    assert not [form for form in PASSWORD_FORMS if form in text], text


def refused_unopened(url: str) -> bool:
    from digest.errors import StoreError
    from digest.store import open_engine

    try:
        open_engine(url, create_dir=False).dispose()
    except StoreError:
        return True
    return False


@pytest.mark.parametrize("url", BAD_URLS.values(), ids=BAD_URLS.keys())
def test_cli_never_prints_a_database_password(cli, home, url):
    env = {"DIGEST_DATABASE_URL": url}
    shown = cli("config", env=env)
    # config ends with the error every command gives a URL the store refuses unopened; others fail on connecting
    assert shown.exit_code == (1 if refused_unopened(url) else 0) and "database_url" in shown.output
    assert_no_password(shown.output)
    assert_no_password(cli("config", "--json", env=env).output)
    failed = cli("status", env=env)  # the engine cannot open: one line, never a traceback
    assert failed.exit_code == 1 and failed.output.startswith("error: ") and failed.output.count("\n") == 1, failed.output
    assert_no_password(failed.output)
    verbose = cli("-v", "status", env=env)  # -v: debug logs and the traceback, still no password
    assert verbose.exit_code == 1 and "Traceback" in verbose.output
    assert_no_password(verbose.output)


@pytest.mark.parametrize("url", BAD_URLS.values(), ids=BAD_URLS.keys())
def test_database_url_flag_refuses_a_password(cli, home, url):
    """A password on the command line is in the process list (`ps`, /proc/PID/cmdline) for every user of the machine
    while the command runs, and in the shell's history: secrets come from the environment or a file only. The flag is
    refused before anything is read or written, in one usage line that does not repeat the password."""
    for args in (("config",), ("status",), ("-v", "init")):
        result = cli("--database-url", url, *args, env={})
        assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
        assert result.output.startswith("error: invalid value for '--database-url': it holds a password") and "DIGEST_DATABASE_URL" in result.output
        assert_no_password(result.output)
    assert not (home / "digest.toml").exists() and not (home / "digest.db").exists()


def test_database_url_flag_without_a_password_still_works(cli, home, tmp_path):
    url = f"sqlite:///{tmp_path / 'other.db'}"
    assert cli("--database-url", url, "init").exit_code == 0 and (tmp_path / "other.db").exists()
    shown = cli("--database-url", "postgresql+psycopg://digest@db.example.org:5432/digest?sslmode=require", "config")
    assert "postgresql+psycopg://digest@db.example.org:5432/digest?sslmode=require  command line" in shown.output


def test_redact_url_keeps_what_is_not_secret():
    from digest.config import redact_url

    assert redact_url("postgresql+psycopg://digest:pw@db.example.org:5432/digest?sslmode=require&password=pw") == \
        "postgresql+psycopg://digest:***@db.example.org:5432/digest?sslmode=require&password=***"
    assert redact_url("sqlite:////var/lib/digest/a@b:c.db") == "sqlite:////var/lib/digest/a@b:c.db"
    assert redact_url("postgresql://[::1]:5432/digest") == "postgresql://[::1]:5432/digest"


# How each URL setting is shown (`digest config`, errors, logs): only a password is cut out.
SHOWN_URLS = {
    "sqlite-absolute": ("sqlite:////var/lib/digest/digest.db", "sqlite:////var/lib/digest/digest.db"),
    "sqlite-relative": ("sqlite:///rel.db", "sqlite:///rel.db"),
    "sqlite-one-slash": ("sqlite:/x.db", "sqlite:/x.db"),
    "sqlite-no-slash": ("sqlite:x.db", "sqlite:x.db"),
    "postgres-user": ("postgresql://user@host/db", "postgresql://user@host/db"),
    "postgres-password": ("postgresql://user:pw@host/db", "postgresql://user:***@host/db"),
    "postgres-no-scheme": ("user:pw@host/db", "user:***@host/db"),
    "redis": ("redis://localhost:6379/0", "redis://localhost:6379/0"),
    "redis-password": ("redis://:pw@localhost:6379/0", "redis://:***@localhost:6379/0"),
    "redis-query-password": ("redis:/x?password=pw", "redis:/x?password=***"),
    "memory": ("memory://", "memory://"),
}


@pytest.mark.parametrize("url,shown", SHOWN_URLS.values(), ids=SHOWN_URLS.keys())
def test_redact_url_cuts_out_only_a_password(url, shown):
    from digest.config import redact_url, url_secrets

    assert redact_url(url) == shown
    assert url_secrets(url) == (("pw",) if "***" in shown else ())  # what logs mask: the password, nothing else


@pytest.mark.parametrize("name", ["database_url", "redis_url", "web_rate_limit_storage"])
@pytest.mark.parametrize("url,shown", [SHOWN_URLS["redis"], SHOWN_URLS["redis-password"]], ids=["no-password", "password"])
def test_config_shows_a_url_setting_without_its_password(tmp_path, name, url, shown):
    assert load_settings(tmp_path, env={f"DIGEST_{name.upper()}": url}).redacted()[name] == shown


@pytest.mark.parametrize("url,meant", [
    ("sqlite:/x.db", "sqlite:////x.db"),
    ("sqlite:/var/lib/digest/digest.db", "sqlite:////var/lib/digest/digest.db"),
    ("postgresql:/db.example.org/digest", "postgresql://db.example.org/digest"),
], ids=["sqlite-one-slash", "sqlite-one-slash-deeper", "postgres-one-slash"])
def test_cli_says_what_a_url_without_slashes_meant(cli, home, url, meant):
    """SQLAlchemy cannot parse a scheme without '//' (sqlite:/x.db): every command says so in one line, with the URL as
    typed (nothing in it is a password) and the URL that was most likely meant."""
    env = {"DIGEST_DATABASE_URL": url}
    line = f"error: database_url {url} is not a database URL: '//' is missing after {url.partition(':')[0]}:, did you mean {meant}?"
    shown = cli("config", env=env)
    assert shown.exit_code == 1 and f"database_url            {url} " in shown.output and line in shown.output, shown.output
    status = cli("status", env=env)
    assert status.exit_code == 1 and status.output.startswith(line) and status.output.count("\n") == 1, status.output
    doctor = cli("doctor", env=env)
    assert doctor.exit_code == 1 and line.replace("error: ", "FAIL  config: ") in doctor.output, doctor.output


def test_log_lines_show_a_url_without_a_password_as_it_is(home, capsys):
    import logging

    from digest.log import configure_logging_lazily, log_event

    urls = [url for url, shown in SHOWN_URLS.values() if url == shown and url.startswith(("sqlite", "postgres"))]
    for url in urls:
        settings = load_settings(home, env={"DIGEST_DATABASE_URL": url, "DIGEST_REDIS_URL": "redis://localhost:6379/0"})
        configure_logging_lazily(lambda settings=settings: settings)
        log_event(logging.getLogger("digest.test"), "store-failed", logging.ERROR, url=url, redis=settings.redis_url)
    err = capsys.readouterr().err
    assert "***" not in err and all(f"url={url} redis=redis://localhost:6379/0" in err for url in urls), err


def test_log_lines_never_show_a_database_password(home, capsys):
    import logging

    from sqlalchemy.engine import make_url

    from digest.config import url_secrets
    from digest.log import configure_logging_lazily, log_event

    for url in BAD_URLS.values():
        settings = load_settings(home, env={"DIGEST_DATABASE_URL": url})
        configure_logging_lazily(lambda settings=settings: settings)
        for piece in (url, *url_secrets(url)):  # the URL, and each form of what may be its password
            log_event(logging.getLogger("digest.test"), "store-failed", logging.ERROR, url=piece)
        try:
            make_url(url).render_as_string(hide_password=False)
        except Exception as exc:  # SQLAlchemy's own message quotes what it could not read
            log_event(logging.getLogger("digest.test"), "store-failed", logging.ERROR, exc_info=exc)
    assert_no_password(capsys.readouterr().err)


def test_cli_init_on_postgresql_with_a_query_password_shows_it_redacted(cli, home, postgres_url):
    result = cli("init", env={"DIGEST_DATABASE_URL": postgres_url + "?password=s3cret%20pw%2Fx"})
    assert result.exit_code == 0, result.output
    assert "database ready: postgresql+psycopg://" in result.output and "password=***" in result.output
    assert_no_password(result.output)


@pytest.mark.parametrize("env, toml, message", [
    ({"DIGEST_SMTP_PASSWORD_FILE": "{binary}"}, "", "cannot read DIGEST_SMTP_PASSWORD_FILE="),
    ({"DIGEST_HOME": "~no-such-user-digest/home"}, None, "DIGEST_HOME (--home) '~no-such-user-digest/home': no such user's home directory"),
    ({"DIGEST_CONFIG": "~no-such-user-digest/digest.toml"}, None, "DIGEST_CONFIG '~no-such-user-digest/digest.toml': no such user's home directory"),
    ({}, 'outbox_dir = "~no-such-user-digest/outbox"\n', "invalid outbox_dir = '~no-such-user-digest/outbox' in "),
    ({}, 'outbox_dir = "a\\u0000b"\n', "invalid outbox_dir = 'a\\x00b' in "),
    ({}, "fetch_timeout = 1" + "0" * 400 + "\n", "invalid fetch_timeout = "),
    ({"DIGEST_DATABASE_URL": "sqlite:///~no-such-user-digest/digest.db"}, "", "error: cannot find the home directory in sqlite:///~no-such-user-digest/digest.db"),
], ids=["secret-file-not-text", "home-of-unknown-user", "config-of-unknown-user", "outbox-of-unknown-user", "nul-in-a-path", "float-overflow", "sqlite-path-of-unknown-user"])
def test_cli_config_errors_are_one_line(cli, home, tmp_path, env, toml, message):
    binary = tmp_path / "password.bin"
    binary.write_bytes(b"\xff\xfe\x00secret")
    env = {key: value.format(binary=binary) for key, value in env.items()}
    if toml is not None:
        (home / "digest.toml").write_text(toml, encoding="utf-8")
    result = cli("status", env=env)
    assert result.exit_code == 1 and result.output.count("\n") == 1 and "Traceback" not in result.output, result.output
    assert message in result.output and "secret" not in result.output.replace("DIGEST_SMTP_PASSWORD_FILE", "")


REDIS_URLS = {
    "bad-port": "redis://:s3cret%20pw%2Fx@127.0.0.1:notaport/0",
    "missing-at": "redis://digest:s3cret%20pw%2Fx/0",  # the password is read as a port, and quoted back
    "unknown-scheme": "rediss+nope://digest:s3cret%20pw%2Fx@127.0.0.1:1/0",
}


@pytest.mark.parametrize("url", REDIS_URLS.values(), ids=REDIS_URLS.keys())
def test_cli_never_prints_a_redis_password_and_a_bad_redis_url_is_one_line(cli, home, url):
    """Found auditing issue 9: `digest send` with send_rate kept in Redis printed a ValueError traceback without -v
    for a malformed redis_url, quoting the password when it was read as a port; `digest web` quoted it too."""
    assert cli("init").exit_code == 0
    assert cli("subscribers", "add", "ada@example.org", "--interests", "speech recognition").exit_code == 0
    assert cli("import", str(Path(__file__).parent / "fixtures" / "real" / "arxiv-rss" / "rss-cs.SD-2026-06-12.xml")).exit_code == 0
    env = {"DIGEST_REDIS_URL": url, "DIGEST_SEND_RATE": "5"}
    today = datetime.now(timezone.utc).date().isoformat()
    sent = cli("send", "--date", today, env=env)
    assert sent.exit_code == 1 and "Traceback" not in sent.output, sent.output
    assert sent.output.splitlines()[-1].startswith("error: redis_url ")
    assert_no_password(sent.output)
    assert_no_password(cli("-v", "send", "--date", today, env=env).output)
    assert_no_password(cli("config", env=env).output)
    web = cli("web", "--port", "0", env=env)  # the rate limits default to redis_url: refused before serving
    assert web.exit_code == 1 and web.output.startswith("error: redis_url ") and web.output.count("\n") == 1, web.output
    assert_no_password(web.output)


def test_cli_an_unexpected_error_shows_its_traceback_without_a_secret(cli, home, monkeypatch):
    """A bug's exception may quote a secret (a driver's message, a URL): its traceback is printed masked, then one
    error line, exit 1 (before: Python's own traceback, unmasked)."""
    import digest.cli.ops as ops

    def broken(*_args, **_kwargs):
        raise ValueError("cannot use redis://:s3cret%20pw%2Fx@127.0.0.1:1/0 with s3cret pw/x")

    monkeypatch.setattr(ops, "source_health", broken)
    assert cli("init").exit_code == 0
    result = cli("status", env={"DIGEST_REDIS_URL": "redis://:s3cret%20pw%2Fx@127.0.0.1:1/0", "DIGEST_SMTP_PASSWORD": "s3cret pw/x"})
    assert result.exit_code == 1 and "Traceback (most recent call last)" in result.output
    assert result.output.splitlines()[-1].startswith("error: unexpected ValueError: cannot use redis://:********@127.0.0.1:1/0 with ******** (a bug in digest")
    assert_no_password(result.output)


@pytest.mark.parametrize("content", ["", "  \n"], ids=["empty", "whitespace"])
@pytest.mark.parametrize("own_config", [False, True], ids=["home", "config-file"])
def test_cli_init_refuses_an_empty_secret_key_file_and_writes_nothing(cli, home, tmp_path, content, own_config):
    key_file = tmp_path / "empty.key"
    key_file.write_text(content)
    target = tmp_path / "etc" / "digest" / "digest.toml"
    args = ["--config", str(target)] if own_config else []
    result = cli(*args, "init", env={"DIGEST_SECRET_KEY_FILE": str(key_file)})
    assert result.exit_code == 1
    assert result.output == f"error: DIGEST_SECRET_KEY_FILE={key_file} is empty (write the secret_key into it, or unset DIGEST_SECRET_KEY_FILE)\n"
    assert list(home.iterdir()) == [] and not (tmp_path / "etc").exists()


@pytest.mark.parametrize("env", [{"DIGEST_SECRET_KEY": ""}, {"DIGEST_SECRET_KEY": "short"},
                                 {"DIGEST_SECRET_KEY": "change-me-to-a-long-random-string"}], ids=["empty", "short", "placeholder"])
def test_cli_init_refuses_a_secret_key_from_the_environment_no_command_could_use(cli, home, env):
    result = cli("init", env=env)
    assert result.exit_code == 1 and result.output.startswith("error: secret_key from DIGEST_SECRET_KEY is ")
    assert result.output.count("\n") == 1 and list(home.iterdir()) == []


@pytest.mark.parametrize("line, error", [
    ('database_url = "sqlite:///relative.db"', "error: database_url sqlite:///relative.db is a path relative to the current directory"),
    ('fetch_cron = "bogus"', "error: invalid fetch_cron 'bogus': expected 5 fields"),
    ('fetch_tz = "Mars/Base"', "error: invalid fetch_tz: unknown time zone 'Mars/Base'"),
    ('base_url = "not a url"', "error: base_url 'not a url' is not an absolute http(s) URL"),
    ('from_address = "bad address"', "error: from_address 'bad address' is not a usable email address"),
    ('reply_to = "nobody"', "error: reply_to 'nobody' is not a usable email address"),
    ('list_id = "a b<>"', "error: invalid list_id = 'a b<>' in "),
], ids=["relative-sqlite", "fetch-cron", "fetch-tz", "base-url", "from-address", "reply-to", "list-id"])
def test_cli_config_ends_with_the_error_a_command_using_the_setting_gives(cli, home, line, error):
    (home / "digest.toml").write_text(line + "\n")
    result = cli("config")
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("home ") and any(row.startswith("web_request_timeout ") for row in lines)
    assert [row for row in lines if row.startswith("error: ")] == [lines[-1]] and lines[-1].startswith(error), result.output


def test_cli_config_lists_every_problem_one_line_each(cli, home):
    (home / "digest.toml").write_text('fetch_cron = "bogus"\nfetch_tz = "Mars/Base"\nbase_url = "x"\nfrom_address = "y"\nsmtp_port = "z"\n')
    errors = [row for row in cli("config").output.splitlines() if row.startswith("error: ")]
    assert [row.split()[1:3] for row in errors] == [
        ["invalid", "smtp_port"], ["invalid", "fetch_tz:"], ["invalid", "fetch_cron"], ["from_address", "'y'"], ["base_url", "'x'"]]


@pytest.mark.parametrize(("env", "error"), [
    ({"DIGEST_SECRET_KEY": "k3y-x"}, "error: secret_key is too short: 5 characters, at least 16"),
    ({"DIGEST_SECRET_KEY": ""}, "error: DIGEST_SECRET_KEY is set but empty, and would override secret_key from "),
], ids=["too-short", "empty-over-the-file"])
def test_cli_config_reports_a_secret_key_the_commands_refuse(cli, home, env, error):
    """An admin's `digest config` said nothing of a key every command refuses (an empty DIGEST_SECRET_KEY left in
    /etc/digest/digest.env silently replaced digest.toml's key: preview then said "not set")."""
    (home / "digest.toml").write_text('secret_key = "a-key-of-at-least-sixteen-characters"\n')
    result = cli("config", env=env)
    assert result.exit_code == 1
    assert [row for row in result.output.splitlines() if row.startswith("error: ")][0].startswith(error), result.output


def test_cli_serve_refuses_to_start_without_a_usable_secret_key(cli, home):
    """The daemon started and then failed on every tick once someone was due (event=tick-failed ... not set)."""
    result = cli("serve", "--tick-seconds", "1", env={"DIGEST_SECRET_KEY": "k3y-x"})
    assert result.exit_code == 1 and result.output.startswith("error: secret_key is too short"), result.output


@pytest.mark.parametrize("value, kept", [
    ("papers.example.org", "papers.example.org"),
    ("<papers.example.org>", "papers.example.org"),
    ("weekly+digest.lab.localhost", "weekly+digest.lab.localhost"),
    ("", "digest.example.org"),  # not set: digest.<the From domain>
], ids=["bare", "in-angle-brackets", "atext", "default"])
def test_load_settings_keeps_an_rfc_2919_list_id(tmp_path, value, kept):
    settings = load_settings(tmp_path, env={"DIGEST_LIST_ID": value, "DIGEST_FROM_ADDRESS": "digest@example.org"})
    assert settings.list_id == kept


@pytest.mark.parametrize("value", ["a b<>", "papers", "papers..example.org", ".papers.example.org", "papers.example.org.",
                                   "<papers.example.org", "pap\u00e9rs.example.org", "a(b).example.org", "x." * 130 + "org"])
def test_load_settings_refuses_a_list_id_that_is_not_rfc_2919(tmp_path, value):
    with pytest.raises(ConfigError, match=r"^invalid list_id = .* in DIGEST_LIST_ID: expected a list id such as papers\.example\.org"):
        load_settings(tmp_path, env={"DIGEST_LIST_ID": value})


def test_cli_config_masks_only_secrets_of_8_characters_or_more_in_its_errors(cli, home):
    """`digest config` masked a secret of any length in its error lines, the word included: with
    DIGEST_SECRET_KEY=short it printed "secret_key is too ********". Its lines follow the rule of every other error
    line (a value under 8 characters is not masked); a longer one is masked wherever a message quotes it."""
    result = cli("config", env={"DIGEST_SECRET_KEY": "short", "DIGEST_SMTP_PASSWORD": "hunter2-is-long",
                                "DIGEST_FROM_ADDRESS": "hunter2-is-long"})
    errors = [row for row in result.output.splitlines() if row.startswith("error: ")]
    assert result.exit_code == 1
    assert any(row.startswith("error: secret_key is too short: 5 characters") for row in errors), result.output
    assert any(row.startswith("error: from_address '********'") for row in errors), result.output
    assert not [row for row in errors if "hunter2-is-long" in row]  # (the table shows from_address: not a secret)
