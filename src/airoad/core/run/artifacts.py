"""What a finished (or stopped) run leaves in its output directory, each file written atomically."""

from __future__ import annotations

import dataclasses
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from airoad.core.base.io import move_dir_contents, write_bytes, write_json
from airoad.core.base.options import input_keys
from airoad.core.base.outputs import record
from airoad.core.data.chat_data import file_sha256
from airoad.core.run.callbacks import LossLogger, RunState
from airoad.core.run.context import RunContext
from airoad.core.run.rundir import ADAPTER_STAGING, global_batch, world, write_run_config


def library_versions(extra: tuple[str, ...] = ()) -> dict[str, str]:
    """Python's and the libraries' versions (plus ``extra`` distributions) for run records."""
    from airoad.core.model.devices import package_versions

    names = ("airoad", "torch", "transformers", "peft", "trl", "accelerate", "datasets", *extra)
    return {"python": platform.python_version(), **package_versions(names)}


def time_metrics(
    state: RunState, steps: int, train_tokens: int, trained_tokens: int, t_end_train: float
) -> dict:
    """Whole-run figures: after a resume, train_s and the rates include the earlier segments.

    Two token rates, named apart: ``step_tokens_per_s`` divides by the training steps' time (train_s
    less the dev evaluations: the live line's tok/s), ``wall_tokens_per_s`` by the whole train_s."""
    train_s = max(state.train_s_prior + t_end_train - state.t_train, 1e-9)
    step_s = max(train_s - state.eval_s, 1e-9)
    now = time.time()
    return {
        "setup_s": round(state.t_train - state.t_start, 3),
        "train_s": round(train_s, 3),
        "save_s": round(now - t_end_train, 3),
        "total_s": round(now - state.t_start, 3),
        "steps": steps,
        "steps_per_s": round(steps / train_s, 5),
        "s_per_step": round(train_s / steps, 4) if steps else None,
        "eval_s": round(state.eval_s, 3),
        "train_tokens": train_tokens,
        "step_tokens_per_s": round(train_tokens / step_s, 3),
        "wall_tokens_per_s": round(train_tokens / train_s, 3),
        "trained_tokens": trained_tokens,
        "stop_reason": state.stop_reason,
        "teacher_cache_s": state.teacher_cache["build_s"] if state.teacher_cache else 0.0,
        "resumed_from_step": state.resumed_from,
    }


