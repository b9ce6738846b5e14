"""`airoad data markdown-slice`: conversations whose final answers are rewritten into Markdown.

    airoad data markdown-slice --dataset_path data/sft/example_train.jsonl --out data/sft/x_md.jsonl --n 60 [--seed 42]

Contract:

- Every conversation's final assistant answer goes through
  :func:`airoad.data_tools.markdown_rewrite.restructure`. Those it rewrites (prose of three or more
  sentences, or inline steps) are the candidates; the others are skipped, counted per reason
  (already structured, code, verse or table, requested text, too short) and printed.
- Up to ``n`` candidates are picked (``n`` 0 or not below their number: all of them; else a
  seeded random subset), kept in file order, so the same seed gives a byte-identical file. When
  fewer candidates exist than ``n`` asks for, the slice has them all and a line says so; none at
  all is an error (an empty slice would only dilute a mix).
- The written slice holds ONLY rewritten conversations: its one purpose is the nudge towards
  headings and lists. The original prose rows reach training through the mix step
  (``airoad data mix --inputs x_md.jsonl:3 ... example_train.jsonl:1``), so copying unchanged rows
  here would only repeat them and water the nudge down (a slice that was mostly unchanged prose once
  left a tuned model using FEWER lists than its base). Only the final answer changes.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from airoad.core.base.errors import UserError
from airoad.core.base.io import write_jsonl
from airoad.core.base.options import count_opt, opt, overwrite_opt, seed_opt
from airoad.core.data.chat_data import read_rows, seeded_subset, to_conversation
from airoad.data_tools.common import chatml_row
from airoad.data_tools.markdown_rewrite import (
    CODE,
    LAYOUT,
    REQUESTED,
    REWRITTEN,
    SHORT,
    STRUCTURED,
    restructure,
)

# Why an answer is not in the slice, in the order classify tests them (the printed order).
SKIP_REASONS = {
    STRUCTURED: "already structured (a list or heading)",
    CODE: "code",
    LAYOUT: "verse or table (laid out in lines)",
    REQUESTED: "requested text (a story, rewrite, translation)",
    SHORT: "too short (under 3 sentences)",
}


@dataclass
class SliceConfig:
    dataset_path: str | None = opt(
        None,
        "Input JSONL (ChatML and/or Alpaca rows), validated as for training.",
        io="input",
        required="the JSONL file to slice",
    )
    out: str | None = opt(
        None,
        "Output ChatML JSONL to write (rewritten conversations only).",
        io="out_file",
        required="the JSONL file to write",
    )
    n: int = count_opt("rewritten conversations", 60, " 60: a slice to mix into training, not all of it.")
    seed: int = seed_opt("Seed for the pick: the same seed gives a byte-identical file.")
    overwrite: bool = overwrite_opt()


@dataclass
class Slice:
    """What build_slice found: the rows to write, the skipped counts per reason, the input's size
    and how many of its conversations could be rewritten (``len(rows) == min(limit, rewritable)``)."""

    rows: list[dict]
    skipped: Counter
    total: int
    rewritable: int


def rewrite_last_answer(messages: list[dict[str, str]]) -> tuple[str, list[dict[str, str]]]:
    """(kind, messages): a copy with the final assistant answer restructured, or unchanged (kind
    says why); the question is the last user turn."""
    msgs = [dict(m) for m in messages]
    question = next((m["content"] for m in reversed(msgs) if m["role"] == "user"), "")
    kind, text = restructure(question, msgs[-1]["content"])
    msgs[-1]["content"] = text
    return kind, msgs


def build_slice(cfg: SliceConfig) -> Slice:
    """The slice of ``cfg`` (see the module contract). Raises UserError for bad input rows or an
    input with nothing to rewrite (the core has checked --out)."""
    rows = read_rows(cfg.dataset_path or "")
    skipped: Counter = Counter()
    candidates = []
    for n, row in rows:
        kind, msgs = rewrite_last_answer(to_conversation(row, f"{cfg.dataset_path}:{n}", None).messages)
        if kind == REWRITTEN:
            candidates.append(chatml_row(msgs))
        else:
            skipped[kind] += 1
    if not candidates:
        why = ", ".join(f"{skipped[k]} {SKIP_REASONS[k].split(' (')[0]}" for k in SKIP_REASONS if skipped[k])
        raise UserError(
            f"--dataset_path {cfg.dataset_path}: no final answer can be rewritten into Markdown ({why}); "
            "give a file with prose answers of three or more sentences"
        )
    # Seeded over the candidates only, so --n counts rewritten rows; sorted, so file order stays.
    picked = seeded_subset(candidates, cfg.n, cfg.seed)
    return Slice(picked, skipped, len(rows), len(candidates))


def run(cfg: SliceConfig, inv: object = None) -> Slice:
    """Build the slice, write it, print what was picked and what was skipped and why."""
    s = build_slice(cfg)
    write_jsonl(cfg.out, s.rows)
    print(
        f"markdown-slice: {s.rewritable} of {s.total} conversations in {cfg.dataset_path} can be rewritten into Markdown"
    )
    for kind, why in SKIP_REASONS.items():
        print(f"  skipped {s.skipped[kind]:>4}  {why}")
    if 0 < cfg.n < s.rewritable:
        print(f"picked {len(s.rows)} of the {s.rewritable} rewritable (--n {cfg.n}, seed {cfg.seed})")
    elif cfg.n > s.rewritable:
        print(f"picked all {s.rewritable} rewritable: --n {cfg.n} asked for more than the file has")
    else:
        print(f"picked all {s.rewritable} rewritable")
    print(f"wrote {len(s.rows)} rewritten conversations to {cfg.out}")
    return s
