"""Signing in through django-allauth: the pages keep S7 and S11, the local sign-up stays closed,
and two-factor sign-in (S15): TOTP with encrypted secrets, a code refused when replayed,
recovery codes that work once, key rotation of the secrets, and a team that requires it."""

from __future__ import annotations

import io
import re
import time
from typing import Any

import pytest
from allauth.mfa.models import Authenticator
from allauth.mfa.recovery_codes.internal.auth import RecoveryCodes
from allauth.mfa.totp.internal.auth import (
    TOTP,
    format_hotp_value,
    generate_totp_secret,
    hotp_value,
)
from cryptography.fernet import Fernet
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from reports import crypto
from reports.models import Team
from tests.factories import PASSWORD, make_team, make_user
from tests.support import figures

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _own_cache(own_cache: None) -> None:
    """Used codes and rate counters live in the cache: this test's alone."""


def code_for(secret: str, at: float | None = None) -> str:
    """The authenticator app's code for `secret` now (or at `at`)."""
    return format_hotp_value(hotp_value(secret, int(at or time.time()) // 30))


def with_totp(user: Any) -> str:
    """Turn on TOTP and recovery codes for `user`, as the set-up page does; the secret."""
    secret = generate_totp_secret()
    TOTP.activate(user, secret)
    RecoveryCodes.activate(user)
    return secret


def password_step(client: Client, user: Any, password: str = PASSWORD) -> Any:
    return client.post(reverse("login"), {"login": user.username, "password": password})


def reauthenticate(client: Client) -> None:
    """allauth asks for the password again before two-factor settings change."""
    response = client.post(reverse("account_reauthenticate"), {"password": PASSWORD})
    assert response.status_code == 302, response.content.decode()[:2000]


def signed_in(client: Client) -> str | None:
    return client.session.get("_auth_user_id")


# --- allauth's pages keep the S-requirements -----------------------------------------------------


def _no_inline_code(body: str) -> None:
    """S7: scripts only by src (or JSON data islands), no inline style attributes or blocks."""
    for tag in re.findall(r"<script\b[^>]*>", body):
        assert "src=" in tag or "application/json" in tag, tag
    assert "<style" not in body and " style=" not in body


def test_allauth_pages_carry_the_csp_and_no_inline_code() -> None:
    """S7 on the login page, the two-factor step, the set-up page and the password pages."""
    user = make_user()
    with_totp(user)
    anonymous = Client()
    response = anonymous.get(reverse("login"))
    assert "script-src 'self'" in response["Content-Security-Policy"]
    _no_inline_code(response.content.decode())
    assert password_step(anonymous, user)["Location"] == reverse("mfa_authenticate")
    step = anonymous.get(reverse("mfa_authenticate"))
    assert step.status_code == 200 and 'name="code"' in step.content.decode()
    _no_inline_code(step.content.decode())
    other = make_user()
    client = Client()
    password_step(client, other)
    reauth = client.get(reverse("mfa_activate_totp"))
    assert reauth["Location"].startswith(reverse("account_reauthenticate"))
    _no_inline_code(client.get(reauth["Location"]).content.decode())
    reauthenticate(client)
    for name in ("mfa_index", "mfa_activate_totp", "account_change_password"):
        page = client.get(reverse(name))
        assert page.status_code == 200, name
        assert "Content-Security-Policy" in page
        assert "no-store" in page["Cache-Control"], name  # S11
        _no_inline_code(page.content.decode())


def test_the_local_sign_up_is_closed() -> None:
    users = get_user_model().objects.count()
    response = Client().post(
        reverse("account_signup"),
        {
            "username": "eve",
            "email": "eve@example.com",
            "password1": "x" * 20,
            "password2": "x" * 20,
        },
    )
    assert "No sign-up here" in response.content.decode()
    assert get_user_model().objects.count() == users


def test_a_password_sign_in_lands_on_the_home_page_and_sign_out_ends_it() -> None:
    user = make_user()
    client = Client()
    response = password_step(client, user)
    assert response.status_code == 302 and response["Location"] == reverse("home")
    assert signed_in(client) == str(user.pk)
    assert client.get(reverse("home")).status_code == 200
    assert client.post(reverse("logout")).status_code == 302
    assert signed_in(client) is None


def test_with_password_login_off_no_password_signs_in(settings: Any) -> None:
    settings.OSAI_PASSWORD_LOGIN = False
    user = make_user()
    client = Client()
    page = client.get(reverse("login")).content.decode()
    assert 'name="password"' not in page
    response = password_step(client, user)
    assert response.status_code == 200 and signed_in(client) is None


# --- S15: two-factor sign-in ---------------------------------------------------------------------


def test_totp_secrets_and_the_recovery_seed_are_encrypted_at_rest() -> None:
    """S15, T1: the stored secret is not the secret; OSAI_TOKEN_KEYS read it."""
    user = make_user()
    secret = with_totp(user)
    totp = Authenticator.objects.get(user=user, type=Authenticator.Type.TOTP)
    assert totp.data["secret"] != secret
    assert crypto.decrypt_secret(totp.data["secret"]) == secret
    codes = Authenticator.objects.get(user=user, type=Authenticator.Type.RECOVERY_CODES)
    seed = crypto.decrypt_secret(codes.data["seed"])
    assert seed and seed not in str(codes.data)


def test_a_correct_code_signs_in_once_and_the_same_code_again_is_refused(
    time_machine: Any,
) -> None:
    """S15: password, then the app's code: signed in. The same code replayed (another
    browser, within its period) is refused, and nobody is signed in by it."""
    time_machine.move_to(1_800_000_015, tick=False)  # mid-period: the code cannot roll over
    user = make_user()
    secret = with_totp(user)
    client = Client()
    response = password_step(client, user)
    assert response.status_code == 302 and response["Location"] == reverse("mfa_authenticate")
    assert signed_in(client) is None  # the password alone signs nobody in
    code = code_for(secret)
    response = client.post(reverse("mfa_authenticate"), {"code": code})
    assert response.status_code == 302 and response["Location"] == reverse("home")
    assert signed_in(client) == str(user.pk)

    replay = Client()
    assert password_step(replay, user)["Location"] == reverse("mfa_authenticate")
    response = replay.post(reverse("mfa_authenticate"), {"code": code})
    assert response.status_code == 200 and signed_in(replay) is None
    assert "Incorrect code" in response.content.decode()

    wrong = Client()
    password_step(wrong, user)
    bad = f"{(int(code) + 1) % 1_000_000:06d}"
    assert wrong.post(reverse("mfa_authenticate"), {"code": bad}).status_code == 200
    assert signed_in(wrong) is None
    figures.figure("S15 replayed TOTP codes accepted", 0)


def test_a_recovery_code_signs_in_once() -> None:
    user = make_user()
    with_totp(user)
    codes = RecoveryCodes(
        Authenticator.objects.get(user=user, type=Authenticator.Type.RECOVERY_CODES)
    ).get_unused_codes()
    first = Client()
    password_step(first, user)
    response = first.post(reverse("mfa_authenticate"), {"code": codes[0]})
    assert response.status_code == 302 and signed_in(first) == str(user.pk)
    again = Client()
    password_step(again, user)
    response = again.post(reverse("mfa_authenticate"), {"code": codes[0]})
    assert response.status_code == 200 and signed_in(again) is None
    assert (
        codes[0]
        not in RecoveryCodes(
            Authenticator.objects.get(user=user, type=Authenticator.Type.RECOVERY_CODES)
        ).get_unused_codes()
    )


def test_setting_up_totp_on_its_page_then_signing_in_with_it(time_machine: Any) -> None:
    time_machine.move_to(1_800_000_105, tick=False)
    user = make_user()
    client = Client()
    password_step(client, user)
    reauthenticate(client)
    page = client.get(reverse("mfa_activate_totp")).content.decode()
    secret = re.search(r'id="authenticator_secret" type="text" value="([A-Z2-7]+)"', page)
    assert secret, page
    response = client.post(reverse("mfa_activate_totp"), {"code": code_for(secret[1])})
    assert response.status_code == 302
    assert Authenticator.objects.filter(user=user, type=Authenticator.Type.TOTP).exists()
    codes = client.get(reverse("mfa_view_recovery_codes"))
    assert codes.status_code == 200 and "recovery-codes" in codes.content.decode()
    time_machine.shift(60)  # the next period's code
    later = Client()
    password_step(later, user)
    response = later.post(reverse("mfa_authenticate"), {"code": code_for(secret[1])})
    assert response.status_code == 302 and signed_in(later) == str(user.pk)


def test_reencrypt_tokens_rotates_two_factor_secrets_too(settings: Any, time_machine: Any) -> None:
    """T4, S15: a new key first, re-encrypt, drop the old key: TOTP and recovery codes still
    work; twice changes nothing; an unreadable secret changes nothing at all."""
    time_machine.move_to(1_800_000_205, tick=False)
    user = make_user()
    secret = with_totp(user)
    before = {a.pk: dict(a.data) for a in Authenticator.objects.filter(user=user)}
    old = list(settings.OSAI_TOKEN_KEYS)
    new_key = Fernet.generate_key().decode()
    settings.OSAI_TOKEN_KEYS = [new_key, *old]
    out = io.StringIO()
    call_command("reencrypt_tokens", stdout=out)
    assert "Authenticator 2 (2 changed)" in out.getvalue()
    after = {a.pk: dict(a.data) for a in Authenticator.objects.filter(user=user)}
    assert after != before
    settings.OSAI_TOKEN_KEYS = [new_key]  # the old key dropped
    totp = Authenticator.objects.get(user=user, type=Authenticator.Type.TOTP)
    assert crypto.decrypt_secret(totp.data["secret"]) == secret
    client = Client()
    password_step(client, user)
    client.post(reverse("mfa_authenticate"), {"code": code_for(secret)})
    assert signed_in(client) == str(user.pk)
    codes = RecoveryCodes(
        Authenticator.objects.get(user=user, type=Authenticator.Type.RECOVERY_CODES)
    ).get_unused_codes()
    assert len(codes) == 10
    out = io.StringIO()
    call_command("reencrypt_tokens", stdout=out)
    assert "Authenticator 2 (0 changed)" in out.getvalue()
    # A secret no configured key reads: the command fails and nothing changes.
    Authenticator.objects.filter(pk=totp.pk).update(
        data={"secret": Fernet(Fernet.generate_key()).encrypt(b"x").decode()}
    )
    kept = {a.pk: dict(a.data) for a in Authenticator.objects.filter(user=user)}
    settings.OSAI_TOKEN_KEYS = [Fernet.generate_key().decode(), new_key]
    with pytest.raises(Exception, match="Nothing was changed"):
        call_command("reencrypt_tokens", stdout=io.StringIO())
    assert {a.pk: dict(a.data) for a in Authenticator.objects.filter(user=user)} == kept


# --- S15: a team that requires two-factor --------------------------------------------------------


def test_a_team_admin_requires_two_factor_and_members_must_set_it_up(time_machine: Any) -> None:
    time_machine.move_to(1_800_000_305, tick=False)
    admin, member, outsider = make_user(), make_user(), make_user()
    team = make_team("Secure", admins=[admin], members=[member])
    url = reverse("team_two_factor", args=[team.pk])

    member_client = Client()
    password_step(member_client, member)
    assert member_client.post(url, {"require_two_factor": "on"}).status_code == 404
    assert not Team.objects.get(pk=team.pk).require_two_factor
    admin_client = Client()
    password_step(admin_client, admin)
    assert (
        'name="require_two_factor"'
        in admin_client.get(reverse("team_detail", args=[team.pk])).content.decode()
    )
    assert admin_client.post(url, {"require_two_factor": "on"}).status_code == 302
    assert Team.objects.get(pk=team.pk).require_two_factor

    setup = reverse("mfa_activate_totp")
    for path in (reverse("home"), reverse("team_detail", args=[team.pk]), reverse("mfa_index")):
        response = member_client.get(path)
        assert response.status_code == 302 and response["Location"].startswith(setup), path
    # The set-up page asks for the password first (allauth), then shows the secret.
    page = member_client.get(setup)
    assert page.status_code == 302 and page["Location"].startswith(
        reverse("account_reauthenticate")
    )
    assert member_client.get(page["Location"]).status_code == 200
    reauthenticate(member_client)
    assert (
        "Your team requires two-factor sign-in"
        in member_client.get(setup + "?required=1").content.decode()
    )
    assert member_client.get("/static/css/app.css").status_code in (200, 404)  # not redirected
    # Someone outside the team is not asked.
    outsider_client = Client()
    password_step(outsider_client, outsider)
    assert outsider_client.get(reverse("home")).status_code == 200

    secret = re.search(r'value="([A-Z2-7]{16,})"', member_client.get(setup).content.decode())
    assert secret
    assert member_client.post(setup, {"code": code_for(secret[1])}).status_code == 302
    assert member_client.get(reverse("home")).status_code == 200
    # The admin signs in with a password too: nothing changes until they set it up as well.
    response = admin_client.post(url, {})
    assert response.status_code == 302 and response["Location"].startswith(setup)
    assert Team.objects.get(pk=team.pk).require_two_factor


def test_sign_out_works_and_single_sign_on_users_are_exempt() -> None:
    member = make_user()
    make_team("Strict", members=[member]).__class__.objects.update(require_two_factor=True)
    client = Client()
    password_step(client, member)
    assert client.get(reverse("home")).status_code == 302
    assert client.post(reverse("logout")).status_code == 302
    assert signed_in(client) is None
    # A session that came from single sign-on (allauth's record of how it signed in).
    sso = Client()
    sso.force_login(member)
    session = sso.session
    session["account_authentication_methods"] = [
        {"method": "socialaccount", "provider": "sso", "uid": "x", "at": time.time()}
    ]
    session.save()
    assert sso.get(reverse("home")).status_code == 200


def test_the_admin_signs_in_through_the_sites_login_with_its_second_factor() -> None:
    """S15: /admin/login/ is no way around two-factor sign-in."""
    response = Client().get("/admin/login/?next=/admin/")
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))
    staff = make_user(is_staff=True, is_superuser=True)
    with_totp(staff)
    client = Client()
    response = client.post("/admin/login/", {"username": staff.username, "password": PASSWORD})
    assert signed_in(client) is None


