"""KL anchors (`kl_anchor_path`): general conversations trained on KL to the base alone.

The loss on a batch of task and anchor rows equals the unchunked reference (values and LoRA
gradients), the collator routes every label to exactly one of the two, anchors pull the tune
towards its base on anchor-like text, and a run records them (log column, run_info hash).
"""

from __future__ import annotations

import json
import types
from pathlib import Path

import pytest
import torch
from conftest import CHAT_ROWS, train_args, write_jsonl

from airoad.cli import main as cli
from airoad.core.base.options import load_config
from airoad.core.data.chat_data import IGNORE, file_sha256
from airoad.sft.run import train
from airoad.sft.schema import TrainConfig
from airoad.sft.trainer import AiroadTrainer, Collator

ANCHOR_ROWS = [
    {
        "messages": [
            {"role": "user", "content": "How do I keep basil alive on a windowsill?"},
            {"role": "assistant", "content": "Give it six hours of sun, water when the top soil is dry."},
        ]
    },
    {
        "messages": [
            {"role": "user", "content": "Suggest a name for a grey cat."},
            {"role": "assistant", "content": "Smokey, Ash or Pebble would all suit a grey cat."},
        ]
    },
]


def rows(task: int, anchor: int) -> list[dict]:
    """Dataset rows: ``task`` task rows then ``anchor`` anchor rows, distinct lengths and labels."""
    out = []
    for i in range(task + anchor):
        n = 5 + i
        labels = [IGNORE] * 2 + [100 + i * 10 + j for j in range(n - 2)]
        out.append(
            {
                "input_ids": [7 + i] * n,
                "labels": labels,
                "ex_idx": i,
                **({"kl_only": True} if i >= task else {}),
            }
        )
    return out


@pytest.mark.parametrize("packing", [False, True])
def test_collator_routes_each_label_to_task_or_anchor(packing):
    batch_rows = rows(2, 1)
    plain = Collator(0, packing=packing)([{k: v for k, v in r.items() if k != "kl_only"} for r in batch_rows])
    split = Collator(0, packing=packing)(batch_rows)
    task, anchor = split["shift_labels"], split["anchor_labels"]
    # every labelled position is in exactly one of the two, with its own label
    assert torch.equal(torch.where(task != IGNORE, task, anchor), plain["shift_labels"])
    assert not ((task != IGNORE) & (anchor != IGNORE)).any()
    # the anchor's labels are exactly its own (ids 120..)
    assert set(anchor[anchor != IGNORE].tolist()) == set(batch_rows[2]["labels"][2:])
    assert set(task[task != IGNORE].tolist()) == set(
        batch_rows[0]["labels"][2:] + batch_rows[1]["labels"][2:]
    )
    assert "anchor_labels" not in Collator(0, packing=packing)(rows(2, 0))


def tiny_peft(model_dir, seed=3, device="cpu"):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float64).to(device)
    peft_model = get_peft_model(
        model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"])
    )
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3)
    return peft_model


def fake_trainer(kl_lambda, anchor_lambda, tau):
    t = types.SimpleNamespace(
        kl_lambda=kl_lambda, kl_anchor_lambda=anchor_lambda, kl_tau=tau, loss_chunk=3, teacher_cache=None
    )
    t._teacher = types.MethodType(AiroadTrainer._teacher, t)
    return t


def reference_loss(peft_model, batch, kl_lambda, anchor_lambda, tau):
    """Full logits, autograd: CE on task positions + tau^2 (kl_lambda KL_task + anchor_lambda KL_anchor)."""
    logits = peft_model(
        input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask")
    ).logits.double()
    with peft_model.disable_adapter(), torch.no_grad():
        base = peft_model(
            input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask")
        ).logits.double()
    task, anchor = batch["shift_labels"] != IGNORE, batch["anchor_labels"] != IGNORE
    ce = torch.nn.functional.cross_entropy(logits[task], batch["shift_labels"][task], reduction="sum")

    def kl(m):
        q = torch.log_softmax(base[m] / tau, -1)
        return (q.exp() * (q - torch.log_softmax(logits[m] / tau, -1))).sum()

    return ce + tau**2 * (kl_lambda * kl(task) + anchor_lambda * kl(anchor))


