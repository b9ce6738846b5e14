"""Trainer callbacks: written logs, the live line, the time cap, the early stops, interrupts,
non-finite losses and what a checkpoint needs beyond HF's own files.

All share a :class:`RunState` (start times, stop reason, log rows) so the run writes one
coherent ``time_metrics.json`` whatever stopped it. Only the main process prints or writes.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from airoad.core.base.io import write_csv, write_json
from airoad.core.run.rundir import STATE_FILE

# A lane's metrics (its trainer's log keys, the loss first) sit between these in every log row.
ROW_HEAD = ("step",)
ROW_TAIL = ("lr", "grad_norm", "tokens", "elapsed_s", "eval_loss")


def log_columns(metrics: tuple[str, ...]) -> tuple[str, ...]:
    """train_log.csv's columns for a lane that logs ``metrics`` (SFT: loss, ce, kl)."""
    return (*ROW_HEAD, *metrics, *ROW_TAIL)


# Stops decided from per-rank facts (a signal, the clock, local weights), in order of precedence
# when ranks disagree; index 0 means "no such stop".
SYNCED_STOPS = ("max_steps", "time_limit", "interrupted", "non_finite_loss")
# Stops after which the run can go on later: they get a checkpoint when checkpoints are on.
RESUMABLE_STOPS = ("time_limit", "interrupted")


@dataclass
class RunState:
    t_start: float  # process start (setup included)
    t_train: float = 0.0  # first training step about to run
    max_steps: int = 0
    stop_reason: str = "max_steps"
    teacher_cache: dict[str, Any] | None = None  # info on the KL teacher cache, when one is used
    rows: list[dict[str, Any]] = field(default_factory=list)
    signal: int = 0  # SIGINT/SIGTERM that asked the run to stop (0: none)
    train_s_prior: float = 0.0  # training seconds of the run's segments before a resume
    resumed_from: int | None = None  # checkpoint step this invocation resumed from
    non_finite: str = ""  # what was not finite, and where, for the stop message
    data_sha256: str = ""  # of dataset_path when training started: run_info and checkpoints record it
    inputs_sha256: dict = field(default_factory=dict)  # a lane's other data files (anchors)
    eval_s: float = 0.0  # seconds spent on dev evaluations, whole run (inside elapsed())

    def stop(self, control: Any, reason: str) -> None:
        if self.stop_reason == "max_steps":
            self.stop_reason = reason
        control.should_training_stop = True

    def elapsed(self) -> float:
        """Training seconds of the whole run, segments before a resume included."""
        return self.train_s_prior + time.time() - self.t_train

    def step_s(self) -> float:
        """elapsed() less the dev evaluations: the time the tokens/s of the live line divide by."""
        return self.elapsed() - self.eval_s


class Resumable:
    """A callback whose counters a checkpoint carries: the attributes named in ``SAVED``."""

    SAVED: tuple[str, ...] = ()

    def snapshot(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.SAVED}

    def restore(self, saved: dict[str, Any]) -> None:
        for k in self.SAVED:
            if k in saved:
                setattr(self, k, saved[k])


def _fmt_duration(s: float) -> str:
    s = int(max(s, 0))
    return f"{s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}"


class LossLogger(TrainerCallback):
    """One row per logged step into RunState.rows; train_log.csv/.json rewritten atomically every
    ``flush_every`` steps and at the end, so a crashed run still leaves a readable log."""

    def __init__(self, state: RunState, out_dir: Path, flush_every: int, metrics: tuple[str, ...]):
        self.run, self.out, self.flush_every, self.metrics = state, out_dir, flush_every, metrics

    def on_train_begin(self, args, state, control, **kw):
        self.run.t_train = time.time()

    def on_log(self, args, state, control, logs=None, **kw):
        logs = logs or {}
        if "eval_loss" in logs and self.run.rows and self.run.rows[-1]["step"] == state.global_step:
            self.run.rows[-1]["eval_loss"] = logs["eval_loss"]
        elif "loss" in logs:
            self.run.rows.append(
                {
                    "step": state.global_step,
                    **{m: logs.get(m) for m in self.metrics},
                    "lr": logs.get("learning_rate"),
                    "grad_norm": logs.get("grad_norm"),
                    "tokens": logs.get("tokens"),
                    "elapsed_s": round(self.run.elapsed(), 3),
                    "eval_loss": None,
                }
            )
        else:
            return
        if state.is_world_process_zero and state.global_step % self.flush_every == 0:
            self.flush()

    def on_evaluate(self, args, state, control, metrics=None, **kw):
        self.run.eval_s += float((metrics or {}).get("eval_runtime") or 0.0)

    def flush(self) -> None:
        write_csv(self.out / "train_log.csv", log_columns(self.metrics), self.run.rows)
        write_json(self.out / "train_log.json", self.run.rows)

    def on_train_end(self, args, state, control, **kw):
        if state.is_world_process_zero:
            self.flush()


