"""Options of `airoad merge`, `airoad compare`, `airoad eval` and `airoad data pairs`: one dataclass
per command (no torch).

Compare and eval share :class:`GenerateOptions` (where the models and prompts come from, how to
decode); each adds its own report options. :class:`PairsConfig` reads conversations instead of
prompts and decodes with the same options.
"""

from __future__ import annotations

from dataclasses import dataclass

from airoad.core.base.options import ADAPTERS_HELP, BASE_HELP, count_opt, opt, overwrite_opt, seed_opt
from airoad.core.base.runkeys import DEVICES, DTYPES
from airoad.core.base.textargs import regex_problems


@dataclass
class MergeConfig:
    adapters: str | None = opt(
        None, ADAPTERS_HELP, io="adapters", required="the run's output_dir (or a PEFT adapter dir)"
    )
    base_model: str | None = opt(None, BASE_HELP, io="base")
    out: str | None = opt(
        None,
        "Directory for the merged checkpoint.",
        io="out_dir",
        required="the directory for the merged checkpoint",
    )
    overwrite: bool = overwrite_opt()
    dtype: str = opt(
        "auto",
        "dtype of the saved weights (the merge itself always runs in float32); auto = the base checkpoint's.",
        choices=DTYPES,
    )
    device: str = opt(
        "cpu",
        "Where to run the merge and its check. cpu by default, unlike the generating commands' auto: a "
        "0.5B model merges and checks in seconds to a minute there, leaving the GPU free (cpu needs ~4 bytes x params of RAM).",
        choices=DEVICES,
    )
    tolerance: float = opt(
        1e-2,
        "Refuse to write when merged and base+adapter fp32 logits differ by more than this (max |diff|; "
        "rounding stays far below, a wrong merge differs by about the adapter's own effect).",
        gt=0,
    )
    trust_remote_code: bool = opt(False, "Allow the model repo to run its own Python code (off: safer).")


@dataclass
class Generation:
    """How a model writes answers: the keys every generating tool (compare, eval, data pairs) shares."""

    max_new_tokens: int = opt(256, "Most tokens generated per answer.", min=1)
    temperature: float = opt(0.0, "0 = greedy; > 0 samples at this temperature (seeded by --seed).", min=0)
    batch_size: int = opt(8, "Prompts generated together (left-padded).", min=1)
    device: str = opt("auto", "Where to run (auto: cuda > mps > cpu).", choices=DEVICES)
    dtype: str = opt(
        "auto", "Model dtype (auto: bf16 where the hardware runs it fast, else fp32).", choices=DTYPES
    )
    trust_remote_code: bool = opt(False, "Allow the model repo to run its own Python code (off: safer).")


@dataclass
class GenerateOptions(Generation):
    base_model: str | None = opt(
        None, BASE_HELP + " Alone (no --adapters) it is sampled by itself: one column.", io="base"
    )
    adapters: str | None = opt(None, ADAPTERS_HELP + " Adds the tuned side.", io="adapters")
    prompts: str | None = opt(
        None,
        'JSONL of prompts: ChatML/Alpaca rows (first user turn, plus the row\'s own system turn) or {"prompt": ...} '
        "rows. Default: the run's dev set (its dev_path), else airoad's bundled prompts.",
        io="input",
    )
    n: int = count_opt("prompts")
    system_prompt: str | None = opt(
        None,
        'System turn for prompts without one; default: the run\'s system_prompt; "" = the chat template default.',
    )
    seed: int = seed_opt("Seed for sampling and for the --n subset.")
    overwrite: bool = overwrite_opt()

    def validate(self) -> list[str]:
        if not self.base_model and not self.adapters:
            return ["give --adapters (a run's output_dir) and/or --base_model (a model to sample)"]
        return []


@dataclass
class CompareConfig(GenerateOptions):
    out: str | None = opt(
        None,
        "Report path: DIR writes DIR/compare.md and DIR/compare.json; FILE.md or FILE.json writes that one.",
    )


@dataclass
class EvalConfig(GenerateOptions):
    banned: str | None = opt(
        None,
        "Text file of banned strings, one per line ('#' = comment); default: built-in list.",
        io="input",
    )
    out: str | None = opt(
        None, "JSON report (summary per side, drift, every sample); must end in .json.", io="out_file"
    )
    expect: str | None = opt(
        None,
        "Regex (Python re.search) an answer should contain, e.g. '####\\s*-?\\d' for a GSM8K answer line; "
        "adds pct_expect per side: the percent of answers it matches.",
    )

    def validate(self) -> list[str]:
        problems = super().validate()
        if self.out and not self.out.endswith(".json"):
            problems.append(f"--out {self.out}: the report is JSON; give a path ending in .json")
        return problems + regex_problems("--expect", self.expect)


