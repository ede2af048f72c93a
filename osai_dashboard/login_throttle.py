"""Guessing one account's password from many addresses is slowed (S8), its owner not locked out.

django-axes locks out a (username, address) pair after AXES_FAILURE_LIMIT failures: an attacker
with many addresses gets that many guesses from each. This adds a limit per account, over every
address: once an account has LOGIN_ACCOUNT_FAILURE_LIMIT failed sign-ins within the cool-off
(AXES_COOLOFF_MINUTES), it takes at most one attempt per LOGIN_ACCOUNT_SLOWDOWN_SECONDS from
an address it has not signed in from before. A slowdown, not a lock: the owner waits a minute
at worst, and where they signed in before (in the last 90 days) nothing changes for them
(axes still counts that address's own failures).

An authentication backend (before ModelBackend) refuses a slowed attempt without checking the
password; the sign-in form (allauth's, through ACCOUNT_FORMS) says why and for how long.
Counts live in the cache, keyed by the account (its id and join time), so a name that is no
account is not counted.
"""

from __future__ import annotations

import time
from typing import Any

from allauth.account.forms import LoginForm
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.core.cache import cache
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest

from reports.pipeline.connections import person_key
from reports.views.http import client_ip

KNOWN_ADDRESS_SECONDS = 90 * 24 * 3600
SLOWED = "osai_account_slowed"  # the request attribute: seconds to wait


def _account(username: Any) -> Any:
    if not isinstance(username, str) or not username:
        return None
    try:
        return get_user_model()._default_manager.get_by_natural_key(username)
    except get_user_model().DoesNotExist:
        return None


def _window() -> float:
    return settings.AXES_COOLOFF_TIME.total_seconds()


def _keys(user: Any) -> tuple[str, str]:
    who = person_key(user)
    return f"login-failures:{who}", f"login-next-attempt:{who}"


def _known_key(user: Any, address: str | None) -> str:
    return f"login-known-address:{person_key(user)}:{address or 'unknown'}"


def seconds_to_wait(request: HttpRequest, user: Any) -> int:
    """0 if this attempt may go on; else how long until the account takes one from here.
    An attempt that may go on while the account is slowed takes the slot."""
    failures_key, next_key = _keys(user)
    now = time.time()
    failures = [t for t in cache.get(failures_key, []) if t > now - _window()]
    if len(failures) < settings.LOGIN_ACCOUNT_FAILURE_LIMIT:
        return 0
    if cache.get(_known_key(user, client_ip(request))):
        return 0  # its owner signed in from here before
    next_at = cache.get(next_key, 0.0)
    if now < next_at:
        return max(int(next_at - now + 0.999), 1)
    cache.set(next_key, now + settings.LOGIN_ACCOUNT_SLOWDOWN_SECONDS, timeout=int(_window()))
    return 0


class AccountThrottleBackend:
    """Refuses a slowed attempt before any backend checks the password (PermissionDenied ends
    `authenticate`); otherwise leaves the attempt to the next backend. It has no `get_user`
    on purpose: no session is ever signed in through it (force_login skips it too)."""

    def authenticate(self, request: Any, username: Any = None, **credentials: Any) -> Any:
        user = _account(username) if request is not None else None
        if user is None:
            return None
        wait = seconds_to_wait(request, user)
        if wait:
            setattr(request, SLOWED, wait)
            raise PermissionDenied
        return None


def _failed(sender: Any, credentials: dict[str, Any], request: Any = None, **kwargs: Any) -> None:
    user = _account(credentials.get("username"))
    if user is None:
        return
    failures_key, _ = _keys(user)
    now = time.time()
    failures = [t for t in cache.get(failures_key, []) if t > now - _window()]
    limit = settings.LOGIN_ACCOUNT_FAILURE_LIMIT
    cache.set(failures_key, [*failures, now][-2 * limit :], timeout=int(_window()))


def _signed_in(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    if request is not None:
        cache.set(_known_key(user, client_ip(request)), 1, timeout=KNOWN_ADDRESS_SECONDS)


def connect_signals() -> None:
    user_login_failed.connect(_failed, dispatch_uid="osai-login-account-failures")
    user_logged_in.connect(_signed_in, dispatch_uid="osai-login-known-address")


class SignInForm(LoginForm):
    """allauth's sign-in form (ACCOUNT_FORMS); a slowed attempt says why, and when to try
    again. With OSAI_PASSWORD_LOGIN off, no password signs anyone in."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["login"].label = "Username"
        # The input keeps the id Django's own login form gave it (`id_username`), so password
        # managers and scripts that filled the old form still find it; its name stays `login`.
        self.fields["login"].widget.attrs["id"] = "id_username"
        self.fields["password"].help_text = ""

    def clean(self) -> dict[str, Any]:
        if not settings.OSAI_PASSWORD_LOGIN:
            raise ValidationError(
                "Passwords are not used here: sign in with single sign-on.", code="no_password"
            )
        try:
            cleaned: dict[str, Any] = super().clean()
        except ValidationError:
            wait = getattr(self.request, SLOWED, None)
            if wait:
                raise ValidationError(
                    "Too many failed sign-ins to this account from elsewhere: to slow "
                    "guessing, it takes one attempt a minute from a new place. Try again in "
                    f"{wait} s.",
                    code="account_slowed",
                ) from None
            raise
        return cleaned
