"""The rendered email in headless Chromium (Debian's /usr/bin/chromium, driven by Playwright): at 600 px and on a
375 px phone, light and dark, and with <style> stripped, nothing overflows the viewport and the colour scheme
applies. Screenshots land in tests/artifacts/ (gitignored) for a human to look at.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_email import hostile_edition
from test_render import DigestRenderer, RankResult, fixed_edition, long_picks, make_paper, pick, render_fixed

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).parent / "artifacts"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = [pytest.mark.browser, pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed at /usr/bin/chromium")]

# Elements whose right edge passes the viewport (the hidden preheader has no box that matters).
OVERFLOW_JS = """() => {
  const width = document.documentElement.clientWidth;
  const wide = [];
  for (const el of document.body.querySelectorAll('*')) {
    const r = el.getBoundingClientRect();
    if (r.width && r.right > width + 0.5) wide.push(`${el.tagName}.${el.className} right=${Math.round(r.right)}`);
  }
  const injected = document.body.querySelectorAll('script, img, b, iframe, [onerror]').length;  // a feed's markup must show as text
  return {scrollWidth: document.documentElement.scrollWidth, width, wide, injected};
}"""


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def emails() -> dict[str, str]:
    renderer = DigestRenderer()
    no_match = RankResult(7, trending=[pick(make_paper(11, "Scaling Laws for Sparse Mixture-of-Experts Retrieval", upvotes=130), ("hf-daily",)),
                                       pick(make_paper(12, "A Benchmark for Long-Horizon Agents", authors=["Frances Allen"]), ("hf-daily",))], matched=False)
    edition = render_fixed(renderer, fixed_edition()).html
    return {"edition": edition, "no-match": render_fixed(renderer, no_match).html,
            # LaTeX, markup, long URLs and words, CJK, emoji, RTL and combining marks in titles; 100 picks past the HTML budget
            "hostile": render_fixed(renderer, hostile_edition()).html, "most-picks": render_fixed(renderer, RankResult(7, long_picks(100), [])).html,
            # a client that strips <style>: only the inlined styles remain
            "no-style": edition[: edition.index("<style")] + edition[edition.index("</style>") + len("</style>"):]}


def open_page(browser, html: str, width: int, scheme: str):
    page = browser.new_page(viewport={"width": width, "height": 900}, color_scheme=scheme)
    # no network: every request the email would make is refused, so the test cannot reach the internet
    page.route("**/*", lambda route: route.abort())
    page.set_content(html, wait_until="load")
    return page


CASES = [(name, width, scheme) for name in ("edition", "no-match", "no-style") for width in (600, 375) for scheme in ("light", "dark")
         if not (name == "no-style" and scheme == "dark")]  # without <style> there is no dark mode
CASES += [(name, width, scheme) for name in ("hostile", "most-picks") for width in (375, 1200) for scheme in ("light", "dark")]


@pytest.mark.parametrize(("name", "width", "scheme"), CASES, ids=[f"{n}-{w}px-{s}" for n, w, s in CASES])
def test_render_digest_fits_the_viewport(browser, emails, name, width, scheme):
    page = open_page(browser, emails[name], width, scheme)
    try:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"render-{name}-{width}-{scheme}.png"), full_page=True)
        layout = page.evaluate(OVERFLOW_JS)
        assert layout["scrollWidth"] <= width, layout
        assert not layout["wide"], layout["wide"][:5]
        assert layout["injected"] == 0
        if name != "no-match":
            card = page.locator(".card").first
            assert card.bounding_box()["width"] <= min(width, 600)
    finally:
        page.close()


@pytest.mark.parametrize(("scheme", "card_background", "title_colour"), [
    ("light", "rgb(255, 255, 255)", "rgb(17, 24, 39)"),
    ("dark", "rgb(28, 31, 38)", "rgb(243, 244, 246)"),
])
def test_render_digest_follows_the_colour_scheme(browser, emails, scheme, card_background, title_colour):
    page = open_page(browser, emails["edition"], 600, scheme)
    try:
        colours = page.evaluate("""() => ({
            card: getComputedStyle(document.querySelector('.card')).backgroundColor,
            title: getComputedStyle(document.querySelector('.title')).color})""")
        assert colours == {"card": card_background, "title": title_colour}
    finally:
        page.close()


def test_render_digest_keeps_the_600px_column_on_a_wide_screen(browser, emails):
    page = open_page(browser, emails["edition"], 1200, "light")
    try:
        box = page.locator(".wrap").bounding_box()
        assert box["width"] == 600 and 250 < box["x"] < 350  # centred
    finally:
        page.close()


AXE = Path(__file__).parent / "node" / "node_modules" / "axe-core" / "axe.min.js"
CONTRAST_CASES = [(name, width, scheme) for name in ("edition", "no-match", "no-style") for width in (600, 375) for scheme in ("light", "dark")
                  if not (name == "no-style" and scheme == "dark")]


@pytest.mark.skipif(not AXE.exists(), reason="axe-core is not installed: npm ci --prefix tests/node (as .ci/run does)")
@pytest.mark.parametrize(("name", "width", "scheme"), CONTRAST_CASES, ids=[f"{n}-{w}px-{s}" for n, w, s in CONTRAST_CASES])
def test_render_digest_text_is_readable_against_its_background(browser, emails, name, width, scheme):
    """WCAG AA contrast (axe-core's color-contrast rule, 4.5:1 for small text): the small grey text on the grey page
    (View in your browser, the section heading, the footer and its links) and the dots between a card's links."""
    page = open_page(browser, emails[name], width, scheme)
    try:
        page.add_script_tag(path=str(AXE))
        result = page.evaluate("async () => await axe.run(document, {runOnly: ['color-contrast'], resultTypes: ['violations']})")
        failing = [(node["target"], node["any"][0]["message"][:120] if node["any"] else "") for v in result["violations"] for node in v["nodes"]]
        assert failing == [], failing[:6]
    finally:
        page.close()
