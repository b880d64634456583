"""The docs are honest. Every command and subcommand of `digest` has help text, every option says what it does, and
each command appears in README.md (as `digest <command> ...`) and in the generated CLI reference. Every console
example of README.md and docs/*.md prints what the page says (the convention is in tests/docs_examples.py and
docs/development.md). Fails until a new command is documented: that is the point."""

from __future__ import annotations

import os
import re
import time

import click
import pytest
from docs_examples import PAGES, ROOT, failures, parse_page, run_page, update_page

from digest.cli import main

README = (ROOT / "README.md").read_text(encoding="utf-8")
CLI_PAGE = ROOT / "docs" / "cli.md"


def walk(command: click.Command, path: tuple[str, ...] = ()):
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            yield from walk(sub, path + (name,))


COMMANDS = [(" ".join(path), command) for path, command in walk(main) if path]


@pytest.mark.parametrize("name, command", COMMANDS, ids=[name for name, _ in COMMANDS])
def test_command_has_help_text(name, command):
    assert (command.help or "").strip(), f"`digest {name}` has no help text (a docstring)"
    missing = [p.name for p in command.params if isinstance(p, click.Option) and not p.hidden and not (p.help or "").strip()]
    assert not missing, f"`digest {name}` options without help: {missing}"


@pytest.mark.parametrize("name, command", COMMANDS, ids=[name for name, _ in COMMANDS])
def test_command_summary_is_one_whole_line(name, command):
    # The CLI reference and `digest --help` list each command by its docstring's first line: a sentence cut at the
    # line break reads as truncated ("Import papers from a local FILE; the format is detected: RSS 1.0/2.0, ...").
    first, *rest = (command.help or "").strip().split("\n\n")[0].splitlines()
    assert not rest, f"`digest {name}`: the first paragraph of its help runs over {len(rest) + 1} lines; make its first line a summary"
    assert first.rstrip().endswith((".", ")")), f"`digest {name}`: the summary line does not end a sentence: {first!r}"


@pytest.mark.parametrize("name", [name for name, _ in COMMANDS])
def test_command_is_in_readme(name):
    assert re.search(rf"\bdigest {re.escape(name)}(?![\w-])", README), f"`digest {name}` does not appear in README.md"


def test_main_options_have_help():
    assert (main.help or "").strip()
    assert all((p.help or "").strip() for p in main.params if isinstance(p, click.Option))


def _cli_reference() -> str:
    """docs/cli.md as mkdocs-click renders it: the directive's options, applied to the real commands."""
    extension = pytest.importorskip("mkdocs_click._extension", reason="mkdocs-click is not installed (pip install '.[docs]')")
    text = CLI_PAGE.read_text(encoding="utf-8")
    directive = re.search(r"^::: mkdocs-click\n((?:    :\w+: .*\n)+)", text, re.M)
    assert directive, "docs/cli.md has no mkdocs-click directive"
    options = dict(re.findall(r":(\w+): (.*)", directive.group(1)))
    assert (options["module"], options["command"]) == ("digest.cli", "main")
    return "\n".join(extension.replace_command_docs(**options))


@pytest.mark.parametrize("name", [name for name, _ in COMMANDS])
def test_command_is_in_cli_reference(name):
    reference = _cli_reference()
    # each command has its own section, whose usage line names it in full
    assert re.search(rf"^digest {re.escape(name)} \[OPTIONS\]", reference, re.M), f"`digest {name}` is not in the CLI reference"


# -- console examples -----------------------------------------------------------------------------------------

PARSED = [parse_page(path) for path in PAGES]
RUNNABLE = [page for page in PARSED if any(not block.skip for block in page.blocks)]
SKIPPED = [(page, block) for page in PARSED for block in page.blocks if block.skip]


@pytest.fixture(scope="module")
def page_results(request):
    """The results of every page selected for this session, computed two pages at a time (each page's run is one
    process at a time, and pages are independent), the first time a page's test asks."""
    from concurrent.futures import ThreadPoolExecutor

    selected = [item.callspec.params["page"] for item in request.session.items
                if item.originalname == "test_console_examples_print_what_the_page_says"]
    with ThreadPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
        futures = {page.name: pool.submit(run_page, page) for page in selected}
        return {name: future.exception() or future.result() for name, future in futures.items()}


@pytest.mark.parametrize("page", RUNNABLE, ids=[page.name for page in RUNNABLE])
def test_console_examples_print_what_the_page_says(page, page_results):
    results = page_results[page.name]
    if isinstance(results, BaseException):  # this page's run failed as a whole (a timeout, an unfinished example)
        raise results
    bad = failures(page, results)
    if bad and os.environ.get("DIGEST_UPDATE_DOCS"):
        update_page(page, results)
        pytest.skip(f"DIGEST_UPDATE_DOCS: rewrote {len(bad)} example(s) in {page.name}; review the diff")
    assert not bad, f"{len(bad)} console example(s) of {page.name} print something else " \
                    f"(DIGEST_UPDATE_DOCS=1 rewrites them):\n\n" + "\n\n".join(bad)


