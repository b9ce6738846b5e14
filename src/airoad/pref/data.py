"""Preference data: JSONL rows validated before any model loads, then tokenised with the chat template.

Rows (TRL's formats, string or conversational):

- pair: ``{"prompt": P, "chosen": A, "rejected": A}``;
- KTO: ``{"prompt": P, "completion": A, "label": true|false}`` (``method: kto`` only; a pair row
  there gives one desirable and one undesirable row);

``P`` is a string (one user turn) or a message list ending in a user turn; ``A`` a string or a
one-message assistant list. A row's own ``system_prompt`` (a string), else the config's, fills a
missing system turn. A pair row may carry other keys (a ``label`` too): it stays a pair.

Tokens: ``prompt_ids`` are the prompt rendered with the generation prompt (so they end with the
template's assistant header, exactly what the model sees when it answers); a completion is the
text the template puts between that header and the end of the turn (the answer plus its
end-of-turn marker, e.g. ``<|im_end|>``), tokenised on its own, which is how the model would
generate it. Over-long rows lose the start of their prompt first (down to ``max_prompt_len``),
then the end of their completions; a row left without a completion token is dropped and counted.
"""

from __future__ import annotations

import difflib
import random
from dataclasses import dataclass, field
from typing import Any

from airoad.core.data.chat_data import ROLES, DataError, LoadStats, assistant_char_spans, read_rows

Messages = list[dict[str, str]]
PAIR_KEYS = ("prompt", "chosen", "rejected")
KTO_KEYS = ("prompt", "completion", "label")


def _missing(row: dict, key: str) -> str:
    near = difflib.get_close_matches(key, [str(k) for k in row], n=1, cutoff=0.7)
    return f"no `{key}`" + (f" (found `{near[0]}`: a typo?)" if near and near[0] != key else "")


def _prompt_problem(p: Any) -> str | None:
    if isinstance(p, str):
        return None if p.strip() else "`prompt` is empty; write the question"
    if not isinstance(p, list) or not p:
        return '`prompt` must be a string or a non-empty list of {"role", "content"} messages'
    for i, m in enumerate(p):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            return f"prompt[{i}] must be an object with a role among {', '.join(ROLES)}"
        if not isinstance(m.get("content"), str) or not m["content"].strip():
            return f"prompt[{i}] ({m['role']}) needs non-empty string content"
    turns = [m["role"] for m in p if m["role"] != "system"]
    if not turns or turns[0] != "user" or turns[-1] != "user":
        return "the prompt's turns must start and end with a user turn (the answer follows it)"
    return None


def _answer_problem(key: str, a: Any) -> str | None:
    if isinstance(a, str):
        return None if a.strip() else f"`{key}` is empty; write the answer"
    ok = isinstance(a, list) and len(a) == 1 and isinstance(a[0], dict) and a[0].get("role") == "assistant"
    if not ok:
        return f'`{key}` must be a string or one assistant message [{{"role": "assistant", "content": ...}}]'
    if not isinstance(a[0].get("content"), str) or not a[0]["content"].strip():
        return f"`{key}` needs non-empty string content"
    return None


def answer_text(a: str | Messages) -> str:
    return a if isinstance(a, str) else a[0]["content"]


def row_problem(row: Any, method: str) -> str | None:
    """What is wrong with one parsed row for ``method``, or None; the fix is part of the message."""
    if not isinstance(row, dict):
        return f'row is a JSON {type(row).__name__}, not an object; write {{"prompt", "chosen", "rejected"}}'
    is_kto = is_kto_row(row)
    if is_kto and method != "kto":
        return f"a KTO row (completion + label); method {method} needs prompt/chosen/rejected pairs (or use method: kto)"
    keys = KTO_KEYS if is_kto else PAIR_KEYS
    for key in keys:
        if key not in row:
            return _missing(row, key) + f"; a {'KTO' if is_kto else 'pair'} row has {', '.join(keys)}"
    if bad := _prompt_problem(row["prompt"]):
        return bad
    for key in keys[1:]:
        if key != "label" and (bad := _answer_problem(key, row[key])):
            return bad
    if "system_prompt" in row and not (
        isinstance(row["system_prompt"], str) and row["system_prompt"].strip()
    ):
        return "`system_prompt` must be a non-empty string (the row's system turn) or left out"
    if is_kto and not isinstance(row["label"], bool):
        return f"`label` is {row['label']!r}; write true (a good answer) or false (a bad one)"
    if not is_kto and " ".join(answer_text(row["chosen"]).split()) == " ".join(
        answer_text(row["rejected"]).split()
    ):
        return "chosen and rejected are the same text; a pair must differ (drop the row)"
    return None


def is_kto_row(row: dict) -> bool:
    """A KTO row has a completion or a label and is not a whole pair (a pair row may carry other
    keys, e.g. a `label` of the user's own, and stays a pair)."""
    return ("completion" in row or "label" in row) and not all(k in row for k in PAIR_KEYS)


