"""Single sign-on by OpenID Connect (S14), configured from settings alone (SOCIALACCOUNT_PROVIDERS
in settings.py: no SocialApp row).

allauth's own callback skips the id_token's signature when the token came straight from the
token endpoint (OpenID Connect Core allows it over TLS). Ours always checks it against the
issuer's published keys, with the issuer, the audience (our client id) and the expiry: a token
that fails any of them signs nobody in and changes nothing.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from allauth.account.internal.decorators import login_not_required
from allauth.socialaccount.internal import jwtkit
from allauth.socialaccount.models import SocialApp
from allauth.socialaccount.providers.oauth2.views import (
    OAuth2CallbackView,
    OAuth2LoginView,
    OAuth2View,
)
from allauth.socialaccount.providers.openid_connect.views import OpenIDConnectOAuth2Adapter
from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.urls import reverse


class VerifiedOIDCAdapter(OpenIDConnectOAuth2Adapter):
    def _decode_id_token(self, app: SocialApp, id_token: str) -> dict[str, Any]:
        decoded: dict[str, Any] = jwtkit.verify_and_decode(
            credential=id_token,
            keys_url=self.openid_config["jwks_uri"],
            issuer=self.openid_config["issuer"],
            audience=app.client_id,
            lookup_kid=jwtkit.lookup_kid_jwk,
            verify_signature=True,
        )
        return decoded


def _configured(provider_id: str) -> bool:
    return enabled() and provider_id == settings.OIDC_PROVIDER_ID


def enabled() -> bool:
    """Whether single sign-on is configured (an issuer and a client id)."""
    return bool(settings.SOCIALACCOUNT_PROVIDERS["openid_connect"]["APPS"])


def _provider_view(
    view_class: type[OAuth2View], request: HttpRequest, provider_id: str
) -> HttpResponse:
    """allauth's view of the configured provider, with our adapter; 404 for any other."""
    if not _configured(provider_id):
        raise Http404("No such sign-in service.")
    try:
        view = view_class.adapter_view(VerifiedOIDCAdapter(request, provider_id))
        response: HttpResponse = view(request)
    except SocialApp.DoesNotExist:
        raise Http404("No such sign-in service.") from None
    return response


@login_not_required
def login(request: HttpRequest, provider_id: str) -> HttpResponse:
    return _provider_view(OAuth2LoginView, request, provider_id)


@login_not_required
def callback(request: HttpRequest, provider_id: str) -> HttpResponse:
    return _provider_view(OAuth2CallbackView, request, provider_id)


def issuer_origin() -> str | None:
    """The issuer's scheme, host and port, when single sign-on is configured."""
    if not enabled():
        return None
    app = settings.SOCIALACCOUNT_PROVIDERS["openid_connect"]["APPS"][0]
    url = urlsplit(app["settings"]["server_url"])
    return f"{url.scheme}://{url.netloc}" if url.scheme and url.netloc else None


def login_url() -> str:
    """Where the login page's "Sign in with …" button posts."""
    return reverse("openid_connect_login", kwargs={"provider_id": settings.OIDC_PROVIDER_ID})
