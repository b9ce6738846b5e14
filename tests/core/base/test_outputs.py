"""Nothing the user owns is destroyed (issue 12, classes 1, 2, 5, 8), through the real CLI: an
output is never an input, inside one or around one; --overwrite replaces only what airoad wrote;
one run at a time per output_dir; dirs that cannot be created are found before anything loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import CHAT_ROWS, train_args, write_jsonl

from airoad.cli import main as cli
from airoad.core.base.outputs import LOCK, MANIFEST


def train_argv(model_dir, data, out, *extra) -> list[str]:
    return train_args(model_dir, data, out, "--max_steps", "1", *extra)


def errors(capsys) -> list[str]:
    err = capsys.readouterr().err.strip().splitlines()
    assert all(line.startswith("error: ") for line in err) and "Traceback" not in "\n".join(err)
    return err


def snapshot(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture()
def data_dir(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    write_jsonl(d / "train.jsonl", CHAT_ROWS * 3)
    (d / "train_log.json").write_text('{"mine": true}\n')  # named like a run file, but the user's
    return d


def test_train_output_dir_around_or_on_an_input_is_refused_even_with_overwrite(
    tiny_model_dir, data_dir, tmp_path, capsys
):
    before, model_before = snapshot(data_dir), snapshot(tiny_model_dir)
    for out, what in (
        (data_dir, "is or contains the input dataset_path"),
        (tiny_model_dir, "is or contains the input base_model"),
        (tiny_model_dir / "sub", "lies inside the input base_model"),
    ):
        assert cli(train_argv(tiny_model_dir, data_dir / "train.jsonl", out, "--overwrite", "true")) == 2
        (line,) = errors(capsys)
        assert what in line, line
    link = tmp_path / "link"
    link.symlink_to(data_dir)  # a symlink to the data folder is the data folder
    assert cli(train_argv(tiny_model_dir, data_dir / "train.jsonl", link, "--overwrite", "true")) == 2
    assert "is or contains the input dataset_path" in errors(capsys)[0]
    assert snapshot(data_dir) == before and snapshot(tiny_model_dir) == model_before
    assert not (tiny_model_dir / "sub").exists()


def test_overwrite_replaces_only_files_airoad_wrote(tiny_model_dir, chat_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli(train_argv(tiny_model_dir, chat_file, out)) == 0
    manifest = json.loads((out / MANIFEST).read_text())["files"]
    assert {"adapter_model.safetensors", "tokenizer.json", "run_config.yaml"} <= set(manifest)
    (out / "notes.md").write_text("my notes")
    assert cli(train_argv(tiny_model_dir, chat_file, out, "--overwrite", "true")) == 2
    (line,) = errors(capsys)
    assert "holds files airoad did not write (notes.md)" in line
    assert (out / "notes.md").read_text() == "my notes" and (out / "adapter_model.safetensors").is_file()
    (out / "notes.md").unlink()
    assert cli(train_argv(tiny_model_dir, chat_file, out, "--overwrite", "true")) == 0
    assert not (out / LOCK).exists()  # released at the end


def test_a_dir_without_a_manifest_is_never_cleared(tiny_model_dir, chat_file, tmp_path, capsys):
    out = tmp_path / "old"
    out.mkdir()
    (out / "adapter_model.safetensors").write_bytes(b"someone else's")
    assert cli(train_argv(tiny_model_dir, chat_file, out, "--overwrite", "true")) == 2
    assert "did not write (adapter_model.safetensors)" in errors(capsys)[0]
    assert (out / "adapter_model.safetensors").read_bytes() == b"someone else's"


def test_a_live_lock_refuses_a_second_run_and_a_stale_one_is_taken_over(
    tiny_model_dir, chat_file, tmp_path, capsys
):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / LOCK).write_text(str(holder.pid))
        assert cli(train_argv(tiny_model_dir, chat_file, out)) == 2
        (line,) = errors(capsys)
        assert f"in use by another airoad process (pid {holder.pid})" in line
    finally:
        holder.kill()
        holder.wait()
    assert cli(train_argv(tiny_model_dir, chat_file, out)) == 0  # its holder is dead: stale
    assert not (out / LOCK).exists() and (out / "adapter_model.safetensors").is_file()


def test_a_run_stopped_while_starting_leaves_a_dir_the_next_run_reuses(tiny_model_dir, chat_file, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    # what a run killed before its first step leaves: the manifest, run_config.yaml, a dead lock,
    # and a save folder and temp file of a killed writer
    (out / MANIFEST).write_text(json.dumps({"files": ["run_config.yaml", "adapter_model.safetensors"]}))
    (out / "run_config.yaml").write_text("max_steps: 1\n")
    (out / LOCK).write_text("999999999")
    (out / ".save-abc").mkdir()
    (out / ".train_log.json.x1.tmp").write_text("{")
    assert cli(train_argv(tiny_model_dir, chat_file, out)) == 0  # no --overwrite needed
    names = {p.name for p in out.iterdir()}
    assert "adapter_model.safetensors" in names and not [n for n in names if n.startswith(".")]


@pytest.mark.parametrize("kind", ["under_a_file", "dangling_link", "proc"])
def test_an_output_dir_that_cannot_be_created_is_one_line_before_anything_loads(
    kind, chat_file, tmp_path, capsys, monkeypatch
):
    import airoad.core.model.loading as loading

    monkeypatch.setattr(loading, "load_causal_lm", lambda *a, **k: pytest.fail("must not load"))
    monkeypatch.setattr(loading, "load_tokenizer", lambda *a, **k: pytest.fail("must not load"))
    if kind == "under_a_file":
        (tmp_path / "f").write_text("x")
        out, why = tmp_path / "f" / "run", "is a file, so nothing can be created under it"
    elif kind == "dangling_link":
        out = tmp_path / "gone"
        out.symlink_to(tmp_path / "nowhere")
        why = "broken symbolic link"
    else:
        if not os.path.isdir("/proc/self"):
            pytest.skip("no /proc here")
        out, why = "/proc/airoad-test/run", "cannot create it under /proc"
    assert cli(["train", "--dataset_path", str(chat_file), "--output_dir", str(out)]) == 2
    (line,) = errors(capsys)
    assert why in line and "--output_dir" in line
    left = {"under_a_file": ["f"], "dangling_link": ["gone"], "proc": []}[kind]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["train.jsonl", *left])  # nothing new


def test_reports_never_land_on_inputs_and_need_overwrite(tiny_model_dir, lora_like_run, tmp_path, capsys):
    adapters, prompts = lora_like_run
    before = snapshot(adapters)
    argv = [
        "eval",
        "--adapters",
        str(adapters),
        "--prompts",
        str(prompts),
        "--device",
        "cpu",
        "--max_new_tokens",
        "2",
    ]
    assert cli([*argv, "--out", str(adapters / "adapter_config.json")]) == 2
    assert "lies inside the input --adapters" in errors(capsys)[0]
    json_prompts = tmp_path / "p.json"
    json_prompts.write_bytes(prompts.read_bytes())
    assert (
        cli(
            [
                "compare",
                "--adapters",
                str(adapters),
                "--prompts",
                str(json_prompts),
                "--out",
                str(json_prompts),
            ]
        )
        == 2
    )
    assert "is also an input (--prompts" in errors(capsys)[0]
    report = tmp_path / "r.json"
    report.write_text("{}")
    assert cli([*argv, "--out", str(report)]) == 2
    assert "already exists; pass --overwrite true" in errors(capsys)[0] and report.read_text() == "{}"
    assert cli([*argv, "--out", str(report), "--overwrite", "true"]) == 0
    assert json.loads(report.read_text())["command"] == "eval"
    assert snapshot(adapters) == before


def test_data_tools_refuse_a_hard_link_to_an_input(tmp_path, capsys):
    src = write_jsonl(tmp_path / "a.jsonl", CHAT_ROWS)
    twin = tmp_path / "twin.jsonl"
    os.link(src, twin)
    before = src.read_bytes()
    assert cli(["data", "mix", "--inputs", str(src), "--out", str(twin), "--overwrite"]) == 2
    assert "is also an input (--inputs" in errors(capsys)[0] and src.read_bytes() == before


@pytest.fixture()
def lora_like_run(tiny_model_dir, chat_file, tmp_path):
    out = tmp_path / "adapters"
    assert cli(train_argv(tiny_model_dir, chat_file, out)) == 0
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "Say hi."}])
    return out, prompts