@pytest.mark.parametrize("kl_lambda,anchor_lambda,tau", [(0.0, 2.0, 1.0), (0.3, 1.5, 2.0)])
def test_loss_with_anchors_equals_reference_values_and_grads(
    tiny_model_dir, qwen_tokenizer, kl_lambda, anchor_lambda, tau, device
):
    from airoad.core.data.chat_data import tokenize_conversation

    peft_model = tiny_peft(tiny_model_dir, device=device)
    batch_rows = []
    for i, conv in enumerate([CHAT_ROWS[0], ANCHOR_ROWS[0], CHAT_ROWS[1], ANCHOR_ROWS[1]]):
        ids, labels, _ = tokenize_conversation(qwen_tokenizer, conv["messages"], 128)
        batch_rows.append(
            {"input_ids": ids, "labels": labels, "ex_idx": i, **({"kl_only": True} if i % 2 else {})}
        )
    batch = {
        k: v.to(device) for k, v in Collator(qwen_tokenizer.pad_token_id, packing=False)(batch_rows).items()
    }
    lo = AiroadTrainer._losses(fake_trainer(kl_lambda, anchor_lambda, tau), peft_model, batch, with_kl=True)
    assert lo.n == int((batch["shift_labels"] != IGNORE).sum())
    assert lo.n_anchor == int((batch["anchor_labels"] != IGNORE).sum())
    assert float(lo.anchor_kl) > 1e-3  # the random lora_B moved the anchors' distribution
    total = lo.task + lo.anchor
    total.backward()
    fused = {k: p.grad.clone() for k, p in peft_model.named_parameters() if p.requires_grad}
    peft_model.zero_grad()
    ref = reference_loss(peft_model, batch, kl_lambda, anchor_lambda, tau)
    ref.backward()
    torch.testing.assert_close(total.double(), ref, rtol=1e-5, atol=1e-4)
    for k, p in peft_model.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(fused[k], p.grad, rtol=1e-4, atol=1e-6)


def cfg_for(model_dir, data, out, *extra):
    argv = [
        "--base_model", str(model_dir), "--dataset_path", str(data), "--output_dir", str(out),
        "--max_steps", "8", "--grad_accum", "2", "--learning_rate", "1e-2", "--print_every_steps", "1",
        "--warmup_ratio", "0", "--lr_scheduler", "constant", "--lora_dropout", "0", *extra,
    ]  # fmt: skip
    return load_config(TrainConfig, argv)[0]


def anchor_drift(out, model_dir, tokenizer, anchors) -> float:
    """Mean KL(base || tuned) per assistant token of ``anchors`` for the adapter in ``out``."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from airoad.core.data.chat_data import tokenize_conversation

    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32), out
    )
    total, n = 0.0, 0
    with torch.no_grad():
        for conv in anchors:
            ids, labels, _ = tokenize_conversation(tokenizer, conv["messages"], 128)
            x = torch.tensor([ids])
            m = torch.tensor(labels[1:] + [IGNORE]) != IGNORE
            tuned = torch.log_softmax(model(input_ids=x).logits[0][m].double(), -1)
            with model.disable_adapter():
                base = torch.log_softmax(model(input_ids=x).logits[0][m].double(), -1)
            total += float((base.exp() * (base - tuned)).sum())
            n += int(m.sum())
    return total / n


def trained_positions(tokenizer, *files) -> int:
    from airoad.core.data.chat_data import load_conversations, tokenize_conversation

    n = 0
    for f in files:
        for conv in load_conversations(f)[0]:
            labels = tokenize_conversation(tokenizer, conv.messages, 1024)[1]
            n += sum(lab != IGNORE for lab in labels[1:])
    return n


@pytest.fixture(scope="module")
def plain_run(tiny_model_dir, tmp_path_factory) -> tuple[Path, Path]:
    """(run dir, its data): the anchors' twin without anchors, trained once for both cache modes."""
    root = tmp_path_factory.mktemp("plain")
    data = write_jsonl(root / "train.jsonl", CHAT_ROWS * 3)
    out, _ = train(cfg_for(tiny_model_dir, data, root / "plain"), printer=lambda *_: None)
    return out, data


