"""Dashboard sessions and forms over plain HTTP (httpx against the real server, on SQLite and
PostgreSQL): cookie flags, CSRF on every form, revocation and logout ending sessions, audited
logins, no open redirect, cross-site posts refused, every page refusing a missing session,
rollouts steered from the page."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import Response
from ui_support import Showcase

from modelyard.governance.policy import Principal
from modelyard.settings import Settings
from modelyard.store.tables import UiSessionRow, utcnow
from modelyard.ui.login import safe_next, set_session_cookie
from modelyard.ui.sessions import COOKIE, UiSession

PAGES = ("/ui/", "/ui/endpoints/churn", "/ui/models", "/ui/models/churn",
         "/ui/models/churn/versions/1", "/ui/rollouts", "/ui/approvals", "/ui/monitoring",
         "/ui/monitoring/churn", "/ui/jobs", "/ui/audit", "/ui/keys")


def csrf_in(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html[:500]
    return found.group(1)


def logged_in(url: str, key: str) -> httpx.Client:
    http = httpx.Client(base_url=url, timeout=30)
    token = csrf_in(http.get("/ui/login").text)
    answer = http.post("/ui/login", data={"key": key, "csrf": token, "next": "/ui/models"})
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/ui/models"
    return http


@pytest.fixture(scope="module")
def ui_settings(shared_settings: Settings) -> Settings:
    """These run on SQLite and on PostgreSQL (the root conftest's ``shared_settings``)."""
    return shared_settings


@pytest.fixture
def admin(seeded: Showcase) -> Iterator[httpx.Client]:
    http = logged_in(seeded.url, seeded.keys.admin)
    try:
        yield http
    finally:
        http.close()


def test_the_session_cookie_is_http_only_strict_and_scoped(seeded: Showcase) -> None:
    http = httpx.Client(base_url=seeded.url)
    token = csrf_in(http.get("/ui/login").text)
    answer = http.post("/ui/login", data={"key": seeded.keys.viewer, "csrf": token})
    cookie = next(v for k, v in answer.headers.multi_items()
              if k == "set-cookie" and v.startswith(COOKIE))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/ui" in cookie
    assert "Secure" not in cookie  # plain http; see the next test for https
    value = cookie.split(";")[0].split("=", 1)[1]
    with seeded.yard.db.transaction() as session:
        rows = session.query(UiSessionRow).all()
        assert all(r.token_hash != value for r in rows)  # only the hash is stored
        assert any(r.key_prefix == seeded.keys.viewer.split(".")[0] for r in rows)


def test_the_cookie_is_secure_on_https() -> None:
    request = Request({"type": "http", "scheme": "https", "method": "GET", "path": "/ui/",
                       "headers": [], "query_string": b"", "server": ("x", 443)})
    out = Response()
    set_session_cookie(out, request, UiSession("t" * 43, Principal("p"),
                                               utcnow() + timedelta(hours=1)))
    assert "Secure" in out.headers["set-cookie"]


def test_every_page_needs_a_session(seeded: Showcase) -> None:
    with httpx.Client(base_url=seeded.url) as http:
        for path in PAGES:
            answer = http.get(path)
            assert answer.status_code == 303, path
            assert answer.headers["location"].startswith("/ui/login?next=")
        assert http.get("/ui/endpoints/churn/live.json").status_code == 401
        assert http.get("/ui/overview.json").status_code == 401
        assert http.post("/ui/rollouts/1/abort", data={"csrf": "x"}).status_code == 401
        assert http.get("/", follow_redirects=False).headers["location"] == "/ui/"


def test_every_page_renders_for_an_admin(admin: httpx.Client) -> None:
    for path in PAGES:
        answer = admin.get(path)
        assert answer.status_code == 200, (path, answer.text[:300])
        csp = answer.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
        assert "<script>" not in answer.text  # no inline script: the CSP forbids it


def test_a_bad_key_is_refused_and_audited(seeded: Showcase) -> None:
    with httpx.Client(base_url=seeded.url) as http:
        token = csrf_in(http.get("/ui/login").text)
        answer = http.post("/ui/login", data={"key": "my_nope.wrong", "csrf": token})
        assert answer.status_code == 401 and "unknown or revoked" in answer.text
        assert COOKIE not in answer.cookies
        # The login form's own CSRF token (a double-submit cookie) is required too.
        answer = http.post("/ui/login", data={"key": seeded.keys.viewer, "csrf": "forged"})
        assert answer.status_code == 403 and COOKIE not in answer.cookies
    failures = [r for r in seeded.yard.audit_records() if r["action"] == "auth.failed"
                and r["target"] == "POST /ui/login"]
    assert failures and "my_nope" not in str(failures)  # the key itself is never recorded


def test_logout_ends_the_session_even_for_a_copied_cookie(seeded: Showcase) -> None:
    http = logged_in(seeded.url, seeded.keys.viewer)
    stolen = http.cookies[COOKIE]
    page = http.get("/ui/")
    assert page.status_code == 200
    assert http.post("/ui/logout", data={"x": "1"}).status_code == 403  # no CSRF token
    answer = http.post("/ui/logout", data={"csrf": csrf_in(page.text)})
    assert answer.status_code == 303 and answer.headers["location"] == "/ui/login"
    with httpx.Client(base_url=seeded.url, cookies={COOKIE: stolen}) as replay:
        assert replay.get("/ui/").status_code == 303
    actions = [r["action"] for r in seeded.yard.audit_records()]
    assert "ui.login" in actions and "ui.logout" in actions


def test_revoking_the_key_ends_its_sessions(seeded: Showcase, admin: httpx.Client) -> None:
    created = seeded.yard.create_key("temp", ["viewer"])
    http = logged_in(seeded.url, created["key"])
    assert http.get("/ui/").status_code == 200
    keys_page = admin.get("/ui/keys")
    assert created["prefix"] in keys_page.text
    revoked = admin.post(f"/ui/keys/{created['prefix']}/revoke",
                         data={"csrf": csrf_in(keys_page.text)})
    assert revoked.status_code == 303
    assert http.get("/ui/").status_code == 303  # back to the login form
    with seeded.yard.db.transaction() as session:
        assert not session.query(UiSessionRow).filter_by(
            key_prefix=created["prefix"]).count()


def test_an_admin_creates_a_key_shown_once(seeded: Showcase, admin: httpx.Client) -> None:
    token = csrf_in(admin.get("/ui/keys").text)
    answer = admin.post("/ui/keys", data={"csrf": token, "owner": "robot",
                                          "roles": "viewer predictor"})
    assert answer.status_code == 200 and answer.headers["cache-control"] == "no-store"
    secret = re.search(r"<code data-secret>([^<]+)</code>", answer.text).group(1)
    assert secret.startswith("my_")
    assert secret not in admin.get("/ui/keys").text  # never again
    bad = admin.post("/ui/keys", data={"csrf": token, "owner": "x", "roles": "wizard"})
    assert bad.status_code == 422 and "unknown role" in bad.text


def test_a_viewer_forging_admin_actions_gets_403(seeded: Showcase) -> None:
    http = logged_in(seeded.url, seeded.keys.viewer)
    page = http.get("/ui/keys")
    assert page.status_code == 403  # the keys page itself is for admins
    token = csrf_in(page.text)
    assert http.post("/ui/keys", data={"csrf": token, "owner": "me",
                                       "roles": "admin"}).status_code == 403
    assert http.post(f"/ui/keys/{seeded.keys.admin.split('.')[0]}/revoke",
                     data={"csrf": token}).status_code == 403
    assert http.post("/ui/audit/verify", data={"csrf": token}).status_code == 403
    denied = [r for r in seeded.yard.audit_records() if r["outcome"] == "denied"
              and r["actor"].startswith("key:vera:")]
    assert {"keys:read", "keys:write", "audit:read"} <= {r["action"] for r in denied}


def test_a_cross_site_post_is_refused_before_it_is_read(seeded: Showcase) -> None:
    http = logged_in(seeded.url, seeded.keys.admin)
    token = csrf_in(http.get("/ui/keys").text)
    answer = http.post("/ui/keys", data={"csrf": token, "owner": "evil", "roles": "admin"},
                       headers={"origin": "https://evil.example", "sec-fetch-site":
                                "cross-site"})
    assert answer.status_code == 403
    assert answer.json()["code"] == "cross_origin"
    assert "evil" not in [k.owner for k in seeded.yard.access.list(seeded.yard.principal)]


def test_forms_must_be_url_encoded(admin: httpx.Client) -> None:
    answer = admin.post("/ui/audit/verify", json={"csrf": "x"})
    assert answer.status_code == 400 and "x-www-form-urlencoded" in answer.text


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/ui/",
                                    "/ui\\..\\evil", "/api/v1/keys", None, ""])
