"""The web front, a Flask app served by waitress: the public pages (front.py: trending papers, days, search, the
Atom feed) and their cache (cache.py), the reader's pages (pages.py: subscribe, confirm, preferences, feedback, a
sent edition), the shared context (context.py), the defences (security.py), the confirmation email (mail.py) and
the server (serve.py).

create_app (app.py) is the one entry point. Only digest.store touches the database: the pages call its
functions, never the ORM.
"""

from __future__ import annotations

from .app import create_app

__all__ = ["create_app"]
