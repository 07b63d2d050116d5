"""A conversation's own actions in a real browser: rating replies (kept across a reload, withdrawn
by pressing again), exporting it as Markdown and as JSON (the files are the API's), and deleting
it (confirmed in a dialog; gone from the list and from the API)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from playwright.sync_api import Locator, Page, expect

from tests.browser.conftest import Opener, api_client, chat, deploy
from tests.e2e.conftest import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

EMAIL = "conversation-actions@example.com"


def test_rate_export_and_delete_a_conversation(open_page: Opener, stack: Stack) -> None:
    with api_client(stack, EMAIL) as client:
        deployment = deploy(client)
        conversation = chat(client, deployment, "first question")["conversation_id"]
        second = client.post(
            f"/api/agents/{deployment}/chat",
            json={"message": "second question", "conversation_id": conversation},
        )
        assert second.status_code == 200, second.text
        other = chat(client, deployment, "another conversation")["conversation_id"]
    detail = f"/api/agents/{deployment}/conversations/{conversation}"

    page = open_page(f"/chat/{deployment}?conversation={conversation}", email=EMAIL)
    expect(page.locator(".message.from-agent")).to_have_count(2)
    rate_the_replies(page, stack, detail)
    export_both_ways(page, conversation)
    delete_it(page, stack, deployment, conversation, other)


def rate_the_replies(page: Page, stack: Stack, detail: str) -> None:
    with api_client(stack, EMAIL) as client:
        messages = client.get(detail).json()["messages"]["data"]
    first, second = messages[1]["id"], messages[3]["id"]
    replies = page.locator(".message.from-agent")
    helpful = replies.nth(0).get_by_role("button", name="Helpful", exact=True)
    unhelpful = replies.nth(1).get_by_role("button", name="Not helpful")

    # Pressed at once, stored, and still pressed after a reload.
    expect(helpful).to_have_attribute("aria-pressed", "false")
    press(page, helpful)
    expect(helpful).to_have_attribute("aria-pressed", "true")
    expect_feedback(stack, detail, [(first, "like")])
    press(page, unhelpful)
    expect(unhelpful).to_have_attribute("aria-pressed", "true")
    page.reload()
    expect(replies).to_have_count(2)
    expect(helpful).to_have_attribute("aria-pressed", "true")
    expect(unhelpful).to_have_attribute("aria-pressed", "true")

    # Pressing it again withdraws it.
    press(page, helpful)
    expect(helpful).to_have_attribute("aria-pressed", "false")
    expect_feedback(stack, detail, [(second, "dislike")])


def export_both_ways(page: Page, conversation: str) -> None:
    """The files the API gives, under the API's names."""
    with page.expect_download() as markdown:
        page.get_by_role("button", name="Export as Markdown").click()
    assert markdown.value.suggested_filename == f"conversation-{conversation}.md"
    text = Path(markdown.value.path()).read_text(encoding="utf-8")
    assert "## 1. User" in text and "first question" in text and "second question" in text
    with page.expect_download() as exported:
        page.get_by_role("button", name="Export as JSON").click()
    assert exported.value.suggested_filename == f"conversation-{conversation}.json"
    body = json.loads(Path(exported.value.path()).read_text(encoding="utf-8"))
    assert body["conversation"]["id"] == conversation
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user", "assistant"]


def delete_it(page: Page, stack: Stack, deployment: str, conversation: str, other: str) -> None:
    """Asked first ("Keep it" keeps it), then gone from the list and from the API."""
    page.get_by_role("button", name="Delete conversation").click()
    dialog = page.get_by_role("dialog", name="Delete this conversation?")
    dialog.get_by_role("button", name="Keep it").click()
    expect(dialog).to_be_hidden()
    page.get_by_role("button", name="Delete conversation").click()
    dialog.get_by_role("button", name="Delete for good").click()
    expect(page).to_have_url(re.compile(rf"/chat/{deployment}$"))
    listed = page.locator(".conversation-list a")
    expect(listed).to_have_count(1)
    expect(listed.first).to_have_attribute("href", re.compile(other))
    expect(page.get_by_role("button", name="Delete conversation")).to_have_count(0)
    with api_client(stack, EMAIL) as client:
        path = f"/api/agents/{deployment}/conversations"
        assert client.get(f"{path}/{conversation}").status_code == 404
        assert client.get(f"{path}/{other}").status_code == 200


def press(page: Page, button: Locator) -> None:
    """Click a rating button and wait for the API's answer."""
    with page.expect_response(lambda r: r.url.endswith("/feedback")) as answer:
        button.click()
    assert answer.value.status == 200


def expect_feedback(stack: Stack, path: str, wanted: list[tuple[str, str]]) -> None:
    with api_client(stack, EMAIL) as client:
        feedback = client.get(path).json()["feedback"]
    assert [(f["message_id"], f["rating"]) for f in feedback] == wanted
