"""`airoad data pairs`: preference pairs (prompt, chosen = the data's answer, rejected = the model's own).

Most tests stand a scripted answerer in for the model (deterministic, no ../shared needed); the
end-to-end ones run a tiny random Qwen2 with the real tokenizer and skip without ../shared.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import CHAT_ROWS, REPO, build_tiny_qwen, write_jsonl

import airoad.infer.pairs as pairs
from airoad.cli import main as cli
from airoad.core.data.chat_data import read_rows, seeded_subset

pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")
CPU = ["--device", "cpu", "--dtype", "float32"]
GSM = "####\\s*-?\\d"


def chat(user: str, answer: str, system: str | None = None) -> dict:
    head = [{"role": "system", "content": system}] if system else []
    return {"messages": [*head, {"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


def lines_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def printed_counts(out: str) -> dict[str, int]:
    """The closing count lines (`  name: N ...`) as {name: N}."""
    return {m[1]: int(m[2]) for m in re.finditer(r"^  ([a-z_ -]+[a-z]):\s+(\d+)", out, flags=re.M)}


@pytest.fixture()
def fake_base(tmp_path) -> Path:
    """A directory that passes as a local base model (resolve_source only looks for config.json)."""
    d = tmp_path / "base"
    d.mkdir()
    (d / "config.json").write_text("{}")
    return d


@pytest.fixture()
def scripted(monkeypatch):
    """Replace the model with ``answers``: {last user turn: answer}; records the prompts it was given."""
    seen: list[list[dict]] = []

    def install(answers: dict[str, str]):
        def model_answers(cfg, source, prompts, printer):
            seen.extend(prompts)
            return [SimpleNamespace(text=answers[p[-1]["content"]], stopped=True) for p in prompts]

        monkeypatch.setattr(pairs, "model_answers", model_answers)
        return seen

    return install


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = cli(["data", "pairs", *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_rows_are_prompt_before_the_last_answer_chosen_that_answer_rejected_the_model(
    tmp_path, fake_base, scripted, capsys
):
    src = write_jsonl(tmp_path / "sft.jsonl", CHAT_ROWS)
    seen = scripted(
        {"What is 2+2?": "It is 5.", "Another?": "4 is prime.", "Reverse the word.\n\nstressed": "stressed"}
        | {"Say hi.": "Hi! Nice to meet you."}  # equals the chosen answer: dropped
    )
    out = tmp_path / "pairs.jsonl"
    rc, printed, err = run(
        capsys, "--dataset_path", str(src), "--base_model", str(fake_base), "--out", str(out)
    )
    assert rc == 0, err
    multi = CHAT_ROWS[1]["messages"]
    assert lines_of(out) == [
        {
            "prompt": [{"role": "user", "content": "What is 2+2?"}],
            "chosen": [{"role": "assistant", "content": "2 + 2 = 4."}],
            "rejected": [{"role": "assistant", "content": "It is 5."}],
        },
        {
            "prompt": multi[:-1],  # system turn and the earlier exchange included
            "chosen": [{"role": "assistant", "content": "11 is prime too."}],
            "rejected": [{"role": "assistant", "content": "4 is prime."}],
        },
        {
            "prompt": [{"role": "user", "content": "Reverse the word.\n\nstressed"}],  # Alpaca, wrapped
            "chosen": [{"role": "assistant", "content": "desserts"}],
            "rejected": [{"role": "assistant", "content": "stressed"}],
        },
    ]
    assert seen == [row["prompt"] for row in lines_of(out)] + [[{"role": "user", "content": "Say hi."}]]
    counts = printed_counts(printed)
    assert counts["read"] == counts["used"] == counts["generated"] == 4
    assert counts["dropped as identical"] == 1 and counts["written"] == len(lines_of(out)) == 3
    assert counts["dropped by --reject_unless"] == counts["kept banned"] == counts["dropped as empty"] == 0
    assert re.search(r"^  time: +\d+\.\ds", printed, flags=re.M)
    assert f"wrote 3 pairs to {out}" in printed
    assert len(read_rows(out, check=lambda row: None)) == 3  # plain JSONL, one object a line


def test_identical_after_whitespace_normalisation_and_empty_answers_are_dropped(
    tmp_path, fake_base, scripted, capsys
):
    src = write_jsonl(
        tmp_path / "sft.jsonl",
        [chat("a?", "Two  words."), chat("b?", "Same\ntext"), chat("c?", "Keep."), chat("d?", "x")],
    )
    scripted({"a?": " Two words.\n", "b?": "Same   text", "c?": "Keep!", "d?": " \n"})
    out = tmp_path / "pairs.jsonl"
    rc, printed, _ = run(
        capsys, "--dataset_path", str(src), "--base_model", str(fake_base), "--out", str(out)
    )
    assert rc == 0
    assert [r["rejected"][0]["content"] for r in lines_of(out)] == ["Keep!"]  # case/punctuation count
    counts = printed_counts(printed)
    assert (counts["dropped as identical"], counts["dropped as empty"], counts["written"]) == (2, 1, 1)


def test_reject_unless_keeps_only_failures_and_always_keeps_banned_answers(
    tmp_path, fake_base, scripted, capsys
):
    src = write_jsonl(
        tmp_path / "gsm.jsonl",
        [chat(f"q{i}?", f"Steps.\n#### {i}") for i in range(5)],
    )
    scripted(
        {
            "q0?": "Steps.\n#### 7",  # a proper answer line: not a failure, dropped
            "q1?": "I think it is seven.",  # no answer line: kept as rejected
            "q2?": "Steps.\n####  -3",  # matches too (spaces, minus sign): dropped
            "q3?": "Steps.\n#### 3<|im_start|>user",  # matches, but leaks a template token: kept
            "q4?": "User: what?\n#### x",  # no match, and banned: kept
        }
    )
    out = tmp_path / "pairs.jsonl"
    argv = [
        "--dataset_path",
        str(src),
        "--base_model",
        str(fake_base),
        "--out",
        str(out),
        "--reject_unless",
        GSM,
    ]
    rc, printed, _ = run(capsys, *argv)
    assert rc == 0
    assert [r["prompt"][-1]["content"] for r in lines_of(out)] == ["q1?", "q3?", "q4?"]
    counts = printed_counts(printed)
    assert counts["dropped by --reject_unless"] == 2 and counts["kept banned"] == 2
    assert counts["written"] == 3 and "(1 matched --reject_unless)" in printed

    rows, c = pairs.select_pairs(  # the same rule, without the CLI: no regex keeps everything
        [([{"role": "user", "content": "q"}], "#### 1")] * 2, ["#### 2", "none"], None
    )
    assert len(rows) == 2 and c.rejected_by_regex == 0 and c.written == 2


@pytest.mark.parametrize("pattern", ["(", "####[", "a{2,1}"])
def test_a_bad_regex_is_one_error_line_before_anything_loads(
    tmp_path, fake_base, monkeypatch, capsys, pattern
):
    src = write_jsonl(tmp_path / "sft.jsonl", CHAT_ROWS)

    def no_model(*_a, **_k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(pairs, "model_answers", no_model)
    out = tmp_path / "pairs.jsonl"
    argv = [
        "--dataset_path",
        str(src),
        "--base_model",
        str(fake_base),
        "--out",
        str(out),
        "--reject_unless",
        pattern,
    ]
    rc, _, err = run(capsys, *argv)
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1, err
    assert lines[0].startswith(f"error: --reject_unless {pattern!r}: not a valid regular expression")
    assert "Traceback" not in err and not out.exists()


def test_output_that_is_an_input_is_refused_and_the_input_kept(tmp_path, fake_base, scripted, capsys):
    src = write_jsonl(tmp_path / "sft.jsonl", CHAT_ROWS)
    before = src.read_bytes()
    scripted({})
    rc, _, err = run(capsys, "--dataset_path", str(src), "--base_model", str(fake_base), "--out", str(src))
    assert rc == 2 and err.count("\n") == 1 and "--out" in err and "is also an input (--dataset_path" in err
    assert src.read_bytes() == before
    inside = fake_base / "pairs.jsonl"  # inside the model directory
    rc, _, err = run(capsys, "--dataset_path", str(src), "--base_model", str(fake_base), "--out", str(inside))
    assert rc == 2 and "lies inside the input --base_model" in err and not inside.exists()
    out = write_jsonl(tmp_path / "old.jsonl", [{"x": 1}])
    rc, _, err = run(capsys, "--dataset_path", str(src), "--base_model", str(fake_base), "--out", str(out))
    assert rc == 2 and "already exists; pass --overwrite" in err


def test_every_input_problem_is_reported_together_before_a_model_loads(tmp_path, scripted, capsys):
    bad = write_jsonl(
        tmp_path / "bad.jsonl", [chat("q?", "a."), {"messages": [{"role": "user", "content": "x"}]}]
    )
    scripted({})
    rc, _, err = run(
        capsys, "--dataset_path", str(bad), "--adapters", str(tmp_path / "nope"), "--out", str(bad)
    )
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 3 and all(ln.startswith("error: ") for ln in lines)
    assert "is also an input" in lines[0] and f"{bad}:2: no assistant turn" in lines[1]
    assert "--adapters" in lines[2] and "no such directory" in lines[2]
    rc, _, err = run(capsys, "--out", str(tmp_path / "x.jsonl"))
    assert rc == 2 and "--dataset_path is required" in err and "give --adapters" in err


def test_n_takes_the_seeded_subset_of_training_and_eval(tmp_path, fake_base, scripted, capsys):
    rows = [chat(f"q{i}?", f"answer {i}") for i in range(20)]
    src = write_jsonl(tmp_path / "sft.jsonl", rows)
    scripted({f"q{i}?": f"wrong {i}" for i in range(20)})
    out = tmp_path / "pairs.jsonl"
    argv = [
        "--dataset_path",
        str(src),
        "--base_model",
        str(fake_base),
        "--out",
        str(out),
        "--n",
        "5",
        "--seed",
        "3",
    ]
    rc, printed, _ = run(capsys, *argv)
    assert rc == 0
    expected = [r["messages"][0]["content"] for r in seeded_subset(rows, 5, 3)]
    assert [r["prompt"][0]["content"] for r in lines_of(out)] == expected
    assert printed_counts(printed)["read"] == 20 and "5 (seeded subset, seed 3)" in printed


def test_help_lists_the_flags_and_imports_no_torch():
    code = (
        "import sys; from airoad.cli import main\n"
        "assert main(['data', 'pairs', '--help']) == 0\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert res.returncode == 0, res.stderr
    for flag in (
        "--dataset_path",
        "--adapters",
        "--base_model",
        "--reject_unless",
        "--n",
        "--temperature",
        "--overwrite",
    ):
        assert flag in res.stdout


# --------------------------------------------------------------------------- a real (tiny) model


@pytest.fixture(scope="module")
def untied_model_dir(tmp_path_factory, qwen_tokenizer) -> Path:
    # Untied head: greedy answers depend on the whole prompt (a tied tiny model echoes its last token).
    return build_tiny_qwen(tmp_path_factory.mktemp("untied"), qwen_tokenizer, tie=False)


@pytest.fixture(scope="module")
def moved_adapter(untied_model_dir, tmp_path_factory) -> Path:
    """A LoRA adapter with random (nonzero) B matrices, so tuned answers differ from the base's, and a
    run_config.yaml naming the base and a system prompt, as a run writes it."""
    import torch
    from transformers import AutoModelForCausalLM

    from airoad.core.base.options import load_config
    from airoad.core.model.adapters import wrap_with_adapters
    from airoad.sft.schema import TrainConfig

    out = tmp_path_factory.mktemp("adapter")
    cfg = load_config(TrainConfig, ["--base_model", str(untied_model_dir)])[0]
    model = wrap_with_adapters(AutoModelForCausalLM.from_pretrained(untied_model_dir), cfg)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    model.save_pretrained(out)
    (out / "run_config.yaml").write_text(f"base_model: {untied_model_dir}\nsystem_prompt: Be brief.\n")
    return out


def test_rejected_is_the_tuned_models_own_greedy_answer(moved_adapter, untied_model_dir, tmp_path, capsys):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from airoad.core.model.generate import generate

    src = write_jsonl(tmp_path / "sft.jsonl", CHAT_ROWS)
    out = tmp_path / "pairs.jsonl"
    argv = ["--dataset_path", str(src), "--adapters", str(moved_adapter), "--out", str(out), *CPU]
    rc, printed, err = run(capsys, *argv, "--max_new_tokens", "6", "--batch_size", "3")
    assert rc == 0, err
    rows = lines_of(out)
    counts = printed_counts(printed)
    assert counts["generated"] == counts["written"] == len(rows) == 4  # random answers: none identical
    # the run's system prompt fills a row without one, and is written: the prompt the model answered
    assert rows[0]["prompt"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 2+2?"},
    ]
    assert rows[1]["prompt"] == CHAT_ROWS[1]["messages"][:-1]  # its own system turn, unchanged
    tok = AutoTokenizer.from_pretrained(untied_model_dir)
    base = AutoModelForCausalLM.from_pretrained(untied_model_dir).eval()
    prompts = [r["prompt"] for r in rows]
    plain = [g.text for g in generate(base, tok, prompts, 6)]
    tuned = [g.text for g in generate(PeftModel.from_pretrained(base, moved_adapter).eval(), tok, prompts, 6)]
    assert [r["rejected"][0]["content"] for r in rows] == tuned != plain


def test_same_seed_same_file_when_sampling(untied_model_dir, tmp_path, capsys):
    src = write_jsonl(tmp_path / "sft.jsonl", CHAT_ROWS * 3)
    common = [
        "--dataset_path",
        str(src),
        "--base_model",
        str(untied_model_dir),
        *CPU,
        "--max_new_tokens",
        "8",
    ]
    common += ["--temperature", "1.0", "--n", "8", "--batch_size", "4"]
    files = {}
    for name, seed in (("a", "5"), ("b", "5"), ("c", "6")):
        files[name] = tmp_path / f"{name}.jsonl"
        rc, _, err = run(capsys, *common, "--seed", seed, "--out", str(files[name]))
        assert rc == 0, err
    assert files["a"].read_bytes() == files["b"].read_bytes()
    assert files["a"].read_bytes() != files["c"].read_bytes()
    assert len(lines_of(files["a"])) > 0
