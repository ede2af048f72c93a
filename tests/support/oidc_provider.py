"""A small OpenID Connect provider for the sign-in tests, run as its own process on loopback
(`python -m tests.support.oidc_provider --port N`), steered like the OSAI sandbox.

It publishes its discovery document and an RSA key (JWKS); /authorize signs the configured
person in at once and redirects back with a code; /token answers an access token and an
id_token signed RS256; /userinfo answers the person's claims. PKCE (S256) is checked.

Fault switches (POST /control/fault {"fault": name}, or null for none):
  wrong_state      /authorize sends back another `state` than it was given
  wrong_audience   the id_token is for another client (`aud`)
  expired          the id_token expired ten minutes ago
  bad_signature    the id_token is signed by a key the JWKS does not hold (same `kid`)

`OidcProvider` (below) starts and stops the process and speaks to its control endpoints with
urllib, through no proxy.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
FAULTS = ("wrong_state", "wrong_audience", "expired", "bad_signature")
KID = "test-key-1"
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# --- The server ------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class _State:
    def __init__(self, base_url: str) -> None:
        from cryptography.hazmat.primitives.asymmetric import rsa

        self.base_url = base_url
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.user: dict[str, Any] = {
            "sub": "sub-alice",
            "email": "alice@example.com",
            "email_verified": True,
            "name": "Alice Example",
        }
        self.fault: str | None = None
        self.codes: dict[str, dict[str, Any]] = {}
        self.tokens: dict[str, dict[str, Any]] = {}
        self.counters = {"authorize": 0, "token": 0, "userinfo": 0, "jwks": 0, "discovery": 0}

    def jwks(self) -> dict[str, Any]:
        numbers = self.key.public_key().public_numbers()

        def whole(n: int) -> str:
            return _b64(n.to_bytes((n.bit_length() + 7) // 8, "big"))

        return {
            "keys": [
                {
                    "kty": "RSA",
                    "use": "sig",
                    "alg": "RS256",
                    "kid": KID,
                    "n": whole(numbers.n),
                    "e": whole(numbers.e),
                }
            ]
        }

    def id_token(self, client_id: str, user: dict[str, Any], nonce: str | None) -> str:
        import jwt

        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.base_url,
            "sub": user["sub"],
            "aud": "someone-else" if self.fault == "wrong_audience" else client_id,
            "iat": now - 1200 if self.fault == "expired" else now,
            "exp": now - 600 if self.fault == "expired" else now + 300,
            "email": user["email"],
            "email_verified": user["email_verified"],
            "name": user.get("name", ""),
        }
        if nonce:
            claims["nonce"] = nonce
        key = self.other_key if self.fault == "bad_signature" else self.key
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": KID})


class _Handler(BaseHTTPRequestHandler):
    state: _State

    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write("oidc-provider: " + (format % args) + "\n")

    def _json(self, body: Any, status: int = 200) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        state = self.state
        if url.path == "/health":
            return self._json({"ok": True})
        if url.path == "/control/counters":
            with state.lock:
                return self._json(dict(state.counters))
        if url.path == "/.well-known/openid-configuration":
            with state.lock:
                state.counters["discovery"] += 1
            base = state.base_url
            return self._json(
                {
                    "issuer": base,
                    "authorization_endpoint": f"{base}/authorize",
                    "token_endpoint": f"{base}/token",
                    "userinfo_endpoint": f"{base}/userinfo",
                    "jwks_uri": f"{base}/jwks",
                    "response_types_supported": ["code"],
                    "subject_types_supported": ["public"],
                    "id_token_signing_alg_values_supported": ["RS256"],
                    "token_endpoint_auth_methods_supported": [
                        "client_secret_post",
                        "client_secret_basic",
                    ],
                    "code_challenge_methods_supported": ["S256"],
                    "scopes_supported": ["openid", "email", "profile"],
                }
            )
        if url.path == "/jwks":
            with state.lock:
                state.counters["jwks"] += 1
            return self._json(state.jwks())
        if url.path == "/authorize":
            return self._authorize(query)
        if url.path == "/userinfo":
            return self._userinfo()
        return self._json({"error": "not_found"}, 404)

    def _authorize(self, query: dict[str, str]) -> None:
        state = self.state
        redirect_uri = query.get("redirect_uri", "")
        if query.get("response_type") != "code" or not redirect_uri:
            return self._json({"error": "invalid_request"}, 400)
        code = secrets.token_urlsafe(24)
        with state.lock:
            state.counters["authorize"] += 1
            state.codes[code] = {
                "client_id": query.get("client_id", ""),
                "redirect_uri": redirect_uri,
                "nonce": query.get("nonce"),
                "challenge": query.get("code_challenge"),
                "user": dict(state.user),
            }
            sent_state = "forged-state" if state.fault == "wrong_state" else query.get("state", "")
        back = urllib.parse.urlencode({"code": code, "state": sent_state})
        self.send_response(302)
        self.send_header("Location", f"{redirect_uri}{'&' if '?' in redirect_uri else '?'}{back}")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _userinfo(self) -> None:
        auth = self.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ").strip()
        with self.state.lock:
            self.state.counters["userinfo"] += 1
            grant = self.state.tokens.get(token)
        if grant is None:
            return self._json({"error": "invalid_token"}, 401)
        user = grant["user"]
        return self._json(
            {
                "sub": user["sub"],
                "email": user["email"],
                "email_verified": user["email_verified"],
                "name": user.get("name", ""),
            }
        )

    def do_POST(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        state = self.state
        if url.path == "/control/reset":
            with state.lock:
                state.reset()
            return self._json({"ok": True})
        if url.path == "/control/user":
            body = json.loads(self._body() or b"{}")
            with state.lock:
                state.user = {**state.user, **body}
            return self._json(state.user)
        if url.path == "/control/fault":
            fault = json.loads(self._body() or b"{}").get("fault")
            if fault is not None and fault not in FAULTS:
                return self._json({"error": f"unknown fault {fault}"}, 400)
            with state.lock:
                state.fault = fault
            return self._json({"fault": fault})
        if url.path == "/token":
            return self._token()
        return self._json({"error": "not_found"}, 404)

    def _token(self) -> None:
        state = self.state
        form = dict(urllib.parse.parse_qsl(self._body().decode()))
        client_id = form.get("client_id", "")
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            client_id = base64.b64decode(auth[6:]).decode().split(":", 1)[0]
            client_id = urllib.parse.unquote_plus(client_id)
        with state.lock:
            state.counters["token"] += 1
            grant = state.codes.pop(form.get("code", ""), None)
        if grant is None or form.get("grant_type") != "authorization_code":
            return self._json({"error": "invalid_grant"}, 400)
        if grant["client_id"] != client_id or grant["redirect_uri"] != form.get("redirect_uri"):
            return self._json({"error": "invalid_grant"}, 400)
        if grant["challenge"]:
            verifier = form.get("code_verifier", "")
            if _b64(hashlib.sha256(verifier.encode()).digest()) != grant["challenge"]:
                return self._json({"error": "invalid_grant", "error_description": "PKCE"}, 400)
        access = secrets.token_urlsafe(24)
        with state.lock:
            state.tokens[access] = {"user": grant["user"]}
            id_token = state.id_token(client_id, grant["user"], grant["nonce"])
        return self._json(
            {
                "access_token": access,
                "token_type": "Bearer",
                "expires_in": 300,
                "scope": "openid email profile",
                "id_token": id_token,
            }
        )


def serve(host: str, port: int) -> None:
    server = ThreadingHTTPServer((host, port), _Handler)
    _Handler.state = _State(f"http://{host}:{server.server_address[1]}")
    server.serve_forever()


# --- Steering it from tests --------------------------------------------------------------------


class OidcProviderError(RuntimeError):
    """The provider did not start, or a control call failed."""


class OidcProvider:
    """A running provider process: its issuer URL, its user, its fault switch, its counters."""

    def __init__(self, issuer: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
        self.issuer = issuer
        self.process = process
        self.log_path = log_path

    @classmethod
    def start(cls, host: str = "127.0.0.1", startup_timeout: float = 15.0) -> OidcProvider:
        from tests.support.sandbox import free_port

        handle, name = tempfile.mkstemp(prefix="oidc-provider-", suffix=".log")
        os.close(handle)
        log_path = Path(name)
        for _ in range(3):
            port = free_port(host)
            with log_path.open("ab") as log:
                process = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "tests.support.oidc_provider",
                        "--host",
                        host,
                        "--port",
                        str(port),
                    ],
                    cwd=REPO_ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            provider = cls(f"http://{host}:{port}", process, log_path)
            deadline = time.monotonic() + startup_timeout
            while time.monotonic() < deadline and process.poll() is None:
                try:
                    provider._call("GET", "/health")
                    return provider
                except (OSError, OidcProviderError):
                    time.sleep(0.05)
            provider.stop()
        raise OidcProviderError("The OIDC provider did not start:\n" + log_path.read_text()[-3000:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.issuer + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with _OPENER.open(request, timeout=5) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise OidcProviderError(f"{method} {path}: {exc.code} {exc.read()[:300]!r}") from exc

    def reset(self) -> None:
        self._call("POST", "/control/reset", {})

    def set_user(self, **claims: Any) -> None:
        """Who /authorize signs in: sub, email, email_verified, name."""
        self._call("POST", "/control/user", claims)

    def set_fault(self, fault: str | None) -> None:
        self._call("POST", "/control/fault", {"fault": fault})

    def counters(self) -> dict[str, int]:
        result: dict[str, int] = self._call("GET", "/control/counters")
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description="A small OpenID Connect provider for tests.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8766)
    args = parser.parse_args()
    serve(args.host, args.port)


if __name__ == "__main__":
    main()
