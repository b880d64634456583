"""`digest doctor` against real local servers: an SMTP server with STARTTLS and AUTH (aiosmtpd), a feed server for
the sources, `digest web`'s own server for base_url, a SQLite file. A live setup passes every check and the test
email arrives; each broken part is the one FAIL line, with what to do, and the exit status is 1."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest
from smtp_server import start_smtp_server
from web_server import serve_web

SENDER = "papers@digest-lab.net"
KEY = "a-long-random-secret-key-for-the-doctor-tests"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def lines_of(output: str) -> dict[str, str]:
    """{check name: its line} for the doctor's one line per check."""
    found = {}
    for line in output.splitlines():
        word, _, rest = line.partition(" ")
        if word in ("ok", "FAIL", "skip"):
            name = rest.strip().split(": ", 1)[0]
            found[name] = f"{word} {rest.strip()}"
    return found


@pytest.fixture
def live(cli, home: Path, feed_server, smtp_tls_server, monkeypatch: pytest.MonkeyPatch):
    """A working setup: digest web on a free port (base_url), two sources on the feed server, SMTP with STARTTLS and
    a login; returns (env for the CLI, the site, the SMTP server)."""
    monkeypatch.setenv("SSL_CERT_FILE", str(smtp_tls_server.cert_path))  # trust the test server's own certificate
    with serve_web(home) as site:  # also puts a migrated SQLite file in home
        env = {
            "DIGEST_SECRET_KEY": KEY, "DIGEST_FROM_ADDRESS": SENDER, "DIGEST_BASE_URL": site.base_url,
            "DIGEST_SMTP_HOST": smtp_tls_server.host, "DIGEST_SMTP_PORT": str(smtp_tls_server.port),
            "DIGEST_SMTP_SECURITY": "starttls", "DIGEST_SMTP_USER": "user", "DIGEST_SMTP_PASSWORD": "secret-pass",
        }
        assert cli("sources", "add", feed_server.url("files/real/arxiv-rss/rss-cs.SD-2026-06-12.xml"), "--kind", "arxiv-rss", "--name", "sd", env=env).exit_code == 0
        assert cli("sources", "add", feed_server.url("files/real/hf-daily/daily_papers-date-2026-08-21-reindented.json"), "--kind", "hf-daily", "--name", "hf", env=env).exit_code == 0
        yield env, site, smtp_tls_server


def test_doctor_passes_a_live_setup_and_sends_the_test_email(cli, live) -> None:
    env, site, smtp = live
    result = cli("doctor", "--to", "me@digest-lab.net", env=env)
    assert result.exit_code == 0, result.output
    checks = lines_of(result.output)
    assert list(checks) == ["config", "secret_key", "from_address", "database", "files", "source sd", "source hf", "smtp connect", "smtp tls",
                            "smtp login", "base_url", "test email"]
    assert all(line.startswith("ok ") for line in checks.values()), result.output
    assert checks["source sd"].startswith("ok source sd: HTTP 200, 23 entries")
    assert "STARTTLS, TLSv1." in checks["smtp tls"] and checks["smtp login"] == "ok smtp login: logged in as user"
    assert checks["base_url"] == f"ok base_url: {site.base_url}/healthz answered ok"
    assert result.output.endswith("all checks passed\n")
    [received] = smtp.messages  # the test email, and nothing else: no subscriber is sent anything
    assert received.rcpt_tos == ["me@digest-lab.net"] and received.mail_from == SENDER
    assert "digest doctor" in str(received.parsed["Subject"])
    assert "secret-pass" not in result.output and KEY not in result.output
    # Nothing was written: the sources were fetched, not stored.
    status = cli("status", "--json", env=env)
    assert '"last_success_at": null' in status.output


def test_doctor_without_to_skips_the_test_email_and_sends_nothing(cli, live) -> None:
    env, _, smtp = live
    result = cli("doctor", env=env)
    assert result.exit_code == 0, result.output
    assert lines_of(result.output)["test email"].startswith("skip test email: give --to ADDRESS")
    assert smtp.messages == [] and smtp.logins == ["user"]


