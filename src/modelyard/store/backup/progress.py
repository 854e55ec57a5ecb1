"""How backup and restore report progress: a task with a total, advanced as work is done.
The CLI draws Rich progress bars; library callers pass nothing and see nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

Advance = Callable[[float], None]


class Progress(Protocol):
    def task(self, description: str, total: float) -> Advance:
        """Start a task of ``total`` units (rows or bytes); returns what advances it."""
        ...


class Silent:
    def task(self, description: str, total: float) -> Advance:
        return lambda _amount: None
