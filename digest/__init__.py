"""digest: a self-hosted daily email of the new research papers that matter to each subscriber."""

from importlib.metadata import PackageNotFoundError, version

try:  # the version lives in pyproject.toml only
    __version__ = version("digest")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"


def templates_dir():
    """The Jinja2 templates: templates/ in a source tree, the digest.templates package once installed."""
    from pathlib import Path

    source_tree = Path(__file__).resolve().parent.parent / "templates"
    if source_tree.is_dir():
        return source_tree
    from importlib.resources import files

    return Path(str(files("digest.templates")))
