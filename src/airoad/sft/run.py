"""`airoad train`: config -> data -> model + adapters -> trainer (+callbacks) -> artifacts.

    airoad train --config configs/slm/qwen05b_lora_fast_plain.yaml [--max_steps 20 ...]

Data and config are checked before any model weights load. Artifacts in ``output_dir``:
the adapter (adapter_config.json, adapter_model.safetensors, PEFT's README.md model card),
the tokenizer, run_config.yaml (resolved config; rerun with --config), run_info.json
(versions, seed, data sha256, device), train_log.csv/.json, time_metrics.json, loss_curve.png,
and with ``save_every_steps`` HF checkpoints under checkpoints/ (``--resume true`` continues).

Under ``torchrun``/``accelerate launch`` every rank runs this; all ranks check config, data and
output_dir before any rank writes (a barrier), then only rank 0 prints and writes.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from airoad.core.loading import load_causal_lm, load_tokenizer
from airoad.core.model_source import ModelSource, resolve_model
from airoad.errors import UserError
from airoad.sft.data import DataError, Example, LoadStats, file_sha256, load_conversations, tokenize_all
from airoad.sft.schema import PER_INVOCATION, TrainConfig

CHECKPOINTS = "checkpoints"  # HF writes checkpoint-N dirs here (save_every_steps)
KEEP_CHECKPOINTS = 2  # the newest, and one before it in case the newest was cut short
# What an overwrite removes before starting over, so an old adapter or log never passes for the
# new run's (the tokenizer files and PEFT's README.md are replaced when the run saves).
STALE_ON_OVERWRITE = (
    "adapter_config.json",
    "adapter_model.safetensors",
    "run_info.json",
    "train_log.csv",
    "train_log.json",
    "time_metrics.json",
    "loss_curve.png",
)

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


def world() -> tuple[int, int]:
    """(rank, world size) as torchrun / accelerate launch set them; (0, 1) for a plain run."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def check_output_dir(cfg: TrainConfig) -> tuple[Path, Path | None]:
    """Read-only checks of output_dir; returns (output_dir, checkpoint to resume from or None).

    Every rank runs them before any rank writes, so all reach the same verdict.
    """
    out = Path(cfg.output_dir)
    if out.exists() and not out.is_dir():
        raise RunError(f"output_dir {out} is a file; choose a directory path (--output_dir DIR)")
    if cfg.resume:
        return out, resume_checkpoint(cfg, out)
    if out.is_dir() and any(out.iterdir()) and not cfg.overwrite:
        raise RunError(
            f"output_dir {out} is not empty; pass --resume true to continue its run from the latest "
            "checkpoint, --overwrite true to start it over, or pick another --output_dir"
        )
    return out, None


def resume_checkpoint(cfg: TrainConfig, out: Path) -> Path:
    """The newest complete checkpoint of the run in ``out``, after checking this config continues
    that run (RunError listing every mismatch otherwise)."""
    from airoad.sft.callbacks import complete_checkpoints, read_checkpoint_state

    root = out / CHECKPOINTS
    done = complete_checkpoints(root) if root.is_dir() else []
    if not done:
        what = (
            "only checkpoints cut short while saving"
            if root.is_dir() and any(root.iterdir())
            else "no checkpoint"
        )
        raise RunError(
            f"--resume true: output_dir {out} has {what} (a run writes them every save_every_steps "
            "when that is > 0); start over with --overwrite true, or drop --resume"
        )
    ckpt = done[-1]
    saved = read_checkpoint_state(ckpt)
    problems = resume_mismatches(cfg, out) + data_changed(cfg, out, saved.get("data_sha256"))
    if saved["step"] >= cfg.max_steps and not problems:
        raise RunError(
            f"--resume true: the run in {out} already finished ({ckpt.name} is step {saved['step']} "
            f"of max_steps {cfg.max_steps}); nothing to resume"
        )
    ranks = saved.get("world_size", 1)
    if ranks != world()[1]:
        problems.append(
            f"--resume true: {ckpt} was written by {ranks} process(es), this launch has {world()[1]}; "
            "resume with the same number of processes (the data shards depend on it)"
        )
    if problems:
        raise RunError(problems)
    return ckpt


def data_changed(cfg: TrainConfig, out: Path, saved_sha: str | None) -> list[str]:
    """One line if dataset_path's bytes differ from those the run in ``out`` trained on."""
    path = Path(cfg.dataset_path)
    now = file_sha256(path) if saved_sha and path.is_file() else saved_sha
    if now == saved_sha:
        return []
    return [
        f"--resume true: dataset_path {path} changed since the run in {out} started (sha256 "
        f"{now[:12]}, was {saved_sha[:12]}); a resumed run would train on other data in "
        "the saved order: restore the file, or start over with --overwrite true"
    ]


