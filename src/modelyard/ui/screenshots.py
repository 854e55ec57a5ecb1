"""Regenerate the dashboard screenshots in ``docs/screenshots/``:

    python -m modelyard.ui.screenshots [--out docs/screenshots]

Starts a seeded yard (``ui.showcase``) on a free 127.0.0.1 port, sends traffic, runs a
canary up to its held promotion and a monitor over a few windows, then drives Debian's
chromium through Playwright (the dev extra; no browser is downloaded) and writes one PNG per
page at 1280x800, plus the overview at phone width.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from modelyard.serving.server import BackgroundServer
from modelyard.settings import Settings
from modelyard.ui import showcase
from modelyard.yard import Yard

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _login(browser: Any, url: str, key: str, width: int = 1280, height: int = 800) -> Any:
    page = browser.new_context(viewport={"width": width, "height": height}).new_page()
    page.goto(f"{url}/ui/login")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{url}/ui/")
    return page


def _shoot(page: Any, url: str, path: str, out: Path, name: str, full: bool = True) -> Path:
    page.goto(url + path)
    target = out / f"{name}.png"
    page.screenshot(path=str(target), full_page=full)
    print(f"{target}  <- {path}")
    return target


def make(out: Path) -> list[Path]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        raise SystemExit("needs playwright: pip install -e '.[dev]'") from exc
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"needs {CHROMIUM}: apt-get install -y chromium")
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with tempfile.TemporaryDirectory() as scratch:
        home = Path(scratch) / "yard"
        settings = Settings.load(home, env={}, rollout_tick_s=0.2,
                                 inference_log_flush_s=0.1, inference_log_max_per_s=0)
        yard, admin = Yard.init(settings=settings)
        assert admin is not None
        keys = showcase.seed(yard, admin)
        yard.monitoring.set_monitor(yard.principal, "churn", {"window_s": 10,
                                                              "evaluate_every_s": 10}, True)
        try:
            with BackgroundServer(yard) as server, \
                    showcase.Traffic(server.url, keys.predictor, rate=40, limit_s=300), \
                    sync_playwright() as playwright:
                url = server.url
                started = showcase.start_canary(yard, keys.developer, url)
                showcase.wait_for(lambda: yard.rollout(started["id"])["status"] ==
                                  "awaiting_approval", timeout_s=60)
                time.sleep(32)  # monitor windows close under traffic
                yard.monitoring.run_monitor(yard.principal, "churn")
                browser = playwright.chromium.launch(executable_path=CHROMIUM,
                                                     headless=True, args=ARGS)
                try:
                    login = browser.new_page(viewport={"width": 1280, "height": 800})
                    written.append(_shoot(login, url, "/ui/login", out, "login", full=False))
                    approver = _login(browser, url, keys.approver)
                    written.append(_shoot(approver, url, f"/ui/rollouts/{started['id']}",
                                          out, "rollout"))
                    written.append(_shoot(approver, url, "/ui/approvals", out, "approvals"))
                    page = _login(browser, url, keys.admin)
                    written.append(_shoot(page, url, "/ui/", out, "overview"))
                    page.goto(url + "/ui/endpoints/churn")
                    showcase.wait_for(lambda: int(page.locator("[data-live]").get_attribute(
                        "data-polls") or 0) >= 3, timeout_s=30)
                    target = out / "endpoint.png"
                    page.screenshot(path=str(target), full_page=True)
                    written.append(target)
                    print(f"{target}  <- /ui/endpoints/churn (live)")
                    for path, name in (("/ui/endpoints/churn-ensemble", "graph"),
                                       ("/ui/models/churn", "model"),
                                       ("/ui/models/churn/versions/2", "version"),
                                       ("/ui/monitoring/churn", "monitoring"),
                                       ("/ui/jobs", "jobs"), ("/ui/keys", "keys")):
                        written.append(_shoot(page, url, path, out, name))
                    page.goto(url + "/ui/audit")
                    page.get_by_role("button", name="Verify the chain").click()
                    target = out / "audit.png"
                    page.screenshot(path=str(target), full_page=False)
                    written.append(target)
                    print(f"{target}  <- /ui/audit (verified)")
                    phone = _login(browser, url, keys.viewer, width=390, height=844)
                    written.append(_shoot(phone, url, "/ui/endpoints/churn", out, "phone",
                                          full=False))
                finally:
                    browser.close()
        finally:
            yard.close()
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    make(parser.parse_args().out)


if __name__ == "__main__":
    main()
