"""Our Microsoft Teams cards parsed and rendered by Microsoft's own Adaptive Cards renderer
(the `adaptivecards` npm package, a pinned devDependency never shipped), in Chromium (A10).

A blank page loads node_modules/adaptivecards/dist/adaptivecards.min.js; each card (the
Teams body of a budget alert and of an anomaly alert as the outbox queues them, and
Microsoft's published examples in tests/support/vendor_payloads.py) is parsed with a
`SerializationContext`, whose events are the parse's errors and warnings, and rendered: no
event, and the rendered HTML holds the card's text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from reports.models import Delivery
from reports.spend import anomalies, anomaly_alerts, budgets, channels
from tests.e2e.test_browser import BrowserProblems
from tests.factories import make_connection
from tests.reports.spend.test_anomalies import HOUR, NORMAL, START, TRAINING_16, at, held_days
from tests.reports.spend.test_channels import payer
from tests.reports.spend.test_spend import NOW
from tests.support.vendor_payloads import (
    ADAPTIVE_CARDS_ACTIVITY_UPDATE,
    TEAMS_DOCS_EXAMPLE,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db]

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = ROOT / "node_modules" / "adaptivecards" / "dist" / "adaptivecards.min.js"

PARSE_AND_RENDER = """(card) => {
  const AC = window.AdaptiveCards;
  const adaptiveCard = new AC.AdaptiveCard();
  const context = new AC.SerializationContext();
  adaptiveCard.parse(card, context);
  const events = [];
  for (let i = 0; i < context.eventCount; i++) {
    const e = context.getEventAt(i);
    events.push({phase: e.phase, event: e.event, message: e.message});
  }
  const validation = adaptiveCard.validateProperties();
  const failures = [];
  for (const e of validation.validationEvents) failures.push(e.message);
  const element = adaptiveCard.render();
  const out = document.getElementById("out");
  out.textContent = "";
  if (element) out.appendChild(element);
  return {events, failures, html: element ? element.outerHTML : "", text: out.innerText};
}"""


@pytest.fixture
def renderer(browser_page: tuple[Any, BrowserProblems]) -> Any:
    if not LIBRARY.exists():
        pytest.skip(f"{LIBRARY} is missing: run `npm ci`")
    page, _ = browser_page
    page.route("**/*", lambda route: route.abort())  # no image of the samples is fetched
    page.set_content('<!doctype html><html><body><div id="out"></div></body></html>')
    page.add_script_tag(content=LIBRARY.read_text())
    assert page.evaluate("typeof window.AdaptiveCards.AdaptiveCard") == "function"

    def render(card: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = page.evaluate(PARSE_AND_RENDER, card)
        return result

    return render


def _card(body: dict[str, Any]) -> dict[str, Any]:
    [attachment] = body["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    content: dict[str, Any] = attachment["content"]
    return content


def test_microsofts_published_examples_parse_and_render(renderer: Any) -> None:
    """The renderer and this harness accept what Microsoft publishes."""
    teams = renderer(_card(TEAMS_DOCS_EXAMPLE))
    assert teams["events"] == [] and teams["failures"] == []
    assert "For Samples and Templates, see" in teams["text"]
    activity = renderer(ADAPTIVE_CARDS_ACTIVITY_UPDATE)
    assert activity["events"] == [] and activity["failures"] == []
    assert "Publish Adaptive Card schema" in activity["text"]
    assert "Matt Hidinger" in activity["html"] and "Backlog" in activity["text"]
    broken = renderer({"type": "AdaptiveCard", "version": "1.4", "body": [{"type": "Nope"}]})
    assert broken["events"], "an unknown element is reported by the parse"


@pytest.fixture
def queued(settings: Any) -> tuple[Delivery, Delivery]:
    """A budget alert's and an anomaly alert's Teams deliveries, as the outbox queues them;
    made before the browser starts (Playwright's loop makes the ORM refuse to run)."""
    settings.ALERT_WEBHOOK_ALLOW_LOCAL = True
    owner = payer()
    channel = channels.channel_add(
        actor=owner, kind="teams", name="Chat", url="http://127.0.0.1:9/teams"
    )
    budget = budgets.budget_set(actor=owner, scope="person", amount="20", channels=[channel])
    budgets.budget_check(budget, now=NOW)
    lab = make_connection(owner, "Dana's lab")
    held_days(lab, START, [*NORMAL, {TRAINING_16: 100 * HOUR}])
    anomalies.detect(lab, now=at(28))
    anomaly_alerts.anomaly_alerts_queue(lab, now=at(28))
    budget_alert, anomaly_alert = Delivery.objects.filter(channel="teams").order_by("pk")
    assert budget_alert.budget_id and anomaly_alert.anomaly_id
    return budget_alert, anomaly_alert


def test_our_budget_and_anomaly_alert_cards_parse_and_render(
    queued: tuple[Delivery, Delivery], renderer: Any
) -> None:
    budget_alert, anomaly_alert = queued
    budget_card = renderer(_card(budget_alert.payload))
    assert budget_card["events"] == [] and budget_card["failures"] == []
    assert "Budget alert: 80 % of All of payer's connections" in budget_card["text"]
    assert "EUR 18.00 spent this month" in budget_card["text"]
    assert budget_alert.key in budget_card["text"]
    anomaly_card = renderer(_card(anomaly_alert.payload))
    assert anomaly_card["events"] == [] and anomaly_card["failures"] == []
    text = anomaly_card["text"]
    assert "Training on 16 GB workers on Dana's lab: EUR 210.00 against a usual" in text
    assert "Category" in text and "Training" in text and anomaly_alert.key in text
    assert "Anomalies" in anomaly_card["html"]
