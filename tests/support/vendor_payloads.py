"""What Slack's and Microsoft Teams' webhooks accept, checked offline (no vendor is reachable).

Each checker returns the list of problems (empty: valid). Each is run on the vendor's own
published example first, so the checker is known to accept what the vendor documents.
"""

from __future__ import annotations

from typing import Any

# Slack, "Sending messages using incoming webhooks", the "advanced message formatting"
# example (https://api.slack.com/messaging/webhooks), the image accessory left out.
SLACK_DOCS_EXAMPLE: dict[str, Any] = {
    "text": "Danny Torrence left a 1 star review for your property.",
    "blocks": [
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": "Danny Torrence left the following review for your property:",
            },
        },
        {
            "type": "section",
            "block_id": "section567",
            "text": {
                "type": "mrkdwn",
                "text": "<https://example.com|Overlook Hotel> \n :star: \n Doors had too many axe "
                "holes, guest in room 237 was far too rowdy, whole place felt stuck in the 1920s.",
            },
        },
        {
            "type": "section",
            "block_id": "section789",
            "fields": [{"type": "mrkdwn", "text": "*Average Rating*\n1.0"}],
        },
    ],
}

# Microsoft Learn, "Create Incoming Webhooks" / "Send Adaptive Cards using an Incoming
# Webhook" (https://learn.microsoft.com/en-us/microsoftteams/platform/webhooks-and-connectors/
# how-to/add-incoming-webhook), the example request body; Teams workflows take the same.
TEAMS_DOCS_EXAMPLE: dict[str, Any] = {
    "type": "message",
    "attachments": [
        {
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": None,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.2",
                "body": [
                    {
                        "type": "TextBlock",
                        "text": "For Samples and Templates, see "
                        "[https://adaptivecards.io/samples](https://adaptivecards.io/samples)",
                    }
                ],
            },
        }
    ],
}

# adaptivecards.io, the "Activity Update" sample (https://adaptivecards.io/samples/
# ActivityUpdate.html; github.com/microsoft/AdaptiveCards, samples/v1.0/Scenarios/
# ActivityUpdate.json), as published with its data inline: a ColumnSet with an Image, a
# FactSet and two Action.ShowCard with inputs. Parsed by Microsoft's own renderer in the
# browser test (tests/e2e/test_teams_cards.py).
ADAPTIVE_CARDS_ACTIVITY_UPDATE: dict[str, Any] = {
    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
    "type": "AdaptiveCard",
    "version": "1.0",
    "body": [
        {
            "type": "TextBlock",
            "text": "Publish Adaptive Card schema",
            "weight": "bolder",
            "size": "medium",
        },
        {
            "type": "ColumnSet",
            "columns": [
                {
                    "type": "Column",
                    "width": "auto",
                    "items": [
                        {
                            "type": "Image",
                            "url": "https://pbs.twimg.com/profile_images/3647943215/"
                            "d7f12830b3c17a5a9e4afcc370e3a37e_400x400.jpeg",
                            "size": "small",
                            "style": "person",
                        }
                    ],
                },
                {
                    "type": "Column",
                    "width": "stretch",
                    "items": [
                        {
                            "type": "TextBlock",
                            "text": "Matt Hidinger",
                            "weight": "bolder",
                            "wrap": True,
                        },
                        {
                            "type": "TextBlock",
                            "spacing": "none",
                            "text": "Created {{DATE(2017-02-14T06:08:39Z, SHORT)}}",
                            "isSubtle": True,
                            "wrap": True,
                        },
                    ],
                },
            ],
        },
        {
            "type": "TextBlock",
            "text": "Now that we have defined the main rules and features of the format, we need "
            "to produce a schema and publish it to GitHub. The schema will be the starting "
            "point of our reference documentation.",
            "wrap": True,
        },
        {
            "type": "FactSet",
            "facts": [
                {"title": "Board:", "value": "Adaptive Card"},
                {"title": "List:", "value": "Backlog"},
                {"title": "Assigned to:", "value": "Matt Hidinger"},
                {"title": "Due date:", "value": "Not set"},
            ],
        },
    ],
    "actions": [
        {
            "type": "Action.ShowCard",
            "title": "Set due date",
            "card": {
                "type": "AdaptiveCard",
                "body": [{"type": "Input.Date", "id": "dueDate"}],
                "actions": [{"type": "Action.Submit", "title": "OK"}],
            },
        },
        {
            "type": "Action.ShowCard",
            "title": "Comment",
            "card": {
                "type": "AdaptiveCard",
                "body": [
                    {
                        "type": "Input.Text",
                        "id": "comment",
                        "isMultiline": True,
                        "placeholder": "Enter your comment",
                    }
                ],
                "actions": [{"type": "Action.Submit", "title": "OK"}],
            },
        },
    ],
}

