"""`airoad pref` (DPO, ORPO, KTO): data checks and masks on the real template, the compact head
against plain autograd and TRL's own head, the reference, the CLI run's files and stops.

Tiny random Qwen2 with the real Qwen2.5 tokenizer (skips without ../shared); seconds each.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from conftest import FP32, train_args, write_jsonl

from airoad.cli import main as cli
from airoad.core.base.options import load_config
from airoad.core.kernels.token_logprobs import token_logprobs, token_logprobs_reference
from airoad.core.run.rundir import RUN_FILES
from airoad.pref import data as pdata
from airoad.pref.schema import PrefConfig

pytest.importorskip(
    "trl", reason="airoad pref trains through TRL (not installed, or its datasets dependency is not)"
)
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")
LN2 = math.log(2.0)

PAIRS = [
    {"prompt": "What is 2+2?", "chosen": "4.", "rejected": "Great question! The answer is 4.<|im_end|>"},
    {
        "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a prime."}],
        "chosen": [{"role": "assistant", "content": "7."}],
        "rejected": [{"role": "assistant", "content": "User: I cannot answer that."}],
    },
    {"prompt": "Say hi.", "chosen": "Hi!", "rejected": "As an AI, I do not greet people."},
    {"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "Assistant: London, I think."},
]


def pref_cfg(*argv: str) -> PrefConfig:
    return load_config(PrefConfig, list(argv))[0]


def pref_argv(model_dir, data, out, *extra: str) -> list[str]:
    return [
        "pref",
        *train_args(model_dir, data, out)[1:],
        "--max_steps",
        "4",
        "--per_device_batch_size",
        "2",
        "--grad_accum",
        "1",
        "--print_every_steps",
        "1",
        "--warmup_ratio",
        "0",
        "--lr_scheduler",
        "constant",
        *FP32,
        *extra,
    ]


def log_rows(out: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((out / "train_log.csv").open()))


@pytest.fixture()
def pairs_file(tmp_path) -> Path:
    return write_jsonl(tmp_path / "pairs.jsonl", PAIRS * 2)


# --------------------------------------------------------------------------- the compact head


@pytest.mark.parametrize("chunk", [1, 3, 64])
def test_token_logprobs_equal_plain_autograd_in_value_and_gradient(chunk):
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=False).requires_grad_(False)
    hidden = torch.randn(7, 16, requires_grad=True)
    targets = torch.randint(0, 50, (7,))
    weights = torch.randn(7)  # a loss that weighs each token differently, like DPO's
    got = token_logprobs(hidden, head, targets, chunk)
    (got * weights).sum().backward()
    g_got, hidden.grad = hidden.grad.clone(), None
    want = token_logprobs_reference(hidden, head, targets)
    (want * weights).sum().backward()
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(g_got, hidden.grad, atol=1e-5, rtol=1e-5)


def test_token_logprobs_of_no_position_is_an_empty_differentiable_tensor():
    head = torch.nn.Linear(4, 9, bias=False).requires_grad_(False)
    hidden = torch.zeros(0, 4, requires_grad=True)
    out = token_logprobs(hidden, head, torch.zeros(0, dtype=torch.long))
    assert out.shape == (0,)
    out.sum().backward()


def test_compact_head_gives_trls_log_probs(tiny_model_dir):
    """Our fused_lm_head forward returns what TRL's own fused head returns, on labelled positions."""
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    from airoad.pref.trainer import install_compact_head

    ids = torch.randint(0, 1000, (2, 12))
    labels = ids.clone()
    labels[:, :5] = -100
    labels[1, 9:] = -100
    theirs = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    add_fused_lm_head(theirs)
    ours = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    install_compact_head(ours, chunk=4)
    a = theirs(input_ids=ids, labels=labels, fused_lm_head=True)
    b = ours(input_ids=ids, labels=labels, fused_lm_head=True)
    torch.testing.assert_close(b.log_probs, a.log_probs, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b.loss, a.loss, atol=1e-5, rtol=1e-5)
    assert ours(input_ids=ids).logits.shape == (2, 12, ours.config.vocab_size)  # plain calls unchanged


