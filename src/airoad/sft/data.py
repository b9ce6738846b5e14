"""SFT's data: the train and dev files, validated, then tokenised into examples with loss labels.

Reading, row checks and the per-conversation labels are the core's (:mod:`airoad.core.data.chat_data`);
what is SFT's own is the policy: truncate at ``max_seq_len``, drop what keeps no trained token, and
count both into the load stats. Anchor conversations (``kl_anchor_path``) become examples too, marked
``kl_only``: their assistant tokens carry KL to the base and no CE.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from airoad.core.data.chat_data import (
    IGNORE,
    Conversation,
    DataError,
    LoadStats,
    load_conversations,
    tokenize_conversation,
)


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]
    kl_only: bool = False  # an anchor: its labelled positions get KL to the base, no CE

    @property
    def n_trained(self) -> int:
        return sum(lab != IGNORE for lab in self.labels[1:])  # position 0 is never a target


@dataclass
class TrainData:
    """The validated conversations of a run (no tokenizer needed to get them)."""

    train: list[Conversation]
    dev: list[Conversation]
    stats: LoadStats
    dev_stats: LoadStats | None
    anchor: list[Conversation] = dataclasses.field(default_factory=list)
    anchor_stats: LoadStats | None = None


def tokenize_all(
    tokenizer: Any, convs: list[Conversation], max_seq_len: int, stats: LoadStats, kl_only: bool = False
) -> list[Example]:
    """Tokenize conversations; count truncations and drop examples with no trained token left."""
    out = []
    for conv in convs:
        ids, labels, truncated = tokenize_conversation(tokenizer, conv.messages, max_seq_len)
        stats.truncated += truncated
        ex = Example(ids, labels, kl_only)
        if ex.n_trained == 0:
            stats.dropped += 1
            continue
        out.append(ex)
    stats.kept = len(out)
    return out


def read_data(cfg: Any) -> TrainData:
    """Validate the train and dev files (every problem of both at once, DataError). No tokenizer needed.
    ``cfg``: the run's TrainConfig (dataset_path, dev_path, kl_anchor_path and their subset keys, seed)."""
    problems: list[str] = []
    data = TrainData([], [], LoadStats(), None)
    try:
        data.train, data.stats = load_conversations(
            cfg.dataset_path, cfg.system_prompt, cfg.ablate_examples, cfg.seed
        )
    except DataError as e:
        problems += e.problems
    if cfg.dev_path:
        try:
            data.dev, data.dev_stats = load_conversations(cfg.dev_path, cfg.system_prompt)
        except DataError as e:
            problems += e.problems
    if cfg.kl_anchor_path:
        try:
            data.anchor, data.anchor_stats = load_conversations(
                cfg.kl_anchor_path, cfg.system_prompt, cfg.kl_anchor_examples, cfg.seed
            )
        except DataError as e:
            problems += e.problems
    if problems:
        raise DataError(problems)
    return data


def build_examples(
    cfg: Any, tokenizer: Any, data: TrainData
) -> tuple[list[Example], list[Example], LoadStats]:
    """Tokenize validated conversations; counts truncated/dropped into the stats. The anchors, if any,
    follow the task examples in the returned train list (``kl_only``)."""
    train = tokenize_all(tokenizer, data.train, cfg.max_seq_len, data.stats)
    if not train:
        raise DataError(
            [
                f"{cfg.dataset_path}: no example keeps a trained token at max_seq_len={cfg.max_seq_len}; raise it"
            ]
        )
    dev = tokenize_all(tokenizer, data.dev, cfg.max_seq_len, data.dev_stats) if data.dev else []
    if data.dev_stats is not None:
        data.stats.extra["dev"] = dataclasses.asdict(data.dev_stats)
    if data.anchor_stats is not None:
        anchors = tokenize_all(tokenizer, data.anchor, cfg.max_seq_len, data.anchor_stats, kl_only=True)
        if not anchors:
            raise DataError(
                [
                    f"{cfg.kl_anchor_path}: no anchor conversation keeps an assistant token at "
                    f"max_seq_len={cfg.max_seq_len}; raise it or give anchors with assistant turns"
                ]
            )
        data.stats.extra["anchor"] = dataclasses.asdict(data.anchor_stats)
        train += anchors
    return train, dev, data.stats
