"""The one command runner (airoad.core.run.command) and the rules it applies to every command:
inputs resolved (a base read from a run's files is an input too), outputs checked against all of
them and held, --overwrite only over what airoad recorded of the same kind, one adapter guard,
and one rule for text arguments. Issue 26: each test is a mechanism, tried on several commands."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import CHAT_ROWS, REPO, build_tiny_qwen, write_jsonl

from airoad.cli import main as cli
from airoad.core.base.errors import UserError
from airoad.core.base.outputs import MANIFEST, foreign, holding, lock_path, record, remove_recorded
from airoad.core.base.textargs import MATCH_SECONDS, file_name_problems, regex_problems, user_regex


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def errors(capsys) -> list[str]:
    return [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error: ")]


def save_adapter(base_dir: Path, out: Path, *, dora: bool = False, r: int = 4) -> Path:
    """A PEFT adapter on ``base_dir`` saved as a run dir would hold it (run_config.yaml names the base)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    peft = get_peft_model(
        model, LoraConfig(r=r, lora_alpha=8, target_modules=["q_proj", "v_proj"], use_dora=dora)
    )
    peft.save_pretrained(out)
    (out / "run_config.yaml").write_text(f"base_model: {base_dir}\nsystem_prompt: null\n")
    record(
        out,
        ["adapter_config.json", "adapter_model.safetensors", "README.md", "run_config.yaml"],
        "airoad train",
    )
    return out


@pytest.fixture(scope="module")
def base_copy(tmp_path_factory, qwen_tokenizer) -> Path:
    """A base model of this module's own (tests check it is never written)."""
    return build_tiny_qwen(tmp_path_factory.mktemp("base"), qwen_tokenizer)


@pytest.fixture(scope="module")
def run_dir(base_copy, tmp_path_factory) -> Path:
    return save_adapter(base_copy, tmp_path_factory.mktemp("run"))


def edited_adapter(run_dir: Path, tmp_path: Path, **changes) -> Path:
    """A copy of ``run_dir`` whose adapter_config.json has ``changes``."""
    import shutil

    out = tmp_path / "edited"
    shutil.copytree(run_dir, out)
    cfg = json.loads((out / "adapter_config.json").read_text())
    cfg.update(changes)
    (out / "adapter_config.json").write_text(json.dumps(cfg))
    return out


# --- a base read from the run's files is an input --------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["data", "pairs", "--dataset_path", "{data}", "--adapters", "{run}", "--out", "{base}/config.json"],
        ["eval", "--adapters", "{run}", "--out", "{base}/config.json", "--overwrite", "true"],
        ["compare", "--adapters", "{run}", "--out", "{base}/config.json", "--overwrite", "true"],
        ["merge", "--adapters", "{run}", "--out", "{base}", "--overwrite", "true"],
    ],
)
def test_an_output_onto_the_base_named_by_the_run_is_refused(argv, run_dir, base_copy, tmp_path, capsys):
    data = write_jsonl(tmp_path / "d.jsonl", CHAT_ROWS)
    before = snapshot(base_copy)
    argv = [a.format(data=data, run=run_dir, base=base_copy) for a in argv]
    assert cli(argv) == 2
    (line,) = errors(capsys)
    assert "--out" in line and str(base_copy) in line and "input" in line, line
    assert snapshot(base_copy) == before


# --- --overwrite: only what airoad recorded, of the same kind --------------------------------------


def test_overwrite_never_replaces_another_commands_output(run_dir, tmp_path, capsys):
    before = snapshot(run_dir)
    assert cli(["merge", "--adapters", str(run_dir), "--out", str(run_dir), "--overwrite", "true"]) == 2
    assert "input" in errors(capsys)[0]
    fake_run = tmp_path / "a_run"
    fake_run.mkdir()
    (fake_run / "run_config.yaml").write_text("seed: 1\n")
    record(fake_run, ["run_config.yaml"], "airoad train")
    argv = ["merge", "--adapters", str(run_dir), "--out", str(fake_run), "--overwrite", "true"]
    assert cli(argv) == 2
    (line,) = errors(capsys)
    assert "holds a training run" in line and "airoad merge" in line, line
    assert (fake_run / "run_config.yaml").read_text() == "seed: 1\n"
    assert snapshot(run_dir) == before


