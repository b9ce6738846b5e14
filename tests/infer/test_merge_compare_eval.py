"""merge / compare / eval on tiny random Qwen2 models with the real tokenizer (offline, seconds)."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import CHAT_ROWS, REPO, build_tiny_qwen, write_jsonl

from airoad.cli import main as cli
from airoad.core.base.options import load_config
from airoad.core.data.chat_data import DataError
from airoad.core.model.generate import end_of_turn_id, generate, stop_ids
from airoad.infer.drift import answer_drift
from airoad.infer.loading import LoadError, load, resolve_source
from airoad.infer.prompts import BUNDLED_PROMPTS, Prompt, load_prompts
from airoad.infer.schema import CompareConfig, EvalConfig, MergeConfig
from airoad.infer.style_eval import summarize
from airoad.sft.run import train
from airoad.sft.schema import TrainConfig

# peft calls a transformers property deprecated in v5 when it wraps a model
pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")
# Answers are compared with plain CPU fp32 runs: pin device and dtype (auto may pick cuda or bf16).
CPU = ["--device", "cpu", "--dtype", "float32"]
SIDE_KEYS = {"answer", "n_tokens", "stopped", "seconds", "tokens_per_s"}
STYLE_KEYS = SIDE_KEYS | {"has_list", "has_heading", "banned_hits"}
SUMMARY_KEYS = {"n", "pct_list", "pct_heading", "avg_banned_hits", "avg_len_tokens", "avg_tokens_per_s"}
PROMPT_ROWS = [
    {
        "messages": [
            {"role": "system", "content": "Answer in French."},
            {"role": "user", "content": "Say hello."},
            {"role": "assistant", "content": "Bonjour."},
            {"role": "user", "content": "Again?"},
            {"role": "assistant", "content": "Salut."},
        ]
    },
    {"instruction": "Reverse the word.", "input": "stressed", "output": "desserts"},
    {"prompt": "Name a colour."},
]


def quiet(*_a, **_k):
    pass


def _train(model_dir: Path, root: Path, dora: bool) -> Path:
    """A few steps at a high learning rate, so the adapter is far from its zero start."""
    data = write_jsonl(root / "train.jsonl", CHAT_ROWS * 3)
    argv = ["--base_model", str(model_dir), "--dataset_path", str(data), "--output_dir", str(root / "run")]
    argv += ["--max_steps", "4", "--grad_accum", "1", "--learning_rate", "3e-2", "--warmup_ratio", "0"]
    argv += ["--lr_scheduler", "constant", "--lora_dropout", "0", "--use_dora", str(dora)]
    argv += ["--system_prompt", "Be brief."]
    return train(load_config(TrainConfig, argv)[0], printer=quiet)[0]


@pytest.fixture(scope="module")
def lora_run(tiny_model_dir, tmp_path_factory) -> Path:
    return _train(tiny_model_dir, tmp_path_factory.mktemp("lora"), dora=False)


@pytest.fixture(scope="module")
def dora_run(tiny_model_dir, tmp_path_factory) -> Path:
    return _train(tiny_model_dir, tmp_path_factory.mktemp("dora"), dora=True)


@pytest.fixture(scope="module")
def merged(lora_run, dora_run, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("merged")
    out = {}
    for kind, run in (("lora", lora_run), ("dora", dora_run)):
        out[kind] = root / kind
        assert cli(["merge", "--adapters", str(run), "--out", str(out[kind])]) == 0
    return out


@pytest.fixture(scope="module")
def untied_model_dir(tmp_path_factory, qwen_tokenizer) -> Path:
    # Untied head: greedy answers depend on the whole prompt (a tied tiny model echoes its last token).
    return build_tiny_qwen(tmp_path_factory.mktemp("untied"), qwen_tokenizer, tie=False)


@pytest.fixture()
def prompt_file(tmp_path) -> Path:
    return write_jsonl(tmp_path / "prompts.jsonl", PROMPT_ROWS)


def probe_ids(tokenizer) -> torch.Tensor:
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Merged?"}, {"role": "assistant", "content": "Yes, merged."}],
        tokenize=False,
    )
    return torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])


def peft_logits(base_dir: Path, run: Path, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(base logits, base+adapter logits) with plain transformers + peft."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_dir).eval()
    with torch.no_grad():
        plain = base(input_ids=ids).logits
        tuned = PeftModel.from_pretrained(base, run).eval()(input_ids=ids).logits
    return plain, tuned


# --------------------------------------------------------------------------- merge


@pytest.mark.parametrize("kind", ["lora", "dora"])
def test_merged_logits_equal_the_adapter_model_and_embeddings_stay_tied(
    kind, merged, request, tiny_model_dir, qwen_tokenizer
):
    from transformers import AutoModelForCausalLM

    run = request.getfixturevalue(f"{kind}_run")
    ids = probe_ids(qwen_tokenizer)
    plain, expected = peft_logits(tiny_model_dir, run, ids)
    assert (expected - plain).abs().max() > 0.05  # the trained adapter really moves the logits
    model = AutoModelForCausalLM.from_pretrained(merged[kind]).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, expected, atol=1e-5, rtol=1e-5)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    info = json.loads((merged[kind] / "airoad_merge.json").read_text())
    assert info["adapter"].startswith("DoRA" if kind == "dora" else "LoRA")
    assert info["check"]["max_abs_diff"] <= 1e-5 < info["check"]["adapter_effect"]


RELOAD = r"""
import json, sys
sys.path[:] = [p for p in sys.path if not p.rstrip("/").endswith("src")]


