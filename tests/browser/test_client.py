"""The client's safety and first-run parts in a real browser: a reply carrying HTML and a
javascript: link renders inert; the first-visit tour; the survey after the first completed
chat (once, dismissible); and no request ever leaves for a host other than the API."""

from __future__ import annotations

import re

import httpx
import pytest
from playwright.sync_api import Dialog, Page, expect

from tests.browser.conftest import Opener, api_client, deploy, screenshot
from tests.e2e.conftest import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.browser]


def send(page: Page, text: str) -> None:
    page.get_by_role("textbox", name=re.compile("^Message ")).fill(text)
    page.get_by_role("button", name="Send", exact=True).click()


def test_a_reply_with_html_and_a_javascript_link_renders_inert(
    open_page: Opener, stack: Stack
) -> None:
    email = "xss@example.com"
    with api_client(stack, email) as client:
        deployment = deploy(client)
    page = open_page(f"/chat/{deployment}", email=email)
    dialogs: list[str] = []

    def on_dialog(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    send(
        page,
        '<img src=x onerror="window.__xss=1;alert(1)"> <script>window.__xss=3</script> '
        "[click me](javascript:window.__xss=2) **bold**",
    )
    reply = page.locator(".message.from-agent").last
    expect(reply).to_have_class(re.compile("status-completed"))
    # The offline model echoes the text: the reply carries the markup, shown as text.
    expect(reply).to_contain_text('<img src=x onerror="window.__xss=1;alert(1)">')
    expect(reply.locator("strong")).to_have_text("bold")  # Markdown still renders
    assert page.locator(".messages img, .messages script, .messages [onerror]").count() == 0
    link = reply.get_by_text("click me")
    assert link.evaluate("el => el.closest('a')?.getAttribute('href') ?? null") is None
    link.click()
    # The user's own message is plain text too.
    expect(page.locator(".message.from-user").last).to_contain_text(
        "<script>window.__xss=3</script>"
    )
    page.reload()
    expect(page.locator(".message.from-agent").last).to_contain_text("<img src=x")
    assert page.evaluate("window.__xss ?? null") is None
    assert dialogs == []


def test_the_first_visit_tour_runs_once(open_page: Opener, stack: Stack) -> None:
    page = open_page("/", tour=True)
    tour = page.get_by_role("region", name=re.compile("^Welcome!"))
    expect(tour).to_contain_text("Step 1 of 3")
    expect(tour.get_by_role("heading")).to_have_text("Welcome! Browse")
    tour.get_by_role("button", name="Next").click()
    expect(tour.get_by_role("heading")).to_have_text("Welcome! Deploy")
    expect(tour.get_by_role("heading")).to_be_focused()
    tour.get_by_role("button", name="Next").click()
    expect(tour).to_contain_text("Step 3 of 3")
    tour.get_by_role("button", name="Done").click()
    expect(tour).to_have_count(0)
    assert page.evaluate("localStorage.getItem('agentmarket.tour')") == "done"
    page.reload()
    expect(page.locator(".agent-card").first).to_be_visible()
    expect(page.get_by_role("region", name=re.compile("^Welcome!"))).to_have_count(0)

    other = open_page("/", tour=True)
    other.get_by_role("button", name="Skip tour").click()
    expect(other.get_by_role("region", name=re.compile("^Welcome!"))).to_have_count(0)
    assert other.evaluate("localStorage.getItem('agentmarket.tour')") == "skipped"


def test_the_survey_comes_once_after_the_first_completed_chat(
    open_page: Opener, stack: Stack
) -> None:
    email = "survey@example.com"
    with api_client(stack, email) as client:
        deployment = deploy(client)
    page = open_page(f"/chat/{deployment}", email=email)
    survey = page.get_by_role("complementary", name="How was your first chat?")
    expect(page.get_by_role("textbox", name=re.compile("^Message "))).to_be_visible()
    expect(survey).to_have_count(0)  # not before a chat

    send(page, "hello survey")
    expect(page.locator(".message.from-agent").last).to_have_class(re.compile("status-completed"))
    expect(survey).to_be_visible()
    survey.get_by_role("button", name="Send answers").click()
    expect(survey.get_by_role("alert")).to_contain_text("answer the three questions")
    survey.get_by_role("group", name="How satisfied are you with the agent?").get_by_label(
        "4"
    ).check()
    survey.get_by_role("group", name="How easy was it to set up and use?").get_by_label("5").check()
    survey.get_by_role("group", name=re.compile("How likely are you to recommend")).get_by_label(
        "9"
    ).check()
    survey.get_by_label("Anything else?").fill("Nice and quick.")
    screenshot(page, "survey")
    survey.get_by_role("button", name="Send answers").click()
    expect(page.get_by_role("heading", name="Thank you!")).to_be_visible()
    with api_client(stack, email) as client:
        status = client.get("/api/marketplace/survey").json()
    assert status["answered"] is True
    assert status["should_ask"] is False

    # Once: another completed chat asks nothing more.
    page.reload()
    send(page, "hello again")
    expect(page.locator(".message.from-agent").last).to_have_class(re.compile("status-completed"))
    expect(
        page.get_by_role("complementary", name=re.compile("first chat|Thank you"))
    ).to_have_count(0)


def test_the_survey_can_be_dismissed(open_page: Opener, stack: Stack) -> None:
    email = "survey-no@example.com"
    with api_client(stack, email) as client:
        deployment = deploy(client)
    page = open_page(f"/chat/{deployment}", email=email)
    send(page, "hi")
    survey = page.get_by_role("complementary", name="How was your first chat?")
    survey.get_by_role("button", name="Not now").click()
    expect(survey).to_have_count(0)
    page.reload()
    send(page, "hi again")
    expect(page.locator(".message.from-agent").last).to_have_class(re.compile("status-completed"))
    expect(survey).to_have_count(0)
    with api_client(stack, email) as client:
        assert client.get("/api/marketplace/survey").json()["answered"] is False


def test_no_request_leaves_for_another_host(open_page: Opener, stack: Stack) -> None:
    email = "homebody@example.com"
    with api_client(stack, email) as client:
        deployment = deploy(client)
    page = open_page("/", email=email)
    hosts: set[str] = set()
    page.context.on("request", lambda r: hosts.add(re.sub(r"^(\w+://[^/]+).*$", r"\1", r.url)))
    page.reload()
    expect(page.locator(".agent-card").first).to_be_visible()
    page.get_by_role("link", name="SQL Sidekick").click()
    expect(page.get_by_role("heading", name="SQL Sidekick", level=1)).to_be_visible()
    page.goto(f"/chat/{deployment}")
    send(page, "Links like [this](https://example.com/) and ![img](https://example.com/a.png)")
    expect(page.locator(".message.from-agent").last).to_have_class(re.compile("status-completed"))
    page.goto("/my-agents")
    expect(page.locator(".deployment")).to_have_count(1)
    assert hosts == {stack.api}
    # The page says so too: index.html's Content-Security-Policy allows only this origin.
    csp = httpx.get(stack.api + "/", headers={"Accept": "text/html"}).headers[
        "content-security-policy"
    ]
    assert "default-src 'self'" in csp
    assert "script-src 'self'" in csp