def test_a_users_file_nested_in_a_recorded_folder_is_refused_by_name_and_kept(tmp_path):
    out = tmp_path / "run"
    ckpt = out / "checkpoints" / "checkpoint-2"
    ckpt.mkdir(parents=True)
    (ckpt / "adapter_model.safetensors").write_bytes(b"w")
    (ckpt / "trainer_state.json").write_text("{}")
    (out / "adapter_config.json").write_text("{}")
    record(out, ["adapter_config.json", "checkpoints"], "airoad train")  # a folder recorded whole
    assert foreign(out) == []
    (ckpt / "my_notes.txt").write_text("mine")
    (out / "checkpoints" / "keep.csv").write_text("mine too")
    assert sorted(foreign(out)) == ["checkpoints/checkpoint-2/my_notes.txt", "checkpoints/keep.csv"]
    remove_recorded(out)  # even when called anyway: only airoad's files go
    assert (ckpt / "my_notes.txt").read_text() == "mine" and (out / "checkpoints" / "keep.csv").is_file()
    assert not (ckpt / "adapter_model.safetensors").exists() and not (out / "adapter_config.json").exists()


def test_train_overwrite_of_a_run_with_a_users_checkpoint_file_is_refused(
    tiny_model_dir, chat_file, tmp_path, capsys
):
    from conftest import train_args

    out = tmp_path / "run"
    (out / "checkpoints" / "checkpoint-1").mkdir(parents=True)
    (out / "checkpoints" / "checkpoint-1" / "mine.txt").write_text("x")
    (out / "run_config.yaml").write_text("seed: 1\n")
    record(out, ["run_config.yaml", "checkpoints"], "airoad train")
    before = snapshot(out)
    assert cli(train_args(tiny_model_dir, chat_file, out, "--overwrite", "true")) == 2
    (line,) = errors(capsys)
    assert "checkpoints/checkpoint-1/mine.txt" in line, line
    assert snapshot(out) == {**before}


def test_staged_outputs_record_their_nested_files(run_dir, base_copy, tmp_path, capsys):
    out = tmp_path / "merged"
    assert cli(["merge", "--adapters", str(run_dir), "--out", str(out)]) == 0
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["writer"] == "airoad merge" and "config.json" in manifest["files"]
    assert foreign(out) == []
    assert cli(["merge", "--adapters", str(run_dir), "--out", str(out), "--overwrite", "true"]) == 0
    (out / "mine.txt").write_text("x")
    assert cli(["merge", "--adapters", str(run_dir), "--out", str(out), "--overwrite", "true"]) == 2
    assert "mine.txt" in errors(capsys)[0] and (out / "mine.txt").read_text() == "x"


# --- every output is held: a second airoad process is refused ----------------------------------------


def test_an_output_held_by_another_process_is_refused_and_left_alone(run_dir, tmp_path, capsys):
    out = tmp_path / "deep" / "merged"
    code = (
        "import sys, time\nfrom pathlib import Path\nfrom airoad.core.base.outputs import holding\n"
        f"with holding([('--out', Path({str(out)!r}))]):\n    print('held', flush=True)\n    time.sleep(30)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert cli(["merge", "--adapters", str(run_dir), "--out", str(out)]) == 2
        (line,) = errors(capsys)
        assert f"in use by another airoad process (pid {holder.pid})" in line, line
        assert not out.exists()
    finally:
        holder.kill()
        holder.wait(timeout=10)
    assert cli(["merge", "--adapters", str(run_dir), "--out", str(out)]) == 0  # a dead holder's lock is stale
    assert not lock_path(out).exists()


def test_holding_creates_parents_and_removes_them_when_nothing_was_written(tmp_path):
    out = tmp_path / "a" / "b" / "report.json"
    with pytest.raises(UserError):
        with holding([("--out", out)]):
            assert lock_path(out).is_file()
            raise UserError("late mistake")
    assert not (tmp_path / "a").exists()
    with holding([("--out", out)]):
        out.write_text("{}")
    assert out.is_file() and not lock_path(out).exists()


# --- empty, odd and hostile text ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--output_dir", ""],
        ["merge", "--adapters", "x", "--out", ""],
        ["data", "neg-guard", "--out", ""],
    ],
)
def test_an_empty_output_path_is_refused(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli(argv) == 2
    assert any("'' is empty" in ln for ln in errors(capsys))
    assert list(tmp_path.iterdir()) == []


def test_arguments_that_are_not_utf8_are_refused_before_anything_runs(tmp_path, capsys):
    bad = b"####\xff".decode("utf-8", "surrogateescape")
    assert (
        cli(
            ["eval", "--adapters", str(tmp_path / "nope"), "--expect", bad, "--out", str(tmp_path / "r.json")]
        )
        == 2
    )
    (line,) = errors(capsys)
    assert line.startswith("error: --expect:") and "not UTF-8" in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        ("a{4294967296}", "repeat count"),
        ("(" * 5000 + "a" + ")" * 5000, "characters"),
        ("(" * 900 + "a" + ")" * 900, "valid"),
        ("[", "valid"),
        ("", "empty pattern"),
    ],
)
def test_a_bad_regex_is_one_line(pattern, why):
    (line,) = regex_problems("--expect", pattern)
    assert line.startswith("--expect ") and why in line, line


