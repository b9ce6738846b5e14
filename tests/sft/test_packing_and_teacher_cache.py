"""The fast paths equal the plain ones: packing == padding, cached teacher == online teacher."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import BF16, CHAT_ROWS, FP32, cfg_for, needs_bf16, write_jsonl

from airoad.sft.run import train
from airoad.sft.trainer import Collator, ExampleDataset


def _packed_and_padded(model_dir, data, out, dtype_flag, device, anchor: bool = False) -> list[tuple]:
    """(ce, kl, trained positions, LoRA grads) of one batch laid out padded, then packed, on ``device``.
    ``anchor``: the third row is a KL anchor (kl_anchor_lambda 0.7), its KL added to kl and its
    positions to n."""
    cfg = cfg_for(
        model_dir, data, out, "--max_steps", "1", "--kl_lambda", "0.5", "--device", device, *dtype_flag
    )
    _, trainer = train(cfg, printer=lambda *_: None)
    trainer.kl_anchor_lambda = 0.7 if anchor else 0.0
    model = trainer.model
    model.eval()  # no dropout: both layouts must see identical computations
    rows = [ExampleDataset(trainer.train_dataset.examples)[i] for i in range(4)]
    if anchor:
        rows[2] = {**rows[2], "kl_only": True}
    results = []
    for packing in (False, True):
        batch = {k: v.to(device) for k, v in Collator(0, packing=packing)(rows).items()}
        assert ("position_ids" in batch) == packing and ("attention_mask" in batch) != packing
        assert ("anchor_labels" in batch) == anchor
        model.zero_grad()
        lo = trainer._losses(model, batch, with_kl=True)
        (lo.task + lo.anchor).backward()
        grads = [p.grad.clone() for p in model.parameters() if p.requires_grad]
        results.append((lo.ce.detach(), (lo.kl + lo.anchor_kl).detach(), lo.n + lo.n_anchor, grads))
    return results


def test_packed_batch_with_an_anchor_gives_the_same_loss_and_grads_as_padded(
    tiny_model_dir, chat_file, tmp_path, device
):
    (ce_a, kl_a, n_a, g_a), (ce_b, kl_b, n_b, g_b) = _packed_and_padded(
        tiny_model_dir, chat_file, tmp_path / "run", FP32, device, anchor=True
    )
    assert n_a == n_b > 0
    torch.testing.assert_close(ce_a, ce_b, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(kl_a, kl_b, rtol=1e-4, atol=1e-6)
    assert len(g_a) == len(g_b)
    for a, b in zip(g_a, g_b, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_packed_batch_gives_the_same_loss_and_grads_as_padded(tiny_model_dir, chat_file, tmp_path, device):
    (ce_a, kl_a, n_a, g_a), (ce_b, kl_b, n_b, g_b) = _packed_and_padded(
        tiny_model_dir, chat_file, tmp_path / "run", FP32, device
    )
    assert n_a == n_b > 0
    torch.testing.assert_close(ce_a, ce_b, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(kl_a, kl_b, rtol=1e-4, atol=1e-5)
    for a, b in zip(g_a, g_b, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@needs_bf16
def test_bf16_packed_batch_gives_the_same_loss_and_grads_as_padded(
    tiny_model_dir, chat_file, tmp_path, device
):
    """In bf16 the two layouts round differently (other matmul shapes, other attention kernels):
    equal to bf16 resolution (8 bits, ~0.4 % per rounding), gradients measured against their size."""
    (ce_a, kl_a, n_a, g_a), (ce_b, kl_b, n_b, g_b) = _packed_and_padded(
        tiny_model_dir, chat_file, tmp_path / "run", BF16, device
    )
    assert n_a == n_b > 0
    torch.testing.assert_close(ce_a, ce_b, rtol=1e-3, atol=1e-3)  # measured: 5e-7 relative
    torch.testing.assert_close(kl_a, kl_b, rtol=2e-3, atol=1e-5)  # measured: 1.4e-4
    for a, b in zip(g_a, g_b, strict=True):
        scale = float(a.abs().max())
        torch.testing.assert_close(
            a.float(), b.float(), rtol=0, atol=max(1e-2 * scale, 1e-6)
        )  # measured: 3e-3
        assert torch.nn.functional.cosine_similarity(a.flatten().float(), b.flatten().float(), dim=0) > 0.9999


def test_packing_keeps_examples_apart(qwen_tokenizer):
    rows = [{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}, {"input_ids": [4, 5], "labels": [-100, 5]}]
    b = Collator(0, packing=True)(rows)
    assert b["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    # the last token of example 1 must not predict example 2's first token
    assert b["shift_labels"].tolist() == [[2, 3, -100, 5, -100]]


def test_teacher_cache_full_vocab_matches_online_kl(tiny_model_dir, tmp_path, qwen_tokenizer, device):
    # 4 conversations, not 12: a full-vocabulary cache is 151,936 entries per position
    chat_file = write_jsonl(tmp_path / "train.jsonl", CHAT_ROWS)
    common = (
        "--device",
        device,
        "--max_steps",
        "3",
        "--kl_lambda",
        "1.0",
        "--lora_dropout",
        "0",
        "--kl_cache_dir",
        str(tmp_path / "tc"),
    )
    out_a, _ = train(
        cfg_for(tiny_model_dir, chat_file, tmp_path / "a", *common, "--kl_cache", "off"), printer=print
    )
    out_b, _ = train(
        cfg_for(
            tiny_model_dir,
            chat_file,
            tmp_path / "b",
            *common,
            "--kl_cache",
            "on",
            "--kl_topk",
            str(len(qwen_tokenizer)),
        ),
        printer=print,
    )
    a = json.loads((out_a / "train_log.json").read_text())
    b = json.loads((out_b / "train_log.json").read_text())
    for ra, rb in zip(a, b, strict=True):
        assert rb["ce"] == pytest.approx(ra["ce"], rel=1e-4)
        assert rb["kl"] == pytest.approx(ra["kl"], rel=1e-3, abs=1e-6)
    assert (out_b / "teacher_cache.safetensors").is_file()
    assert json.loads((out_b / "run_info.json").read_text())["teacher_cache"]["reused"] is False


def test_teacher_cache_is_reused_across_runs_and_epochs(tiny_model_dir, tmp_path, device):
    chat_file = write_jsonl(tmp_path / "train.jsonl", CHAT_ROWS)
    common = (
        "--device",
        device,
        "--max_steps",
        "4",
        "--kl_lambda",
        "1.0",
        "--kl_topk",
        "16",
        "--kl_cache_dir",
        str(tmp_path / "tc"),
    )
    lines: list[str] = []
    out_a, _ = train(cfg_for(tiny_model_dir, chat_file, tmp_path / "a", *common), printer=lines.append)
    out_b, _ = train(cfg_for(tiny_model_dir, chat_file, tmp_path / "b", *common), printer=lines.append)
    assert any(
        x.startswith("teacher cache: built") for x in lines
    )  # auto: 4 steps x 2 accum x batch >= 1 / 4 examples >= 2 passes
    assert any(x.startswith("teacher cache: reused") for x in lines)
    a = json.loads((out_a / "train_log.json").read_text())
    b = json.loads((out_b / "train_log.json").read_text())
    assert [r["loss"] for r in a] == [r["loss"] for r in b]
    assert abs(a[0]["kl"]) < 1e-6 and a[-1]["kl"] > 0
    assert len(list((tmp_path / "tc").iterdir())) == 1