def test_allauth_sees_the_client_behind_the_proxy(settings: Any) -> None:
    """S10: allauth's own counters (two-factor codes, password changes) count the client."""
    from django.test import RequestFactory

    from osai_dashboard.signin.adapters import AccountAdapter

    settings.BEHIND_PROXY = True
    request = RequestFactory().get(
        "/", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="6.6.6.6, 203.0.113.7"
    )
    assert AccountAdapter(request).get_client_ip(request) == "203.0.113.7"


def test_changing_the_password_keeps_one_signed_in_and_the_new_one_works() -> None:
    user = make_user()
    client = Client()
    password_step(client, user)
    new = "a-new-and-long-passphrase-42"
    response = client.post(
        reverse("account_change_password"),
        {"oldpassword": PASSWORD, "password1": new, "password2": new},
    )
    assert response.status_code == 302 and signed_in(client) == str(user.pk)
    assert password_step(Client(), user, new)["Location"] == reverse("home")
    assert password_step(Client(), user).status_code == 200  # the old one no longer


def test_a_password_reset_link_sets_a_new_password(settings: Any, mailoutbox: Any) -> None:
    """S12 on allauth's reset: with mail configured, the emailed link sets a new password."""
    from tests.web.test_security import _reload_urls

    settings.PASSWORD_RESET_ENABLED = True
    user = make_user(email="reset@example.com")
    try:
        _reload_urls()
        client = Client(REMOTE_ADDR="192.0.2.99")
        response = client.post(reverse("account_reset_password"), {"email": "RESET@example.com"})
        assert response.status_code == 302
        [message] = mailoutbox
        link = re.search(r"https?://[^/\s]+(/accounts/password/reset/key/\S+/)", message.body)
        assert link, message.body
        form = client.get(link[1], follow=True)
        assert form.status_code == 200 and 'name="password1"' in form.content.decode()
        new = "a-reset-and-long-passphrase-7"
        done = client.post(
            form.redirect_chain[-1][0] if form.redirect_chain else link[1],
            {"password1": new, "password2": new},
        )
        assert done.status_code == 302
        assert password_step(Client(), user, new)["Location"] == reverse("home")
        # An address no account has: the same answer, and no mail (nothing to enumerate).
        mailoutbox.clear()
        other = client.post(reverse("account_reset_password"), {"email": "nobody@example.com"})
        assert other.status_code == 302 and mailoutbox == []
    finally:
        settings.PASSWORD_RESET_ENABLED = False
        _reload_urls()
