"""`airoad data split`: seeded train/dev files; no prompt on both sides; rows written unchanged;
every mistake one line, nothing written; a command's outputs may not overlap each other."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import write_jsonl

from airoad.cli import main as cli
from airoad.core.base.options import load_config
from airoad.core.data.chat_data import read_rows
from airoad.data_tools.split import SplitConfig, prompt_key, read_split_input, split_rows


def chat(user: str, answer: str, **extra) -> dict:
    return {
        "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}],
        **extra,
    }


def rows_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def split(capsys, *argv: str) -> tuple[int, str, str]:
    rc = cli(["data", "split", *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture()
def data(tmp_path) -> Path:
    rows = [chat(f"Question number {i}?", f"Answer {i}.", id=i) for i in range(40)]
    # near-duplicates of question 3: case, spacing, punctuation; and an exact duplicate of 7
    rows += [chat("question NUMBER 3", "Again 3.", id=100), chat("Question  number 3 !!", "And 3.", id=101)]
    rows += [chat("Question number 7?", "Answer 7.", id=102)]
    rows.append({"instruction": "Reverse the word.", "input": "stressed", "output": "desserts", "id": 103})
    return write_jsonl(tmp_path / "mine.jsonl", rows)


def paths(tmp_path) -> tuple[Path, Path]:
    return tmp_path / "out" / "train.jsonl", tmp_path / "out" / "dev.jsonl"


def test_the_split_holds_out_a_seeded_tenth_and_writes_every_row_once_unchanged(data, tmp_path, capsys):
    train, dev = paths(tmp_path)
    argv = ("--dataset_path", str(data), "--train_out", str(train), "--dev_out", str(dev))
    rc, out, err = split(capsys, *argv)
    assert rc == 0, err
    a, b = rows_of(train), rows_of(dev)
    original = rows_of(data)
    assert sorted(r["id"] for r in a + b) == sorted(r["id"] for r in original)  # every row once
    assert all(r in original for r in a + b)  # unchanged: ids kept, the Alpaca row still Alpaca
    assert [r["id"] for r in a] == [r["id"] for r in original if r in a]  # file order on each side
    assert len(b) >= 5 and len(b) <= 7  # ceil(0.1 * 44) = 5, plus at most one group's overshoot
    assert f"dev:   {len(b)} rows -> {dev}" in out and "train on it: airoad train" in out
    # the same seed gives the same files; another seed another draw
    again = tmp_path / "again"
    assert cli(["data", "split", "--dataset_path", str(data), "--train_out", str(again / "t.jsonl"),
                "--dev_out", str(again / "d.jsonl")]) == 0  # fmt: skip
    assert (again / "d.jsonl").read_bytes() == dev.read_bytes()
    other = tmp_path / "other"
    assert cli(["data", "split", "--dataset_path", str(data), "--train_out", str(other / "t.jsonl"),
                "--dev_out", str(other / "d.jsonl"), "--seed", "7"]) == 0  # fmt: skip
    assert (other / "d.jsonl").read_bytes() != dev.read_bytes()


@pytest.mark.parametrize("seed", range(12))
def test_no_prompt_is_on_both_sides(data, seed):
    cfg = load_config(SplitConfig, ["--dataset_path", str(data), "--train_out", "t", "--dev_out", "d",
                                    "--seed", str(seed), "--dev_fraction", "0.3"])[0]  # fmt: skip
    _, convs = read_split_input(str(data))
    s = split_rows(convs, cfg)
    train_keys = {prompt_key(convs[i]) for i in s.train}
    assert not train_keys & {prompt_key(convs[i]) for i in s.dev}
    assert sorted(s.train + s.dev) == list(range(len(convs)))
    assert (s.groups, s.shared_groups, s.rows_in_shared) == (41, 2, 5)  # 3 x "question 3", 2 x "7"
    assert len(s.dev) >= s.target == 14


def test_prompt_keys_fold_case_spacing_and_punctuation_but_not_words():
    def key(text):
        return prompt_key(read_conv(text))

    def read_conv(text):
        from airoad.core.data.chat_data import to_conversation

        return to_conversation(chat(text, "a"), "x:1", None)

    assert key("What is 2+2?") == key("what is 2 + 2") == key("  WHAT   is 2+2 ?!")
    assert key("What is 2+3?") != key("What is 2+2?")
    assert key("Привет, мир!") == key("привет мир")  # any script's letters are words


def test_dev_rows_takes_a_count(data, tmp_path, capsys):
    train, dev = paths(tmp_path)
    rc, _, err = split(capsys, "--dataset_path", str(data), "--train_out", str(train), "--dev_out", str(dev),
                       "--dev_rows", "1")  # fmt: skip
    assert rc == 0, err
    assert len(rows_of(dev)) in (1, 2, 3) and len(rows_of(train)) + len(rows_of(dev)) == 44


def test_mistakes_are_one_line_each_and_nothing_is_written(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": "hi"}\n{oops\n')
    train, dev = paths(tmp_path)
    rc, out, err = split(capsys, "--dataset_path", str(bad), "--train_out", str(train), "--dev_out", str(dev))
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 2 and lines[0].startswith(f"error: {bad}:1:") and f"{bad}:2:" in lines[1]
    assert not train.parent.exists()
    one = write_jsonl(tmp_path / "one.jsonl", [chat("Same?", f"Answer {i}") for i in range(5)])
    rc, _, err = split(capsys, "--dataset_path", str(one), "--train_out", str(train), "--dev_out", str(dev))
    assert rc == 2 and "share one prompt" in err and err.count("\n") == 1
    rc, _, err = split(capsys, "--dataset_path", str(one), "--train_out", str(train), "--dev_out", str(dev),
                       "--dev_rows", "5")  # fmt: skip
    assert rc == 2 and "would leave none to train on" in err
    rc, _, err = split(capsys, "--dataset_path", str(one))
    assert rc == 2 and "--train_out is required" in err and "--dev_out is required" in err
    assert not train.parent.exists()


def test_outputs_may_not_be_the_input_or_each_other(data, tmp_path, capsys):
    before = data.read_bytes()
    rc, _, err = split(
        capsys, "--dataset_path", str(data), "--train_out", str(data), "--dev_out", str(tmp_path / "d")
    )
    assert rc == 2 and "is also an input" in err
    same = tmp_path / "same.jsonl"
    rc, _, err = split(capsys, "--dataset_path", str(data), "--train_out", str(same), "--dev_out", str(same))
    assert rc == 2 and "--dev_out" in err and "is also --train_out" in err
    assert data.read_bytes() == before and not same.exists()
    assert len(read_rows(data)) == 44


def test_a_users_file_is_not_replaced_without_overwrite(data, tmp_path, capsys):
    train, dev = tmp_path / "t.jsonl", tmp_path / "d.jsonl"
    dev.write_text("my notes\n")
    rc, _, err = split(capsys, "--dataset_path", str(data), "--train_out", str(train), "--dev_out", str(dev))
    assert rc == 2 and "--dev_out" in err and dev.read_text() == "my notes\n" and not train.exists()
