"""allauth's adapters: the one place each sign-in rule lives.

- Nobody signs up with a password (`AccountAdapter.is_open_for_signup`); accounts are made by
  staff, or on a first single sign-on for an allowed email (`may_sign_up`, S14).
- Password sign-ins are throttled by django-axes and our per-account slowdown (S8), counted
  for the client behind the proxy (S10), not by allauth's own counters.
- Two-factor secrets are encrypted like access tokens (`MFAAdapter`, S15, T4).
"""

from __future__ import annotations

import logging
from typing import Any

from allauth.account.adapter import DefaultAccountAdapter
from allauth.account.utils import filter_users_by_email
from allauth.core.exceptions import ImmediateHttpResponse
from allauth.mfa.adapter import DefaultMFAAdapter
from allauth.socialaccount.adapter import DefaultSocialAccountAdapter
from django.conf import settings
from django.http import HttpRequest
from django.shortcuts import render

from reports import access, crypto
from reports.teams import invitations
from reports.views.http import client_ip

log = logging.getLogger(__name__)


def may_sign_up(email: str | None, *, verified: bool = False) -> bool:
    """Whether a first single sign-on with this (provider-given) email makes an account: for
    an email in one of OSAI_OIDC_ALLOWED_DOMAINS, or for an email a team invited (M6) that the
    provider says is verified (an invitation names one person's address, not a domain). The
    one rule (S14)."""
    if not email or "@" not in email:
        return False
    domain = email.rsplit("@", 1)[1].strip().lower()
    if domain in settings.OSAI_OIDC_ALLOWED_DOMAINS:
        return True
    return verified and invitations.is_invited(email)


def axes_username(request: HttpRequest, credentials: dict[str, Any] | None = None) -> Any:
    """The username django-axes counts: the backends' `username`, or allauth's form's `login`
    field where axes reads the request itself."""
    if credentials:
        return credentials.get("username")
    return request.POST.get("login") or request.POST.get("username")


class AccountAdapter(DefaultAccountAdapter):
    def is_open_for_signup(self, request: HttpRequest) -> bool:
        """No open sign-up: the local sign-up form is closed."""
        return False

    def get_client_ip(self, request: HttpRequest) -> str:
        """The client behind the documented proxy (S10), as axes and our throttles see it."""
        return client_ip(request) or "unknown"

    def pre_authenticate(self, request: HttpRequest, **credentials: Any) -> None:
        """Password attempts are throttled by axes and the per-account slowdown (S8), which
        never lock an owner out where they signed in before; allauth's per-login counter
        would."""


class SocialAccountAdapter(DefaultSocialAccountAdapter):
    def is_open_for_signup(self, request: HttpRequest, sociallogin: Any) -> bool:
        return may_sign_up(_email(sociallogin), verified=_verified(sociallogin))

    def authenticate_by_email(self, sociallogin: Any) -> tuple[Any, str] | None:
        """allauth signs a provider's verified email in to the account that has it, and links
        the two. Only to an account that has shown the address is its own
        (`access.verified_emails`): an account made by a first sign-in whose provider did
        not verify the address could be anyone's, and its maker would still enter it through
        their own sign-in. Otherwise `pre_social_login` refuses, with nothing changed."""
        found = super().authenticate_by_email(sociallogin)
        if found is None:
            return None
        user, email = found
        if email.lower() in (mine.lower() for mine in access.verified_emails(user)):
            return found
        return None

    def pre_social_login(self, request: HttpRequest, sociallogin: Any) -> None:
        """A provider's account that is not linked yet (allauth linked it already if the
        provider verified an email an account has shown is its own: authenticate_by_email)
        either makes a new account, if its email may sign up and no account has it, or is
        refused with nothing changed. (Linking one
        to the account already signed in, allauth's "connect", is not ours to refuse.)"""
        if sociallogin.is_existing or sociallogin.state.get("process") == "connect":
            return
        email = _email(sociallogin)
        if email and filter_users_by_email(email):
            raise ImmediateHttpResponse(
                _refused(
                    request,
                    "An account here already has this email, and it is not proven that the "
                    "address is yours and that account's (your sign-in service has not "
                    "verified it, or the account never has), so they are not linked. Sign in "
                    "with your password, or ask an administrator to check the address.",
                )
            )
        if not may_sign_up(email, verified=_verified(sociallogin)):
            raise ImmediateHttpResponse(
                _refused(
                    request,
                    "There is no account here for this sign-in, and one is made only for an "
                    "email of an allowed domain or one a team invited. Ask a team admin for "
                    "an invitation.",
                )
            )

    def on_authentication_error(
        self,
        request: HttpRequest,
        provider: Any,
        error: Any = None,
        exception: Any = None,
        extra_context: Any = None,
    ) -> None:
        """Why a single sign-on failed, for the operator (the page says only that it did):
        the error's kind, never a token or a code."""
        log.warning(
            "Single sign-on refused (%s): %s %s",
            getattr(provider, "id", provider),
            error,
            type(exception).__name__ if exception else "",
        )


def _email(sociallogin: Any) -> str:
    addresses = getattr(sociallogin, "email_addresses", None) or []
    return addresses[0].email if addresses else ""


def _verified(sociallogin: Any) -> bool:
    addresses = getattr(sociallogin, "email_addresses", None) or []
    return bool(addresses) and bool(addresses[0].verified)


def _refused(request: HttpRequest, why: str) -> Any:
    return render(request, "socialaccount/refused.html", {"why": why}, status=403)


class MFAAdapter(DefaultMFAAdapter):
    """TOTP secrets and the recovery codes' seed, encrypted under OSAI_TOKEN_KEYS (S15, T4):
    `manage.py reencrypt_tokens` rotates them with every other secret."""

    def encrypt(self, text: str) -> str:
        return crypto.encrypt_secret(text)

    def decrypt(self, encrypted_text: str) -> str:
        return crypto.decrypt_secret(encrypted_text)
