"""Chat data, for every lane and tool: JSONL -> validated conversations (ChatML or Alpaca) ->
rendered text with its assistant spans -> token ids + loss labels.

Validation needs no tokenizer and no torch, so every data tool and `airoad train` reject bad
files before any model is loaded. Masking is model-agnostic: the chat template renders the
conversation prefix before and after each assistant turn, and the characters in between (the
assistant content plus the template's end-of-turn marker, minus trailing whitespace) are the
trained span. Token labels follow from the tokenizer's character offsets, so one tokenization of
the full text serves every turn (Qwen2.5's template has no `{% generation %}` markers, so
`return_assistant_tokens_mask` would be all zeros; see ../shared/DESIGN.md).
"""

from __future__ import annotations

import hashlib
import json
import random
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from airoad.core.base.errors import UserError
from airoad.core.base.io import read_utf8

T = TypeVar("T")
ROLES = ("system", "user", "assistant")
IGNORE = -100


class DataError(UserError):
    """Bad input data; ``problems`` holds one `file:line: what; fix` line each."""


@dataclass
class Conversation:
    messages: list[dict[str, str]]
    source: str  # "file:line"
    fmt: str  # "chatml" | "alpaca"


@dataclass
class LoadStats:
    loaded: int = 0
    chatml: int = 0
    wrapped: int = 0  # Alpaca rows wrapped into ChatML
    system_filled: int = 0
    truncated: int = 0
    dropped: int = 0
    kept: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        return (
            f"data: {self.loaded} loaded ({self.chatml} ChatML, {self.wrapped} Alpaca wrapped), "
            f"{self.system_filled} given the system prompt, {self.truncated} truncated, "
            f"{self.dropped} dropped (no trained token left), {self.kept} kept"
        )


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def row_problem(row: Any) -> str | None:
    """Describe what is wrong with one parsed row, or None. The fix is part of the message."""
    if not isinstance(row, dict):
        return f'row is a JSON {type(row).__name__}, not an object; write {{"messages": [...]}}'
    if "messages" in row:
        msgs = row["messages"]
        if not isinstance(msgs, list):
            return '`messages` must be a list of {"role", "content"} objects'
        if not msgs:
            return "`messages` is empty; add at least a user and an assistant turn"
        for i, m in enumerate(msgs):
            if not isinstance(m, dict):
                return f'messages[{i}] is not an object; write {{"role": ..., "content": ...}}'
            role, content = m.get("role"), m.get("content")
            if role not in ROLES:
                return f"messages[{i}] has unknown role {role!r}; use one of {', '.join(ROLES)}"
            if not isinstance(content, str):
                return f"messages[{i}] ({role}) content must be a string, not {type(content).__name__}"
            if not content.strip():
                return f"messages[{i}] ({role}) has empty content; write the text or drop the turn"
        turns = [m["role"] for m in msgs if m["role"] != "system"]
        if turns and turns[0] != "user":
            return f"first non-system turn is {turns[0]!r}; a conversation starts with a user turn"
        if not any(m["role"] == "assistant" for m in msgs):
            return "no assistant turn; every conversation needs at least one answer to train on"
        if msgs[-1]["role"] != "assistant":
            return f"last turn is {msgs[-1]['role']!r}; a conversation must end with an assistant turn"
        return None
    if "instruction" in row or "output" in row:
        for key in ("instruction", "output"):
            if key not in row:
                return f"Alpaca row without `{key}`; add it (rows need instruction and output)"
        for key in ("instruction", "input", "output"):
            if key in row and row[key] is not None and not isinstance(row[key], str):
                return f"Alpaca `{key}` must be a string, not {type(row[key]).__name__}"
        if not (row["instruction"] or "").strip() or not (row["output"] or "").strip():
            return "Alpaca `instruction` and `output` must be non-empty"
        return None
    keys = ", ".join(sorted(map(str, row))) or "none"
    return f"neither ChatML (`messages`) nor Alpaca (`instruction`/`output`) row (keys: {keys})"


def read_rows(
    path: str | Path, check: Callable[[Any], str | None] | None = None, allow_empty: bool = False
) -> list[tuple[int, Any]]:
    """Read and validate a JSONL file: [(line_no, row)]. Raises DataError listing every problem.

    ``check(row)`` describes what is wrong with a parsed row or returns None (default: the
    training rules, :func:`row_problem`). ``allow_empty`` returns [] for a file without rows so
    the caller can word that error itself. UTF-8 with or without BOM, LF or CRLF; blank lines
    are skipped.
    """
    check = check or row_problem
    path = Path(path)
    if not path.exists():
        raise DataError([f"{path}: no such file; check the path (relative paths start at {Path.cwd()})"])
    if path.is_dir():
        raise DataError([f"{path}: is a directory; give a .jsonl file"])
    if not stat.S_ISREG(path.stat().st_mode):  # a FIFO or a device would block or never end
        raise DataError([f"{path}: not a regular file (a pipe or device); give a .jsonl file"])
    text, not_utf8 = read_utf8(path)
    if not_utf8:
        raise DataError([not_utf8])
    rows, problems = [], []
    # JSON Lines ends lines with \n (\r\n too); str.splitlines() would also split inside valid JSON
    # strings at U+2028, U+0085 and other separators that JSON allows unescaped.
    for n, raw in enumerate(text.split("\n"), start=1):
        raw = raw.removesuffix("\r")
        if not raw.strip():
            continue
        row, bad = _parse_line(raw)
        if bad is None:
            bad = check(row)
        if bad:
            problems.append(f"{path}:{n}: {bad}")
        else:
            rows.append((n, row))
    if problems:
        raise DataError(problems)
    if not rows and not allow_empty:
        raise DataError([f"{path}: empty file; add one JSON conversation per line"])
    return rows


