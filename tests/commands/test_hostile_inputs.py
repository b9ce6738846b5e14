"""Hostile inputs through the real CLI (issue 12, classes 3, 4, 6, 7, 9): numbers that are not
numbers, damaged files, valid text the reader used to reject, text that used to crash, inputs that
never end, misleading messages. Each is exit 2 with one `error:` line per problem, no traceback."""

from __future__ import annotations

import json
import os
import time

import pytest
from conftest import CHAT_ROWS, train_args, write_jsonl

from airoad.cli import main as cli


def one_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0], err
    return err[0]


# --- class 3: numbers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["train", "--warmup_ratio", "nan"], "--warmup_ratio = nan must be a finite number"),
        (["train", "--lora_dropout", "nan"], "--lora_dropout = nan must be a finite number"),
        (["train", "--learning_rate", "inf"], "--learning_rate = inf must be a finite number"),
        (["train", "--seed", "-1"], "--seed = -1 must be >= 0"),
        (["train", "--seed", "99999999999999999999"], "--seed = 99999999999999999999 is out of range"),
        (
            ["eval", "--base_model", "x", "--temperature", "nan"],
            "--temperature = nan must be a finite number",
        ),
        (["data", "neg-guard", "--out", "o.jsonl", "--seed", "4294967296"], "--seed = 4294967296 must be <="),
    ],
)
def test_numbers_that_are_not_numbers_are_refused(argv, needle, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli(argv) == 2
    assert needle in one_error(capsys)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("weight", ["1e300", "1e-9", "inf", "nan"])
def test_mix_weights_outside_a_sane_range_are_refused(weight, tmp_path, capsys):
    src = write_jsonl(tmp_path / "a.jsonl", CHAT_ROWS)
    assert cli(["data", "mix", "--inputs", f"{src}:{weight}", "--out", str(tmp_path / "o.jsonl")]) == 2
    line = one_error(capsys)
    assert "weight" in line and not (tmp_path / "o.jsonl").exists()


# --- class 6: valid text, hostile text ----------------------------------------------------------


def test_json_with_unicode_line_separators_is_one_row_per_line_and_mix_round_trips(tmp_path, capsys):
    row = {
        "messages": [
            {"role": "user", "content": "a\u2028b\u0085c\u2029d"},
            {"role": "assistant", "content": "ok\x1c"},
        ]
    }
    src = tmp_path / "sep.jsonl"
    src.write_text(json.dumps(row, ensure_ascii=False) + "\n" + json.dumps(row, ensure_ascii=False) + "\n")
    out = tmp_path / "mixed.jsonl"
    assert cli(["data", "mix", "--inputs", f"{src}:2", "--out", str(out)]) == 0
    capsys.readouterr()
    assert cli(["data", "stats", str(out), "--base_model", "none"]) == 0  # its own output reads back
    from airoad.core.data.chat_data import read_rows

    assert [n for n, _ in read_rows(out)] == [1, 2, 3, 4]


@pytest.mark.parametrize(
    "line, needle",
    [
        (
            '{"messages": [{"role": "user", "content": "\\ud800"}, {"role": "assistant", "content": "x"}]}',
            "lone UTF-16 surrogate",
        ),
        ('{"n": ' + "9" * 5000 + "}", "invalid JSON"),
        ("[" * 100000 + "]" * 100000, "nested too deeply"),
    ],
    ids=["surrogate", "5000-digit-int", "deep-nesting"],
)
def test_hostile_rows_are_one_line_each(line, needle, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(line + "\n")
    assert cli(["data", "stats", str(bad), "--base_model", "none"]) == 2
    assert f"{bad}:1: " in (err := one_error(capsys)) and needle in err


def test_a_pipe_as_dataset_is_refused_at_once(tmp_path, capsys):
    fifo = tmp_path / "data.jsonl"
    os.mkfifo(fifo)
    t0 = time.time()
    assert cli(["train", "--dataset_path", str(fifo), "--output_dir", str(tmp_path / "o")]) == 2
    assert "not a regular file" in one_error(capsys) and time.time() - t0 < 10
    assert not (tmp_path / "o").exists()


def test_a_config_that_is_not_utf8_is_one_line(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_bytes(b"max_steps: 3\nsystem_prompt: caf\xe9\n")
    assert cli(["train", "--config", str(cfg)]) == 2
    assert f"{cfg}:2: not UTF-8 text" in one_error(capsys)


# --- class 9: messages that mislead -------------------------------------------------------------


def test_a_missing_local_base_model_says_no_such_directory(chat_file, tmp_path, capsys):
    assert cli(train_args("/nonexistent/model", chat_file, tmp_path / "o")) == 2
    line = one_error(capsys)
    assert "'/nonexistent/model': no such directory" in line and "repo" not in line


def test_env_rejects_unknown_flags(capsys):
    assert cli(["env", "--bogus-flag"]) == 2
    assert "unknown flag --bogus-flag" in one_error(capsys)  # the core's one wording for every command


# --- class 4: damaged files ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_run(tiny_model_dir, tmp_path_factory):
    """A 2-step run with checkpoints, trained once for this module (tests damage copies)."""
    root = tmp_path_factory.mktemp("finished")
    data = write_jsonl(root / "train.jsonl", CHAT_ROWS * 3)
    out = root / "run"
    argv = train_args(tiny_model_dir, data, out)
    assert cli([*argv, "--max_steps", "2", "--save_every_steps", "1"]) == 0
    return out


@pytest.fixture()
def damaged(finished_run, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "hi"}])
    return copy, prompts


@pytest.mark.parametrize("how", ["truncated", "empty"])
def test_damaged_weights_are_one_line_for_every_command_that_loads_them(
    how, damaged, tiny_model_dir, chat_file, tmp_path, capsys
):
    import shutil

    run, prompts = damaged
    weights = run / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100] if how == "truncated" else b"")
    for argv in (
        ["eval", "--adapters", str(run), "--prompts", str(prompts), "--out", str(tmp_path / "r.json")],
        ["compare", "--adapters", str(run), "--prompts", str(prompts)],
        ["merge", "--adapters", str(run), "--out", str(tmp_path / "merged")],
    ):
        assert cli(argv) == 2, argv
        line = one_error(capsys)
        assert f"{weights}: " in line and ("truncated" in line or "empty" in line)
    base = tmp_path / "base"
    shutil.copytree(tiny_model_dir, base)
    (base / "model.safetensors").write_bytes((base / "model.safetensors").read_bytes()[:5000])
    argv = train_args(base, chat_file, tmp_path / "o")
    assert cli(argv) == 2
    assert f"base_model {base / 'model.safetensors'}: truncated" in one_error(capsys)
    assert not (tmp_path / "o").exists() and not (tmp_path / "merged").exists()


