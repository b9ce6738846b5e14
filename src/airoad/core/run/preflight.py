"""A training lane's pre-flight, once for every lane: everything a run can check before any
weights load, in the order a user would want to hear about it.

1. :func:`check_run` (read-only): output_dir (refuse, resume, overwrite), device and dtype, 4-bit
   and Liger against the device, the trackers of ``report_to``;
2. the lane reads its own data (every row problem at once);
3. :func:`open_model`: the base model's source (an unreachable hub is one line, now) and its
   tokenizer;
4. :func:`run_context`: the :class:`~airoad.core.run.context.RunContext` the skeleton runs, built
   by keyword.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airoad.core.data.chat_data import LoadStats
from airoad.core.model.devices import check_4bit, check_liger, check_training_dtype, pick_device, pick_dtype
from airoad.core.model.loading import load_tokenizer
from airoad.core.model.model_source import ModelSource, resolve_model
from airoad.core.run.context import RunContext
from airoad.core.run.fit import check_trackers
from airoad.core.run.rundir import check_output_dir, world


@dataclass(frozen=True)
class Checked:
    """What :func:`check_run` found: the output dir, the checkpoint a --resume continues from, the
    device and dtype the run will use."""

    out: Path
    ckpt: Path | None
    device: str
    dtype: Any


def check_run(cfg: Any, per_invocation: frozenset[str]) -> Checked:
    """Step 1 (module docstring); RunError/DeviceError (one line each) before anything loads.
    ``per_invocation``: the lane's keys that may differ in a resumed run."""
    out, ckpt = check_output_dir(cfg, per_invocation)
    device = pick_device(cfg.device)
    dtype = pick_dtype(device, cfg.dtype)
    check_training_dtype(device, dtype)
    if cfg.load_in_4bit:
        check_4bit(device)
    if cfg.liger:
        check_liger(device)
    check_trackers(cfg.report_to)
    return Checked(out=out, ckpt=ckpt, device=device, dtype=dtype)


def data_notes(cfg: Any, sources: dict[str, str]) -> list[str]:
    """Lines for a run whose training file is the user's own (given as a flag) while keys made for
    another file came with it from a YAML: a dev file other than theirs, and a row subset. ``sources``:
    where each value came from (:func:`airoad.core.base.options.load_config`)."""
    if not sources.get("dataset_path", "").startswith("--"):
        return []
    notes = []
    dev_from = sources.get("dev_path", "default")
    if cfg.dev_path and not dev_from.startswith("--"):
        notes.append(
            f"note: dev_path {cfg.dev_path} ({dev_from}) is not your --dataset_path's dev set: dev loss, "
            "early stopping and scores will measure that file; give --dev_path (airoad data split "
            "writes one) or --dev_path '' for none"
        )
    subset_from = sources.get("ablate_examples", "default")
    if getattr(cfg, "ablate_examples", 0) and not subset_from.startswith("--"):
        notes.append(
            f"note: ablate_examples {cfg.ablate_examples} ({subset_from}) trains on a seeded subset "
            "of that many rows of your --dataset_path; --ablate_examples 0 uses every row"
        )
    return notes


def settle_run_length(cfg: Any, sources: dict[str, str]) -> list[str]:
    """A --max_steps flag wins over epochs from a YAML (flags win over files): epochs is turned off
    and a line says so. Otherwise epochs > 0 sets max_steps once the data is known (run_context)."""
    steps_from, epochs_from = sources.get("max_steps", "default"), sources.get("epochs", "default")
    if cfg.epochs and steps_from.startswith("--") and not epochs_from.startswith("--"):
        cfg.epochs = 0.0
        return [
            f"note: {steps_from} {cfg.max_steps} sets the run's length; epochs from {epochs_from} is not used"
        ]
    return []


def epochs_to_steps(cfg: Any, n_examples: int) -> str | None:
    """With ``cfg.epochs`` > 0: ``cfg.max_steps`` = the optimizer steps that pass over
    ``n_examples`` that many times (at least 1), and the line saying so; else None."""
    if not cfg.epochs:
        return None
    per_step = cfg.per_device_batch_size * cfg.grad_accum * world()[1]
    cfg.max_steps = max(1, math.ceil(cfg.epochs * n_examples / per_step))
    epochs = f"{cfg.epochs:g} epoch{'' if cfg.epochs == 1 else 's'}"
    return f"length: {epochs} of {n_examples} examples at {per_step} per step = {cfg.max_steps} steps"


def open_model(cfg: Any) -> tuple[ModelSource, Any]:
    """Step 3: (the base model's source, its tokenizer)."""
    source = resolve_model(cfg.base_model)
    return source, load_tokenizer(source, cfg.trust_remote_code)


def run_context(
    cfg: Any,
    checked: Checked,
    model: tuple[ModelSource, Any],
    stats: LoadStats,
    *,
    t_start: float,
    printer: Callable[[str], Any],
) -> RunContext:
    """Step 4: the run's context from the checks, the model source and tokenizer, the data stats
    (a run given in epochs gets its max_steps here, from the examples kept)."""
    source, tokenizer = model
    if line := epochs_to_steps(cfg, stats.kept):
        printer(line)
    return RunContext(
        cfg=cfg,
        out=checked.out,
        ckpt=checked.ckpt,
        device=checked.device,
        dtype=checked.dtype,
        source=source,
        tokenizer=tokenizer,
        stats=stats,
        t_start=t_start,
        printer=printer,
    )
