"""Single sign-on by OpenID Connect (S14) against a real provider process on loopback
(tests/support/oidc_provider.py): an account is made on first sign-in only for an allowed
domain, linked to an existing one only when the provider verified the email, and a wrong
state, a wrong audience, an expired id_token or a bad signature sign nobody in and change
nothing. Not configured: no button, and its URLs answer 404."""

from __future__ import annotations

import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from allauth.account.models import EmailAddress
from allauth.socialaccount.models import SocialAccount
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from reports.models import Invitation, Membership, Team
from reports.teams import invitations
from tests.factories import make_team, make_user
from tests.support import figures
from tests.support.oidc_provider import FAULTS, OidcProvider

pytestmark = pytest.mark.django_db
_OPENER = urllib.request.build_opener(
    urllib.request.ProxyHandler({}),
    type(
        "NoRedirect",
        (urllib.request.HTTPRedirectHandler,),
        {"redirect_request": lambda self, *args, **kwargs: None},
    )(),
)


@pytest.fixture(scope="module")
def provider_process() -> Iterator[OidcProvider]:
    provider = OidcProvider.start()
    try:
        yield provider
    finally:
        provider.stop()


def configure(settings: Any, issuer: str) -> None:
    """What OSAI_OIDC_* in the environment make of settings.py's SOCIALACCOUNT_PROVIDERS."""
    settings.OSAI_OIDC_NAME = "Keycloak"
    settings.OSAI_OIDC_ALLOWED_DOMAINS = ["example.com"]
    settings.SOCIALACCOUNT_PROVIDERS = {
        "openid_connect": {
            "OAUTH_PKCE_ENABLED": True,
            "APPS": [
                {
                    "provider_id": settings.OIDC_PROVIDER_ID,
                    "name": "Keycloak",
                    "client_id": "osai-usage",
                    "secret": "test-client-secret",
                    "settings": {"server_url": issuer, "fetch_userinfo": True},
                }
            ],
        }
    }


@pytest.fixture
def provider(provider_process: OidcProvider, settings: Any, own_cache: None) -> OidcProvider:
    provider_process.reset()
    configure(settings, provider_process.issuer)
    return provider_process


def sso_sign_in(client: Client, provider: OidcProvider) -> Any:
    """Press "Sign in with Keycloak", let the provider answer (it signs its user in at once),
    and follow its redirect back to the callback: the callback's response."""
    start = client.post(
        reverse("openid_connect_login", kwargs={"provider_id": "sso"}), {"process": "login"}
    )
    assert start.status_code == 302, start.content.decode()[:2000]
    assert start["Location"].startswith(provider.issuer + "/authorize?")
    try:
        _OPENER.open(start["Location"], timeout=5)
        raise AssertionError("the provider did not redirect back")
    except urllib.error.HTTPError as answer:
        assert answer.code == 302
        back = urllib.parse.urlsplit(answer.headers["Location"])
    assert back.path == reverse("openid_connect_callback", kwargs={"provider_id": "sso"})
    return client.get(f"{back.path}?{back.query}")


def signed_in(client: Client) -> str | None:
    return client.session.get("_auth_user_id")


def sso_lands_home(provider: OidcProvider, email: str) -> tuple[Client, Any]:
    """A new client signs in by single sign-on and lands on the home page, signed in as the
    account with `email`: the client and the account."""
    client = Client()
    response = sso_sign_in(client, provider)
    assert response.status_code == 302 and response["Location"] == reverse("home")
    user = get_user_model().objects.get(email=email)
    assert signed_in(client) == str(user.pk)
    return client, user


def sso_refused(provider: OidcProvider, words: str, status: int = 403) -> None:
    """A new client's single sign-on is refused with `status` and a page saying `words`:
    nobody signed in, no account or link made."""
    before = state()
    client = Client()
    response = sso_sign_in(client, provider)
    assert response.status_code == status, response.status_code
    assert words in response.content.decode()
    assert state() == before and signed_in(client) is None
    assert "account_authentication_methods" not in client.session


def state() -> tuple[int, int]:
    return get_user_model().objects.count(), SocialAccount.objects.count()


def test_the_login_page_offers_single_sign_on_by_its_name(provider: OidcProvider) -> None:
    page = Client().get(reverse("login")).content.decode()
    assert "Sign in with Keycloak" in page
    assert reverse("openid_connect_login", kwargs={"provider_id": "sso"}) in page