def test_an_adapter_config_with_a_wrong_type_is_one_line(damaged, tmp_path, capsys):
    run, prompts = damaged
    cfg = json.loads((run / "adapter_config.json").read_text())
    (run / "adapter_config.json").write_text(json.dumps({**cfg, "r": "sixteen"}))
    assert cli(["eval", "--adapters", str(run), "--prompts", str(prompts)]) == 2
    assert "adapter_config.json: `r` is 'sixteen'" in one_error(capsys)


def test_resume_with_a_broken_run_config_or_state_is_one_line(damaged, capsys):
    run, _ = damaged
    (run / "run_config.yaml").write_text("max_steps: [unclosed\n")
    assert cli(["train", "--config", str(run / "run_config.yaml"), "--resume", "true"]) == 2
    assert "invalid YAML" in one_error(capsys)  # the --config itself is the broken file
    assert cli(["train", "--output_dir", str(run), "--resume", "true"]) == 2
    assert f"{run / 'run_config.yaml'} is unreadable" in one_error(capsys)


def test_checkpoints_with_a_damaged_state_are_never_resumed_from(damaged, capsys):
    run, _ = damaged
    good = yaml_config(run)
    for state in (run / "checkpoints").glob("*/airoad_state.json"):
        state.write_text("{broken")
    assert cli(["train", "--config", str(good), "--output_dir", str(run), "--resume", "true"]) == 2
    assert "only checkpoints cut short while saving" in one_error(capsys)


