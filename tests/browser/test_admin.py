"""The admin dashboard in a real browser: an admin sees numbers that match the admin API,
filters by agent, and downloads the CSVs; a signed-in non-admin cannot reach it (no link, the
page says so, and the API refuses them)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import Opener, api_client, chat, deploy, screenshot
from tests.e2e.conftest import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.browser]


def stat(page: Page, label: str) -> str:
    """The value of the dashboard's tile labelled `label`."""
    tile = page.locator(".stat", has=page.get_by_text(label, exact=True))
    return tile.locator("dd").inner_text()


def test_an_admin_sees_the_numbers_of_the_api_and_downloads_the_csv(
    open_page: Opener, stack: Stack
) -> None:
    with api_client(stack, "dash-user@example.com") as user:
        deployment = deploy(user, "sql-sidekick")
        chat(user, deployment, "first question")
        chat(user, deployment, "second question")

    page = open_page("/admin", email="dash-admin@example.com", admin=True)
    expect(page.get_by_role("heading", name="Marketplace dashboard")).to_be_visible()
    expect(page.get_by_role("link", name="Dashboard")).to_have_attribute("aria-current", "page")
    range_text = page.get_by_text(re.compile(r"^From \d{4}-\d\d-\d\d to \d{4}-\d\d-\d\d \(UTC\)$"))
    expect(range_text).to_be_visible()
    first, last = re.findall(r"\d{4}-\d\d-\d\d", range_text.inner_text())
    query = {"from": first, "to": last, "tz": "UTC"}

    with api_client(stack, "dash-admin@example.com", admin=True) as admin:
        stats = admin.get("/api/admin/marketplace/stats", params=query).json()
        metrics = admin.get("/api/admin/marketplace/metrics", params=query).json()
    assert stats["totals"]["user_messages"] >= 2

    assert stat(page, "Deployments") == f"{stats['totals']['deployments']:,}"
    assert stat(page, "Conversations") == f"{stats['totals']['conversations']:,}"
    assert stat(page, "User messages") == f"{stats['totals']['user_messages']:,}"
    assert stat(page, "Unique users") == f"{stats['totals']['unique_users']:,}"
    assert stat(page, "Active deployments now") == f"{stats['now']['active_deployments']:,}"
    assert stat(page, "Replies") == f"{metrics['overall']['replies']:,}"
    assert stat(page, "Prompt tokens") == f"{metrics['overall']['prompt_tokens']:,}"
    assert stat(page, "Completion tokens") == f"{metrics['overall']['completion_tokens']:,}"
    p50 = metrics["overall"]["latency_ms"]["p50"]
    # The page rounds half up (Math.round); Python's round() would round half to even.
    shown_p50 = f"{math.floor(p50 + 0.5):,} ms" if p50 is not None else "—"
    assert stat(page, "Latency p50") == shown_p50
    rate = metrics["overall"]["error_rate"]
    assert stat(page, "Error rate") == (f"{rate * 100:.1f}%" if rate is not None else "—")
    popular = page.get_by_role("table").get_by_role("row")
    expect(popular).to_have_count(len(stats["popular_agents"]) + 1)
    expect(popular.nth(1)).to_contain_text(stats["popular_agents"][0]["name"])
    expect(
        page.get_by_role("img", name=re.compile("Deployments and conversations per day"))
    ).to_be_visible()
    screenshot(page, "admin")

    download_the_csvs(page, first, last)
    filter_by_an_agent(page)


def download_the_csvs(page: Page, first: str, last: str) -> None:
    """Both CSVs download, named by the server, in the contract's long format."""
    for kind in ("stats", "metrics"):
        with page.expect_download() as info:
            page.get_by_role("button", name=f"Download {kind} CSV").click()
        download = info.value
        assert download.suggested_filename == f"marketplace-{kind}-{first}-to-{last}.csv"
        body = Path(download.path()).read_text(encoding="utf-8")
        assert body.splitlines()[0] == "section,day,agent,metric,value"


def filter_by_an_agent(page: Page) -> None:
    """Filtering by an agent asks the API with that agent and shows its numbers."""
    page.get_by_label("Agent", exact=True).select_option("sql-sidekick")
    with page.expect_response(
        re.compile(r"/api/admin/marketplace/stats\?.*agent=sql-sidekick")
    ) as answer:
        page.get_by_role("button", name="Refresh").click()
    assert answer.value.status == 200
    filtered = answer.value.json()
    expect(
        page.locator(".stat", has=page.get_by_text("User messages", exact=True)).locator("dd")
    ).to_have_text(f"{filtered['totals']['user_messages']:,}")


def test_a_non_admin_cannot_reach_the_dashboard(open_page: Opener, stack: Stack) -> None:
    page = open_page("/", email="plain-user@example.com")
    expect(page.get_by_role("link", name="My agents", exact=True)).to_be_visible()
    expect(page.get_by_role("link", name="Dashboard")).to_have_count(0)
    page.goto("/admin")
    expect(page.get_by_role("heading", name="Admins only")).to_be_visible()
    expect(page.get_by_role("heading", name="Marketplace dashboard")).to_have_count(0)
    expect(page.get_by_text("Your account is not an admin.")).to_be_visible()
    with api_client(stack, "plain-user@example.com") as user:
        refused = user.get("/api/admin/marketplace/stats")
    assert refused.status_code == 403
    assert refused.json()["code"] == "admin_only"

    # Signed out, too.
    anonymous = open_page("/admin")
    expect(anonymous.get_by_role("heading", name="Admins only")).to_be_visible()
    expect(anonymous.get_by_role("link", name="Sign in as an admin")).to_be_visible()
