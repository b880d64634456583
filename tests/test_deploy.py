"""deploy/: the systemd units pass `systemd-analyze verify`, every directive is explained, the example
config is exactly what `digest init` writes, and the cron and env examples say what the docs say."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from digest.config import OPTIONS, load_settings, render_config_file
from digest.errors import ConfigError

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
UNITS = ("digest.service", "digest.timer", "digest-serve.service", "digest-web.service", "digest-worker@.service", "digest-worker@.timer",
         "digest-backup.service", "digest-backup.timer")
SERVICES = [u for u in UNITS if u.endswith(".service")]
INSTALLED = "/usr/local/bin/digest"
HARDENING = ("NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes", "PrivateDevices=yes",
             "ProtectKernelTunables=yes", "ProtectControlGroups=yes", "RestrictAddressFamilies=", "LockPersonality=yes",
             "MemoryDenyWriteExecute=yes", "DynamicUser=yes", "StateDirectory=digest", "Environment=DIGEST_HOME=/var/lib/digest",
             "EnvironmentFile=")


def directives(text: str) -> list[tuple[int, str]]:
    return [(n, line) for n, line in enumerate(text.splitlines()) if line and not line.startswith(("#", "["))]


def test_toml_example_is_render_config_file():
    # Regenerate with: python -c "from digest.config import render_config_file as r; open('deploy/digest.toml.example','w').write(r())"
    text = (DEPLOY / "digest.toml.example").read_text(encoding="utf-8")
    assert text == render_config_file()
    for opt in OPTIONS:
        assert f"# {opt.name} =" in text


@pytest.mark.parametrize("unit", UNITS)
def test_unit_every_directive_has_a_comment(unit):
    lines = (DEPLOY / unit).read_text(encoding="utf-8").splitlines()
    for n, line in directives("\n".join(lines)):
        assert lines[n - 1].startswith("# "), f"{unit}:{n + 1} {line!r} has no comment line above it"


@pytest.mark.parametrize("unit", SERVICES)
def test_unit_runs_hardened_with_state_directory(unit):
    text = (DEPLOY / unit).read_text(encoding="utf-8")
    for directive in HARDENING:
        assert f"\n{directive}" in text, f"{unit} lacks {directive}"
    assert f"ExecStart={INSTALLED} " in text


def test_units_run_and_serve_share_the_job_and_the_timer_is_persistent():
    assert "ExecStart=/usr/local/bin/digest run\n" in (DEPLOY / "digest.service").read_text()
    serve = (DEPLOY / "digest-serve.service").read_text()
    assert "ExecStart=/usr/local/bin/digest serve\n" in serve and "\nRestart=on-failure\n" in serve
    assert "ExecStart=/usr/local/bin/digest web --trusted-proxy 127.0.0.1\n" in (DEPLOY / "digest-web.service").read_text()
    timer = (DEPLOY / "digest.timer").read_text()
    assert "\nOnCalendar=*:0/15\n" in timer and "\nPersistent=true\n" in timer and "\nUnit=digest.service\n" in timer


def test_units_pass_systemd_analyze_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd; .ci/run does)")
    digest = shutil.which("digest")
    if digest is None:
        pytest.skip("the digest command is not installed (pip install -e .)")
    # verify needs ExecStart's binary to exist: point the units at the digest this test environment installed.
    for unit in UNITS:
        text = (DEPLOY / unit).read_text(encoding="utf-8")
        (tmp_path / unit).write_text(text.replace(INSTALLED, digest), encoding="utf-8")
    result = subprocess.run([analyze, "verify", *(str(tmp_path / u) for u in UNITS)], capture_output=True, text=True, timeout=60)
    problems = [line for line in (result.stdout + result.stderr).splitlines() if str(tmp_path) in line or "digest" in line]
    assert result.returncode == 0 and not problems, result.stdout + result.stderr


def test_crontab_example_runs_every_quarter_hour():
    lines = [line for line in (DEPLOY / "crontab.example").read_text().splitlines() if line and not line.startswith("#") and "=" not in line.split()[0]]
    schedules = {" ".join(line.split()[:5]): " ".join(line.split()[5:]) for line in lines}
    assert schedules["*/15 * * * *"].startswith(f"{INSTALLED} run")
    assert any("status --check" in command for command in schedules.values())


def test_env_example_names_the_secrets_without_setting_them(tmp_path: Path):
    """Installed as shipped, the file sets nothing: an active `DIGEST_SECRET_KEY=` line overrode digest.toml's key
    with an empty one (every link then failed); now such a line is an error, and the example has none."""
    text = (DEPLOY / "digest.env.example").read_text()
    assert "\n# DIGEST_SMTP_PASSWORD=\n" in text and "\n# DIGEST_SECRET_KEY=\n" in text
    active = dict(line.split("=", 1) for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))
    assert active == {}
    (tmp_path / "digest.toml").write_text('secret_key = "a-key-of-at-least-sixteen-characters"\n')
    with pytest.raises(ConfigError, match=r"DIGEST_SECRET_KEY is set but empty, and would override secret_key from .*digest.toml"):
        load_settings(str(tmp_path), env={"DIGEST_SECRET_KEY": ""})
    assert load_settings(str(tmp_path), env={"DIGEST_SMTP_PASSWORD": ""}).smtp_password == ""  # nothing overridden: allowed
    assert "EnvironmentFile=-/etc/digest/digest.env" in (DEPLOY / "digest-serve.service").read_text()


def test_worker_units_run_digest_worker_per_instance():
    service = (DEPLOY / "digest-worker@.service").read_text()
    assert "ExecStart=/usr/local/bin/digest worker\n" in service and "\nType=oneshot\n" in service
    timer = (DEPLOY / "digest-worker@.timer").read_text()
    assert "\nUnit=digest-worker@%i.service\n" in timer and "\nPersistent=true\n" in timer


@pytest.mark.parametrize("unit", ["digest.service", "digest-worker@.service"])
def test_one_shot_units_count_the_lock_taken_as_success(unit):
    """A timer's run that meets the daemon (or another worker on SQLite) exits EXIT_LOCKED having done nothing:
    not a failed unit."""
    from digest.cli import EXIT_LOCKED

    assert EXIT_LOCKED == 75  # EX_TEMPFAIL, documented in docs/deployment.md and docs/troubleshooting.md
    assert f"SuccessExitStatus={EXIT_LOCKED}" in (DEPLOY / unit).read_text().splitlines()


def test_crontab_example_sends_the_runs_stdout_nowhere():
    """The lock-taken line is on stdout: cron, which mails whatever a job prints, must not see it."""
    run = [line for line in (DEPLOY / "crontab.example").read_text().splitlines() if f"{INSTALLED} run" in line and not line.startswith("#")]
    assert run and all(line.rstrip().endswith(">/dev/null") for line in run)


def test_crontab_example_backs_up_each_night_and_prints_nothing_cron_would_mail(tmp_path: Path) -> None:
    """The backup line, run as cron would (sh, the installed digest, its own directory): one private copy, nothing on
    stdout or stderr, and the pruning after it keeps the copy."""
    [line] = [line for line in (DEPLOY / "crontab.example").read_text().splitlines() if " backup " in line and not line.startswith("#")]
    assert line.split()[:5] == ["30", "3", "*", "*", "*"]
    home, backups = tmp_path / "home", tmp_path / "backups"
    backups.mkdir()
    env = {**os.environ, "DIGEST_HOME": str(home)}
    subprocess.run([str(Path(sys.executable).parent / "digest"), "init"], env=env, check=True, capture_output=True)
    command = " ".join(line.split()[5:]).replace(INSTALLED, str(Path(sys.executable).parent / "digest")).replace("/var/backups/digest", str(backups))
    result = subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    [copy] = backups.iterdir()
    assert copy.name.startswith("digest-") and copy.stat().st_mode & 0o077 == 0


def test_crontab_example_backup_into_a_directory_not_made_fails_and_makes_no_file(tmp_path: Path) -> None:
    """The first night without the directory is a line cron mails, not a copy named like the directory (which made
    every later night fail with "exists", and which the pruning never found)."""
    [line] = [line for line in (DEPLOY / "crontab.example").read_text().splitlines() if " backup " in line and not line.startswith("#")]
    home, backups = tmp_path / "home", tmp_path / "backups"
    env = {**os.environ, "DIGEST_HOME": str(home)}
    subprocess.run([str(Path(sys.executable).parent / "digest"), "init"], env=env, check=True, capture_output=True)
    command = " ".join(line.split()[5:]).replace(INSTALLED, str(Path(sys.executable).parent / "digest")).replace("/var/backups/digest", str(backups))
    result = subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == f"error: cannot write into {backups}/: no such directory (make it first, or give a file name)\n"
    assert not backups.exists()


def test_backup_units_copy_into_their_own_state_directory_each_night():
    service = (DEPLOY / "digest-backup.service").read_text()
    assert "\nExecStart=/usr/local/bin/digest backup /var/lib/digest-backups\n" in service
    assert "\nStateDirectory=digest digest-backups\n" in service and "\nUser=digest\n" in service  # the database's owner
    assert "\nExecStartPost=/usr/bin/find /var/lib/digest-backups -name digest-*.db -mtime +14 -delete\n" in service
    timer = (DEPLOY / "digest-backup.timer").read_text()
    assert "\nOnCalendar=*-*-* 03:30:00\n" in timer and "\nPersistent=true\n" in timer and "\nUnit=digest-backup.service\n" in timer


def environment_files() -> set[str]:
    """The EnvironmentFile= of every service in deploy/, without the '-' that makes it optional."""
    return {line.partition("=")[2].removeprefix("-") for unit in SERVICES for _, line in directives((DEPLOY / unit).read_text())
            if line.startswith("EnvironmentFile=")}


@pytest.mark.parametrize("key", [None, "short"], ids=["missing", "too-short"])
def test_secret_key_hint_under_systemd_names_the_units_environment_file(cli, home: Path, key: str | None) -> None:
    """Under systemd (INVOCATION_ID: a unit, or `systemd-run` as the docs run admin commands) `digest init` is the
    wrong advice: the key goes in the one EnvironmentFile= every shipped unit reads, as a DIGEST_SECRET_KEY= line."""
    from digest.tokens import secret_key_problem

    (env_file,) = environment_files()
    env = {"INVOCATION_ID": "4a1c9a7e2f0d4c7f9a3c1b2d3e4f5a6b", **({"DIGEST_SECRET_KEY": key} if key else {})}
    hint = f"put a line DIGEST_SECRET_KEY=KEY in {env_file}, the EnvironmentFile= of digest's systemd units,"
    web = cli("web", "--port", "0", env=env)
    assert web.exit_code == 1 and web.output.count("\n") == 1 and hint in web.output and "digest init" not in web.output, web.output
    doctor = [line for line in cli("doctor", env=env).output.splitlines() if line.startswith("FAIL  secret_key: ")]
    assert len(doctor) == 1 and hint in doctor[0] and "digest init" not in doctor[0], doctor
    if key is None:  # the line docs/troubleshooting.md shows
        assert web.output.strip() in (DEPLOY.parent / "docs" / "troubleshooting.md").read_text(encoding="utf-8")
    # KEY as the hint says to make it: a key every command takes
    command = web.output.split("KEY from ", 1)[1].split("; then", 1)[0]
    made = subprocess.run(["sh", "-c", command.replace("python3", sys.executable, 1)], capture_output=True, text=True, check=True).stdout.strip()
    assert secret_key_problem(made) is None

