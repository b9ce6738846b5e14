"""Helpers shared by the data tools: reading validated conversations, dedupe keys, ChatML rows."""

from __future__ import annotations

import json
from pathlib import Path

from airoad.core.data.chat_data import Conversation, DataError, read_rows, to_conversation


def read_conversations(path: str | Path) -> list[Conversation]:
    """Every row of ``path`` as ChatML, validated exactly as training does (DataError lists every bad line)."""
    return [to_conversation(row, f"{path}:{n}", None) for n, row in read_rows(path)]


def read_many(paths: list[str]) -> tuple[list[list[Conversation]], list[str]]:
    """Read several files; returns (conversations per file, problems of all files together)."""
    out, problems = [], []
    for p in paths:
        try:
            out.append(read_conversations(p))
        except DataError as e:
            out.append([])
            problems += e.problems
    return out, problems


def normalise(text: str) -> str:
    """Whitespace-normalised text: runs of whitespace become one space, ends stripped."""
    return " ".join(text.split())


def conversation_key(messages: list[dict[str, str]]) -> str:
    """Dedupe key: the roles and whitespace-normalised contents, in order (case and punctuation kept)."""
    return json.dumps([[m["role"], normalise(m["content"])] for m in messages], ensure_ascii=False)


def chatml_row(messages: list[dict[str, str]]) -> dict[str, list[dict[str, str]]]:
    """A JSONL row in airoad's ChatML format (only role and content are written)."""
    return {"messages": [{"role": m["role"], "content": m["content"]} for m in messages]}
