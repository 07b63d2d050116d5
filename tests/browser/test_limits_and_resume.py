"""Limits and lost connections in a real browser, on a stack of their own: the remaining chat
quota shows when it is low and a 429 says when to try again (Send stays off until then); a
reply whose stream ends because the API restarts is resumed with Last-Event-ID and ends with
exactly the stored text."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import Opener, api_client, deploy
from tests.e2e.conftest import GENEROUS_LIMITS, Stack, wait_http

pytestmark = [pytest.mark.e2e, pytest.mark.browser]


@pytest.fixture(scope="module")
def web_limits() -> dict[str, int]:
    # One send a minute: the second is refused however slowly the first reply comes.
    return {**GENEROUS_LIMITS, "chat_per_minute": 1}


def send(page: Page, text: str) -> None:
    page.get_by_role("textbox", name=re.compile("^Message ")).fill(text)
    page.get_by_role("button", name="Send", exact=True).click()


def test_low_quota_and_429_with_when_to_try_again(open_page: Opener, stack: Stack) -> None:
    email = "hasty@example.com"
    with api_client(stack, email) as client:
        deployment = deploy(client)
    page = open_page(f"/chat/{deployment}", email=email)
    replies = page.locator(".message.from-agent")
    send(page, "one")
    expect(replies.last).to_have_class(re.compile("status-completed"))
    expect(page.get_by_text("You have no messages left this minute.")).to_be_visible()

    send(page, "two")
    alert = page.get_by_role("alert").filter(has_text="too quickly")
    expect(alert).to_contain_text(re.compile(r"You can send again in \d+ (seconds?|minutes?)\."))
    expect(page.get_by_role("button", name="Send", exact=True)).to_be_disabled()
    expect(replies).to_have_count(1)  # nothing was stored for the refused send
    expect(page.get_by_role("textbox", name=re.compile("^Message "))).to_have_value("two")
    with api_client(stack, email) as client:
        conversations = client.get(f"/api/agents/{deployment}/conversations").json()["data"]
    assert [c["message_count"] for c in conversations] == [2]


def test_a_dropped_stream_resumes_with_last_event_id(open_page: Opener, stack: Stack) -> None:
    email = "resumer@example.com"
    with api_client(stack, email) as client:
        deployment = deploy(client)
    # While the API is away, the reconnection attempts are refused: expected here.
    page = open_page(f"/chat/{deployment}", email=email, tolerate="ERR_CONNECTION_REFUSED")
    resumes: list[dict[str, str]] = []
    page.on(
        "request",
        lambda r: (
            resumes.append(r.headers) if re.search(r"/api/messages/[^/]+/stream$", r.url) else None
        ),
    )
    send(page, "a long answer please [[long:120]] [[tps:15]]")
    reply = page.locator(".message.from-agent").last
    expect(reply).to_contain_text("lorem ipsum")

    # The API restarts on the same port: its streams end with stream.closing, the reply goes on
    # in the worker, and the client comes back to the new process.
    api = next(p for p in stack.processes if p.name == "api" and p.popen.poll() is None)
    api.stop()
    port = stack.api.rsplit(":", 1)[1]
    replacement = stack.spawn("api", "serve", "--port", port)
    wait_http(f"{stack.api}/readyz", replacement)

    expect(reply).to_have_class(re.compile("status-completed"), timeout=60_000)
    assert resumes, "no GET /api/messages/{id}/stream"
    assert re.fullmatch(r"\d+\.\d+f?", resumes[0].get("last-event-id", "")), resumes[0]
    shown = reply.locator(".message-text").inner_text()
    with api_client(stack, email) as client:
        conversation = client.get(f"/api/agents/{deployment}/conversations").json()["data"][0]
        detail = client.get(f"/api/agents/{deployment}/conversations/{conversation['id']}").json()
    stored = detail["messages"]["data"][-1]
    assert stored["status"] == "completed"
    assert " ".join(shown.split()) == " ".join(stored["content"].split())  # no gap, no repeat
