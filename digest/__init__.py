"""digest: a self-hosted daily email of the new research papers that matter to each subscriber."""

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

try:  # the version lives in pyproject.toml only
    __version__ = version("digest")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"


def templates_dir() -> Path:
    """The Jinja2 templates: digest/templates once installed, templates/ at the top of a source tree."""
    here = Path(__file__).resolve().parent
    installed = here / "templates"  # setuptools maps templates/ to the package digest.templates
    return installed if installed.is_dir() else here.parent / "templates"
