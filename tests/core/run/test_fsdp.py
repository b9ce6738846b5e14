"""Sharded training (FSDP2, PyTorch's fully_shard) on 2 CPU processes (gloo) through
`accelerate launch --config_file configs/accelerate/fsdp.yaml`: the tiny model's loss curve, gradient
norms and saved adapter equal one process's with the same global batch, and the launch really
shards (accelerate alone would train a CPU launch as DDP; core/run/sharding.py turns FSDP on)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, launch_env, sharded_argv

from airoad.core.base.options import load_config
from airoad.sft.run import train
from airoad.sft.schema import TrainConfig

pytest.importorskip("torch.distributed.fsdp")
CONFIG = REPO / "configs" / "accelerate" / "fsdp.yaml"


def accelerate_launch(config: Path, *argv: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = launch_env()
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config)]
    return subprocess.run(
        [*cmd, "-m", "airoad", "train", *argv], capture_output=True, text=True, env=env, timeout=timeout
    )


def test_fsdp2_on_two_cpu_processes_matches_one_process(tiny_model_dir, chat_file, tmp_path):
    from safetensors.torch import load_file

    fsdp_out, single_out = tmp_path / "fsdp", tmp_path / "single"
    res = accelerate_launch(CONFIG, *sharded_argv(tiny_model_dir, chat_file, fsdp_out), "--grad_accum", "2")
    assert res.returncode == 0, res.stderr[-3000:]
    argv = [*sharded_argv(tiny_model_dir, chat_file, single_out), "--grad_accum", "4"]
    train(load_config(TrainConfig, argv)[0], printer=lambda *_: None)

    # it sharded (not accelerate's silent DDP on CPU), said so once, and ran one job
    assert res.stdout.count("sharding: FSDP2 over 2 processes (cpu, gloo)") == 1, res.stdout
    assert "global batch 4 = 1 x 2 accum x 2 process(es)" in res.stdout
    assert res.stdout.count("done: max_steps after 6") == 1

    fsdp, single = (json.loads((d / "train_log.json").read_text()) for d in (fsdp_out, single_out))
    assert [r["step"] for r in fsdp] == [r["step"] for r in single] == [1, 2, 3, 4, 5, 6]
    for a, b in zip(fsdp, single, strict=True):
        # As under DDP (test_ddp.py): the same 4 examples per step; reduce-scatter sums the 2 ranks'
        # gradients and halves them like DDP's all-reduce, so the runs differ only in the order of
        # the sums (~1e-7 relative in fp32 on step 1), which AdamW carries on unshrunk (it divides
        # each entry by its own running size): 2e-5 relative after. Measured: equal to the last bit
        # here (<= 6e-8 with DoRA or KL on).
        rel = 1e-6 if a["step"] == 1 else 2e-5
        assert a["loss"] == pytest.approx(b["loss"], rel=rel) and a["lr"] == pytest.approx(b["lr"])
        # clipping's norm is over the whole gradient, not the rank's shard (a shard's is ~1/sqrt(2))
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=rel)
        assert a["tokens"] == b["tokens"]

    # the adapter was gathered whole (FULL_STATE_DICT) and equals the single process's: weights
    # ~0.2 in size after 6 steps at lr 5e-3; the summation-order difference above, carried through
    # 6 AdamW updates, measured 2.3e-7 absolute here (4e-6 with KL on)
    sharded, whole = (load_file(d / "adapter_model.safetensors") for d in (fsdp_out, single_out))
    assert sharded.keys() == whole.keys() and len(whole) == 28  # 7 targets x 2 layers x (A, B)
    for k, w in whole.items():
        assert sharded[k].shape == w.shape
        assert (sharded[k] - w).abs().max() < 5e-5, k
    info = json.loads((fsdp_out / "run_info.json").read_text())
    assert (info["world_size"], info["global_batch"]) == (2, 4)


def test_fsdp_launches_that_cannot_work_are_refused_in_one_line(monkeypatch):
    import accelerate

    from airoad.core.run.rundir import RunError
    from airoad.core.run.sharding import check_fsdp_launch

    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", "1")
    with pytest.raises(RunError, match=r"runs FSDP2 only \(fsdp_version: 2\); this launch asks for FSDP1"):
        check_fsdp_launch("cpu")
    check_fsdp_launch("cuda")  # FSDP1 on GPUs is accelerate's to run
    monkeypatch.setenv("FSDP_VERSION", "2")
    monkeypatch.setenv("FSDP_RESHARD_AFTER_FORWARD", "true")
    check_fsdp_launch("cpu")
    monkeypatch.setattr(accelerate, "__version__", "1.13.0")  # the root unit, head included, resharded
    with pytest.raises(RunError, match=r"needs accelerate >= 1.14 \(installed: 1.13.0\)"):
        check_fsdp_launch("cuda")
    monkeypatch.setenv("FSDP_RESHARD_AFTER_FORWARD", "false")
    check_fsdp_launch("cuda")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "false")
    monkeypatch.setenv("FSDP_VERSION", "1")
    check_fsdp_launch("cpu")  # not an FSDP launch: nothing to check
