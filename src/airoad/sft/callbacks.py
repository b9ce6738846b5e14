"""Trainer callbacks: written logs, the live line, the time cap and the early stops.

All share a :class:`RunState` (start times, stop reason, log rows) so the run writes one
coherent ``time_metrics.json`` whatever stopped it. Only the main process prints or writes.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from airoad.io import write_csv, write_json

LOG_COLUMNS = ("step", "loss", "ce", "kl", "lr", "grad_norm", "tokens", "elapsed_s", "eval_loss")


@dataclass
class RunState:
    t_start: float  # process start (setup included)
    t_train: float = 0.0  # first training step about to run
    max_steps: int = 0
    stop_reason: str = "max_steps"
    teacher_cache: dict[str, Any] | None = None  # info on the KL teacher cache, when one is used
    rows: list[dict[str, Any]] = field(default_factory=list)

    def stop(self, control: Any, reason: str) -> None:
        if self.stop_reason == "max_steps":
            self.stop_reason = reason
        control.should_training_stop = True


def _fmt_duration(s: float) -> str:
    s = int(max(s, 0))
    return f"{s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}"


class LossLogger(TrainerCallback):
    """One row per logged step into RunState.rows; train_log.csv/.json rewritten atomically every
    ``flush_every`` steps and at the end, so a crashed run still leaves a readable log."""

    def __init__(self, state: RunState, out_dir: Path, flush_every: int):
        self.s, self.out, self.flush_every = state, out_dir, flush_every

    def on_train_begin(self, args, state, control, **kw):
        self.s.t_train = time.time()

    def on_log(self, args, state, control, logs=None, **kw):
        logs = logs or {}
        if "eval_loss" in logs and self.s.rows and self.s.rows[-1]["step"] == state.global_step:
            self.s.rows[-1]["eval_loss"] = logs["eval_loss"]
        elif "loss" in logs:
            self.s.rows.append(
                {
                    "step": state.global_step,
                    "loss": logs.get("loss"),
                    "ce": logs.get("ce"),
                    "kl": logs.get("kl"),
                    "lr": logs.get("learning_rate"),
                    "grad_norm": logs.get("grad_norm"),
                    "tokens": logs.get("tokens"),
                    "elapsed_s": round(time.time() - self.s.t_train, 3),
                    "eval_loss": None,
                }
            )
        else:
            return
        if state.is_world_process_zero and state.global_step % self.flush_every == 0:
            self.flush()

    def flush(self) -> None:
        write_csv(self.out / "train_log.csv", LOG_COLUMNS, self.s.rows)
        write_json(self.out / "train_log.json", self.s.rows)

    def on_train_end(self, args, state, control, **kw):
        if state.is_world_process_zero:
            self.flush()


class LivePrinter(TrainerCallback):
    """Fixed-column live line every ``every`` steps (and eval lines)."""

    HEADER = f"{'step':>7} {'loss':>8} {'ce':>8} {'kl':>8} {'lr':>9} {'tok/s':>8} {'elapsed':>8} {'eta':>8}"

    def __init__(self, state: RunState, every: int, printer=print):
        self.s, self.every, self.print = state, every, printer
        self._header_done = False

    def on_log(self, args, state, control, logs=None, **kw):
        if not state.is_world_process_zero or not logs:
            return
        step = state.global_step
        if "eval_loss" in logs:
            self.print(f"{step:>7} eval_loss {logs['eval_loss']:.4f}")
            return
        if "loss" not in logs or not (step % self.every == 0 or step == 1 or step == self.s.max_steps):
            return
        if not self._header_done:
            self.print(self.HEADER)
            self._header_done = True
        elapsed = time.time() - self.s.t_train
        tps = (logs.get("tokens") or 0) / max(elapsed, 1e-9)
        eta = elapsed / step * (self.s.max_steps - step) if step else float("nan")
        kl = logs.get("kl")
        kl_s = f"{kl:8.4f}" if kl is not None else f"{'-':>8}"
        self.print(
            f"{step:>7} {logs['loss']:8.4f} {logs['ce']:8.4f} {kl_s} {logs.get('learning_rate', 0):9.2e} "
            f"{tps:8.1f} {_fmt_duration(elapsed):>8} {_fmt_duration(eta):>8}"
        )


class TimeLimit(TrainerCallback):
    """Stops after ``max_minutes`` of wall time since process start (the step in flight finishes)."""

    def __init__(self, state: RunState, max_minutes: float):
        self.s, self.limit = state, max_minutes * 60

    def on_step_end(self, args, state, control, **kw):
        if self.limit > 0 and time.time() - self.s.t_start >= self.limit:
            self.s.stop(control, "time_limit")


class NonFiniteStop(TrainerCallback):
    """A NaN/inf loss ends the run at once with stop_reason ``non_finite_loss``."""

    def __init__(self, state: RunState):
        self.s = state

    def on_log(self, args, state, control, logs=None, **kw):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            self.s.stop(control, "non_finite_loss")


class PlateauStop(TrainerCallback):
    """Stops when the EMA-smoothed training loss has not improved by ``min_delta`` for ``patience`` steps."""

    def __init__(self, state: RunState, patience: int, min_delta: float, min_steps: int, smoothing: float):
        self.s, self.patience, self.min_delta = state, patience, min_delta
        self.min_steps, self.beta = min_steps, smoothing
        self.ema: float | None = None
        self.best, self.best_step = math.inf, 0

    def on_log(self, args, state, control, logs=None, **kw):
        loss = (logs or {}).get("loss")
        if loss is None or not math.isfinite(loss) or "eval_loss" in logs:
            return
        self.ema = loss if self.ema is None else self.beta * self.ema + (1 - self.beta) * loss
        step = state.global_step
        if self.ema < self.best - self.min_delta:
            self.best, self.best_step = self.ema, step
        if self.patience and step >= self.min_steps and step - self.best_step >= self.patience:
            self.s.stop(control, "plateau")


class EvalPlateauStop(TrainerCallback):
    """Stops when dev loss has not improved by ``min_delta`` for ``patience`` evaluations."""

    def __init__(self, state: RunState, patience: int, min_delta: float, min_steps: int):
        self.s, self.patience, self.min_delta, self.min_steps = state, patience, min_delta, min_steps
        self.best, self.bad = math.inf, 0

    def on_evaluate(self, args, state, control, metrics=None, **kw):
        loss = (metrics or {}).get("eval_loss")
        if loss is None:
            return
        if loss < self.best - self.min_delta:
            self.best, self.bad = loss, 0
        else:
            self.bad += 1
        if self.bad >= self.patience and state.global_step >= self.min_steps:
            self.s.stop(control, "eval_plateau")
