"""Headless Chromium as the browser tests, `scripts/screenshots.py` and `benchmarks/app_latency.py --browser` drive
it: Debian's chromium through playwright, offline, with nothing that phones home."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
MISSING = f"needs Debian's chromium at {CHROMIUM} (apt-get install -y chromium)"
# No sandbox (containers), no GPU, no background traffic.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1400, "height": 1000}


@contextmanager
def chromium():
    """A launched browser, closed on leaving. Needs playwright (requirements.txt) and CHROMIUM."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
