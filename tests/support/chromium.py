"""Debian's Chromium as the browser tests and `make bench` launch it (Playwright's own
browser download cannot work here). Without the background-networking flags Chromium
tries to reach Google's hosts, which this machine's closed network refuses."""

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-quic",
    "--disable-sync",
]
