"""Robust runs (issue 5): interrupts, checkpoints and --resume, NaN stops, safe loading, device
errors, atomic writes, and bad input through the train command. Tiny models, offline."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from conftest import CHAT_ROWS, REPO, write_jsonl

from airoad.cli import main as cli
from airoad.core.base.options import ConfigError, load_config
from airoad.core.run import callbacks as cb
from airoad.core.run import rundir
from airoad.sft.run import train
from airoad.sft.schema import TrainConfig

SRC = REPO / "src" / "airoad"
QUIET = {"printer": lambda *_: None}


def run_argv(model_dir, data, out, *extra) -> list[str]:
    return [
        "--base_model",
        str(model_dir),
        "--dataset_path",
        str(data),
        "--output_dir",
        str(out),
        "--grad_accum",
        "2",
        "--learning_rate",
        "5e-3",
        "--warmup_ratio",
        "0.25",
        "--print_every_steps",
        "1",
        *extra,
    ]


def cfg_for(model_dir, data, out, *extra) -> TrainConfig:
    return load_config(TrainConfig, run_argv(model_dir, data, out, *extra))[0]


def sub_env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(REPO / "src"),
    }


def log_rows(out: Path) -> list[dict]:
    return json.loads((out / "train_log.json").read_text())


def metrics(out: Path) -> dict:
    return json.loads((out / "time_metrics.json").read_text())


def record_batches(monkeypatch) -> list[list[int]]:
    """Every training micro-batch's example indices, in the order the collator builds them."""
    from airoad.sft import trainer as tr

    seen: list[list[int]] = []
    orig = tr.Collator.__call__

    def call(self, rows):
        seen.append([r["ex_idx"] for r in rows])
        return orig(self, rows)

    monkeypatch.setattr(tr.Collator, "__call__", call)
    return seen


# --- interrupts -----------------------------------------------------------------------------


