"""The acceptance flow in a real browser: a new user browses, filters (the URL follows), opens
an agent, fills the generated form (an invalid value shows the server's 422 on its field, and
the draft survives a reload), deploys, chats with a streamed reply, stops a reply keeping its
partial text, reloads and sees the history, then pauses and deletes the deployment."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import UUID, Opener, api_client, screenshot
from tests.e2e.conftest import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.browser]


def test_browse_deploy_chat_stop_reload_pause_delete(open_page: Opener, stack: Stack) -> None:
    email = "newcomer@example.com"
    page = open_page("/sign-in")

    # Sign in with the dev sign-in (APP_ENV=dev).
    page.get_by_label("Email").fill(email)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/$"))
    expect(page.get_by_role("link", name="My agents", exact=True)).to_be_visible()

    browse_and_filter(page, stack)
    deployment_id = deploy_with_the_generated_form(page, stack, email)
    conversation_id = chat_with_a_streamed_reply(page, deployment_id)
    stop_a_reply_and_reload(page, stack, email, deployment_id, conversation_id)
    pause_and_delete(page, stack, email, deployment_id)


def browse_and_filter(page: Page, stack: Stack) -> None:
    # Browse: cards from the real catalog.
    cards = page.locator(".agent-card")
    expect(cards.first).to_be_visible()
    total = httpx_total(stack, "")
    expect(page.get_by_text(f"{total} agents found")).to_be_visible()
    screenshot(page, "marketplace")

    # Filter: the URL follows, and the list is the API's for that filter.
    page.get_by_label("Category").select_option("productivity")
    expect(page).to_have_url(re.compile(r"\?category=productivity$"))
    expect(
        page.get_by_text(f"{httpx_total(stack, 'category=productivity')} agents found")
    ).to_be_visible()
    page.get_by_role("searchbox", name="Search").fill("meeting")
    page.get_by_role("button", name="Search", exact=True).click()
    expect(page).to_have_url(re.compile(r"\?q=meeting&category=productivity$"))
    expect(cards).to_have_count(httpx_total(stack, "q=meeting&category=productivity"))
    # The back button returns to the previous view.
    page.go_back()
    expect(page).to_have_url(re.compile(r"\?category=productivity$"))
    expect(page.get_by_role("searchbox", name="Search")).to_have_value("")
    page.go_forward()
    expect(page).to_have_url(re.compile(r"\?q=meeting&category=productivity$"))


def deploy_with_the_generated_form(page: Page, stack: Stack, email: str) -> str:
    # Open the agent; deploy with a generated form.
    page.get_by_role("link", name="Meeting Notes Summarizer").click()
    expect(page).to_have_url(re.compile(r"/agents/meeting-notes-summarizer$"))
    expect(page.get_by_role("heading", name="Meeting Notes Summarizer", level=1)).to_be_visible()
    screenshot(page, "agent-detail")
    page.get_by_role("button", name="Deploy this agent").click()
    dialog = page.get_by_role("dialog", name="Deploy Meeting Notes Summarizer")
    expect(dialog).to_be_visible()

    # Checked in the browser first: the required team name, emptied.
    team = dialog.get_by_label("Team name")
    expect(team).to_have_value("Product")  # the agent's default_config
    team.fill("")
    dialog.get_by_role("button", name="Deploy", exact=True).click()
    expect(team).to_have_attribute("aria-invalid", "true")
    expect(dialog.get_by_text("is required")).to_be_visible()

    # A URL the browser accepts but the server refuses: its 422 lands on the field.
    team.fill("Platform")
    webhook = dialog.get_by_label("Chat webhook URL")
    webhook.fill("https://127.0.0.1/hook")
    dialog.get_by_role("button", name="Deploy", exact=True).click()
    expect(webhook).to_have_attribute("aria-invalid", "true")
    error = dialog.locator("#field-webhook-url-error")
    expect(error).to_contain_text("private")
    expect(webhook).to_have_attribute("aria-describedby", re.compile("field-webhook-url-error"))
    screenshot(page, "deploy-dialog")
    with api_client(stack, email) as client:
        assert client.get("/api/deployments").json()["data"] == []

    # The draft survives a reload (the dialog reopens with what was typed).
    page.reload()
    dialog = page.get_by_role("dialog", name="Deploy Meeting Notes Summarizer")
    expect(dialog.get_by_label("Team name")).to_have_value("Platform")
    dialog.get_by_label("Chat webhook URL").fill("")
    dialog.get_by_role("button", name="Deploy", exact=True).click()

    # Success goes straight to the chat.
    expect(page).to_have_url(re.compile(rf"/chat/{UUID.pattern}$"))
    deployment_id = UUID.search(page.url).group(0)  # type: ignore[union-attr]
    with api_client(stack, email) as client:
        deployment = client.get(f"/api/deployments/{deployment_id}").json()
    assert deployment["status"] == "active"
    assert deployment["config"]["team_name"] == "Platform"
    return deployment_id


def chat_with_a_streamed_reply(page: Page, deployment_id: str) -> str:
    # A streamed reply: the text shows while the reply is still being written.
    box = page.get_by_label("Message Meeting Notes Summarizer")
    box.fill("Summarise our standup [[long:60]] [[tps:30]]")
    page.get_by_role("button", name="Send", exact=True).click()
    reply = page.locator(".message.from-agent").last
    expect(reply).to_contain_text("Echo: Summarise our standup")
    expect(page.get_by_role("button", name="Stop reply")).to_be_visible()  # still streaming
    expect(page).to_have_url(re.compile(rf"/chat/{deployment_id}\?conversation={UUID.pattern}$"))
    expect(page.get_by_role("button", name="Stop reply")).to_have_count(0, timeout=15_000)
    expect(reply).to_have_class(re.compile("status-completed"))
    screenshot(page, "chat")
    return page.url.rsplit("=", 1)[1]


def stop_a_reply_and_reload(
    page: Page, stack: Stack, email: str, deployment_id: str, conversation_id: str
) -> None:
    box = page.get_by_label("Message Meeting Notes Summarizer")
    # Stop a long reply: the partial text stays.
    box.fill("Now the long version [[long:2000]] [[tps:20]]")
    box.press("Enter")
    reply = page.locator(".message.from-agent").last
    expect(reply).to_contain_text("lorem ipsum")
    page.get_by_role("button", name="Stop reply").click()
    expect(reply.get_by_text("Reply stopped.")).to_be_visible()
    partial = reply.locator(".message-text").inner_text()
    assert partial.startswith("Echo: Now the long version")
    with api_client(stack, email) as client:
        detail = client.get(f"/api/agents/{deployment_id}/conversations/{conversation_id}").json()
    stored = detail["messages"]["data"][-1]
    assert stored["status"] == "cancelled"
    assert 0 < len(stored["content"].split()) < 2000
    assert partial.split()[:5] == stored["content"].split()[:5]

    # Reload: the history comes back from the API, in order.
    page.reload()
    messages = page.locator(".message")
    expect(messages).to_have_count(4)
    expect(messages.nth(0)).to_contain_text("Summarise our standup")
    expect(messages.nth(1)).to_contain_text("Echo: Summarise our standup")
    expect(messages.nth(3).get_by_text("Reply stopped.")).to_be_visible()
    expect(page.get_by_role("link", name=re.compile("Summarise our standup"))).to_have_attribute(
        "aria-current", "page"
    )


def pause_and_delete(page: Page, stack: Stack, email: str, deployment_id: str) -> None:
    # My agents: pause, then delete with confirmation.
    page.get_by_role("link", name="My agents", exact=True).click()
    card = page.locator(".deployment", has_text="Meeting Notes Summarizer")
    expect(card.locator(".status-badge")).to_have_text("Active")
    screenshot(page, "my-agents")
    page.get_by_role("button", name="Pause Meeting Notes Summarizer").click()
    expect(card.locator(".status-badge")).to_have_text("Paused")
    with api_client(stack, email) as client:
        assert client.get(f"/api/deployments/{deployment_id}").json()["status"] == "paused"
    page.get_by_role("button", name="Delete Meeting Notes Summarizer").click()
    confirm = page.get_by_role("dialog", name="Delete Meeting Notes Summarizer?")
    confirm.get_by_role("button", name="Delete for good").click()
    expect(card).to_have_count(0)
    expect(page.get_by_text("No agents yet")).to_be_visible()
    with api_client(stack, email) as client:
        assert client.get(f"/api/deployments/{deployment_id}").status_code == 404


def httpx_total(stack: Stack, query: str) -> int:
    import httpx

    total: int = httpx.get(f"{stack.api}/api/marketplace/agents?{query}").json()["total"]
    return total
