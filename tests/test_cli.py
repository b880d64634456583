"""Behaviour every command shares: one-line errors, exit codes, quiet exit when the reader of stdout leaves."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import pytest

from digest.ingest import SAMPLE_FILES


def test_main_exits_quietly_when_stdout_reader_leaves(home):
    env = {**os.environ, "DIGEST_HOME": str(home)}
    subprocess.run([sys.executable, "-m", "digest", "import", str(SAMPLE_FILES[0])], env=env, check=True, capture_output=True)
    # `digest papers list | head -c 100`: far more output than a pipe buffers, and the reader leaves.
    proc = subprocess.Popen([sys.executable, "-m", "digest", "papers", "list", "--limit", "0"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.read(100)
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0, stderr
    assert stderr == ""


def test_main_unknown_command_exits_nonzero(cli):
    result = cli("no-such-command")
    assert result.exit_code == 2 and "no such command" in result.output


def test_version_is_the_one_in_pyproject(cli):
    import tomllib
    from pathlib import Path

    pyproject = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text(encoding="utf-8"))
    expected = pyproject["project"]["version"]
    result = cli("--version")
    assert result.exit_code == 0
    # A mismatch here means the installed metadata is stale: reinstall (pip install -e .) after changing the version.
    assert result.output.strip() == f"digest, version {expected}"


def test_import_of_a_directory_is_one_line_and_exit_1(cli, home, tmp_path):
    folder = tmp_path / "papers"
    folder.mkdir()
    result = cli("import", str(folder))
    assert result.exit_code == 1
    assert result.output == f"error: {folder}: is a directory, not a file (give one feed or JSON Lines file; `digest import --help` lists the formats)\n"


def test_a_file_the_command_cannot_write_is_one_line_naming_the_path_and_what_to_check(cli, home, tmp_path):
    """An OS error no command words itself (here `preview --out` into a folder not made) names the file first, as
    `cp` does, and what to check; it read `error: No such file or directory: PATH`, with nothing to do."""
    assert cli("init").exit_code == 0
    assert cli("import", str(SAMPLE_FILES[0])).exit_code == 0
    assert cli("subscribers", "add", "ada@example.org", "--interests", "language models").exit_code == 0
    target = tmp_path / "no-such-folder" / "ada.html"
    result = cli("preview", "ada@example.org", "--out", str(target))
    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == f"error: {target}: No such file or directory (check the path and its permissions)"
    assert not target.parent.exists()


@pytest.mark.parametrize("args, line", [
    (("no-such-command",), "error: no such command 'no-such-command' (`digest --help` shows the usage)"),
    (("--no-such-option",), "error: no such option '--no-such-option' (`digest --help` shows the usage)"),
    (("subscribers", "add"), "error: missing argument 'EMAIL' (`digest subscribers add --help` shows the usage)"),
    (("papers", "list", "--limit", "x"), "error: invalid value for '--limit': 'x' is not a valid integer range (`digest papers list --help` shows the usage)"),
    (("subscribers", "import", "."), "error: invalid value for 'PATH': File '.' is a directory (`digest subscribers import --help` shows the usage)"),
], ids=["unknown-command", "unknown-option", "missing-argument", "bad-value", "directory-for-a-file"])
def test_usage_errors_are_one_line_with_the_help_to_read(cli, home, args, line):
    result = cli(*args)
    assert result.exit_code == 2  # the command line itself is wrong (click's convention, kept for scripts)
    assert result.output == line + "\n"


READ_ONLY = [("status",), ("status", "--check"), ("status", "--json"), ("papers", "list"), ("sources", "list"),
             ("subscribers", "list"), ("subscribers", "show", "ada@example.org"), ("subscribers", "export", "-"),
             ("rank", "ada@example.org"), ("preview", "ada@example.org")]


@pytest.mark.parametrize("args", READ_ONLY, ids=[" ".join(args) for args in READ_ONLY])
def test_read_only_commands_create_no_home_and_no_database(cli, home, tmp_path, args):
    missing = tmp_path / "new"
    result = cli("--home", str(missing), *args)
    assert result.exit_code == 1
    assert result.output == f"error: no digest home at {missing} (run `digest init` to make one, or give --home (DIGEST_HOME) the one you made)\n"
    assert not missing.exists()
    result = cli(*args)  # the home exists, its database does not
    assert result.exit_code == 1 and result.output.startswith(f"error: no database at {home / 'digest.db'} (run `digest init`")
    empty = tmp_path / "empty.db"
    empty.touch()
    result = cli("--database-url", f"sqlite:///{empty}", *args)  # a file that holds no digest tables gets none
    assert result.exit_code == 1 and result.output.startswith(f"error: the database sqlite:///{empty} holds no digest tables (run `digest init`")
    assert list(home.iterdir()) == []


WRITERS = [("run",), ("send",), ("fetch",), ("subscribers", "add", "bob@example.org"), ("import", "digest/data/sample-arxiv-cs.CL.xml")]


@pytest.mark.parametrize("args", WRITERS, ids=[" ".join(args[:2]) for args in WRITERS])
def test_commands_that_store_refuse_a_home_whose_database_has_gone(cli, home, args):
    """`digest send` in a home whose digest.db was moved made a new empty one, said "nothing due" (exit 0), and
    `status --check` then said ok: the subscribers were silently gone."""
    assert cli("init").exit_code == 0
    assert cli("subscribers", "add", "ada@example.org").exit_code == 0
    (home / "digest.db").rename(home / "digest.db.bak")
    result = cli(*args)
    assert result.exit_code == 1
    assert result.output.startswith(f"error: no database at {home / 'digest.db'}, though {home / 'digest.toml'} is there: was it moved or deleted?")
    assert not (home / "digest.db").exists()
    assert cli("init").exit_code == 0 and (home / "digest.db").exists()  # init makes a new, empty one on purpose


def test_commands_that_store_create_the_home_as_documented(cli, tmp_path):
    new = tmp_path / "new"
    assert cli("--home", str(new), "subscribers", "add", "ada@example.org").exit_code == 0
    assert (new / "digest.db").exists()
    assert cli("--home", str(new), "status").exit_code == 0


def test_demo_takes_the_global_home_and_refuses_two_different_ones(cli, tmp_path):
    target = tmp_path / "demo"
    result = cli("--home", str(target), "demo")
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"demo home: {target}\n") and f"try: digest --home {target} web" in result.output
    assert cli("--home", str(target), "demo", "--home", str(target)).exit_code == 0  # the same one twice is one home
    other = tmp_path / "other"
    result = cli("--home", str(target), "demo", "--home", str(other))
    assert result.exit_code == 2 and result.output.startswith(f"error: two homes given, {target} (digest --home) and {other} (demo --home)")
    assert not other.exists()


def mode(path) -> str:
    return oct(path.stat().st_mode & 0o777)


@pytest.mark.parametrize("first", [["init"], ["subscribers", "add", "ada@example.org", "--interests", "language models"]], ids=["init", "subscribers-add"])
def test_what_digest_creates_is_for_its_owner_alone_under_umask_022(tmp_path, first):
    """Cron as root has umask 022: the home, the database (which holds the subscribers' addresses), its -wal and -shm,
    the outbox and its emails were readable by every user of the machine. As under the units' UMask=0077, whichever
    command creates them."""
    home = tmp_path / "var" / "digest"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")} | {"DIGEST_HOME": str(home), "DIGEST_SECRET_KEY": "umask-test-secret-key-0123456789"}

    def digest(*args: str) -> None:
        done = subprocess.run([sys.executable, "-c", "import os; os.umask(0o022); from digest.cli import main; main()", *args],
                              env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done

    digest(*first)
    if first[0] == "init":
        digest("subscribers", "add", "ada@example.org", "--interests", "language models", "--send-at", "00:00")
    digest("import", str(SAMPLE_FILES[0]))
    digest("send", "--date", "2026-01-05")
    emails = list((home / "outbox").glob("*.eml"))
    assert len(emails) == 1
    created = [home, home / "digest.db", home / "outbox", *emails, home / "digest.lock"]
    # The -wal and -shm files exist while a connection is open; SQLite gives them the database file's mode, whatever
    # the umask of the process that opens it (here this one, at 022).
    previous = os.umask(0o022)
    connection = sqlite3.connect(home / "digest.db")
    try:
        connection.execute("SELECT count(*) FROM subscriber").fetchone()
        created += [home / "digest.db-wal", home / "digest.db-shm"]
        assert {str(path.relative_to(tmp_path)): mode(path) for path in created} == {
            str(path.relative_to(tmp_path)): "0o700" if path.is_dir() else "0o600" for path in created}
    finally:
        connection.close()
        os.umask(previous)


def test_a_stricter_umask_is_kept(tmp_path):
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")} | {"DIGEST_HOME": str(home)}
    done = subprocess.run([sys.executable, "-c", "import os; os.umask(0o277); from digest.cli import main; main()", "subscribers", "add", "ada@example.org"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done
    assert mode(home / "digest.db") == "0o400"


def test_an_error_line_never_prints_a_configured_secret(cli, home):
    """Error lines are redacted where they are made; the CLI masks every configured secret in them too, as it does
    in tracebacks and log lines, so a message quoting words that hold one (a path, a server's reply) cannot leak it."""
    env = {"DIGEST_HOME": str(home), "DIGEST_SMTP_PASSWORD": "hunter2-horse-battery"}
    result = cli("import", str(home / "hunter2-horse-battery.xml"), env=env)
    assert result.exit_code == 1
    assert "hunter2-horse-battery" not in result.output, result.output
    assert "no such file" in result.output
