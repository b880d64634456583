"""Hostile input benchmark: how parse time grows with an adversarial field, and the peak memory of 20 MB feeds.

    python benchmarks/hostile.py time [--sizes 25000,50000,100000,200000] [--only NAME[,NAME...]]
    python benchmarks/hostile.py memory [--mb 20] [--only NAME[,NAME...]]

`time` parses one document per size for each hostile field (the field repeated N times) and prints the seconds and
the ratio to the previous size: a linear parser doubles at most (about 2x per doubling), a quadratic one quadruples.
Each figure is the best of 3 runs (2 cores shared with other work).
`memory` writes each 20 MB feed shape to a file and parses it in a fresh subprocess (parse_source, the way a
fetched feed is read), printing that process's peak RSS (VmHWM: ru_maxrss would include the RSS of this process
at the fork) and its outcome. The target is below 400 MB.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from digest.errors import DigestError
from digest.sources.parse import parse_file

RSS_HEAD = b'<?xml version="1.0" encoding="UTF-8"?>\n<rss version="2.0"><channel><title>Hostile</title><link>https://example.org/</link>\n'
RSS_TAIL = b"</channel></rss>\n"


def jsonl(**fields) -> tuple[bytes, str]:
    record = {"id": "x1", "title": "A title", "abstract": "An abstract.", **fields}
    return json.dumps(record).encode() + b"\n", "hostile.jsonl"


def rss_item(title: str = "A title", description: str = "An abstract.", link: str = "https://example.org/p/1",
             extra: str = "", channel_title: str = "Hostile") -> tuple[bytes, str]:
    from xml.sax.saxutils import escape

    head = RSS_HEAD.replace(b"<title>Hostile</title>", f"<title>{escape(channel_title)}</title>".encode())
    item = (f"<item><title>{escape(title)}</title><link>{escape(link)}</link>"
            f"<description>{escape(description)}</description>{extra}</item>\n")
    return head + item.encode() + RSS_TAIL, "hostile.xml"


# name -> N -> (document, file name): each repeats one adversarial pattern N times in one field.
FIELDS = {
    "jsonl authors 'a,'": lambda n: jsonl(authors="a," * n),
    "jsonl authors 'a and '": lambda n: jsonl(authors="a and " * n),
    "jsonl authors '(a,'": lambda n: jsonl(authors="(a," * n),
    "jsonl authors TeX \\' + spaces": lambda n: jsonl(authors=["\\'" + " " * n + "1"]),
    "jsonl title '<script '": lambda n: jsonl(title="<script " * n),
    "jsonl title '<style>'": lambda n: jsonl(title="<style>" * n),
    "jsonl title '<!--'": lambda n: jsonl(title="<!--" * n),
    "jsonl title '<a '": lambda n: jsonl(title="<a " * n),
    "jsonl title '< ' (hostile <)": lambda n: jsonl(title="&lt;" + " " * n + "x script"),
    "jsonl title 'onclick ='": lambda n: jsonl(title="<b>" + "onclick =" * n),
    "jsonl doi ')'": lambda n: jsonl(doi="10.1234/x" + ")" * n),
    "jsonl doi '10.1234/ '": lambda n: jsonl(doi="10.1234/ " * n),
    "jsonl url '/2401.12345?'": lambda n: jsonl(url="/2401.12345?" * n + "\nx"),
    "jsonl url 'arxiv:a'": lambda n: jsonl(url="arxiv:" + "a" * n),
    "jsonl id 'v' + digits": lambda n: jsonl(id="2401.12345v" + "1" * n),
    "arXiv listing title '(arXiv:'": lambda n: rss_item(title="(arXiv:" * n, link="https://arxiv.org/abs/2401.12345",
                                                        channel_title="cs.LG updates on arXiv.org"),
    "rss title '<script '": lambda n: rss_item(title="<script " * n),
    "rss description '<a '": lambda n: rss_item(description="<a " * n),
    "rss description HF mirror '<b>Authors:</b>'": lambda n: rss_item(description="<b>Summary:</b> x " + "<b>Authors:</b>" * n),
    "rss channel title spaces": lambda n: rss_item(channel_title="x" + " " * n + "y updates on arXiv.org x"),
    "rss categories": lambda n: rss_item(extra="<category>c</category>" * n),
}


def best_time(data: bytes, name: str, runs: int = 3) -> float:
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        try:
            parse_file(data, name)
        except DigestError:
            pass
        best = min(best, time.perf_counter() - started)
    return best


def bench_time(sizes: list[int], only: list[str] | None, limit: float) -> None:
    print(f"load average: {Path('/proc/loadavg').read_text().split()[0]}")
    for field, make in FIELDS.items():
        if only and not any(word in field for word in only):
            continue
        cells, previous = [], None
        for size in sizes:
            data, name = make(size)
            seconds = best_time(data, name, runs=1 if previous and previous > 5 else 3)
            ratio = f" (x{seconds / previous:.1f})" if previous and previous > 0.001 else ""
            cells.append(f"N={size:,}: {seconds:.3f} s{ratio}")
            previous = seconds
            if seconds > limit:
                cells.append("stopped: too slow")
                break
        print(f"{field:<45} " + "; ".join(cells), flush=True)


def nested(levels: int, inside_item: bool) -> bytes:
    body = b"<x>" * levels + b"</x>" * levels
    if inside_item:
        return RSS_HEAD + b"<item><title>t</title><description>" + body + b"</description></item>" + RSS_TAIL
    return RSS_HEAD + body + b"<item><title>t</title></item>" + RSS_TAIL


ATTRIBUTES_99 = b" ".join(bytes([97 + j % 26]) * (1 + j // 26) + b"=''" for j in range(99))  # a='' b='' ... uuuu=''


def shapes(size: int) -> dict[str, object]:
    """20 MB feeds of different shapes, each about `size` bytes: name -> a function making the bytes (made one at a
    time, so this process stays small and its children start small)."""
    item = b"<item><title>A paper title</title><link>https://example.org/p</link><description>An abstract.</description></item>\n"
    tiny = b"<item><title>t</title></item>"
    return {
        "nested <x> in the channel (2.7M tags per 19 MB)": lambda: nested(size // 7, inside_item=False),
        "nested <x> in one description": lambda: nested(size // 7, inside_item=True),
        "nested, never closed": lambda: RSS_HEAD + b"<item><title>t</title><description>" + b"<x>" * (size // 3),
        "many ordinary items": lambda: RSS_HEAD + item * (size // len(item)) + RSS_TAIL,
        "many tiny items": lambda: RSS_HEAD + tiny * (size // len(tiny)) + RSS_TAIL,
        "many categories in one item": lambda: RSS_HEAD + b"<item><title>t</title>" + b"<category>c</category>" * (size // 22) + b"</item>" + RSS_TAIL,
        "many authors in one item": lambda: RSS_HEAD + b"<item><title>t</title>" + b"<author>a</author>" * (size // 18) + b"</item>" + RSS_TAIL,
        "many empty tags in one description": lambda: RSS_HEAD + b"<item><title>t</title><description>" + b"<x/>" * (size // 4) + b"</description></item>" + RSS_TAIL,
        "many attributes on one tag": lambda: RSS_HEAD + b"<item><title>t</title><x " + b"".join(b"a%d='1' " % i for i in range(size // 10)) + b"/></item>" + RSS_TAIL,
        "one 20 MB title": lambda: RSS_HEAD + b"<item><title>" + b"word " * (size // 5) + b"</title></item>" + RSS_TAIL,
        "escaped markup in one description": lambda: RSS_HEAD + b"<item><title>t</title><description>" + b"&lt;b&gt;x&lt;/b&gt;" * (size // 19) + b"</description></item>" + RSS_TAIL,
        "atom entries with many links": lambda: (b'<feed xmlns="http://www.w3.org/2005/Atom"><title>x</title><entry><title>t</title><id>i</id>'
                                                 + b'<link href="https://example.org/"/>' * (size // 34) + b"</entry></feed>"),
        "entity amplification (100 kB entity x 200,000)": lambda: (
            b'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY big "' + b"x" * 100_000 + b'">]>' + RSS_HEAD.split(b"\n", 1)[1]
            + b"<item><title>t</title><description>" + b"&big;" * ((size - 100_000) // 5) + b"</description></item>" + RSS_TAIL),
        "nested entities (billion laughs)": lambda: (
            b'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY a0 "lol">'
            + b"".join(b'<!ENTITY a%d "%s">' % (i, b"&a%d;" % (i - 1) * 10) for i in range(1, 10)) + b"]>"
            + RSS_HEAD.split(b"\n", 1)[1] + b"<item><title>t</title><description>" + b"&a9;" * ((size - 2000) // 4)
            + b"</description></item>" + RSS_TAIL),
        # Just inside every limit of digest.sources.shape: the worst a feed can be and still be read.
        "at the limits: 250 deep x 999 blocks (499,500 tags)": lambda: (
            RSS_HEAD + b"<item><title>t</title><description>" + (b"<x>" * 250 + b"</x>" * 250) * 999
            + b"</description></item>" + RSS_TAIL),
        "at the limits: 499,900 empty tags": lambda: (
            RSS_HEAD + b"<item><title>t</title><description>" + b"<x/>" * 499_900 + b"</description></item>" + RSS_TAIL),
        "at the limits: 83,000 tiny items": lambda: RSS_HEAD + tiny * 83_000 + RSS_TAIL,
        "at the limits: 62,000 ordinary items": lambda: RSS_HEAD + item * 62_000 + RSS_TAIL,
        "at the limits: 499,000 references + 499,000 tags": lambda: (
            RSS_HEAD + b"<item><title>t</title><description>" + b"&amp;<x/>" * 499_000
            + b"</description></item>" + RSS_TAIL),
        "at the limits: 499,000 references + 499,000 tags of one attribute": lambda: (
            RSS_HEAD + b"<item><title>t</title><description>" + b"&amp;<x a=''/>" * 499_000
            + b"</description></item>" + RSS_TAIL),
        "at the limits: 5,000 entries x 99 attributes (loose parser)": lambda: (
            RSS_HEAD + b"".join(b"<item><title>t%d &</title><x %s/></item>" % (i, ATTRIBUTES_99) for i in range(5_000)) + RSS_TAIL),
        "99 attributes on a tag of every entry (loose parser)": lambda: (
            RSS_HEAD + b"".join(b"<item><title>t%d &</title><x %s/></item>" % (i, ATTRIBUTES_99) for i in range(size // 680)) + RSS_TAIL),
        "at the limits: 99,000 JSON items": lambda: (
            b"[" + b",".join(b'{"paper":{"id":"2401.%05d","title":"A title %d","summary":"An abstract."}}' % (i % 100_000, i)
                             for i in range(99_000)) + b"]"),
        "JSON: empty objects": lambda: b"[" + b"{}," * (size // 3) + b"{}]",
        "JSON: items with empty authors lists": lambda: b"[" + b'{"paper":{"id":"2401.12345","title":"t","authors":[[],[],[]]}},' * (size // 64) + b"{}]",
        "JSON: one long list of numbers": lambda: b"[" + b"0," * (size // 2) + b"0]",
    }


PROBE = """
import sys, time
from digest.errors import DigestError
from digest.sources.parse import parse_source
def status_mb(field):
    return int(next(line for line in open("/proc/self/status") if line.startswith(field)).split()[1]) / 1024
