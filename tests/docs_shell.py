"""A warm `digest` for the console examples of the docs: one server process imports digest once, and each `digest`
command of a page is a fork of it running the real click `main` with the shell's argv, environment, working
directory and standard streams. This saves the ~1 s of imports per command (about 100 commands run); nothing else
differs from the installed console script. DIGEST_DOCS_REAL_DIGEST=1 makes the examples run the installed script.

    python tests/docs_shell.py serve SOCKET        # the server (the test starts it)
    python tests/docs_shell.py run SOCKET ARGS...  # what `digest ARGS...` calls in the examples' shell

The client imports only the standard library, so it starts in a few tens of milliseconds.
"""

from __future__ import annotations

import json
import os
import socket
import sys


def serve(path: str) -> None:
    import signal
    import time

    # the heavy imports, once: scikit-learn (ranking), premailer (rendering), SQLAlchemy and Alembic (the store)
    import digest.cli.delivery  # noqa: F401,E401
    from digest.cli import main

    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel; they report through the socket
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(16)
    while True:
        conn, _ = server.accept()
        message, fds, _, _ = socket.recv_fds(conn, 1 << 16, 3)
        while chunk := conn.recv(1 << 16):  # the rest of the request, up to the client's shutdown
            message += chunk
        request = json.loads(message)
        sys.stdout.flush(), sys.stderr.flush()
        if os.fork():
            for fd in fds:
                os.close(fd)
            conn.close()
            continue
        server.close()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        time.tzset()
        code = 0
        try:
            main(args=request["argv"], prog_name="digest")
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:  # what the console script would print before dying
            import traceback

            traceback.print_exc()
            code = 1
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BrokenPipeError:
            pass
        conn.sendall(str(code).encode())
        os._exit(code)


def run(path: str, argv: list[str]) -> int:
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(path)
    request = {"argv": argv, "env": dict(os.environ), "cwd": os.getcwd()}
    socket.send_fds(client, [json.dumps(request).encode()], [0, 1, 2])
    client.shutdown(socket.SHUT_WR)
    answer = b"".join(iter(lambda: client.recv(64), b""))
    return int(answer or 1)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2])
    else:
        sys.exit(run(sys.argv[2], sys.argv[3:]))
