"""`airoad pref`: preference training (DPO, ORPO, KTO) of a LoRA/DoRA adapter on the shared core.

    airoad pref --config configs/pref/qwen05b_dpo.yaml [--init_adapter outputs/qwen05b_fast_plain]

Config and data are checked before any weights load. The run directory holds what `airoad train`
writes (adapter, tokenizer, run_config.yaml, run_info.json, train_log.csv/.json with the method's
columns, time_metrics.json, loss_curve.png with loss and margin, checkpoints with
``save_every_steps``), and the adapter works with `airoad compare`, `eval` and `merge` unchanged.

The reference never costs a second copy of the weights: without ``init_adapter`` it is the base
(adapters disabled); with it, TRL keeps the init adapter's frozen copy as a second PEFT adapter.
"""

from __future__ import annotations

import dataclasses
import sys
import time
import warnings
from typing import Any

from airoad.core.base.commands import Invocation
from airoad.core.model.adapter_source import resolve_source
from airoad.core.model.loading import load_run_base
from airoad.core.model.merging import attach_adapters
from airoad.core.run.context import RunContext
from airoad.core.run.rundir import RunError, exit_status, world
from airoad.pref.data import kto_order, read_data, tokenize_samples
from airoad.pref.schema import PER_INVOCATION, PrefConfig

# The log columns of each method, the loss first.
METRICS = {
    "dpo": ("loss", "reward_chosen", "reward_rejected", "margin", "accuracy"),
    "orpo": ("loss", "nll", "log_odds", "reward_chosen", "reward_rejected", "margin", "accuracy"),
    "kto": ("loss", "reward_chosen", "reward_rejected", "margin", "kl"),
}
ADAPTER_KEYS = {
    "r": "lora_r",
    "lora_alpha": "lora_alpha",
    "lora_dropout": "lora_dropout",
    "use_dora": "use_dora",
}


def with_init_adapter(cfg: PrefConfig, inv: Invocation) -> PrefConfig:
    """The config to train: ``cfg`` itself, or with ``init_adapter`` a new config (``cfg`` is never
    changed) taking the adapter's base unless base_model was given, its LoRA settings (the adapter
    keeps its shape) and its run's system prompt when none was given. The core resolved and
    checked the adapter dir (``inv.source``); an explicit option it overrides gets a note."""
    src = inv.source
    if not cfg.init_adapter or src is None:
        return cfg
    for note in src.notes:
        inv.printer(note)
    changes: dict[str, Any] = {"base_model": src.base}
    for key, name in ADAPTER_KEYS.items():
        if key in src.adapter_config and src.adapter_config[key] != getattr(cfg, name):
            changes[name] = src.adapter_config[key]
            if inv.given(name):
                inv.printer(
                    f"note: --{name} {getattr(cfg, name)} is replaced by the init adapter's {key} = "
                    f"{src.adapter_config[key]} (an adapter keeps its shape)"
                )
    if cfg.system_prompt is None and src.system_prompt:
        changes["system_prompt"] = src.system_prompt  # train on the prompt the adapter was tuned with
    return dataclasses.replace(cfg, **changes)


def use_ref_cache(cfg: PrefConfig, n_rows: int) -> bool:
    """ref_cache auto: cache when the run sees its rows twice or more (the cache costs one reference
    pass over the data; computing it online costs one per use). ORPO has no reference."""
    if cfg.method == "orpo" or cfg.ref_cache == "off":
        return False
    if cfg.ref_cache == "on":
        return True
    return cfg.max_steps * cfg.per_device_batch_size * cfg.grad_accum / max(n_rows, 1) >= 2.0


def pref(cfg: PrefConfig, t_start: float | None = None, printer=print):
    """Run one preference job (``cfg`` already with its init adapter's settings, see
    :func:`with_init_adapter`); returns (output directory, the finished trainer). User mistakes
    raise one-line errors before any weights load."""
    from airoad.core.run.fit import fit
    from airoad.core.run.preflight import check_run, open_model, run_context

    t_start = t_start or time.time()
    checked = check_run(cfg, PER_INVOCATION)
    data = read_data(cfg)  # every row problem, before anything loads
    source, tokenizer = open_model(cfg)
    train_rows = tokenize_samples(tokenizer, data.train, cfg, data.stats)
    dev_rows = tokenize_samples(tokenizer, data.dev, cfg) if data.dev else []
    if not train_rows:
        raise RunError(
            f"{cfg.dataset_path}: no row keeps an answer token at max_seq_len={cfg.max_seq_len}; "
            "raise max_seq_len or set max_prompt_len"
        )
    if cfg.method == "kto":
        train_rows = kto_order(train_rows, cfg.per_device_batch_size, cfg.seed)
        dev_rows = kto_order(dev_rows, cfg.per_device_batch_size, cfg.seed)
    printer(data.stats.line().replace("ChatML, 0 Alpaca wrapped", f"{cfg.method} rows"))
    if dev_rows:
        printer(f"dev:  {len(dev_rows)} rows")
    ctx = run_context(cfg, checked, (source, tokenizer), data.stats, t_start=t_start, printer=printer)
    return checked.out, fit(ctx, pref_lane(train_rows, dev_rows, cfg.method))


