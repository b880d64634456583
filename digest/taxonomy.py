"""The arXiv category taxonomy, bundled (digest/data/arxiv-categories.tsv): check a subscriber's category filter
against it and suggest the nearest codes for a typo or a name ("machine learning" -> cs.LG, stat.ML).

Pure: it reads the bundled file once and never the network or the database.
"""

from __future__ import annotations

import difflib
from functools import lru_cache
from pathlib import Path

TAXONOMY_FILE = Path(__file__).parent / "data" / "arxiv-categories.tsv"
TAXONOMY_URL = "https://arxiv.org/category_taxonomy"
SUGGESTIONS = 3


@lru_cache(maxsize=1)
def arxiv_categories() -> dict[str, str]:
    """Every active arXiv category and archive: code -> name, in the file's order."""
    codes: dict[str, str] = {}
    for line in TAXONOMY_FILE.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            code, name = line.split("\t")
            codes[code] = name
    return codes


@lru_cache(maxsize=1)
def _by_lower() -> dict[str, str]:
    return {code.lower(): code for code in arxiv_categories()}


def canonical_category(value: str) -> str | None:
    """The code as arXiv writes it (cs.lg -> cs.LG), or None when `value` is no category or archive."""
    return _by_lower().get(value.strip().lower())


def suggest_categories(value: str) -> list[str]:
    """Up to SUGGESTIONS codes the user may have meant: those whose name is `value` or contains all its words
    (a name typed for a code), then the codes and names closest in spelling (a typo)."""
    wanted = " ".join(value.lower().replace("_", " ").split())
    if not wanted:
        return []
    names = arxiv_categories()
    words = wanted.split()
    found = [code for code, name in names.items() if name.lower() == wanted]
    found += [code for code, name in names.items() if "." in code and all(w in name.lower().split() for w in words)]
    if "." in wanted:  # the right subject in the wrong archive: cs.ML -> stat.ML
        found += [code for code in names if code.lower().partition(".")[2] == wanted.partition(".")[2]]
    close_codes = difflib.get_close_matches(wanted, list(_by_lower()), n=SUGGESTIONS, cutoff=0.6)
    found += [_by_lower()[code] for code in close_codes]
    by_name = {name.lower(): code for code, name in reversed(names.items())}  # a shared name goes to its first code
    found += [by_name[name] for name in difflib.get_close_matches(wanted, list(by_name), n=SUGGESTIONS, cutoff=0.75)]
    return list(dict.fromkeys(found))[:SUGGESTIONS]


def describe_suggestions(codes: list[str]) -> str:
    """'cs.LG (Machine Learning) or stat.ML (Machine Learning)'."""
    names = arxiv_categories()
    shown = [f"{code} ({names[code]})" for code in codes]
    return " or ".join(shown) if len(shown) < 3 else ", ".join(shown[:-1]) + " or " + shown[-1]