def test_only_the_login_page_lets_a_form_go_on_to_the_issuer(provider: OidcProvider) -> None:
    """S7: the button's answer redirects to the issuer, which the browser holds to the login
    page's `form-action`; every other page keeps `form-action 'self'`."""
    login = Client().get(reverse("login"))["Content-Security-Policy"]
    assert f"form-action 'self' {provider.issuer}" in login
    user = make_user()
    other = Client()
    other.force_login(user)
    assert "form-action 'self';" in other.get(reverse("home"))["Content-Security-Policy"] + ";"


def test_not_configured_no_button_and_its_urls_answer_404() -> None:
    page = Client().get(reverse("login")).content.decode()
    assert "Sign in with" not in page and 'name="password"' in page
    for name in ("openid_connect_login", "openid_connect_callback"):
        url = reverse(name, kwargs={"provider_id": "sso"})
        assert Client().get(url).status_code == 404
        assert Client().post(url, {"process": "login"}).status_code == 404
    other = reverse("openid_connect_login", kwargs={"provider_id": "google"})
    assert Client().post(other).status_code == 404


def test_a_first_sign_in_makes_an_account_for_an_allowed_domain(provider: OidcProvider) -> None:
    """S14: a new account, linked, signed in, on the home page; the second time the same one."""
    provider.set_user(sub="sub-new", email="newcomer@example.com", email_verified=True)
    client, user = sso_lands_home(provider, "newcomer@example.com")
    assert SocialAccount.objects.get(user=user).uid == "sub-new"
    assert not user.has_usable_password()
    assert client.get(reverse("home")).status_code == 200
    again = Client()
    sso_sign_in(again, provider)
    assert signed_in(again) == str(user.pk)
    assert state() == (get_user_model().objects.count(), 1)
    counters = provider.counters()
    assert counters["token"] == 2 and counters["userinfo"] == 2


def test_a_first_sign_in_from_another_domain_makes_nothing(provider: OidcProvider) -> None:
    provider.set_user(sub="sub-out", email="mallory@elsewhere.test", email_verified=True)
    sso_refused(provider, "allowed domain")


def test_an_invited_email_from_another_domain_may_sign_up_once_verified(
    provider: OidcProvider,
) -> None:
    """M6 and S14: an invitation names one person's address, so single sign-on makes their
    account outside the allowed domains, but only with an email the provider verified; the
    invitation then waits on their teams page."""
    admin = make_user("inviter")
    team = make_team("Partners", admins=[admin])
    invitations.invitation_send(team=team, actor=admin, email="guest@partner.test", role="member")
    provider.set_user(sub="sub-guest", email="guest@partner.test", email_verified=False)
    sso_refused(provider, "allowed domain")

    provider.set_user(sub="sub-guest", email="guest@partner.test", email_verified=True)
    _, guest = sso_lands_home(provider, "guest@partner.test")
    assert list(invitations.invitations_for_person(guest).values_list("team__name", flat=True)) == [
        "Partners"
    ]


def test_an_address_the_provider_did_not_verify_takes_no_invitation_from_the_teams_page(
    provider: OidcProvider,
) -> None:
    """M6 and S14: a first sign-in in an allowed domain makes an account whatever the
    provider says of the email; one it did not verify is not proof that the invitation to
    that address is this person's: not on their teams page, and accepting it there is a 404
    that changes nothing. (The invitation's link still works for whoever holds it.)"""
    admin = make_user("inviter")
    team = make_team("Research", admins=[admin])
    sent = invitations.invitation_send(
        team=team, actor=admin, email="victim@example.com", role="admin"
    )
    provider.set_user(sub="sub-claimer", email="victim@example.com", email_verified=False)
    client, claimer = sso_lands_home(provider, "victim@example.com")
    assert [(a.email, a.verified) for a in EmailAddress.objects.filter(user=claimer)] == [
        ("victim@example.com", False)
    ]
    page = client.get(reverse("team_list"))
    assert page.status_code == 200 and "Research" not in page.content.decode()
    accept = client.post(reverse("invitation_accept_mine", args=[sent.invitation.pk]))
    assert accept.status_code == 404
    assert invitations.state(Invitation.objects.get(pk=sent.invitation.pk)) == "pending"
    assert list(Membership.objects.filter(team=team).values_list("user", flat=True)) == [admin.pk]


