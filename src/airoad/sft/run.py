"""`airoad train`: config -> data -> model + adapters -> trainer (+callbacks) -> artifacts.

    airoad train --config configs/slm/qwen05b_lora_fast_plain.yaml [--max_steps 20 ...]

Data and config are checked before any model weights load. Artifacts in ``output_dir``:
the adapter (adapter_config.json, adapter_model.safetensors, PEFT's README.md model card),
the tokenizer, run_config.yaml (resolved config; rerun with --config), run_info.json
(versions, seed, data sha256, device), train_log.csv/.json, time_metrics.json, loss_curve.png.
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from airoad.errors import UserError
from airoad.sft.data import DataError, Example, LoadStats, load_conversations, tokenize_all
from airoad.sft.schema import TrainConfig

RUN_FILES = (
    "adapter_config.json",
    "adapter_model.safetensors",
    "README.md",
    "run_config.yaml",
    "run_info.json",
    "train_log.csv",
    "train_log.json",
    "time_metrics.json",
    "loss_curve.png",
)


class RunError(UserError):
    """A user-fixable problem found while setting up a run (one line)."""


def check_output_dir(cfg: TrainConfig) -> Path:
    out = Path(cfg.output_dir)
    if out.exists() and not out.is_dir():
        raise RunError(f"output_dir {out} is a file; choose a directory path (--output_dir DIR)")
    if out.is_dir() and any(out.iterdir()) and not cfg.overwrite:
        raise RunError(
            f"output_dir {out} is not empty; pass --overwrite true to replace its run, or pick another --output_dir"
        )
    return out


def load_tokenizer(name: str, trust_remote_code: bool) -> Any:
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RunError(
            f"base_model {name!r}: cannot load its tokenizer ({first}); give a local model directory "
            "or a hub id that is in the local cache"
        ) from None
    if not getattr(tok, "chat_template", None):
        raise RunError(f"base_model {name!r} has no chat template; use a chat/instruct model")
    if not tok.is_fast:
        raise RunError(f"base_model {name!r} has no fast tokenizer (needed for exact loss masks)")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def read_data(cfg: TrainConfig) -> tuple[list, list, LoadStats, LoadStats | None]:
    """Validate the train and dev files (every problem of both at once, DataError). No tokenizer needed."""
    problems: list[str] = []
    convs, stats, dev_convs, dev_stats = [], LoadStats(), [], None
    try:
        convs, stats = load_conversations(cfg.dataset_path, cfg.system_prompt, cfg.ablate_examples, cfg.seed)
    except DataError as e:
        problems += e.problems
    if cfg.dev_path:
        try:
            dev_convs, dev_stats = load_conversations(cfg.dev_path, cfg.system_prompt)
        except DataError as e:
            problems += e.problems
    if problems:
        raise DataError(problems)
    return convs, dev_convs, stats, dev_stats


def build_examples(
    cfg: TrainConfig, tokenizer: Any, data: tuple
) -> tuple[list[Example], list[Example], LoadStats]:
    """Tokenize validated conversations; counts truncated/dropped into the stats."""
    convs, dev_convs, stats, dev_stats = data
    train = tokenize_all(tokenizer, convs, cfg.max_seq_len, stats)
    if not train:
        raise DataError(
            [
                f"{cfg.dataset_path}: no example keeps a trained token at max_seq_len={cfg.max_seq_len}; raise it"
            ]
        )
    dev = tokenize_all(tokenizer, dev_convs, cfg.max_seq_len, dev_stats) if dev_convs else []
    if dev_stats is not None:
        stats.extra["dev"] = dataclasses.asdict(dev_stats)
    return train, dev, stats


def load_model(cfg: TrainConfig, dtype: Any) -> Any:
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(
            cfg.base_model, dtype=dtype, trust_remote_code=cfg.trust_remote_code, use_safetensors=True
        )
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0]
        raise RunError(f"base_model {cfg.base_model!r}: cannot load weights ({first})") from None


def training_args(cfg: TrainConfig, device: str, dtype: Any, has_dev: bool) -> Any:
    import torch
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(Path(tempfile.gettempdir()) / "airoad-hf-trainer"),  # HF writes nothing: save "no"
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.per_device_batch_size,
        per_device_eval_batch_size=cfg.per_device_batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=int(round(cfg.warmup_ratio * cfg.max_steps)),
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm if cfg.max_grad_norm > 0 else None,
        logging_strategy="steps",
        logging_steps=1,
        eval_strategy="steps" if has_dev else "no",
        eval_steps=cfg.eval_every_steps,
        save_strategy="no",
        report_to=cfg.report_to,
        seed=cfg.seed,
        data_seed=cfg.seed,
        use_cpu=device == "cpu",
        bf16=device == "cuda" and dtype == torch.bfloat16,
        fp16=device == "cuda" and dtype == torch.float16,
        remove_unused_columns=False,
        dataloader_pin_memory=device == "cuda",
        disable_tqdm=True,
        ddp_find_unused_parameters=False,
    )


def train(cfg: TrainConfig, t_start: float | None = None, printer=print) -> tuple[Path, Any]:
    """Run one training job; returns (output directory, the finished trainer). Raises
    RunError/DataError/DeviceError (user mistakes, one line each) before any weights load."""
    t_start = t_start or time.time()
    from airoad.devices import pick_device, pick_dtype

    out = check_output_dir(cfg)
    device = pick_device(cfg.device)
    dtype = pick_dtype(device, cfg.dtype)
    data = read_data(cfg)  # user data errors surface before anything is loaded
    tokenizer = load_tokenizer(cfg.base_model, cfg.trust_remote_code)
    train_ex, dev_ex, stats = build_examples(cfg, tokenizer, data)
    printer(stats.line())
    if stats.extra.get("dev"):
        printer(f"dev:  {stats.extra['dev']['kept']} examples")
    return _fit(cfg, out, device, dtype, tokenizer, train_ex, dev_ex, stats, t_start, printer)


def _quiet_libraries() -> None:
    """Our live line is the progress report: silence weight-loading bars and known-harmless deprecations."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*", category=FutureWarning)


