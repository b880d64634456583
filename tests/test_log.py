"""Log lines: one per event, key=value or JSON, on stderr; secrets never written; the CLI configures it lazily."""

from __future__ import annotations

import json
import logging

import pytest

from digest.config import load_settings
from digest.log import _StderrHandler, configure_logging_lazily, echo_events, enable_event_logging, log_event


@pytest.fixture(autouse=True)
def clean_root_logger():
    yield
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(handler)


def configure_logging(settings) -> None:
    """Logging as `digest serve` has it: every event at settings.log_level on stderr."""
    configure_logging_lazily(lambda: settings)
    enable_event_logging()


def lines_of(capsys) -> list[str]:
    return capsys.readouterr().err.splitlines()


def test_log_event_text_is_one_key_value_line(home, capsys):
    configure_logging(load_settings(home, env={}))
    log_event(logging.getLogger("digest.test"), "fetched", source="arxiv:cs.LG", papers=3, error="HTTP 500\nretrying", edition="2025-06-15")
    [line] = lines_of(capsys)
    ts, rest = line.split(" ", 1)
    assert ts.endswith("Z") and "T" in ts
    assert rest == 'level=info logger=digest.test event=fetched source=arxiv:cs.LG papers=3 error="HTTP 500\\nretrying" edition=2025-06-15'


def test_log_event_json_lines(home, capsys):
    configure_logging(load_settings(home, env={}, overrides={"log_format": "json"}))
    log = logging.getLogger("digest.test")
    log_event(log, "sent", subscriber="ada@example.org", edition="2025-06-15")
    log_event(log, "failed", logging.WARNING, subscriber="bob@example.org", edition="2025-06-15", error="550 no such user", bounces=1)
    logging.getLogger("waitress").warning("Task queue depth is %d", 4)  # a library's own line
    first, second, third = (json.loads(line) for line in lines_of(capsys))
    assert {k: first[k] for k in ("level", "logger", "event", "subscriber", "edition")} == {
        "level": "info", "logger": "digest.test", "event": "sent", "subscriber": "ada@example.org", "edition": "2025-06-15"}
    assert second["event"] == "failed" and second["level"] == "warning" and second["error"] == "550 no such user" and second["bounces"] == 1
    assert third == {"ts": third["ts"], "level": "warning", "logger": "waitress", "msg": "Task queue depth is 4"}


def test_a_library_line_is_its_message_as_msg(home, capsys):
    configure_logging(load_settings(home, env={}))
    logging.getLogger("waitress").warning("serving on %s", "http://127.0.0.1:8080")
    [line] = lines_of(capsys)
    assert line.split(" ", 1)[1] == 'level=warning logger=waitress msg="serving on http://127.0.0.1:8080"'


def test_log_level_filters(home, capsys):
    configure_logging(load_settings(home, env={}, overrides={"log_level": "warning"}))
    log = logging.getLogger("digest.test")
    log_event(log, "quiet")
    log_event(log, "loud", logging.WARNING)
    assert [line.split("event=")[1] for line in lines_of(capsys)] == ["loud"]


