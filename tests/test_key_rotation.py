"""Rotating secret_key: previous_secret_keys from the config file or DIGEST_PREVIOUS_SECRET_KEYS, checked by the rule
secret_key is (doctor, config, `digest web`), and never shown or logged. The links and forms themselves are tested
over HTTP in tests/test_web_security.py, the tokens in tests/test_tokens.py."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from test_doctor import lines_of

from digest.config import load_settings
from digest.errors import ConfigError
from digest.log import _StderrHandler, configure_logging_lazily, enable_event_logging, log_event

KEY = "the-current-secret-key-0123456789"
OLD = ["the-first-old-secret-key-0123456", "the-second-old-secret-key-012345"]


def test_previous_secret_keys_come_from_the_config_file_a_file_or_the_environment(tmp_path: Path) -> None:
    (tmp_path / "digest.toml").write_text(f'previous_secret_keys = ["{OLD[0]}", " {OLD[1]} "]\n')
    assert load_settings(tmp_path, env={}).previous_secret_keys == tuple(OLD)
    assert load_settings(tmp_path, env={"DIGEST_PREVIOUS_SECRET_KEYS": f"{OLD[1]}, ,{OLD[0]}"}).previous_secret_keys == (OLD[1], OLD[0])
    keys = tmp_path / "old-keys"
    keys.write_text(f"{OLD[0]}\n{OLD[1]}\n")
    assert load_settings(tmp_path, env={"DIGEST_PREVIOUS_SECRET_KEYS_FILE": str(keys)}).previous_secret_keys == tuple(OLD)
    assert load_settings(None, env={"DIGEST_HOME": str(tmp_path / "x")}).previous_secret_keys == ()
    (tmp_path / "digest.toml").write_text("previous_secret_keys = [12345678901234567890]\n")
    with pytest.raises(ConfigError, match=r"invalid previous_secret_keys = \*+ in .*: expected a list of strings") as info:
        load_settings(tmp_path, env={})
    assert "1234567890" not in str(info.value)


def test_previous_secret_keys_are_never_shown_or_logged(cli, home: Path, capsys) -> None:
    env = {"DIGEST_SECRET_KEY": KEY, "DIGEST_PREVIOUS_SECRET_KEYS": ",".join(OLD)}
    shown = cli("config", env=env)
    assert shown.exit_code == 0 and "previous_secret_keys" in shown.output
    assert not any(key in shown.output for key in OLD)
    settings = load_settings(home, env=env)
    configure_logging_lazily(lambda: settings)
    enable_event_logging()
    try:
        log_event(logging.getLogger("digest.test"), "leak", first=OLD[0], second=f"x{OLD[1]}x")
    finally:
        root = logging.getLogger()
        for handler in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
            root.removeHandler(handler)
    err = capsys.readouterr().err
    assert not any(key in err for key in OLD) and err.count("********") == 2


@pytest.mark.parametrize(("old", "problem"), [
    ("abcde", "too short: 5 characters, at least 16"),
    ("change-me-to-a-long-random-string", "the placeholder from digest's documentation, known to everyone"),
    ("demo-only-secret-key-not-for-real-use", "the demo's key, known to everyone"),
], ids=["short", "docs-placeholder", "demo"])
def test_doctor_and_config_hold_previous_keys_to_the_rule_of_secret_key(cli, home: Path, old: str, problem: str) -> None:
    env = {"DIGEST_SECRET_KEY": KEY, "DIGEST_PREVIOUS_SECRET_KEYS": f"{OLD[0]},{old}", "DIGEST_FROM_ADDRESS": "digest@papers.example.net"}
    doctor = cli("doctor", env=env)
    line = lines_of(doctor.output)["previous_secret_keys"]
    assert line.startswith(f"FAIL previous_secret_keys: key 2 of 2 is {problem}") and old not in line.replace("previous_secret_keys", "")
    assert lines_of(doctor.output)["secret_key"].startswith("ok secret_key")
    if old != "demo-only-secret-key-not-for-real-use":  # the demo's key is long enough to sign: only the doctor refuses it
        config = cli("config", env=env)
        assert config.exit_code == 1 and f"error: previous_secret_keys holds a key that is {problem}" in config.output
        web = cli("web", "--port", "0", env=env)
        assert web.exit_code == 1 and web.output.startswith(f"error: previous_secret_keys holds a key that is {problem}")
    good = cli("doctor", env={**env, "DIGEST_PREVIOUS_SECRET_KEYS": ",".join(OLD)})
    assert lines_of(good.output)["previous_secret_keys"] == "ok previous_secret_keys: 2 older keys still verify links and forms"
