"""Data-parallel training under torchrun: 2 CPU processes (gloo) on the tiny model match a
single-process run with the same global batch, and only rank 0 prints and writes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO, launch_env, sharded_argv, write_jsonl

from airoad.core.base.options import load_config
from airoad.core.run.rundir import RUN_FILES
from airoad.sft.run import train
from airoad.sft.schema import TrainConfig

pytest.importorskip("torch.distributed.run")


def torchrun(*argv: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = launch_env()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    return subprocess.run(
        [*cmd, "-m", "airoad", "train", *argv], capture_output=True, text=True, env=env, timeout=timeout
    )


def test_two_gloo_ranks_match_one_process_with_the_same_global_batch(tiny_model_dir, chat_file, tmp_path):
    ddp_out, single_out = tmp_path / "ddp", tmp_path / "single"
    res = torchrun(*sharded_argv(tiny_model_dir, chat_file, ddp_out), "--grad_accum", "2")
    assert res.returncode == 0, res.stderr[-3000:]
    argv = [*sharded_argv(tiny_model_dir, chat_file, single_out), "--grad_accum", "4"]
    train(load_config(TrainConfig, argv)[0], printer=lambda *_: None)

    # one job, one set of lines and files
    assert res.stdout.count("data: 12 loaded") == 1 and res.stdout.count("done: max_steps after 6") == 1
    assert "global batch 4 = 1 x 2 accum x 2 process(es)" in res.stdout
    names = {p.name for p in ddp_out.iterdir()}
    assert set(RUN_FILES) <= names and not [n for n in names if n.startswith(".")]  # no leftovers

    ddp, single = (json.loads((d / "train_log.json").read_text()) for d in (ddp_out, single_out))
    assert [r["step"] for r in ddp] == [r["step"] for r in single] == [1, 2, 3, 4, 5, 6]
    for a, b in zip(ddp, single, strict=True):
        # The same 4 examples per step, gradients averaged over ranks = one process's 4-example step,
        # up to the order of the sums: one process adds the 4 micro-batch gradients in turn, gloo adds
        # each rank's pair, then the ranks (~1e-7 relative in fp32). Step 1 runs on identical weights;
        # later steps inherit the differing rounding through AdamW, which divides each gradient entry by
        # its own running size and so passes a relative error on unshrunk, whatever the entry's size.
        rel = 1e-6 if a["step"] == 1 else 2e-5
        assert a["loss"] == pytest.approx(b["loss"], rel=rel) and a["lr"] == pytest.approx(b["lr"])
        assert a["tokens"] == b["tokens"]  # whole-job count: both ranks' tokens summed
    tm, tm1 = (json.loads((d / "time_metrics.json").read_text()) for d in (ddp_out, single_out))
    assert tm["steps"] == tm1["steps"] == 6 and tm["train_tokens"] == tm1["train_tokens"]
    assert tm["wall_tokens_per_s"] == pytest.approx(tm["train_tokens"] / tm["train_s"], rel=1e-2)
    info = json.loads((ddp_out / "run_info.json").read_text())
    assert (info["world_size"], info["global_batch"]) == (2, 4)


def test_bad_data_under_torchrun_is_reported_once_and_nothing_is_written(tmp_path):
    bad = write_jsonl(tmp_path / "bad.jsonl", ["{oops", '{"messages": "hi"}'])
    out = tmp_path / "o"
    res = torchrun("--dataset_path", str(bad), "--output_dir", str(out))
    assert res.returncode != 0
    errors = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        f"error: {bad}:1: invalid JSON (Expecting property name enclosed in double quotes at column 2); "
        "one JSON object per line",
        f'error: {bad}:2: `messages` must be a list of {{"role", "content"}} objects',
    ]
    assert not out.exists()


@pytest.mark.parametrize(
    "name, kind", [("ddp", "MULTI_GPU"), ("fsdp", "FSDP"), ("deepspeed_zero2", "DEEPSPEED")]
)
def test_shipped_accelerate_configs_are_valid_and_documented(name, kind):
    from accelerate.commands.config.config_args import ClusterConfig

    path = REPO / "configs" / "accelerate" / f"{name}.yaml"
    cfg = ClusterConfig.from_yaml_file(str(path))  # accelerate's own loader rejects unknown keys
    assert cfg.distributed_type.value == kind and cfg.mixed_precision == "no"
    first = path.read_text().splitlines()[0]
    assert first.startswith(
        f"# accelerate launch --config_file configs/accelerate/{name}.yaml -m airoad train"
    )
    readme = (REPO / "README.md").read_text()
    assert f"| `{name}.yaml` |" in readme and "## When things go wrong" in readme
    if kind == "FSDP":  # FSDP2: the one that runs on CPU processes too (tests/core/run/test_fsdp.py)
        assert cfg.fsdp_config["fsdp_version"] == 2
        assert cfg.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"  # the adapter saved whole
    if kind == "DEEPSPEED":
        assert cfg.deepspeed_config["zero_stage"] == 2