@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["INT", "TERM"])
def test_signal_finishes_the_step_saves_everything_and_exits_128_plus_signal(
    tiny_model_dir, chat_file, tmp_path, sig, status
):
    out = tmp_path / "run"
    argv = run_argv(tiny_model_dir, chat_file, out, "--max_steps", "100000", "--save_every_steps", "1000")
    proc = subprocess.Popen(
        [sys.executable, "-m", "airoad", "train", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=sub_env(),
    )
    lines = []
    for line in proc.stdout:  # the run would go on for hours: signal it once step 1 is logged
        lines.append(line)
        if line.split()[:1] == ["1"]:
            proc.send_signal(sig)
            break
    rest, err = proc.communicate(timeout=900)  # generous: CI runners can be very busy
    assert proc.returncode == status, (lines, rest, err)
    assert "Traceback" not in err
    tm = metrics(out)
    assert tm["stop_reason"] == "interrupted" and 1 <= tm["steps"] < 100000
    assert [r["step"] for r in log_rows(out)] == list(range(1, tm["steps"] + 1))
    assert (out / "adapter_model.safetensors").is_file() and (out / "run_config.yaml").is_file()
    # the step in flight finished and was checkpointed, so the run can be resumed from there
    assert (out / "checkpoints" / f"checkpoint-{tm['steps']}" / rundir.STATE_FILE).is_file()
    assert f"done: interrupted after {tm['steps']} steps" in rest


def test_second_ctrl_c_aborts_at_once_and_handlers_are_restored():
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    state = cb.RunState(t_start=0.0)
    stopper = cb.InterruptStop(state)
    control = type("Control", (), {"should_training_stop": False})()
    stopper.on_train_begin(None, None, control)
    try:
        signal.raise_signal(signal.SIGTERM)
        assert state.signal == signal.SIGTERM and not control.should_training_stop  # step goes on
        stopper.on_step_end(None, None, control)
        assert control.should_training_stop and state.stop_reason == "interrupted"
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    finally:
        stopper.restore()
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


# --- checkpoints and --resume ---------------------------------------------------------------

KILLER = """
    # `airoad train`, SIGKILLed in the middle of the optimizer step after global step KILL_AT
    import json, os, signal, sys
    from airoad.sft import trainer as tr

    kill_at, order = int(os.environ["KILL_AT"]), open(os.environ["ORDER_FILE"], "a")
    loss, collate = tr.AiroadTrainer.compute_loss, tr.Collator.__call__

    def compute_loss(self, model, inputs, *a, **k):
        if model.training and self.state.global_step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return loss(self, model, inputs, *a, **k)

    def call(self, rows):
        order.write(json.dumps([r["ex_idx"] for r in rows]) + "\\n")
        order.flush()
        return collate(self, rows)

    tr.AiroadTrainer.compute_loss, tr.Collator.__call__ = compute_loss, call
    from airoad.cli import main
    sys.exit(main(sys.argv[1:]))
"""


def test_sigkilled_run_resumes_to_the_same_steps_data_order_lr_and_loss(
    tiny_model_dir, chat_file, tmp_path, monkeypatch
):
    extra = ("--max_steps", "8", "--save_every_steps", "2")  # lora_dropout 0.05: RNG state matters
    killer = tmp_path / "killer.py"
    killer.write_text(textwrap.dedent(KILLER))
    out, order_file = tmp_path / "killed", tmp_path / "order.jsonl"
    env = {**sub_env(), "KILL_AT": "5", "ORDER_FILE": str(order_file)}
    argv = run_argv(tiny_model_dir, chat_file, out, *extra)
    res = subprocess.run(
        [sys.executable, str(killer), "train", *argv], capture_output=True, text=True, env=env, timeout=900
    )
    assert res.returncode == -signal.SIGKILL, res.stderr
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-2", "checkpoint-4"]
    assert [r["step"] for r in log_rows(out)] == [1, 2, 3, 4, 5]  # the log ran ahead of checkpoint-4
    killed_order = [json.loads(line) for line in order_file.read_text().splitlines()]

    batches = record_batches(monkeypatch)
    unbroken, _ = train(cfg_for(tiny_model_dir, chat_file, tmp_path / "unbroken", *extra), **QUIET)
    unbroken_order = list(batches)
    batches.clear()
    printed = []
    # the saved run_config.yaml is the documented way to resume
    cfg = load_config(TrainConfig, ["--config", str(out / "run_config.yaml"), "--resume", "true"])[0]
    resumed, _ = train(cfg, printer=printed.append)
    assert any("resuming from" in line and "checkpoint-4" in line for line in printed)

    # data order: the 4 steps before the checkpoint, then the 4 after it (into the second epoch),
    # as if never stopped; the resumed loader skips the consumed batches without building them
    # (the loader also builds one batch ahead, hence the slices)
    n = 4 * 2  # steps x grad_accum
    assert killed_order[:n] == unbroken_order[:n]
    assert batches[:n] == unbroken_order[n : 2 * n]
    a, b = log_rows(resumed), log_rows(unbroken)
    assert [r["step"] for r in a] == list(range(1, 9))  # whole run, no step twice
    for ra, rb in zip(a, b, strict=True):
        assert ra["lr"] == pytest.approx(rb["lr"], rel=1e-9)
        assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-5)
        assert ra["tokens"] == rb["tokens"]
    ta, tb = metrics(resumed), metrics(unbroken)
    assert ta["steps"] == tb["steps"] == 8 and ta["resumed_from_step"] == 4
    assert (ta["train_tokens"], ta["trained_tokens"]) == (tb["train_tokens"], tb["trained_tokens"])
    assert ta["stop_reason"] == "max_steps"
    from safetensors.torch import load_file

    wa, wb = (load_file(d / "adapter_model.safetensors") for d in (resumed, unbroken))
    for name in wb:
        torch.testing.assert_close(wa[name], wb[name], rtol=1e-4, atol=1e-6)


@pytest.fixture(scope="module")
def trained_short_run(tiny_model_dir, tmp_path_factory) -> Path:
    """A finished 4-step run with checkpoints at steps 2 and 4, trained once for this module."""
    root = tmp_path_factory.mktemp("short-run")
    data = write_jsonl(root / "train.jsonl", CHAT_ROWS * 3)
    cfg = cfg_for(tiny_model_dir, data, root / "run", "--max_steps", "4", "--save_every_steps", "2")
    out, _ = train(cfg, **QUIET)
    return out


