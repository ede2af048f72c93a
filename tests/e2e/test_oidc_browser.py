"""Signing in in a real browser (S14, S15, S7): "Sign in with Keycloak" against the OIDC
provider process on loopback lands signed in on the home page; a password user with an
authenticator app passes the two-factor step. No CSP violation, console error or off-site
request on the way. Leaves docs/screenshot-login.png (the login page with its single sign-on
button) and docs/screenshot-login-totp.png (the two-factor step) when missing or with
OSAI_UPDATE_SCREENSHOT=1; always in var/test-artifacts/.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.factories import PASSWORD, ensure_example_price_book, make_user
from tests.support.browser import screenshot
from tests.support.oidc_provider import OidcProvider
from tests.web.test_oidc import configure

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def oidc_site(settings: Any, held_site: Any, own_cache: None) -> Iterator[Any]:
    """The live server alone (test_browser.py's held_site) and the OIDC provider process."""
    provider = OidcProvider.start()
    configure(settings, provider.issuer)
    try:
        yield held_site, provider
    finally:
        provider.stop()


@pytest.fixture
def totp_user(transactional_db: None) -> tuple[Any, str]:
    """Made before the browser starts (Playwright's loop forbids database calls later)."""
    from allauth.mfa.recovery_codes.internal.auth import RecoveryCodes
    from allauth.mfa.totp.internal.auth import TOTP, generate_totp_secret

    ensure_example_price_book()
    user = make_user("totp-user")
    secret = generate_totp_secret()
    TOTP.activate(user, secret)
    RecoveryCodes.activate(user)
    return user, secret


def test_sign_in_with_keycloak_lands_signed_in_on_the_home_page(
    oidc_site: Any, browser_page: Any
) -> None:
    server, provider = oidc_site
    provider.set_user(sub="sub-browser", email="browser@example.com", email_verified=True, name="")
    page, problems = browser_page
    base = server.url
    page.goto(f"{base}/accounts/login/")
    button = page.get_by_role("button", name="Sign in with Keycloak")
    assert button.is_visible()
    screenshot(page, "screenshot-login.png")
    button.click()
    page.wait_for_url(f"{base}/")
    # A new account, named by allauth after the email.
    assert "browser" in page.locator(".signout").inner_text()
    assert problems.csp_violations == [] and problems.console_errors == []
    assert problems.off_site == [] and problems.page_errors == []


def test_a_password_and_an_authenticator_code_sign_in_in_the_browser(
    totp_user: tuple[Any, str], oidc_site: Any, browser_page: Any
) -> None:
    from allauth.mfa.totp.internal.auth import format_hotp_value, hotp_value

    server, _ = oidc_site
    user, secret = totp_user
    page, problems = browser_page
    base = server.url
    page.goto(f"{base}/accounts/login/")
    page.fill("#id_username", user.username)
    page.fill("#id_password", PASSWORD)
    page.click("form.form button[type=submit]")
    page.wait_for_url(f"{base}/accounts/2fa/authenticate/")
    screenshot(page, "screenshot-login-totp.png")
    if 30 - time.time() % 30 < 3:
        time.sleep(3)  # not the last moment of a code's period
    page.fill("#id_code", format_hotp_value(hotp_value(secret, int(time.time()) // 30)))
    page.click("form.form button[type=submit]")
    page.wait_for_url(f"{base}/")
    assert user.username in page.locator(".signout").inner_text()
    assert problems.csp_violations == [] and problems.console_errors == []
    assert problems.off_site == [] and problems.page_errors == []
