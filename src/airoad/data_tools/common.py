"""Helpers shared by the data tools: reading validated conversations, output-path checks, dedupe keys."""

from __future__ import annotations

import json
import os
from pathlib import Path

from airoad.core.chat_data import Conversation, DataError, read_rows, to_conversation


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


def _same_file(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def out_problems(out: str | None, inputs: list[str], overwrite: bool) -> list[str]:
    """Problems with ``--out``: missing, a directory, one of the inputs, or existing without --overwrite."""
    if not out:
        return ["--out is required; give the JSONL file to write"]
    path = Path(out)
    if path.is_dir():
        return [f"--out {path}: is a directory; give a file path"]
    if any(_same_file(path, Path(i)) for i in inputs):
        return [f"--out {path}: is also an input; write to another file (inputs are never modified)"]
    if path.exists() and not overwrite:
        return [f"--out {path}: already exists; pass --overwrite to replace it, or choose another --out"]
    return []


def normalise(text: str) -> str:
    """Whitespace-normalised text: runs of whitespace become one space, ends stripped."""
    return " ".join(text.split())


def conversation_key(messages: list[dict[str, str]]) -> str:
    """Dedupe key: the roles and whitespace-normalised contents, in order (case and punctuation kept)."""
    return json.dumps([[m["role"], normalise(m["content"])] for m in messages], ensure_ascii=False)


def chatml_row(messages: list[dict[str, str]]) -> dict[str, list[dict[str, str]]]:
    """A JSONL row in airoad's ChatML format (only role and content are written)."""
    return {"messages": [{"role": m["role"], "content": m["content"]} for m in messages]}