@pytest.fixture()
def short_run(trained_short_run, tmp_path) -> Path:
    """This test's own copy of the short run and its data (the tests change both), with
    run_config.yaml pointing at the copies, as if the run had been trained here."""
    out = tmp_path / "run"
    shutil.copytree(trained_short_run, out)
    data = tmp_path / "short-train.jsonl"
    shutil.copyfile(trained_short_run.parent / "train.jsonl", data)
    saved = yaml.safe_load((out / "run_config.yaml").read_text())
    saved.update(dataset_path=str(data), output_dir=str(out))
    (out / "run_config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    return out


def test_resume_refuses_what_would_not_continue_the_run(short_run, tmp_path, capsys):
    saved = ["train", "--config", str(short_run / "run_config.yaml")]

    def errors(*argv) -> list[str]:
        assert cli([*saved, *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert all(line.startswith("error: ") for line in err) and "Traceback" not in "\n".join(err)
        return err

    (line,) = errors()  # a finished run's dir is not silently reused
    assert "not empty" in line and "--resume true" in line and "--overwrite true" in line
    (line,) = errors("--resume", "true")
    assert "already finished" in line and "nothing to resume" in line
    lines = errors("--resume", "true", "--max_steps", "6", "--lora_r", "4")
    assert len(lines) == 2 and "`max_steps` is 6 but the run" in lines[0] and "`lora_r`" in lines[1]
    (line,) = errors("--resume", "true", "--overwrite", "true")
    assert "pick one" in line
    (line,) = errors("--resume", "true", "--output_dir", str(tmp_path / "fresh"))
    assert "has no checkpoint" in line and not (tmp_path / "fresh").exists()
    data = Path(yaml.safe_load((short_run / "run_config.yaml").read_text())["dataset_path"])
    data.write_text(data.read_text() + data.read_text().splitlines(keepends=True)[0])  # one row more
    (line,) = errors("--resume", "true")
    assert f"dataset_path {data} changed since the run" in line and "restore the file" in line


def test_resume_skips_a_checkpoint_cut_short_while_saving(short_run, tiny_model_dir, chat_file, tmp_path):
    ckpts = short_run / "checkpoints"
    (ckpts / "checkpoint-4" / rundir.STATE_FILE).unlink()  # as if killed while HF was writing it
    assert [p.name for p in rundir.complete_checkpoints(ckpts)] == ["checkpoint-2"]
    cfg = load_config(TrainConfig, ["--config", str(short_run / "run_config.yaml"), "--resume", "true"])[0]
    out, trainer = train(cfg, **QUIET)
    assert trainer.run_state.resumed_from == 2 and metrics(out)["steps"] == 4
    assert [r["step"] for r in log_rows(out)] == [1, 2, 3, 4]
    assert (ckpts / "checkpoint-4" / rundir.STATE_FILE).is_file()  # rewritten whole


def test_overwrite_starts_over_without_the_old_checkpoints(short_run, capsys):
    assert (short_run / "checkpoints" / "checkpoint-4").is_dir()
    argv = ["train", "--config", str(short_run / "run_config.yaml"), "--overwrite", "true"]
    assert cli([*argv, "--max_steps", "1", "--save_every_steps", "0"]) == 0
    assert not (short_run / "checkpoints").exists()
    assert [r["step"] for r in log_rows(short_run)] == [1]


# --- NaN / inf ------------------------------------------------------------------------------


def test_nan_loss_stops_keeps_the_last_good_checkpoint_and_saves_no_bad_adapter(
    tiny_model_dir, chat_file, tmp_path, monkeypatch, capsys
):
    from safetensors.torch import load_file

    from airoad.sft import trainer as tr

    loss_fn, calls = tr.head_loss, []

    def poisoned(*a, **k):  # the loss turns NaN from step 4's first micro-batch (grad_accum 2)
        calls.append(1)
        total, ce, kl = loss_fn(*a, **k)
        return (total * float("nan"), ce * float("nan"), kl) if len(calls) >= 7 else (total, ce, kl)

    monkeypatch.setattr(tr, "head_loss", poisoned)
    out = tmp_path / "run"
    # step 4 is both the bad step and a checkpoint step: it must not be saved
    argv = run_argv(tiny_model_dir, chat_file, out, "--max_steps", "8", "--save_every_steps", "2")
    assert cli(["train", *argv]) == 1
    err = capsys.readouterr().err
    assert "loss is nan at step 4" in err and "last good checkpoint kept" in err and "checkpoint-2" in err
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-2"]
    good = load_file(out / "checkpoints" / "checkpoint-2" / "adapter_model.safetensors")
    assert all(torch.isfinite(t).all() for t in good.values())
    assert not (out / "adapter_model.safetensors").exists()
    tm = metrics(out)
    assert tm["stop_reason"] == "non_finite_loss" and tm["steps"] == 4
    rows = log_rows(out)
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and math.isnan(rows[-1]["loss"])


def test_non_finite_weights_block_a_checkpoint_even_with_a_finite_loss():
    model = torch.nn.Linear(2, 2)
    with torch.no_grad():
        model.weight[0, 0] = float("inf")
    state = cb.RunState(t_start=0.0)
    control = type("Control", (), {"should_save": True, "should_training_stop": False})()
    cb.NonFiniteStop(state).on_step_end(None, type("S", (), {"global_step": 6})(), control, model=model)
    assert not control.should_save and control.should_training_stop
    assert (
        state.stop_reason == "non_finite_loss" and "`weight` is not finite after step 6" in state.non_finite
    )


# --- safe by default ------------------------------------------------------------------------

UNSAFE = {
    r"\byaml\.(unsafe_)?load\(": "YAML only through yaml.safe_load",
    r"\bimport pickle\b|\bpickle\.": "no pickle",
    r"(?<![\w.])(eval|exec)\(": "no eval/exec of strings",
    r"\btorch\.load\(": "weights load from safetensors only",
    r"trust_remote_code\s*=\s*True": "remote code only when the user asks",
}


def test_source_has_no_code_executing_loaders():
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        for n, line in enumerate(path.read_text().splitlines(), start=1):
            for pattern, why in UNSAFE.items():
                if re.search(pattern, line.split("#")[0]):
                    bad.append(f"{path.relative_to(REPO)}:{n}: {why}: {line.strip()}")
    assert not bad, "\n".join(bad)
    loads = [call for path in sorted(SRC.rglob("*.py")) for call in weight_loading_calls(path)]
    # one loader serves every command (train, infer, data tools); more call sites must be safe too
    assert {where.split(":")[0] for where, _ in loads} == {"src/airoad/core/model/loading.py"}, loads
    unsafe = [where for where, safe in loads if not safe]
    assert not unsafe, f"weights loaded without use_safetensors=True: {unsafe}"
    assert TrainConfig().trust_remote_code is False


def weight_loading_calls(path: Path) -> list[tuple[str, bool]]:
    """(file:line, passes use_safetensors=True) for every call that loads causal-LM weights:
    ``AutoModelForCausalLM.from_pretrained(...)`` or ``load_widened(AutoModelForCausalLM, ...)``."""
    import ast

    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        direct = isinstance(f, ast.Attribute) and f.attr == "from_pretrained"
        direct = direct and isinstance(f.value, ast.Name) and f.value.id == "AutoModelForCausalLM"
        widened = isinstance(f, ast.Name) and f.id == "load_widened" and node.args
        widened = widened and isinstance(node.args[0], ast.Name) and node.args[0].id == "AutoModelForCausalLM"
        if direct or widened:
            safe = any(
                k.arg == "use_safetensors" and isinstance(k.value, ast.Constant) and k.value.value is True
                for k in node.keywords
            ) or any(k.arg == "gguf_file" for k in node.keywords)  # GGUF: tensors and metadata, no code
            found.append((f"{path.relative_to(REPO)}:{node.lineno}", safe))
    return found


def test_yaml_tags_that_would_run_code_are_refused(tmp_path):
    witness = tmp_path / "pwned"
    y = tmp_path / "evil.yaml"
    y.write_text(f'max_steps: !!python/object/apply:os.system ["touch {witness}"]\n')
    with pytest.raises(ConfigError, match=r"evil.yaml:1: invalid YAML"):
        load_config(TrainConfig, ["--config", str(y)])
    assert not witness.exists()


def test_pickled_base_weights_are_not_loaded(tiny_model_dir, chat_file, tmp_path, capsys):
    from safetensors.torch import load_file

    pickled = tmp_path / "pickled-model"
    pickled.mkdir()
    for p in tiny_model_dir.iterdir():
        if p.suffix != ".safetensors":
            (pickled / p.name).write_bytes(p.read_bytes())
    torch.save(load_file(tiny_model_dir / "model.safetensors"), pickled / "pytorch_model.bin")
    out = tmp_path / "run"
    assert cli(["train", *run_argv(pickled, chat_file, out, "--max_steps", "1")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "cannot load safetensors weights" in line and "pickled .bin weights are never loaded" in line
    assert not out.exists()  # nothing is touched before the weights are known to load


# --- devices --------------------------------------------------------------------------------


def test_load_in_4bit_off_cuda_is_one_clear_line_before_anything_loads(tmp_path, capsys, monkeypatch):
    import airoad.sft.run as run

    monkeypatch.setattr(run, "read_data", lambda *a: pytest.fail("data must not be read"))
    out = tmp_path / "o"
    rc = cli(["train", "--load_in_4bit", "true", "--device", "cpu", "--output_dir", str(out)])
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and line.startswith("error: load_in_4bit needs CUDA and bitsandbytes; this run is on cpu")
    assert "load_in_4bit: false" in line and not out.exists()


def test_load_in_4bit_without_bitsandbytes_names_the_install(monkeypatch):
    import importlib.util

    from airoad.core.model.devices import DeviceError, check_4bit

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DeviceError, match="bitsandbytes is not installed: `pip install bitsandbytes`"):
        check_4bit("cuda")


def test_liger_without_the_package_names_the_install(monkeypatch):
    import importlib.util

    from airoad.core.model.devices import DeviceError, check_liger

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(
        DeviceError, match="liger-kernel is not installed: `pip install liger-kernel`, or set `liger: false`"
    ):
        check_liger("cuda")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--device", "cpu", "--dtype", "float16"], "float16 training is not supported on CPU"),
        (["--device", "cuda"], "cuda requested but no CUDA GPU is visible"),
        (["--device", "mps"], "mps requested but MPS is not available"),
        (["--device", "tpu"], "--device = 'tpu' must be one of auto, cpu, cuda, mps"),
    ],
)
def test_device_requests_the_machine_cannot_meet(argv, message, tmp_path, capsys):
    if "cuda" in argv and torch.cuda.is_available() or "mps" in argv and torch.backends.mps.is_available():
        pytest.skip("this machine has the device")
    assert cli(["train", *argv, "--output_dir", str(tmp_path / "o")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert message in line


def test_auto_device_order_and_fp32_on_cpus_without_bf16(monkeypatch):
    from airoad.core.model import devices

    for cuda, mps, expected in ((True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")):
        monkeypatch.setattr(devices.torch.cuda, "is_available", lambda c=cuda: c)
        monkeypatch.setattr(devices.torch.backends.mps, "is_available", lambda m=mps: m)
        assert devices.pick_device("auto") == expected
    for has_bf16, expected in ((False, torch.float32), (True, torch.bfloat16)):
        monkeypatch.setattr(devices, "cpu_has_bf16", lambda b=has_bf16: b)
        assert devices.pick_dtype("cpu", "auto") == expected
    assert devices.pick_dtype("cpu", "float32") == torch.float32  # an explicit choice wins
    assert devices.pick_dtype("mps", "auto") == torch.float32  # MPS trains in fp32 unless told


def test_float16_training_on_mps_is_refused_with_the_fix():
    from airoad.core.model import devices

    with pytest.raises(
        devices.DeviceError, match="float16 training is not supported on MPS.*--dtype float32"
    ):
        devices.check_training_dtype("mps", torch.float16)
    for device, dtype in (("mps", torch.float32), ("cuda", torch.float16), ("cpu", torch.bfloat16)):
        devices.check_training_dtype(device, dtype)  # no error


# --- atomic writes --------------------------------------------------------------------------


def test_a_crash_while_writing_leaves_the_old_file_and_no_debris(tmp_path, monkeypatch):
    from airoad.core.base import io

    target = tmp_path / "time_metrics.json"
    io.write_json(target, {"old": True})

    def crash(fd):
        raise OSError("disk full")

    monkeypatch.setattr(io.os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        io.write_json(target, {"new": True})
    assert json.loads(target.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["time_metrics.json"]


# --- bad input through `airoad train`: one line each, exit 2, nothing written ---------------

U = {"role": "user", "content": "q"}
A = {"role": "assistant", "content": "a"}
BAD_ROWS = [
    ("{not json", ":2: invalid JSON"),
    ('"just a string"', ":2: row is a JSON str, not an object"),
    (json.dumps({"messages": {"role": "user"}}), ":2: `messages` must be a list"),
    (json.dumps({"messages": [U, {"role": "robot", "content": "a"}]}), ":2: messages[1] has unknown role"),
    (json.dumps({"messages": [U]}), ":2: no assistant turn"),
    (
        json.dumps({"messages": [U, {"role": "assistant", "content": ""}]}),
        ":2: messages[1] (assistant) has empty",
    ),
    (json.dumps({"messages": [U, {"role": "assistant", "content": ["a"]}]}), "content must be a string"),
    (json.dumps({"instruction": "x"}), ":2: Alpaca row without `output`"),
]


@pytest.mark.parametrize("line, needle", BAD_ROWS, ids=[n.strip(":2 ") for _, n in BAD_ROWS])
def test_train_reports_each_bad_row_with_file_and_line(line, needle, tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps(CHAT_ROWS[0]) + "\n" + line + "\n")
    out = tmp_path / "o"
    assert cli(["train", "--dataset_path", str(data), "--output_dir", str(out), "--device", "cpu"]) == 2
    (err,) = capsys.readouterr().err.strip().splitlines()
    assert err.startswith(f"error: {data}:") and needle in err and not out.exists()


def test_train_reports_every_problem_of_train_and_dev_files_at_once(tmp_path, capsys):
    train_f = write_jsonl(tmp_path / "t.jsonl", ["{x", CHAT_ROWS[0], "[]"])
    dev = tmp_path / "dev.jsonl"
    dev.write_bytes(b"\xff\xfe not utf-8\n")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    argv = [
        "train",
        "--dataset_path",
        str(train_f),
        "--dev_path",
        str(dev),
        "--output_dir",
        str(tmp_path / "o"),
    ]
    assert cli([*argv, "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert [e.split(": ")[1] for e in err] == [f"{train_f}:1", f"{train_f}:3", f"{dev}:1"]
    assert "not UTF-8" in err[2]
    assert cli(["train", "--dataset_path", str(empty), "--output_dir", str(tmp_path / "o")]) == 2
    assert "empty file" in capsys.readouterr().err
    assert cli(["train", "--dataset_path", str(tmp_path / "missing.jsonl")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_liger_off_cuda_is_one_clear_line_before_anything_loads(tmp_path, capsys, monkeypatch):
    import airoad.sft.run as run

    monkeypatch.setattr(run, "read_data", lambda *a: pytest.fail("data must not be read"))
    out = tmp_path / "o"
    rc = cli(["train", "--liger", "true", "--device", "cpu", "--output_dir", str(out)])
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and line.startswith("error: liger needs a CUDA GPU (Triton kernels); this run is on cpu")
    assert "liger: false" in line and not out.exists()


def test_liger_reaches_the_trainer_with_loss_kernels_off():
    from transformers import TrainingArguments

    from airoad.core.base.options import load_config
    from airoad.core.run.context import RunContext
    from airoad.core.run.fit import training_kwargs
    from airoad.sft.schema import TrainConfig

    def training_args(cfg, device, dtype, has_dev):
        ctx = RunContext(cfg, Path(cfg.output_dir), None, device, dtype, None, None, None, 0.0)
        return TrainingArguments(**training_kwargs(ctx, has_dev))

    cfg, _ = load_config(TrainConfig, ["--liger", "true"])
    args = training_args(cfg, "cpu", __import__("torch").float32, False)
    assert args.use_liger_kernel is True
    assert args.liger_kernel_config["swiglu"] and not args.liger_kernel_config["fused_linear_cross_entropy"]
    off, _ = load_config(TrainConfig, [])
    assert training_args(off, "cpu", __import__("torch").float32, False).use_liger_kernel is False
