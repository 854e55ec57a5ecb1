"""The dashboard in headless Chromium against the real server: log in, watch an endpoint's
charts move under traffic, approve a held promotion as an approver, find no button (and no
way to forge one) as a viewer, verify the audit chain from the page."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from ui_support import Showcase, login

from modelyard.ui import showcase


@pytest.fixture(scope="module")
def pending(seeded: Showcase) -> Iterator[dict[str, Any]]:
    """A canary of churn:2 under traffic, held at promotion for one approval."""
    with showcase.Traffic(seeded.url, seeded.keys.predictor, rate=40) as traffic:
        started = showcase.start_canary(seeded.yard, seeded.keys.developer, seeded.url)

        def held() -> dict[str, Any] | None:
            state = seeded.yard.rollout(started["id"])
            assert not state["final"], state  # rolled back instead of held
            return state if state["status"] == "awaiting_approval" else None

        waiting = showcase.wait_for(held, timeout_s=90)
        yield waiting
    assert set(traffic.codes) == {200}, traffic.codes


def test_login_sets_a_strict_http_only_session_cookie(browser: Any, seeded: Showcase
                                                      ) -> None:
    page = login(browser, seeded.url, seeded.keys.admin)
    try:
        assert page.get_by_role("heading", name="Overview").is_visible()
        assert page.get_by_role("link", name="churn", exact=True).is_visible()
        (cookie,) = [c for c in page.context.cookies() if c["name"] == "modelyard_session"]
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert cookie["path"] == "/ui" and not cookie["secure"]  # plain http here
        assert page.evaluate("document.cookie") == ""  # invisible to scripts
    finally:
        page.context.close()


def test_the_endpoint_charts_move_under_traffic(browser: Any, seeded: Showcase) -> None:
    page = login(browser, seeded.url, seeded.keys.viewer)
    try:
        page.goto(f"{seeded.url}/ui/endpoints/churn")
        section = page.locator("[data-live]")

        def seen(name: str) -> int:
            return int(section.get_attribute(f"data-{name}") or 0)

        with showcase.Traffic(seeded.url, seeded.keys.predictor, rate=40):
            # The page's own polling (no reload) shows the requests; later polls show more.
            first = showcase.wait_for(lambda: seen("requests"), timeout_s=30)
            polls = seen("polls")
            showcase.wait_for(lambda: seen("polls") >= polls + 2 and
                              seen("requests") > first, timeout_s=30)
        assert page.locator("[data-chart] canvas").count() == 3  # uPlot drew three charts
        row = page.locator("[data-live-table] tbody tr").first
        assert re.match(r"churn:\d", row.locator("td").first.inner_text())
        assert float(row.locator("td").nth(1).inner_text()) >= 0
        print(f"\ncharts: {first} -> {section.get_attribute('data-requests')} requests "
              f"in the window over {int(section.get_attribute('data-polls') or 0) - polls} "
              "polls")
    finally:
        page.context.close()


def test_the_overview_updates_without_a_reload(browser: Any, seeded: Showcase) -> None:
    page = login(browser, seeded.url, seeded.keys.viewer)
    try:
        cell = page.locator('tr[data-endpoint="churn"] [data-field="rps"]')
        table = page.locator("[data-overview]")
        with showcase.Traffic(seeded.url, seeded.keys.predictor, rate=40):
            showcase.wait_for(lambda: int(table.get_attribute("data-polls") or 0) >= 1 and
                              cell.inner_text() not in ("0", "\u2013"), timeout_s=30)
        assert float(cell.inner_text()) > 0
        assert page.url == f"{seeded.url}/ui/"  # the same page: no reload
    finally:
        page.context.close()


def test_a_viewer_sees_no_action_and_cannot_forge_one(browser: Any, seeded: Showcase,
                                                      pending: dict[str, Any]) -> None:
    page = login(browser, seeded.url, seeded.keys.viewer)
    try:
        page.goto(f"{seeded.url}/ui/rollouts/{pending['id']}")
        assert page.get_by_text("awaiting approval").first.is_visible()
        for label in ("Approve promotion", "Reject", "Promote now", "Pause",
                      "Abort (all traffic back)"):
            assert page.get_by_role("button", name=label).count() == 0, label
        page.goto(f"{seeded.url}/ui/approvals")
        assert page.get_by_role("button", name="Approve").count() == 0
        # The viewer's own session and CSRF token, posting what the approver's button posts.
        csrf = page.locator("input[name=csrf]").first.get_attribute("value")
        forged = page.request.post(f"{seeded.url}/ui/approvals/{pending['approval_id']}"
                                   "/approve", form={"csrf": csrf, "comment": "forged"})
        assert forged.status == 403
        assert "may not approvals:decide" in forged.text()
        steer = page.request.post(f"{seeded.url}/ui/rollouts/{pending['id']}/promote",
                                  form={"csrf": csrf})
        assert steer.status == 403
        no_token = page.request.post(f"{seeded.url}/ui/rollouts/{pending['id']}/abort",
                                     form={"csrf": "x"})
        assert no_token.status == 403 and "CSRF" in no_token.text()
        assert seeded.yard.rollout(pending["id"])["status"] == "awaiting_approval"
    finally:
        page.context.close()


def test_an_approver_approves_the_held_promotion(browser: Any, seeded: Showcase,
                                                 pending: dict[str, Any]) -> None:
    page = login(browser, seeded.url, seeded.keys.approver)
    try:
        page.goto(f"{seeded.url}/ui/rollouts/{pending['id']}")
        page.get_by_label("Comment").fill("canary clean")
        page.get_by_role("button", name="Approve promotion").click()
        page.wait_for_url(re.compile(r".*/ui/rollouts/\d+\?notice=.*"))
        assert page.get_by_role("status").first.inner_text().endswith("now executed")
        assert seeded.yard.rollout(pending["id"])["status"] == "promoted"
        assert seeded.yard.model("churn").aliases["production"] == 2
        assert page.get_by_text("executed").first.is_visible()
        # The rollout is over: no steering buttons remain, even for someone allowed.
        assert page.get_by_role("button", name="Promote now").count() == 0
    finally:
        page.context.close()


def test_the_audit_chain_verifies_from_the_page(browser: Any, seeded: Showcase) -> None:
    page = login(browser, seeded.url, seeded.keys.admin)
    try:
        page.get_by_role("link", name="Audit").click()
        page.get_by_label("Action").fill("ui.login")
        page.get_by_role("button", name="Search").click()
        assert page.locator("tbody tr").count() >= 1  # the logins of these tests
        page.get_by_role("button", name="Verify the chain").click()
        verdict = page.locator("[data-verdict]")
        assert verdict.get_attribute("data-verdict") == "ok", verdict.inner_text()
        assert "The chain verifies" in verdict.inner_text()
    finally:
        page.context.close()


def test_keyboard_and_phone_width(browser: Any, seeded: Showcase) -> None:
    page = login(browser, seeded.url, seeded.keys.admin, viewport={"width": 390,
                                                                   "height": 844})
    try:
        for path in ("/ui/", "/ui/endpoints/churn", "/ui/models/churn", "/ui/audit"):
            page.goto(seeded.url + path)
            overflow = page.evaluate("document.documentElement.scrollWidth - innerWidth")
            assert overflow <= 1, (path, overflow)  # wide tables and diagrams scroll inside
        page.goto(f"{seeded.url}/ui/")
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.textContent") == "Skip to content"
        page.keyboard.press("Enter")
        assert page.evaluate("document.activeElement.id") == "main"
    finally:
        page.context.close()