@pytest.mark.parametrize("broken", ["password", "no-starttls", "refused", "source-404", "base-url-down", "placeholder-sender", "short-key"])
def test_doctor_names_the_broken_part_and_what_to_do(cli, live, broken: str, feed_server) -> None:
    env, _, _ = live
    expected = {
        "password": ("smtp login", "refused the login of 'user': 535", "check smtp_user and smtp_password"),
        "no-starttls": ("smtp tls", "does not offer STARTTLS", 'smtp_security = "tls"'),
        "refused": ("smtp connect", "connection refused", "check smtp_host and smtp_port"),
        "source-404": ("source gone-feed", "HTTP 404", "check the URL"),
        "base-url-down": ("base_url", "cannot reach", "start `digest web`"),
        "placeholder-sender": ("from_address", "digest@example.org is a placeholder", "your own domain"),
        "short-key": ("secret_key", "too short: 8 characters, at least 16", "DIGEST_SECRET_KEY_FILE"),
    }[broken]
    plain = None
    if broken == "password":
        env["DIGEST_SMTP_PASSWORD"] = "wrong"
    elif broken == "no-starttls":
        plain = start_smtp_server()
        server = plain.__enter__()
        env.update(DIGEST_SMTP_PORT=str(server.port))
    elif broken == "refused":
        env["DIGEST_SMTP_PORT"] = str(free_port())
    elif broken == "source-404":
        assert cli("sources", "add", feed_server.url("files/no-such-feed.xml"), "--name", "gone-feed", env=env).exit_code == 0
    elif broken == "base-url-down":
        env["DIGEST_BASE_URL"] = f"http://127.0.0.1:{free_port()}"
    elif broken == "placeholder-sender":
        env["DIGEST_FROM_ADDRESS"] = "digest@example.org"
    elif broken == "short-key":
        env["DIGEST_SECRET_KEY"] = "12345678"
    try:
        result = cli("doctor", "--to", "me@digest-lab.net", env=env)
    finally:
        if plain is not None:
            plain.__exit__(None, None, None)
    assert result.exit_code == 1, result.output
    checks = lines_of(result.output)
    name, what, fix = expected
    failed = {n: line for n, line in checks.items() if line.startswith("FAIL")}
    assert name in failed, result.output
    assert what in failed[name] and fix in failed[name], failed[name]
    others = set(failed) - {name, "test email"}  # a broken SMTP server fails the test email too
    assert others == set(), result.output
    assert result.output.splitlines()[-1].startswith(f"{len(failed)} problem")
    assert "secret-pass" not in result.output and "wrong" not in result.output


def test_doctor_on_a_home_without_a_database_creates_nothing(cli, home: Path) -> None:
    result = cli("doctor", env={"DIGEST_SECRET_KEY": KEY, "DIGEST_FROM_ADDRESS": SENDER, "DIGEST_BASE_URL": f"http://127.0.0.1:{free_port()}"})
    assert result.exit_code == 1
    checks = lines_of(result.output)
    assert checks["database"].startswith(f"FAIL database: {home / 'digest.db'} does not exist (run `digest init`")
    assert checks["sources"] == "skip sources: the database cannot be read"
    assert checks["smtp"].startswith("FAIL smtp: smtp_host is not set: emails are written to the outbox")
    assert sorted(p.name for p in home.iterdir()) == []  # no database, no outbox made by looking


def test_doctor_names_the_config_file_digest_config_names_though_it_sets_nothing(cli, home: Path, tmp_path: Path) -> None:
    """The units' DIGEST_CONFIG=/etc/digest/digest.toml, installed from the example with every key commented out: the
    file read is named, not "no config file (DIGEST_HOME/digest.toml does not exist)", as if DIGEST_CONFIG were
    not read."""
    etc = tmp_path / "etc" / "digest.toml"
    etc.parent.mkdir()
    shutil.copy(Path(__file__).resolve().parent.parent / "deploy" / "digest.toml.example", etc)
    result = cli("doctor", env={"DIGEST_CONFIG": str(etc), "DIGEST_SECRET_KEY": KEY})
    assert lines_of(result.output)["config"] == f"ok config: {etc} and 1 DIGEST_* variable"


def test_doctor_with_a_bad_config_stops_after_saying_what_is_wrong(cli, home: Path) -> None:
    (home / "digest.toml").write_text('smtp_prot = 587\nsend_rate = "fast"\n', encoding="utf-8")
    result = cli("doctor")
    assert result.exit_code == 1
    assert [line.split(":")[0] for line in result.output.splitlines()] == ["FAIL  config", "FAIL  config", "2 problems"]
    assert "did you mean smtp_port?" in result.output


def test_doctor_finds_an_outdated_schema_and_a_readable_secret_file(cli, home: Path) -> None:
    import sqlite3

    assert cli("init").exit_code == 0
    (home / "digest.toml").chmod(0o644)
    with sqlite3.connect(home / "digest.db") as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0004'")
    result = cli("doctor", env={"DIGEST_FROM_ADDRESS": SENDER})
    checks = lines_of(result.output)
    assert checks["secret_key"].startswith(f"FAIL secret_key: {home / 'digest.toml'} holds it and others can read that file (chmod 600")
    assert checks["database"].endswith("the schema is not at this version's migrations (run `digest init`: it upgrades in place)")
    with sqlite3.connect(home / "digest.db") as conn:  # and doctor did not upgrade it
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone() == ("0004",)