@pytest.mark.parametrize("side", ["right", "left"])
def test_padding_free_head_equals_each_row_alone_in_values_and_gradients(tiny_model_dir, side):
    """A padded DPO-like batch (rows of 12, 7 and 9 tokens, padded right as TRL does, or left)
    scored padding-free gives each row's log-probs and gradients as if it ran alone, unpadded,
    through TRL's own head (HF numbers left-padded positions from the pad, hence the reference)."""
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    from airoad.pref.trainer import install_compact_head

    torch.manual_seed(0)
    lengths, t, weights = [12, 7, 9], 12, [1.0, -2.0, 0.5]
    rows = [torch.randint(3, 1000, (n,)) for n in lengths]
    ids = torch.zeros(3, t, dtype=torch.long)
    attn = torch.zeros(3, t, dtype=torch.long)
    for i, r in enumerate(rows):
        span = slice(0, len(r)) if side == "right" else slice(t - len(r), t)
        ids[i, span], attn[i, span] = r, 1
    labels = ids.masked_fill(attn == 0, -100)
    for i, n in enumerate(lengths):
        labels[i, (0 if side == "right" else t - n) + torch.arange(3)] = -100  # a 3-token prompt

    def grads(model):
        return {n: p.grad for n, p in model.named_parameters() if p.grad is not None}

    ours = AutoModelForCausalLM.from_pretrained(tiny_model_dir).train()
    ours.get_output_embeddings().weight.requires_grad_(False)  # a frozen head (tied: embeddings)
    install_compact_head(ours, chunk=4)
    out = ours(input_ids=ids, attention_mask=attn, labels=labels, fused_lm_head=True)
    (out.log_probs.sum(1) * torch.tensor(weights)).sum().backward()

    theirs = AutoModelForCausalLM.from_pretrained(tiny_model_dir).train()
    theirs.get_output_embeddings().weight.requires_grad_(False)
    add_fused_lm_head(theirs)
    for i, (r, w) in enumerate(zip(rows, weights, strict=True)):
        lab = r.clone()[None]
        lab[0, :3] = -100
        alone = theirs(input_ids=r[None], labels=lab, fused_lm_head=True).log_probs[0]
        mine = out.log_probs[i][labels[i, 1:] != -100]
        torch.testing.assert_close(mine, alone[lab[0, 1:] != -100], atol=1e-5, rtol=1e-5)
        (alone.sum() * w).backward()
    assert len(grads(theirs)) > 10 and grads(ours).keys() == grads(theirs).keys()
    for name, g in grads(theirs).items():
        torch.testing.assert_close(
            grads(ours)[name], g, atol=5e-5, rtol=1e-3, msg=lambda m, n=name: f"{n}: {m}"
        )


# --------------------------------------------------------------------------- data


def test_split_is_exactly_at_the_assistant_header_of_the_real_template(qwen_tokenizer):
    tok = qwen_tokenizer
    prompt = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a prime."}]
    prompt_ids, completion = pdata.render(tok, prompt, "7 is prime.")
    rendered = tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    assert prompt_ids == tok(rendered, add_special_tokens=False)["input_ids"]
    assert tok.decode(prompt_ids).endswith("<|im_start|>assistant\n")
    assert tok.decode(completion) == "7 is prime.<|im_end|>"  # the answer and its end of turn, nothing else
    assert completion[-1] == tok.convert_tokens_to_ids("<|im_end|>")
    full = tok.apply_chat_template([*prompt, {"role": "assistant", "content": "7 is prime."}], tokenize=False)
    assert tok.decode(prompt_ids + completion) == full.rstrip()


def test_a_string_prompt_is_one_user_turn_and_system_prompt_fills_a_missing_system_turn(qwen_tokenizer):
    rows = [(1, {"prompt": "Hi?", "chosen": "Hello.", "rejected": "Human: hi"})]
    (s,) = pdata.to_samples(rows, "f.jsonl", "dpo", "Answer in French.")
    assert s.prompt == [
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "Hi?"},
    ]
    assert s.answers == ("Hello.", "Human: hi") and s.source == "f.jsonl:1"
    kept = pdata.prompt_messages(
        [{"role": "system", "content": "Own."}, {"role": "user", "content": "x"}], "Other"
    )
    assert kept[0]["content"] == "Own."


