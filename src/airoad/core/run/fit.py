"""The training-run skeleton every lane stands on: model, run directory, callbacks, HF Trainer,
train, save, summary. A lane hands it a :class:`Lane` (its log columns, how to build its model
and its trainer, and an optional hook before training) and a checked :class:`RunContext`.

    ctx = RunContext(cfg, out, ckpt, device, dtype, source, tokenizer, stats, t_start, printer)
    trainer = fit(ctx, Lane(metrics=("loss", "ce", "kl"), build_model=..., build_trainer=...))

Under ``torchrun``/``accelerate launch`` every rank runs this; only rank 0 prints and writes.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airoad.core.base.options import input_keys
from airoad.core.base.outputs import release_lock
from airoad.core.data.chat_data import file_sha256
from airoad.core.model.loading import quiet_renames
from airoad.core.run import callbacks as cb
from airoad.core.run.context import RunContext
from airoad.core.run.rundir import (
    CHECKPOINTS,
    KEEP_CHECKPOINTS,
    RunError,
    global_batch,
    prepare_output_dir,
    read_checkpoint_state,
    sync_ranks,
    world,
)
from airoad.core.run.sharding import allow_cpu_fsdp, sharding_line

# HF Trainer applies Liger to the (PEFT-wrapped) model; the loss kernels stay off because the
# lanes' losses never ask the model for full logits.
LIGER_KERNELS = {
    "rope": True,
    "rms_norm": True,
    "swiglu": True,
    "cross_entropy": False,
    "fused_linear_cross_entropy": False,
}


@dataclass
class Lane:
    """What a lane hands the skeleton.

    ``metrics``: its trainer's log keys for the live line and train_log (the loss first);
    ``plot``: those drawn in loss_curve.png (default: all); ``plot_secondary``: those of them on
    the plot's second y axis. ``build_model(ctx)`` returns the
    model with its adapters; ``build_trainer(ctx, model, args_kwargs, callbacks)`` an HF Trainer
    (subclass) built with ``TrainingArguments(**args_kwargs)`` or a subclass of it, that mixes in
    :class:`airoad.core.run.token_counts.TokenCounts`. ``before_train(ctx, trainer, state)`` runs
    once the trainer exists (SFT: the teacher cache)."""

    metrics: tuple[str, ...]
    build_model: Callable[[RunContext], Any]
    build_trainer: Callable[[RunContext, Any, dict[str, Any], list[Any]], Any]
    n_dev: int = 0
    plot_secondary: tuple[str, ...] = ()
    plot: tuple[str, ...] = ()
    before_train: Callable[[RunContext, Any, cb.RunState], None] | None = None


def check_trackers(report_to: str) -> None:
    """RunError (one line) for a `report_to` tracker the HF Trainer does not know, before anything
    loads (the Trainer would only refuse it after the model is in memory)."""
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    names = [n.strip() for n in report_to.split(",") if n.strip()]
    unknown = [n for n in names if n not in ("none", "all") and n not in INTEGRATION_TO_CALLBACK]
    if unknown:
        known = ", ".join(sorted(INTEGRATION_TO_CALLBACK))
        raise RunError(f"report_to: unknown tracker {unknown[0]!r}; use none, all, or some of {known}")


def quiet_libraries() -> None:
    """Our live line is the progress report: silence weight-loading bars and known-harmless deprecations."""

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    # Checkpoint rotation falls back to step order when mtimes are close (always, for fast runs).
    logging.getLogger("transformers.trainer_utils").addFilter(_drop_mtime_note)  # once: same object
    quiet_renames()


def _drop_mtime_note(record: Any) -> bool:
    return "mtime may not be reliable" not in record.getMessage()


def training_kwargs(ctx: RunContext, has_dev: bool) -> dict[str, Any]:
    """TrainingArguments keywords from the keys every lane shares (steps, batch, optimiser,
    schedule, eval, checkpoints, trackers, seed, device, precision, Liger)."""
    import torch

    cfg, device, dtype = ctx.cfg, ctx.device, ctx.dtype
    out = ctx.out / CHECKPOINTS
    if not cfg.save_every_steps:
        out = Path(tempfile.gettempdir()) / "airoad-hf-trainer"  # HF writes nothing: save "no"
    return dict(
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
        # bf16 weights train under bf16 autocast on every device, as TRL's default does: with the
        # adapters' inputs kept in bf16 (core.adapters.lora_in_autocast) this saves a third of the
        # activations and ~30 % of a CPU step against fp32 LoRA arithmetic (BENCHMARKS.md, Memory).
        bf16=dtype == torch.bfloat16,
        fp16=device == "cuda" and dtype == torch.float16,
        remove_unused_columns=False,
        dataloader_pin_memory=device == "cuda",
        disable_tqdm=True,
        ddp_find_unused_parameters=False,
        use_liger_kernel=cfg.liger,
        liger_kernel_config=LIGER_KERNELS if cfg.liger else None,
    )


def model_line(ctx: RunContext, model: Any) -> str:
    from airoad.core.model.adapters import trainable_summary

    cfg = ctx.cfg
    trainable, total = trainable_summary(model)
    return (
        f"model: {cfg.base_model} on {ctx.device} ({str(ctx.dtype).replace('torch.', '')}"
        f"{', 4-bit NF4 base' if cfg.load_in_4bit else ''}); "
        f"{'DoRA' if cfg.use_dora else 'LoRA'} r={cfg.lora_r} trainable {trainable:,} / {total:,} "
        f"({100 * trainable / total:.3f}%); global batch {global_batch(cfg)} = "
        f"{cfg.per_device_batch_size} x {cfg.grad_accum} accum x {world()[1]} process(es)"
    )


@dataclass
class _Callbacks:
    all: list[Any]
    interrupt: cb.InterruptStop
    checkpointer: cb.RunCheckpoint
    stateful: list[cb.Resumable]


def make_callbacks(ctx: RunContext, state: cb.RunState, lane: Lane) -> _Callbacks:
    """Logs, live line, time cap, interrupts, NaN stop, early stops, stop sync, checkpoint state."""
    cfg, printer = ctx.cfg, ctx.printer
    interrupt = cb.InterruptStop(state, printer)
    callbacks: list[Any] = [
        cb.LossLogger(state, ctx.out, flush_every=cfg.print_every_steps, metrics=lane.metrics),
        cb.LivePrinter(state, cfg.print_every_steps, lane.metrics, printer, dev_examples=lane.n_dev),
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
    checkpointer = cb.RunCheckpoint(state, stateful, world()[1])
    callbacks += [cb.StopSync(state, checkpoints=cfg.save_every_steps > 0), checkpointer]
    return _Callbacks(callbacks, interrupt, checkpointer, stateful)


def resume_counters(trainer: Any, state: cb.RunState, stateful: list[cb.Resumable], ckpt: Path) -> None:
    """Our part of a checkpoint back in place (HF restores weights, optimizer, scheduler, RNG and
    data position itself in ``train(resume_from_checkpoint=...)``). The whole-job token counts go
    to rank 0: run_totals sums the ranks."""

    saved = read_checkpoint_state(ckpt)
    cb.restore_run_state(state, stateful, saved)
    main = world()[0] == 0
    trainer.restore_totals(int(saved["tokens"]) if main else 0, int(saved["trained_tokens"]) if main else 0)


def fit(ctx: RunContext, lane: Lane) -> Any:
    """Train ``lane`` in ``ctx``; returns the finished trainer with ``run_state`` (its RunState)."""
    from transformers import set_seed

    cfg, printer = ctx.cfg, ctx.printer
    quiet_libraries()
    allow_cpu_fsdp(ctx.device)  # an FSDP launch on CPU processes shards (or fails in one line)
    set_seed(cfg.seed)
    printer(f"loading model: {ctx.source.describe()}")
    model = lane.build_model(ctx)
    if cfg.gradient_checkpointing:
        # Non-reentrant checkpointing needs no input grads, so frozen embeddings stay frozen.
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    # Every rank has checked config, data, output_dir and weights: now rank 0 may write.
    sync_ranks(ctx.device)
    try:
        if world()[0] == 0:
            prepare_output_dir(cfg, ctx.out, ctx.ckpt)  # takes output_dir's lock
        return _train_locked(ctx, lane, model)
    finally:  # only ever removes a lock that holds this process's pid
        if world()[0] == 0:
            release_lock(ctx.out)


def trained_inputs_sha256(cfg: Any) -> dict[str, str]:
    """sha256 of each data file the run trains on besides dataset_path (SFT: kl_anchor_path): a
    resume refuses a run whose files changed. dev_path may change between invocations."""
    keys = [k for k in input_keys(cfg) if k not in ("dataset_path", "dev_path", "base_model", "init_adapter")]
    return {
        k: file_sha256(getattr(cfg, k)) for k in keys if getattr(cfg, k) and Path(getattr(cfg, k)).is_file()
    }


def _train_locked(ctx: RunContext, lane: Lane, model: Any) -> Any:
    from transformers import PrinterCallback

    from airoad.core.model.adapters import lora_in_autocast

    cfg, printer = ctx.cfg, ctx.printer
    sync_ranks(ctx.device)
    printer(model_line(ctx, model))
    sha = file_sha256(cfg.dataset_path)  # once, when training starts: run_info and checkpoints record it
    state = cb.RunState(
        t_start=ctx.t_start,
        max_steps=cfg.max_steps,
        data_sha256=sha,
        inputs_sha256=trained_inputs_sha256(cfg),
    )
    cbs = make_callbacks(ctx, state, lane)
    trainer = lane.build_trainer(ctx, model, training_kwargs(ctx, bool(lane.n_dev)), cbs.all)
    trainer.remove_callback(PrinterCallback)  # our LivePrinter replaces its raw dict lines
    if line := sharding_line(trainer):
        printer(line)
    cbs.checkpointer.totals = trainer.run_totals
    with lora_in_autocast(model, trainer.args.bf16):
        if lane.before_train:
            lane.before_train(ctx, trainer, state)
        if ctx.ckpt is not None:
            resume_counters(trainer, state, cbs.stateful, ctx.ckpt)
            printer(f"resuming from {ctx.ckpt} (step {state.resumed_from} of {cfg.max_steps})")
        printer(
            f"training: up to {cfg.max_steps} steps; a line every {cfg.print_every_steps} (Ctrl-C stops and saves)"
        )
        try:
            trainer.train(resume_from_checkpoint=str(ctx.ckpt) if ctx.ckpt else None)
        finally:
            cbs.interrupt.restore()
    finish(ctx, trainer, state, lane, t_end_train=time.time())
    trainer.run_state = state
    return trainer


def finish(ctx: RunContext, trainer: Any, state: cb.RunState, lane: Lane, t_end_train: float) -> None:
    """Every rank stages the adapter (a collective under FSDP/DeepSpeed); rank 0 writes the run's
    files and says where they are."""
    from airoad.core.run.artifacts import save_run, stage_adapter, summary_lines

    totals = trainer.run_totals()
    finite = state.stop_reason != "non_finite_loss"
    staged = stage_adapter(trainer, ctx.out) if finite else None
    if not trainer.is_world_process_zero():
        return
    printer = ctx.printer
    printer(f"saving the {'adapter, ' if finite else ''}tokenizer, logs and loss curve to {ctx.out} ...")
    metrics = save_run(
        ctx,
        trainer,
        state,
        series=(lane.metrics, lane.plot_secondary, lane.plot or lane.metrics),
        t_end_train=t_end_train,
        totals=totals,
        adapter_dir=staged,
    )
    printer(f"done: {state.stop_reason} after {trainer.state.global_step} steps; wrote {ctx.out}")
    for line in summary_lines(ctx.out, state, metrics, adapter_saved=finite):
        printer(line)
