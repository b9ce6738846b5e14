"""Options of `airoad probe` (no torch).

``--config FILE`` is the *train* YAML, so it is not an option of this schema: :mod:`airoad.probe.run`
takes it (and merges repeated ``--set``) out of argv before :func:`airoad.core.base.options.load_config`
parses the rest. The decoding options are :class:`airoad.infer.schema.Generation`'s, declared once
there, and are handed to `airoad compare` and `airoad eval` as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

from airoad.core.base.options import opt, seed_opt
from airoad.core.base.textargs import regex_problems
from airoad.infer.schema import Generation

DEV_PROMPTS = "data/sft/example_dev.jsonl"
SHOWN_ANSWERS = 3  # side-by-side answers on the page


@dataclass
class ProbeConfig(Generation):
    prompts: str = opt(
        DEV_PROMPTS,
        "Dev prompts for compare and eval (any prompt file `airoad eval --prompts` reads: ChatML, Alpaca "
        'or {"prompt": ...} rows).',
    )
    n: int = opt(24, "Prompts of --prompts scored by eval (seeded subset, in file order; 0 = all).", min=0)
    compare_n: int = opt(
        SHOWN_ANSWERS,
        f"Prompts of --prompts answered side by side by compare; the report shows the first {SHOWN_ANSWERS}, "
        "probe_compare.md all of them.",
        min=1,
    )
    general_prompts: str | None = opt(
        None,
        "A second prompt file, unlike the training data (e.g. data/eval/general_prompts.jsonl), scored by "
        "eval too: drift on it says how far the tune moved the model away from its data.",
    )
    general_n: int = opt(24, "Prompts of --general_prompts scored (seeded subset; 0 = all).", min=0)
    expect: str | None = opt(
        None,
        "Regex (Python re.search) a good answer contains, e.g. '####\\s*-?\\d'; adds pct_expect to the table.",
    )
    seed: int = seed_opt("Seed for the prompt subsets and for sampling (with --temperature > 0).")
    set: list[str] = opt(
        [],
        "Train overrides KEY=VALUE, passed to `airoad train` as --KEY VALUE (repeatable: "
        "--set max_steps=20 --set output_dir=outputs/p2); any train config key.",
        metavar="KEY=VALUE",
    )

    def validate(self) -> list[str]:
        return regex_problems("--expect", self.expect)