def build_model(ctx: RunContext) -> Any:
    """The base with a fresh adapter, or with the init adapter loaded trainable."""
    from airoad.core.model.adapters import wrap_with_adapters

    cfg = ctx.cfg
    base = load_run_base(ctx.source, ctx.dtype, cfg)
    if not cfg.init_adapter:
        return wrap_with_adapters(base, cfg)
    from airoad.core.model.adapters import lean_training_paths

    source = resolve_source(cfg.base_model, cfg.init_adapter, flag="--init_adapter", base_flag="--base_model")
    return lean_training_paths(attach_adapters(base, source, trainable=True))


def trl_args(ctx: RunContext, args: dict[str, Any]) -> Any:
    """TRL's config from the core's TrainingArguments keywords and the preference keys. Set
    explicitly where TRL's defaults differ from ours (lr 1e-6, gradient checkpointing on,
    max_length 1024: airoad.pref.data has already truncated)."""

    from trl import DPOConfig, KTOConfig

    cfg = ctx.cfg
    common = dict(
        beta=cfg.beta,
        max_length=None,
        precompute_ref_log_probs=False,  # ours: PrefMixin.cache_reference
        gradient_checkpointing=False,  # the core enables it on the model when asked
        disable_dropout=True,
        **args,
    )
    with warnings.catch_warnings():  # transformers 5 renames the key TRL still declares
        warnings.filterwarnings(
            "ignore", message=r".*gradient_checkpointing.*deprecated", category=FutureWarning
        )
        if cfg.method == "kto":
            return KTOConfig(
                loss_type=cfg.kto_loss,
                desirable_weight=cfg.desirable_weight,
                undesirable_weight=cfg.undesirable_weight,
                **common,
            )
        return DPOConfig(loss_type=[cfg.loss_type], label_smoothing=cfg.label_smoothing, **common)


def freeze_reference(trainer: Any, cfg: PrefConfig) -> None:
    """TRL copies a PeftModel's adapter into a "ref" adapter. A fresh adapter's reference is the
    base (adapters off) and ORPO has none: drop the copy. An init adapter's copy stays, frozen."""
    from airoad.core.model.model_parts import unwrap

    peft_model = unwrap(trainer.model)
    if "ref" not in peft_model.peft_config:
        return
    if not cfg.init_adapter or cfg.method == "orpo":
        peft_model.delete_adapter("ref")
        return
    for name, p in peft_model.named_parameters():
        if ".ref." in name:
            p.requires_grad_(False)


def pref_lane(train_rows: list[dict[str, Any]], dev_rows: list[dict[str, Any]], method: str) -> Any:
    from airoad.core.run.fit import Lane

    def build_trainer(ctx: RunContext, model: Any, args: dict[str, Any], callbacks: list[Any]) -> Any:
        from datasets import Dataset

        from airoad.pref.trainer import AiroadDPOTrainer, AiroadKTOTrainer

        cfg = ctx.cfg
        kw = dict(
            model=model,
            args=trl_args(ctx, args),
            train_dataset=Dataset.from_list(train_rows),
            eval_dataset=Dataset.from_list(dev_rows) if dev_rows else None,
            processing_class=ctx.tokenizer,
            callbacks=callbacks,
            loss_chunk=cfg.loss_chunk_size,
        )
        if cfg.method == "kto":
            trainer = AiroadKTOTrainer(**kw)
        else:
            trainer = AiroadDPOTrainer(**kw, orpo=cfg.method == "orpo")
        freeze_reference(trainer, cfg)
        return trainer

    def before_train(ctx: RunContext, trainer: Any, state: Any) -> None:
        if not use_ref_cache(ctx.cfg, len(train_rows)):
            return
        t0 = time.time()
        ctx.printer(f"reference cache: log-probs of {len(train_rows)} rows under the reference ...")
        trainer.cache_reference()
        ctx.printer(f"reference cache: done in {time.time() - t0:.1f}s (reused every step)")

    return Lane(
        metrics=METRICS[method],
        build_model=build_model,
        build_trainer=build_trainer,
        n_dev=len(dev_rows),
        plot_secondary=("margin",),
        plot=("loss", "margin"),
        before_train=before_train,
    )


def run(cfg: PrefConfig, inv: Invocation) -> int:
    """`airoad pref` as the core runs it: train, then the run's exit status (0, 1, 130/143)."""
    from airoad.core.run.preflight import data_notes, settle_run_length

    for line in data_notes(cfg, inv.sources) + settle_run_length(cfg, inv.sources):
        inv.printer(line)
    out, trainer = pref(with_init_adapter(cfg, inv), inv.started, inv.printer)
    return exit_status(out, trainer.run_state, _stderr if world()[0] == 0 else inv.printer)


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