class LivePrinter(TrainerCallback):
    """Fixed-column live line every ``every`` steps, a line before each dev evaluation (it can take
    as long as several steps) and one with its result. tok/s counts the training steps' time only."""

    def __init__(
        self,
        state: RunState,
        every: int,
        metrics: tuple[str, ...],
        printer: Callable[[str], Any] = print,
        dev_examples: int = 0,
    ):
        self.run, self.every, self.metrics, self.print = state, every, metrics, printer
        self.dev_examples = dev_examples
        self._header_done = False

    def header(self) -> str:
        cols = "".join(f" {m:>{max(8, len(m))}}" for m in self.metrics)
        return f"{'step':>7}{cols} {'lr':>9} {'tok/s':>8} {'elapsed':>8} {'eta':>8}"

    def on_log(self, args, state, control, logs=None, **kw):
        if not state.is_world_process_zero or not logs:
            return
        step = state.global_step
        if "eval_loss" in logs:
            took = logs.get("eval_runtime")
            self.print(f"{step:>7} eval_loss {logs['eval_loss']:.4f}" + (f" ({took:.1f}s)" if took else ""))
            return
        if "loss" not in logs:
            return
        if step % self.every == 0 or step == 1 or step == self.run.max_steps:
            self._line(step, logs)
        # HF's flow callback decided at this step's end whether an evaluation follows the log
        if control.should_evaluate and self.dev_examples:
            self.print(f"{step:>7} evaluating on {self.dev_examples} dev examples ...")

    def _line(self, step: int, logs: dict[str, Any]) -> None:
        if not self._header_done:
            self.print(self.header())
            self._header_done = True
        elapsed = self.run.elapsed()
        tps = (logs.get("tokens") or 0) / max(self.run.step_s(), 1e-9)
        eta = elapsed / step * (self.run.max_steps - step) if step else float("nan")
        values = "".join(
            f" {v:{max(8, len(m))}.4f}" if v is not None else f" {'-':>{max(8, len(m))}}"
            for m, v in zip(self.metrics, map(logs.get, self.metrics), strict=True)
        )
        self.print(
            f"{step:>7}{values} {logs.get('learning_rate', 0):9.2e} "
            f"{tps:8.1f} {_fmt_duration(elapsed):>8} {_fmt_duration(eta):>8}"
        )


class TimeLimit(TrainerCallback):
    """Stops after ``max_minutes`` of wall time since process start (the step in flight finishes)."""

    def __init__(self, state: RunState, max_minutes: float):
        self.run, self.limit = state, max_minutes * 60

    def on_step_end(self, args, state, control, **kw):
        if self.limit > 0 and time.time() - self.run.t_start >= self.limit:
            self.run.stop(control, "time_limit")


class NonFiniteStop(TrainerCallback):
    """A NaN/inf loss or gradient norm ends the run at once with stop_reason ``non_finite_loss``,
    and no checkpoint is written from that step: the optimizer has already applied the bad
    gradient, so the last checkpoint before it is the last good one. Before any save the trainable
    (adapter) weights are checked too, so a checkpoint never holds non-finite weights."""

    def __init__(self, state: RunState):
        self.run = state

    def on_step_end(self, args, state, control, model=None, **kw):
        if (control.should_save or control.should_training_stop) and model is not None:
            bad = _non_finite_param(model)
            if bad:
                what = f"trainable weight `{bad}` is not finite after step {state.global_step}"
                self._stop(control, self.run.non_finite or what)

    def on_log(self, args, state, control, logs=None, **kw):
        logs = logs or {}
        for key in ("loss", "grad_norm"):
            value = logs.get(key)
            if value is not None and not math.isfinite(value):
                # logged after on_step_end's weight check, but the loss is the cause: it wins
                self._stop(control, f"{key} is {value} at step {state.global_step}")
                return

    def _stop(self, control, what: str) -> None:
        self.run.non_finite = what
        self.run.stop_reason = "non_finite_loss"  # overrides any other stop: it explains the weights
        control.should_training_stop = True
        control.should_save = False


def _non_finite_param(model: Any) -> str | None:
    """Name of the first trainable parameter holding a NaN/inf, or None (adapters only: small)."""
    import torch

    for name, p in model.named_parameters():
        if p.requires_grad and p.numel() and not bool(torch.isfinite(p.detach()).all()):
            return name
    return None


