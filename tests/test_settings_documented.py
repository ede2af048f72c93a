"""Every environment variable the settings read is documented in `.env.example`."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Set by the test tooling for worker processes it starts, not by operators.
INTERNAL = {"OSAI_TESTING"}


def test_every_setting_read_from_the_environment_is_in_env_example() -> None:
    settings_text = (ROOT / "osai_dashboard" / "settings.py").read_text()
    read = set(re.findall(r'env(?:\.\w+)?\(\s*"([A-Z][A-Z0-9_]+)"', settings_text))
    documented = set(
        re.findall(r"^#?\s?([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.M)
    )
    assert len(read) > 40
    assert sorted(read - documented - INTERNAL) == []
