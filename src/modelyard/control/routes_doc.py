"""Render the route-by-role table (docs/security/routes.md) from the code's own tables:
``python -m modelyard.control.routes_doc > docs/security/routes.md``."""

from __future__ import annotations

from modelyard.control.api import PUBLIC_ROUTES, ROUTE_ACTIONS
from modelyard.governance.policy import ACTIONS, ROLES


def render() -> str:
    lines = [
        "# Routes and the roles they need",
        "",
        "Generated from `control/api.py` (`ROUTE_ACTIONS`) and `governance/policy.py`",
        "(`ACTIONS`) by `python -m modelyard.control.routes_doc`; a test fails when this file",
        "is stale, and another calls every route with a key of every role.",
        "",
        "| method | route | action | " + " | ".join(ROLES) + " |",
        "|---|---|---|" + "---|" * len(ROLES),
    ]
    for (method, path), action in sorted(ROUTE_ACTIONS.items(), key=lambda kv: kv[0][::-1]):
        marks = " | ".join("yes" if role in ACTIONS[action] else "-" for role in ROLES)
        lines.append(f"| {method} | `{path}` | {action} | {marks} |")
    lines += ["", "Open without a key (no change possible through them):", ""]
    lines += [f"- `{path}`" for path in PUBLIC_ROUTES]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