def test_a_pair_row_with_other_keys_stays_a_pair_and_its_own_system_prompt_wins():
    row = {"prompt": "Hi?", "chosen": "Hello.", "rejected": "Yo.", "label": "greeting", "id": 7}
    assert pdata.row_problem(row, "dpo") is None
    (s,) = pdata.to_samples([(1, {**row, "system_prompt": "Row's own."})], "f", "dpo", "Config's.")
    assert s.prompt[0] == {"role": "system", "content": "Row's own."} and s.answers == ("Hello.", "Yo.")
    (s,) = pdata.to_samples([(1, row)], "f", "dpo", "Config's.")
    assert s.prompt[0]["content"] == "Config's."
    assert "`system_prompt` must be a non-empty string" in pdata.row_problem(
        {**row, "system_prompt": 3}, "dpo"
    )


def test_kto_takes_pair_rows_as_one_desirable_and_one_undesirable_row():
    rows = [(1, PAIRS[0]), (2, {"prompt": "Q?", "completion": "A.", "label": False})]
    samples = pdata.to_samples(rows, "f", "kto", None)
    assert [(s.answers, s.label) for s in samples] == [
        (("4.",), True),
        (("Great question! The answer is 4.<|im_end|>",), False),
        (("A.",), False),
    ]


def test_kto_rows_get_the_previous_rows_completion_within_their_batch():
    rows = [{"prompt_ids": [i], "completion_ids": [100 + i], "label": True} for i in range(5)]
    ordered = pdata.kto_order(rows, batch=2, seed=0)
    assert sorted(r["prompt_ids"][0] for r in ordered) == list(range(5))
    for s in range(0, 5, 2):
        group = ordered[s : s + 2]
        assert [r["KL_completion_ids"] for r in group] == [
            g["completion_ids"] for g in group[-1:] + group[:-1]
        ]
    assert ordered == pdata.kto_order(rows, batch=2, seed=0)


def test_long_rows_lose_the_prompt_start_first_then_the_answer_end(qwen_tokenizer):
    cfg = pref_cfg("--max_seq_len", "40", "--max_prompt_len", "24")
    long_q = " ".join(f"word{i}" for i in range(60))
    s = pdata.Sample([{"role": "user", "content": long_q}], ("short answer", " ".join(["long"] * 80)))
    stats = pdata.LoadStats()
    (row,) = pdata.tokenize_samples(qwen_tokenizer, [s], cfg, stats)
    full_prompt, chosen = pdata.render(qwen_tokenizer, s.prompt, "short answer")
    assert row["prompt_ids"] == full_prompt[-24:]  # the end: the question's end and the assistant header
    assert row["chosen_ids"] == chosen  # fits in the 16 tokens left
    _, rejected = pdata.render(qwen_tokenizer, s.prompt, s.answers[1])
    assert row["rejected_ids"] == rejected[:16]
    assert stats.truncated == 1 and stats.dropped == 0 and stats.kept == 1


def test_without_a_prompt_cap_a_row_whose_prompt_fills_the_budget_is_dropped_and_counted(qwen_tokenizer):
    cfg = pref_cfg("--max_seq_len", "40", "--max_prompt_len", "0")  # the default system turn: ~30
    long_q = " ".join(f"w{i}" for i in range(60))
    rows = [pdata.Sample([{"role": "user", "content": q}], ("a", "b")) for q in (long_q, "Hi")]
    stats = pdata.LoadStats()
    out = pdata.tokenize_samples(qwen_tokenizer, rows, cfg, stats)
    assert len(out) == 1 and stats.dropped == 1 and stats.kept == 1


@pytest.mark.parametrize(
    "row, message",
    [
        ([1, 2], "row is a JSON list, not an object"),
        ({"prompt": "x", "choosen": "a", "rejected": "b"}, "no `chosen` (found `choosen`: a typo?)"),
        ({"prompt": "", "chosen": "a", "rejected": "b"}, "`prompt` is empty"),
        (
            {
                "prompt": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
                "chosen": "a",
                "rejected": "b",
            },
            "must start and end with a user turn",
        ),
        (
            {"prompt": "q", "chosen": [{"role": "user", "content": "a"}], "rejected": "b"},
            "one assistant message",
        ),
        (
            {"prompt": "q", "chosen": "same  text", "rejected": "same text"},
            "chosen and rejected are the same text",
        ),
        ({"prompt": "q", "completion": "a", "label": True}, "a KTO row (completion + label); method dpo"),
    ],
)
def test_row_problems_name_the_fault(row, message):
    assert message in pdata.row_problem(row, "dpo")


