"""The one exception type that means "the user gave us something wrong".

Commands raise a subclass with ``problems`` (one line each: where, what, how to fix); the CLI
prints them as `error: ...` lines and exits 2, with no traceback.
"""

from __future__ import annotations

MAX_PROBLEMS = 20


class UserError(Exception):
    """A user-fixable mistake. ``problems``: one line per mistake, capped at MAX_PROBLEMS (+ a count line)."""

    def __init__(self, problems: list[str] | str):
        problems = [problems] if isinstance(problems, str) else list(problems)
        self.problems = problems[:MAX_PROBLEMS]
        if len(problems) > MAX_PROBLEMS:
            self.problems.append(f"... and {len(problems) - MAX_PROBLEMS} more problems")
        super().__init__("\n".join(self.problems))