class InterruptStop(TrainerCallback):
    """SIGINT (Ctrl-C) or SIGTERM: finish the optimizer step in flight, then stop like any other
    stop (adapter, logs, time_metrics with stop_reason ``interrupted``). A second SIGINT aborts at
    once. The previous handlers are back when training ends (``restore``, also called on errors).
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, state: RunState, printer: Callable[[str], Any] | None = None):
        self.run, self.print = state, printer
        self._old: dict[int, Any] = {}

    def on_train_begin(self, args, state, control, **kw):
        if threading.current_thread() is threading.main_thread():  # signal.signal's own rule
            for sig in self.SIGNALS:
                self._old[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.run.signal and signum == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: the user wants out now
        if not self.run.signal:
            self.run.signal = signum
            if self.print:
                name = signal.Signals(signum).name
                self.print(f"{name}: finishing this step, then saving (Ctrl-C again to abort)")

    def on_step_end(self, args, state, control, **kw):
        if self.run.signal:
            self.run.stop(control, "interrupted")

    def on_train_end(self, args, state, control, **kw):
        self.restore()

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()


class StopSync(TrainerCallback):
    """Must run after every callback that stops in ``on_step_end``.

    Ranks must leave the loop at the same step, or the others wait forever in the next
    all-reduce; a signal, the clock or a local check can differ between ranks, so the stop decision
    (and the signal) is max-reduced across ranks at every step end. Then a resumable stop (time
    limit, interrupt) asks HF for a checkpoint when checkpoints are on, and a non-finite one
    forbids it.
    """

    def __init__(self, state: RunState, checkpoints: bool):
        self.run, self.checkpoints = state, checkpoints

    def on_step_end(self, args, state, control, **kw):
        self._sync(args, control)
        if not control.should_training_stop:
            return
        if self.run.stop_reason == "non_finite_loss":
            control.should_save = False
        elif self.checkpoints and self.run.stop_reason in RESUMABLE_STOPS:
            control.should_save = True

    def _sync(self, args, control) -> None:
        import torch
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return
        stop = control.should_training_stop and self.run.stop_reason in SYNCED_STOPS
        code = SYNCED_STOPS.index(self.run.stop_reason) if stop else 0
        t = torch.tensor([code, self.run.signal], device=args.device, dtype=torch.long)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        code, sig = int(t[0]), int(t[1])
        self.run.signal = self.run.signal or sig
        if code:
            if SYNCED_STOPS[code] == "non_finite_loss":
                self.run.stop_reason = "non_finite_loss"
                self.run.non_finite = self.run.non_finite or "non-finite weights on another rank"
            self.run.stop(control, SYNCED_STOPS[code])


class RunCheckpoint(TrainerCallback):
    """Completes each HF checkpoint (adapter, optimizer, scheduler, RNG, trainer state with the
    data position) with what HF does not know: our log rows, the whole-job token counters, the
    early-stop counters and the training time so far, so a resumed run's logs and metrics cover
    the whole run. The file is written last, atomically: see STATE_FILE."""

    def __init__(self, state: RunState, stateful: list[Resumable], world_size: int):
        self.run, self.stateful, self.world_size = state, stateful, world_size
        self.totals: Callable[[], tuple[int, int]] = lambda: (0, 0)  # set to trainer.run_totals

    def on_save(self, args, state, control, **kw):
        tokens, trained = self.totals()  # a collective: every rank is in on_save
        if not state.is_world_process_zero:
            return
        ckpt = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        saved = {
            "step": state.global_step,
            "world_size": self.world_size,
            "data_sha256": self.run.data_sha256,  # a resume checks the data is still the same file
            "inputs_sha256": self.run.inputs_sha256,  # and the lane's other data files
            "train_s": round(self.run.elapsed(), 3),
            "eval_s": round(self.run.eval_s, 3),
            "tokens": tokens,
            "trained_tokens": trained,
            "rows": [r for r in self.run.rows if r["step"] <= state.global_step],
            "callbacks": {type(cb).__name__: cb.snapshot() for cb in self.stateful},
        }
        write_json(ckpt / STATE_FILE, saved)


def restore_run_state(state: RunState, stateful: list[Resumable], saved: dict[str, Any]) -> None:
    """Put a checkpoint's rows, time and early-stop counters back (before training resumes)."""
    state.rows = list(saved["rows"])
    state.train_s_prior = float(saved["train_s"])
    state.eval_s = float(saved.get("eval_s", 0.0))
    state.resumed_from = int(saved["step"])
    by_name = saved.get("callbacks", {})
    for cb in stateful:
        cb.restore(by_name.get(type(cb).__name__, {}))


class PlateauStop(TrainerCallback, Resumable):
    """Stops when the EMA-smoothed training loss has not improved by ``min_delta`` for ``patience`` steps."""

    SAVED = ("ema", "best", "best_step")

    def __init__(self, state: RunState, patience: int, min_delta: float, min_steps: int, smoothing: float):
        self.run, self.patience, self.min_delta = state, patience, min_delta
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
            self.run.stop(control, "plateau")


class EvalPlateauStop(TrainerCallback, Resumable):
    """Stops when dev loss has not improved by ``min_delta`` for ``patience`` evaluations."""

    SAVED = ("best", "bad")

    def __init__(self, state: RunState, patience: int, min_delta: float, min_steps: int):
        self.run, self.patience, self.min_delta, self.min_steps = state, patience, min_delta, min_steps
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
            self.run.stop(control, "eval_plateau")