def test_next_never_leaves_the_dashboard(target: str | None) -> None:
    assert safe_next(target) == "/ui/"


def test_next_keeps_dashboard_paths() -> None:
    assert safe_next("/ui/rollouts/3?x=1") == "/ui/rollouts/3?x=1"


def test_a_developer_steers_a_rollout_from_its_page(seeded: Showcase) -> None:
    started = seeded.yard.start_rollout("churn", {
        "target": "churn:2", "interval_s": 60, "steps": [{"weight": 10, "duration_s": 600}]})
    http = logged_in(seeded.url, seeded.keys.developer)
    page = http.get(f"/ui/rollouts/{started['id']}")
    assert page.status_code == 200 and "Pause" in page.text and "Promote now" in page.text
    assert "Approve promotion" not in page.text  # nothing held; and not an approver
    token = csrf_in(page.text)
    for action, status in (("pause", "paused"), ("resume", "running"),
                           ("abort", "aborted")):
        answer = http.post(f"/ui/rollouts/{started['id']}/{action}", data={"csrf": token})
        assert answer.status_code == 303, answer.text
        shown = http.get(answer.headers["location"]).text  # the signed notice, shown
        assert f"now {status}</p>" in shown
        assert seeded.yard.rollout(started["id"])["status"] == status
    again = http.post(f"/ui/rollouts/{started['id']}/resume", data={"csrf": token})
    assert again.status_code == 409 and "aborted" in again.text  # the API's own conflict
    unknown = http.post(f"/ui/rollouts/{started['id']}/explode", data={"csrf": token})
    assert unknown.status_code == 404
    assert seeded.yard.endpoint("churn").traffic is None  # all traffic back on churn:1


