"""The README stays true: its commands name files that exist, and it documents every config key."""

from __future__ import annotations

import dataclasses
import re

from conftest import REPO

from airoad.sft.schema import TrainConfig

README = (REPO / "README.md").read_text()


def test_readme_leads_with_train_and_test_commands():
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    first = blocks[0]
    assert "airoad train --config configs/slm/qwen05b_lora_fast_plain.yaml" in first
    assert first.rstrip().endswith("pytest")
    for path in re.findall(r"configs/slm/\S+\.yaml", README):
        assert (REPO / path).is_file(), path


def test_readme_documents_every_config_key():
    for f in dataclasses.fields(TrainConfig):
        assert f"| `{f.name}` |" in README, f.name


def test_ci_runs_the_readme_test_command():
    ci = (REPO / ".ci/run").read_text()
    assert "torch==2.13.0" in ci and re.search(r"^pytest$", ci, flags=re.M)


def your_data_commands() -> list[list[str]]:
    """The README's "Your own data" commands, continuation lines joined, comments dropped, as argv."""
    import shlex

    section = README.split("## Your own data", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1)
    return [shlex.split(cmd, comments=True) for cmd in block.replace("\\\n", " ").splitlines() if cmd.strip()]


def test_your_data_commands_run_in_order_on_a_tiny_model(tiny_model_dir, tmp_path, monkeypatch, capsys):
    """Each command as the README writes it, from a folder holding the user's file; only the model
    (the tiny one, offline) and the run's length and generation budget are added."""
    import io
    import json

    from conftest import CHAT_ROWS, write_jsonl

    from airoad.cli import main as cli

    rows = [
        {
            "messages": [
                {"role": "user", "content": f"Question {i}?"},
                {"role": "assistant", "content": f"A{i}."},
            ]
        }
        for i in range(20)
    ]
    write_jsonl(tmp_path / "my_chats.jsonl", rows + CHAT_ROWS)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").symlink_to(REPO / "configs")  # the README's config path, as in a clone
    (tmp_path / "data").mkdir()
    (tmp_path / "data/anchor").symlink_to(REPO / "data/anchor")  # the config's KL anchors, as in a clone
    added = {
        ("data", "stats"): ["--base_model", str(tiny_model_dir)],
        ("data", "split"): [],
        ("train",): ["--base_model", str(tiny_model_dir), "--epochs", "1", "--eval_every_steps", "1",
                     "--max_seq_len", "128", "--max_minutes", "0", "--kl_anchor_examples", "4"],
        ("compare",): ["--max_new_tokens", "4"],
        ("chat",): ["--max_new_tokens", "4"],
        ("export", "gguf"): [],
    }  # fmt: skip
    commands = your_data_commands()
    assert [argv[0] for argv in commands] == ["airoad"] * 6
    # the chat's user: asks, replaces whatever the tiny model said with a fix, saves it as a row
    monkeypatch.setattr("sys.stdin", io.StringIO("Hi\n/edit Hello.\n/compare\n/save data/more.jsonl\n"))
    for argv in commands:
        key = next(k for k in added if tuple(argv[1 : 1 + len(k)]) == k)
        assert cli([*argv[1:], *added[key]]) == 0, (argv, capsys.readouterr().err)
    out = capsys.readouterr().out
    assert "note: " not in out  # the README's train line leaves no other file's dev set or subset in
    train = [json.loads(x) for x in (tmp_path / "data/my_train.jsonl").read_text().splitlines()]
    dev = [json.loads(x) for x in (tmp_path / "data/my_dev.jsonl").read_text().splitlines()]
    assert len(train) + len(dev) == 24 and dev
    info = json.loads((tmp_path / "outputs/my_run/run_info.json").read_text())
    assert info["data"]["stats"]["kept"] == len(train)  # every row: no 96-row subset
    assert f"length: 1 epoch of {len(train)} examples at 8 per step = {-(-len(train) // 8)} steps" in out
    assert "prompts: the run's dev set data/my_dev.jsonl" in out  # compare judged on the held-out rows
    report = json.loads((tmp_path / "reports/my_run/compare.json").read_text())
    assert report["prompts"] == "data/my_dev.jsonl" and report["n_prompts"] == len(dev)
    assert list((tmp_path / "exports/my_run").glob("*.gguf"))
    saved = json.loads((tmp_path / "data/more.jsonl").read_text())["messages"]  # /save wrote a training row
    assert saved[-2:] == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]


def test_a_users_training_file_with_the_configs_dev_file_is_named_before_the_run(
    tiny_model_dir, tmp_path, capsys
):
    from conftest import CHAT_ROWS, write_jsonl

    from airoad.cli import main as cli

    mine = write_jsonl(tmp_path / "mine.jsonl", CHAT_ROWS * 3)
    config = REPO / "configs/slm/qwen05b_lora_fast_plain.yaml"
    argv = ["train", "--config", str(config), "--dataset_path", str(mine), "--base_model", str(tiny_model_dir),
            "--output_dir", str(tmp_path / "run"), "--max_steps", "1", "--max_seq_len", "64",
            "--dev_path", "", "--max_minutes", "0"]  # fmt: skip
    assert cli(argv) == 0
    out = capsys.readouterr().out
    assert "note: dev_path" not in out  # `--dev_path ''` is the user's choice: none
    assert f"note: ablate_examples 96 ({config}:" in out and "--ablate_examples 0 uses every row" in out
    assert cli([*argv[:-4], "--max_minutes", "0", "--output_dir", str(tmp_path / "run2")]) == 0
    out = capsys.readouterr().out
    assert f"note: dev_path data/sft/example_dev.jsonl ({config}:" in out and "airoad data split" in out