def test_kto_label_must_be_a_boolean():
    assert "`label` is 1; write true" in pdata.row_problem(
        {"prompt": "q", "completion": "a", "label": 1}, "kto"
    )
    assert pdata.row_problem({"prompt": "q", "completion": "a", "label": True}, "kto") is None


def test_bad_rows_give_one_line_each_exit_2_and_nothing_written(tiny_model_dir, tmp_path, capsys):
    bad = write_jsonl(
        tmp_path / "bad.jsonl",
        [
            PAIRS[0],
            {"prompt": "q", "chosen": "a"},
            "not json",
            {"prompt": "q", "chosen": "x", "rejected": "x"},
        ],
    )
    out = tmp_path / "out"
    assert cli(pref_argv(tiny_model_dir, bad, out)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert [line.split(": ", 2)[1] for line in err] == [f"{bad}:2", f"{bad}:3", f"{bad}:4"]
    assert "no `rejected`" in err[0] and "invalid JSON" in err[1] and "same text" in err[2]
    assert not out.exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--method", "kto", "--per_device_batch_size", "1"],
            "method kto needs per_device_batch_size 2 or more",
        ),
        (["--max_seq_len", "64", "--max_prompt_len", "64"], "make max_prompt_len smaller than max_seq_len"),
        (["--method", "kto", "--loss_type", "ipo"], "loss_type ipo is a dpo loss"),
        (["--loss_type", "kto"], "loss_type kto is a kto loss"),
        (["--metod", "dpo"], "--method"),
    ],
)
def test_config_mistakes_are_one_line_and_exit_2(argv, message, capsys):
    assert cli(["pref", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


# --------------------------------------------------------------------------- runs


def test_dpo_cli_run_writes_the_promised_files_and_starts_at_ln2(
    tiny_model_dir, pairs_file, tmp_path, qwen_tokenizer, capsys
):
    out = tmp_path / "dpo"
    assert cli(pref_argv(tiny_model_dir, pairs_file, out, "--learning_rate", "5e-3")) == 0
    tok_dir = tmp_path / "tok"
    qwen_tokenizer.save_pretrained(tok_dir)
    assert {p.name for p in out.iterdir()} == set(RUN_FILES) | {p.name for p in tok_dir.iterdir()}
    rows = log_rows(out)
    assert list(rows[0]) == [
        "step", "loss", "reward_chosen", "reward_rejected", "margin", "accuracy",
        "lr", "grad_norm", "tokens", "elapsed_s", "eval_loss",
    ]  # fmt: skip
    assert float(rows[0]["loss"]) == pytest.approx(LN2, abs=1e-4)  # fresh adapter: policy == reference
    assert float(rows[0]["reward_chosen"]) == 0.0 and float(rows[0]["margin"]) == 0.0
    assert int(rows[-1]["tokens"]) > int(rows[0]["tokens"]) > 0
    printed = capsys.readouterr().out
    assert "data: 8 loaded (8 dpo rows)" in printed and "reward_chosen" in printed
    saved = json.loads((out / "adapter_config.json").read_text())
    assert saved["base_model_name_or_path"] == str(tiny_model_dir) and not (out / "ref").exists()
    assert load_config(PrefConfig, ["--config", str(out / "run_config.yaml")])[0].method == "dpo"


def test_a_high_learning_rate_widens_the_margin(tiny_model_dir, pairs_file, tmp_path):
    out = tmp_path / "dpo"
    argv = pref_argv(tiny_model_dir, pairs_file, out, "--learning_rate", "2e-2", "--max_steps", "10")
    assert cli(argv) == 0
    rows = log_rows(out)
    margins = [float(r["margin"]) for r in rows]
    assert margins[0] == 0.0 and sum(margins[-3:]) / 3 > 0.05
    assert float(rows[-1]["loss"]) < LN2


def adapter_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path / "adapter_model.safetensors"))


