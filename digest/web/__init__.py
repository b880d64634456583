"""The web front, a Flask app served by waitress: the subscription pages (pages.py), the shared context
(context.py), the defences (security.py), the confirmation email (mail.py) and the server (serve.py).

create_app (app.py) is the one entry point. Only digest.store touches the database: the pages call its
functions, never the ORM.
"""

from __future__ import annotations

from .app import create_app

__all__ = ["create_app"]
