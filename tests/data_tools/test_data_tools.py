"""Data tools: markdown-slice, neg-guard, mix, stats; their CLI, script shims and config extensions."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import CHAT_ROWS, REPO, write_jsonl

from airoad.cli import main as cli
from airoad.core.base.options import ConfigError, load_config, opt
from airoad.core.data.chat_data import read_rows
from airoad.core.data.text_checks import DEFAULT_BANNED, banned_hits, has_heading, has_list
from airoad.data_tools.markdown_rewrite import heading, restructure, split_sentences
from airoad.data_tools.mix import weighted
from airoad.data_tools.neg_guard_bank import PAIRS

BUNDLED = [REPO / "data/sft/example_train.jsonl", REPO / "data/sft/example_dev.jsonl"]


def chat(user: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


def lines_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = cli(["data", *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


# --- config extensions -------------------------------------------------------------------------


@dataclass
class ListBoolSchema:
    inputs: list[str] = opt([], "files")
    sizes: list[int] = opt([1], "sizes", min=1)
    shuffle: bool = opt(False, "shuffle")
    seed: int = opt(0, "seed")


def test_list_fields_take_several_values_and_bools_a_bare_flag(tmp_path):
    cfg, _ = load_config(ListBoolSchema, ["--inputs", "a:3", "b:1", "--shuffle", "--seed", "5"])
    assert cfg.inputs == ["a:3", "b:1"] and cfg.shuffle is True and cfg.seed == 5 and cfg.sizes == [1]
    assert load_config(ListBoolSchema, ["--shuffle", "false"])[0].shuffle is False
    assert load_config(ListBoolSchema, ["--shuffle", "true"])[0].shuffle is True
    y = tmp_path / "c.yaml"
    y.write_text("inputs: [x.jsonl:2, y.jsonl]\nsizes: 4\n")
    cfg, _ = load_config(ListBoolSchema, ["--config", str(y)])
    assert cfg.inputs == ["x.jsonl:2", "y.jsonl"] and cfg.sizes == [4]
    assert ListBoolSchema().inputs is not ListBoolSchema().inputs  # list defaults are not shared
    with pytest.raises(ConfigError) as e:
        load_config(ListBoolSchema, ["--sizes", "2", "x", "0", "--shuffle", "maybe"])
    assert e.value.problems == [
        "--sizes = ['2', 'x', '0'] item 2 ('x') must be an integer",
        "--shuffle = 'maybe' must be true or false",
    ]
    with pytest.raises(ConfigError, match=r"--sizes = \[2, 0\] item 2 \(0\) must be >= 1"):
        load_config(ListBoolSchema, ["--sizes", "2", "0"])


# --- markdown slice: the rewrite ---------------------------------------------------------------


def naive_sentences(text: str) -> list[str]:
    """Independent of the tool: cut after every . ! ? (and closing quote) before whitespace."""
    parts = re.split(r"(?<=[.!?])[\"')”’]*\s+", text)
    return [" ".join(p.split()) for p in parts if p.strip()]


def bundled_pairs() -> list[tuple[str, str]]:
    rows = [r for path in BUNDLED for _, r in read_rows(path)]
    return [(r["messages"][-2]["content"], r["messages"][-1]["content"]) for r in rows]


def assert_rewrite_keeps(answer: str, text: str) -> None:
    """Every sentence of ``answer`` is in ``text``; nothing is added but the heading and list markers."""
    flat = " ".join(text.split())
    for sentence in naive_sentences(answer):
        assert sentence in flat, (sentence, text)
    body = re.sub(r"(?m)^(?:- |\d+\. )", "", text.split("\n\n", 1)[1])
    assert body.split() == answer.split()
    assert has_heading(text) and has_list(text) and text.startswith("## ")


def test_rewrite_keeps_every_sentence_of_the_bundled_answers():
    kinds = Counter()
    for question, answer in bundled_pairs():
        kind, text = restructure(question, answer)
        kinds[kind] += 1
        if kind != "rewritten":
            assert text == answer
            continue
        assert_rewrite_keeps(answer, text)
        head = text.splitlines()[0]
        assert not head.endswith("…") and len(head.split()) <= 17, head  # "## " + 16 words
        bullets = [line for line in text.splitlines() if line.startswith("- ")]
        for line in bullets:
            # no bullet is a fragment: a sentence leaning on the one before stays with it (unless
            # that would leave a one-item list)
            assert len(bullets) <= 2 or not re.match(r"- (?:But|So|That's why)\b", line), text
            assert not re.fullmatch(r"- St\.", line), text  # "St. Peter's" is one sentence
    assert kinds["rewritten"] >= 30 and kinds["structured"] >= 30 and kinds["code"] >= 5, kinds
    assert kinds["verse_or_table"] + kinds["requested_text"] + kinds["too_short"] >= 5, kinds


def test_rewrite_layout_lead_bullets_and_closing():
    answer = (
        "Because light is faster than sound. Light arrives almost at once. Sound travels about 343 m/s.\n\n"
        "Count the seconds and divide by 3 for kilometers."
    )
    kind, text = restructure("Why do we see lightning before we hear thunder?", answer)
    assert kind == "rewritten"
    assert text == (
        "## Why we see lightning before we hear thunder\n\n"
        "Because light is faster than sound.\n\n"
        "- Light arrives almost at once.\n"
        "- Sound travels about 343 m/s.\n\n"
        "Count the seconds and divide by 3 for kilometers."
    )


def test_rewrite_numbers_sequential_steps():
    answer = (
        "Stripped screws need grip. First, press a wide rubber band into the head. Then turn slowly with "
        "firm pressure. It often catches on the second try. Finally, replace the screw."
    )
    kind, text = restructure("How do I remove a screw with a stripped head?", answer)
    assert kind == "rewritten"
    assert text == (
        "## How to remove a screw with a stripped head\n\n"
        "Stripped screws need grip.\n\n"
        "1. First, press a wide rubber band into the head.\n"
        "2. Then turn slowly with firm pressure. It often catches on the second try.\n"
        "3. Finally, replace the screw."
    )


def test_rewrite_splits_inline_numbered_steps():
    answer = "Reset the router in three steps: 1) unplug it, 2) wait ten seconds, and 3) plug it back in."
    kind, text = restructure("My wifi keeps dropping. What should I do?", answer)
    assert kind == "rewritten"
    assert text == (
        "## If your wifi keeps dropping\n\n"
        "Reset the router in three steps:\n\n"
        "1. unplug it\n2. wait ten seconds\n3. plug it back in."
    )


@pytest.mark.parametrize(
    ("answer", "kind"),
    [
        ("Options:\n\n- a list item\n- another item", "structured"),
        ("## Title\n\nSome text. More text. Even more.", "structured"),
        ("Use this:\n\n```python\nprint('hi')\n```\n\nIt prints. It ends. Done.", "code"),
        ("Roses are red,\nviolets are blue.", "verse_or_table"),
        ("| a | b |\n| 1 | 2 |", "verse_or_table"),
        ("Paris. It is the capital.", "too_short"),  # two sentences: too short for a lead and a list
    ],
)
def test_rewrite_leaves_structured_code_verse_and_short_answers_alone(answer, kind):
    assert restructure("What is it?", answer) == (kind, answer)


def test_rewrite_keeps_requested_text_as_is():
    story = "The lamp had turned for ninety years. Then it stopped. Elin climbed the stairs."
    assert restructure("Write a three-sentence story about a lighthouse.", story) == ("requested_text", story)


def test_rewrite_bullets_are_not_fragments():
    answer = (
        "The Silk Road was a network of trade routes. It wasn't a single road. Merchants traded along "
        "segments. Prices rose at every stop. But goods still moved. Ideas traveled too."
    )
    kind, text = restructure("What was the Silk Road?", answer)
    assert kind == "rewritten"
    assert text == (
        "## The Silk Road\n\n"
        "The Silk Road was a network of trade routes.\n\n"
        "- It wasn't a single road. Merchants traded along segments.\n"  # a topic sentence leads its bullet
        "- Prices rose at every stop. But goods still moved.\n"  # "But ..." stays with what it answers
        "- Ideas traveled too."
    )
    assert_rewrite_keeps(answer, text)


def test_rewrite_joins_bullets_only_while_two_remain():
    answer = "Yes. It rains a lot there. So pack a coat."
    kind, text = restructure("Is it wet in Bergen?", answer)
    assert kind == "rewritten" and text.endswith("\n\n- It rains a lot there.\n- So pack a coat.")


def test_sentence_split_ignores_abbreviations_decimals_and_code():
    text = (
        "Use a formatter, e.g. Black. Divide by 3.6. Then run `a. B` once! Done, J. Smith said. See St. Paul."
    )
    assert split_sentences(text) == [
        "Use a formatter, e.g. Black.",
        "Divide by 3.6.",
        "Then run `a. B` once!",
        "Done, J. Smith said.",
        "See St. Paul.",
    ]


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        (
            "How do I undo my last commit but keep the changes?",
            "How to undo your last commit but keep the changes",
        ),
        (
            "What's the difference between WHERE and HAVING in SQL?",
            "The difference between WHERE and HAVING in SQL",
        ),
        ("What is photosynthesis?", "Photosynthesis"),  # the thing asked about is the title
        ("Who was Ada Lovelace?", "Ada Lovelace"),
        ("What was the Magna Carta?", "The Magna Carta"),
        ("What is wrong with my code?", "What is wrong with your code?"),  # no topic to lift out
        ("What's that in US miles per gallon?", "What's that in US miles per gallon?"),
        ("Why do we see lightning before we hear thunder?", "Why we see lightning before we hear thunder"),
        ("Why is the sky blue?", "Why is the sky blue?"),
        ("What started World War I?", "What started World War I?"),
        # a follow-up that needs the sentence before it: that sentence is the situation
        ("The stopper won't come out. What now?", "If the stopper won't come out"),
        ("I take home $3,200 a month. What does that look like?", "If you take home $3,200 a month"),
        ("Mine are always hard to peel. Any fix?", "If yours are always hard to peel"),
        # ... unless that sentence leans on earlier turns itself
        (
            "I've done that and they keep coming back. Where are they coming from?",
            "Where are they coming from?",
        ),
        # a second question joined on stays a question rather than a garbled title
        (
            "What's the difference between caulk and grout, and when do I use each?",
            "What's the difference between caulk and grout, and when do you use each?",
        ),
        # too long: cut before a clause, still a question; no clause to cut at: an ellipsis
        (
            "Why does a metal spoon feel colder than a wooden one when they're at the same temperature?",
            "Why does a metal spoon feel colder than a wooden one?",
        ),
        (
            "Is the thing with the long name from the old shop near the big red bridge still open today?",
            "Is the thing with the long name from the old shop near the big…",
        ),
        ("So should I pay off debt first?", "Should you pay off debt first?"),
        ("Why?", "Answer"),
    ],
)
def test_heading_from_question(question, expected):
    assert heading(question) == expected


# --- markdown slice: the tool ------------------------------------------------------------------


def rewritable_lines(path: Path) -> list[int]:
    """Line numbers of the rows whose final answer the rewrite changes (computed row by row)."""
    rows = read_rows(path)
    return [
        n
        for n, r in rows
        if restructure(r["messages"][-2]["content"], r["messages"][-1]["content"])[0] == "rewritten"
    ]


def slice_of(capsys, src: Path, out: Path, *extra: str) -> tuple[list[dict], str]:
    rc, printed, err = run(capsys, "markdown-slice", "--dataset_path", str(src), "--out", str(out), *extra)
    assert rc == 0, err
    return lines_of(out), printed


def test_slice_picks_only_rewritable_rows_seeded_in_file_order(tmp_path, capsys):
    src = BUNDLED[0]
    candidates = rewritable_lines(src)
    assert len(candidates) > 25  # more than the limit: the seed decides which
    originals = dict(read_rows(src))
    by_turns = {json.dumps(r["messages"][:-1]): n for n, r in originals.items()}  # all but the answer
    assert len(by_turns) == len(originals)
    picks, printed = {}, {}
    for name, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        rows, printed[name] = slice_of(capsys, src, tmp_path / f"{name}.jsonl", "--n", "25", "--seed", seed)
        assert len(rows) == 25 and all(set(r) == {"messages"} for r in rows)
        picks[name] = [by_turns[json.dumps(r["messages"][:-1])] for r in rows]
        assert picks[name] == sorted(picks[name]) and set(picks[name]) <= set(candidates)  # file order
        for row, n in zip(rows, picks[name], strict=True):
            before = originals[n]["messages"]
            assert row["messages"][:-1] == before[:-1]  # only the final answer changes
            assert_rewrite_keeps(before[-1]["content"], row["messages"][-1]["content"])
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert picks["a"] != picks["c"]
    assert f"{len(candidates)} of {len(originals)} conversations" in printed["a"]
    assert f"picked 25 of the {len(candidates)} rewritable (--n 25, seed 1)" in printed["a"]
    skipped = [int(n) for n in re.findall(r"(?m)^  skipped +(\d+)  ", printed["a"])]
    assert len(skipped) == 5 and sum(skipped) + len(candidates) == len(originals)  # counts add up
    assert len(read_rows(tmp_path / "a.jsonl")) == 25  # the training validator accepts the output


def test_slice_limit_above_the_rewritable_takes_them_all_and_says_so(tmp_path, capsys):
    src = BUNDLED[0]
    n = len(rewritable_lines(src))
    assert n < 60  # the bundled set: fewer rewritable answers than the documented --n 60
    rows, printed = slice_of(capsys, src, tmp_path / "md.jsonl", "--n", "60", "--seed", "42")
    assert len(rows) == n
    assert f"picked all {n} rewritable: --n 60 asked for more than the file has" in printed
    rows0, printed0 = slice_of(capsys, src, tmp_path / "md0.jsonl", "--n", "0")
    assert rows0 == rows and f"picked all {n} rewritable\n" in printed0
    assert all(
        has_heading(r["messages"][-1]["content"]) and has_list(r["messages"][-1]["content"]) for r in rows
    )


def test_slice_counts_each_skip_reason_and_wraps_alpaca(tmp_path, capsys):
    plain = "Rest the meat. The juices settle. It also finishes cooking. Slice it after five minutes."
    rows = [
        chat("Why rest meat?", plain),
        chat("List two fruits.", "- apple\n- pear"),
        chat("Show code.", "```python\nx = 1\n```"),
        chat("Write a haiku.", "Line one here,\nline two here,\nline three."),
        chat("Write a story.", "Once a cat sat. It slept. Then it woke."),
        {"instruction": "Capital of France?", "input": "", "output": "Paris. It is on the Seine."},
        {"instruction": "Why boil eggs in hot water?", "input": "", "output": plain},
    ]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    got, text = slice_of(capsys, src, tmp_path / "out.jsonl", "--n", "0")
    assert "2 of 7 conversations" in text
    for count, reason in (
        (1, "already structured"),
        (1, "code"),
        (1, "verse or table"),
        (1, "requested text"),
        (1, "too short"),
    ):
        assert re.search(rf"(?m)^  skipped +{count}  {reason}", text), (reason, text)
    assert len(got) == 2  # only rewritten rows are written
    assert got[0]["messages"][-1]["content"].startswith(
        "## Why rest meat?\n\nRest the meat.\n\n- The juices settle."
    )
    assert got[1]["messages"][0] == {
        "role": "user",
        "content": "Why boil eggs in hot water?",
    }  # Alpaca wrapped
    assert got[1]["messages"][-1]["content"].startswith("## Why boil eggs in hot water?\n\n")


def test_slice_with_nothing_to_rewrite_is_one_error_line(tmp_path, capsys):
    src = write_jsonl(
        tmp_path / "in.jsonl", [chat("List two fruits.", "- apple\n- pear"), chat("Hi?", "Hello.")]
    )
    out = tmp_path / "out.jsonl"
    rc, _, err = run(capsys, "markdown-slice", "--dataset_path", str(src), "--out", str(out))
    assert rc == 2 and not out.exists() and "Traceback" not in err
    assert err.count("\n") == 1 and "no final answer can be rewritten" in err
    assert "1 already structured, 1 too short" in err


def test_slice_refuses_existing_out_and_bad_rows(tmp_path, capsys):
    src = write_jsonl(tmp_path / "in.jsonl", [chat("q?", "a."), '{"messages": [}', {"text": "x"}])
    out = tmp_path / "out.jsonl"
    out.write_text("keep me\n")
    rc, _, err = run(capsys, "markdown-slice", "--dataset_path", str(src), "--out", str(out))
    assert rc == 2 and out.read_text() == "keep me\n"
    assert "--out" in err and "--overwrite" in err  # every problem at once
    assert f"{src}:2: invalid JSON" in err and f"{src}:3: neither ChatML" in err
    rc, _, err = run(capsys, "markdown-slice", "--dataset_path", str(src), "--out", str(src), "--overwrite")
    assert rc == 2 and "is also an input" in err and src.read_text().count("\n") == 3


# --- neg guard ---------------------------------------------------------------------------------


def test_neg_guard_bank_is_varied_and_clean():
    prompts, answers = zip(*PAIRS, strict=True)
    assert len(set(prompts)) == len(PAIRS) >= 50 and len(set(answers)) == len(PAIRS)
    assert all(not banned_hits(a, DEFAULT_BANNED) for a in answers)
    baiting = sum(bool(banned_hits(p, DEFAULT_BANNED)) for p in prompts)
    assert baiting >= 0.8 * len(PAIRS)  # the prompts really do contain the artifacts
    assert all(len(a.split()) >= 4 for a in answers)  # real answers, not stubs


def test_neg_guard_rows_are_seeded_distinct_and_clean(tmp_path, capsys):
    paths = {k: tmp_path / f"{k}.jsonl" for k in "abc"}
    for k, seed in (("a", "7"), ("b", "7"), ("c", "8")):
        rc, out, _ = run(capsys, "neg-guard", "--out", str(paths[k]), "--n", "40", "--seed", seed)
        assert rc == 0 and "0 hits" in out
    assert paths["a"].read_bytes() == paths["b"].read_bytes() != paths["c"].read_bytes()
    rows = [r for _, r in read_rows(paths["a"])]
    assert len(rows) == 40 and len({r["messages"][0]["content"] for r in rows}) == 40
    assert all(not banned_hits(r["messages"][-1]["content"], DEFAULT_BANNED) for r in rows)


def test_neg_guard_custom_banned_list_and_too_many(tmp_path, capsys):
    banned = tmp_path / "banned.txt"
    banned.write_text("# extra strings\nCanberra\nPython\nminutes\n")
    custom = ("Canberra", "Python", "minutes")
    clean = [a for _, a in PAIRS if not banned_hits(a, custom)]
    assert 0 < len(clean) < len(PAIRS)
    out = tmp_path / "neg.jsonl"
    rc, _, _ = run(capsys, "neg-guard", "--out", str(out), "--n", str(len(clean)), "--banned", str(banned))
    assert rc == 0
    for row in lines_of(out):
        assert not banned_hits(row["messages"][-1]["content"], DEFAULT_BANNED + custom)
    rc, _, err = run(
        capsys,
        "neg-guard",
        "--out",
        str(tmp_path / "x.jsonl"),
        "--n",
        str(len(PAIRS)),
        "--banned",
        str(banned),
    )
    assert rc == 2 and f"{len(clean)} of the {len(PAIRS)} built-in pairs avoid the --banned list" in err
    rc, _, err = run(capsys, "neg-guard", "--out", str(tmp_path / "y.jsonl"), "--n", str(len(PAIRS) + 1))
    assert rc == 2 and err.count("\n") == 1 and f"--n {len(PAIRS) + 1}" in err
    assert not (tmp_path / "x.jsonl").exists() and not (tmp_path / "y.jsonl").exists()


# --- mix ---------------------------------------------------------------------------------------


def make_inputs(tmp_path: Path) -> dict[str, Path]:
    return {
        name: write_jsonl(
            tmp_path / f"{name}.jsonl",
            [chat(f"{name} question {i}?", f"{name} answer {i}.") for i in range(n)],
        )
        for name, n in (("a", 10), ("b", 6), ("c", 4))
    }


def sources(path: Path) -> Counter:
    return Counter(r["messages"][0]["content"] for r in lines_of(path))


def test_mix_integer_weights_exact_counts(tmp_path, capsys):
    f = make_inputs(tmp_path)
    out = tmp_path / "mix.jsonl"
    rc, text, _ = run(
        capsys, "mix", "--inputs", f"{f['a']}:3", f"{f['b']}:1", f"{f['c']}:1", "--out", str(out)
    )
    assert rc == 0 and "wrote 40 rows" in text and "10 rows in, 30 rows out" in text
    counts = sources(out)
    assert sum(counts.values()) == 40
    assert all(counts[f"a question {i}?"] == 3 for i in range(10))
    assert all(counts[f"b question {i}?"] == 1 for i in range(6)) and all(
        counts[f"c question {i}?"] == 1 for i in range(4)
    )


def test_mix_fractional_weights_are_seeded_samples(tmp_path, capsys):
    f = make_inputs(tmp_path)
    outs = [tmp_path / f"m{i}.jsonl" for i in range(3)]
    for out, seed in zip(outs, ("1", "1", "2"), strict=True):
        rc, _, _ = run(
            capsys, "mix", "--inputs", f"{f['a']}:0.5", f"{f['b']}:1.5", "--out", str(out), "--seed", seed
        )
        assert rc == 0
    assert outs[0].read_bytes() == outs[1].read_bytes() != outs[2].read_bytes()
    counts = sources(outs[0])
    a = {k: v for k, v in counts.items() if k.startswith("a ")}
    b = {k: v for k, v in counts.items() if k.startswith("b ")}
    assert len(a) == 5 and set(a.values()) == {1}  # a seeded half of a, no repeats
    assert len(b) == 6 and sorted(b.values()) == [1, 1, 1, 2, 2, 2]  # all of b once, half again


@pytest.mark.parametrize(("weight", "n"), [(0.25, 3), (0.24, 2), (2.05, 21), (0.01, 0), (1, 10)])
def test_weight_row_count_rounds_halves_up(weight, n):
    rows = list(range(10))
    got = weighted(rows, weight, random.Random(0))
    assert len(got) == n and (weight < 1 or got[:10] == rows)


def test_mix_dedupe_before_weighting_and_shuffle(tmp_path, capsys):
    a = write_jsonl(
        tmp_path / "a.jsonl", [chat("one?", "uno."), chat("two?", "dos."), chat("  one?", "uno.\n")]
    )
    b = write_jsonl(
        tmp_path / "b.jsonl", [{"instruction": "two?", "output": "dos."}, chat("three?", "tres.")]
    )
    plain, deduped, shuffled, again = (tmp_path / f"{n}.jsonl" for n in ("plain", "dd", "sh", "sh2"))
    assert run(capsys, "mix", "--inputs", f"{a}:2", str(b), "--out", str(plain))[0] == 0
    assert sum(sources(plain).values()) == 3 * 2 + 2
    rc, text, _ = run(capsys, "mix", "--inputs", f"{a}:2", str(b), "--out", str(deduped), "--dedupe")
    assert rc == 0 and "2 duplicates removed before weighting" in text
    assert (
        "3 rows in, 1 duplicates removed, 4 rows out" in text
        and "2 rows in, 1 duplicates removed, 1 rows out" in text
    )
    assert sources(deduped) == Counter({"one?": 2, "two?": 2, "three?": 1})  # repeats from the weight survive
    for out in (shuffled, again):
        assert (
            run(
                capsys,
                "mix",
                "--inputs",
                f"{a}:2",
                str(b),
                "--out",
                str(out),
                "--dedupe",
                "--shuffle",
                "true",
                "--seed",
                "3",
            )[0]
            == 0
        )
    assert shuffled.read_bytes() == again.read_bytes()
    assert sorted(shuffled.read_text().splitlines()) == sorted(deduped.read_text().splitlines())
    assert shuffled.read_text() != deduped.read_text()


def test_mix_reports_every_input_problem_and_protects_files(tmp_path, capsys):
    f = make_inputs(tmp_path)
    bad1 = write_jsonl(tmp_path / "bad1.jsonl", [chat("q?", "a."), "not json"])
    bad2 = write_jsonl(
        tmp_path / "bad2.jsonl", [{"messages": [{"role": "user", "content": "only a question"}]}]
    )
    out = tmp_path / "mix.jsonl"
    rc, _, err = run(
        capsys, "mix", "--inputs", f"{bad1}:1", f"{bad2}:2", f"{f['a']}:x", f"{f['b']}:0", "--out", str(out)
    )
    assert rc == 2 and not out.exists()
    assert f"{bad1}:2: invalid JSON" in err and f"{bad2}:1: no assistant turn" in err
    assert f"--inputs '{f['a']}:x': weight 'x' is not a number" in err
    assert f"--inputs '{f['b']}:0': weight must be > 0" in err
    out.write_text("old\n")
    rc, _, err = run(capsys, "mix", "--inputs", str(f["a"]), "--out", str(out))
    assert (
        rc == 2
        and err.count("error:") == 1
        and "already exists; pass --overwrite" in err
        and out.read_text() == "old\n"
    )
    assert run(capsys, "mix", "--inputs", str(f["a"]), "--out", str(out), "--overwrite")[0] == 0
    assert len(lines_of(out)) == 10
    before = f["a"].read_bytes()
    rc, _, err = run(capsys, "mix", "--inputs", f"{f['a']}:2", "--out", str(f["a"]), "--overwrite")
    assert rc == 2 and "is also an input" in err and f["a"].read_bytes() == before


# --- stats -------------------------------------------------------------------------------------


def test_stats_offline_without_tokenizer(tmp_path, capsys):
    src = write_jsonl(tmp_path / "d.jsonl", CHAT_ROWS * 3)
    rc, out, err = run(capsys, "stats", str(src), "--base_model", str(tmp_path / "no-model"), "--json")
    assert rc == 0 and err == ""
    s = json.loads(out)
    assert s["rows"] == 12 and s["formats"] == {"chatml": 9, "alpaca": 3}
    assert s["messages_by_role"] == {"system": 3, "user": 15, "assistant": 15}
    assert s["turns"]["histogram"] == {"2": 9, "4": 3} and s["duplicates"] == 8
    assert s["tokens"] is None and s["note"].startswith("token stats skipped:") and "\n" not in s["note"]
    rc, out, _ = run(capsys, "stats", "--dataset_path", str(src), "--base_model", "none")
    assert rc == 0 and "12 rows (9 ChatML, 3 Alpaca)" in out and "8 rows repeat" in out
    assert out.strip().splitlines()[-1] == "note: token stats skipped (--base_model none)"


def test_stats_token_lengths_match_the_chat_template(tmp_path, capsys, qwen_tokenizer):
    tok_dir = tmp_path / "tok"
    qwen_tokenizer.save_pretrained(tok_dir)
    src = BUNDLED[1]
    render = lambda msgs: qwen_tokenizer.apply_chat_template(msgs, tokenize=False)  # noqa: E731
    lengths = sorted(
        len(qwen_tokenizer(render(r["messages"]), add_special_tokens=False)["input_ids"])
        for _, r in read_rows(src)
    )
    n = lengths[len(lengths) // 2]
    rc, out, _ = run(
        capsys, "stats", str(src), "--base_model", str(tok_dir), "--max_seq_len", str(n), "--json"
    )
    tokens = json.loads(out)["tokens"]
    assert rc == 0 and tokens["max"] == lengths[-1] and tokens["p50"] == lengths[(len(lengths) + 1) // 2 - 1]
    assert tokens["truncated"] == sum(x > n for x in lengths) > 0 and tokens["dropped"] == 0


def test_stats_bad_file_is_one_line_per_problem(tmp_path, capsys):
    rc, _, err = run(capsys, "stats", str(tmp_path / "missing.jsonl"), "--base_model", "none")
    assert rc == 2 and err.startswith("error: ") and "no such file" in err and err.count("\n") == 1
    src = write_jsonl(tmp_path / "bad.jsonl", [chat("q?", "a."), {"messages": "x"}])
    rc, _, err = run(capsys, "stats", str(src))
    assert rc == 2 and f"{src}:2: `messages` must be a list" in err and "Traceback" not in err


# --- CLI and shims -----------------------------------------------------------------------------


def test_data_help_lists_tools_without_torch():
    code = (
        "import sys; from airoad.cli import main\n"
        "assert main(['data', '--help']) == 0\n"
        "for t in ('stats', 'markdown-slice', 'neg-guard', 'mix'): assert main(['data', t, '--help']) == 0\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert res.returncode == 0, res.stderr
    for tool in ("stats", "markdown-slice", "neg-guard", "mix"):
        assert f"  {tool} " in res.stdout
    assert "--inputs PATH:WEIGHT [PATH:WEIGHT ...]" in res.stdout and "--shuffle [BOOL]" in res.stdout


def test_unknown_tool_suggests_the_closest(capsys):
    rc, _, err = run(capsys, "mixx")
    assert rc == 2 and err == "error: unknown data tool 'mixx'; did you mean `airoad data mix`?\n"


def test_missing_required_options_all_reported(capsys):
    rc, _, err = run(capsys, "mix", "--shufle")  # every problem at once: the typo and what is missing
    assert rc == 2 and err.splitlines() == [
        "error: unknown flag --shufle; did you mean --shuffle?",
        "error: --inputs is required; give one or more PATH:WEIGHT, e.g. a.jsonl:3 b.jsonl:1",
        "error: --out is required; give the JSONL file to write",
    ]
    rc, _, err = run(capsys, "mix")
    assert rc == 2 and err.startswith("error: --inputs is required") and "error: --out is required" in err
    rc, _, err = run(capsys, "markdown-slice", "--n", "5")
    assert rc == 2 and err.count("is required") == 2


@pytest.mark.parametrize(
    ("script", "args", "rows"),
    [
        ("make_neg_guard.py", ["--n", "3"], 3),
        ("build_markdown_slice.py", ["--dataset_path", "data/sft/example_dev.jsonl", "--limit", "5"], 5),
        ("pack_mix_chatml.py", ["--inputs", "data/sft/example_dev.jsonl:2", "--shuffle", "--dedupe"], 48),
    ],
)
def test_script_shims(tmp_path, script, args, rows):
    path = REPO / "scripts/data" / script
    assert f"python scripts/data/{script} " in path.read_text()  # the docstring gives the runnable command
    out = tmp_path / "out.jsonl"
    res = subprocess.run(
        [sys.executable, str(path), *args, "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    assert len(read_rows(out)) == rows
    res = subprocess.run(
        [sys.executable, str(path), *args, "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert (
        res.returncode == 2
        and res.stderr.splitlines()[-1].startswith("error: --out")
        and "Traceback" not in res.stderr
    )