def test_from_an_init_adapter_the_reference_is_its_frozen_copy(tiny_model_dir, pairs_file, tmp_path):
    """Starts at ln 2 (policy == reference), the reference stays the init adapter, base untouched."""
    import dataclasses

    from airoad.core.base.commands import Invocation
    from airoad.core.model.adapter_source import resolve_source
    from airoad.pref.run import pref, with_init_adapter

    first = tmp_path / "first"
    assert cli(pref_argv(tiny_model_dir, pairs_file, first, "--learning_rate", "2e-2")) == 0
    init = adapter_tensors(first)
    given = pref_cfg(
        *pref_argv(tiny_model_dir, pairs_file, tmp_path / "second", "--learning_rate", "2e-2")[1:]
    )
    given = dataclasses.replace(given, init_adapter=str(first), base_model="ignored")
    inv = Invocation(prog="airoad pref", source=resolve_source(None, str(first), flag="--init_adapter"))
    cfg = with_init_adapter(given, inv)
    _, trainer = pref(cfg, printer=lambda *_: None)
    assert cfg.base_model == str(tiny_model_dir) and given.base_model == "ignored"  # a new config
    rows = log_rows(tmp_path / "second")
    assert float(rows[0]["loss"]) == pytest.approx(LN2, abs=1e-4) and float(rows[0]["margin"]) == 0.0
    peft_model = trainer.model
    assert set(peft_model.peft_config) == {"default", "ref"}
    state = {k: v for k, v in peft_model.state_dict().items() if "lora_" in k}
    for key, value in init.items():
        ref_key = key.replace(".weight", ".ref.weight")
        torch.testing.assert_close(state[ref_key], value.to(state[ref_key].dtype))  # reference untouched
    after = adapter_tensors(tmp_path / "second")
    assert set(after) == set(init) and any(not torch.equal(after[k], init[k]) for k in init)  # policy moved
    assert not any(".ref." in k for k in after)


@pytest.mark.parametrize("ref_cache", ["on", "off"])
def test_an_init_adapter_with_dropout_still_starts_at_ln2(tiny_model_dir, pairs_file, tmp_path, ref_cache):
    """The init adapter's lora_dropout is inherited, but preference training runs without dropout
    (TRL's disable_dropout, extended to airoad's FastDropout): policy == reference at step 1."""
    first = tmp_path / "first"
    assert cli(pref_argv(tiny_model_dir, pairs_file, first, "--lora_dropout", "0.3")) == 0
    second = tmp_path / "second"
    argv = pref_argv(tiny_model_dir, pairs_file, second, "--ref_cache", ref_cache)
    assert cli([*argv, "--init_adapter", str(first)]) == 0
    rows = log_rows(second)
    assert float(rows[0]["loss"]) == pytest.approx(LN2, abs=1e-4) and float(rows[0]["margin"]) == 0.0


def test_reference_cache_on_and_off_train_the_same(tiny_model_dir, pairs_file, tmp_path):
    runs = {}
    for cache in ("on", "off"):
        out = tmp_path / cache
        assert (
            cli(pref_argv(tiny_model_dir, pairs_file, out, "--learning_rate", "1e-2", "--ref_cache", cache))
            == 0
        )
        runs[cache] = [float(r["loss"]) for r in log_rows(out)]
    assert runs["on"] == pytest.approx(runs["off"], abs=1e-4)


def test_an_interrupted_run_resumes_to_the_unbroken_runs_steps_lr_loss_and_weights(
    tiny_model_dir, pairs_file, tmp_path, capsys
):
    import shutil

    extra = ("--learning_rate", "1e-2", "--save_every_steps", "2", "--lr_scheduler", "cosine")
    unbroken, broken = tmp_path / "unbroken", tmp_path / "broken"
    for out in (unbroken, broken):
        assert cli(pref_argv(tiny_model_dir, pairs_file, out, *extra)) == 0
    # As if killed after checkpoint-2: the later checkpoint and the finished adapter are gone.
    shutil.rmtree(broken / "checkpoints" / "checkpoint-4")
    (broken / "adapter_model.safetensors").unlink()
    capsys.readouterr()
    assert cli(["pref", "--config", str(broken / "run_config.yaml"), "--resume", "true"]) == 0
    assert "checkpoint-2" in capsys.readouterr().out
    a, b = log_rows(broken), log_rows(unbroken)
    assert [r["step"] for r in a] == ["1", "2", "3", "4"]  # no step twice
    for ra, rb in zip(a, b, strict=True):
        assert float(ra["lr"]) == pytest.approx(float(rb["lr"]), rel=1e-9)
        assert float(ra["loss"]) == pytest.approx(float(rb["loss"]), abs=1e-5)
        assert ra["tokens"] == rb["tokens"]
    wa, wb = adapter_tensors(broken), adapter_tensors(unbroken)
    for name in wb:
        torch.testing.assert_close(wa[name], wb[name], rtol=1e-4, atol=1e-6)


