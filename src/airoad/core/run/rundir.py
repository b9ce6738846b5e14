"""The run directory: output_dir policy (refuse, resume, overwrite), HF checkpoints and their
state, the exit status of a finished run, and the rank helpers every launcher-aware step needs.

Read-only checks come first and run on every rank (all reach the same verdict); only rank 0
writes. Nothing here imports torch or transformers: a wrong output_dir fails in a second.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
from pathlib import Path
from typing import Any

import yaml

from airoad.core.base.errors import UserError
from airoad.core.base.io import write_text
from airoad.core.base.options import coerce, field_types, input_keys
from airoad.core.base.outputs import (
    LOCK,
    MANIFEST,
    acquire_lock,
    clash,
    creatable,
    foreign,
    in_use,
    lock_holder,
    not_ours,
    ours,
    record,
    remove_recorded,
)
from airoad.core.data.chat_data import file_sha256

CHECKPOINTS = "checkpoints"  # HF writes checkpoint-N dirs here (save_every_steps)
KEEP_CHECKPOINTS = 2  # the newest, and one before it in case the newest was cut short
TEACHER_CACHE_LINK = "teacher_cache.safetensors"  # a KL run's cache, hard-linked into output_dir
RUN_FILES = (
    MANIFEST,
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


# Written last into each HF checkpoint dir: a dir without it was cut short and is never resumed from.
STATE_FILE = "airoad_state.json"
CHECKPOINT_PREFIX = "checkpoint"  # transformers.trainer_utils.PREFIX_CHECKPOINT_DIR (tested equal)
ADAPTER_STAGING = ".adapter-staging"  # fixed name: every rank must pass the same path to save_model


def run_config_dict(cfg: Any) -> dict[str, Any]:
    """The resolved config as run_config.yaml holds it. ``overwrite``/``resume`` say how one
    invocation treated output_dir, not what the run is: saved off, so the file reruns the job
    (with --overwrite true or a new --output_dir) or resumes it (with --resume true)."""
    return {**dataclasses.asdict(cfg), "overwrite": False, "resume": False}


def write_run_config(cfg: Any, out: Path) -> None:

    write_text(out / "run_config.yaml", yaml.safe_dump(run_config_dict(cfg), sort_keys=False))


class RunError(UserError):
    """A user-fixable problem found while setting up a run (one line)."""


def world() -> tuple[int, int]:
    """(rank, world size) as torchrun / accelerate launch set them; (0, 1) for a plain run."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def check_output_dir(cfg: Any, per_invocation: frozenset[str] = frozenset()) -> tuple[Path, Path | None]:
    """Read-only checks of output_dir; returns (output_dir, checkpoint to resume from or None).

    ``cfg``: a lane's config (a core.schema.RunKeys: output_dir, resume, overwrite, max_steps and
    the paths its schema declares as inputs); ``per_invocation``: its keys that may differ in a resumed run. Every rank
    runs these checks before any rank writes, so all reach the same verdict.
    """
    out = Path(cfg.output_dir).expanduser()
    # Each lane declares its input paths (io= in its schema): an output dir on or around any of
    # them could overwrite or remove what the user gave us, --overwrite or not.
    inputs = [(k, getattr(cfg, k)) for k in input_keys(cfg)]
    if hit := clash(out, inputs):
        raise RunError(f"output_dir {out}: {hit}; choose another --output_dir (inputs are never modified)")
    if out.exists() and not out.is_dir():
        raise RunError(f"output_dir {out} is a file; choose a directory path (--output_dir DIR)")
    if not out.exists():
        if problems := creatable("--output_dir", out):
            raise RunError(problems)
    elif (holder := lock_holder(out)) is not None:
        raise RunError(in_use("output_dir", out, holder))
    if cfg.resume:
        return out, resume_checkpoint(cfg, out, per_invocation)
    # airoad's own debris (a dead run's lock, temp files) does not make a directory non-empty
    if out.is_dir() and any(not ours(p.name) for p in out.iterdir()) and not startup_only(out):
        if not cfg.overwrite:
            raise RunError(
                f"output_dir {out} is not empty; pass --resume true to continue its run from the latest "
                "checkpoint, --overwrite true to start it over, or pick another --output_dir"
            )
        if others := foreign(out):
            raise RunError(not_ours("output_dir", out, others))
    return out, None


def startup_only(out: Path) -> bool:
    """A run dir holding nothing but what a run writes before its first step (it was stopped while
    starting): the next run may use it as if it were empty."""
    names = {p.name for p in out.iterdir() if not ours(p.name)}
    return (out / MANIFEST).is_file() and names <= {"run_config.yaml"} and not foreign(out)


def resume_checkpoint(cfg: Any, out: Path, per_invocation: frozenset[str]) -> Path:
    """The newest complete checkpoint of the run in ``out``, after checking this config continues
    that run (RunError listing every mismatch otherwise)."""
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
    problems = resume_mismatches(cfg, out, per_invocation) + data_changed(cfg, out, saved.get("data_sha256"))
    problems += inputs_changed(cfg, out, saved.get("inputs_sha256") or {})
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