def test_doctor_names_a_schema_newer_than_this_digest(cli, home: Path) -> None:
    """A newer digest on another host upgraded the database: `digest init` cannot help, upgrading digest can."""
    import sqlite3

    from digest.store import SCHEMA_REVISION

    assert cli("init").exit_code == 0
    with sqlite3.connect(home / "digest.db") as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0099'")
    checks = lines_of(cli("doctor", env={"DIGEST_FROM_ADDRESS": SENDER}).output)
    assert checks["database"].endswith(f"the schema is at revision 0099, newer than this digest knows (up to {SCHEMA_REVISION}) (install the digest version that upgraded it)")


@pytest.mark.parametrize("mode, ok", [(0o644, False), (0o640, False), (0o600, True)], ids=["world-readable", "group-readable", "private"])
def test_doctor_checks_the_permissions_of_the_secret_key_file(cli, home: Path, tmp_path: Path, mode: int, ok: bool) -> None:
    key_file = tmp_path / "long.key"
    key_file.write_text(KEY + "\n")
    key_file.chmod(mode)
    result = cli("doctor", env={"DIGEST_SECRET_KEY_FILE": str(key_file), "DIGEST_FROM_ADDRESS": SENDER})
    line = lines_of(result.output)["secret_key"]
    if ok:
        assert line == f"ok secret_key: {len(KEY)} characters, from DIGEST_SECRET_KEY_FILE"
    else:  # as a digest.toml holding the key: a FAIL, with the chmod to run
        assert line == f"FAIL secret_key: {key_file} (DIGEST_SECRET_KEY_FILE) holds it and others can read that file (chmod 600 {key_file})"


@pytest.mark.parametrize("key, problem", [
    ("short", "too short: 5 characters, at least 16"),
    ("change-me-to-a-long-random-string", "the placeholder from digest's documentation, known to everyone"),
], ids=["short", "docs-placeholder"])
def test_doctor_and_the_commands_that_sign_links_refuse_a_key_by_one_rule(cli, home: Path, key: str, problem: str) -> None:
    assert cli("subscribers", "add", "ada@example.org", "--interests", "speech").exit_code == 0
    checks = lines_of(cli("doctor", env={"DIGEST_SECRET_KEY": key, "DIGEST_FROM_ADDRESS": SENDER}).output)
    assert checks["secret_key"].startswith(f"FAIL secret_key: {problem} (set DIGEST_SECRET_KEY_FILE")
    preview = cli("preview", "ada@example.org", env={"DIGEST_SECRET_KEY": key})
    assert preview.exit_code == 1 and preview.output.startswith(f"error: secret_key is {problem} (set DIGEST_SECRET_KEY_FILE")
    assert preview.output.count("\n") == 1


def test_doctor_reports_each_setting_a_command_would_refuse(cli, home: Path) -> None:
    (home / "digest.toml").write_text('fetch_cron = "bogus"\nbase_url = "not a url"\nfrom_address = "bad address"\n')
    result = cli("doctor", env={"DIGEST_SECRET_KEY": KEY})
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert [line.split(":")[0] for line in lines] == ["FAIL  config"] * 3 + ["3 problems"], result.output
    assert "invalid fetch_cron 'bogus'" in lines[0] and "base_url 'not a url'" in result.output and "from_address 'bad address'" in result.output


@pytest.mark.parametrize("home_mode, file_mode, ok", [
    (0o755, 0o644, False), (0o750, 0o640, False), (0o700, 0o644, True), (0o755, 0o600, True),
], ids=["world-readable", "group-readable", "readable-files-in-a-private-home", "private-files"])
def test_doctor_finds_a_database_and_emails_other_users_can_read(cli, home: Path, home_mode: int, file_mode: int, ok: bool) -> None:
    # An install made before digest set its own modes: a 0755 home under /tmp (tmp_path's own directories are
    # 0700 and would hide every file below them), its database and emails as a 022 umask made them.
    exposed = Path(tempfile.mkdtemp(prefix="digest-doctor-"))
    try:
        assert cli("--home", str(exposed), "demo").exit_code == 0
        emails = sorted((exposed / "outbox").glob("*.eml"))
        assert emails
        for path in [exposed / "digest.db", *emails]:
            path.chmod(file_mode)
        for directory in (exposed, exposed / "outbox"):
            directory.chmod(home_mode)
        env = {"DIGEST_HOME": str(exposed), "DIGEST_SECRET_KEY": KEY, "DIGEST_FROM_ADDRESS": SENDER}
        line = lines_of(cli("doctor", env=env).output)["files"]
        if ok:
            assert line == f"ok files: the database and the outbox's {len(emails)} emails readable by their owner alone"
            return
        assert line == (f"FAIL files: other users can read digest.db, {len(emails)} of the outbox's emails (subscribers' addresses "
                        f"and their signed links): chmod -R go= {exposed}")
        subprocess.run(["chmod", "-R", "go=", str(exposed)], check=True)  # the fix it names
        assert lines_of(cli("doctor", env=env).output)["files"].startswith("ok files: ")
    finally:
        shutil.rmtree(exposed)
