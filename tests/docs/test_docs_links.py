"""Every relative link in the docs and the README reaches a file, and every #anchor a
heading of that file (GitHub's rule for heading anchors)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from modelyard.docsgen.markdown import anchor

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted([ROOT / "README.md", ROOT / "SECURITY.md", *(ROOT / "docs").rglob("*.md")])
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^\s*(```|~~~)")


def outside_fences(text: str) -> list[str]:
    """The lines outside fenced code blocks."""
    kept, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            kept.append(line)
    return kept


def anchors(page: Path) -> set[str]:
    """Heading anchors as GitHub makes them (a repeated heading gets -1, -2...)."""
    seen: dict[str, int] = {}
    found = set()
    for line in outside_fences(page.read_text()):
        match = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            slug = anchor(match.group(1))
            found.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
            seen[slug] = seen.get(slug, 0) + 1
    return found


def links(page: Path) -> list[str]:
    lines = [re.sub(r"`[^`]*`", "", line) for line in outside_fences(page.read_text())]
    return LINK.findall("\n".join(lines))


def broken(page: Path) -> list[str]:
    problems = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, fragment = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            problems.append(f"{target}: no such file")
        elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
            problems.append(f"{target}: no heading #{fragment}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    assert not broken(page), broken(page)


def test_the_checker_sees_a_broken_link_and_a_missing_anchor(tmp_path: Path) -> None:
    (tmp_path / "b.md").write_text("# Title here\n\n## Second `code` part\n")
    page = tmp_path / "a.md"
    page.write_text("[ok](b.md#title-here) [ok](b.md#second-code-part) [web](https://x.org)\n"
                    "[gone](c.md) [bad](b.md#nope)\n```\n[in code](d.md)\n```\n")
    assert broken(page) == ["c.md: no such file", "b.md#nope: no heading #nope"]


def test_the_docs_map_links_every_page() -> None:
    index = (ROOT / "docs" / "index.md").read_text()
    linked = {(ROOT / "docs" / target.partition("#")[0]).resolve()
              for target in LINK.findall(index)}
    pages = {p.resolve() for p in (ROOT / "docs").rglob("*.md")
             if "decisions" not in p.parts and p.name != "index.md"}
    assert not pages - linked, sorted(str(p.relative_to(ROOT)) for p in pages - linked)