def test_audit_search_filters_and_keeps_its_query(admin: httpx.Client) -> None:
    found = admin.get("/ui/audit", params={"action": "ui.login", "q": "a&b c"})
    assert found.status_code == 200
    assert 'action="/ui/audit/verify?action=ui.login&amp;q=a%26b+c"' in found.text
    logins = admin.get("/ui/audit", params={"action": "ui.login"}).text
    actions = re.findall(r"<td><code>([a-z._]+)</code></td>", logins)
    assert actions and set(actions) == {"ui.login"}
    assert admin.get("/ui/audit", params={"page": "0"}).status_code == 400
    assert admin.get("/ui/audit", params={"page": "x"}).status_code == 400


def test_a_crafted_notice_is_not_shown(admin: httpx.Client) -> None:
    page = admin.get("/ui/", params={"notice": "Your key expired: go to evil.example",
                                     "sig": "0" * 32})
    assert page.status_code == 200 and "evil.example" not in page.text


def test_unknown_pages_and_bad_values_answer_html_errors(admin: httpx.Client) -> None:
    missing = admin.get("/ui/nope")
    assert missing.status_code == 404 and "text/html" in missing.headers["content-type"]
    assert "no dashboard page /ui/nope" in missing.text
    bad = admin.get("/ui/rollouts/abc")
    assert bad.status_code == 422 and "rollout_id" in bad.text
    assert admin.get("/ui/rollouts/999999").status_code == 404
    assert admin.get("/ui/models/ghost").status_code == 404
    assert admin.put("/ui/keys", data={"a": "b"}).status_code == 405
    assert admin.get("/ui", follow_redirects=False).status_code == 307


def test_static_assets_revalidate_instead_of_refetching(seeded: Showcase) -> None:
    with httpx.Client(base_url=seeded.url) as http:
        first = http.get("/ui/static/vendor/uPlot.iife.min.js")
        assert first.status_code == 200 and first.headers["cache-control"] == "no-cache"
        again = http.get("/ui/static/vendor/uPlot.iife.min.js",
                         headers={"if-none-match": first.headers["etag"]})
        assert again.status_code == 304


def test_a_nul_character_in_a_path_or_query_is_a_clear_refusal(admin: httpx.Client) -> None:
    """PostgreSQL cannot compare text holding NUL: a 422 page, not a 500 (and not a broken
    connection for the next request)."""
    for path in ("/ui/models/a%00b", "/ui/endpoints/%00", "/ui/models?q=%00"):
        page = admin.get(path)
        assert page.status_code == 422, (path, page.status_code)
        assert "NUL" in page.text
    assert admin.get("/ui/models").status_code == 200
