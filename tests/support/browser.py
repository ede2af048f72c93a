"""Steps every browser test takes (tests/e2e/): the page objects are Playwright's."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tests.factories import PASSWORD

DOCS = Path(__file__).resolve().parents[2] / "docs"
ARTIFACTS = Path(__file__).resolve().parents[2] / "var" / "test-artifacts"


def sign_in(page: Any, base: str, username: str, password: str = PASSWORD) -> None:
    """Sign in on the login page, as a person would, and land on the home page."""
    page.goto(f"{base}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("main button[type=submit]")
    page.wait_for_url(f"{base}/")


def screenshot(page: Any, name: str) -> None:
    """The whole page into var/test-artifacts/; into docs/ too when it is missing there or
    OSAI_UPDATE_SCREENSHOT=1 (so that a test run does not rewrite a committed file each time)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)
    target = DOCS / name
    if not target.exists() or os.environ.get("OSAI_UPDATE_SCREENSHOT") == "1":
        page.screenshot(path=str(target), full_page=True)
