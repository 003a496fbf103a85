"""Look at the built site in a real browser: headless Chromium renders the home page and a how-to
page, and the screenshots must show the theme (not a blank page, not unstyled HTML): the theme's
header bar across the top, the navigation in the left sidebar, text in the content. A page is
also checked for table cells whose code names the browser broke mid-word.

    python tests/docs_check.py site/ --screenshots build/docs-screenshots   # after `mkdocs build`

``make docs-check`` builds the site and runs this; ``tests/test_docs_build.py`` runs it on the
site it builds. Without Chromium (``apt-get install chromium``) it says so and exits 0, or fails
when ``BATCHLAW_REQUIRE_CHROMIUM=1`` (as ``.ci/run`` sets it, where Chromium is installed).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
PAGES = {"home": "index.html", "howto": "howto-schedule/index.html"}
WIDTH, HEIGHT = 1400, 1000  # wide enough for Material's left navigation sidebar (>= 76.25em)
NARROW = 760  # a phone-like width where table columns are squeezed
MISSING = ("Chromium is not installed, so the site's screenshot check is skipped: "
           "install it with `apt-get install chromium` (Debian/Ubuntu) and rerun `make docs-check`.")


def find_browser() -> str | None:
    """The path of a Chromium (or Chrome) executable, or None. ``BATCHLAW_CHROMIUM`` overrides."""
    if os.environ.get("BATCHLAW_CHROMIUM"):
        return shutil.which(os.environ["BATCHLAW_CHROMIUM"])
    return next((p for p in map(shutil.which, BROWSERS) if p), None)


def _chromium(browser: str, *args: str, timeout: int = 60) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--hide-scrollbars", "--no-first-run", "--disable-extensions", "--mute-audio",
               f"--user-data-dir={profile}", "--virtual-time-budget=4000", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def screenshot(browser: str, page: Path, out: Path, width: int = WIDTH, height: int = HEIGHT) -> Path:
    """A PNG of ``page`` (a file of the built site) as Chromium renders it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    proc = _chromium(browser, f"--window-size={width},{height}", f"--screenshot={out}", page.resolve().as_uri())
    if not out.is_file():
        raise RuntimeError(f"Chromium wrote no screenshot of {page} (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    return out


@dataclass
class Look:
    """What a screenshot shows, measured on its pixels."""

    inked: float  # share of pixels that are not background white
    header: float  # share of the top bar's pixels in the theme's primary colour
    nav_ink: float  # share of dark (text) pixels in the left sidebar
    content_ink: float  # share of dark pixels in the content column


def look(png: Path) -> Look:
    """Measure a screenshot: is anything drawn, is the theme's header there, is there navigation text."""
    import numpy as np
    from PIL import Image

    img = np.asarray(Image.open(png).convert("RGB")).astype(int)
    h, w, _ = img.shape
    white = (img > 245).all(axis=2)
    dark = img.max(axis=2) < 140
    # Material's default primary colour (indigo, #4051b5): blue well above red and green.
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    primary = (b > 150) & (b - r > 60) & (b - g > 40)
    bar = primary[: min(40, h)]
    left = dark[60:, : int(w * 0.2)]
    middle = dark[60:, int(w * 0.25): int(w * 0.75)]
    return Look(inked=float(1 - white.mean()), header=float(bar.mean()), nav_ink=float(left.mean()),
                content_ink=float(middle.mean()))


def look_problems(name: str, lk: Look) -> list[str]:
    """Why a screenshot does not show a themed page (empty when it does)."""
    problems = []
    if lk.inked < 0.03:
        problems.append(f"{name}: the page is blank ({lk.inked:.1%} of the pixels drawn)")
    if lk.header < 0.5:
        problems.append(f"{name}: no theme header bar at the top ({lk.header:.0%} of it in the theme colour): "
                        "the stylesheet did not load")
    if lk.nav_ink < 0.002:
        problems.append(f"{name}: no navigation text in the left sidebar ({lk.nav_ink:.2%} dark pixels)")
    if lk.content_ink < 0.005:
        problems.append(f"{name}: no text in the content column ({lk.content_ink:.2%} dark pixels)")
    return problems


# Appended to a copy of a page: lists the table cells' code names that the browser laid out on more
# than one line although they hold no space (a word broken mid-word), into the page title.
_PROBE = """<script>
window.addEventListener('load', function () {
  var broken = [];
  document.querySelectorAll('.md-typeset table td code, .md-typeset table th code').forEach(function (c) {
    var lines = new Set(Array.from(c.getClientRects()).map(function (r) { return Math.round(r.top); }));
    if (!/\\s/.test(c.textContent) && lines.size > 1) broken.push(c.textContent);
  });
  document.title = 'BROKEN[' + broken.join('|') + ']';
});
</script>"""


def broken_code_in_tables(browser: str, page: Path, width: int = NARROW) -> list[str]:
    """The code names in the page's tables that the browser broke across lines at ``width`` pixels."""
    probe = page.with_name(f"_probe_{page.name}")
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", _PROBE + "</body>"), encoding="utf-8")
    try:
        proc = _chromium(browser, f"--window-size={width},{HEIGHT}", "--dump-dom", probe.resolve().as_uri())
    finally:
        probe.unlink()
    m = re.search(r"<title>BROKEN\[(.*?)\]</title>", proc.stdout, re.S)
    if m is None:
        raise RuntimeError(f"the layout probe did not run in {page} (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    return [s for s in m.group(1).split("|") if s]


def check_site(site: Path, screenshots: Path, browser: str) -> list[str]:
    """Every problem found in the built ``site``; the screenshots are left in ``screenshots``."""
    problems = []
    for name, rel in PAGES.items():
        page = site / rel
        if not page.is_file():
            problems.append(f"{rel} is not in {site}: build the site first")
            continue
        png = screenshot(browser, page, screenshots / f"{name}.png")
        problems += look_problems(f"{rel} ({png})", look(png))
    for rel in ("howto-schedule/index.html", "reference-cli/index.html"):
        broken = broken_code_in_tables(browser, site / rel)
        if broken:
            problems.append(f"{rel}: code names broken mid-word in table cells at {NARROW} px: {broken[:8]}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Screenshot the built docs in headless Chromium and check "
                                                 "that they render with the theme.")
    parser.add_argument("site", type=Path, help="the built site (mkdocs build --site-dir SITE)")
    parser.add_argument("--screenshots", type=Path, default=Path("build/docs-screenshots"),
                        help="where the PNGs go (default: build/docs-screenshots)")
    args = parser.parse_args(argv)
    browser = find_browser()
    if browser is None:
        print(MISSING, file=sys.stderr)
        return 1 if os.environ.get("BATCHLAW_REQUIRE_CHROMIUM") == "1" else 0
    problems = check_site(args.site, args.screenshots, browser)
    for p in problems:
        print(p, file=sys.stderr)
    if not problems:
        print(f"docs check: {', '.join(PAGES.values())} render with the theme and navigation "
              f"(screenshots in {args.screenshots}); table code names unbroken")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
