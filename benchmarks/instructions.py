"""Instructions per email, counted by valgrind's callgrind: figures that do not move with the machine's load, so a
change of 1% shows (the whole edition's CPU time moves by 10-15% from run to run on a shared 2-core machine).

    python benchmarks/instructions.py worker [--share 100] [--letters 400] [--warm 3000] [--until rank|links|render|mime]
    python benchmarks/instructions.py ledger

`worker`: what a render worker does per letter of the 10,000 x 1,000 edition of benchmarks/send.py: rank its share
of a claimed batch, read the picks' reasons, sign the links, render, build the MIME bytes and pickle what goes back to
the sending process. Counted over `--letters` letters after `--warm` letters (the card cache warm, as in an edition).
`ledger`: what the sending process does in the database per email: open the 10,000 ledger rows, claim them 200 at a
time and record them sent 18 to a transaction (about as many transactions as an edition makes), with real contents.

Each runs itself under `valgrind --tool=callgrind --instr-atstart=no` and switches counting on (callgrind_control)
around the measured part only; the set-up (the database, planning, the ranking's preparation) is not counted.
Needs valgrind (Debian's package); a run takes one to two minutes. Prints M instructions per letter or email.
Instructions are not seconds (a cache miss costs more than an add), but for the same kind of work they move together.
"""

from __future__ import annotations

import argparse
import os
import pickle
import random
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

import send  # noqa: E402 - benchmarks/send.py: its database, its sink, its ledger rows


def _counting(on: bool) -> None:
    if os.environ.get("DIGEST_CALLGRIND"):
        subprocess.run(["callgrind_control", "-i", "on" if on else "off", str(os.getpid())], capture_output=True, check=False)


def _edition():  # noqa: ANN202
    """The prepared 10,000 x 1,000 database of benchmarks/send.py, planned: (settings, engine, plans, now)."""
    from digest.pipeline.plan import due_subscribers, plan_editions

    settings = send.prepare(argparse.Namespace(subscribers=10000, papers=1000))
    settings, engine = send.fresh_copy(settings)
    return settings, engine, plan_editions(engine, settings, send.NOW, due_subscribers(engine, settings, send.NOW)), send.NOW


def worker(args: argparse.Namespace) -> int:
    """Letters built as a render worker builds them (digest.delivery.build._build_chunk), in shares of `share`."""
    import gc

    from digest.delivery import build
    from digest.pipeline.plan import PlansRanking

    settings, engine, planned, now = _edition()
    ranking = PlansRanking(planned, settings, now, engine=engine)
    letters = send.open_letters(settings, engine, planned)
    plan_of = {letter.delivery_id: plan for letter, plan in zip(letters, planned)}
    build._JOB = (settings, letters, now, lambda batch: ranking.rank([plan_of[letter.delivery_id] for letter in batch]))
    gc.freeze()  # as the forked workers are

    def run(start: int, stop: int) -> None:
        for k in range(start, stop, args.share):
            if args.until:
                staged(k, min(stop, k + args.share))
            else:
                pickle.dumps(build._build_chunk(list(range(k, min(stop, k + args.share)))), pickle.HIGHEST_PROTOCOL)

    def staged(start: int, stop: int) -> None:
        """The worker's steps up to `--until` only (rank: ranking and the reasons; links; render; mime): subtracting
        the counts of two stops gives a step's share."""
        from datetime import date

        from digest.delivery.message import build_message
        from digest.delivery.work import contents_of
        from digest.render import render_digest

        batch = letters[start:stop]
        for letter, result in zip(batch, ranking.rank([plan_of[letter.delivery_id] for letter in batch])):
            contents_of(result)
            if args.until == "rank":
                continue
            sub = letter.subscriber
            links = build.make_links(settings, sub, [r.candidate.paper_id for r in result.picks], letter.edition)
            if args.until == "links":
                continue
            rendered = render_digest(result, name=sub.name, email=sub.email, edition=date.fromisoformat(letter.edition), links=links, site_name=settings.from_name, interests=sub.interests or ())
            if args.until == "render":
                continue
            build_message(rendered, to=sub.email, name=sub.name, settings=settings, message_id=letter.message_id, unsubscribe_url=links.unsubscribe, date=now)

    run(0, args.warm)
    _counting(True)
    run(args.warm, args.warm + args.letters)
    _counting(False)
    return args.letters


def ledger_work(args: argparse.Namespace) -> int:
    """The sending process's ledger work for the whole edition (digest.delivery.claim.LedgerClaimer)."""
    import gc

    from digest.delivery.claim import LedgerClaimer
    from digest.delivery.work import Outcome

    settings, engine, planned, now = _edition()
    rng, ids = random.Random(3), list(range(1, 1001))

    def contents() -> tuple:
        picks = rng.sample(ids, 15)
        return tuple((p, ("matched terms: generation, diffusion", "trending: 159 upvotes on Hugging Face")) for p in picks[:10]), tuple(picks[10:])

    shown = [contents() for _ in planned]
    gc.freeze()  # as the sending process's collector is from the fork of its render workers (ForkedBuilder)
    _counting(True)
    letters = send.open_letters(settings, engine, planned)
    claimer = LedgerClaimer(engine, letters, clock=lambda: now, covered_until=now)
    done = 0
    while batch := claimer.claim(200):
        outcomes = [Outcome(letter, "sent", 1, contents=shown[done + i]) for i, letter in enumerate(batch)]
        done += len(batch)
        for k in range(0, len(outcomes), 18):
            claimer.record_many(outcomes[k : k + 18])
    claimer.release([])
    _counting(False)
    return len(planned)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("worker", "ledger"))
    parser.add_argument("--share", type=int, default=100, help="letters ranked together (ForkedBuilder's share of a batch)")
    parser.add_argument("--letters", type=int, default=400, help="letters counted")
    parser.add_argument("--warm", type=int, default=3000, help="letters built first, not counted")
    parser.add_argument("--keep", action="store_true", help="keep callgrind's output file (callgrind_annotate reads it)")
    parser.add_argument("--until", choices=("rank", "links", "render", "mime"), help="worker: count its steps up to this one only")
    args = parser.parse_args()
    if os.environ.get("DIGEST_CALLGRIND"):  # the run under valgrind
        counted = worker(args) if args.what == "worker" else ledger_work(args)
        print(f"counted {counted}", file=sys.stderr)
        return
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (apt-get install valgrind)")
    out = Path(tempfile.mkdtemp(prefix="digest-callgrind-")) / "callgrind.out"
    run = subprocess.run(["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}", sys.executable, __file__, *sys.argv[1:]],
                         env={**os.environ, "DIGEST_CALLGRIND": "1"}, capture_output=True, text=True, check=False)
    collected = re.search(r"Collected : (\d+)", run.stderr)
    counted = re.search(r"counted (\d+)", run.stderr)
    if run.returncode != 0 or collected is None or counted is None:
        sys.exit(f"the run under valgrind failed (exit {run.returncode}): {run.stderr[-2000:]}")
    per = int(collected.group(1)) / int(counted.group(1)) / 1e6
    unit = "letter" if args.what == "worker" else "email"
    detail = f"share {args.share}, {args.letters} letters after {args.warm}" + (f", steps up to {args.until}" if args.until else "") if args.what == "worker" else "10,000 opened, claimed 200 at a time, recorded 18 at a time"
    print(f"{args.what}: {per:.3f} M instructions per {unit} ({detail})" + (f"; callgrind output {out}" if args.keep else ""))
    if not args.keep:
        shutil.rmtree(out.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
