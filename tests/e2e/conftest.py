"""The browser fixtures of test_browser.py (a Chromium page that records CSP violations and
off-site requests, the live site with a worker or alone, a user made before the browser
starts), for every browser test in this folder."""

from tests.e2e.test_browser import browser_page, browser_user, held_site, live_site  # noqa: F401