def plot_losses(
    rows: list[dict[str, Any]], path: Path, metrics: tuple[str, ...], secondary: tuple[str, ...] = ()
) -> None:
    """loss_curve.png: each of a lane's ``metrics`` against the step (those in ``secondary``, on
    another scale, on a second y axis; only when logged), and the dev loss."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    steps = [r["step"] for r in rows]
    for key, style in zip((m for m in metrics if m not in secondary), ("-", "--", "-.", ":"), strict=False):
        ax.plot(steps, [r.get(key) for r in rows], style, label=key)
    logged = [m for m in secondary if any(r.get(m) is not None for r in rows)]
    if logged:
        ax2 = ax.twinx()
        for key in logged:
            ax2.plot(steps, [r.get(key) or 0.0 for r in rows], ":", color="tab:red", label=key)
        ax2.set_ylabel(", ".join(logged))
        ax2.legend(loc="upper center")
    ev = [(r["step"], r["eval_loss"]) for r in rows if r.get("eval_loss") is not None]
    if ev:
        ax.plot([s for s, _ in ev], [v for _, v in ev], "o-", label="eval_loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend(loc="upper right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    write_bytes(path, tmp.read_bytes())
    tmp.unlink()


def stage_adapter(trainer, out: Path) -> Path:
    """Every rank calls this: HF's save_model gathers sharded weights (FSDP, DeepSpeed) as a
    collective and writes on rank 0 only, into a staging dir that save_run renames into place."""
    staging = out / ADAPTER_STAGING
    trainer.save_model(str(staging))
    return staging


def save_run(
    ctx: RunContext,
    trainer: Any,
    state: RunState,
    *,
    series: tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]],
    t_end_train: float,
    totals: tuple[int, int],
    adapter_dir: Path | None = None,
) -> dict[str, Any]:
    """Adapter (staged by stage_adapter) + tokenizer (saved to a temp dir), both renamed in file
    by file; then config, info, logs, metrics, plot. Returns the time metrics written.

    ``series``: (the lane's metrics, those plotted on a second axis, those plotted). ``totals``: (non-pad tokens
    processed, trained tokens), whole job. ``adapter_dir`` None (non-finite weights) writes
    everything but the adapter.
    """
    out, cfg = ctx.out, ctx.cfg
    with tempfile.TemporaryDirectory(dir=out, prefix=".save-") as tmp:
        ctx.tokenizer.save_pretrained(tmp)
        record(out, [p.name for p in Path(tmp).iterdir()])  # before they land: a later --overwrite knows them
        move_dir_contents(tmp, out)
    if adapter_dir is not None:
        (adapter_dir / "training_args.bin").unlink(missing_ok=True)  # HF's pickle of its arguments
        record(out, [p.name for p in adapter_dir.iterdir()])
        move_dir_contents(adapter_dir, out)
        adapter_dir.rmdir()
    write_run_config(cfg, out)
    write_json(out / "run_info.json", run_info(ctx, trainer, state))
    metrics, secondary, plotted = series
    LossLogger(state, out, 1, metrics).flush()
    timing = time_metrics(state, trainer.state.global_step, *totals, t_end_train)
    write_json(out / "time_metrics.json", timing)
    plot_losses(state.rows, out / "loss_curve.png", plotted, secondary)
    return timing


def run_info(ctx: RunContext, trainer: Any, state: RunState) -> dict[str, Any]:
    """run_info.json: what reproduces the run (command, seed, versions, device, data hashes)."""
    cfg = ctx.cfg
    data = {
        "path": cfg.dataset_path,
        "sha256": state.data_sha256,  # hashed when training started, not after
        "stats": dataclasses.asdict(ctx.stats),
    }
    if cfg.dev_path:
        data["dev_path"], data["dev_sha256"] = cfg.dev_path, file_sha256(cfg.dev_path)
    for key in input_keys(cfg):  # a lane's other data files (SFT: kl_anchor_path)
        path = getattr(cfg, key)
        if key not in ("dataset_path", "dev_path", "base_model") and path and Path(path).is_file():
            data[key], data[f"{key}_sha256"] = path, file_sha256(path)
    return {
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "seed": cfg.seed,
        "versions": library_versions(),
        "device": ctx.device,
        "dtype": str(ctx.dtype).replace("torch.", ""),
        "data": data,
        "trainable_params": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
        "world_size": world()[1],
        "global_batch": global_batch(cfg),
        "teacher_cache": state.teacher_cache,
    }


def _hms(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def summary_lines(out: Path, state: RunState, metrics: dict[str, Any], adapter_saved: bool) -> list[str]:
    """What a finished run says last: its losses, speed, time, and where its results are."""
    rows = state.rows
    evals = [r["eval_loss"] for r in rows if r.get("eval_loss") is not None]
    losses = f"loss {rows[0]['loss']:.4f} -> {rows[-1]['loss']:.4f}" if rows else "no step logged"
    if evals:
        losses += f", dev loss {evals[-1]:.4f}"
    speed = f"{metrics['step_tokens_per_s']:.1f} tokens/s in training steps"
    if metrics["eval_s"] > 0:
        speed += f" ({metrics['wall_tokens_per_s']:.1f} with the {metrics['eval_s']:.1f}s of dev evals)"
    where = f"adapter {out / 'adapter_model.safetensors'}" if adapter_saved else "no adapter (see below)"
    return [
        f"summary: {losses}; {speed}; train {_hms(metrics['train_s'])}, total {_hms(metrics['total_s'])}",
        f"results: {where}; loss curve {out / 'loss_curve.png'}; logs {out / 'train_log.csv'}",
    ]
