"""Runs the console examples of README.md and docs/*.md against their real output, as sqlite-utils keeps its
docs honest. The convention (also described in docs/development.md):

- A ```console block holds `$ command` lines, each followed by the output it prints (stdout and stderr
  together). A line ending in `\\` continues the command on the next line.
- The blocks of one page run in order, in one bash process, so `export` and files carry over: HOME is a fresh
  temporary directory, shown as /home/you in the output; the working directory is ~/src/digest, a checkout
  with the bundled samples at digest/data/ and deploy/; no DIGEST_* variable of the caller leaks in.
- A command must exit 0, unless it ends with a comment `# exit N`.
- An output line `...` stands for any number of lines.
- Before comparing, both sides are normalised (NORMALISE below): clock times and dates, run durations, outbox
  file names, the day named in an email, the signed tokens in links, message sizes, the host, pid and age of a
  heartbeat in `digest status`, and the padding between columns. Nothing else is: the rest must match exactly.
- A block that cannot run offline, or that starts a server, is preceded by `<!-- console: skip REASON -->` and is
  not run; the test reports it as skipped with that reason.
- `<!-- console: setup` ... `-->` holds hidden `$ ` commands run before the page's first block (unchecked).
- A block preceded by `<!-- console: background -->` holds one server command (`digest web ...`): it runs the
  installed `digest` in the background, its output is compared once it has printed the documented number of
  lines, and it keeps running for the blocks after it (`curl` from "another terminal") until the page's next
  background command or the page's end, when it gets SIGTERM.

DIGEST_UPDATE_DOCS=1 rewrites the documented output of every command whose output does not match with what it
printed (review the diff, as with the golden emails). This module only reads and (in update mode) writes the docs.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import string
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SKIP = re.compile(r"^<!--\s*console:\s*skip\s+(?P<reason>.+?)\s*-->\s*$")
SETUP_OPEN = re.compile(r"^<!--\s*console:\s*setup\s*$")
BACKGROUND = re.compile(r"^<!--\s*console:\s*background\s*-->\s*$")
BACKGROUND_WAIT = 60  # seconds a background command has to print its documented lines
EXIT = re.compile(r"#.*\bexit (?:status )?(\d+)\s*$")
ELLIPSIS = "..."
PAGE_TIMEOUT = 600
READER_HOME = "/home/you"  # the temporary HOME, as the docs show it

# (pattern, replacement), applied in order to the documented and the real output alike.
NORMALISE: list[tuple[re.Pattern[str], str]] = [
    # 2026-11-27T07:53:06.123+00:00, 2026-11-27 07:53 UTC, 2026-11-29T20:30:00-05:00, 2026-11-29 20:30 EST
    (re.compile(r"\b\d{4}-\d\d-\d\d[T ]\d\d:\d\d(?::\d\d(?:\.\d+)?)?(?:Z|[+-]\d\d:?\d\d| [A-Z]{3,4}\b)?"), "<time>"),
    (re.compile(r"\b\d{4}-\d\d-\d\d\b"), "<date>"),
    (re.compile(r"\bin \d+(?:\.\d+)?s\b"), "in <seconds>"),  # "sent 3, ... in 1.1s"
    (re.compile(r"\b\d{8}-\d{6}-\d{5}-[0-9a-f]{6}-"), "<stamp>-"),  # outbox file names
    # "Fri 27 Nov" in subjects, "Friday 27 November 2026" in the email's header line
    (re.compile(r"\b(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)[a-z]* \d{1,2} (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)[a-z]*(?: \d{4})?\b"), "<day>"),
    # signed tokens in links carry the time they were made
    (re.compile(r"/(confirm|unsubscribe|preferences|feedback|edition)/[\w.-]+"), r"/\1/<token>"),
    (re.compile(r"\b[\d,]+ bytes\b"), "<n> bytes"),
    # `digest status`'s heartbeats: "daemon on HOST (pid 4242, ...): last ticked 3 s ago"
    (re.compile(r"\bon [\w.-]+ \(pid \d+"), "on <host> (pid <pid>"),
    (re.compile(r"\b\d+ (?:s|min|h|days) ago\b"), "<n> ago"),
    # column padding: a longer name elsewhere in a table (a new setting, a longer path) widens every row
    (re.compile(r"(?<=\S) {2,}"), "  "),
]


@dataclass
class Command:
    line: int  # 1-based line of the `$ ` line in its page
    text: str  # as bash runs it (continuation lines included)
    expected: list[str] = field(default_factory=list)
    exit: int = 0
    output_lines: tuple[int, int] = (0, 0)  # the documented output's [start, end) line indexes in the page


@dataclass
class Block:
    page: Path
    line: int
    commands: list[Command]
    skip: str | None = None
    background: bool = False


@dataclass
class Page:
    path: Path
    blocks: list[Block]
    setup: list[str]

    @property
    def name(self) -> str:
        return self.path.relative_to(ROOT).as_posix() if self.path.is_relative_to(ROOT) else self.path.name


def parse_page(path: Path) -> Page:
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    setup: list[str] = []
    i = 0
    while i < len(lines):
        if SETUP_OPEN.match(lines[i]):
            i += 1
            while i < len(lines) and lines[i].strip() != "-->":
                if lines[i].startswith("$ "):
                    setup.append(lines[i][2:])
                i += 1
        elif lines[i].strip() == "```console":
            skip = next((m.group("reason") for m in [SKIP.match(lines[i - 1])] if m), None) if i else None
            start, i = i, i + 1
            body: list[int] = []
            while i < len(lines) and lines[i].strip() != "```":
                body.append(i)
                i += 1
            background = bool(start and BACKGROUND.match(lines[start - 1]))
            block = Block(path, start + 1, _commands(lines, body), skip, background)
            if background and len(block.commands) != 1:
                raise ValueError(f"{path.name}:{start + 1}: a background block holds exactly one command")
            blocks.append(block)
        i += 1
    return Page(path, blocks, setup)


def _commands(lines: list[str], body: list[int]) -> list[Command]:
    commands: list[Command] = []
    k = 0
    while k < len(body):
        n = body[k]
        if not lines[n].startswith("$ "):
            raise ValueError(f"line {n + 1}: a console block starts with a `$ ` command line")
        text = [lines[n][2:]]
        while text[-1].endswith("\\") and k + 1 < len(body):
            k += 1
            text.append(lines[body[k]])
        m = EXIT.search(text[-1])
        command = Command(n + 1, "\n".join(text), exit=int(m.group(1)) if m else 0)
        k += 1
        first = body[k] if k < len(body) else (body[-1] + 1 if body else n + 1)
        while k < len(body) and not lines[body[k]].startswith("$ "):
            command.expected.append(lines[body[k]])
            k += 1
        command.output_lines = (first, first + len(command.expected))
        commands.append(command)
    return commands


def normalise(text: str) -> str:
    for pattern, replacement in NORMALISE:
        text = pattern.sub(replacement, text)
    return text.rstrip()


def matches(expected: list[str], actual: list[str]) -> bool:
    """Line by line after normalising; a `...` line matches any run of lines (shortest first)."""
    exp = [normalise(line) for line in expected]
    act = [normalise(line) for line in actual]
    while exp and not exp[-1]:
        exp.pop()
    while act and not act[-1]:
        act.pop()

    def walk(i: int, j: int) -> bool:
        if i == len(exp):
            return j == len(act)
        if exp[i] == ELLIPSIS:
            return any(walk(i + 1, k) for k in range(j, len(act) + 1))
        return j < len(act) and exp[i] == act[j] and walk(i + 1, j + 1)

    return walk(0, 0)


@dataclass
class Result:
    command: Command
    output: list[str]
    exit: int


def make_home() -> Path:
    """A fresh HOME exactly as long as READER_HOME, so replacing one by the other keeps columns aligned."""
    alphabet = string.ascii_lowercase + string.digits
    stem = "/tmp/"
    while True:
        home = Path(stem + "".join(random.choice(alphabet) for _ in range(len(READER_HOME) - len(stem))))
        try:
            home.mkdir()
            return home
        except FileExistsError:
            continue


def prepare_workdir(home: Path) -> Path:
    """The working directory of one page's run: a checkout at ~/src/digest with the bundled samples and deploy/."""
    work = home / "src" / "digest"
    (work / "digest").mkdir(parents=True)
    (work / "digest" / "data").symlink_to(ROOT / "digest" / "data")
    (work / "deploy").symlink_to(ROOT / "deploy")
    return work


