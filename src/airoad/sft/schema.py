"""The `airoad train` config: the shared run keys (:class:`airoad.core.schema.RunKeys`) plus SFT's
own, every option declared once with its help text and checks.

These names are the public interface (YAML keys and `--<name>` flags). Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from airoad.core import schema as core
from airoad.core.config import opt

# The teacher cache is how KL is computed, not what: a resumed run may switch it.
PER_INVOCATION = core.PER_INVOCATION | {"kl_cache", "kl_cache_dir"}


@dataclass
class TrainConfig(core.RunKeys):
    ablate_examples: int = opt(0, "Train on a seeded random subset of this many examples (0 = all).", min=0)
    # --- KL regularisation towards the base model
    kl_lambda: float = opt(0.0, "Weight of KL(base || tuned) on trained tokens (0 disables).", min=0)
    kl_tau: float = opt(1.0, "Temperature of both distributions in the KL term.", gt=0)
    kl_cache: str = opt(
        "auto",
        "Teacher cache for KL: top-k base log-probs computed once and reused across epochs and runs "
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
