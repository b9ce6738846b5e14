"""Data: validation errors (one line each, all at once) and exact loss masks on the real Qwen2.5 template."""

from __future__ import annotations

import json

import pytest
from conftest import CHAT_ROWS, write_jsonl

from airoad.core.data.chat_data import (
    IGNORE,
    DataError,
    LoadStats,
    load_conversations,
    read_rows,
    tokenize_conversation,
)
from airoad.sft.data import tokenize_all


def trained_text(tok, labels):
    return tok.decode([t for t in labels if t != IGNORE])


def assistant_text(messages, eot="<|im_end|>"):
    return "".join(m["content"] + eot for m in messages if m["role"] == "assistant")


@pytest.mark.parametrize("row", CHAT_ROWS, ids=["single", "multi_turn_system", "alpaca", "single2"])
def test_mask_is_exactly_assistant_content_plus_eot(qwen_tokenizer, tmp_path, row):
    path = write_jsonl(tmp_path / "d.jsonl", [row])
    (conv,), _ = load_conversations(path, system_prompt="You are terse.")
    ids, labels, truncated = tokenize_conversation(qwen_tokenizer, conv.messages, 512)
    assert not truncated and len(ids) == len(labels)
    assert trained_text(qwen_tokenizer, labels) == assistant_text(conv.messages)
    # every assistant turn ends with a trained <|im_end|>; user/system tokens never trained
    im_end = qwen_tokenizer.convert_tokens_to_ids("<|im_end|>")
    n_assist = sum(m["role"] == "assistant" for m in conv.messages)
    assert sum(t == im_end for t in labels) == n_assist
    assert sum(t == im_end for t in ids) == len(conv.messages)
    # trained tokens form one contiguous run per assistant turn
    runs = sum(1 for i, t in enumerate(labels) if t != IGNORE and (i == 0 or labels[i - 1] == IGNORE))
    assert runs == n_assist


def test_alpaca_wrapped_and_system_filled(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", CHAT_ROWS)
    convs, stats = load_conversations(path, system_prompt="SYS")
    assert (stats.loaded, stats.chatml, stats.wrapped, stats.system_filled) == (4, 3, 1, 3)
    alp = convs[2].messages
    assert alp == [
        {"role": "system", "content": "SYS"},
        {"role": "user", "content": "Reverse the word.\n\nstressed"},
        {"role": "assistant", "content": "desserts"},
    ]
    assert convs[1].messages[0] == {"role": "system", "content": "Be brief."}  # own system turn kept


def test_truncation_and_drop_counts(qwen_tokenizer, tmp_path):
    long_prompt = {
        "messages": [{"role": "user", "content": "word " * 300}, {"role": "assistant", "content": "ok"}]
    }
    long_answer = {
        "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yes " * 300}]
    }
    path = write_jsonl(tmp_path / "d.jsonl", [CHAT_ROWS[0], long_prompt, long_answer])
    convs, stats = load_conversations(path)
    examples = tokenize_all(qwen_tokenizer, convs, 64, stats)
    assert (stats.truncated, stats.dropped, stats.kept) == (2, 1, 2)
    assert all(len(e.input_ids) <= 64 and e.n_trained > 0 for e in examples)
    assert "2 truncated, 1 dropped" in stats.line()


def test_ablate_examples_is_seeded_subset(tmp_path):
    rows = [
        {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
        for i in range(20)
    ]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    a, _ = load_conversations(path, limit=5, seed=1)
    b, _ = load_conversations(path, limit=5, seed=1)
    c, _ = load_conversations(path, limit=5, seed=2)
    assert [x.source for x in a] == [x.source for x in b] != [x.source for x in c]
    assert len(a) == 5


def test_bom_and_crlf_are_fine(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(json.dumps(r) for r in CHAT_ROWS).encode() + b"\r\n")
    assert len(read_rows(p)) == 4


U = {"role": "user", "content": "q"}
A = {"role": "assistant", "content": "a"}
BAD = [
    ("{not json", "invalid JSON"),
    ("[1, 2]", "row is a JSON list, not an object"),
    (json.dumps({"messages": "hi"}), "`messages` must be a list"),
    (json.dumps({"messages": [U, {"role": "bot", "content": "a"}]}), "unknown role 'bot'"),
    (json.dumps({"messages": [U]}), "no assistant turn"),
    (json.dumps({"messages": [U, {"role": "assistant", "content": "  "}]}), "empty content"),
    (json.dumps({"messages": [U, {"role": "assistant", "content": 5}]}), "content must be a string, not int"),
    (json.dumps({"instruction": "x", "input": ""}), "Alpaca row without `output`"),
    (json.dumps({"prompt": "x"}), "neither ChatML"),
    (json.dumps({"messages": [A, U, A]}), "starts with a user turn"),
    (json.dumps({"messages": [U, A, U]}), "must end with an assistant turn"),
]


@pytest.mark.parametrize("line,needle", BAD, ids=[n for _, n in BAD])
def test_each_malformed_row_gives_one_line_with_file_and_line(tmp_path, line, needle):
    p = tmp_path / "d.jsonl"
    p.write_text(json.dumps(CHAT_ROWS[0]) + "\n" + line + "\n")
    with pytest.raises(DataError) as e:
        read_rows(p)
    (problem,) = e.value.problems
    assert problem.startswith(f"{p}:2: ") and needle in problem and "\n" not in problem


def test_all_problems_listed_together_and_capped(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text("\n".join(["{bad"] * 3 + [json.dumps(CHAT_ROWS[0])] + ["[]"] * 30) + "\n")
    with pytest.raises(DataError) as e:
        read_rows(p)
    assert e.value.problems[0].startswith(f"{p}:1:") and e.value.problems[3].startswith(f"{p}:5:")
    assert len(e.value.problems) == 21 and e.value.problems[-1] == "... and 13 more problems"


def test_file_level_errors(tmp_path):
    empty = tmp_path / "e.jsonl"
    empty.write_text("\n\n")
    latin = tmp_path / "l.jsonl"
    latin.write_bytes(json.dumps(CHAT_ROWS[0]).encode() + b"\n" + '{"x": "caf\xe9"}'.encode("latin-1"))
    for path, needle in (
        (empty, "empty file"),
        (latin, ":2: not UTF-8"),
        (tmp_path / "missing.jsonl", "no such file"),
    ):
        with pytest.raises(DataError) as e:
            read_rows(path)
        assert len(e.value.problems) == 1 and needle in e.value.problems[0], e.value.problems


def test_stats_line_counts_everything():
    s = LoadStats(loaded=5, chatml=3, wrapped=2, system_filled=1, truncated=1, dropped=1, kept=4)
    assert s.line() == (
        "data: 5 loaded (3 ChatML, 2 Alpaca wrapped), 1 given the system prompt, 1 truncated, "
        "1 dropped (no trained token left), 4 kept"
    )
