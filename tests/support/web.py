"""What page tests share: a test client signed in as someone, and a page's words."""

from __future__ import annotations

import re
from typing import Any

from django.test import Client


def client_for(user: Any | None, **kwargs: Any) -> Client:
    """A test client signed in as `user` (None: nobody); `kwargs` go to Client (headers …)."""
    client = Client(**kwargs)
    if user is not None:
        client.force_login(user)
    return client


def page_text(body: bytes) -> str:
    """A page's words without its tags, white space folded: what a reader sees, in one line."""
    return " ".join(re.sub(r"<[^>]+>", " ", body.decode()).split())
