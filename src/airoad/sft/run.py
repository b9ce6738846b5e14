"""`airoad train`: config -> data -> model + adapters -> trainer (+callbacks) -> artifacts.

    airoad train --config configs/slm/qwen05b_lora_fast_plain.yaml [--max_steps 20 ...]

Data and config are checked before any model weights load. Artifacts in ``output_dir``:
the adapter (adapter_config.json, adapter_model.safetensors, PEFT's README.md model card),
the tokenizer, run_config.yaml (resolved config; rerun with --config), run_info.json
(versions, seed, data sha256, device), train_log.csv/.json, time_metrics.json, loss_curve.png,
and with ``save_every_steps`` HF checkpoints under checkpoints/ (``--resume true`` continues).

SFT's own parts are here and beside it (schema, data policy, trainer, teacher cache); the run
skeleton, run directory, callbacks and artifacts are the core's (:mod:`airoad.core.run.fit`).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from airoad.core.base.commands import Invocation
from airoad.core.base.outputs import creatable
from airoad.core.model.loading import load_run_base
from airoad.core.run.context import RunContext
from airoad.core.run.rundir import TEACHER_CACHE_LINK, RunError, exit_status, world
from airoad.sft.data import Example, build_examples, read_data
from airoad.sft.schema import PER_INVOCATION, TrainConfig

METRICS = ("loss", "ce", "kl")  # SFT's log columns: total, cross-entropy, KL to the base


def train(cfg: TrainConfig, t_start: float | None = None, printer=print) -> tuple[Path, Any]:
    """Run one training job; returns (output directory, the finished trainer). Raises
    RunError/DataError/DeviceError (user mistakes, one line each) before any weights load."""
    from airoad.core.run.fit import fit
    from airoad.core.run.preflight import check_run, open_model, run_context

    t_start = t_start or time.time()
    checked = check_run(cfg, PER_INVOCATION)
    check_kl_cache_dir(cfg)
    data = read_data(cfg)  # user data errors surface before anything is loaded
    source, tokenizer = open_model(cfg)  # a hub that cannot be reached: one line, now
    if uses_kl(cfg) and cfg.kl_topk > len(tokenizer):
        raise RunError(
            f"--kl_topk = {cfg.kl_topk} is above the vocabulary of {cfg.base_model} ({len(tokenizer)} tokens); "
            "use a smaller kl_topk (the default keeps 64 per position)"
        )
    train_ex, dev_ex, stats = build_examples(cfg, tokenizer, data)
    printer(stats.line())
    if stats.extra.get("dev"):
        printer(f"dev:  {stats.extra['dev']['kept']} examples")
    if stats.extra.get("anchor"):
        printer(
            f"anchors: {stats.extra['anchor']['kept']} conversations from {cfg.kl_anchor_path} (KL to the base only)"
        )
    ctx = run_context(cfg, checked, (source, tokenizer), stats, t_start=t_start, printer=printer)
    return checked.out, fit(ctx, sft_lane(train_ex, dev_ex))


def uses_kl(cfg: TrainConfig) -> bool:
    """Whether the run needs the base's distribution: KL on the task's tokens or on anchors."""
    return cfg.kl_lambda > 0 or bool(cfg.kl_anchor_path)


def check_kl_cache_dir(cfg: TrainConfig) -> None:
    """A KL run's teacher-cache folder must be a folder, or creatable (before anything loads)."""
    if not uses_kl(cfg) or cfg.kl_cache == "off" or not cfg.kl_cache_dir:
        return

    path = Path(cfg.kl_cache_dir).expanduser()
    if path.exists() and not path.is_dir():
        raise RunError(f"--kl_cache_dir {path}: is a file; give a directory for teacher caches")
    if not path.exists() and (problems := creatable("--kl_cache_dir", path)):
        raise RunError(problems)