def test_output_dir_on_or_inside_the_init_adapter_is_refused_and_it_is_kept(
    tiny_model_dir, pairs_file, tmp_path, capsys
):
    first = tmp_path / "first"
    assert cli(pref_argv(tiny_model_dir, pairs_file, first)) == 0
    before = {p.name: p.read_bytes() for p in first.iterdir() if p.is_file()}
    for out in (first, first / "sub"):
        argv = pref_argv(tiny_model_dir, pairs_file, out, "--overwrite", "true", "--init_adapter", str(first))
        capsys.readouterr()
        assert cli(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "init_adapter" in err[0] and "Traceback" not in err[0], err
    assert {p.name: p.read_bytes() for p in first.iterdir() if p.is_file()} == before
    assert not (first / "sub").exists()


def test_kto_and_orpo_runs_log_their_columns(tiny_model_dir, pairs_file, tmp_path):
    kto, orpo = tmp_path / "kto", tmp_path / "orpo"
    assert cli(pref_argv(tiny_model_dir, pairs_file, kto, "--method", "kto")) == 0
    rows = log_rows(kto)
    assert list(rows[0])[1:6] == ["loss", "reward_chosen", "reward_rejected", "margin", "kl"]
    assert float(rows[0]["loss"]) == pytest.approx(0.5, abs=1e-4)  # 1 - sigmoid(0) at the reference
    assert cli(pref_argv(tiny_model_dir, pairs_file, orpo, "--method", "orpo")) == 0
    rows = log_rows(orpo)
    assert list(rows[0])[1:4] == ["loss", "nll", "log_odds"]
    first = rows[0]
    assert float(first["loss"]) == pytest.approx(
        float(first["nll"]) - 0.1 * float(first["log_odds"]), rel=1e-3
    )


def test_orpo_nll_is_the_chosen_answers_mean_token_loss(tiny_model_dir, qwen_tokenizer, pairs_file, tmp_path):
    """The logged NLL of step 1 (lr 0: nothing moved) equals plain cross-entropy on the chosen tokens."""
    from transformers import AutoModelForCausalLM

    out = tmp_path / "orpo"
    argv = pref_argv(tiny_model_dir, pairs_file, out, "--method", "orpo", "--max_steps", "1")
    argv += ["--per_device_batch_size", "8", "--learning_rate", "1e-12"]
    assert cli(argv) == 0
    cfg = pref_cfg("--max_seq_len", "512")
    rows = pdata.tokenize_samples(
        qwen_tokenizer, pdata.to_samples(list(enumerate(PAIRS * 2)), "f", "dpo", None), cfg
    )
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for r in rows:
            ids = torch.tensor([r["prompt_ids"] + r["chosen_ids"]])
            logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
            tgt = ids[0, 1:]
            k = len(r["prompt_ids"]) - 1
            total += -logp[k:].gather(1, tgt[k:, None]).sum().item()
            n += len(r["chosen_ids"])
    assert float(log_rows(out)[0]["nll"]) == pytest.approx(total / n, rel=1e-4)


def test_the_adapter_works_with_plain_peft_merge_and_eval(tiny_model_dir, pairs_file, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = tmp_path / "dpo"
    assert cli(pref_argv(tiny_model_dir, pairs_file, out, "--learning_rate", "2e-2")) == 0
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(out)).eval()
    ids = torch.tensor([[1, 2, 3, 4]])
    merged_dir = tmp_path / "merged"
    assert (
        cli(
            [
                "merge",
                "--adapters",
                str(out),
                "--out",
                str(merged_dir),
                "--device",
                "cpu",
                "--dtype",
                "float32",
            ]
        )
        == 0
    )
    merged = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    with torch.no_grad():
        torch.testing.assert_close(
            merged(input_ids=ids).logits, model(input_ids=ids).logits, atol=1e-4, rtol=1e-4
        )
    report = tmp_path / "eval.json"
    assert (
        cli(["eval", "--adapters", str(out), "--n", "2", "--max_new_tokens", "3", "--out", str(report)]) == 0
    )
    assert json.loads(report.read_text())["sides"] == ["base", "tuned"]
