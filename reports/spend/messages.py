"""What a message looks like on each kind of channel (pure functions, no I/O).

An alert or a digest is one `Message`: a one-line title, a few lines of text, facts (label
and value) and a link. Email sends its subject and text; a signed webhook our own JSON
(`payload`, with a Slack-compatible `text`); Slack and Microsoft Teams the bodies their
incoming webhooks document:

- Slack (https://api.slack.com/messaging/webhooks, https://api.slack.com/reference/block-kit):
  `text` as the fallback for notifications, and `blocks`: a header (plain text, at most 150
  characters), sections (mrkdwn, at most 3,000 characters each; fields at most 10, 2,000
  characters each) and a context block; at most 50 blocks. mrkdwn escapes `&`, `<` and `>`.
- Microsoft Teams, a workflow ("Post to a channel when a webhook request is received"): a
  message whose attachment is an Adaptive Card, version 1.4, of TextBlocks and a FactSet,
  with an Action.OpenUrl to the page
  (https://learn.microsoft.com/en-us/microsoftteams/platform/webhooks-and-connectors/how-to/connectors-using).

Every text is cut to its vendor's limit here, so a long budget name never makes a vendor
refuse the message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SLACK_HEADER_MAX = 150
SLACK_SECTION_MAX = 3000
SLACK_FIELD_MAX = 2000
SLACK_FIELDS_MAX = 10
SLACK_BLOCKS_MAX = 50
SLACK_FALLBACK_MAX = 3000
TEAMS_CARD_VERSION = "1.4"
ADAPTIVE_CARD = "application/vnd.microsoft.card.adaptive"


@dataclass(frozen=True)
class Message:
    title: str
    text: str = ""
    facts: list[tuple[str, str]] = field(default_factory=list)
    link: str = ""
    link_label: str = "Open in OSAI Usage"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def slack_escape(text: str) -> str:
    """Slack's mrkdwn escapes: &, < and > (anything else is shown as written)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_body(message: Message, *, key: str = "") -> dict[str, Any]:
    """An incoming webhook's body: the fallback `text` and Block Kit blocks."""
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {
                "type": "plain_text",
                "text": _cut(message.title, SLACK_HEADER_MAX),
                "emoji": False,
            },
        }
    ]
    if message.text.strip():
        blocks.append(
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": _cut(slack_escape(message.text), SLACK_SECTION_MAX),
                },
            }
        )
    facts = message.facts[:SLACK_FIELDS_MAX]
    if facts:
        blocks.append(
            {
                "type": "section",
                "fields": [
                    {
                        "type": "mrkdwn",
                        "text": _cut(
                            f"*{slack_escape(label)}*\n{slack_escape(value)}", SLACK_FIELD_MAX
                        ),
                    }
                    for label, value in facts
                ],
            }
        )
    context = []
    if message.link:
        label = slack_escape(message.link_label).replace("|", "/")
        context.append(f"<{message.link}|{label}>")
    if key:
        context.append(f"delivery {key}")
    if context:
        blocks.append(
            {
                "type": "context",
                "elements": [
                    {"type": "mrkdwn", "text": _cut(" · ".join(context), SLACK_SECTION_MAX)}
                ],
            }
        )
    return {"text": _cut(message.title, SLACK_FALLBACK_MAX), "blocks": blocks[:SLACK_BLOCKS_MAX]}


def teams_body(message: Message, *, key: str = "") -> dict[str, Any]:
    """A Teams workflow webhook's body: a message with one Adaptive Card attachment."""
    body: list[dict[str, Any]] = [
        {
            "type": "TextBlock",
            "text": message.title,
            "weight": "Bolder",
            "size": "Medium",
            "wrap": True,
        }
    ]
    if message.text.strip():
        body.append({"type": "TextBlock", "text": message.text, "wrap": True})
    if message.facts:
        body.append(
            {
                "type": "FactSet",
                "facts": [{"title": label, "value": value} for label, value in message.facts],
            }
        )
    if key:
        body.append(
            {
                "type": "TextBlock",
                "text": f"delivery {key}",
                "isSubtle": True,
                "size": "Small",
                "wrap": True,
            }
        )
    card: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": TEAMS_CARD_VERSION,
        "body": body,
    }
    if message.link:
        card["actions"] = [
            {"type": "Action.OpenUrl", "title": message.link_label, "url": message.link}
        ]
    return {
        "type": "message",
        "attachments": [{"contentType": ADAPTIVE_CARD, "contentUrl": None, "content": card}],
    }


def channel_test_message(channel_name: str) -> Message:
    """What "Send a test" sends."""
    return Message(
        title=f"Test message from OSAI Usage to {channel_name}",
        text="If you can read this, budget alerts and digests sent to this channel arrive.",
        facts=[("Channel", channel_name)],
    )