def resume_mismatches(cfg: TrainConfig, out: Path) -> list[str]:
    """One line per key that differs from the run being resumed (keys in PER_INVOCATION may)."""
    import yaml

    from airoad.config import coerce, field_types

    saved_path = out / "run_config.yaml"
    if not saved_path.is_file():
        return []
    saved = yaml.safe_load(saved_path.read_text(encoding="utf-8")) or {}
    types_ = field_types(TrainConfig)
    problems = []
    for f in dataclasses.fields(TrainConfig):
        if f.name in PER_INVOCATION or f.name not in saved:
            continue
        try:
            old = coerce(saved[f.name], types_[f.name])
        except ValueError:
            old = saved[f.name]
        new = getattr(cfg, f.name)
        if old != new:
            problems.append(
                f"--resume true: `{f.name}` is {new!r} but the run in {out} used {old!r}; resuming "
                f"continues that run: use `--config {saved_path} --resume true`"
            )
    return problems


def sync_ranks(device: str) -> None:
    """Under a launcher: start the process group now and wait until every rank is here."""
    if world()[1] <= 1:
        return
    from accelerate import PartialState

    PartialState(cpu=device == "cpu").wait_for_everyone()


def prepare_output_dir(cfg: TrainConfig, out: Path, ckpt: Path | None) -> None:
    """Rank 0, after every rank checked: create output_dir, clear what an overwrite replaces or an
    interrupted save left behind, and write run_config.yaml first (a killed run can be resumed
    with `--config output_dir/run_config.yaml --resume true`)."""
    from airoad.sft.artifacts import ADAPTER_STAGING, write_run_config
    from airoad.sft.callbacks import checkpoint_step, complete_checkpoints

    out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out / ADAPTER_STAGING, ignore_errors=True)  # left by a crash while saving
    root = out / CHECKPOINTS
    if cfg.overwrite:
        for name in STALE_ON_OVERWRITE:
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(root, ignore_errors=True)  # would confuse rotation and a later --resume
    elif ckpt is not None:
        done = set(complete_checkpoints(root))
        for p in root.iterdir():
            if p not in done and p.is_dir() and p.name.rsplit("-", 1)[-1].isdigit():
                if checkpoint_step(p) > checkpoint_step(ckpt):
                    shutil.rmtree(p, ignore_errors=True)  # cut short while saving
    write_run_config(cfg, out)


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


def load_model(cfg: TrainConfig, source: ModelSource, dtype: Any) -> Any:
    """The frozen base for training: in ``dtype``, or 4-bit NF4 with ``load_in_4bit`` (QLoRA)."""
    return prepare_quantized(
        cfg,
        load_causal_lm(
            source, dtype, trust_remote_code=cfg.trust_remote_code, **quantization_kwargs(cfg, dtype)
        ),
    )


def quantization_kwargs(cfg: TrainConfig, dtype: Any) -> dict[str, Any]:
    """QLoRA: NF4 base weights with double quantisation, computing in the training dtype, each
    rank's copy on its own GPU (a quantised model cannot be moved after loading)."""
    if not cfg.load_in_4bit:
        return {}
    from transformers import BitsAndBytesConfig

    bnb = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=dtype,
    )
    return {"quantization_config": bnb, "device_map": {"": int(os.environ.get("LOCAL_RANK", "0"))}}


def prepare_quantized(cfg: TrainConfig, model: Any) -> Any:
    """peft's k-bit preparation (fp32 norms, input grads) before the adapters go on."""
    if not cfg.load_in_4bit:
        return model
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(
        model,
        use_gradient_checkpointing=cfg.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False},
    )


LIGER_KERNELS = {
    "rope": True,
    "rms_norm": True,
    "swiglu": True,
    "cross_entropy": False,
    "fused_linear_cross_entropy": False,
}


