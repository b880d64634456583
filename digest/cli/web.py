"""`digest web`: serve the web pages (the front page, subscribe, the readers' links) with waitress, a production WSGI server (not Flask's dev server),
with the connection limit and timeouts of digest.web.serve."""

from __future__ import annotations

from urllib.parse import urlsplit

import click

from ..errors import ConfigError
from . import AppContext, main, pass_app


@main.command("web")
@click.option("--host", metavar="ADDR", help="Address to listen on (default: web_host, 127.0.0.1).")
@click.option("--port", type=click.IntRange(0, 65535), help="Port to listen on (default: web_port, 8080).")
@click.option("--threads", type=click.IntRange(1, 64), default=4, show_default=True, help="Worker threads.")
@click.option("--trusted-proxy", metavar="ADDR", help="A reverse proxy whose X-Forwarded-For/-Proto to believe (the rate limit counts the real client).")
@pass_app
def web_cmd(app: AppContext, host: str | None, port: int | None, threads: int, trusted_proxy: str | None) -> None:
    """Serve the front page (trending papers, search, Atom feed) and the subscribe, confirm, unsubscribe,
    preferences, feedback and edition pages (and /healthz)."""
    # Imported here, not at the top: Flask and waitress load only for `digest web`, not for every command.
    from ..web import create_app
    from ..web.serve import create_server, listening_on

    settings = app.settings
    wsgi = create_app(settings, app.engine)
    address, port = host or settings.web_host, settings.web_port if port is None else port
    prefix = urlsplit(settings.base_url).path.rstrip("/")  # base_url https://example.org/digest: the pages live under /digest
    try:
        server = create_server(wsgi, settings, host=address, port=port, threads=threads, trusted_proxy=trusted_proxy, url_prefix=prefix)
    except (OSError, ValueError) as exc:  # ValueError: waitress cannot resolve the host
        raise ConfigError(f"cannot listen on {address}:{port}: {getattr(exc, 'strerror', None) or exc}",
                          "pick another --port or --host (web_port, web_host), or stop what is using it") from None
    where = ", ".join(f"http://{h if ':' not in h else f'[{h}]'}:{p}{prefix}/" for h, p in listening_on(server))
    click.echo(f"serving the web pages on {where} (links use base_url {settings.base_url})")
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
