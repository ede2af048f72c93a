"""Headless Debian Chromium through Playwright, and what the benchmark reads from pages.

`PAGE_PROBE` is injected into every page before its own scripts. It records, in page time:
- when the status badge first carries a terminal class (badge-done, badge-failed, ...),
- every request to a /status/ URL (Resource Timing, buffer enlarged so none is dropped),
so that counts and moments do not depend on when Playwright delivers events to Python.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from tests.support.chromium import CHROMIUM, CHROMIUM_ARGS

TERMINAL_BADGES = (
    "badge-done",
    "badge-partial",
    "badge-failed",
    "badge-timed_out",
    "badge-cancelled",
)

PAGE_PROBE = """
(() => {
  if (window.__bench) return;
  try { performance.setResourceTimingBufferSize(10000); } catch (e) {}
  const TERMINAL = __TERMINAL__;
  const bench = window.__bench = {terminalAt: null, terminalClass: null};
  const check = () => {
    if (bench.terminalAt !== null) return;
    const badge = document.getElementById("status-badge");
    if (!badge) return;
    const hit = TERMINAL.find((name) => badge.classList.contains(name));
    if (hit) {
      bench.terminalAt = performance.timeOrigin + performance.now();
      bench.terminalClass = hit;
    }
  };
  new MutationObserver(check).observe(document, {
    subtree: true, childList: true, attributes: true, attributeFilter: ["class"],
  });
  document.addEventListener("DOMContentLoaded", check);
})();
""".replace("__TERMINAL__", json.dumps(TERMINAL_BADGES))

READ_PROBE = """
() => ({
  terminalAt: window.__bench ? window.__bench.terminalAt : null,
  terminalClass: window.__bench ? window.__bench.terminalClass : null,
  polls: performance.getEntriesByType("resource")
    .filter((e) => e.name.includes("/status/"))
    .map((e) => performance.timeOrigin + e.startTime),
})
"""


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """A Playwright Chromium browser (Debian's), closed on exit."""
    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"{CHROMIUM} is missing: run `make browser`")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def new_context(browser: Any, base_url: str, session: str | None = None, **options: Any) -> Any:
    """A fresh context (empty cache), signed in with a session cookie."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, **options)
    if session:
        host = urlparse(base_url).hostname
        context.add_cookies([{"name": "sessionid", "value": session, "domain": host, "path": "/"}])
    # No request routing: Playwright turns the HTTP cache off for routed contexts (P8).
    context.add_init_script(PAGE_PROBE)
    return context


def open_report_form(browser: Any, base_url: str, session: str) -> tuple[Any, Any]:
    """A fresh signed-in context and a page on the report form: (context, page)."""
    context = new_context(browser, base_url, session)
    page = context.new_page()
    page.goto(f"{base_url}/reports/new/")
    return context, page


def generate_report(page: Any) -> tuple[float, int]:
    """Submit the filled-in report form: (when it was clicked, epoch s; the new report's id)."""
    clicked = time.time()
    page.click("button:has-text('Generate report')")
    page.wait_for_url(re.compile(r".*/reports/\d+/$"))
    match = re.search(r"/reports/(\d+)/$", page.url)
    assert match, page.url
    return clicked, int(match.group(1))


def read_probe(page: Any) -> dict[str, Any]:
    """The probe's record: terminalAt (epoch ms or None), terminalClass, polls (epoch ms)."""
    result: dict[str, Any] = page.evaluate(READ_PROBE)
    return result
