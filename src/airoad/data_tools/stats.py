"""`airoad data stats`: what is in a JSONL file, and how it tokenizes for training.

    airoad data stats data/sft/example_train.jsonl [--base_model M] [--max_seq_len N] [--json]

Rows, formats, messages per role, turns per conversation, characters, duplicates; with a
tokenizer, token lengths (p50/p90/p99/max) of each conversation rendered by the model's chat
template exactly as training renders it, how many exceed ``max_seq_len`` and how many of those
would lose every trained token. Without a tokenizer (offline, not cached) the token part is
replaced by a one-line note.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

from airoad.core.base.errors import UserError
from airoad.core.base.options import opt
from airoad.core.data.chat_data import (
    IGNORE,
    ROLES,
    Conversation,
    read_rows,
    to_conversation,
    tokenize_conversation,
)
from airoad.core.model.loading import load_tokenizer
from airoad.data_tools.common import conversation_key


@dataclass
class StatsConfig:
    dataset_path: str | None = opt(
        None, "JSONL file to describe (also accepted as the first positional argument).", io="input"
    )
    base_model: str | None = opt(
        "Qwen/Qwen2.5-0.5B-Instruct",
        "Model whose tokenizer and chat template measure token lengths ('none' skips token stats).",
    )
    max_seq_len: int = opt(512, "Training max_seq_len: count the conversations longer than this.", min=16)
    system_prompt: str | None = opt(None, "System turn for rows without one, as training's system_prompt.")
    json: bool = opt(False, "Print the stats as one JSON object instead of text.")

    def validate(self) -> list[str]:
        return [] if self.dataset_path else ["no file given; run `airoad data stats FILE`"]


def percentiles(values: list[int]) -> dict[str, int]:
    """Nearest-rank p50/p90/p99 and max of non-empty ``values``."""
    s = sorted(values)
    pick = {f"p{p}": s[max(0, math.ceil(p / 100 * len(s)) - 1)] for p in (50, 90, 99)}
    return {**pick, "max": s[-1]}


def text_stats(convs: list[Conversation]) -> dict[str, Any]:
    """Everything that needs no tokenizer."""
    turns = [sum(m["role"] != "system" for m in c.messages) for c in convs]
    keys = Counter(conversation_key(c.messages) for c in convs)
    return {
        "rows": len(convs),
        "formats": {
            "chatml": sum(c.fmt == "chatml" for c in convs),
            "alpaca": sum(c.fmt == "alpaca" for c in convs),
        },
        "messages_by_role": {r: sum(m["role"] == r for c in convs for m in c.messages) for r in ROLES},
        "with_system_turn": sum(c.messages[0]["role"] == "system" for c in convs),
        "turns": {"histogram": dict(sorted(Counter(turns).items())), **percentiles(turns)},
        "characters": percentiles([sum(len(m["content"]) for m in c.messages) for c in convs]),
        "duplicates": sum(n - 1 for n in keys.values()),
    }


def load_tokenizer_or_note(name: str) -> tuple[Any, str | None]:
    """(tokenizer, None), or (None, one-line reason) when it cannot be loaded."""

    try:
        return load_tokenizer(name, trust_remote_code=False), None
    except UserError as e:
        return None, e.problems[0]
    except ImportError as e:
        return None, f"transformers is not importable ({e})"


def token_stats(tok: Any, convs: list[Conversation], max_seq_len: int) -> dict[str, Any]:
    """Token lengths as training renders them, truncation at ``max_seq_len`` and what it costs."""

    lengths, lose_all = [], 0
    for c in convs:
        ids, labels, _ = tokenize_conversation(tok, c.messages, max_seq_len=10**9)
        lengths.append(len(ids))
        # training trains on labels[1:max_seq_len]; none left means the example is dropped
        lose_all += len(ids) > max_seq_len and all(lab == IGNORE for lab in labels[1:max_seq_len])
    return {
        **percentiles(lengths),
        "max_seq_len": max_seq_len,
        "truncated": sum(n > max_seq_len for n in lengths),
        "dropped": lose_all,
    }


def collect(cfg: StatsConfig) -> dict[str, Any]:
    """The stats dict (``tokens`` is None and ``note`` says why when no tokenizer could be used)."""
    path = cfg.dataset_path or ""
    convs = [to_conversation(row, f"{path}:{n}", cfg.system_prompt) for n, row in read_rows(path)]
    out: dict[str, Any] = {"file": path, **text_stats(convs), "tokens": None, "note": None}
    if not cfg.base_model:
        out["note"] = "token stats skipped (--base_model none)"
        return out
    tok, why = load_tokenizer_or_note(cfg.base_model)
    if tok is None:
        out["note"] = f"token stats skipped: {why}"
        return out
    try:
        out["tokens"] = {"base_model": cfg.base_model, **token_stats(tok, convs, cfg.max_seq_len)}
    except ValueError as e:  # a chat template that does not render prefix by prefix
        out["note"] = f"token stats skipped: {e}"
    return out


def _pct(d: dict[str, int]) -> str:
    return ", ".join(f"{k} {d[k]}" for k in ("p50", "p90", "p99", "max"))


def render(s: dict[str, Any]) -> str:
    """The stats as readable text."""
    f, r, t = s["formats"], s["messages_by_role"], s["turns"]
    hist = ", ".join(f"{k}: {v}" for k, v in t["histogram"].items())
    lines = [
        f"{s['file']}: {s['rows']} rows ({f['chatml']} ChatML, {f['alpaca']} Alpaca)",
        f"messages by role: system {r['system']}, user {r['user']}, assistant {r['assistant']} "
        f"({s['with_system_turn']} conversations have a system turn)",
        f"turns per conversation (user + assistant): {hist}",
        f"characters per conversation: {_pct(s['characters'])}",
        f"duplicates: {s['duplicates']} rows repeat an earlier conversation (whitespace-normalised)",
    ]
    tk = s["tokens"]
    if tk:
        lines.append(f"tokens per conversation ({tk['base_model']} chat template): {_pct(tk)}")
        lines.append(
            f"truncated at max_seq_len {tk['max_seq_len']}: {tk['truncated']} of {s['rows']} "
            f"({tk['dropped']} would lose every trained token and be dropped)"
        )
    if s["note"]:
        lines.append(f"note: {s['note']}")
    return "\n".join(lines)


def run(cfg: StatsConfig, inv: Any = None) -> None:
    """Print the stats of ``cfg.dataset_path`` (text, or one JSON object with --json)."""
    stats = collect(cfg)
    print(json.dumps(stats, indent=2, ensure_ascii=False) if cfg.json else render(stats))
