"""Every page at 1280 and 375 px: axe-core finds no serious or critical violation, nothing
overflows sideways at 375 px (one column), and a screenshot of each is saved under
.data/artifacts/browser/. Plus keyboard use: the skip link, visible focus, and the deploy
dialog operated without a mouse."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import (
    DESKTOP,
    PHONE,
    Opener,
    api_client,
    axe_violations,
    chat,
    deploy,
    screenshot,
)
from tests.e2e.conftest import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

USER = "a11y@example.com"
ADMIN = "a11y-admin@example.com"


@pytest.fixture(scope="module")
def deployment(stack: Stack) -> tuple[str, str]:
    with api_client(stack, USER) as client:
        deployment_id = deploy(client, "sql-sidekick")
        exchange = chat(client, deployment_id, "How do I **count** rows? `SELECT count(*)`")
    return deployment_id, exchange["conversation_id"]


def check(page: Page, name: str) -> None:
    page.wait_for_load_state("networkidle")
    violations = axe_violations(page)
    assert violations == [], f"{name}: {violations}"
    width = page.viewport_size["width"] if page.viewport_size else 0
    overflow = page.evaluate("document.documentElement.scrollWidth")
    wide = page.evaluate(
        "w => [...document.querySelectorAll('body *')]"
        ".filter(e => e.getBoundingClientRect().right > w + 1)"
        ".slice(0, 5).map(e => `${e.tagName}.${e.className}`)",
        width,
    )
    assert overflow <= width, f"{name} is {overflow} px wide in a {width} px viewport: {wide}"
    screenshot(page, name)


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["1280", "375"])
def test_every_page_passes_axe_and_fits(
    open_page: Opener, stack: Stack, deployment: tuple[str, str], viewport: dict[str, int]
) -> None:
    deployment_id, conversation_id = deployment

    page = open_page("/", viewport=viewport, tour=True, bypass_csp=True)
    expect(page.get_by_role("region", name="Welcome! Browse")).to_be_visible()
    expect(page.locator(".agent-card").first).to_be_visible()
    check(page, "marketplace-tour")
    if viewport is PHONE:
        columns = page.evaluate(
            "getComputedStyle(document.querySelector('.card-grid'))"
            ".gridTemplateColumns.split(' ').length"
        )
        assert columns == 1

    page = open_page("/?q=zzzzqqqq", viewport=viewport, bypass_csp=True)
    expect(page.get_by_role("heading", name="No agents match")).to_be_visible()
    check(page, "marketplace-empty")

    page = open_page("/sign-in", viewport=viewport, bypass_csp=True)
    expect(page.get_by_role("heading", name="Development sign-in")).to_be_visible()
    check(page, "sign-in")

    page = open_page("/no/such/page", viewport=viewport, bypass_csp=True)
    expect(page.get_by_role("heading", name="Page not found")).to_be_visible()
    check(page, "not-found")

    page = open_page("/agents/code-review-buddy", email=USER, viewport=viewport, bypass_csp=True)
    expect(page.get_by_role("heading", name="Code Review Buddy", level=1)).to_be_visible()
    check(page, "agent-detail")
    page.get_by_role("button", name="Deploy this agent").click()
    dialog = page.get_by_role("dialog", name="Deploy Code Review Buddy")
    expect(dialog.get_by_label("Your OpenAI API key")).to_have_attribute("type", "password")
    dialog.get_by_role("button", name="Deploy", exact=True).click()  # the key is missing
    expect(dialog.get_by_label("Your OpenAI API key")).to_have_attribute("aria-invalid", "true")
    check(page, "deploy-dialog-errors")

    page = open_page("/my-agents", email=USER, viewport=viewport, bypass_csp=True)
    expect(page.locator(".status-badge").first).to_have_text("Active")
    check(page, "my-agents")
    page.get_by_role("button", name="Reconfigure SQL Sidekick").click()
    expect(
        page.get_by_role("dialog", name="Reconfigure SQL Sidekick").get_by_label("SQL dialect")
    ).to_be_visible()
    check(page, "reconfigure-dialog")

    page = open_page(
        f"/chat/{deployment_id}?conversation={conversation_id}",
        email=USER,
        viewport=viewport,
        bypass_csp=True,
    )
    expect(page.locator(".message.from-agent strong")).to_have_text("count")
    check(page, "chat")

    page = open_page("/admin", email=ADMIN, admin=True, viewport=viewport, bypass_csp=True)
    expect(page.get_by_role("heading", name="Totals")).to_be_visible()
    check(page, "admin")


def test_keyboard_only(open_page: Opener, stack: Stack) -> None:
    page = open_page("/", email=USER)
    expect(page.locator(".agent-card").first).to_be_visible()
    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to content")
    expect(skip).to_be_focused()
    outline = skip.evaluate("el => getComputedStyle(el).outlineStyle")
    assert outline != "none"  # the focus is visible
    page.keyboard.press("Enter")
    page.keyboard.press("Tab")
    expect(page.get_by_role("searchbox", name="Search")).to_be_focused()
    page.keyboard.type("sql")
    page.keyboard.press("Enter")
    expect(page).to_have_url("/?q=sql")

    # Open an agent and its deploy dialog with the keyboard; Escape closes the dialog.
    link = page.get_by_role("link", name="SQL Sidekick")
    link.focus()
    page.keyboard.press("Enter")
    deploy_button = page.get_by_role("button", name="Deploy this agent")
    deploy_button.focus()
    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog", name="Deploy SQL Sidekick")
    expect(dialog).to_be_visible()
    focused_inside = page.evaluate("document.activeElement.closest('dialog') !== null")
    assert focused_inside
    page.keyboard.press("Escape")
    expect(dialog).to_have_count(0)
