"""What the dashboard's tests share besides fixtures (imported as a plain module, not from
``conftest``, whose name several test folders share)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from modelyard import Yard
from modelyard.serving.server import BackgroundServer
from modelyard.ui import showcase


@dataclass
class Showcase:
    yard: Yard
    keys: showcase.Keys
    server: BackgroundServer

    @property
    def url(self) -> str:
        return self.server.url


def login(browser: Any, url: str, key: str, viewport: dict[str, int] | None = None) -> Any:
    """A fresh browser context logged in through the form; its page."""
    context = browser.new_context(viewport=viewport or {"width": 1280, "height": 800})
    page = context.new_page()
    page.goto(f"{url}/ui/")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{url}/ui/")
    return page