def inputs_changed(cfg: Any, out: Path, saved: dict[str, str]) -> list[str]:
    """One line per other data file of the run (e.g. kl_anchor_path) whose bytes differ from those
    the run in ``out`` trained on."""
    problems = []
    for key, was in saved.items():
        path = Path(getattr(cfg, key, None) or "")
        now = file_sha256(path) if path.is_file() else "missing"
        if isinstance(was, str) and now != was:
            problems.append(
                f"--resume true: {key} {path} changed since the run in {out} started (sha256 {now[:12]}, "
                f"was {was[:12]}); a resumed run would train on other data: restore the file, or start "
                "over with --overwrite true"
            )
    return problems


def data_changed(cfg: Any, out: Path, saved_sha: str | None) -> list[str]:
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


def resume_mismatches(cfg: Any, out: Path, per_invocation: frozenset[str]) -> list[str]:
    """One line per key that differs from the run being resumed (keys in ``per_invocation`` may)."""

    saved_path = out / "run_config.yaml"
    if not saved_path.is_file():
        return []
    try:
        saved = yaml.safe_load(saved_path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        why = str(e).strip().split("\n")[0] or type(e).__name__
        raise RunError(
            f"--resume true: {saved_path} is unreadable ({why}); restore it, or start over with --overwrite true"
        ) from None
    if not isinstance(saved, dict):
        raise RunError(f"--resume true: {saved_path} is not a mapping of `key: value` lines; restore it")
    types_ = field_types(type(cfg))
    problems = []
    for f in dataclasses.fields(cfg):
        if f.name in per_invocation or f.name not in saved:
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


def prepare_output_dir(cfg: Any, out: Path, ckpt: Path | None) -> None:
    """Rank 0, after every rank checked: create and lock output_dir, clear what an overwrite replaces
    (only files airoad recorded writing there) or an interrupted save left behind, and write
    run_config.yaml first (a killed run can be resumed with `--config output_dir/run_config.yaml
    --resume true`). The lock is released by :func:`airoad.core.base.outputs.release_lock`."""
    out.mkdir(parents=True, exist_ok=True)
    acquire_lock(out, "output_dir")
    for p in out.iterdir():  # debris of a dead process: we hold the lock, nobody else writes here
        if not ours(p.name) or p.name in (LOCK, MANIFEST):
            continue
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    root = out / CHECKPOINTS
    if cfg.overwrite or startup_only(out):
        remove_recorded(out)  # also checkpoints/: it would confuse rotation and a later --resume
    elif ckpt is not None:
        done = set(complete_checkpoints(root))
        for p in root.iterdir():
            if p not in done and p.is_dir() and p.name.rsplit("-", 1)[-1].isdigit():
                if checkpoint_step(p) > checkpoint_step(ckpt):
                    shutil.rmtree(p, ignore_errors=True)  # cut short while saving
    # Every name the run may write, before it writes any: a run killed at any point leaves a dir
    # whose files a later --overwrite knows as airoad's (the tokenizer's are added when saved).
    record(out, [*RUN_FILES, CHECKPOINTS, TEACHER_CACHE_LINK])
    write_run_config(cfg, out)


def checkpoint_step(path: Path) -> int:
    return int(path.name.rsplit("-", 1)[1])


def complete_checkpoints(root: Path) -> list[Path]:
    """Checkpoints under ``root`` that were fully written (STATE_FILE and safetensors adapter
    weights present), oldest first."""
    found = []
    for p in root.glob(f"{CHECKPOINT_PREFIX}-*"):
        if p.name.rsplit("-", 1)[1].isdigit() and (p / "adapter_model.safetensors").is_file():
            if _state_or_none(p) is not None:  # missing or damaged: cut short, never resumed from
                found.append(p)
    return sorted(found, key=checkpoint_step)


def _state_or_none(ckpt: Path) -> dict[str, Any] | None:
    try:
        state = json.loads((ckpt / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = isinstance(state, dict) and all(
        k in state for k in ("step", "train_s", "tokens", "trained_tokens", "rows")
    )
    return state if ok else None


def read_checkpoint_state(ckpt: Path) -> dict[str, Any]:
    state = _state_or_none(ckpt)
    if state is None:
        raise RunError(
            f"{ckpt / STATE_FILE}: missing or damaged; resume from another checkpoint, or start over with --overwrite true"
        )
    return state


def global_batch(cfg: Any) -> int:
    """Examples per optimizer step over the whole job."""
    return cfg.per_device_batch_size * cfg.grad_accum * world()[1]


def exit_status(out: Path, state: Any, printer=print) -> int:
    """0 for a finished run; 128 + signal for an interrupted one (the shell's convention: 130 for
    Ctrl-C, 143 for SIGTERM); 1 for a non-finite loss, with what to do about it."""
    if state.stop_reason == "interrupted":
        return 128 + (state.signal or signal.SIGINT)
    if state.stop_reason != "non_finite_loss":
        return 0
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