# Block Kit's documented limits (https://api.slack.com/reference/block-kit/blocks).
SLACK_MAX_BLOCKS = 50
SLACK_SECTION_TEXT = 3000
SLACK_HEADER_TEXT = 150
SLACK_FIELDS = 10
SLACK_FIELD_TEXT = 2000
SLACK_CONTEXT_ELEMENTS = 10


def _text_object(obj: Any, where: str, limit: int, kinds: tuple[str, ...]) -> list[str]:
    if not isinstance(obj, dict) or obj.get("type") not in kinds:
        return [f"{where}: a text object of type {kinds}"]
    text = obj.get("text")
    if not isinstance(text, str) or not text:
        return [f"{where}: empty text"]
    return [f"{where}: {len(text)} > {limit} characters"] if len(text) > limit else []


def slack_problems(body: Any) -> list[str]:
    problems: list[str] = []
    if not isinstance(body, dict):
        return ["not an object"]
    if not isinstance(body.get("text"), str) or not body["text"].strip():
        problems.append("no fallback text")
    blocks = body.get("blocks", [])
    if not isinstance(blocks, list) or len(blocks) > SLACK_MAX_BLOCKS:
        problems.append("blocks: a list of at most 50")
        return problems
    for n, block in enumerate(blocks):
        kind = block.get("type")
        where = f"blocks[{n}] ({kind})"
        if kind == "header":
            problems += _text_object(block.get("text"), where, SLACK_HEADER_TEXT, ("plain_text",))
        elif kind == "section":
            if "text" not in block and "fields" not in block:
                problems.append(f"{where}: neither text nor fields")
            if "text" in block:
                problems += _text_object(
                    block["text"], where, SLACK_SECTION_TEXT, ("mrkdwn", "plain_text")
                )
            fields = block.get("fields", [])
            if len(fields) > SLACK_FIELDS:
                problems.append(f"{where}: more than 10 fields")
            for field in fields:
                problems += _text_object(
                    field, where + " field", SLACK_FIELD_TEXT, ("mrkdwn", "plain_text")
                )
        elif kind == "context":
            elements = block.get("elements", [])
            if not elements or len(elements) > SLACK_CONTEXT_ELEMENTS:
                problems.append(f"{where}: 1 to 10 elements")
            for element in elements:
                problems += _text_object(
                    element, where, SLACK_SECTION_TEXT, ("mrkdwn", "plain_text")
                )
        elif kind != "divider":
            problems.append(f"{where}: a block this project does not send")
    return problems


TEAMS_VERSIONS = {"1.0", "1.1", "1.2", "1.3", "1.4", "1.5"}


def _card_element_problems(element: Any, where: str) -> list[str]:
    if not isinstance(element, dict):
        return [f"{where}: not an object"]
    kind = element.get("type")
    if kind == "TextBlock":
        ok = isinstance(element.get("text"), str) and element["text"] != ""
        return [] if ok else [f"{where}: a TextBlock needs text"]
    if kind == "FactSet":
        facts = element.get("facts")
        if not isinstance(facts, list) or not facts:
            return [f"{where}: a FactSet needs facts"]
        return [
            f"{where}: a fact needs a title and a value (strings)"
            for fact in facts
            if not (isinstance(fact.get("title"), str) and isinstance(fact.get("value"), str))
        ]
    return [f"{where}: {kind!r} is not an element this project sends"]


def teams_problems(body: Any) -> list[str]:
    """The envelope of a Teams webhook message and its Adaptive Card."""
    if not isinstance(body, dict) or body.get("type") != "message":
        return ['not {"type": "message", ...}']
    attachments = body.get("attachments")
    if not isinstance(attachments, list) or len(attachments) != 1:
        return ["attachments: exactly one card"]
    [attachment] = attachments
    problems = []
    if attachment.get("contentType") != "application/vnd.microsoft.card.adaptive":
        problems.append("contentType is not application/vnd.microsoft.card.adaptive")
    card = attachment.get("content")
    if not isinstance(card, dict) or card.get("type") != "AdaptiveCard":
        return [*problems, "content: not an AdaptiveCard"]
    if card.get("version") not in TEAMS_VERSIONS:
        problems.append(f"version {card.get('version')!r}")
    body_elements = card.get("body")
    if not isinstance(body_elements, list) or not body_elements:
        problems.append("an empty card body")
    else:
        for n, element in enumerate(body_elements):
            problems += _card_element_problems(element, f"body[{n}]")
    for n, action in enumerate(card.get("actions", [])):
        if action.get("type") != "Action.OpenUrl" or not str(action.get("url", "")).startswith(
            ("https://", "http://")
        ):
            problems.append(f"actions[{n}]: an Action.OpenUrl with a URL")
    return problems
