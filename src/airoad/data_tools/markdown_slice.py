"""`airoad data markdown-slice`: a seeded subset whose final answers are rewritten into Markdown.

    airoad data markdown-slice --infile data/sft/example_train.jsonl --out data/sft/x_md.jsonl --limit 60 [--seed 42]

Picks up to ``limit`` conversations (a seeded random subset, file order kept, the same pick as
``ablate_examples`` in training), rewrites each final assistant answer with
:func:`airoad.data_tools.markdown_rewrite.restructure` and writes every picked conversation as
ChatML: rewritten ones changed, code, already structured and kept-as-is answers unchanged.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from airoad.core.chat_data import Conversation, DataError, read_rows, seeded_subset, to_conversation
from airoad.core.config import opt, seed_opt
from airoad.core.errors import UserError
from airoad.core.io import write_jsonl
from airoad.data_tools.common import chatml_row, out_problems
from airoad.data_tools.markdown_rewrite import CODE, KEPT, REWRITTEN, STRUCTURED, restructure


@dataclass
class SliceConfig:
    infile: str | None = opt(None, "Input JSONL (ChatML and/or Alpaca rows), validated as for training.")
    out: str | None = opt(None, "Output ChatML JSONL to write.")
    limit: int = opt(60, "Conversations to pick (seeded random subset, file order kept; 0 = all).", min=0)
    seed: int = seed_opt(42, "Seed for the pick: the same seed gives a byte-identical file.")
    overwrite: bool = opt(False, "Replace --out if it exists.")

    def validate(self) -> list[str]:
        missing = [] if self.infile else ["--infile is required; give the JSONL file to slice"]
        return missing + ([] if self.out else ["--out is required; give the JSONL file to write"])


def rewrite_last_answer(conv: Conversation) -> tuple[str, list[dict[str, str]]]:
    """(kind, messages): the conversation with its final assistant answer restructured (or unchanged)."""
    msgs = [dict(m) for m in conv.messages]
    question = next((m["content"] for m in reversed(msgs) if m["role"] == "user"), "")
    kind, text = restructure(question, msgs[-1]["content"])
    msgs[-1]["content"] = text
    return kind, msgs


def build_slice(cfg: SliceConfig) -> tuple[list[dict], Counter, int]:
    """(rows, counts per kind, rows in the input). Raises UserError for bad --out or input data."""
    problems = out_problems(cfg.out, [("--infile", cfg.infile)], cfg.overwrite)
    try:
        rows = read_rows(cfg.infile or "")
    except DataError as e:
        problems += e.problems
    if problems:
        raise UserError(problems)
    picked = seeded_subset(rows, cfg.limit, cfg.seed)  # the same pick as training's ablate_examples
    counts: Counter = Counter()
    out = []
    for n, row in picked:
        kind, msgs = rewrite_last_answer(to_conversation(row, f"{cfg.infile}:{n}", None))
        counts[kind] += 1
        out.append(chatml_row(msgs))
    return out, counts, len(rows)


def run(cfg: SliceConfig) -> Counter:
    """Build the slice, write it, print the counts; returns the counts per kind."""
    rows, counts, total = build_slice(cfg)
    write_jsonl(cfg.out, rows)
    print(f"markdown-slice: picked {len(rows)} of {total} conversations from {cfg.infile} (seed {cfg.seed})")
    print(f"  rewritten into Markdown:  {counts[REWRITTEN]}")
    print(f"  skipped as structured:    {counts[STRUCTURED]}")
    print(f"  skipped as code:          {counts[CODE]}")
    print(f"  kept as is:               {counts[KEPT]} (verse or tables, requested text, under 3 sentences)")
    print(f"wrote {len(rows)} rows to {cfg.out}")
    return counts


def main(argv: list[str]) -> int:
    from airoad.core.config import load_config

    cfg, _ = load_config(
        SliceConfig, argv, prog="airoad data markdown-slice", description=__doc__.splitlines()[0]
    )
    run(cfg)
    return 0
