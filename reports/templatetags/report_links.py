"""Template tags for report links: "run again" and saved views (reports/pages/links.py)."""

from __future__ import annotations

from django import template

from reports.models import Report, SavedView
from reports.pages import links

register = template.Library()


@register.simple_tag
def run_again_url(report: Report) -> str:
    """The report's form pre-filled with its parameters (a preset stays relative)."""
    return links.run_again_url(report)


@register.simple_tag
def saved_view_url(view: SavedView) -> str:
    return links.view_url(view)


@register.filter
def view_summary(view: SavedView) -> str:
    """A saved view in words: "Last quarter, weekly"."""
    return links.describe_params(view.params)