def page_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_") and not k.startswith("PYTEST")}
    bindir = str(Path(sys.executable).parent)  # the interpreter running the tests has `digest` installed beside it
    env.update(HOME=str(home), PATH=f"{bindir}:/usr/local/bin:/usr/bin:/bin", LANG="C.UTF-8", LC_ALL="C.UTF-8", TZ="UTC",
               COLUMNS="100", TERM="dumb", PYTHONDONTWRITEBYTECODE="1")
    env.pop("VIRTUAL_ENV", None)
    return env


def run_page(page: Page) -> list[Result]:
    """Run the page's setup and its unskipped blocks in one bash process; one Result per command."""
    home = make_home()
    try:
        return _run_in(page, home, prepare_workdir(home))
    finally:
        shutil.rmtree(home, ignore_errors=True)


# A background command runs the installed `digest` (not the warm fork, which is no child of the shell) in a
# process group of its own, stopped before the next one starts and when the page ends; the groups are also
# listed in $HOME/.background, which run_page kills should the shell itself be killed (a timeout).
BACKGROUND_SHELL = f"""
__bg_pid=
__bg_stop() {{ if [ -n "$__bg_pid" ]; then {{ kill -TERM -- -$__bg_pid; wait $__bg_pid; }} 2>/dev/null; __bg_pid=; fi; }}
trap __bg_stop EXIT
__bg_start() {{  # COMMAND OUTFILE LINES
    : >"$2"; rm -f "$2.status"
    set -m; ( unset -f digest; eval "$1"; echo $? >"$2.status" ) >"$2" 2>&1 & __bg_pid=$!; set +m
    echo $__bg_pid >>"$HOME/.background"
    local i=0
    while [ $i -lt {BACKGROUND_WAIT * 10} ] && [ "$(wc -l <"$2")" -lt "$3" ] && [ ! -e "$2.status" ]; do sleep 0.1; i=$((i + 1)); done
    sleep 0.2  # a command that dies right after its last line has written its status by then
    cat "$2"
    if [ -e "$2.status" ]; then __bg_pid=; return "$(cat "$2.status")"; fi
}}
"""