class NoAiroad:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "airoad":
            raise ImportError("a merged checkpoint must load without airoad")


sys.meta_path.insert(0, NoAiroad())
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

ids = torch.tensor(json.loads(sys.argv[2]))
result = {}
for d in sys.argv[3:]:
    model = AutoModelForCausalLM.from_pretrained(d).eval()
    tok = AutoTokenizer.from_pretrained(d)
    gen = GenerationConfig.from_pretrained(d)
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    eos = gen.eos_token_id if isinstance(gen.eos_token_id, list) else [gen.eos_token_id]
    result[d] = {
        "logits": logits,
        "tied": model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr(),
        "eos_has_im_end": tok.convert_tokens_to_ids("<|im_end|>") in eos,
        "pad": gen.pad_token_id == tok.pad_token_id,
        "chat_template": "<|im_start|>" in (tok.chat_template or ""),
        "airoad_imported": [m for m in sys.modules if m.split(".")[0] == "airoad"],
    }
torch.save(result, sys.argv[1])
"""


def test_merged_checkpoint_loads_with_plain_transformers_without_airoad(
    merged, lora_run, dora_run, tiny_model_dir, qwen_tokenizer, tmp_path
):
    ids = probe_ids(qwen_tokenizer)
    dirs = [str(merged["lora"]), str(merged["dora"])]
    res = tmp_path / "reload.pt"
    proc = subprocess.run(
        [sys.executable, "-c", RELOAD, str(res), json.dumps(ids.tolist()), *dirs],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = torch.load(res)
    for d, run in zip(dirs, (lora_run, dora_run), strict=True):
        r = result[d]
        assert r["tied"] and r["eos_has_im_end"] and r["pad"] and r["chat_template"]
        assert r["airoad_imported"] == []
        torch.testing.assert_close(
            r["logits"], peft_logits(tiny_model_dir, run, ids)[1], atol=1e-5, rtol=1e-5
        )


def test_merge_refuses_non_empty_out_and_overwrite_replaces_it_whole(lora_run, tmp_path, capsys):
    out = tmp_path / "m"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert cli(["merge", "--adapters", str(lora_run), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not empty" in err[0] and "--overwrite" in err[0]
    assert (out / "keep.txt").read_text() == "mine"
    # the adapter dir itself is never a valid --out, even with --overwrite
    assert cli(["merge", "--adapters", str(lora_run), "--out", str(lora_run), "--overwrite", "true"]) == 2
    assert "is or contains the input" in capsys.readouterr().err
    # --overwrite replaces only what airoad wrote: a folder with the user's own file stays refused
    assert cli(["merge", "--adapters", str(lora_run), "--out", str(out), "--overwrite", "true"]) == 2
    assert "holds files airoad did not write (keep.txt)" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "mine"
    (out / "keep.txt").unlink()
    assert cli(["merge", "--adapters", str(lora_run), "--out", str(out)]) == 0  # empty: no flag needed
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    assert cli(["merge", "--adapters", str(lora_run), "--out", str(out), "--overwrite", "true"]) == 0
    assert (out / "model.safetensors").is_file() and (out / "model.safetensors").stat().st_mtime_ns != stamp
    assert not list(out.parent.glob(".m.merge-*"))  # no staging folder left behind
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # the staging dir is gone


def test_merge_writes_nothing_when_the_check_fails(lora_run, tmp_path, capsys):
    out = tmp_path / "m"
    assert cli(["merge", "--adapters", str(lora_run), "--out", str(out), "--tolerance", "1e-12"]) == 2
    err = capsys.readouterr().err
    assert "merge check failed" in err and "nothing written" in err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_merge_can_save_bfloat16(lora_run, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "bf16"
    assert cli(["merge", "--adapters", str(lora_run), "--out", str(out), "--dtype", "bfloat16"]) == 0
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    assert AutoModelForCausalLM.from_pretrained(out).dtype == torch.bfloat16


# --------------------------------------------------------------------------- generation


def test_batched_generation_equals_unbatched_greedy(untied_model_dir, qwen_tokenizer):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(untied_model_dir).eval()
    texts = ["hi", "Explain what a hash table is, in detail, with an example please.", "x y z", "2+2?"]
    prompts = [[{"role": "user", "content": t}] for t in texts]
    one = generate(model, qwen_tokenizer, prompts, max_new_tokens=8, batch_size=1)
    many = generate(model, qwen_tokenizer, prompts, max_new_tokens=8, batch_size=4)
    assert len({len(g.prompt_ids) for g in one}) == 4  # different lengths: left padding is exercised
    assert len({tuple(g.new_ids) for g in one}) > 1  # answers depend on the prompt
    assert [g.new_ids for g in many] == [g.new_ids for g in one]
    assert [g.text for g in many] == [g.text for g in one]
    rendered = qwen_tokenizer.apply_chat_template(prompts[1], tokenize=False, add_generation_prompt=True)
    assert one[1].prompt_ids == qwen_tokenizer(rendered, add_special_tokens=False)["input_ids"]


def test_sampling_is_seeded(untied_model_dir, qwen_tokenizer):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(untied_model_dir).eval()
    prompts = [[{"role": "user", "content": "Tell me a story."}]] * 2

    def sample(seed):
        return [g.new_ids for g in generate(model, qwen_tokenizer, prompts, 8, temperature=1.0, seed=seed)]

    assert sample(1) == sample(1) != sample(2)


class ScriptedLM(torch.nn.Module):
    """Stands in for a causal LM: returns fixed continuations (keyed by prompt length) and records inputs."""

    def __init__(self, script: dict[int, list[int]]):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.script, self.calls = script, []

    def generate(self, input_ids, attention_mask, generation_config):
        self.calls.append((input_ids.clone(), attention_mask.clone(), generation_config))
        time.sleep(0.05)
        new = torch.tensor([self.script[int(m.sum())] for m in attention_mask])
        return torch.cat([input_ids, new], dim=1)


def test_generation_stops_at_eos_and_pad_and_splits_batch_time(qwen_tokenizer):
    tok = qwen_tokenizer
    im_end, pad = tok.convert_tokens_to_ids("<|im_end|>"), tok.pad_token_id
    hello = tok("Hello there", add_special_tokens=False)["input_ids"]
    leak = tok("Hi", add_special_tokens=False)["input_ids"] + [tok.convert_tokens_to_ids("<|im_start|>")]
    prompts = [[{"role": "user", "content": c}] for c in ("a", "a much longer question", "b c d e f g h i j")]
    rendered = [tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    lengths = [len(tok(r, add_special_tokens=False)["input_ids"]) for r in rendered]
    width = 6
    script = {
        lengths[0]: (hello + [im_end] + [pad] * width)[:width],  # stops at eos
        lengths[1]: [7, 8, 9, 10, 11, 12],  # runs to max_new_tokens
        lengths[2]: (leak + [pad] * width)[:width],  # stops at pad; the leaked tag stays in the text
    }
    model = ScriptedLM(script)
    gens = generate(model, tok, prompts, max_new_tokens=width, batch_size=3)
    ids, attn, gcfg = model.calls[0]
    for row_ids, row_mask in zip(ids, attn, strict=True):  # left padded: pads first, attention 0 there
        n_pad = int((row_mask == 0).sum())
        assert row_mask[n_pad:].all() and (row_ids[:n_pad] == pad).all()
    assert (
        gcfg.do_sample is False and gcfg.repetition_penalty == 1.0 and {im_end, pad} <= set(gcfg.eos_token_id)
    )
    assert (gens[0].text, gens[0].stopped, gens[0].n_tokens) == ("Hello there", True, len(hello))
    assert gens[0].new_ids == hello + [im_end]
    assert (gens[1].stopped, gens[1].n_tokens) == (False, width)
    assert gens[2].text == "Hi<|im_start|>" and gens[2].stopped and gens[2].n_tokens == len(leak)
    total = sum(g.n_tokens for g in gens)
    wall = sum(g.seconds for g in gens)
    assert wall >= 0.05 and len({g.tokens_per_s for g in gens}) == 1
    assert gens[0].tokens_per_s == pytest.approx(total / wall)
    assert gens[1].seconds / gens[0].seconds == pytest.approx(width / len(hello))


def test_stop_ids_include_the_template_end_of_turn(qwen_tokenizer):
    im_end = qwen_tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert end_of_turn_id(qwen_tokenizer) == im_end
    assert stop_ids(qwen_tokenizer, ScriptedLM({})) == [im_end, qwen_tokenizer.pad_token_id]


# --------------------------------------------------------------------------- compare


def test_compare_reports_both_sides_and_the_base_side_is_the_base(
    lora_run, tiny_model_dir, prompt_file, tmp_path, capsys
):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "cmp"
    argv = [
        "compare",
        "--adapters",
        str(lora_run),
        "--prompts",
        str(prompt_file),
        "--max_new_tokens",
        "4",
        *CPU,
    ]
    assert cli([*argv, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "compare.json").read_text())
    assert report["sides"] == ["base", "tuned"] and report["base"] == str(tiny_model_dir)  # from run_config
    assert report["system_prompt"] == "Be brief." and report["n_prompts"] == 3
    samples = report["samples"]
    assert [s["prompt"] for s in samples] == ["Say hello.", "Reverse the word.\n\nstressed", "Name a colour."]
    assert [s["system"] for s in samples] == ["Answer in French.", "Be brief.", "Be brief."]
    for s in samples:
        for side in ("base", "tuned"):
            assert set(s[side]) == SIDE_KEYS and 1 <= s[side]["n_tokens"] <= 4
    md = (out / "compare.md").read_text()
    assert md.count("**base**") == md.count("**tuned**") == 3 and "## 3. Name a colour." in md
    assert printed.count("--- base") == printed.count("--- tuned") == 3

    # same answers from plain transformers/peft: "base" really is the base, "tuned" the adapter model
    tok = AutoTokenizer.from_pretrained(lora_run)
    msgs = [Prompt(s["prompt"], s["system"], "").messages(None) for s in samples]
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    plain = [g.text for g in generate(base, tok, msgs, 4)]
    tuned = [g.text for g in generate(PeftModel.from_pretrained(base, lora_run).eval(), tok, msgs, 4)]
    assert [s["base"]["answer"] for s in samples] == plain
    assert [s["tuned"]["answer"] for s in samples] == tuned != plain


def test_compare_a_merged_checkpoint_alone_gives_the_tuned_answers(merged, lora_run, tmp_path, capsys):
    common = ["--max_new_tokens", "5", "--n", "3", "--system_prompt", "Be brief.", *CPU]
    both, alone = tmp_path / "both.json", tmp_path / "alone.json"
    assert cli(["compare", "--adapters", str(lora_run), *common, "--out", str(both)]) == 0
    assert cli(["compare", "--base_model", str(merged["lora"]), *common, "--out", str(alone)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alone.json", "both.json"]  # .json: no .md
    a, b = json.loads(alone.read_text()), json.loads(both.read_text())
    assert a["sides"] == ["base"] and a["adapters"] is None and "tuned" not in a["samples"][0]
    assert [s["prompt"] for s in a["samples"]] == [s["prompt"] for s in b["samples"]]
    assert [s["base"]["answer"] for s in a["samples"]] == [s["tuned"]["answer"] for s in b["samples"]]


# --------------------------------------------------------------------------- eval and drift


def test_eval_report_has_every_key_both_sides_and_drift(lora_run, prompt_file, tmp_path, capsys):
    out = tmp_path / "style.json"
    argv = ["eval", "--adapters", str(lora_run), "--prompts", str(prompt_file), "--n", "2", *CPU]
    assert cli([*argv, "--max_new_tokens", "5", "--batch_size", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    r = json.loads(out.read_text())
    assert r["sides"] == ["base", "tuned"] and r["n_prompts"] == 2 and len(r["samples"]) == 2
    assert "<|im_end|>" in r["banned"]
    for side in ("base", "tuned"):
        assert set(r["summary"][side]) == SUMMARY_KEYS and r["summary"][side]["n"] == 2
        recs = [s[side] for s in r["samples"]]
        assert all(set(rec) >= STYLE_KEYS for rec in recs)
        assert r["summary"][side]["avg_len_tokens"] == pytest.approx(sum(x["n_tokens"] for x in recs) / 2)
    tuned = [s["tuned"] for s in r["samples"]]
    assert r["drift"] > 0 and all(t["drift"] > 0 for t in tuned)
    assert r["drift_tokens"] == sum(t["n_tokens"] + t["stopped"] for t in tuned)
    assert "pct_list" in printed and "drift:" in printed and "avg_tokens_per_s" in printed


def test_eval_of_a_model_alone_has_one_side_and_no_drift(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "style.json"
    assert (
        cli(
            [
                "eval",
                "--base_model",
                str(tiny_model_dir),
                "--n",
                "2",
                "--max_new_tokens",
                "3",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    r = json.loads(out.read_text())
    assert r["sides"] == ["base"] and list(r["summary"]) == ["base"] and r["drift"] is None
    assert [s["source"] for s in r["samples"]] == [p.source for p in load_prompts(None, 2, 42)]


def test_summary_arithmetic():
    recs = [
        {
            "has_list": True,
            "has_heading": False,
            "banned_hits": ["User:", "<s>"],
            "n_tokens": 10,
            "tokens_per_s": 4.0,
        },
        {"has_list": False, "has_heading": False, "banned_hits": [], "n_tokens": 20, "tokens_per_s": 6.0},
        {"has_list": True, "has_heading": True, "banned_hits": ["<s>"], "n_tokens": 30, "tokens_per_s": 8.0},
        {"has_list": False, "has_heading": False, "banned_hits": [], "n_tokens": 40, "tokens_per_s": 2.0},
    ]
    assert summarize(recs) == {
        "n": 4,
        "pct_list": 50.0,
        "pct_heading": 25.0,
        "avg_banned_hits": 0.75,
        "avg_len_tokens": 25.0,
        "avg_tokens_per_s": 5.0,
    }


def test_summary_pct_expect_is_the_share_of_matching_answers():
    recs = [
        {"has_list": False, "has_heading": False, "banned_hits": [], "n_tokens": 1, "tokens_per_s": 1.0}
        | {"expect_match": m}
        for m in (True, False, False, True)
    ]
    assert summarize(recs, expect=True)["pct_expect"] == 50.0
    assert "pct_expect" not in summarize(recs)


@pytest.mark.parametrize("pattern, pct", [(r"\A", 100.0), (r"(?!)", 0.0)])
def test_eval_expect_adds_pct_expect_per_side_and_a_match_per_sample(
    lora_run, prompt_file, tmp_path, capsys, pattern, pct
):
    out = tmp_path / "style.json"
    argv = ["eval", "--adapters", str(lora_run), "--prompts", str(prompt_file), "--n", "3", *CPU]
    assert cli([*argv, "--max_new_tokens", "4", "--expect", pattern, "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["expect"] == pattern
    for side in ("base", "tuned"):
        assert set(r["summary"][side]) == SUMMARY_KEYS | {"pct_expect"}
        assert r["summary"][side]["pct_expect"] == pct
        assert [s[side]["expect_match"] for s in r["samples"]] == [pct == 100.0] * 3
    assert "pct_expect" in capsys.readouterr().out


def test_eval_expect_match_follows_re_search_on_each_answer(lora_run, prompt_file, tmp_path):
    plain, out = tmp_path / "plain.json", tmp_path / "expect.json"
    argv = ["eval", "--adapters", str(lora_run), "--prompts", str(prompt_file), "--n", "3", *CPU]
    assert cli([*argv, "--max_new_tokens", "6", "--out", str(plain)]) == 0
    answers = [s["base"]["answer"] for s in json.loads(plain.read_text())["samples"]]
    pattern = re.escape(answers[0][:3]) if answers[0][:3] else r"\A"
    assert cli([*argv, "--max_new_tokens", "6", "--expect", pattern, "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    want = [re.search(pattern, a) is not None for a in answers]
    assert [s["base"]["expect_match"] for s in r["samples"]] == want and want[0]
    assert r["summary"]["base"]["pct_expect"] == pytest.approx(100.0 * sum(want) / 3, abs=1e-3)


def test_eval_bad_expect_regex_is_one_line(capsys):
    assert cli(["eval", "--base_model", "x", "--expect", "(unclosed"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--expect '(unclosed': not a valid regular expression" in err[0]


PROMPTS = [[{"role": "user", "content": t}] for t in ("What is 2+2?", "Name a prime.", "Say hi.")]


def test_drift_is_zero_for_a_fresh_adapter(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from airoad.core.model.adapters import wrap_with_adapters

    cfg = load_config(TrainConfig, ["--base_model", str(tiny_model_dir)])[0]
    wrap_with_adapters(AutoModelForCausalLM.from_pretrained(tiny_model_dir), cfg).save_pretrained(
        tmp_path / "a"
    )
    loaded = load(
        resolve_source(None, str(tmp_path / "a")), device="cpu", dtype="float32"
    )  # base from adapter_config.json
    gens = generate(loaded.model, loaded.tokenizer, PROMPTS, max_new_tokens=5)
    d = answer_drift(loaded.model, gens, loaded.tokenizer.pad_token_id, batch_size=2)
    assert d.mean == 0.0 and d.per_sample == [0.0, 0.0, 0.0]
    assert d.tokens == sum(len(g.new_ids) for g in gens) > 0


def test_drift_after_training_is_positive_and_matches_full_logits(lora_run):
    loaded = load(resolve_source(None, str(lora_run)), device="cpu", dtype="float32")
    model = loaded.model
    gens = generate(model, loaded.tokenizer, PROMPTS, max_new_tokens=6)
    d = answer_drift(model, gens, loaded.tokenizer.pad_token_id, batch_size=2)
    assert d.mean > 1e-4
    weights = [len(g.new_ids) for g in gens]
    assert d.mean == pytest.approx(
        sum(x * w for x, w in zip(d.per_sample, weights, strict=True)) / sum(weights)
    )
    for g, got in zip(gens, d.per_sample, strict=True):
        ids = torch.tensor([g.prompt_ids + g.new_ids])
        pos = slice(len(g.prompt_ids) - 1, len(ids[0]) - 1)  # positions predicting the answer tokens
        with torch.no_grad():
            tuned = model(input_ids=ids).logits[0, pos].log_softmax(-1)
            with model.disable_adapter():
                base = model(input_ids=ids).logits[0, pos].log_softmax(-1)
        reference = (tuned.exp() * (tuned - base)).sum(-1).mean()  # KL(tuned || base) per token
        assert got == pytest.approx(float(reference), rel=1e-4, abs=1e-8)


# --------------------------------------------------------------------------- inputs and errors


def test_source_from_a_run_dir(lora_run, tiny_model_dir):
    src = resolve_source(None, str(lora_run))
    assert (src.base, src.system_prompt, src.tokenizer_from) == (
        str(tiny_model_dir),
        "Be brief.",
        str(lora_run),
    )
    assert src.base_from.endswith("run_config.yaml") and src.adapter_kind == "LoRA r=16"
    other = resolve_source(str(tiny_model_dir) + "/", str(lora_run))
    assert other.base_from == "--base_model" and other.notes and "overrides" in other.notes[0]


def test_bad_adapter_dirs_are_one_line_errors(tmp_path, tiny_model_dir):
    with pytest.raises(LoadError, match="no such directory"):
        resolve_source(None, str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(LoadError, match="no adapter_config.json"):
        resolve_source(None, str(tmp_path / "empty"))
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tiny_model_dir)}))
    (pickled / "adapter_model.bin").write_bytes(b"")
    with pytest.raises(LoadError, match="only safetensors"):
        resolve_source(None, str(pickled))
    (pickled / "adapter_model.safetensors").write_bytes(b"")
    (pickled / "adapter_config.json").write_text("{}")
    with pytest.raises(LoadError, match="names no base model .*; pass --base_model"):
        resolve_source(None, str(pickled))
    with pytest.raises(LoadError, match="no such directory"):
        resolve_source(str(tmp_path / "nope"), str(pickled))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["merge", "--adapters", "/no/such/run", "--out", "x"], "--adapters /no/such/run: no such directory"),
        (["merge", "--adapters", "x"], "--out is required"),
        (["eval", "--adapters", "x", "--out", "style.txt"], "ending in .json"),
        (["compare", "--n", "2"], "give --adapters"),
        (["compare", "--base_model", "/no/such/model"], "no such directory"),
    ],
)
def test_cli_user_errors_exit_2_with_one_line(argv, message, capsys):
    assert cli(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]


def test_prompt_rows_chatml_alpaca_and_prompt(prompt_file):
    prompts = load_prompts(prompt_file)
    assert [(p.user, p.system) for p in prompts] == [
        ("Say hello.", "Answer in French."),
        ("Reverse the word.\n\nstressed", None),
        ("Name a colour.", None),
    ]
    assert prompts[0].source == f"{prompt_file}:1"
    assert prompts[0].messages("Be brief.")[0] == {"role": "system", "content": "Answer in French."}
    assert prompts[1].messages("Be brief.")[0] == {"role": "system", "content": "Be brief."}
    assert prompts[2].messages(None) == [{"role": "user", "content": "Name a colour."}]


def test_bad_prompt_rows_are_all_reported_with_file_and_line(tmp_path):
    bad = write_jsonl(
        tmp_path / "bad.jsonl",
        [
            {"prompt": "fine"},
            "{not json",
            {"messages": [{"role": "user", "content": "no answer"}]},
            {"prompt": "  "},
        ],
    )
    with pytest.raises(DataError) as e:
        load_prompts(bad)
    lines = e.value.problems
    assert [ln.split(": ", 1)[0] for ln in lines] == [f"{bad}:2", f"{bad}:3", f"{bad}:4"]
    assert 'write {"prompt": "..."}' in lines[1]
    with pytest.raises(DataError, match="no such file"):
        load_prompts(tmp_path / "missing.jsonl")


def test_prompt_subset_is_seeded_and_keeps_order():
    first = load_prompts(None, n=3, seed=7)
    assert first == load_prompts(None, n=3, seed=7) and len(first) == 3
    order = [BUNDLED_PROMPTS.index(p.user) for p in first]
    assert order == sorted(order)
    assert len(load_prompts(None)) == len(BUNDLED_PROMPTS)


def test_every_option_has_help_and_help_imports_no_torch():
    for schema in (MergeConfig, CompareConfig, EvalConfig):
        for f in dataclasses.fields(schema):
            assert f.metadata.get("help"), (schema.__name__, f.name)
    code = (
        "import sys\nfrom airoad.cli import main\n"
        "for cmd in ('merge', 'compare', 'eval'):\n"
        "    try:\n        main([cmd, '--help'])\n    except SystemExit:\n        pass\n"
        "assert 'torch' not in sys.modules, 'help imported torch'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for flag in ("--adapters", "--tolerance", "--max_new_tokens", "--banned", "--system_prompt"):
        assert flag in proc.stdout


@pytest.mark.parametrize(
    "script",
    ["scripts/slm/qwen05b_lora_merge.py", "scripts/slm/qwen05b_compare.py", "scripts/eval/style_eval.py"],
)
def test_seed_shims_document_a_runnable_command(script):
    text = (REPO / script).read_text()
    assert f"python {script} --" in text and "from airoad.cli import main" in text
