"""`digest web`: serve the web pages (the front page, subscribe, the readers' links) with waitress, a production WSGI server (not Flask's dev server),
with the connection limit and timeouts of digest.web.serve."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

import click

from ..errors import ConfigError, DigestError
from ..tokens import check_keys, verifying_keys
from . import AppContext, main, pass_app


@main.command("web")
@click.option("--host", metavar="ADDR", help="Address to listen on (default: web_host, 127.0.0.1).")
@click.option("--port", type=click.IntRange(0, 65535), help="Port to listen on (default: web_port, 8080).")
@click.option("--threads", type=click.IntRange(1, 64), default=4, show_default=True, help="Worker threads (of each process).")
@click.option("--processes", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Server processes sharing the port (one core each); the memory:// rate limit is then per process.")
@click.option("--trusted-proxy", metavar="ADDR", help="A reverse proxy whose X-Forwarded-For/-Proto to believe (the rate limit counts the real client).")
@pass_app
def web_cmd(app: AppContext, host: str | None, port: int | None, threads: int, processes: int, trusted_proxy: str | None) -> None:
    """Serve the web pages: the front page, subscribing, preferences, feedback and each edition.

    The front page (trending papers, search, Atom feed) and the subscribe, confirm, unsubscribe, preferences,
    feedback and edition pages (and /healthz).
    """
    # Imported here, not at the top: Flask and waitress load only for `digest web`, not for every command.
    from ..web import create_app
    from ..web.processes import serve_in_processes
    from ..web.security import limit_storage
    from ..web.serve import bind_listeners, create_server, listening_on

    settings = app.settings
    check_keys(verifying_keys(settings.secret_key, settings.previous_secret_keys))  # before app.engine makes a home and a database
    engine = app.engine
    wsgi = create_app(settings, engine)  # in the parent too: a bad secret_key or rate-limit storage stops it here
    address, port = host or settings.web_host, settings.web_port if port is None else port
    prefix = urlsplit(settings.base_url).path.rstrip("/")  # base_url https://example.org/digest: the pages live under /digest
    try:
        sockets = bind_listeners(address, port)
    except (OSError, ValueError) as exc:  # ValueError: waitress cannot resolve the host
        raise ConfigError(f"cannot listen on {address}:{port}: {getattr(exc, 'strerror', None) or exc}",
                          "pick another --port or --host (web_port, web_host), or stop what is using it") from None

    def serve() -> None:
        if processes > 1:  # a forked child: the parent's pooled database connections are not this process's to use
            engine.dispose(close=False)
        server = create_server(wsgi, settings, host=address, port=port, threads=threads, trusted_proxy=trusted_proxy, url_prefix=prefix,
                               sockets=sockets)
        try:
            server.run()
        except KeyboardInterrupt:
            pass
        finally:
            server.close()

    listening = listening_on(sockets)
    where = ", ".join(f"http://{_host(h)}:{p}{prefix}/" for h, p in listening)
    problem = base_url_problem(settings.base_url, listening)
    if problem:  # a local trial on another port: every confirmation link it sends would be dead
        click.echo(f"warning: {problem} ({_fix(settings.base_url, listening)})", err=True)
    if problem := proxy_problem(settings.base_url, trusted_proxy):
        click.echo(f"warning: {problem}", err=True)
    if processes > 1 and limit_storage(settings)[0].startswith("memory:"):
        click.echo(f"warning: {processes} processes each count the subscribe rate limit alone (it is kept in memory): a client may post "
                   f"up to {processes} x subscribe_limit per subscribe_window (set redis_url or web_rate_limit_storage to a shared "
                   "storage, e.g. redis://127.0.0.1:6379/0, to share it)", err=True)
    how = f"; {processes} processes of {threads} threads" if processes > 1 else ""
    click.echo(f"serving the web pages on {where} (links use base_url {settings.base_url}{how})")
    if processes == 1:
        serve()
        return
    if serve_in_processes(processes, serve):
        raise DigestError("a web process ended as it started", "its error is printed above")


def proxy_problem(base_url: str, trusted_proxy: str | None) -> str | None:
    """Why the per-client rate limit would count every client as one, or None: waitress speaks plain HTTP, so an https
    base_url means a TLS proxy in front, and without --trusted-proxy every request comes from the proxy's address."""
    if trusted_proxy or urlsplit(base_url).scheme != "https":
        return None
    return (f"base_url {base_url} is https, so a TLS proxy serves this plain-HTTP server, and without --trusted-proxy every "
            "client has the proxy's address: the subscribe rate limit counts them all as one (give the proxy's address, "
            "e.g. --trusted-proxy 127.0.0.1)")


LOOPBACK_NAMES = ("localhost", "localhost.localdomain")
ANY_ADDRESS = ("0.0.0.0", "::", "")


def _is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def base_url_problem(base_url: str, listening: list[tuple[str, int]]) -> str | None:
    """Why base_url cannot reach a server listening on `listening` ((host, port) pairs), or None. Only a base_url
    naming this machine directly (a loopback name or one of the listening addresses) is judged: a public name is
    normally a reverse proxy in front, which `digest doctor` checks by asking base_url's /healthz."""
    parts = urlsplit(base_url)
    host = (parts.hostname or "").lower()
    hosts = {h.lower() for h, _ in listening}
    if not (_is_loopback(host) or host in hosts):
        return None
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:  # not a port number: check_sender_settings reports the URL itself
        return None
    ports = sorted({int(p) for _, p in listening})  # waitress may give the port as it was configured: a string
    if port not in ports:
        return f"base_url {base_url} does not reach this server: it listens on port {', '.join(map(str, ports))}"
    reached = hosts & set(ANY_ADDRESS) or (_is_loopback(host) and any(_is_loopback(h) for h in hosts)) or host in hosts
    if not reached:
        return f"base_url {base_url} does not reach this server: it listens on {', '.join(sorted(hosts))}"
    return None


def _fix(base_url: str, listening: list[tuple[str, int]]) -> str:
    """The base_url that would reach the server, as the hint of the warning: this port (and the same host), or,
    when only the address differs, the address it listens on."""
    parts = urlsplit(base_url)
    listen_host, listen_port = listening[0][0], int(listening[0][1])
    wanted_port = parts.port or (443 if parts.scheme == "https" else 80)
    host = parts.hostname if wanted_port != listen_port or listen_host in ANY_ADDRESS else listen_host
    right = f"{parts.scheme}://{_host(host or '127.0.0.1')}:{listen_port}{parts.path.rstrip('/')}"
    other_port = f", or use --port {wanted_port}" if wanted_port != listen_port else ""
    return f"every link in emails and pages leads there: set base_url to {right}, e.g. DIGEST_BASE_URL={right}{other_port}"
