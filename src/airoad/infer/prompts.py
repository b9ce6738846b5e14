"""Prompts for compare and eval: airoad's bundled set, or a JSONL file.

A ``--prompts`` file may mix three row shapes; each row gives one prompt:

- ChatML rows (``{"messages": [...]}``), validated exactly as ``airoad train`` validates them, so
  any training or dev file works. The prompt is the row's *first* user turn, together with the
  row's own system turn when it opens with one: that is the context the model saw for that turn in
  training. Later turns are ignored (a multi-turn row is not replayed turn by turn).
- Alpaca rows (``instruction``/``input``/``output``): the user turn ``airoad train`` builds from them.
- Prompt rows: ``{"prompt": "..."}``, optionally with ``"system": "..."``, for prompt sets without
  answers.

A prompt without its own system turn gets ``--system_prompt``, else the run's ``system_prompt``,
else the chat template's default (see :meth:`Prompt.messages`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airoad.core.data.chat_data import DataError, read_rows, row_problem, seeded_subset, to_conversation

# Written for airoad: a mix that invites lists and headings and prompts that should get a plain answer.
BUNDLED_PROMPTS: tuple[str, ...] = (
    "Explain what a hash table is and when you would use one.",
    "Give me three tips for writing clear commit messages.",
    "What is 17 multiplied by 23? Show the steps.",
    "Write a two-sentence summary of why the sky looks blue.",
    "How do I reverse a list in Python?",
    "What should I pack for a one-night hiking trip?",
    "Translate 'good morning, how are you?' into Spanish and French.",
    "Is a tomato a fruit or a vegetable? Answer in one sentence.",
)


@dataclass(frozen=True)
class Prompt:
    """One prompt: the user text, the row's own system turn (or None), and where it came from."""

    user: str
    system: str | None
    source: str  # "file:line" or "bundled:N"

    def messages(self, default_system: str | None) -> list[dict[str, str]]:
        """Chat messages for the template: own system turn, else ``default_system``, then the user turn.

        With neither, no system message is passed and the template applies its own default
        (Qwen2.5: "You are Qwen, created by Alibaba Cloud. ...").
        """
        system = self.system if self.system is not None else default_system
        head = [{"role": "system", "content": system}] if system else []
        return [*head, {"role": "user", "content": self.user}]


def _prompt_row_problem(row: Any) -> str | None:
    """What is wrong with a row as a prompt, or None. ChatML/Alpaca rows: the training rules."""
    if isinstance(row, dict) and "prompt" in row and "messages" not in row and "instruction" not in row:
        if not isinstance(row["prompt"], str) or not row["prompt"].strip():
            return "`prompt` must be a non-empty string"
        if row.get("system") is not None and not isinstance(row["system"], str):
            return "`system` must be a string"
        return None
    problem = row_problem(row)
    if problem and not _has_answer(row):
        problem += ' (for a prompt without an answer write {"prompt": "..."})'
    return problem


def _has_answer(row: Any) -> bool:
    if not isinstance(row, dict):
        return False
    msgs = row.get("messages")
    if isinstance(msgs, list):
        return any(isinstance(m, dict) and m.get("role") == "assistant" for m in msgs)
    return "output" in row


def _row_to_prompt(row: dict[str, Any], source: str) -> Prompt:
    if "prompt" in row and "messages" not in row and "instruction" not in row:
        return Prompt(row["prompt"], row.get("system") or None, source)
    msgs = to_conversation(row, source, None).messages
    system = msgs[0]["content"] if msgs[0]["role"] == "system" else None
    user = next(m["content"] for m in msgs if m["role"] == "user")
    return Prompt(user, system, source)


def read_prompt_file(path: str | Path) -> list[Prompt]:
    """Every row of a JSONL prompt file as a Prompt. DataError lists every bad line (``file:line: ...``)."""
    path = Path(path)
    if not path.is_file():
        what = "is a directory; give a .jsonl file" if path.is_dir() else "no such file; check the path"
        raise DataError([f"--prompts {path}: {what}"])
    rows = read_rows(path, check=_prompt_row_problem, allow_empty=True)
    prompts = [_row_to_prompt(row, f"{path}:{n}") for n, row in rows]
    if not prompts:
        raise DataError([f"--prompts {path}: no rows; add one JSON object per line"])
    return prompts


def load_prompts(path: str | Path | None, n: int = 0, seed: int = 0) -> list[Prompt]:
    """The bundled prompts (``path`` None) or a file's; ``n`` > 0 keeps a seeded random subset in file order."""
    if path is None:
        prompts = [Prompt(p, None, f"bundled:{i}") for i, p in enumerate(BUNDLED_PROMPTS, start=1)]
    else:
        prompts = read_prompt_file(path)
    return seeded_subset(prompts, n, seed)
