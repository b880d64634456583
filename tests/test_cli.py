"""Behaviour every command shares: one-line errors, exit codes, quiet exit when the reader of stdout leaves."""

from __future__ import annotations

import os
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
