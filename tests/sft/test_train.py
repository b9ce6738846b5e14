"""End-to-end `airoad train` on a tiny random Qwen2 with the real tokenizer (seconds, offline)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest
import torch
import yaml
from conftest import BF16, CHAT_ROWS, FP32, REPO, cfg_for, needs_bf16, train_args, write_jsonl

from airoad.cli import main as cli
from airoad.core.base.options import load_config
from airoad.core.data.chat_data import file_sha256
from airoad.core.run.rundir import RUN_FILES
from airoad.sft.run import train
from airoad.sft.schema import TrainConfig


def tokenizer_files(tok, tmp_path) -> set[str]:
    d = tmp_path / "tokfiles"
    tok.save_pretrained(d)
    return {p.name for p in d.iterdir()}


def test_cli_run_writes_exactly_the_promised_files(
    tiny_model_dir, chat_file, tmp_path, qwen_tokenizer, capsys
):
    out = tmp_path / "run"
    rc = cli(
        [
            "train",
            "--base_model",
            str(tiny_model_dir),
            "--dataset_path",
            str(chat_file),
            "--dev_path",
            str(chat_file),
            "--eval_every_steps",
            "3",
            "--output_dir",
            str(out),
            "--max_steps",
            "6",
            "--print_every_steps",
            "2",
            "--learning_rate",
            "1e-2",
        ]
    )
    assert rc == 0
    assert {p.name for p in out.iterdir()} == set(RUN_FILES) | tokenizer_files(qwen_tokenizer, tmp_path)
    printed = capsys.readouterr().out
    assert "data: 12 loaded (9 ChatML, 3 Alpaca wrapped)" in printed and "trainable" in printed
    assert "   step     loss       ce       kl        lr    tok/s  elapsed      eta" in printed
    # every pause is announced: loading, each dev eval (before it runs), saving; then a summary
    lines = printed.splitlines()
    assert lines.index(f"loading model: {tiny_model_dir}") < next(
        i for i, line in enumerate(lines) if line.startswith("model: ")
    )
    evals = [i for i, line in enumerate(lines) if line.endswith("evaluating on 12 dev examples ...")]
    assert [lines[i].split()[0] for i in evals] == ["3", "6"]
    assert all(lines[i + 1].split()[:2] == [lines[i].split()[0], "eval_loss"] for i in evals)
    assert any(
        line.startswith(f"saving the adapter, tokenizer, logs and loss curve to {out}") for line in lines
    )
    summary = next(line for line in lines if line.startswith("summary: "))
    assert "dev loss" in summary and "tokens/s in training steps" in summary and "with the" in summary
    assert lines[-1] == (
        f"results: adapter {out / 'adapter_model.safetensors'}; loss curve {out / 'loss_curve.png'}; "
        f"logs {out / 'train_log.csv'}"
    )

    rows = list(csv.DictReader((out / "train_log.csv").open()))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert list(rows[0]) == [
        "step",
        "loss",
        "ce",
        "kl",
        "lr",
        "grad_norm",
        "tokens",
        "elapsed_s",
        "eval_loss",
    ]
    assert [r["eval_loss"] != "" for r in rows] == [False, False, True, False, False, True]
    assert json.loads((out / "train_log.json").read_text())[-1]["step"] == 6

    tm = json.loads((out / "time_metrics.json").read_text())
    for key in (
        "setup_s",
        "train_s",
        "total_s",
        "steps",
        "steps_per_s",
        "eval_s",
        "train_tokens",
        "step_tokens_per_s",
        "wall_tokens_per_s",
        "stop_reason",
    ):
        assert key in tm
    # two rates, named apart: the live line's (training steps only) and the one with the dev evals
    assert tm["eval_s"] > 0 and tm["step_tokens_per_s"] > tm["wall_tokens_per_s"]
    assert tm["step_tokens_per_s"] == pytest.approx(
        tm["train_tokens"] / (tm["train_s"] - tm["eval_s"]), rel=1e-2
    )
    assert tm["wall_tokens_per_s"] == pytest.approx(tm["train_tokens"] / tm["train_s"], rel=1e-2)
    assert (
        tm["steps"] == 6
        and tm["stop_reason"] == "max_steps"
        and tm["train_tokens"] == int(rows[-1]["tokens"])
    )

    info = json.loads((out / "run_info.json").read_text())
    assert info["data"]["sha256"] == file_sha256(chat_file) and info["seed"] == 42
    assert {"torch", "transformers", "peft", "trl"} <= set(info["versions"])
    # the saved config reruns the same job
    again, _ = load_config(TrainConfig, ["--config", str(out / "run_config.yaml")])
    assert again.max_steps == 6 and again.base_model == str(tiny_model_dir)
    assert (out / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"


def _adapter_reproduces_logits(model_dir, data, out, dtype_flag, **tol) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out, trainer = train(cfg_for(model_dir, data, out, *dtype_flag), printer=lambda *_: None)
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    trainer.model.eval()
    with torch.no_grad():
        expected = trainer.model(input_ids=ids).logits
    dtype = getattr(torch, dtype_flag[1])
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    loaded = PeftModel.from_pretrained(base, out).eval()
    assert next(loaded.base_model.model.model.parameters()).dtype == dtype
    with torch.no_grad():
        # bf16 training runs under autocast, whose outputs accelerate returns as fp32
        torch.testing.assert_close(loaded(input_ids=ids).logits.float(), expected.float(), **tol)


def test_adapter_loads_with_plain_peft_and_reproduces_logits(tiny_model_dir, chat_file, tmp_path):
    _adapter_reproduces_logits(tiny_model_dir, chat_file, tmp_path / "run", FP32)


@needs_bf16
def test_bf16_adapter_loads_with_plain_peft_and_reproduces_bf16_logits(tiny_model_dir, chat_file, tmp_path):
    # bf16 keeps 8 significant bits: one rounding step of a logit is ~0.4 %
    _adapter_reproduces_logits(tiny_model_dir, chat_file, tmp_path / "run", BF16, rtol=1.6e-2, atol=1e-2)


@pytest.mark.parametrize("dtype_flag", [FP32, pytest.param(BF16, marks=needs_bf16)], ids=lambda f: f[1])
@pytest.mark.parametrize("dora", [False, True], ids=["lora", "dora"])
def test_adapters_change_and_base_weights_do_not(tiny_model_dir, chat_file, tmp_path, dora, dtype_flag):
    from transformers import AutoModelForCausalLM

    dtype = getattr(torch, dtype_flag[1])
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    cfg = cfg_for(
        tiny_model_dir,
        chat_file,
        tmp_path / "run",
        "--use_dora",
        str(dora),
        "--lora_dropout",
        "0",
        *dtype_flag,
    )
    _, trainer = train(cfg, printer=lambda *_: None)
    named = dict(trainer.model.named_parameters())
    lora_b = [p for n, p in named.items() if "lora_B" in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)  # B starts at zero
    if dora:
        assert any("lora_magnitude_vector" in n for n in named)
    trained_base = {n: p for n, p in named.items() if "lora_" not in n}
    assert not any(p.requires_grad for p in trained_base.values())
    for name, p in trained_base.items():
        key = name.replace("base_model.model.", "", 1).replace(".base_layer", "")
        # bit for bit: the base as loaded in the run's precision, untouched by training
        torch.testing.assert_close(p.detach(), base[key].to(dtype), rtol=0, atol=0)


def test_kl_is_zero_at_step_zero_and_positive_after(tiny_model_dir, chat_file, tmp_path):
    cfg = cfg_for(tiny_model_dir, chat_file, tmp_path / "run", "--kl_lambda", "1.0", "--kl_tau", "2.0")
    out, trainer = train(cfg, printer=lambda *_: None)
    rows = json.loads((out / "train_log.json").read_text())
    assert abs(rows[0]["kl"]) < 1e-6  # step 1 is computed with fresh adapters (B = 0)
    assert rows[-1]["kl"] > 1e-4
    assert rows[-1]["loss"] == pytest.approx(rows[-1]["ce"] + 1.0 * 4.0 * rows[-1]["kl"])


def test_time_limit_stops_cleanly_and_saves(tiny_model_dir, chat_file, tmp_path):
    cfg = cfg_for(
        tiny_model_dir, chat_file, tmp_path / "run", "--max_steps", "500", "--max_minutes", "0.0001"
    )
    out, _ = train(cfg, printer=lambda *_: None)
    tm = json.loads((out / "time_metrics.json").read_text())
    assert tm["stop_reason"] == "time_limit" and 1 <= tm["steps"] < 500
    assert (out / "adapter_model.safetensors").is_file()


def test_plateau_stop(tiny_model_dir, chat_file, tmp_path):
    cfg = cfg_for(
        tiny_model_dir,
        chat_file,
        tmp_path / "run",
        "--max_steps",
        "200",
        "--learning_rate",
        "1e-12",
        "--patience",
        "3",
        "--min_delta",
        "0.5",
        "--early_stop_min_steps",
        "0",
    )
    out, trainer = train(cfg, printer=lambda *_: None)
    tm = json.loads((out / "time_metrics.json").read_text())
    assert tm["stop_reason"] == "plateau" and tm["steps"] == 4  # best at step 1, no gain for 3 steps


def test_eval_early_stop(tiny_model_dir, chat_file, tmp_path):
    cfg = cfg_for(
        tiny_model_dir,
        chat_file,
        tmp_path / "run",
        "--max_steps",
        "200",
        "--learning_rate",
        "1e-12",
        "--dev_path",
        str(chat_file),
        "--eval_every_steps",
        "2",
        "--eval_early_stop",
        "true",
        "--eval_patience",
        "2",
        "--min_delta",
        "0.5",
        "--early_stop_min_steps",
        "0",
    )
    out, _ = train(cfg, printer=lambda *_: None)
    tm = json.loads((out / "time_metrics.json").read_text())
    assert tm["stop_reason"] == "eval_plateau" and tm["steps"] == 6


def test_non_empty_output_dir_is_refused_and_untouched(tiny_model_dir, chat_file, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "mine.txt").write_text("precious")
    rc = cli(
        [
            "train",
            "--base_model",
            str(tiny_model_dir),
            "--dataset_path",
            str(chat_file),
            "--output_dir",
            str(out),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "not empty" in err[0] and "--overwrite" in err[0]
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
    afile = tmp_path / "f.txt"
    afile.write_text("x")
    assert cli(["train", "--dataset_path", str(chat_file), "--output_dir", str(afile)]) == 2
    assert "is a file" in capsys.readouterr().err


def test_bad_data_fails_before_model_loads(chat_file, tmp_path, capsys, monkeypatch):
    import airoad.core.model.loading as loading

    def boom(*a, **k):
        raise AssertionError("model must not load")

    monkeypatch.setattr(loading, "load_causal_lm", boom)
    bad = write_jsonl(
        tmp_path / "bad.jsonl", [CHAT_ROWS[0], "{oops", {"messages": [{"role": "bot", "content": "x"}]}]
    )
    rc = cli(["train", "--dataset_path", str(bad), "--output_dir", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert err[0].startswith(f"error: {bad}:2: invalid JSON") and err[1].startswith(f"error: {bad}:3: ")
    assert "Traceback" not in "\n".join(err)
    assert not (tmp_path / "o").exists()


def test_config_errors_exit_2_one_line_each(capsys):
    assert cli(["train", "--lora_r", "0", "--kl_tau", "-1", "--bogus", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("error: ") for line in err)


def test_version_flag():
    from airoad import __version__

    res = subprocess.run([sys.executable, "-m", "airoad", "--version"], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.strip() == f"airoad {__version__}"


def test_cli_help_imports_no_torch_and_module_entry_works():
    code = "import sys; from airoad.cli import main; main(['--help']); assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    res = subprocess.run([sys.executable, "-m", "airoad", "train", "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "--kl_lambda" in res.stdout and "--lora_target_mode" in res.stdout
    res = subprocess.run([sys.executable, "-m", "airoad", "trian"], capture_output=True, text=True)
    assert res.returncode == 2 and "did you mean `airoad train`?" in res.stderr


def test_seed_script_shim_is_the_cli():
    res = subprocess.run(
        [sys.executable, str(REPO / "scripts/slm/qwen05b_lora_train.py"), "--lora_r", "0"],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 2 and "`lora_r`" not in res.stderr and "--lora_r = 0 must be > 0" in res.stderr


def test_run_config_yaml_is_plain_yaml_and_reruns_the_job_into_a_new_dir(tiny_model_dir, chat_file, tmp_path):
    out, _ = train(cfg_for(tiny_model_dir, chat_file, tmp_path / "run"), printer=lambda *_: None)
    saved = yaml.safe_load((out / "run_config.yaml").read_text())
    assert saved["learning_rate"] == 5e-3 and saved["lr_scheduler"] == "constant"
    # the README's sentence: `--config OUT/run_config.yaml --output_dir NEW` reruns the same job
    again = tmp_path / "again"
    assert cli(["train", "--config", str(out / "run_config.yaml"), "--output_dir", str(again)]) == 0
    first, second = (json.loads((d / "train_log.json").read_text()) for d in (out, again))
    assert [(r["step"], r["loss"], r["tokens"]) for r in first] == [
        (r["step"], r["loss"], r["tokens"]) for r in second
    ]


def test_epochs_set_the_run_length_from_the_examples_kept(tiny_model_dir, chat_file, tmp_path, capsys):
    argv = train_args(tiny_model_dir, chat_file, tmp_path / "run", "--epochs", "1.5", "--grad_accum", "2",
                      "--per_device_batch_size", "2", "--max_seq_len", "64")  # fmt: skip
    assert cli(argv) == 0
    out = capsys.readouterr().out
    # 12 examples x 1.5 = 18 examples at 4 per step: ceil(4.5) = 5 steps
    assert "length: 1.5 epochs of 12 examples at 4 per step = 5 steps" in out
    metrics = json.loads((tmp_path / "run" / "time_metrics.json").read_text())
    assert metrics["steps"] == 5 and metrics["stop_reason"] == "max_steps"
    saved = yaml.safe_load((tmp_path / "run" / "run_config.yaml").read_text())
    assert (saved["epochs"], saved["max_steps"]) == (1.5, 5)  # rerunning it gives the same length


def test_a_max_steps_flag_wins_over_epochs_from_a_yaml(tiny_model_dir, chat_file, tmp_path, capsys):
    y = tmp_path / "c.yaml"
    y.write_text("epochs: 3\nmax_seq_len: 64\n")
    argv = train_args(tiny_model_dir, chat_file, tmp_path / "run", "--config", str(y), "--max_steps", "2")
    assert cli(argv) == 0
    out = capsys.readouterr().out
    assert f"note: --max_steps 2 sets the run's length; epochs from {y}:1 is not used" in out
    assert json.loads((tmp_path / "run" / "time_metrics.json").read_text())["steps"] == 2
