"""Options of `airoad probe` (no torch).

``--config FILE`` is the *train* YAML the probe runs (as `airoad train --config FILE` takes it), so
this schema declares ``config`` itself (:func:`airoad.core.base.options.owns_config`): the probe's
own options are flags. The decoding options are :class:`airoad.infer.schema.Generation`'s, declared
once there, and are handed to `airoad compare` and `airoad eval` as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

from airoad.core.base.options import count_opt, opt, seed_opt
from airoad.core.base.textargs import regex_problems
from airoad.infer.schema import Generation

SHOWN_ANSWERS = 3  # side-by-side answers on the page


@dataclass
class ProbeConfig(Generation):
    config: str | None = opt(
        None,
        "The train YAML, as `airoad train --config FILE` takes it (its keys can be changed with --set).",
        io="input",
        metavar="FILE",
        required="the train YAML, e.g. --config configs/slm/qwen05b_lora_fast_plain.yaml",
    )
    prompts: str | None = opt(
        None,
        "Dev prompts for compare and eval (any prompt file `airoad eval --prompts` reads: ChatML, Alpaca "
        "or {\"prompt\": ...} rows). Default: the run's dev set (its dev_path), else airoad's bundled prompts.",
        io="input",
    )
    n: int = count_opt(
        "prompts for eval to score", 24, " 24: a probe is a quick look; `airoad eval` scores all."
    )
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
        io="input",
    )
    general_n: int = count_opt("--general_prompts for eval to score", 24, " 24, as --n.")
    expect: str | None = opt(
        None,
        "Regex (Python re.search) a good answer contains, e.g. '####\\s*-?\\d'; adds pct_expect to the table.",
    )
    seed: int = seed_opt("Seed for the prompt subsets and for sampling (with --temperature > 0).")
    set: list[str] = opt(
        [],
        "Train overrides KEY=VALUE, passed to `airoad train` as --KEY VALUE (--set max_steps=20 "
        "output_dir=outputs/p2, or --set repeated); any train config key.",
        metavar="KEY=VALUE",
    )

    def validate(self) -> list[str]:
        return regex_problems("--expect", self.expect)
