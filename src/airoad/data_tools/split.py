"""`airoad data split`: a user's JSONL into a training file and a held-out dev file.

    airoad data split --dataset_path my_chats.jsonl --train_out data/my_train.jsonl --dev_out data/my_dev.jsonl

Rows are validated as training reads them (every bad line reported at once) and written back
unchanged (Alpaca stays Alpaca, extra fields kept), each output in the input's order.

No prompt on both sides: conversations whose first user message is the same after folding case,
whitespace and punctuation ("What is 2+2?" and "what is 2 + 2") form one group, and a group goes
whole to train or to dev; exact duplicates are such a group too. Otherwise the dev score would
partly measure recall of rows the tune trained on. Groups are drawn for dev in a seeded order until
the dev side holds ``--dev_rows`` rows (or ``--dev_fraction`` of them, rounded up); the last group
drawn may carry it past that. Same file and seed, same split.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass

from airoad.core.base.errors import UserError, problems_of
from airoad.core.base.io import write_jsonl
from airoad.core.base.options import opt, overwrite_opt, seed_opt
from airoad.core.data.chat_data import Conversation, read_rows, to_conversation
from airoad.data_tools.common import conversation_key


@dataclass
class SplitConfig:
    dataset_path: str | None = opt(
        None,
        "ChatML or Alpaca JSONL to split (validated as training reads it).",
        io="input",
        required="the JSONL file to split",
    )
    train_out: str | None = opt(
        None,
        "Training JSONL to write: every row not held out.",
        io="out_file",
        required="the training file to write",
    )
    dev_out: str | None = opt(
        None,
        "Dev JSONL to write: the held-out rows (a run's dev_path).",
        io="out_file",
        required="the dev file to write",
    )
    dev_fraction: float = opt(
        0.1, "Share of the rows to hold out, rounded up to whole prompt groups.", gt=0.0, max=0.5
    )
    dev_rows: int = opt(0, "Rows to hold out instead of --dev_fraction (0: use the fraction).", min=0)
    seed: int = seed_opt("Seed of the draw: the same file and seed give the same split.")
    overwrite: bool = overwrite_opt()


@dataclass
class Split:
    """Row indices (0-based, file order) of each side, and the prompt groups they came from."""

    train: list[int]
    dev: list[int]
    groups: int
    shared_groups: int  # groups of 2+ rows, each kept on one side
    rows_in_shared: int = 0
    target: int = 0


def prompt_key(conv: Conversation) -> str:
    """The group key: the first user message, case-folded, punctuation and whitespace removed
    (any script's letters and digits kept); a conversation without one groups by its whole text."""
    first = next((m["content"] for m in conv.messages if m["role"] == "user"), None)
    if first is None:
        return "conversation:" + conversation_key(conv.messages)
    return "prompt:" + " ".join(re.sub(r"[\W_]+", " ", first.casefold()).split())


def dev_target(n: int, cfg: SplitConfig) -> int:
    return cfg.dev_rows if cfg.dev_rows else math.ceil(cfg.dev_fraction * n)


def split_rows(convs: list[Conversation], cfg: SplitConfig) -> Split:
    """Which rows go to dev: whole prompt groups in a seeded order until ``dev_target`` rows.
    UserError when no split leaves both sides rows (too few rows or prompt groups)."""
    groups: dict[str, list[int]] = {}
    for i, conv in enumerate(convs):
        groups.setdefault(prompt_key(conv), []).append(i)
    n, target = len(convs), dev_target(len(convs), cfg)
    where = f"--dataset_path {cfg.dataset_path}"
    if target >= n:
        raise UserError(
            f"{where}: {n} rows; --dev_rows {target} would leave none to train on; give fewer (e.g. --dev_rows {max(1, n // 10)})"
        )
    if len(groups) < 2:
        raise UserError(
            f"{where}: all {n} rows share one prompt (first user message), so no dev row can be held out "
            "without training on its prompt; add rows with other prompts"
        )
    order = list(groups.values())
    random.Random(cfg.seed).shuffle(order)
    dev: list[int] = []
    for members in order:
        if len(dev) >= target:
            break
        if len(dev) + len(members) >= n:  # never the last rows to train on
            continue
        dev += members
    shared = [g for g in groups.values() if len(g) > 1]
    return Split(
        train=sorted(set(range(n)) - set(dev)),
        dev=sorted(dev),
        groups=len(groups),
        shared_groups=len(shared),
        rows_in_shared=sum(len(g) for g in shared),
        target=target,
    )


def read_split_input(path: str) -> tuple[list[dict], list[Conversation]]:
    """(raw rows, their conversations), every row validated as training reads it."""
    rows = read_rows(path)  # DataError: every bad line, one each
    return [row for _, row in rows], [to_conversation(row, f"{path}:{n}", None) for n, row in rows]


def run(cfg: SplitConfig, inv: object = None) -> Split:
    rows, convs = read_split_input(cfg.dataset_path)
    split = split_rows(convs, cfg)
    write_jsonl(cfg.train_out, [rows[i] for i in split.train])
    write_jsonl(cfg.dev_out, [rows[i] for i in split.dev])
    together = (
        f"; {split.shared_groups} prompts with 2+ rows ({split.rows_in_shared} rows) each kept on one side"
        if split.shared_groups
        else ""
    )
    print(f"split {cfg.dataset_path}: {len(rows)} rows, {split.groups} distinct prompts{together}")
    print(f"  train: {len(split.train)} rows -> {cfg.train_out}")
    print(f"  dev:   {len(split.dev)} rows -> {cfg.dev_out} (asked {split.target}; seed {cfg.seed})")
    print(f"train on it: airoad train --dataset_path {cfg.train_out} --dev_path {cfg.dev_out} ...")
    return split


def split_problems(cfg: SplitConfig) -> list[str]:
    """Every problem of the input and of the split asked for, before any output is held."""
    return problems_of(lambda: split_rows(read_split_input(cfg.dataset_path)[1], cfg))