def training_args(cfg: TrainConfig, device: str, dtype: Any, has_dev: bool) -> Any:
    import torch
    from transformers import TrainingArguments

    out = Path(cfg.output_dir) / CHECKPOINTS
    if not cfg.save_every_steps:
        out = Path(tempfile.gettempdir()) / "airoad-hf-trainer"  # HF writes nothing: save "no"
    return TrainingArguments(
        output_dir=str(out),
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
        # HF's own checkpoints: adapter, optimizer, scheduler, RNG of every rank, trainer state (step,
        # data position); RunCheckpoint adds our logs and counters.
        save_strategy="steps" if cfg.save_every_steps else "no",
        save_steps=cfg.save_every_steps or 500,
        save_total_limit=KEEP_CHECKPOINTS,
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
        # HF Trainer applies Liger to the (PEFT-wrapped) model; the loss kernels stay off because
        # our loss never asks the model for logits.
        use_liger_kernel=cfg.liger,
        liger_kernel_config=LIGER_KERNELS if cfg.liger else None,
    )


def train(cfg: TrainConfig, t_start: float | None = None, printer=print) -> tuple[Path, Any]:
    """Run one training job; returns (output directory, the finished trainer). Raises
    RunError/DataError/DeviceError (user mistakes, one line each) before any weights load."""
    t_start = t_start or time.time()
    from airoad.devices import check_4bit, check_liger, pick_device, pick_dtype

    out, ckpt = check_output_dir(cfg)
    device = pick_device(cfg.device)
    dtype = pick_dtype(device, cfg.dtype)
    if cfg.load_in_4bit:
        check_4bit(device)
    if cfg.liger:
        check_liger(device)
    data = read_data(cfg)  # user data errors surface before anything is loaded
    source = resolve_model(cfg.base_model)  # a hub that cannot be reached: one line, now
    tokenizer = load_tokenizer(source, cfg.trust_remote_code)
    train_ex, dev_ex, stats = build_examples(cfg, tokenizer, data)
    printer(stats.line())
    if stats.extra.get("dev"):
        printer(f"dev:  {stats.extra['dev']['kept']} examples")
    return _fit(cfg, out, ckpt, device, dtype, source, tokenizer, train_ex, dev_ex, stats, t_start, printer)


def _quiet_libraries() -> None:
    """Our live line is the progress report: silence weight-loading bars and known-harmless deprecations."""
    import logging
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    # Checkpoint rotation falls back to step order when mtimes are close (always, for fast runs).
    logging.getLogger("transformers.trainer_utils").addFilter(_drop_mtime_note)  # once: same object
    warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*", category=FutureWarning)


def _drop_mtime_note(record: Any) -> bool:
    return "mtime may not be reliable" not in record.getMessage()