data = open(sys.argv[1], "rb").read()
base = status_mb("VmRSS")
started = time.perf_counter()
try:
    result = parse_source("hf-daily" if data[:1] == b"[" else "feed", data, source_url="https://example.org/feed")
    outcome = f"{len(result.papers)} papers, {len(result.warnings)} warnings"
except DigestError as exc:
    outcome = f"refused: {str(exc)[:90]}"
except BaseException as exc:
    outcome = f"ESCAPED {type(exc).__name__}: {str(exc)[:80]}"
# VmHWM is this process image's own high-water mark; ru_maxrss would also count what a big parent had when it forked.
peak = status_mb("VmHWM")
print(f"{peak:.0f} {base:.0f} {time.perf_counter() - started:.1f} {outcome}")
"""


def bench_memory(mb: float, only: list[str] | None) -> None:
    print(f"load average: {Path('/proc/loadavg').read_text().split()[0]}")
    with tempfile.TemporaryDirectory(prefix="digest-hostile-") as tmp:
        for name, make in shapes(int(mb * 1_000_000)).items():
            if only and not any(word in name for word in only):
                continue
            path = Path(tmp) / "feed.xml"
            path.write_bytes(make())
            done = subprocess.run([sys.executable, "-c", PROBE, str(path)], capture_output=True, text=True)
            if done.returncode != 0:
                print(f"{name:<50} {path.stat().st_size / 1e6:5.1f} MB: the process died ({done.returncode}) {done.stderr[-200:]}")
                continue
            peak, base, seconds, outcome = done.stdout.split(" ", 3)
            print(f"{name:<50} {path.stat().st_size / 1e6:5.1f} MB: peak RSS {peak:>5} MB (at start {base} MB), {seconds} s, {outcome.strip()}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["time", "memory"])
    parser.add_argument("--sizes", default="25000,50000,100000,200000")
    parser.add_argument("--mb", type=float, default=20)
    parser.add_argument("--only", default="", help="comma-separated words: only the cases whose name holds one")
    parser.add_argument("--limit", type=float, default=60, help="stop growing a field once one size takes this long")
    args = parser.parse_args()
    only = [w for w in args.only.split(",") if w] or None
    if args.what == "time":
        bench_time([int(s) for s in args.sizes.split(",")], only, args.limit)
    else:
        bench_memory(args.mb, only)


if __name__ == "__main__":
    main()