def sft_lane(train_ex: list[Example], dev_ex: list[Example]) -> Any:
    """SFT as the core's skeleton runs it: LoRA/DoRA on the base, airoad's trainer, KL's cache."""
    from airoad.core.run.fit import Lane

    def build_model(ctx: RunContext) -> Any:
        from airoad.core.model.adapters import wrap_with_adapters

        cfg = ctx.cfg
        base = load_run_base(ctx.source, ctx.dtype, cfg)
        return wrap_with_adapters(base, cfg)

    def build_trainer(ctx: RunContext, model: Any, args: dict[str, Any], callbacks: list[Any]) -> Any:
        from transformers import TrainingArguments

        from airoad.sft.trainer import AiroadTrainer, Collator, ExampleDataset

        cfg = ctx.cfg
        return AiroadTrainer(
            model=model,
            args=TrainingArguments(**args),
            train_dataset=ExampleDataset(train_ex),
            eval_dataset=ExampleDataset(dev_ex) if dev_ex else None,
            data_collator=Collator(ctx.tokenizer.pad_token_id, packing=cfg.packing),
            callbacks=callbacks,
            kl_lambda=cfg.kl_lambda,
            kl_tau=cfg.kl_tau,
            loss_chunk=cfg.loss_chunk_size,
            kl_anchor_lambda=cfg.kl_anchor_lambda if cfg.kl_anchor_path else 0.0,
        )

    def before_train(ctx: RunContext, trainer: Any, state: Any) -> None:
        if uses_kl(ctx.cfg) and use_teacher_cache(ctx.cfg, len(train_ex)):
            state.teacher_cache = attach_teacher_cache(ctx, trainer, train_ex)

    anchors = any(ex.kl_only for ex in train_ex)
    return Lane(
        metrics=(*METRICS, "kl_anchor") if anchors else METRICS,
        build_model=build_model,
        build_trainer=build_trainer,
        n_dev=len(dev_ex),
        plot_secondary=("kl", "kl_anchor") if anchors else ("kl",),
        before_train=before_train,
    )


def use_teacher_cache(cfg: TrainConfig, n_examples: int) -> bool:
    """kl_cache auto: cache when the run sees its examples at least twice (the cache build costs about
    one teacher pass over the data; online KL costs one per use)."""
    if cfg.kl_cache != "auto":
        return cfg.kl_cache == "on"
    passes = cfg.max_steps * cfg.per_device_batch_size * cfg.grad_accum / max(n_examples, 1)
    return passes >= 2.0


def attach_teacher_cache(ctx: RunContext, trainer: Any, train_ex: list[Example]) -> dict[str, Any]:
    """Load or build the teacher cache for this base+data, hand it to the trainer, link it into out/."""
    from airoad.sft import teacher_cache as tc

    cfg, out, printer = ctx.cfg, ctx.out, ctx.printer
    t0 = time.time()
    printer(f"teacher cache: the base model's top-{cfg.kl_topk} log-probs of {len(train_ex)} examples ...")
    cache_dir = Path(cfg.kl_cache_dir).expanduser() if cfg.kl_cache_dir else tc.DEFAULT_DIR
    cache, path, reused = tc.get_or_build(
        trainer.model,
        train_ex,
        cfg.kl_tau,
        cfg.kl_topk,
        chunk=cfg.loss_chunk_size,
        device=ctx.device,
        cache_dir=cache_dir,
    )
    trainer.teacher_cache = cache
    local = out / TEACHER_CACHE_LINK
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


def run(cfg: TrainConfig, inv: Invocation) -> int:
    """`airoad train` as the core runs it: train, then the run's exit status (0, 1, 130/143)."""
    from airoad.core.run.preflight import data_notes, settle_run_length

    for line in data_notes(cfg, inv.sources) + settle_run_length(cfg, inv.sources):
        inv.printer(line)
    out, trainer = train(cfg, t_start=inv.started, printer=inv.printer)
    return exit_status(out, trainer.run_state, _stderr if world()[0] == 0 else inv.printer)


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
