"""The `airoad pref` config: the shared run keys (:class:`airoad.core.base.runkeys.RunKeys`, same names
and meaning as `airoad train`) plus the preference keys. Nothing here imports torch."""

from __future__ import annotations

from dataclasses import dataclass

from airoad.core.base import runkeys as core
from airoad.core.base.options import ADAPTERS_HELP, opt
from airoad.core.base.runkeys import redefault

METHODS = ("dpo", "orpo", "kto")
# DPO's loss variants as TRL 1.16's DPOConfig.loss_type names them (trl/trainer/dpo_trainer.py).
DPO_LOSSES = (
    "sigmoid",
    "hinge",
    "ipo",
    "exo_pair",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
    "sft",
    "sigmoid_norm",
)
KTO_LOSSES = ("kto", "apo_zero_unpaired")
# How the reference is computed, not what: a resumed run may switch it.
PER_INVOCATION = core.PER_INVOCATION | {"ref_cache"}


@dataclass
class PrefConfig(core.RunKeys):
    method: str = opt(
        "dpo",
        "dpo: pairs, against a frozen reference; orpo: pairs, no reference (SFT on chosen + odds-ratio "
        "penalty); kto: single answers labelled good/bad (pair rows give one of each).",
        choices=METHODS,
    )
    init_adapter: str | None = opt(
        None,
        ADAPTERS_HELP + " Its adapter is the starting policy and (dpo/kto) the reference; the LoRA "
        "keys then come from it. Unset: a fresh LoRA/DoRA on base_model, and the reference is the base.",
        io="adapters",
    )
    dataset_path: str = redefault(
        "dataset_path",
        "data/pref/example_pairs.jsonl",
        "Preference JSONL: pair rows (prompt, chosen, rejected) or, for kto, single answers with a "
        "label (docs/preference.md).",
    )
    dev_path: str | None = redefault(
        "dev_path", None, "Optional dev JSONL of the same rows, evaluated every eval_every_steps."
    )
    output_dir: str = redefault("output_dir", "outputs/pref")
    learning_rate: float = redefault("learning_rate", 5e-5)
    max_steps: int = redefault("max_steps", 40)
    # TRL turns dropout off in preference training (policy and reference are one network); LoRA
    # dropout stays the user's choice, off by default for the same reason.
    lora_dropout: float = redefault("lora_dropout", 0.0)
    # A pair is two sequences (and online DPO/KTO add the reference's forward): with checkpointing
    # the peak stays below TRL's default at ~2x its speed; off: +25 % speed, +0.9 GB
    # (bench/bench_pref.py, BENCHMARKS.md).
    gradient_checkpointing: bool = redefault("gradient_checkpointing", True)
    beta: float = opt(
        0.1,
        "Strength of the pull towards the reference (dpo/kto: the reward scale); orpo: weight of the "
        "odds-ratio term.",
        gt=0,
    )
    loss_type: str = opt(
        "sigmoid",
        "dpo's loss variant, as TRL names it (sigmoid = the DPO paper's); kto: kto or apo_zero_unpaired "
        "(kto's sigmoid default maps to kto).",
        choices=DPO_LOSSES + KTO_LOSSES,
    )
    label_smoothing: float = opt(
        0.0, "dpo: assumed share of flipped labels (robust, exo_pair, aot losses).", min=0, max=0.5
    )
    desirable_weight: float = opt(1.0, "kto: weight of the desirable (label true) answers' loss.", gt=0)
    undesirable_weight: float = opt(1.0, "kto: weight of the undesirable (label false) answers' loss.", gt=0)
    max_prompt_len: int = opt(
        256,
        "Prompt tokens kept (the end: the question and the assistant header) when a row is longer; "
        "0 = no prompt cap (a row whose prompt fills max_seq_len is then dropped).",
        min=0,
    )
    ref_cache: str = opt(
        "auto",
        "Reference log-probs computed once before training and reused (auto: when the run sees its "
        "rows twice or more); off: one reference forward per step.",
        choices=("auto", "on", "off"),
    )

    def validate(self) -> list[str]:
        problems = super().validate()
        if self.max_prompt_len >= self.max_seq_len:
            problems.append(
                f"max_prompt_len {self.max_prompt_len} leaves no room for an answer in max_seq_len "
                f"{self.max_seq_len}; make max_prompt_len smaller than max_seq_len"
            )
        if self.method == "kto" and self.loss_type in DPO_LOSSES[1:]:
            problems.append(
                f"loss_type {self.loss_type} is a dpo loss; method kto takes {' or '.join(KTO_LOSSES)}"
            )
        if self.method in ("dpo", "orpo") and self.loss_type in KTO_LOSSES:
            problems.append(
                f"loss_type {self.loss_type} is a kto loss; use method: kto, or a dpo loss such as sigmoid"
            )
        if self.method == "orpo" and self.loss_type != "sigmoid":
            problems.append(f"loss_type {self.loss_type}: orpo has one loss; drop loss_type for method orpo")
        if self.method == "kto" and self.kto_loss == "kto" and self.per_device_batch_size < 2:
            problems.append(
                "method kto needs per_device_batch_size 2 or more: its KL estimate pairs each answer with "
                "another row's prompt in the same batch (TRL's KTOTrainer); set per_device_batch_size: 2"
            )
        return problems

    @property
    def kto_loss(self) -> str:
        """The KTO loss: loss_type, with the shared default (sigmoid) meaning kto."""
        return "kto" if self.loss_type == "sigmoid" else self.loss_type