@dataclass
class PairsConfig(Generation):
    dataset_path: str | None = opt(
        None,
        "SFT JSONL (ChatML and/or Alpaca rows, validated as for training): prompts and chosen answers.",
        io="input",
        required="the SFT JSONL to pair",
    )
    base_model: str | None = opt(
        None, BASE_HELP + " Alone (no --adapters): the base model writes the rejected answers.", io="base"
    )
    adapters: str | None = opt(
        None, ADAPTERS_HELP + " The tuned model writes the rejected answers.", io="adapters"
    )
    out: str | None = opt(
        None,
        "Output JSONL of preference pairs (prompt, chosen, rejected).",
        io="out_file",
        required="the JSONL file to write",
    )
    n: int = count_opt("conversations")
    reject_unless: str | None = opt(
        None,
        "Regex (Python re.search): keep only pairs whose model answer does NOT match it, e.g. "
        "'####\\s*-?\\d' keeps GSM8K answers without an answer line; answers with a banned string are always kept.",
    )
    system_prompt: str | None = opt(
        None,
        "System turn for conversations without one, written into the prompt; default: the run's "
        'system_prompt; "" = the chat template default.',
    )
    seed: int = seed_opt("Seed for the --n subset and for sampling: same seed, same file.")
    overwrite: bool = overwrite_opt()

    def validate(self) -> list[str]:
        problems = []
        if not self.base_model and not self.adapters:
            problems.append(
                "give --adapters (a run's output_dir) and/or --base_model (the model that answers)"
            )
        return problems + regex_problems("--reject_unless", self.reject_unless)


@dataclass
class TalkOptions:
    """What `airoad chat` and `airoad serve` share: the model (one in memory, base and tuned sides)
    and how it answers by default."""

    adapters: str | None = opt(
        None,
        ADAPTERS_HELP
        + " The tuned side; the first argument is the same as --adapters (`airoad chat RUN_DIR`).",
        io="adapters",
    )
    base_model: str | None = opt(
        None, BASE_HELP + " Alone (no --adapters): the base model is the only side.", io="base"
    )
    system_prompt: str | None = opt(
        None,
        'System turn for a chat that has none; default: the run\'s system_prompt; "" = the chat template default.',
    )
    max_new_tokens: int = opt(512, "Most tokens generated per answer.", min=1)
    temperature: float = opt(0.0, "0 = greedy; > 0 samples at this temperature (seeded by --seed).", min=0)
    top_p: float = opt(
        1.0, "With --temperature > 0: sample from the smallest set of tokens holding this mass.", gt=0, max=1
    )
    seed: int = seed_opt("Seed of sampling: the n-th answer is seeded with seed + n.")
    device: str = opt("auto", "Where to run (auto: cuda > mps > cpu).", choices=DEVICES)
    dtype: str = opt(
        "auto", "Model dtype (auto: bf16 where the hardware runs it fast, else fp32).", choices=DTYPES
    )
    trust_remote_code: bool = opt(False, "Allow the model repo to run its own Python code (off: safer).")

    def validate(self) -> list[str]:
        if not self.base_model and not self.adapters:
            return [
                "give a run dir (the first argument, or --adapters) and/or --base_model (a model to talk to)"
            ]
        return []


@dataclass
class ChatConfig(TalkOptions):
    side: str = opt(
        "tuned",
        "Which side answers first (/base and /tuned switch; base alone: base).",
        choices=("tuned", "base"),
    )


LOOPBACK = ("127.0.0.1", "::1", "localhost")


@dataclass
class ServeConfig(TalkOptions):
    host: str = opt(
        "127.0.0.1", "Address to bind. Loopback by default; any other address requires --api_key."
    )
    port: int = opt(8000, "Port to bind (0: any free port, printed at start).", min=0, max=65535)
    api_key: str | None = opt(
        None,
        "Bearer token every API request must carry (Authorization: Bearer KEY); required off loopback.",
    )
    queue: int = opt(
        8, "Requests waiting beside the one being answered; more are refused with HTTP 429.", min=1, max=1024
    )
    max_body_kb: int = opt(256, "Largest request body accepted, in KiB (larger: HTTP 400).", min=1, max=65536)

    def validate(self) -> list[str]:
        problems = super().validate()
        if self.host not in LOOPBACK and not self.api_key:
            problems.append(
                f"--host {self.host}: binding beyond this machine needs --api_key KEY (every request then "
                "carries it as a bearer token); or keep --host 127.0.0.1"
            )
        if self.api_key is not None and len(self.api_key) < 8:
            problems.append("--api_key: use at least 8 characters")
        return problems
