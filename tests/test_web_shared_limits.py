"""Several `digest web` processes share the subscribe rate limit through web_rate_limit_storage (Redis at
127.0.0.1:6379, skipped without it) and the per-recipient confirmation caps through the database: two real
processes on two ports, one SQLite database, each test with its own Redis key prefix."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import httpx
import pytest
from web_server import SECRET, digest_web

REDIS = ("127.0.0.1", 6379)
CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')


def redis_answers() -> bool:
    try:
        with socket.create_connection(REDIS, timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture
def redis_uri() -> Iterator[str]:
    """redis://127.0.0.1:6379/0 with a key prefix of this test's own; its keys are deleted afterwards."""
    if not redis_answers():
        pytest.skip("no Redis at 127.0.0.1:6379")
    redis = pytest.importorskip("redis")
    prefix = f"digest-test-{uuid.uuid4().hex[:12]}"
    yield f"redis://{REDIS[0]}:{REDIS[1]}/0?key_prefix={prefix}"
    client = redis.Redis(*REDIS)
    keys = list(client.scan_iter(f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


def redis_keys(uri: str) -> list[bytes]:
    import redis

    prefix = uri.rsplit("key_prefix=", 1)[1]
    with redis.Redis(*REDIS) as client:
        return list(client.scan_iter(f"{prefix}*"))


@contextmanager
def two_webs(cli, home, **settings: object) -> Iterator[list[str]]:
    assert cli("init").exit_code == 0  # migrated once, before the two start
    with ExitStack() as stack:
        yield [stack.enter_context(digest_web(home, **settings))[0] for _ in range(2)]


def subscribe(client: httpx.Client, url: str, address: str) -> int:
    token = CSRF_INPUT.search(client.get(f"{url}/subscribe").text).group(1)
    return client.post(f"{url}/subscribe", data={"csrf_token": token, "email": address, "interests": "sparse autoencoders"}).status_code


@pytest.mark.parametrize("storage", ["redis", "redis_url", "memory"])
def test_the_per_client_limit_holds_across_two_processes_sharing_redis(cli, home, redis_uri, storage) -> None:
    # redis_url alone (the Redis the senders keep send_rate in) is where the limits go when web_rate_limit_storage is
    # not set; memory:// set explicitly keeps each process's own count even then.
    settings = {"redis": {"web_rate_limit_storage": redis_uri}, "redis_url": {"redis_url": redis_uri},
                "memory": {"web_rate_limit_storage": "memory://", "redis_url": redis_uri}}[storage]
    with two_webs(cli, home, subscribe_limit=3, **settings) as (a, b), httpx.Client(timeout=30, follow_redirects=True) as client:
        codes = [subscribe(client, url, f"reader{i}@example.org") for i, url in enumerate([a, b, a, b, a])]
        if storage == "memory":  # each process counts only what it saw: 3 + 2 pass, the limit does not hold
            assert codes == [200, 200, 200, 200, 200]
            return
        assert codes == [200, 200, 200, 429, 429]  # three in all, whichever process took them
        assert redis_keys(redis_uri)  # kept under this test's prefix
        limited = client.post(f"{b}/subscribe", data={"email": "x@example.org"})
        assert limited.status_code == 429 and int(limited.headers["Retry-After"]) > 0 and "Too many attempts" in limited.text


def test_the_confirmation_cap_holds_across_two_processes(cli, home, redis_uri) -> None:
    with two_webs(cli, home, web_rate_limit_storage=redis_uri, subscribe_limit=100) as webs:
        codes = []
        for n in range(2, 10):  # eight browsers at 127.0.0.2..9, alternating between the two processes
            transport = httpx.HTTPTransport(local_address=f"127.0.0.{n}")
            with httpx.Client(timeout=30, follow_redirects=True, transport=transport) as client:
                codes.append(subscribe(client, webs[n % 2], "victim@example.org"))
        assert codes == [200] * 8  # the same page whether sent or capped: it reveals nothing
        sent = list((home / "outbox").glob("*.eml"))
        assert len(sent) == 1  # confirm_interval (600 s): one confirmation email, whichever process was asked


@pytest.mark.parametrize("storage", ["redis", "memory"])
def test_the_per_inbox_cap_holds_across_two_processes(cli, home, redis_uri, storage) -> None:
    """victim+2@ ... victim+9@ are one inbox: one confirmation email, whichever process was asked for which, also
    when each process keeps its per-client limit in its own memory (the per-inbox count was kept there too: 2 emails,
    one per process, and 4 with `digest web --processes 4`); it is in the database."""
    with two_webs(cli, home, web_rate_limit_storage=redis_uri if storage == "redis" else "memory://", subscribe_limit=100) as webs:
        codes = []
        for n in range(2, 10):
            with httpx.Client(timeout=30, follow_redirects=True, transport=httpx.HTTPTransport(local_address=f"127.0.0.{n}")) as client:
                codes.append(subscribe(client, webs[n % 2], f"victim+{n}@example.org"))
        assert codes == [200] * 8
        assert len(list((home / "outbox").glob("*.eml"))) == 1


def test_digest_web_refuses_to_start_when_the_shared_storage_does_not_answer(cli, home) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there once closed
    assert cli("init").exit_code == 0
    env = {**os.environ, "DIGEST_HOME": str(home), "DIGEST_SECRET_KEY": SECRET,
           "DIGEST_WEB_RATE_LIMIT_STORAGE": f"redis://:hunter2@127.0.0.1:{port}/0"}
    proc = subprocess.run([sys.executable, "-c", "from digest.cli import main; main()", "web", "--port", "0"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("error: web_rate_limit_storage does not answer")
    assert "hunter2" not in proc.stderr + proc.stdout
    # The same Redis named by redis_url alone: the error names the setting it came from.
    env = {**{k: v for k, v in env.items() if k != "DIGEST_WEB_RATE_LIMIT_STORAGE"}, "DIGEST_REDIS_URL": f"redis://:hunter2@127.0.0.1:{port}/0"}
    proc = subprocess.run([sys.executable, "-c", "from digest.cli import main; main()", "web", "--port", "0"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("error: redis_url does not answer"), proc.stderr
    assert "hunter2" not in proc.stderr + proc.stdout