def test_a_catastrophic_regex_is_stopped_by_the_time_budget():
    assert not user_regex("--expect", r"([\s\S]|[\s\S])*QQQ").search("x" * 5000)  # hangs re, not regex
    pattern = user_regex("--expect", r"(a|aa)+$")  # exponential in both engines
    t0 = time.perf_counter()
    with pytest.raises(UserError, match="backtracks catastrophically"):
        pattern.search("a" * 60 + "b")
    assert time.perf_counter() - t0 < 3 * MATCH_SECONDS
    assert user_regex("--expect", r"####\s*-?\d").search("so #### 42")


def test_numbers_are_ascii_and_names_fit_a_file_system(capsys):
    assert cli(["train", "--max_steps", "²⁵⁶"]) == 2
    assert "--max_steps = '²⁵⁶' must be an integer" in errors(capsys)[0]
    assert cli(["export", "coreml", "--adapters", "x", "--out", "y", "--context", "²⁵⁶"]) == 2
    assert any("--context ²⁵⁶: not a context length" in ln for ln in errors(capsys))
    assert cli(["export", "gguf", "--adapters", "x", "--out", "y", "--name", "n" * 300]) == 2
    assert any("--name" in ln and "bytes" in ln for ln in errors(capsys))
    assert file_name_problems("--name", "a/b") and file_name_problems("--name", "..")
    assert file_name_problems("--name", "ok_name") == []


def test_a_key_given_twice_in_yaml_names_both_lines(tmp_path, capsys):
    y = tmp_path / "c.yaml"
    y.write_text("max_steps: 3\nseed: 1\nmax_steps: 4\n")
    assert cli(["train", "--config", str(y)]) == 2
    (line,) = errors(capsys)
    assert f"{y}:3: key `max_steps` is given twice (first on line 1)" in line


def test_help_prints_a_percent_sign_not_a_python_dict(capsys):
    assert cli(["train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "~30% slower" in text and "{'" not in text


# --- one adapter guard ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"peft_type": "IA3"}, "peft_type"),
        ({"r": 8}, "rank"),
        ({"rank_pattern": "all"}, "rank_pattern"),
        ({"use_dora": True}, "no DoRA magnitude vector"),
        ({"lora_alpha": "big"}, "lora_alpha"),
    ],
)
def test_the_adapter_guard_refuses_a_bad_adapter_for_every_command(changes, why, run_dir, tmp_path, capsys):
    bad = edited_adapter(run_dir, tmp_path, **changes)
    for argv in (
        ["merge", "--adapters", str(bad), "--out", str(tmp_path / "m")],
        ["eval", "--adapters", str(bad)],
        ["pref", "--init_adapter", str(bad), "--output_dir", str(tmp_path / "p")],
    ):
        assert cli(argv) == 2, argv
        lines = errors(capsys)
        assert len(lines) == 1 and why in lines[0], (argv, lines)
    assert not (tmp_path / "m").exists() and not (tmp_path / "p").exists()


def test_dora_magnitudes_under_use_dora_false_are_refused(base_copy, tmp_path, capsys):
    dora = save_adapter(base_copy, tmp_path / "dora", dora=True)
    bad = edited_adapter(dora, tmp_path, use_dora=False)
    assert cli(["merge", "--adapters", str(bad), "--out", str(tmp_path / "m")]) == 2
    assert "DoRA magnitude vectors" in errors(capsys)[0]


def test_an_adapter_of_another_base_is_one_line_naming_both_sizes(run_dir, qwen_tokenizer, tmp_path, capsys):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    other = tmp_path / "other"
    cfg = Qwen2Config(
        vocab_size=len(qwen_tokenizer), hidden_size=48, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
    )  # fmt: skip
    Qwen2ForCausalLM(cfg).save_pretrained(other)
    qwen_tokenizer.save_pretrained(other)
    argv = ["merge", "--adapters", str(run_dir), "--base_model", str(other), "--out", str(tmp_path / "m")]
    assert cli(argv) == 2
    (line,) = errors(capsys)
    assert "does not fit" in line and "48 -> 48 in this base, 32 -> 32 in the adapter" in line, line
    assert not (tmp_path / "m").exists()


def test_probe_refuses_an_empty_output_dir_before_it_starts(capsys):
    config = REPO / "configs" / "slm" / "qwen05b_lora_fast_plain.yaml"
    assert cli(["probe", "--config", str(config), "--set", "output_dir="]) == 2
    captured = capsys.readouterr()
    assert "output_dir '' is empty" in captured.err and "probe: train" not in captured.out
