"""The two outcomes a command raises instead of finishing: a user's mistake and a failed check.

:class:`UserError` (and its subclasses): ``problems``, one line each (where, what, how to fix);
printed as `error: ...` lines, exit 2, no traceback. :class:`CheckFailed`: the command checked its
own result and it was wrong (an export that does not reproduce the tune); one line, exit 1,
nothing kept. :func:`problems_of` collects a check's lines so every problem is reported at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

MAX_PROBLEMS = 20


class UserError(Exception):
    """A user-fixable mistake. ``problems``: one line per mistake, capped at MAX_PROBLEMS (+ a count line)."""

    def __init__(self, problems: list[str] | str):
        problems = [problems] if isinstance(problems, str) else list(problems)
        self.problems = problems[:MAX_PROBLEMS]
        if len(problems) > MAX_PROBLEMS:
            self.problems.append(f"... and {len(problems) - MAX_PROBLEMS} more problems")
        super().__init__("\n".join(self.problems))


class CheckFailed(Exception):
    """A check the command ran on its own result failed (exit 1; nothing kept). One line."""


def problems_of(fn: Callable[..., Any], *args: Any) -> list[str]:
    """The user problems ``fn(*args)`` raises (its result dropped), or []: for checks that must
    report together with others."""
    try:
        fn(*args)
    except UserError as e:
        return e.problems
    return []
