"""Choices and config keys that every command's schema shares (training lanes and inference tools
alike). Nothing here imports torch.

:class:`RunKeys` declares, once, the keys every training lane takes with the same name and meaning
(model and data, run directory, steps/batch/optimiser/schedule, stops and time cap, adapters,
logging, hardware); a lane's schema subclasses it and adds its own keys. :func:`redefault` gives a
lane its own default for a shared key without declaring the key again.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from airoad.core.base.options import opt, overwrite_opt, seed_opt

DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("auto", "float32", "bfloat16", "float16")
SCHEDULERS = ("cosine", "linear", "constant", "constant_with_warmup")
TARGET_MODES = ("attn", "attn_mlp", "auto")

# Keys that say how this invocation runs, not what the run computes: `--resume` may change them.
# Every other key must match the run being resumed, or its step count, LR and data order would not.
# A lane adds its own (SFT: the teacher-cache keys).
PER_INVOCATION = frozenset(
    {
        "output_dir",
        "overwrite",
        "resume",
        "save_every_steps",
        "max_minutes",
        "print_every_steps",
        "report_to",
        "device",
        "dtype",
        "dev_path",
        "loss_chunk_size",
        "gradient_checkpointing",
        "eval_every_steps",
        "patience",
        "min_delta",
        "early_stop_min_steps",
        "loss_smoothing",
        "eval_early_stop",
        "eval_patience",
    }
)


def redefault(field: str, default: Any, help: str | None = None) -> Any:
    """The shared key ``field`` of :class:`RunKeys` with another default (and ``help``, where the
    lane's wording differs) and the same checks, for a lane schema's class body:
    ``output_dir: str = redefault("output_dir", "outputs/pref")``."""
    f = next(f for f in dataclasses.fields(RunKeys) if f.name == field)
    return opt(default, **{**dict(f.metadata), **({"help": help} if help else {})})


@dataclass
class RunKeys:
    # --- model and data
    base_model: str = opt(
        "Qwen/Qwen2.5-0.5B-Instruct", "Hub id or local path of the chat model to tune.", io="base"
    )
    dataset_path: str = opt(
        "data/sft/example_train.jsonl", "Training JSONL (ChatML and/or Alpaca rows).", io="input"
    )
    dev_path: str | None = opt(None, "Optional dev JSONL, evaluated every eval_every_steps.", io="input")
    system_prompt: str | None = opt(
        None,
        "System turn for Alpaca rows and ChatML rows without one; unset keeps the chat template's default.",
    )
    max_seq_len: int = opt(512, "Tokens per example; longer examples are truncated.", min=16)
    trust_remote_code: bool = opt(False, "Allow the model repo to run its own Python code (off: safer).")
    load_in_4bit: bool = opt(False, "QLoRA: load the frozen base in 4-bit NF4 (needs CUDA and bitsandbytes).")
    liger: bool = opt(
        False,
        "CUDA only: Liger's fused Triton kernels for RoPE, RMSNorm and SwiGLU (pip install "
        "liger-kernel). The loss needs none: airoad's head already runs chunked on trained tokens.",
    )
    # --- run
    output_dir: str = opt("outputs/run", "Directory for the adapter, logs and metrics.", io="run_dir")
    overwrite: bool = overwrite_opt()  # a run: start over (its files and checkpoints; see resume)
    resume: bool = opt(
        False,
        "Continue the run in output_dir from its latest checkpoint: step, learning rate, data order "
        "and RNG carry on as if it had never stopped (needs save_every_steps > 0 in that run).",
    )
    save_every_steps: int = opt(
        0,
        "Save a resumable checkpoint (adapter, optimizer, scheduler, RNG, data position) to "
        "output_dir/checkpoints every this many steps, and when a run is interrupted or hits "
        "max_minutes; the last 2 are kept (0 = off).",
        min=0,
    )
    seed: int = seed_opt("Seed for data order, subset choice and adapter init.")
    max_steps: int = opt(100, "Optimizer steps to train.", min=1)
    epochs: float = opt(
        0.0,
        "Run length in passes over the training examples instead (0 = use max_steps): max_steps becomes "
        "ceil(epochs x examples / examples per step); a --max_steps flag wins over epochs from a YAML.",
        min=0,
        max=1000,
    )
    max_minutes: float = opt(
        0.0, "Stop cleanly after this many minutes of wall time, setup included (0 = no cap).", min=0
    )
    per_device_batch_size: int = opt(1, "Examples per forward pass.", min=1)
    grad_accum: int = opt(4, "Forward passes per optimizer step.", min=1)
    learning_rate: float = opt(2e-4, "Peak learning rate.", gt=0)
    lr_scheduler: str = opt("cosine", "Learning-rate schedule after warmup.", choices=SCHEDULERS)
    warmup_ratio: float = opt(0.05, "Fraction of max_steps spent warming up the learning rate.", min=0, max=1)
    weight_decay: float = opt(0.0, "AdamW weight decay on adapter weights.", min=0)
    max_grad_norm: float = opt(1.0, "Gradient clipping norm (0 disables).", min=0)
    gradient_checkpointing: bool = opt(False, "Recompute activations in backward: less memory, ~30% slower.")
    loss_chunk_size: int = opt(
        256, "Trained positions per output-head chunk: bounds logits memory to chunk x vocab floats.", min=1
    )
    # --- adapters
    lora_r: int = opt(16, "LoRA rank.", gt=0)
    lora_alpha: float = opt(32.0, "LoRA scale numerator (scale = alpha / r).", gt=0)
    lora_dropout: float = opt(
        0.05, "Dropout on the LoRA input (0 lets DoRA reuse the base output: faster).", min=0, max=0.9
    )
    lora_target_mode: str = opt(
        "attn_mlp",
        "attn = q,k,v,o projections; attn_mlp adds gate,up,down; auto detects the architecture's projections.",
        choices=TARGET_MODES,
    )
    use_dora: bool = opt(False, "Weight-decomposed LoRA (DoRA) instead of plain LoRA.")
    # --- early stopping and evaluation
    patience: int = opt(
        0, "Plateau stop: steps without a min_delta gain in smoothed loss (0 disables).", min=0
    )
    min_delta: float = opt(0.01, "Smallest smoothed-loss gain that counts as progress.", min=0)
    early_stop_min_steps: int = opt(20, "No early stop (plateau or eval) before this step.", min=0)
    loss_smoothing: float = opt(
        0.9, "EMA factor for the smoothed training loss (0 = raw loss).", min=0, max=0.999
    )
    eval_every_steps: int = opt(20, "Evaluate dev loss every this many steps (needs dev_path).", min=1)
    eval_early_stop: bool = opt(
        False, "Stop when dev loss has not improved by min_delta for eval_patience evals."
    )
    eval_patience: int = opt(
        3, "Evaluations without dev-loss gain before eval_early_stop stops the run.", min=1
    )
    # --- logging and hardware
    print_every_steps: int = opt(5, "Print a live line every this many steps.", min=1)
    report_to: str = opt("none", "Extra trackers for the HF Trainer (none, tensorboard, wandb, ...).")
    device: str = opt("auto", "Where to train (auto: cuda > mps > cpu).", choices=DEVICES)
    dtype: str = opt(
        "auto",
        "Training dtype (auto: bf16 on CUDA that supports it and on CPUs with bf16 units, "
        "AIROAD_CPU_BF16=0/1 overrides the CPU's; else fp32).",
        choices=DTYPES,
    )

    def validate(self) -> list[str]:
        """Cross-field checks; one line per problem."""
        problems = []
        if self.resume and self.overwrite:
            problems.append(
                "`resume` and `overwrite` are both set; resume continues the run in output_dir, "
                "overwrite starts it over: pick one"
            )
        if self.eval_early_stop and not self.dev_path:
            problems.append(
                "`eval_early_stop: true` needs `dev_path`; set dev_path or turn eval_early_stop off"
            )
        return problems