def _background(command: Command, n: int) -> str:
    """The shell lines that start one background command and print what it printed so far."""
    import shlex

    lines = sum(1 for line in command.expected if line != ELLIPSIS)
    return f'__bg_stop; __bg_start {shlex.quote(command.text)} "$HOME/.background-{n}.out" {lines}'


def _run_in(page: Page, home: Path, work: Path) -> list[Result]:
    background = {id(c) for b in page.blocks if not b.skip and b.background for c in b.commands}
    commands = [c for b in page.blocks if not b.skip for c in b.commands]
    script = ["exec 2>&1", "exec </dev/null", BACKGROUND_SHELL]
    server = None
    if not os.environ.get("DIGEST_DOCS_REAL_DIGEST"):  # a warm `digest` (tests/docs_shell.py): the same main, forked
        sock = Path(tempfile.mkdtemp(prefix="digest-docs-")) / "digest.sock"
        shell = Path(__file__).with_name("docs_shell.py")
        server = subprocess.Popen([sys.executable, str(shell), "serve", str(sock)], env=page_env(home), cwd=work,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 60
        while not sock.exists() and server.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        script.append(f'digest() {{ "{sys.executable}" "{shell}" run "{sock}" "$@"; }}')
    script += [f"{line} >/dev/null 2>&1 || echo 'setup failed: {line}'" for line in page.setup]
    for n, command in enumerate(commands):
        text = _background(command, n) if id(command) in background else command.text
        script += [f"printf '\\n@@@begin {n}@@@\\n'", text, f"printf '\\n@@@end {n} %d@@@\\n' $?"]
    try:
        done = subprocess.run(["bash", "--noprofile", "--norc", "-c", "\n".join(script)], cwd=work, env=page_env(home),
                              capture_output=True, text=True, timeout=PAGE_TIMEOUT)
    finally:
        _kill_background(home)
        if server is not None:
            os.killpg(server.pid, signal.SIGKILL)  # the server and any command of it still running
            server.wait()
            shutil.rmtree(sock.parent, ignore_errors=True)
    out = done.stdout
    out = out.replace(str(home), READER_HOME)
    results = []
    for n, command in enumerate(commands):
        m = re.search(rf"\n@@@begin {n}@@@\n(.*?)\n@@@end {n} (\d+)@@@\n", out, re.S)
        if m is None:
            raise AssertionError(f"{page.name}:{command.line}: the example did not finish:\n{out[-2000:]}")
        results.append(Result(command, m.group(1).split("\n"), int(m.group(2))))
    return results


def _kill_background(home: Path) -> None:
    try:
        groups = (home / ".background").read_text().split()
    except FileNotFoundError:
        return
    for pid in groups:
        try:
            os.killpg(int(pid), signal.SIGKILL)
        except (ProcessLookupError, PermissionError, ValueError):
            pass


def failures(page: Page, results: list[Result]) -> list[str]:
    bad = []
    for r in results:
        where = f"{page.name}:{r.command.line}: $ {r.command.text}"
        if r.exit != r.command.exit:
            bad.append(f"{where}\n  exit status {r.exit}, expected {r.command.exit}\n  output:\n" + _indent(r.output))
        elif not matches(r.command.expected, r.output):
            bad.append(f"{where}\n  documented:\n{_indent(r.command.expected)}\n  printed:\n{_indent(r.output)}")
    return bad


def _indent(lines: list[str]) -> str:
    return "\n".join("    | " + line for line in lines)


def update_page(page: Page, results: list[Result]) -> bool:
    """Write each mismatching command's real output into the page (DIGEST_UPDATE_DOCS=1); True if it changed."""
    lines = page.path.read_text(encoding="utf-8").split("\n")
    changed = False
    for r in sorted(results, key=lambda r: -r.command.line):  # bottom up, so earlier line numbers stay valid
        if r.exit == r.command.exit and matches(r.command.expected, r.output):
            continue
        start, end = r.command.output_lines
        output = list(r.output)
        while output and not output[-1].strip():
            output.pop()
        lines[start:end] = output
        changed = True
    if changed:
        page.path.write_text("\n".join(lines), encoding="utf-8")
    return changed
