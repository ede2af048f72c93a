"""Steps every browser test takes (tests/e2e/): the page objects are Playwright's."""

from __future__ import annotations

from typing import Any

from tests.factories import PASSWORD


def sign_in(page: Any, base: str, username: str, password: str = PASSWORD) -> None:
    """Sign in on the login page, as a person would, and land on the home page."""
    page.goto(f"{base}/accounts/login/")
    page.fill("#id_login", username)
    page.fill("#id_password", password)
    page.click("main button[type=submit]")
    page.wait_for_url(f"{base}/")
