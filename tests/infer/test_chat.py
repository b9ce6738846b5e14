"""`airoad chat` driven through piped stdin on the tiny model: answers stream from the tuned side,
/compare gives base and tuned from the one model, /save writes a row the training checks accept and
refuses the chat's inputs, the run dir and files that are not training rows."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import yaml
from conftest import RUN_SYSTEM, make_adapter_run

from airoad.cli import main as cli

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def run_dir(tiny_model_dir, tmp_path_factory) -> Path:
    out = make_adapter_run(tiny_model_dir, tmp_path_factory.mktemp("chat") / "run", dora=False)
    data = out.parent / "train.jsonl"
    data.write_text(
        json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]})
        + "\n"
    )
    cfg = yaml.safe_load((out / "run_config.yaml").read_text())
    (out / "run_config.yaml").write_text(yaml.safe_dump({**cfg, "dataset_path": str(data)}))
    return out


def chat(monkeypatch, capsys, run_dir: Path, lines: list[str], *flags: str) -> tuple[int, str, str]:
    monkeypatch.setattr("sys.stdin", io.StringIO("".join(f"{line}\n" for line in lines)))
    rc = cli(["chat", str(run_dir), "--max_new_tokens", "6", *flags])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_a_piped_chat_answers_compares_and_saves_a_training_row(run_dir, tmp_path, monkeypatch, capsys):
    saved = tmp_path / "more.jsonl"
    rc, out, err = chat(monkeypatch, capsys, run_dir, ["What is 2+2?", "/compare", f"/save {saved}"])
    assert rc == 0, err
    row = json.loads(saved.read_text())
    system, user, (first,) = (
        row["messages"][:1],
        row["messages"][1:2],
        [m["content"] for m in row["messages"][2:]],
    )
    assert system == [{"role": "system", "content": RUN_SYSTEM}] and user == [
        {"role": "user", "content": "What is 2+2?"}
    ]
    assert row["messages"][2]["role"] == "assistant"
    # stdout: the answer, then /compare's two, each under its side's label, one blank line after each
    assert out.startswith(first + "\n\n[base]\n") and out.endswith("\n\n")
    base, _, tuned = out[len(first) + 9 : -2].rpartition("\n\n[tuned]\n")
    assert tuned == first  # greedy: the tuned side answers the same again
    assert base != first  # the base is the same weights with the adapter off
    assert f"saved the conversation (2 turns) as a row of {saved}" in err
    assert cli(["data", "stats", str(saved), "--base_model", "none"]) == 0  # a training row
    # a second session appends to the file it wrote, the first row kept
    rc, out, err = chat(monkeypatch, capsys, run_dir, ["Hi", "/edit Hello there.\\nBye.", f"/save {saved}"])
    rows = [json.loads(x) for x in saved.read_text().splitlines()]
    assert rc == 0 and len(rows) == 2 and rows[0] == row
    assert rows[1]["messages"][-1] == {"role": "assistant", "content": "Hello there.\nBye."}  # \n typed


def test_save_refuses_inputs_the_run_dir_and_files_that_are_not_training_rows(
    run_dir, tmp_path, monkeypatch, capsys
):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    data = run_dir.parent / "train.jsonl"
    before = data.read_text()
    (run_dir / "airoad_manifest.json").write_text(json.dumps({"writer": "airoad train", "files": []}))
    try:
        lines = [
            "Hi",
            f"/save {data}",
            f"/save {run_dir / 'x.jsonl'}",
            f"/save {notes}",
            f"/save {tmp_path}",
            "/save",
        ]
        rc, _, err = chat(monkeypatch, capsys, run_dir, lines)
    finally:
        (run_dir / "airoad_manifest.json").unlink()
    said = [line for line in err.splitlines() if line.startswith("not saved") or line.startswith("give")]
    assert rc == 0 and len(said) == 5, err
    assert "is also an input (dataset_path" in said[0] and "lies inside" in said[1]
    assert "holds what is not a training row" in said[2] and "is a directory" in said[3]
    assert said[4] == "give a file: /save FILE"
    assert (
        data.read_text() == before
        and notes.read_text() == "my notes\n"
        and not (run_dir / "x.jsonl").exists()
    )


def test_commands_switch_sides_retry_reset_and_a_mistake_is_one_line(run_dir, tmp_path, monkeypatch, capsys):
    lines = [
        "/compare",
        "/base",
        "Hi",
        "/retry",
        "/tuned",
        "/system Speak French.",
        "/system",
        "/reset",
        "/save x.jsonl",
        "/bogus",
        "/exit",
        "never read",
    ]
    rc, out, err = chat(monkeypatch, capsys, run_dir, lines)
    assert rc == 0
    half = len(out) // 2
    assert out[:half] == out[half:]  # greedy retry of the same question on the same side: the same answer
    assert (
        "nothing asked yet" in err
        and "base answers from now on" in err
        and "tuned answers from now on" in err
    )
    assert "system: 'Speak French.'" in err and "conversation cleared" in err
    assert "not saved: no assistant turn" in err and "unknown command /bogus; /help lists them" in err


def test_a_base_model_alone_has_one_side(tiny_model_dir, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("Hi\n/tuned\n/compare\n"))
    assert cli(["chat", "--base_model", str(tiny_model_dir), "--max_new_tokens", "4"]) == 0
    err = capsys.readouterr().err
    assert "base answers" in err and err.count("no adapters loaded: there is only the base side") == 2


def test_ctrl_c_stops_the_answer_not_the_session(run_dir, tiny_model_dir):
    from airoad.core.base.options import load_config
    from airoad.core.model.adapter_source import resolve_source
    from airoad.infer.chat import Chat
    from airoad.infer.loading import load
    from airoad.infer.schema import ChatConfig

    class Interrupting(io.StringIO):
        """Ctrl-C while the first piece of the first answer is printed."""

        hit = False

        def write(self, text):
            if not self.hit and text.strip() and not text.startswith("["):
                self.hit = True
                super().write(text)
                raise KeyboardInterrupt
            return super().write(text)

    cfg = load_config(ChatConfig, ["--adapters", str(run_dir), "--max_new_tokens", "40"])[0]
    out, said = Interrupting(), []
    session = Chat(load(resolve_source(None, str(run_dir))), cfg, [], out=out, say=said.append)
    session.handle("Tell me a story.")
    assert "[stopped]" in out.getvalue() and len(session.history) == 2
    assert len(session.history[1]["content"]) < 40 * 8
    session.handle("And then?")  # the session goes on, from the same cache
    assert len(session.history) == 4


def test_compare_shows_the_chats_own_answer_and_asks_again_after_an_edit(run_dir, monkeypatch, capsys):
    rc, out, _ = chat(monkeypatch, capsys, run_dir, ["Hi", "/compare", "/edit Mine.", "/compare"])
    first = out.split("\n\n[base]\n", 1)[0]
    assert rc == 0 and out.count("[tuned]\n") == 2 and out.count("[base]\n") == 2
    shown = out.split("[tuned]\n")[1].split("\n\n[base]")[0].rstrip("\n")
    assert shown == first  # the first /compare shows the answer the chat gave
    assert "[tuned]\nMine." not in out  # after /edit both sides answer anew; the edit is not a side's


def test_on_a_terminal_it_prompts_labels_answers_and_ctrl_d_leaves(run_dir):
    """Through a pseudo-terminal, as a user types: the prompt, a labelled streamed answer, /compare,
    Ctrl-C at the prompt (the chat goes on), then Ctrl-D: exit 0. Every read is bounded."""
    import os
    import pty
    import select
    import signal
    import subprocess
    import sys
    import time

    main, sub = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "airoad", "chat", str(run_dir), "--max_new_tokens", "4"],
        stdin=sub, stdout=sub, stderr=sub, env={**os.environ, "HF_HUB_OFFLINE": "1"}, close_fds=True,
    )  # fmt: skip
    os.close(sub)
    seen, transcript = b"", b""

    def until(text: bytes, timeout: float = 150) -> None:
        nonlocal seen, transcript
        deadline = time.time() + timeout
        while text not in seen:
            left = deadline - time.time()
            if left <= 0:
                break
            if select.select([main], [], [], left)[0]:
                try:
                    got = os.read(main, 4096)
                except OSError:  # the child closed the terminal
                    break
                seen, transcript = seen + got, transcript + got
        assert text in seen, (
            f"waited for {text!r}; the terminal showed:\n{transcript.decode(errors='replace')}"
        )
        seen = seen[seen.index(text) + len(text) :]

    try:
        until(b"/help lists the commands")
        until(b"you> ")
        os.write(main, b"Hi\r")
        until(b"tuned> ")
        until(b"you> ")
        os.write(main, b"/compare\r")
        until(b"base> ")
        until(b"you> ")
        time.sleep(0.3)  # the prompt is written just before input() blocks on the terminal
        proc.send_signal(signal.SIGINT)  # Ctrl-C at the prompt: a hint, not an exit
        until(b"(Ctrl-D or /exit leaves)")
        os.write(main, b"\x04")  # Ctrl-D
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        os.close(main)