def _parse_line(raw: str) -> tuple[Any, str | None]:
    """(row, None) or (None, what is wrong): invalid JSON, numbers or nesting Python refuses, or text
    that is not Unicode (a lone UTF-16 surrogate such as \\ud800)."""
    try:
        row = json.loads(raw)
    except json.JSONDecodeError as e:
        return None, f"invalid JSON ({e.msg} at column {e.colno}); one JSON object per line"
    except ValueError as e:  # e.g. an integer of more than 4300 digits
        return None, f"invalid JSON ({first_words(e)}); one JSON object per line"
    except RecursionError:
        return None, "invalid JSON (nested too deeply); one JSON object per line"
    try:
        json.dumps(row, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return (
            None,
            "text holds a lone UTF-16 surrogate (an escape such as \\ud800 that is no character); fix the text",
        )
    except RecursionError:
        return None, "invalid JSON (nested too deeply); one JSON object per line"
    return row, None


def first_words(e: BaseException, limit: int = 80) -> str:
    text = str(e).strip().split("\n")[0] or type(e).__name__
    return text[:limit]


def to_conversation(row: dict[str, Any], source: str, system_prompt: str | None) -> Conversation:
    """Turn a validated row into ChatML; Alpaca rows are wrapped, system_prompt fills a missing system turn."""
    if "messages" in row:
        msgs = [{"role": m["role"], "content": m["content"]} for m in row["messages"]]
        fmt = "chatml"
    else:
        user = row["instruction"].strip()
        if (row.get("input") or "").strip():
            user = f"{user}\n\n{row['input'].strip()}"
        msgs = [{"role": "user", "content": user}, {"role": "assistant", "content": row["output"]}]
        fmt = "alpaca"
    if system_prompt and msgs[0]["role"] != "system":
        msgs.insert(0, {"role": "system", "content": system_prompt})
    return Conversation(msgs, source, fmt)


def seeded_subset(items: list[T], n: int, seed: int) -> list[T]:
    """``n`` items picked at random with ``seed``, in their original order; all of them when
    ``n`` is 0 or not below ``len(items)``. The one subset rule of training, eval and data tools."""
    if not 0 < n < len(items):
        return list(items)
    return [items[i] for i in sorted(random.Random(seed).sample(range(len(items)), n))]


def load_conversations(
    path: str | Path, system_prompt: str | None = None, limit: int = 0, seed: int = 0
) -> tuple[list[Conversation], LoadStats]:
    """Validated conversations of a JSONL file; ``limit`` > 0 keeps a seeded random subset (file order kept)."""
    rows = seeded_subset(read_rows(path), limit, seed)
    stats = LoadStats(loaded=len(rows))
    convs = []
    for n, row in rows:
        conv = to_conversation(row, f"{path}:{n}", system_prompt)
        stats.chatml += conv.fmt == "chatml"
        stats.wrapped += conv.fmt == "alpaca"
        had_system = "messages" in row and row["messages"][0]["role"] == "system"
        stats.system_filled += bool(system_prompt) and not had_system
        convs.append(conv)
    return convs, stats


def _render(tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt
    )


def assistant_char_spans(tokenizer: Any, messages: list[dict[str, str]]) -> tuple[str, list[tuple[int, int]]]:
    """Render a conversation and return (text, [(start, end)]) character spans to train on.

    Each span covers one assistant turn's content plus the template's end-of-turn marker
    (e.g. ``<|im_end|>``), without trailing whitespace. Requires the template to render
    ``messages[:i]`` + generation prompt as a prefix of ``messages[:i+1]``.
    """
    text = _render(tokenizer, messages, add_generation_prompt=False)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:i], add_generation_prompt=True)
        upto = _render(tokenizer, messages[: i + 1], add_generation_prompt=False)
        if not (upto.startswith(before) and text.startswith(upto)):
            raise ValueError(
                "the chat template does not render conversations prefix by prefix; "
                "airoad cannot locate assistant turns for this model"
            )
        end = len(upto.rstrip())
        spans.append((len(before), end))
    return text, spans


def tokenize_conversation(
    tokenizer: Any, messages: list[dict[str, str]], max_seq_len: int
) -> tuple[list[int], list[int], bool]:
    """Token ids and labels (IGNORE outside assistant spans), truncated to max_seq_len.

    Returns (input_ids, labels, truncated). A token is trained when it starts inside an
    assistant span, so the labelled tokens decode to exactly the assistant contents and their
    end-of-turn markers.
    """
    text, spans = assistant_char_spans(tokenizer, messages)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    labels = [IGNORE] * len(ids)
    s = 0
    for t, (start, end) in enumerate(offsets):
        while s < len(spans) and start >= spans[s][1]:
            s += 1
        if s < len(spans) and spans[s][0] <= start < spans[s][1] and end > start:
            labels[t] = ids[t]
    truncated = len(ids) > max_seq_len
    return ids[:max_seq_len], labels[:max_seq_len], truncated
