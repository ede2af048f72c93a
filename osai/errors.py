"""The OSAI client's one error family.

Every failure of a call to OSAI surfaces as an `OsaiError`. Callers decide on `permanent`
alone: a permanent error will fail the same way if retried (a refused token, a 400, a
refused file link); a transient one may succeed later (timeouts, 5xx, rate limits, a
garbled answer). `message` is written for a person and never contains the access token,
the JWT or a signed URL's query string.
"""

from __future__ import annotations

from typing import ClassVar


class OsaiError(Exception):
    """Base of every error the OSAI client raises."""

    permanent_by_default: ClassVar[bool] = False

    def __init__(
        self, message: str, *, permanent: bool | None = None, status_code: int | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.permanent: bool = self.permanent_by_default if permanent is None else permanent
        self.status_code = status_code

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.message!r}, permanent={self.permanent}, "
            f"status_code={self.status_code})"
        )


class OsaiAuthError(OsaiError):
    """OSAI refused the access token, or answered 401 again right after a new sign-in."""

    permanent_by_default = True


class OsaiRequestError(OsaiError):
    """OSAI refused the request itself (400 and other 4xx): sending it again will not help."""

    permanent_by_default = True


class OsaiUnavailable(OsaiError):
    """OSAI could not be reached, did not answer in time, or answered 5xx."""

    permanent_by_default = False


class OsaiRateLimited(OsaiUnavailable):
    """OSAI asked us to slow down (429, or 503 with Retry-After) for longer than we wait.

    `retry_after` is OSAI's wish in seconds (never negative, at most a day), or None when
    it sent no usable Retry-After; the pipeline reschedules accordingly.
    """

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        permanent: bool | None = None,
        status_code: int | None = None,
    ) -> None:
        super().__init__(message, permanent=permanent, status_code=status_code)
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, retry_after={self.retry_after})"


class OsaiBadResponse(OsaiError):
    """OSAI answered with something we cannot use: not JSON, HTML, wrong shape, too large.

    Transient by default: such answers usually come from a proxy or a deployment in
    progress, and the next poll tends to be fine.
    """

    permanent_by_default = False


class OsaiLinkError(OsaiError):
    """The pre-signed report file link was refused: not allowed, expired, or too large."""

    permanent_by_default = True


class OsaiRedirectRefused(OsaiError):
    """OSAI (or the storage) answered with a redirect; the client never follows one."""

    permanent_by_default = True