@pytest.mark.parametrize("page, block", SKIPPED, ids=[f"{page.name}:{block.line}" for page, block in SKIPPED])
def test_console_example_skipped_with_a_reason(page, block):
    assert block.commands, f"{page.name}:{block.line}: a skipped console block without a command"
    pytest.skip(f"{page.name}:{block.line} is not run: {block.skip}")


def test_console_examples_exist_and_run_offline_in_most_pages():
    runnable = sum(len(block.commands) for page in PARSED for block in page.blocks if not block.skip)
    skipped = sum(len(block.commands) for _, block in SKIPPED)
    assert runnable > 3 * skipped, f"{runnable} console commands run, {skipped} skipped: most examples must run offline"
    assert any(page.path.name == "README.md" for page in RUNNABLE), "the README's tour has no console example"


@pytest.mark.parametrize("path", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_shell_sessions_are_console_blocks(path):
    """A `$ digest ...` line outside a ```console block would escape the tests: blocks without output are ```bash."""
    fence, offenders = None, []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith("```"):
            fence = None if fence is not None else line[3:].strip()
        elif fence is not None and fence != "console" and line.startswith("$ "):
            offenders.append(f"{n}: {line}")
    assert not offenders, f"{path.name}: `$ ` lines outside ```console blocks:\n" + "\n".join(offenders)


def test_normalise_keeps_what_matters():
    from docs_examples import matches

    assert matches(["sent 3 in 1.1s", "..."], ["sent 3 in 12.0s", "a", "b"])
    assert matches(["Subject: Papers for Fri 27 Nov: X"], ["Subject: Papers for Mon 3 Aug: X"])
    assert not matches(["sent 3 in 1.1s"], ["sent 4 in 1.1s"])
    assert not matches(["a", "..."], ["b"])
    assert matches(["smtp_host    x  default", "  indented"], ["smtp_host        x  default", "  indented"])
    assert not matches(["smtp_host  x"], ["smtp_host x"])


def test_run_page_catches_wrong_output_and_exit_status(tmp_path):
    """The harness itself: setup runs first, state carries across blocks, skipped blocks do not run, and a wrong
    output or exit status is reported (so a stale example cannot pass)."""
    from docs_examples import parse_page as parse

    page = tmp_path / "page.md"
    page.write_text("\n".join([
        "<!-- console: setup", "$ export GREETING=hello", "-->",
        "```console", "$ echo $GREETING > note.txt", "$ cat note.txt", "hello", "```",
        "<!-- console: skip needs the moon -->", "```console", "$ false", "```",
        "```console", "$ cat note.txt; exit_with() { return $1; }; exit_with 3    # exit 3", "hello",
        "$ digest config", "...", "$ echo $HOME", "/home/you", "$ false", "```",
    ]) + "\n", encoding="utf-8")
    parsed = parse(page)
    assert [b.skip for b in parsed.blocks] == [None, "needs the moon", None]
    results = run_page(parsed)
    assert [r.command.text.split()[0] for r in results] == ["echo", "cat", "cat", "digest", "echo", "false"]
    bad = failures(parsed, results)
    assert len(bad) == 1 and "$ false" in bad[0] and "exit status 1, expected 0" in bad[0]


def test_run_page_keeps_a_background_server_for_the_blocks_after_it(tmp_path):
    """A `console: background` block: its command keeps running while the next blocks talk to it, its output is
    compared, and it is stopped when the page ends (and before the next background command starts)."""
    from docs_examples import parse_page as parse

    page = tmp_path / "page.md"
    page.write_text("\n".join([
        "<!-- console: background -->", "```console", "$ sh -c 'echo started > pipe.txt; echo serving $$; exec sleep 300'", "serving 1", "```",
        "From another terminal:", "```console", "$ cat pipe.txt", "started", "```",
        "<!-- console: background -->", "```console", "$ sh -c 'echo second $$; exec sleep 300'", "second 1", "```",
        "<!-- console: background -->", "```console", "$ sh -c 'echo dies; exit 3'    # exit 3", "dies", "```",
    ]) + "\n", encoding="utf-8")
    parsed = parse(page)
    assert [b.background for b in parsed.blocks] == [True, False, True, True]
    results = run_page(parsed)
    assert [(r.output[:1], r.exit) for r in results][1:] == [(["started"], 0), (results[2].output[:1], 0), (["dies"], 3)], [(r.output, r.exit) for r in results]
    assert results[0].output[0].startswith("serving ") and results[2].output[0].startswith("second "), [r.output for r in results]
    pids = [int(results[0].output[0].split()[1]), int(results[2].output[0].split()[1])]
    for pid in pids:  # both servers are gone (or going: a process killed a moment ago may not be reaped yet)
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"background process {pid} still runs")
    bad = failures(parsed, results)
    assert len(bad) == 2 and all("documented:" in b for b in bad)  # "serving 1" and "second 1": the pids differ