def yaml_config(run):
    """A copy of the run's config beside it (the run's own may be damaged by a test)."""
    path = run.parent / "cfg.yaml"
    path.write_text((run / "run_config.yaml").read_text())
    return path


def test_a_binary_banned_file_is_one_line(damaged, tmp_path, capsys):
    run, prompts = damaged
    banned = tmp_path / "banned.bin"
    banned.write_bytes(b"\xff\xfe\x00b\x00")
    assert cli(["eval", "--adapters", str(run), "--prompts", str(prompts), "--banned", str(banned)]) == 2
    assert f"--banned {banned}: not UTF-8 text" in one_error(capsys)


# --- class 5: late failures found early ---------------------------------------------------------


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--kl_lambda", "0.1", "--kl_cache", "on", "--kl_topk", "99999999"], "is above the vocabulary"),
        (["--kl_lambda", "0.1", "--kl_cache", "on", "--kl_cache_dir", "FILE"], "--kl_cache_dir"),
        (["--report_to", "bogus"], "unknown tracker 'bogus'"),
    ],
    ids=["kl_topk", "kl_cache_dir_file", "report_to"],
)
def test_late_failures_are_found_before_the_model_loads_and_leave_nothing(
    extra, needle, tiny_model_dir, chat_file, tmp_path, capsys, monkeypatch
):
    import airoad.core.model.loading as loading

    monkeypatch.setattr(loading, "load_causal_lm", lambda *a, **k: pytest.fail("model must not load"))
    (tmp_path / "FILE").write_text("x")
    extra = [str(tmp_path / "FILE") if e == "FILE" else e for e in extra]
    out = tmp_path / "o"
    assert cli(train_args(tiny_model_dir, chat_file, out, *extra)) == 2
    assert needle in one_error(capsys) and not out.exists()


# --- class 7: work that never ends --------------------------------------------------------------


def test_markdown_slice_is_linear_in_the_answer_length(tmp_path, capsys):
    """A 2 MB answer (quadratic before: 200 KB took 25 s) is rewritten in seconds."""
    answer = "First mix the dough well. Then let it rest for an hour. " * 36_000
    row = {
        "messages": [
            {"role": "user", "content": "How do I bake bread?"},
            {"role": "assistant", "content": answer},
        ]
    }
    src = write_jsonl(tmp_path / "big.jsonl", [row])
    t0 = time.time()
    assert (
        cli(
            [
                "data",
                "markdown-slice",
                "--dataset_path",
                str(src),
                "--out",
                str(tmp_path / "md.jsonl"),
                "--n",
                "0",
            ]
        )
        == 0
    )
    assert time.time() - t0 < 20
    out = json.loads((tmp_path / "md.jsonl").read_text())["messages"][-1]["content"]
    assert out.startswith("## ") and out.count("Then let it rest for an hour.") == 36_000  # no sentence lost


# --- class 8: signals at the edges ---------------------------------------------------------------


def test_a_killed_merge_leaves_staging_that_the_next_merge_removes(finished_run, tmp_path, capsys):
    out = tmp_path / "merged"
    dead = tmp_path / ".merged.merge-999999999-abc"  # a merge SIGKILLed while saving (its pid is gone)
    (dead / "checkpoint").mkdir(parents=True)
    (dead / "checkpoint" / "model.safetensors").write_bytes(b"partial")
    live = tmp_path / f".merged.merge-{os.getpid()}-xyz"  # a live process's: not ours to remove
    live.mkdir()
    assert cli(["merge", "--adapters", str(finished_run), "--out", str(out)]) == 0
    assert not dead.exists() and live.is_dir() and (out / "model.safetensors").is_file()