def test_an_existing_account_is_linked_only_when_the_provider_verified_the_email(
    provider: OidcProvider,
) -> None:
    existing = make_user("alice", email="alice@example.com")
    provider.set_user(sub="sub-alice", email="alice@example.com", email_verified=False)
    accounts = get_user_model().objects.count()
    sso_refused(provider, "not verified")

    provider.set_user(email_verified=True)
    verified = Client()
    response = sso_sign_in(verified, provider)
    assert response.status_code == 302 and signed_in(verified) == str(existing.pk)
    assert SocialAccount.objects.get(uid="sub-alice").user == existing
    assert get_user_model().objects.count() == accounts
    # allauth's guard against an account planted for someone else's address: linked by an
    # email this site never verified, the account signs in by single sign-on from now on.
    existing.refresh_from_db()
    assert not existing.has_usable_password()


def test_an_account_made_on_an_unverified_address_never_receives_its_owner(
    provider: OidcProvider,
) -> None:
    """S14: someone in an allowed domain signs in first with another person's address, which
    the provider did not verify: an account is made, its address unverified. When the owner
    signs in later with the address verified, they are not signed in to (and linked to) that
    account, which its maker could still enter through their own sign-in; they are refused
    with nothing changed."""
    provider.set_user(sub="sub-squatter", email="owner@example.com", email_verified=False)
    _, squatter = sso_lands_home(provider, "owner@example.com")
    provider.set_user(sub="sub-owner", email="owner@example.com", email_verified=True)
    sso_refused(provider, "An account here already has this email")
    assert list(SocialAccount.objects.filter(user=squatter).values_list("uid", flat=True)) == [
        "sub-squatter"
    ]


@pytest.mark.parametrize("fault", FAULTS)
def test_a_faulty_answer_signs_nobody_in_and_changes_nothing(
    provider: OidcProvider, fault: str
) -> None:
    """S14: wrong state, wrong audience, expired id_token, bad signature: refused."""
    provider.set_user(sub=f"sub-{fault}", email=f"{fault}@example.com", email_verified=True)
    provider.set_fault(fault)
    sso_refused(provider, "Sign-in failed", status=401)
    figures.figure(f"S14 OIDC fault {fault}: sign-ins accepted", 0)


def test_single_sign_on_users_are_exempt_from_a_teams_two_factor_requirement(
    provider: OidcProvider,
) -> None:
    member = make_user("sso-member", email="member@example.com")
    team = make_team("Strict", members=[member])
    Team.objects.filter(pk=team.pk).update(require_two_factor=True)
    provider.set_user(sub="sub-member", email="member@example.com", email_verified=True)
    client = Client()
    sso_sign_in(client, provider)
    assert signed_in(client) == str(member.pk)
    assert client.get(reverse("home")).status_code == 200


def test_the_id_tokens_signature_is_checked_even_from_the_token_endpoint(
    provider: OidcProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Why oidc.VerifiedOIDCAdapter exists: allauth's own adapter skips the signature of an
    id_token that came from the token endpoint, and would sign this one in."""
    from allauth.socialaccount.providers.openid_connect.views import OpenIDConnectOAuth2Adapter

    from osai_dashboard.signin import oidc

    provider.set_user(sub="sub-forged", email="forged@example.com", email_verified=True)
    provider.set_fault("bad_signature")
    monkeypatch.setattr(
        oidc.VerifiedOIDCAdapter, "_decode_id_token", OpenIDConnectOAuth2Adapter._decode_id_token
    )
    client = Client()
    assert sso_sign_in(client, provider).status_code == 302
    assert signed_in(client) is not None  # allauth alone: accepted


def test_check_deploy_wants_single_sign_on_over_https_and_whole() -> None:
    """S1, S14: an http issuer, a half-configured provider, or passwords off without single
    sign-on are errors of `check --deploy`; an https issuer with its client passes."""
    from tests.web.test_security import check_deploy, production_env

    sso = {
        "OSAI_OIDC_ISSUER": "https://id.example.com/realms/staff",
        "OSAI_OIDC_CLIENT_ID": "osai-usage",
        "OSAI_OIDC_CLIENT_SECRET": "s3cret",
        "OSAI_OIDC_ALLOWED_DOMAINS": "example.com",
    }
    result = check_deploy(production_env(**sso, OSAI_PASSWORD_LOGIN="False"))
    assert result.returncode == 0, result.stdout + result.stderr
    http = check_deploy(production_env(**{**sso, "OSAI_OIDC_ISSUER": "http://id.example.com"}))
    assert http.returncode != 0 and "osai.E005" in http.stderr
    half = check_deploy(production_env(OSAI_OIDC_ISSUER="https://id.example.com"))
    assert half.returncode != 0 and "osai.E006" in half.stderr
    nobody = check_deploy(production_env(OSAI_PASSWORD_LOGIN="False"))
    assert nobody.returncode != 0 and "osai.E007" in nobody.stderr
