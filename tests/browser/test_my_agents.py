"""My agents in a real browser: rename, reconfigure with the stored secret shown masked and kept
when left blank, resume a paused deployment, and the chat's notice for a paused one."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import Opener, api_client, deploy
from tests.e2e.conftest import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

KEY = "sk-proj-EXAMPLEEXAMPLEEXAMPLE1234"


def test_rename_reconfigure_keeping_the_secret_and_resume(open_page: Opener, stack: Stack) -> None:
    email = "manager@example.com"
    with api_client(stack, email) as client:
        deployment = deploy(client, "code-review-buddy", openai_api_key=KEY, persona_name="Ada")
        masked = client.get(f"/api/deployments/{deployment}").json()["secrets"]["openai_api_key"]
    assert masked.endswith("1234")
    assert KEY not in masked
    page = open_page("/my-agents", email=email)

    page.get_by_role("button", name="Rename Code Review Buddy").click()
    page.get_by_label("New name for Code Review Buddy").fill("Strict reviewer")
    page.get_by_role("button", name="Save name").click()
    expect(page.get_by_role("heading", name="Strict reviewer")).to_be_visible()

    page.get_by_role("button", name="Reconfigure Strict reviewer").click()
    dialog = page.get_by_role("dialog", name="Reconfigure Strict reviewer")
    key = dialog.get_by_label("Your OpenAI API key")
    expect(key).to_have_value("")  # never shown
    expect(dialog.get_by_text(f"A value is stored ({masked})")).to_be_visible()
    expect(dialog.get_by_label("Reviewer name")).to_have_value("Ada")
    dialog.get_by_label("Reviewer name").fill("Grace")
    dialog.get_by_role("button", name="Save settings").click()
    expect(dialog).to_have_count(0)
    with api_client(stack, email) as client:
        stored = client.get(f"/api/deployments/{deployment}").json()
    assert stored["name"] == "Strict reviewer"
    assert stored["config"]["persona_name"] == "Grace"
    assert stored["secrets"] == {"openai_api_key": masked}  # kept
    assert stored["status"] == "active"

    # Paused: the chat says so and cannot send; resuming from My agents works.
    page.get_by_role("button", name="Pause Strict reviewer").click()
    expect(page.locator(".status-badge")).to_have_text("Paused")
    page.get_by_role("link", name="Chat with Strict reviewer").click()
    expect(page.get_by_role("status").filter(has_text="This deployment is paused")).to_be_visible()
    expect(page.get_by_role("button", name="Send", exact=True)).to_be_disabled()
    page.get_by_role("link", name="Open my agents").click()
    page.get_by_role("button", name="Resume Strict reviewer").click()
    expect(page.locator(".status-badge")).to_have_text("Active")
    expect(page.get_by_role("status").filter(has_text=re.compile("now active"))).to_be_attached()
