"""The README's picture of the leaderboard: its first screen at a laptop's size, taken in headless Chromium.

Needs the test extras (playwright) and a Chromium binary (Debian's, at /usr/bin/chromium): `make screenshot`.
"""

from __future__ import annotations

import sys
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
LAPTOP = (1366, 768)  # width, height in CSS pixels


def take(index: Path, out: Path, chromium: Path = CHROMIUM, full_page: bool = False) -> Path:
    """Open `index` (a built leaderboard) and save its first screen (or the whole page) as PNG at `out`."""
    from playwright.sync_api import sync_playwright

    if not chromium.exists():
        raise FileNotFoundError(f"no Chromium at {chromium}: install it (sudo apt-get install chromium)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(chromium), args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": LAPTOP[0], "height": LAPTOP[1]})
            page.goto(index.resolve().as_uri())
            page.screenshot(path=str(out), full_page=full_page)
        finally:
            browser.close()
    return out


if __name__ == "__main__":  # python -m bench_leaderboard.screenshot RESULTS/leaderboard/index.html OUT.png
    print(take(Path(sys.argv[1]), Path(sys.argv[2])))
