"""`airoad data pairs`: preference pairs from an SFT file: the data's answer is chosen, the model's own rejected.

    airoad data pairs --dataset_path data/sft/example_train.jsonl --adapters outputs/qwen05b_fast_plain --out data/pref/my_pairs.jsonl --n 64

For each conversation of ``--dataset_path`` (ChatML or Alpaca rows, validated as for training):

- ``prompt``: every turn before the last assistant turn, as messages (the row's system turn
  included; a row without one gets ``--system_prompt``, else the run's ``system_prompt``, else none,
  so the prompt written is the prompt the model answered);
- ``chosen``: that last assistant answer, ``[{"role": "assistant", "content": ...}]``;
- ``rejected``: the model's answer to the prompt (base + ``--adapters``, or ``--base_model`` alone), decoded
  as `airoad compare` decodes (greedy, or ``--temperature`` > 0 seeded by ``--seed``; ``--batch_size``).

One JSONL row per pair (TRL's conversational preference format), in file order, written atomically.
``--n N`` keeps a seeded random subset of N conversations in file order (the one subset rule of
training, eval and the data tools); 0 = all. A pair is dropped when the model's answer is empty,
or equals the chosen one after whitespace normalisation. With ``--reject_unless REGEX`` a pair is
kept only when the model's answer does NOT match (``re.search``), so its failures become the
rejected side; an answer holding a banned string (:data:`airoad.core.data.text_checks.DEFAULT_BANNED`)
is always kept. Every input check (file, rows, regex, ``--out``, adapters) runs before a model loads.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from airoad.core.base.commands import Invocation
from airoad.core.base.io import write_jsonl
from airoad.core.base.textargs import user_regex
from airoad.core.data.chat_data import Conversation, read_rows, seeded_subset, to_conversation
from airoad.core.data.text_checks import DEFAULT_BANNED, banned_hits
from airoad.core.model.adapter_source import Source
from airoad.infer.loading import load
from airoad.infer.schema import PairsConfig
from airoad.infer.sides import answer_as, model_line

Messages = list[dict[str, str]]


@dataclass
class PairCounts:
    read: int = 0  # conversations in --dataset_path
    used: int = 0  # after --n
    generated: int = 0
    cut: int = 0  # answers cut at max_new_tokens
    empty: int = 0
    identical: int = 0
    rejected_by_regex: int = 0  # dropped: the answer matched --reject_unless
    kept_banned: int = 0  # written pairs whose answer holds a banned string
    banned_despite_regex: int = 0  # of those, answers that matched --reject_unless
    written: int = 0


def split_conversation(conv: Conversation) -> tuple[Messages, str]:
    """(prompt messages, chosen answer): the turns before the last assistant turn, and that turn."""
    msgs = [{"role": m["role"], "content": m["content"]} for m in conv.messages]
    last = max(i for i, m in enumerate(msgs) if m["role"] == "assistant")
    return msgs[:last], msgs[last]["content"]


def pair_row(prompt: Messages, chosen: str, rejected: str) -> dict[str, Messages]:
    return {
        "prompt": prompt,
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
    }


def select_pairs(
    examples: list[tuple[Messages, str]],
    answers: list[str],
    reject_unless: str | None = None,
    banned: tuple[str, ...] = DEFAULT_BANNED,
) -> tuple[list[dict], PairCounts]:
    """Rows for the (prompt, chosen) ``examples`` whose model ``answers`` survive the filters (see the
    module docstring), and the counts (``read``/``used``/``cut`` are the caller's to fill)."""
    pattern = user_regex("--reject_unless", reject_unless)
    counts = PairCounts(generated=len(answers))
    rows = []
    for (prompt, chosen), answer in zip(examples, answers, strict=True):
        flat = " ".join(answer.split())
        if not flat:
            counts.empty += 1
            continue
        if flat == " ".join(chosen.split()):
            counts.identical += 1
            continue
        matched = bool(pattern and pattern.search(answer))
        if banned_hits(answer, banned):
            counts.kept_banned += 1
            counts.banned_despite_regex += matched
        elif matched:
            counts.rejected_by_regex += 1
            continue
        rows.append(pair_row(prompt, chosen, answer))
    counts.written = len(rows)
    return rows, counts


def read_inputs(cfg: PairsConfig, source: Source) -> tuple[int, list[tuple[Messages, str]]]:
    """(rows in --dataset_path, the (prompt, chosen) pairs of the --n subset), before any model loads.
    DataError lists every problem of the file's rows."""
    rows = read_rows(cfg.dataset_path or "")
    system = cfg.system_prompt if cfg.system_prompt is not None else source.system_prompt
    picked = seeded_subset(rows, cfg.n, cfg.seed)
    convs = [to_conversation(row, f"{cfg.dataset_path}:{n}", system or None) for n, row in picked]
    return len(rows), [split_conversation(c) for c in convs]


def model_answers(cfg: PairsConfig, source: Any, prompts: list[Messages], printer: Callable) -> list[Any]:
    """Load the model of ``source`` and answer every prompt as its last side (tuned, else base):
    one :class:`~airoad.core.model.generate.Generation` per prompt, in order."""
    loaded = load(source, cfg.device, cfg.dtype, cfg.trust_remote_code)
    printer(model_line(loaded, len(prompts), cfg))
    return answer_as(loaded, loaded.sides[-1], prompts, cfg, printer)


def report(cfg: PairsConfig, counts: PairCounts, seconds: float, gen_seconds: float) -> list[str]:
    """The closing count lines."""
    subset = f" (seeded subset, seed {cfg.seed})" if counts.used < counts.read else ""
    regex = f" {cfg.reject_unless!r}" if cfg.reject_unless else " (not given)"
    despite = f" ({counts.banned_despite_regex} matched --reject_unless)" if cfg.reject_unless else ""
    return [
        "pairs:",
        f"  read:                       {counts.read} conversations from {cfg.dataset_path}",
        f"  used:                       {counts.used}{subset}",
        f"  generated:                  {counts.generated} ({counts.cut} cut at max_new_tokens)",
        f"  dropped as empty:           {counts.empty}",
        f"  dropped as identical:       {counts.identical}",
        f"  dropped by --reject_unless: {counts.rejected_by_regex}{regex}",
        f"  kept banned:                {counts.kept_banned}{despite}",
        f"  written:                    {counts.written}",
        f"  time:                       {seconds:.1f}s ({gen_seconds:.1f}s generating)",
    ]


def run(cfg: PairsConfig, inv: Invocation) -> None:
    """`airoad data pairs` as the core runs it (inputs resolved, ``--out`` checked and held)."""
    make_pairs(cfg, inv.source, inv.printer)


def make_pairs(cfg: PairsConfig, source: Source, printer: Callable[[str], None] = print) -> PairCounts:
    """Read the conversations, generate, filter, write ``cfg.out``, print the counts; returns them."""
    t0 = time.perf_counter()
    n_read, examples = read_inputs(cfg, source)
    for note in source.notes:
        printer(note)
    t1 = time.perf_counter()
    gens = model_answers(cfg, source, [prompt for prompt, _ in examples], printer)
    gen_seconds = time.perf_counter() - t1
    rows, counts = select_pairs(examples, [g.text for g in gens], cfg.reject_unless)
    counts.read, counts.used, counts.cut = n_read, len(examples), sum(not g.stopped for g in gens)
    write_jsonl(cfg.out, rows)
    for line in report(cfg, counts, time.perf_counter() - t0, gen_seconds):
        printer(line)
    if not rows:
        printer("note: no pair was kept; nothing to train on (see the counts above)")
    printer(f"wrote {len(rows)} pairs to {cfg.out}")
    return counts
