"""One rule for text a user hands a command: regular expressions and file names.

A user's regex (``--expect``, ``--reject_unless``) is compiled with every failure caught (a bad
pattern, a repeat count too big, nesting too deep) and matched under a time budget, so no pattern
hangs a command or escapes as a traceback. The engine is the ``regex`` package (a transformers
dependency; ``re``'s syntax, plus a ``timeout`` on every match: https://pypi.org/project/regex/).

A file name a command builds from a user's text (``--name``) is checked for its length and its
characters before any model loads. Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import regex

from airoad.core.base.errors import UserError

MAX_PATTERN = 2000  # characters: a longer pattern is a mistake (or an attack), not a check
MATCH_SECONDS = 2.0  # per text: a sane pattern takes microseconds on an answer
MAX_NAME_BYTES = 200  # below every common file system's 255, leaving room for a suffix
BAD_NAME_CHARS = set('/\\:*?"<>|')


def regex_problems(flag: str, pattern: str | None) -> list[str]:
    """[] for no pattern or a usable one, else one line naming the flag, the pattern and the fault."""
    if pattern is None:
        return []
    if not pattern:
        return [f"{flag} '': an empty pattern matches every answer; give a regular expression"]
    shown = pattern if len(pattern) <= 60 else pattern[:57] + "..."
    if len(pattern) > MAX_PATTERN:
        return [
            f"{flag} {shown!r}: {len(pattern)} characters, more than {MAX_PATTERN}; give a shorter pattern"
        ]
    try:
        regex.compile(pattern)
    except regex.error as e:
        where = f" at position {e.pos}" if getattr(e, "pos", None) is not None else ""
        why = f"{e.msg if hasattr(e, 'msg') else e}{where}"
    except (RecursionError, OverflowError, MemoryError, ValueError) as e:
        why = "nested too deeply" if isinstance(e, RecursionError) else (str(e) or type(e).__name__)
    else:
        return []
    return [
        f"{flag} {shown!r}: not a valid regular expression ({why}); fix the pattern "
        "(Python re syntax; quote it in the shell)"
    ]


@dataclass
class UserRegex:
    """A checked user pattern; :meth:`search` runs under :data:`MATCH_SECONDS` per text."""

    flag: str
    pattern: str

    def __post_init__(self) -> None:
        if problems := regex_problems(self.flag, self.pattern):
            raise UserError(problems)
        self._compiled: Any = regex.compile(self.pattern)

    def search(self, text: str) -> bool:
        """Whether the pattern occurs in ``text``; UserError when matching runs past the budget
        (catastrophic backtracking), raised on the first such text."""
        try:
            return self._compiled.search(text, timeout=MATCH_SECONDS) is not None
        except TimeoutError:
            raise UserError(
                f"{self.flag} {self.pattern[:60]!r}: matching one answer took over {MATCH_SECONDS:g}s "
                "(the pattern backtracks catastrophically, e.g. nested or overlapping repeats); simplify it"
            ) from None


def user_regex(flag: str, pattern: str | None) -> UserRegex | None:
    """The checked pattern of ``flag``, or None when it was not given."""
    return UserRegex(flag, pattern) if pattern is not None else None


def file_name_problems(flag: str, name: str, suffix: str = "") -> list[str]:
    """[] when ``name + suffix`` is a plain file name this machine can create, else one line."""
    full = name + suffix
    fix = f"give e.g. {flag} my_model"
    if name in ("", ".", "..") or name.startswith("-"):
        return [f"{flag} {name!r}: not a file name; {fix}"]
    bad = sorted({c for c in name if c in BAD_NAME_CHARS or ord(c) < 32 or ord(c) == 127})
    if bad:
        return [f"{flag} {name!r}: holds {''.join(bad)!r}, which a file name may not; {fix}"]
    try:
        size = len(full.encode("utf-8"))
    except UnicodeEncodeError:
        return [f"{flag} {name!r}: holds bytes that are not UTF-8; {fix}"]
    if size > MAX_NAME_BYTES:
        return [f"{flag}: the file name {full[:40]!r}... is {size} bytes, above {MAX_NAME_BYTES}; {fix}"]
    return []