def _fit(
    cfg, out, ckpt, device, dtype, source, tokenizer, train_ex, dev_ex, stats, t_start, printer
) -> tuple[Path, Any]:
    from transformers import PrinterCallback, set_seed

    from airoad.sft import callbacks as cb
    from airoad.sft.artifacts import save_run, stage_adapter, summary_lines
    from airoad.sft.lora import trainable_summary, wrap_with_adapters
    from airoad.sft.trainer import AiroadTrainer, Collator, ExampleDataset

    _quiet_libraries()
    set_seed(cfg.seed)
    printer(f"loading model: {source.describe()}")
    model = wrap_with_adapters(load_model(cfg, source, dtype), cfg)
    if cfg.gradient_checkpointing:
        # Non-reentrant checkpointing needs no input grads, so frozen embeddings stay frozen.
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    # Every rank has checked config, data, output_dir and weights: now rank 0 may write.
    sync_ranks(device)
    if world()[0] == 0:
        prepare_output_dir(cfg, out, ckpt)
    sync_ranks(device)
    trainable, total = trainable_summary(model)
    ranks = world()[1]
    printer(
        f"model: {cfg.base_model} on {device} ({str(dtype).replace('torch.', '')}"
        f"{', 4-bit NF4 base' if cfg.load_in_4bit else ''}); "
        f"{'DoRA' if cfg.use_dora else 'LoRA'} r={cfg.lora_r} trainable {trainable:,} / {total:,} "
        f"({100 * trainable / total:.3f}%); global batch {global_batch(cfg)} = "
        f"{cfg.per_device_batch_size} x {cfg.grad_accum} accum x {ranks} process(es)"
    )
    state = cb.RunState(t_start=t_start, max_steps=cfg.max_steps, data_sha256=file_sha256(cfg.dataset_path))
    interrupt = cb.InterruptStop(state, printer)
    callbacks = [
        cb.LossLogger(state, out, flush_every=cfg.print_every_steps),
        cb.LivePrinter(state, cfg.print_every_steps, printer, dev_examples=len(dev_ex)),
        cb.TimeLimit(state, cfg.max_minutes),
        interrupt,
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
    stateful = [c for c in callbacks if isinstance(c, cb.Resumable)]
    checkpointer = cb.RunCheckpoint(state, stateful, ranks)
    callbacks += [cb.StopSync(state, checkpoints=cfg.save_every_steps > 0), checkpointer]
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
    checkpointer.totals = trainer.run_totals
    if cfg.kl_lambda > 0 and use_teacher_cache(cfg, len(train_ex)):
        state.teacher_cache = attach_teacher_cache(cfg, trainer, train_ex, device, out, printer)
    if ckpt is not None:
        resume_counters(trainer, state, stateful, ckpt)
        printer(f"resuming from {ckpt} (step {state.resumed_from} of {cfg.max_steps})")
    printer(
        f"training: up to {cfg.max_steps} steps; a line every {cfg.print_every_steps} (Ctrl-C stops and saves)"
    )
    try:
        trainer.train(resume_from_checkpoint=str(ckpt) if ckpt else None)
    finally:
        interrupt.restore()
    t_end_train = time.time()
    totals = trainer.run_totals()
    finite = state.stop_reason != "non_finite_loss"
    staged = stage_adapter(trainer, out) if finite else None
    if trainer.is_world_process_zero():
        printer(f"saving the {'adapter, ' if finite else ''}tokenizer, logs and loss curve to {out} ...")
        metrics = save_run(
            cfg, out, trainer, tokenizer, state, stats, device, dtype, t_end_train, totals, staged
        )
        printer(f"done: {state.stop_reason} after {trainer.state.global_step} steps; wrote {out}")
        for line in summary_lines(out, state, metrics, adapter_saved=finite):
            printer(line)
    trainer.run_state = state
    return out, trainer


def global_batch(cfg: TrainConfig) -> int:
    """Examples per optimizer step over the whole job."""
    return cfg.per_device_batch_size * cfg.grad_accum * world()[1]


def resume_counters(trainer: Any, state: Any, stateful: list, ckpt: Path) -> None:
    """Our part of a checkpoint back in place (HF restores weights, optimizer, scheduler, RNG and
    data position itself in ``train(resume_from_checkpoint=...)``). The whole-job token counts go
    to rank 0: run_totals sums the ranks."""
    from airoad.sft.callbacks import read_checkpoint_state, restore_run_state

    saved = read_checkpoint_state(ckpt)
    restore_run_state(state, stateful, saved)
    main = world()[0] == 0
    trainer.tokens_seen = int(saved["tokens"]) if main else 0
    trainer.trained_seen = int(saved["trained_tokens"]) if main else 0


def exit_status(out: Path, state: Any, printer=print) -> int:
    """0 for a finished run; 128 + signal for an interrupted one (the shell's convention: 130 for
    Ctrl-C, 143 for SIGTERM); 1 for a non-finite loss, with what to do about it."""
    if state.stop_reason == "interrupted":
        return 128 + (state.signal or signal.SIGINT)
    if state.stop_reason != "non_finite_loss":
        return 0
    from airoad.sft.callbacks import checkpoint_step, complete_checkpoints

    root = out / CHECKPOINTS
    good = complete_checkpoints(root) if root.is_dir() else []
    kept = (
        f"last good checkpoint kept: {good[-1]} (step {checkpoint_step(good[-1])})"
        if good
        else "no checkpoint to go back to (save_every_steps is 0)"
    )
    printer(
        f"error: training stopped: {state.non_finite}; the adapter was not saved (its weights are "
        f"not finite), logs and time_metrics were; {kept}. Lower learning_rate or check the data, "
        "then start over with --overwrite true"
    )
    return 1


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
    from airoad.sft import teacher_cache as tc

    t0 = time.time()
    printer(f"teacher cache: the base model's top-{cfg.kl_topk} log-probs of {len(train_ex)} examples ...")
    cache_dir = Path(cfg.kl_cache_dir).expanduser() if cfg.kl_cache_dir else tc.DEFAULT_DIR
    cache, path, reused = tc.get_or_build(
        trainer.model, train_ex, cfg.kl_tau, cfg.kl_topk, cfg.loss_chunk_size, device, cache_dir
    )
    trainer.teacher_cache = cache
    local = out / "teacher_cache.safetensors"
    if world()[0] == 0:  # one writer into output_dir
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


def _silent(*_: Any) -> None:
    """The printer of ranks other than 0: one job, one set of lines."""


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


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
        main_rank = world()[0] == 0
        out, trainer = train(cfg, t_start=t0, printer=print if main_rank else _silent)
        return exit_status(out, trainer.run_state, _stderr if main_rank else _silent)

    return run_guarded(go)
