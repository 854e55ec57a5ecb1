"""The dashboard's fixtures: one seeded yard and real server per module (SQLite; the pages'
queries run on PostgreSQL in test_ui_scale.py), and Chromium through Playwright."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ui_support import Showcase

from db_support import migrate
from modelyard import Yard
from modelyard.serving.server import BackgroundServer
from modelyard.settings import Settings
from modelyard.ui import showcase

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def ui_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """SQLite here; a module that runs on PostgreSQL too overrides this fixture with the
    root conftest's ``shared_settings`` (both databases)."""
    home = tmp_path_factory.mktemp("ui") / "yard"
    return Settings.load(home, env={}, database_url=f"sqlite:///{home / 'yard.db'}")


@pytest.fixture(scope="module")
def seeded(ui_settings: Settings) -> Iterator[Showcase]:
    settings = ui_settings.with_(rollout_tick_s=0.2, inference_log_flush_s=0.1)
    migrate(settings.database_url)  # the session's migration, copied
    yard, admin = Yard.init(settings=settings)
    assert admin is not None
    keys = showcase.seed(yard, admin)
    try:
        with BackgroundServer(yard) as server:
            yield Showcase(yard, keys, server)
    finally:
        yard.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's chromium driven by Playwright (never a downloaded browser)."""
    # CI installs both (.ci/run): there a missing one is a failure, not a quiet skip.
    absent = pytest.fail if os.environ.get("CI") else pytest.skip
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        absent("playwright is not installed (pip install -e '.[dev]')")
    if not CHROMIUM.exists() or shutil.which(str(CHROMIUM)) is None:
        absent(f"{CHROMIUM} is missing (apt-get install -y chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                              args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()
