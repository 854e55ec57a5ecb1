"""A scorecard as people read it: Rich tables for a terminal, and one self-contained HTML
page (inline CSS, no scripts, no external assets) to keep or attach to a review."""

from __future__ import annotations

import html
from collections.abc import Iterable

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from modelyard.readiness.checks import CheckResult
from modelyard.readiness.scorecard import Scorecard

STATUS_STYLE = {"pass": "green", "warn": "yellow", "fail": "red", "na": "dim"}
STATUS_LABEL = {"pass": "PASS", "warn": "WARN", "fail": "FAIL", "na": "N/A"}


def _score_text(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def _style_for(value: float | None) -> str:
    if value is None:
        return "dim"
    return "green" if value >= 80 else "yellow" if value >= 50 else "red"


def _points(result: CheckResult) -> str:
    if result.status == "na":
        return f"n/a (of {result.max_points})"
    return f"{result.points:g}/{result.max_points} points"


def title(card: Scorecard) -> str:
    what = f"endpoint {card.scope}" if card.scope else "the yard"
    return (f"Readiness of {what}: {_score_text(card.score)}/100"
            + (f" (weakest: {card.area(card.weakest).title})" if card.weakest else ""))


def rich_summary(card: Scorecard) -> Table:
    """The score per area with its check counts: one small table (e.g. before and after)."""
    summary = Table(title=title(card), title_justify="left", header_style="bold")
    for column in ("Area", "Score", "Pass", "Warn", "Fail", "N/A"):
        summary.add_column(column, justify="left" if column == "Area" else "right")
    for area in card.areas:
        summary.add_row(area.title,
                        Text(_score_text(area.score), style=_style_for(area.score)),
                        *(str(area.counts.get(s, 0)) for s in ("pass", "warn", "fail", "na")))
    return summary


def rich_scorecard(card: Scorecard, *, show_passed: bool = True) -> RenderableType:
    """The summary per area and every check with its evidence, fix and reference."""
    checks = Table(header_style="bold", show_lines=True)
    checks.add_column("Status", no_wrap=True)
    checks.add_column("Check")
    checks.add_column("Evidence, fix and reference", ratio=3)
    rows = [r for r in card.results if show_passed or r.status in ("warn", "fail")]
    for result in rows:
        detail = Text(result.evidence)
        if result.fix:
            detail.append("\nfix: ", style="bold yellow")
            detail.append(result.fix)
        detail.append(f"\n{result.reference}", style="dim")
        name = Text(result.title)
        name.append(f"\n{result.id}", style="dim")
        if result.subject != "yard":
            name.append(f"\n{result.subject.partition(':')[2]}", style="cyan")
        name.append(f"\n{_points(result)}", style="dim")
        checks.add_row(Text(STATUS_LABEL[result.status], style=STATUS_STYLE[result.status]),
                       name, detail)
    return Group(rich_summary(card), checks)


_CSS = """
body{font:15px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;
max-width:70rem;padding:0 1rem;color:#1b1f23;background:#fff}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem}
table{border-collapse:collapse;width:100%;margin:.5rem 0}
th,td{border:1px solid #d0d7de;padding:.4rem .6rem;text-align:left;vertical-align:top}
th{background:#f6f8fa}.num{text-align:right}
.pass{color:#116329}.warn{color:#7d4e00}.fail{color:#a40e26}.na{color:#57606a}
.status{font-weight:700;white-space:nowrap}.fix{margin-top:.3rem}
.ref,.id{color:#57606a;font-size:.85em}
""".strip()


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _check_rows(results: Iterable[CheckResult]) -> str:
    rows = []
    for r in results:
        subject = "" if r.subject == "yard" else \
            f"<div>{_e(r.subject.partition(':')[2])}</div>"
        fix = f'<div class="fix"><strong>Fix:</strong> {_e(r.fix)}</div>' if r.fix else ""
        rows.append(
            f'<tr><td class="status {r.status}">{STATUS_LABEL[r.status]}</td>'
            f'<td>{_e(r.title)}<div class="id">{_e(r.id)}</div>{subject}</td>'
            f'<td class="num">{_points(r)}</td>'
            f"<td>{_e(r.evidence)}{fix}<div class=\"ref\">{_e(r.reference)}</div></td></tr>")
    return "\n".join(rows)


def html_scorecard(card: Scorecard) -> str:
    """One page, no external assets: safe to e-mail or attach to a review ticket."""
    areas = "\n".join(
        f'<tr><td>{_e(a.title)}</td><td class="num">{_e(_score_text(a.score))}</td>'
        f'<td class="num">{a.points:g}/{a.max_points}</td>'
        + "".join(f'<td class="num">{a.counts.get(s, 0)}</td>'
                  for s in ("pass", "warn", "fail", "na")) + "</tr>"
        for a in card.areas)
    sections = []
    for area in card.areas:
        mine = [r for r in card.results if r.area == area.area]
        if not mine:
            continue
        sections.append(
            f"<h2>{_e(area.title)}: {_e(_score_text(area.score))}</h2>"
            "<table><thead><tr><th>Status</th><th>Check</th><th>Points</th>"
            "<th>Evidence, fix and reference</th></tr></thead><tbody>"
            f"{_check_rows(mine)}</tbody></table>")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
        f"<title>{_e(title(card))}</title><style>{_CSS}</style></head><body>"
        f"<h1>{_e(title(card))}</h1>"
        f"<p>Generated {_e(card.generated_at.isoformat(timespec='seconds'))}. A check earns "
        "all its points on pass, half on warn, none on fail; n/a checks are left out. An "
        "area scores 100 &times; points / max points; the overall score is the mean of the "
        "areas.</p>"
        "<table><thead><tr><th>Area</th><th>Score</th><th>Points</th><th>Pass</th>"
        "<th>Warn</th><th>Fail</th><th>N/A</th></tr></thead>"
        f"<tbody>{areas}</tbody></table>"
        + "".join(sections) + "</body></html>\n")