def _fit(cfg, out, device, dtype, tokenizer, train_ex, dev_ex, stats, t_start, printer) -> tuple[Path, Any]:
    from transformers import PrinterCallback, set_seed

    from airoad.sft import callbacks as cb
    from airoad.sft.artifacts import save_run
    from airoad.sft.lora import trainable_summary, wrap_with_adapters
    from airoad.sft.trainer import AiroadTrainer, Collator, ExampleDataset

    _quiet_libraries()
    set_seed(cfg.seed)
    model = wrap_with_adapters(load_model(cfg, dtype), cfg)
    if cfg.gradient_checkpointing:
        # Non-reentrant checkpointing needs no input grads, so frozen embeddings stay frozen.
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    trainable, total = trainable_summary(model)
    printer(
        f"model: {cfg.base_model} on {device} ({str(dtype).replace('torch.', '')}); "
        f"{'DoRA' if cfg.use_dora else 'LoRA'} r={cfg.lora_r} trainable {trainable:,} / {total:,} "
        f"({100 * trainable / total:.3f}%)"
    )
    state = cb.RunState(t_start=t_start, max_steps=cfg.max_steps)
    callbacks = [
        cb.LossLogger(state, out, flush_every=cfg.print_every_steps),
        cb.LivePrinter(state, cfg.print_every_steps, printer),
        cb.TimeLimit(state, cfg.max_minutes),
        cb.NonFiniteStop(state),
    ]
    if cfg.patience:
        callbacks.append(
            cb.PlateauStop(state, cfg.patience, cfg.min_delta, cfg.early_stop_min_steps, cfg.loss_smoothing)
        )
    if cfg.eval_early_stop:
        callbacks.append(
            cb.EvalPlateauStop(state, cfg.eval_patience, cfg.min_delta, cfg.early_stop_min_steps)
        )
    trainer = AiroadTrainer(
        model=model,
        args=training_args(cfg, device, dtype, bool(dev_ex)),
        train_dataset=ExampleDataset(train_ex),
        eval_dataset=ExampleDataset(dev_ex) if dev_ex else None,
        data_collator=Collator(tokenizer.pad_token_id, packing=cfg.packing),
        callbacks=callbacks,
        kl_lambda=cfg.kl_lambda,
        kl_tau=cfg.kl_tau,
        loss_chunk=cfg.loss_chunk_size,
    )
    trainer.remove_callback(PrinterCallback)  # our LivePrinter replaces its raw dict lines
    out.mkdir(parents=True, exist_ok=True)
    if cfg.kl_lambda > 0 and use_teacher_cache(cfg, len(train_ex)):
        state.teacher_cache = attach_teacher_cache(cfg, trainer, train_ex, device, out, printer)
    trainer.train()
    t_end_train = time.time()
    totals = trainer.run_totals()
    if trainer.is_world_process_zero():
        save_run(cfg, out, trainer, tokenizer, state, stats, device, dtype, t_end_train, totals)
        printer(f"done: {state.stop_reason} after {trainer.state.global_step} steps; wrote {out}")
    trainer.run_state = state
    return out, trainer


def use_teacher_cache(cfg: TrainConfig, n_examples: int) -> bool:
    """kl_cache auto: cache when the run sees its examples at least twice (the cache build costs about
    one teacher pass over the data; online KL costs one per use)."""
    if cfg.kl_cache != "auto":
        return cfg.kl_cache == "on"
    passes = cfg.max_steps * cfg.per_device_batch_size * cfg.grad_accum / max(n_examples, 1)
    return passes >= 2.0


def attach_teacher_cache(
    cfg: TrainConfig, trainer: Any, train_ex: list, device: str, out: Path, printer
) -> dict:
    """Load or build the teacher cache for this base+data, hand it to the trainer, link it into out/."""
    import os
    import shutil

    from airoad.sft import teacher_cache as tc

    t0 = time.time()
    cache_dir = Path(cfg.kl_cache_dir).expanduser() if cfg.kl_cache_dir else tc.DEFAULT_DIR
    cache, path, reused = tc.get_or_build(
        trainer.model, train_ex, cfg.kl_tau, cfg.kl_topk, cfg.loss_chunk_size, device, cache_dir
    )
    trainer.teacher_cache = cache
    local = out / "teacher_cache.safetensors"
    local.unlink(missing_ok=True)
    try:
        os.link(path, local)  # same bytes, no extra space
    except OSError:
        shutil.copyfile(path, local)
    info = {
        "path": str(path),
        "reused": reused,
        "k": cfg.kl_topk,
        "positions": int(cache.offsets[-1]),
        "build_s": round(time.time() - t0, 3),
    }
    printer(
        f"teacher cache: {'reused' if reused else 'built'} {path} ({info['positions']} positions, "
        f"top-{cfg.kl_topk}) in {info['build_s']:.1f}s"
    )
    return info


def main(argv: list[str] | None = None) -> int:
    """Entry point of `airoad train`; returns the exit status."""
    from airoad.cli import run_guarded

    def go() -> int:
        from airoad.config import load_config

        t0 = time.time()
        cfg, _ = load_config(
            TrainConfig,
            sys.argv[1:] if argv is None else argv,
            prog="airoad train",
            description="Fine-tune a chat model with LoRA/DoRA (+KL).",
        )
        train(cfg, t_start=t0)
        return 0

    return run_guarded(go)
