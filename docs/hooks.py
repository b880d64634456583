"""MkDocs hook: pages that say `<!-- settings-table -->` get the table of every setting, generated from
digest.config.OPTIONS (the table that also drives loading, `digest config` and `digest init`), so the
configuration reference cannot drift from the code; and on every other page, a setting's name in inline code
(`base_url`) links to its row. It only renders Markdown; it never changes settings."""

from __future__ import annotations

import re

MARKER = "<!-- settings-table -->"
SPECIAL_DEFAULTS = {  # options whose default is computed from DIGEST_HOME or another setting when left unset
    "database_url": "`sqlite:///$DIGEST_HOME/digest.db`",
    "outbox_dir": "`$DIGEST_HOME/outbox`",
    "list_id": "`digest.<from domain>`",
}


def _default(opt) -> str:
    if opt.name in SPECIAL_DEFAULTS and not opt.default:
        return SPECIAL_DEFAULTS[opt.name]
    if isinstance(opt.default, bool):
        return f"`{str(opt.default).lower()}`"
    if opt.default in ("", None, ()):
        return "empty"
    return f"`{opt.default}`"


def _kind(opt) -> str:
    if opt.choices:
        return " or ".join(f"`{c}`" for c in opt.choices)
    kind = {"str": "text", "int": "whole number", "float": "number", "bool": "true/false", "path": "path",
            "list": "list of text (comma-separated in the environment)"}[opt.kind]
    if opt.minimum is not None and opt.maximum is not None:
        kind += f", {opt.minimum:g} to {opt.maximum:g}"
    elif opt.minimum is not None:
        kind += f", at least {opt.minimum:g}"
    return kind


def render_settings_table() -> str:
    """One section per option: its name as a heading (the anchor other pages link to), what it does, and a line
    with its environment variable(s), type and default."""
    from digest.config import OPTIONS

    sections = []
    for opt in OPTIONS:
        names = f"`DIGEST_{opt.name.upper()}`" + (f" or `DIGEST_{opt.name.upper()}_FILE`" if opt.secret else "")
        text = opt.help[0].upper() + opt.help[1:] + "." + (" A secret: redacted whenever shown." if opt.secret else "")
        sections.append(f"### `{opt.name}` {{#{opt.name}}}\n\n{text}\n\n"
                        f"Environment: {names} · type: {_kind(opt)} · default: {_default(opt)}\n")
    return "\n".join(sections)


def link_settings(markdown: str) -> str:
    """`name` -> [`name`](configuration.md#name) for every setting, outside fenced code and existing links."""
    from digest.config import OPTIONS

    names = "|".join(sorted((re.escape(opt.name) for opt in OPTIONS), key=len, reverse=True))
    inline = re.compile(rf"(?<![\[`])`({names})`(?![`\]])")
    out, fenced = [], False
    for line in markdown.split("\n"):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced:
            line = inline.sub(r"[`\1`](configuration.md#\1)", line)
        out.append(line)
    return "\n".join(out)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if MARKER in markdown:
        return markdown.replace(MARKER, render_settings_table())
    return link_settings(markdown)