@dataclass
class Sample:
    """One validated training item: prompt messages and one or two answers."""

    prompt: Messages
    answers: tuple[str, ...]  # (chosen, rejected) for pairs; (completion,) for KTO
    label: bool | None = None  # KTO only
    source: str = ""
    system_filled: bool = False  # the prompt got system_prompt as its system turn


def prompt_messages(p: str | Messages, system_prompt: str | None) -> Messages:
    msgs = [{"role": "user", "content": p}] if isinstance(p, str) else [dict(m) for m in p]
    if system_prompt and msgs[0]["role"] != "system":
        msgs.insert(0, {"role": "system", "content": system_prompt})
    return msgs


def to_samples(
    rows: list[tuple[int, Any]], path: str, method: str, system_prompt: str | None
) -> list[Sample]:
    out = []
    for n, row in rows:
        system = row.get("system_prompt") or system_prompt  # the row's own, else the config's
        prompt, src = prompt_messages(row["prompt"], system), f"{path}:{n}"
        filled = bool(system) and (isinstance(row["prompt"], str) or row["prompt"][0]["role"] != "system")
        if is_kto_row(row):
            items = [((answer_text(row["completion"]),), row["label"])]
        elif method == "kto":  # a pair gives one desirable and one undesirable row
            items = [((answer_text(row["chosen"]),), True), ((answer_text(row["rejected"]),), False)]
        else:
            items = [((answer_text(row["chosen"]), answer_text(row["rejected"])), None)]
        out += [Sample(prompt, answers, label, src, filled) for answers, label in items]
    return out


@dataclass
class PrefData:
    train: list[Sample]
    dev: list[Sample]
    stats: LoadStats = field(default_factory=LoadStats)


def read_data(cfg: Any) -> PrefData:
    """Validate dataset_path (and dev_path): every problem of both at once, DataError. No tokenizer."""
    problems: list[str] = []
    got: dict[str, list[Sample]] = {"train": [], "dev": []}
    for which, path in (("train", cfg.dataset_path), ("dev", cfg.dev_path)):
        if not path:
            continue
        try:
            rows = read_rows(path, check=lambda r: row_problem(r, cfg.method))
            got[which] = to_samples(rows, path, cfg.method, cfg.system_prompt)
        except DataError as e:
            problems += e.problems
    if problems:
        raise DataError(problems)
    stats = LoadStats(loaded=len(got["train"]), chatml=len(got["train"]))
    stats.system_filled = sum(s.system_filled for s in got["train"])
    return PrefData(got["train"], got["dev"], stats)


def render(tokenizer: Any, prompt: Messages, answer: str) -> tuple[list[int], list[int]]:
    """(prompt_ids, completion_ids) split exactly at the template's assistant header."""
    text, spans = assistant_char_spans(tokenizer, [*prompt, {"role": "assistant", "content": answer}])
    start, end = spans[-1]
    enc = lambda s: tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    return enc(text[:start]), enc(text[start:end])


def fit_lengths(prompt: list[int], answers: list[list[int]], max_seq_len: int, max_prompt_len: int):
    """(prompt, answers, truncated) within the budget: the prompt keeps its end (at most
    max_prompt_len tokens, when set), then every answer keeps its start."""
    cut = False
    if max_prompt_len and len(prompt) > max_prompt_len:
        prompt, cut = prompt[-max_prompt_len:], True
    room = max(max_seq_len - len(prompt), 0)
    if any(len(a) > room for a in answers):
        answers, cut = [a[:room] for a in answers], True
    return prompt, answers, cut


def tokenize_samples(
    tokenizer: Any, samples: list[Sample], cfg: Any, stats: LoadStats | None = None
) -> list[dict[str, Any]]:
    """Rows for TRL's collators: pairs ``prompt_ids, chosen_ids, rejected_ids``; KTO ``prompt_ids,
    completion_ids, label``. Counts truncated and dropped rows into ``stats``."""
    stats = stats or LoadStats()
    out = []
    for s in samples:
        rendered = [render(tokenizer, s.prompt, a) for a in s.answers]
        prompt, answers, cut = fit_lengths(
            rendered[0][0], [c for _, c in rendered], cfg.max_seq_len, cfg.max_prompt_len
        )
        stats.truncated += cut
        if not all(answers):
            stats.dropped += 1
            continue
        if s.label is None:
            out.append({"prompt_ids": prompt, "chosen_ids": answers[0], "rejected_ids": answers[1]})
        else:
            out.append({"prompt_ids": prompt, "completion_ids": answers[0], "label": s.label})
    stats.kept = len(out)
    return out


def kto_order(rows: list[dict[str, Any]], batch: int, seed: int) -> list[dict[str, Any]]:
    """KTO rows in a seeded order, each with ``KL_completion_ids``: the completion of the row before
    it in its batch of ``batch`` (rotated by one), so the KL estimate pairs prompts with other rows'
    answers of the same batch (TRL's KTO recipe). TRL reads the rows in this order (sequential)."""
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    out = []
    for s in range(0, len(rows), batch):
        group = rows[s : s + batch]
        for i, r in enumerate(group):
            out.append({**r, "KL_completion_ids": group[i - 1]["completion_ids"]})
    return out
