"""Behaviour every command shares: one-line errors, exit codes, quiet exit when the reader of stdout leaves."""

from __future__ import annotations

import os
import subprocess
import sys

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
    assert result.exit_code == 2 and "No such command" in result.output


def test_version_is_the_one_in_pyproject(cli):
    import tomllib
    from pathlib import Path

    pyproject = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text(encoding="utf-8"))
    expected = pyproject["project"]["version"]
    result = cli("--version")
    assert result.exit_code == 0
    # A mismatch here means the installed metadata is stale: reinstall (pip install -e .) after changing the version.
    assert result.output.strip() == f"digest, version {expected}"