@pytest.mark.parametrize("cache", ["off", "on"])
def test_anchors_hold_the_tune_near_its_base_and_are_recorded(
    tiny_model_dir, qwen_tokenizer, plain_run, tmp_path, cache
):
    anchors = write_jsonl(tmp_path / "anchors.jsonl", ANCHOR_ROWS * 9)
    quiet = lambda *_: None  # noqa: E731
    plain, chat_file = plain_run
    held, _ = train(
        cfg_for(
            tiny_model_dir, chat_file, tmp_path / "held", "--kl_anchor_path", str(anchors),
            "--kl_anchor_lambda", "1000", "--kl_cache", cache, "--kl_cache_dir", str(tmp_path / "cache"),
        ),
        printer=quiet,
    )  # fmt: skip
    if cache == "off":  # exact KL; the top-64 cache of a random tiny model's near-flat 151k vocab is not
        d_plain = anchor_drift(plain, tiny_model_dir, qwen_tokenizer, ANCHOR_ROWS)
        d_held = anchor_drift(held, tiny_model_dir, qwen_tokenizer, ANCHOR_ROWS)
        assert d_held < 0.5 * d_plain, (d_held, d_plain)
    log = json.loads((held / "train_log.json").read_text())
    seen = [r["kl_anchor"] for r in log if r.get("kl_anchor") is not None]
    assert seen and max(seen) > 0  # the anchors' KL was computed and logged
    # a logging interval holds task tokens (ce), anchor tokens (kl_anchor) or both, never neither
    assert all(r["ce"] is not None or r["kl_anchor"] is not None for r in log)
    info = json.loads((held / "run_info.json").read_text())
    assert info["data"]["kl_anchor_path"] == str(anchors)
    assert info["data"]["kl_anchor_path_sha256"] == file_sha256(anchors)
    assert info["data"]["stats"]["extra"]["anchor"]["kept"] == 18
    assert (info["teacher_cache"] is not None) == (cache == "on")
    if cache == "on":  # the cache holds the base at every task and every anchor position
        stats = info["data"]["stats"]
        assert info["teacher_cache"]["positions"] == trained_positions(qwen_tokenizer, chat_file, anchors)
        assert stats["kept"] == 12  # the task rows; the anchors are counted apart
    assert "kl_anchor" in (held / "train_log.csv").read_text().splitlines()[0]
    assert "kl_anchor" not in (plain / "train_log.csv").read_text().splitlines()[0]


def test_anchor_subset_is_seeded_and_counted(tiny_model_dir, chat_file, tmp_path):
    anchors = write_jsonl(tmp_path / "anchors.jsonl", ANCHOR_ROWS * 5)
    cfg = cfg_for(
        tiny_model_dir, chat_file, tmp_path / "run", "--kl_anchor_path", str(anchors), "--kl_anchor_examples", "3",
        "--max_steps", "1",
    )  # fmt: skip
    lines: list[str] = []
    out, _ = train(cfg, printer=lines.append)
    assert f"anchors: 3 conversations from {anchors} (KL to the base only)" in lines
    info = json.loads((out / "run_info.json").read_text())
    assert info["data"]["stats"]["extra"]["anchor"]["kept"] == 3


def test_anchor_mistakes_are_one_line_each(tiny_model_dir, chat_file, tmp_path, capsys):
    bad = tmp_path / "anchors.jsonl"
    bad.write_text(json.dumps(ANCHOR_ROWS[0]) + "\n" + '{"messages": [{"role": "user", "content": "hi"}]}\n')
    base = [
        "train",
        "--base_model",
        str(tiny_model_dir),
        "--dataset_path",
        str(chat_file),
        "--max_steps",
        "1",
    ]
    assert cli([*base, "--output_dir", str(tmp_path / "a"), "--kl_anchor_path", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:2" in err and "Traceback" not in err
    assert not (tmp_path / "a" / "adapter_model.safetensors").exists()
    assert (
        cli([*base, "--output_dir", str(tmp_path / "b"), "--kl_anchor_path", str(tmp_path / "nope.jsonl")])
        == 2
    )
    assert "nope.jsonl" in capsys.readouterr().err
    assert (
        cli(
            [
                *base,
                "--output_dir",
                str(tmp_path / "c"),
                "--kl_anchor_path",
                str(bad),
                "--kl_anchor_lambda",
                "0",
            ]
        )
        == 2
    )
    assert "kl_anchor_lambda" in capsys.readouterr().err
    # the output directory may not sit on an input: the anchors are one
    assert cli([*base, "--output_dir", str(bad), "--kl_anchor_path", str(bad)]) == 2
    assert "kl_anchor_path" in capsys.readouterr().err
    assert bad.read_text().count("\n") == 2  # the anchor file is untouched


def test_resume_refuses_a_run_whose_anchor_file_changed(tiny_model_dir, chat_file, tmp_path, capsys):
    """--resume checks every file the run trains on, not only dataset_path (issue 26)."""
    anchors = write_jsonl(tmp_path / "anchors.jsonl", ANCHOR_ROWS * 2)
    out = tmp_path / "run"
    argv = train_args(
        tiny_model_dir, chat_file, out, "--kl_anchor_path", str(anchors), "--kl_cache", "off",
        "--max_steps", "2", "--save_every_steps", "1", "--print_every_steps", "1",
    )  # fmt: skip
    assert cli(argv) == 0
    state = json.loads(sorted((out / "checkpoints").glob("checkpoint-*/airoad_state.json"))[-1].read_text())
    assert state["inputs_sha256"] == {"kl_anchor_path": file_sha256(anchors)}
    write_jsonl(anchors, ANCHOR_ROWS * 3)  # the anchors change
    capsys.readouterr()
    assert cli([*argv, "--max_steps", "4", "--resume", "true"]) == 2
    err = capsys.readouterr().err
    assert f"kl_anchor_path {anchors} changed since the run in {out} started" in err, err
