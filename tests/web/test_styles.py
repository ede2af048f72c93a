"""Every CSS class a template uses is defined by a stylesheet, so no page renders bare."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Hooks that are not styles: Plotly reads `no-inline-styles` on the <link> of its CSS file
# (static/css/app.css says so too); htmx adds and reads its own `htmx-` classes.
HOOKS = {"no-inline-styles"}


def _defined() -> set[str]:
    css = " ".join(path.read_text() for path in (ROOT / "static").rglob("*.css"))
    css = re.sub(r"/\*.*?\*/", " ", css, flags=re.S)  # a class named in a comment is not styled
    return set(re.findall(r"\.(-?[_a-zA-Z][\w-]*)", css))


def _used() -> dict[str, set[str]]:
    """Class names in templates; the static part of `class="pill pill-{{ x }}"` counts too."""
    used: dict[str, set[str]] = {}
    for template in (ROOT / "templates").rglob("*.html"):
        for attr in re.findall(r'class="([^"]*)"', template.read_text()):
            static = re.sub(r"{%.*?%}|{{.*?}}", " ", attr)
            for name in static.split():
                if not name.endswith("-"):  # the prefix of a class completed at render time
                    used.setdefault(name, set()).add(template.name)
    return used


def test_every_class_used_in_a_template_is_defined_in_a_stylesheet() -> None:
    defined = _defined()
    used = _used()
    assert len(used) > 60  # the scan sees the templates
    missing = {
        name: sorted(files)
        for name, files in used.items()
        if name not in defined and name not in HOOKS and not name.startswith("htmx-")
    }
    assert missing == {}


def test_every_report_and_bucket_state_has_a_badge_or_pill_style() -> None:
    from reports.models import Bucket, Report

    defined = _defined()
    assert {f"badge-{state}" for state in Report.State.values} <= defined
    pill_states = {*Report.State.values, *Bucket.State.values} - {"queued", "new", "cancelled"}
    assert {f"pill-{state}" for state in pill_states} <= defined
