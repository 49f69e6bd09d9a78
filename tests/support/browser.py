"""Debian's chromium driven by Playwright, for the tests that look at pages the way a person does.

Playwright's own browser download cannot work here (and is not needed): the tests launch the
distribution's ``/usr/bin/chromium`` (``.ci/run`` installs it) with networking features off, so a
page that tried to load anything from the internet would show it as a failed request.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@dataclass
class Watched:
    """A page with what went wrong on it: console errors, uncaught exceptions, failed requests."""

    page: object
    errors: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        return list(self.errors)


@contextmanager
def chromium() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


def watch(browser, width: int = 1300, height: int = 900) -> Watched:
    page = browser.new_page(viewport={"width": width, "height": height})
    seen = Watched(page)
    page.on("console", lambda m: seen.errors.append(f"console: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: seen.errors.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: seen.errors.append(f"request failed: {r.url}"))
    return seen
