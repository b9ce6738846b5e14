"""`airoad data <tool> ...`: the data tools; each tool's module is imported only when it runs.

airoad data stats data/sft/example_train.jsonl
airoad data markdown-slice --infile data/sft/example_train.jsonl --out data/sft/x_md.jsonl --limit 60
airoad data neg-guard --out data/sft/x_neg.jsonl --n 40
airoad data mix --inputs a.jsonl:3 b.jsonl:1 --out mix.jsonl --shuffle --dedupe
airoad data pairs --infile data/sft/example_train.jsonl --adapters outputs/qwen05b_fast_plain --out data/pref/my_pairs.jsonl --n 64

`pairs` generates with a model, so it lives with the generation code (airoad.infer.pairs); the
table names modules as strings, so this package still imports no other tool.
"""

from __future__ import annotations

# name -> (module with main(argv) -> int, one-line help)
TOOLS: dict[str, tuple[str, str]] = {
    "stats": (
        "airoad.data_tools.stats",
        "rows, formats, roles, turns, token lengths, truncation, duplicates",
    ),
    "markdown-slice": (
        "airoad.data_tools.markdown_slice",
        "seeded subset with plain answers rewritten into Markdown (heading, lists)",
    ),
    "neg-guard": ("airoad.data_tools.neg_guard", "ChatML set baiting chat-tag artifacts, with clean answers"),
    "mix": (
        "airoad.data_tools.mix",
        "weighted mix of JSONL files (PATH:WEIGHT), optional dedupe and shuffle",
    ),
    "pairs": (
        "airoad.infer.pairs",
        "preference pairs: the data's last answer chosen, the model's own answer rejected",
    ),
}


def _guarded(module: object, rest: list[str]) -> int:
    from airoad.core.base.commands import run_guarded

    def go() -> int:
        try:
            return module.main(rest)
        except SystemExit as e:  # argparse's --help exits; report its status instead
            return e.code if isinstance(e.code, int) else 0

    return run_guarded(go)


def main(argv: list[str]) -> int:
    """Entry point of `airoad data`; returns the exit status (2 with `error:` lines for user mistakes)."""
    from airoad.core.base.commands import dispatch

    return dispatch(TOOLS, argv, "airoad data", "tool", _guarded, what="data tool")
