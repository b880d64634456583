"""Children die with their parent: real `digest import` and `digest send` processes killed with SIGKILL while
their forked children (the JSON Lines parser, the render workers) work, then /proc is read to show that no
process of theirs is left and that nothing holds the database open. Linux only (/proc, prctl)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from digest.children import die_with_parent, usable_cores

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; PR_SET_PDEATHSIG is Linux's")

UTC = timezone.utc


def parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper that a container's init may never be is dead enough)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def descendants(pid: int) -> set[int]:
    """Every live process below `pid`, from each process's parent in /proc."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            ppid = parent_of(int(entry.name))
            if ppid is not None:
                parents[int(entry.name)] = ppid
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, ppid in parents.items() if ppid in frontier and child not in found and alive(child)}
        found |= frontier
    return found


def holders(path: Path) -> set[int]:
    """Processes with `path` (or its -wal, -shm, -journal) open."""
    names = {str(path)} | {f"{path}{suffix}" for suffix in ("-wal", "-shm", "-journal")}
    out = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) in names:
                    out.add(int(entry.name))
                    break
            except OSError:
                continue
    return out


def wait_until(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("gave up waiting")
        time.sleep(0.02)


def digest(home: Path, *args: str, **env: str) -> subprocess.Popen:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    environ.update(DIGEST_HOME=str(home), **env)
    return subprocess.Popen([sys.executable, "-c", "import sys; from digest.cli import main; sys.exit(main())", *args],
                            env=environ, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def kill_and_check(proc: subprocess.Popen, children: set[int], database: Path) -> None:
    """SIGKILL `proc`; then none of `children` may live on, and nothing may hold the database open."""
    assert children, "the command forked no child to test"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    try:
        wait_until(lambda: not any(alive(pid) for pid in children), timeout=15)
    finally:
        for pid in children:  # never leave an orphan behind for the next tests, whatever was asserted
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert holders(database) == set()


def write_jsonl(path: Path, papers: int) -> Path:
    with path.open("w", encoding="utf-8") as out:
        for i in range(papers):
            out.write(json.dumps({"id": f"2501.{i:05d}", "title": f"Paper {i} on sparse autoencoders", "abstract": f"We study feature {i} of a language model.", "authors": ["Ada Lovelace"]}) + "\n")
    return path


def test_sigkill_of_digest_import_leaves_no_parser_process(home, tmp_path):
    big = write_jsonl(tmp_path / "big.jsonl", 150_000)
    assert subprocess.run([sys.executable, "-c", "from digest.cli import main; main()", "init"], env={**os.environ, "DIGEST_HOME": str(home)}, capture_output=True).returncode == 0
    proc = digest(home, "import", str(big))
    try:
        wait_until(lambda: descendants(proc.pid) or proc.poll() is not None)  # the forked JSON Lines parser
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.5)  # mid-import: the parser is parsing and the importer storing
        children = descendants(proc.pid)
        kill_and_check(proc, children, home / "digest.db")
    finally:
        if proc.poll() is None:
            proc.kill()
    import sqlalchemy as sa

    engine = sa.create_engine(f"sqlite:///{home / 'digest.db'}")
    with engine.connect() as conn:  # nothing half-written: the import was one transaction
        assert conn.execute(sa.text("SELECT count(*) FROM paper")).scalar_one() == 0
    engine.dispose()


def test_sigkill_of_digest_send_mid_render_leaves_no_worker_process(home, smtp_server):
    from digest.config import load_settings
    from digest.ingest import SAMPLE_FILES, import_file
    from digest.store import init_db, open_engine
    from digest.store.subscribers import SubscriberInput, add_subscriber

    (home / "digest.toml").write_text('secret_key = "children-test-secret-key"\nfrom_address = "digest@example.org"\nskip_empty = false\n', encoding="utf-8")
    settings = load_settings(home, env={})
    engine = open_engine(settings.database_url)
    init_db(engine)
    now = datetime.now(UTC)
    import_file(engine, SAMPLE_FILES[0], now - timedelta(hours=1))
    from digest.store import session_scope

    with session_scope(engine) as session:  # enough subscribers for the run to fork its render workers
        for i in range(1200):
            add_subscriber(session, f"reader{i:04d}@example.org", SubscriberInput(interests=["language models"], send_at="00:00", tz="UTC"), now=now - timedelta(days=1))
    engine.dispose()
    smtp_server.data_delay = 0.05  # the run lasts, its workers alive, while the sender waits on the server
    proc = digest(home, "send", DIGEST_SMTP_HOST=smtp_server.host, DIGEST_SMTP_PORT=str(smtp_server.port), DIGEST_SMTP_SECURITY="none")
    try:
        wait_until(lambda: len(descendants(proc.pid)) >= 2 or proc.poll() is not None)  # the render workers
        assert proc.poll() is None, proc.stderr.read().decode()
        wait_until(lambda: len(smtp_server.messages) >= 1 or proc.poll() is not None)  # mid-send
        children = descendants(proc.pid)
        kill_and_check(proc, children, home / "digest.db")
    finally:
        if proc.poll() is None:
            proc.kill()
    assert 0 < len(smtp_server.messages) < 1200


def test_die_with_parent_exits_a_child_whose_parent_already_died():
    """The race die_with_parent closes: the parent dies between the fork and the prctl."""
    read, write = os.pipe()
    middle = os.fork()
    if middle == 0:  # the parent that will die
        os.close(read)
        parent = os.getpid()
        child = os.fork()
        if child == 0:
            while os.getppid() == parent:  # wait until the parent is gone, as if the prctl came late
                time.sleep(0.01)
            die_with_parent(parent)
            os.write(write, b"survived")  # never reached
            os._exit(0)
        os.write(write, str(child).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(middle, 0)
    child = int(os.read(read, 100).decode())
    wait_until(lambda: not alive(child), timeout=10)
    rest = os.read(read, 100)
    os.close(read)
    assert rest == b""


# The hang of `digest send` in CI: its graceful-stop SIGTERM handler, copied into the forked render workers, made
# them ignore the SIGTERM with which Pool.terminate() ends a worker that was busy when the edition ended; the parent
# then waited in join() forever. Four one-second tasks on two workers, ended after 0.3 s, under such a handler.
CLOSE_BUSY_WORKERS = """
import signal, time
from digest.delivery.build import ForkedBuilder
signal.signal(signal.SIGTERM, lambda *args: None)  # as `digest send` does: SIGTERM is a graceful stop
builder = ForkedBuilder(None, [], None, 2)
for _ in range(4):
    builder.pool.apply_async(time.sleep, (1,))
time.sleep(0.3)
builder.close()
print("closed")
"""


def test_forked_builder_close_ends_busy_workers_under_a_sigterm_handler() -> None:
    process = subprocess.Popen([sys.executable, "-c", CLOSE_BUSY_WORKERS], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        stuck = descendants(process.pid)
        process.kill()  # SIGKILL: the handler would ignore SIGTERM; its workers die with it (PR_SET_PDEATHSIG)
        process.communicate()
        pytest.fail(f"ForkedBuilder.close() still waiting after 60 s for its workers {sorted(stuck)}")
    assert process.returncode == 0 and out.strip() == "closed", out


def test_die_with_parent_restores_sigterm_and_ignores_sigint_in_the_child() -> None:
    script = """
import os, signal
signal.signal(signal.SIGTERM, lambda *args: None)
parent = os.getpid()
child = os.fork()
if child == 0:
    from digest.children import die_with_parent, usable_cores
    die_with_parent(parent)
    ok = signal.getsignal(signal.SIGTERM) is signal.SIG_DFL and signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    os._exit(0 if ok else 3)
print(os.waitpid(child, 0)[1] >> 8)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "0", done.stdout + done.stderr


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2, reason="needs Linux and two cores to confine to one")
def test_usable_cores_counts_the_cores_the_process_is_confined_to() -> None:
    everything = os.sched_getaffinity(0)
    assert usable_cores() == len(everything)
    os.sched_setaffinity(0, {min(everything)})  # as taskset or systemd's CPUAffinity= would
    try:
        assert usable_cores() == 1  # one renderer per core of the machine would fork two here
    finally:
        os.sched_setaffinity(0, everything)
