"""The `airoad train` config: the shared run keys (:class:`airoad.core.base.runkeys.RunKeys`) plus SFT's
own, every option declared once with its help text and checks.

These names are the public interface (YAML keys and `--<name>` flags). Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from airoad.core.base import runkeys as core
from airoad.core.base.options import opt

# The teacher cache is how KL is computed, not what: a resumed run may switch it.
PER_INVOCATION = core.PER_INVOCATION | {"kl_cache", "kl_cache_dir"}


@dataclass
class TrainConfig(core.RunKeys):
    ablate_examples: int = opt(0, "Train on a seeded random subset of this many examples (0 = all).", min=0)
    # --- KL regularisation towards the base model
    kl_lambda: float = opt(0.0, "Weight of KL(base || tuned) on trained tokens (0 disables).", min=0)
    kl_tau: float = opt(1.0, "Temperature of both distributions in the KL term.", gt=0)
    # --- KL anchors: general conversations trained on KL alone
    kl_anchor_path: str | None = opt(
        None,
        "JSONL of general conversations (ChatML/Alpaca) mixed into training with KL(base || tuned) on "
        "their assistant tokens and no CE: holds the tune near its base where the task data does not reach.",
        io="input",
    )
    kl_anchor_lambda: float = opt(
        1.0,
        "Weight of the anchors' mean KL per anchor token, added to the task's mean loss per trained token.",
        gt=0,
    )
    kl_anchor_examples: int = opt(
        0, "Mix in a seeded random subset of this many anchor conversations (0 = all).", min=0
    )
    kl_cache: str = opt(
        "auto",
        "Teacher cache for KL (task and anchors): top-k base log-probs computed once and reused across epochs and runs "
        "(auto: on when the run sees its examples twice or more).",
        choices=("auto", "on", "off"),
    )
    kl_topk: int = opt(
        64, "Tokens per position kept by the teacher cache (the rest is one tail bucket).", min=1
    )
    kl_cache_dir: str | None = opt(None, "Where teacher caches live (default ~/.cache/airoad/teacher_cache).")
    packing: bool = opt(
        True, "Batch > 1: pack examples into one row with per-sequence positions (no padding)."
    )
