"""Readiness scorecard: grade a deployed system in six areas against published
production-readiness rubrics (the ML Test Score, the SRE books...), each check with its
evidence, its fix and its citation (docs/readiness.md lists them all)."""

from __future__ import annotations

from typing import Any

from modelyard.readiness.checks import CHECKS, CheckResult
from modelyard.readiness.render import html_scorecard, rich_scorecard, rich_summary
from modelyard.readiness.scorecard import Scorecard


def scorecard_for(yard_or_client: Any, endpoint: str | None = None) -> Scorecard:
    """The scorecard of ``endpoint`` (or of every endpoint) from a ``Yard`` or a ``Client``:
    both answer ``readiness`` (a ``Scorecard`` in-process, its JSON over HTTP)."""
    found = yard_or_client.readiness(endpoint)
    return found if isinstance(found, Scorecard) else Scorecard.from_dict(found)


__all__ = ["CHECKS", "CheckResult", "Scorecard", "html_scorecard", "rich_scorecard",
           "rich_summary", "scorecard_for"]
