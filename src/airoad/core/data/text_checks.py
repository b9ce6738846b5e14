"""Text detectors shared by the data tools and the style evaluator (no torch, no model).

- :func:`has_list`, :func:`has_heading`: Markdown structure in an answer.
- :func:`is_code`: an answer that is (mostly) code, which structure rewrites must leave alone.
- :data:`DEFAULT_BANNED`, :func:`banned_hits`, :func:`load_banned`: chat-format artifacts a small
  tuned model leaks (literal role tags, template tokens, "As an AI language model").
"""

from __future__ import annotations

import re
from pathlib import Path

from airoad.core.base.errors import UserError

# A Markdown list item: "- x", "* x", "+ x" or "1. x" / "1) x" at the start of a line; a thematic
# break such as "* * *" or "- - -" (only marker characters on the line) is not an item.
_LIST_ITEM = re.compile(r"^[ \t]{0,3}(?:[-*+]|\d{1,3}[.)])[ \t]+(?![-*_ \t]*$)\S", re.M)
# An ATX heading "# Title" .. "###### Title", or a setext heading (a text line underlined with "===").
# An ATX heading needs a letter in its text: GSM8K-style "#### 72" answer lines are not headings.
_HEADING = re.compile(
    r"^[ \t]{0,3}#{1,6}[ \t]+[^\n]*?[^\W\d_]|^[ \t]{0,3}[^\s=][^\n]*\n[ \t]{0,3}=+[ \t]*$", re.M
)
# A bold line used as a heading ("**Steps:**"); it counts only when text follows it (a closing
# "**Answer: 42**" line is emphasis, not a heading).
_BOLD_LINE = re.compile(r"^[ \t]{0,3}\*\*[^*\n]{1,80}\*\*:?[ \t]*$", re.M)
# An opening or closing code fence line: 3+ backticks or tildes, indented at most 3 spaces.
_FENCE_LINE = re.compile(r"^[ \t]{0,3}(`{3,}|~{3,})")
_FENCE = re.compile(r"```")

DEFAULT_BANNED: tuple[str, ...] = (
    "Human:",
    "Assistant:",
    "User:",
    "<|user|>",
    "<|assistant|>",
    "<|system|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|endoftext|>",
    "### Instruction:",
    "### Response:",
    "### Input:",
    "[INST]",
    "[/INST]",
    "<s>",
    "</s>",
    "As an AI language model",
    "as an AI language model",
)


def _outside_code(text: str) -> str:
    """The text with fenced code blocks removed (a '# comment' in code is not a heading).

    A fence opens on a line starting with 3+ backticks or tildes and closes on a line of the same
    character at least as long (CommonMark), so a ```` fence may contain ``` lines; an unclosed
    fence runs to the end of the text.
    """
    kept, fence = [], None
    for line in text.splitlines():
        m = _FENCE_LINE.match(line)
        if fence is None and m:
            fence = m.group(1)
        elif fence is not None:
            if (
                m
                and m.group(1)[0] == fence[0]
                and len(m.group(1)) >= len(fence)
                and not line[m.end() :].strip()
            ):
                fence = None
        else:
            kept.append(line)
    return "\n".join(kept)


def has_list(text: str) -> bool:
    """True when the text (outside code fences) has at least two Markdown list items."""
    return len(_LIST_ITEM.findall(_outside_code(text))) >= 2


def has_heading(text: str) -> bool:
    """True when the text (outside code fences) has a Markdown heading: ATX (``## Title``), setext
    (a line underlined with ``===``) or a bold line (``**Steps:**``) with more text after it."""
    body = _outside_code(text)
    if _HEADING.search(body):
        return True
    return any(body[m.end() :].strip() for m in _BOLD_LINE.finditer(body))


def is_code(text: str) -> bool:
    """True when the answer contains a fenced code block or most of its lines look like code."""
    if _FENCE.search(text):
        return True
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        return False
    codeish = sum(
        bool(re.search(r"[;{}]\s*$|^\s{4,}\S|^\s*(def|class|import|return|for|if)\b.*[:(]", ln))
        for ln in lines
    )
    return codeish / len(lines) > 0.5


def banned_hits(text: str, banned: tuple[str, ...] | list[str] = DEFAULT_BANNED) -> list[str]:
    """Banned strings found in ``text`` (each listed once, in ``banned`` order).

    Role tags such as "Human:" count only at a line start, where a leaked turn begins, so
    "the Human: Fall of Rome" mid-sentence does not count; template tokens count anywhere.
    """
    hits = []
    for b in banned:
        if re.fullmatch(r"[A-Za-z]+:", b):
            found = re.search(rf"(?m)^\s*{re.escape(b)}", text)
        else:
            found = b in text
        if found:
            hits.append(b)
    return hits


def load_banned(path: str | Path | None) -> tuple[str, ...]:
    """The banned list: DEFAULT_BANNED, or one string per non-empty line of ``path`` ('#' lines are comments)."""
    if path is None:
        return DEFAULT_BANNED
    p = Path(path)
    if not p.is_file():
        raise UserError(f"--banned {p}: no such file; give a text file with one banned string per line")
    try:
        text = p.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UserError(
            f"--banned {p}: not UTF-8 text (byte {e.start}); give a text file with one banned string per line"
        ) from None
    if "\x00" in text:
        raise UserError(
            f"--banned {p}: a binary file (NUL bytes); give a text file with one banned string per line"
        )
    items = [ln.rstrip("\r") for ln in text.split("\n")]
    items = [ln for ln in items if ln.strip() and not ln.lstrip().startswith("#")]
    if not items:
        raise UserError(f"--banned {p}: no entries; write one banned string per line")
    return tuple(items)
