"""The embedding pass of a hybrid daily run (rank_model = "hybrid"): what 2,000 new papers add. Prints seconds.

    python benchmarks/embed.py [--papers 2000] [--subscribers 10000] [--float32]

Builds a SQLite store (in a temporary DIGEST_HOME) as benchmarks/hybrid.py does: `--papers` synthetic papers (real
titles and abstract sentences, 230 word pieces at the median, so most are cut at the model's 256) and
`--subscribers` subscribers whose interest vectors are stored first (not timed). Then times digest.embed's
embeddings_for over the new papers and every subscriber, as the daily run calls it: the model loaded, each
paper embedded and stored. `--float32` runs the model in float32 even where the CPU multiplies bfloat16
natively, and prints how far the two precisions' vectors are apart. Needs the semantic extra. The load average
is printed: the machine is shared, and embedding is all CPU.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def load() -> str:
    return Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--papers", type=int, default=2000)
    parser.add_argument("--subscribers", type=int, default=10000)
    parser.add_argument("--float32", action="store_true", help="float32 matrix products even where bfloat16 is native")
    args = parser.parse_args()
    import numpy as np
    import sqlalchemy as sa
    import torch
    from hybrid import build

    import digest.rank.semantic as rank_semantic
    from digest.config import load_settings
    from digest.embed import embeddings_for
    from digest.models import Paper, PaperEmbedding
    from digest.store import init_db, open_engine, session_scope
    from digest.store.subscribers import list_subscribers

    now = datetime.now(timezone.utc)
    with tempfile.TemporaryDirectory() as home:
        os.environ["DIGEST_HOME"] = home
        engine = open_engine(load_settings().database_url)
        init_db(engine)
        build(engine, args.papers, args.subscribers, now, random.Random(7))
        with session_scope(engine) as session:
            subscribers = list(list_subscribers(session, status="active"))
            papers = [(p.id, p.title, p.abstract) for p in session.exec(sa.select(Paper).order_by(Paper.id)).scalars()]
        embeddings_for(engine, [], subscribers, now)  # the interests, stored as on any day after the first (not timed)
        native = rank_semantic.native_bfloat16()
        print(f"{len(papers):,} new papers, {len(subscribers):,} subscribers (interests stored); torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads, bfloat16 native: {native}; load average {load()}")
        precisions = [("bfloat16" if native else "float32", native)] + ([("float32", False)] if args.float32 and native else [])
        vectors = {}
        for name, bf16 in precisions:
            rank_semantic.native_bfloat16 = lambda bf16=bf16: bf16  # type: ignore[misc]
            rank_semantic._CACHE.clear()
            with engine.begin() as conn:
                conn.execute(sa.delete(PaperEmbedding))
            start, cpu = time.perf_counter(), time.process_time()
            found = embeddings_for(engine, papers, subscribers, now)
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
            vectors[name] = np.stack([found.papers[pid] for pid, _, _ in papers])
            print(f"embedding pass ({name}): {seconds:.1f} s ({cpu:.1f} s of CPU), {len(papers) / seconds:.1f} papers/s; load average {load()}")
        if len(vectors) == 2:
            cosines = (vectors["bfloat16"] * vectors["float32"]).sum(axis=1)
            print(f"bfloat16 against float32: 1 - cosine at most {1 - cosines.min():.1e}, {1 - cosines.mean():.1e} on average")
        engine.dispose()


if __name__ == "__main__":
    main()