def test_secrets_never_logged(home, capsys):
    settings = load_settings(home, env={"DIGEST_SMTP_PASSWORD": "hunter2hunter2", "DIGEST_SECRET_KEY": "s3cret-signing-key",
                                        "DIGEST_DATABASE_URL": "postgresql+psycopg://digest:dbpass99@db/digest"})
    configure_logging(settings)
    log = logging.getLogger("digest.test")
    log_event(log, "login", error="535 auth failed for digest:hunter2hunter2")
    logging.getLogger("smtplib").warning("reply: %s", "535 auth failed for digest:hunter2hunter2")  # a library's line too
    log_event(log, "config", password="anything", url="postgresql+psycopg://digest:dbpass99@db/digest", key="s3cret-signing-key")
    err = capsys.readouterr().err
    for secret in ("hunter2hunter2", "s3cret-signing-key", "dbpass99", "anything"):
        assert secret not in err
    assert err.count("********") == 5


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_secrets_that_need_escaping_are_still_masked(home, capsys, log_format):
    """A secret holding a quote, a backslash or a control character is written escaped (logfmt and JSON quote their
    values), and was masked only where it appeared as it is: the escaped spelling reached the log whole."""
    password, key = 'hunter"2\\hunter2', "s3cret\tsigning\\key"
    settings = load_settings(home, env={"DIGEST_SMTP_PASSWORD": password, "DIGEST_SECRET_KEY": key, "DIGEST_LOG_FORMAT": log_format})
    configure_logging(settings)
    log_event(logging.getLogger("digest.test"), "login", logging.ERROR, error=f"535 auth failed for digest:{password}", note=f"key {key}")
    logging.getLogger("smtplib").warning("reply: %s", f"535 auth failed for digest:{password}")  # a library's line too
    try:
        raise RuntimeError(f"a bug quoting {key}")
    except RuntimeError as exc:
        log_event(logging.getLogger("digest.test"), "crashed", logging.ERROR, exc_info=exc)
    err = capsys.readouterr().err
    escaped = {form for secret in (password, key) for form in (secret, json.dumps(secret)[1:-1], secret.encode("unicode_escape").decode())}
    assert not [form for form in escaped if form in err], err
    assert err.count("********") == 5


def test_library_lines_never_show_the_token_of_a_link(home, capsys):
    """waitress names the path it was serving when a client goes away (info, shown with -v) or the app raises (error):
    the path of a reader's link is its token, which acts for them; the log says <token> instead, as digest's own
    request lines do."""
    from digest.tokens import make_token

    configure_logging(load_settings(home, env={"DIGEST_LOG_LEVEL": "debug"}))
    token = make_token("test-secret-key-0123456789abcdef", "preferences", 7, 2)
    waitress = logging.getLogger("waitress")
    waitress.info(f"Client disconnected while serving /preferences/{token}")  # the text of waitress's own calls
    waitress.error(f"Exception while serving /digest/feedback/{token}/12/like")
    err = capsys.readouterr().err
    assert token not in err and token.rpartition(".")[2] not in err
    assert 'msg="Client disconnected while serving /preferences/<token>"' in err
    assert 'msg="Exception while serving /digest/feedback/<token>/12/like"' in err


def test_lazy_logging_waits_for_enable_and_survives_a_bad_config(home, capsys):
    def broken():
        raise RuntimeError("bad digest.toml")

    configure_logging_lazily(broken, "json", None)
    log = logging.getLogger("digest.test")
    log_event(log, "hidden")  # info: only warnings pass until a command enables events
    log_event(log, "shown", logging.WARNING)
    enable_event_logging()
    log_event(log, "now-shown")
    assert [json.loads(line)["event"] for line in lines_of(capsys)] == ["shown", "now-shown"]


@pytest.mark.parametrize("verbose", [False, True], ids=["terminal", "verbose"])
def test_an_event_the_command_prints_itself_is_not_logged_twice(home, capsys, verbose):
    """`digest fetch` prints `NAME: error: ...` for a failed source; its warning (for the daemon's alerting) would
    repeat it at the terminal. Other warnings still pass, and -v shows everything."""
    settings = load_settings(home, env={})
    configure_logging_lazily(lambda: settings, "text", "debug" if verbose else None)
    echo_events("fetched")
    log = logging.getLogger("digest.test")
    log_event(log, "fetched", logging.WARNING, source="broken", status="error")
    log_event(log, "entry-skipped", logging.WARNING, source="broken")
    shown = [line.split("event=")[1].split()[0] for line in lines_of(capsys)]
    assert shown == (["fetched", "entry-skipped"] if verbose else ["entry-skipped"])


def test_cli_help_does_not_load_a_broken_config(cli, home):
    (home / "digest.toml").write_text("nonsense = 1\n")
    result = cli("status", "--help")
    assert result.exit_code == 0 and "--check" in result.output
    result = cli("status")
    assert result.exit_code == 1 and "unknown setting 'nonsense'" in result.output
