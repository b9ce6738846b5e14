"""load_widened: a bf16 checkpoint loaded into fp32 equals the plain fp32 load, ties kept."""

from __future__ import annotations

import sys

import pytest
import torch
from transformers import AutoModelForCausalLM, Qwen2Config, Qwen2ForCausalLM

from airoad.core.model.lean_load import _file_mappings, load_widened


def save_bf16(tmp_path, tie: bool):
    torch.manual_seed(0)
    cfg = Qwen2Config(
        vocab_size=512,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=tie,
    )
    Qwen2ForCausalLM(cfg).to(torch.bfloat16).save_pretrained(tmp_path, safe_serialization=True)
    return tmp_path


@pytest.mark.parametrize("tie", [True, False])
def test_widened_load_equals_direct_fp32_load(tmp_path, tie):
    path = save_bf16(tmp_path, tie)
    lean = load_widened(AutoModelForCausalLM, str(path), torch.float32)
    ref = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    assert all(p.dtype == torch.float32 for p in lean.parameters())
    ref_params = dict(ref.named_parameters())
    for name, p in lean.named_parameters():
        assert torch.equal(p, ref_params[name]), name
    if tie:  # one tensor for embedding and head, and widening did not zero it
        assert lean.lm_head.weight is lean.model.embed_tokens.weight
        assert lean.lm_head.weight.abs().sum() > 0
    x = torch.randint(0, 512, (2, 9))
    with torch.no_grad():
        assert torch.equal(lean(x).logits, ref(x).logits)


def test_same_dtype_is_a_plain_load(tmp_path):
    path = save_bf16(tmp_path, tie=True)
    model = load_widened(AutoModelForCausalLM, str(path), torch.bfloat16)
    assert next(model.parameters()).dtype == torch.bfloat16


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/maps is Linux")
def test_only_checkpoint_file_pages_are_candidates(tmp_path):
    path = save_bf16(tmp_path, tie=False)
    anon = torch.ones(1 << 16)  # anonymous memory must never be inside a released span
    spans = _file_mappings()
    assert not any(lo <= anon.data_ptr() < hi for lo, hi in spans)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16)
    spans = _file_mappings()
    ptr = model.model.layers[0].mlp.up_proj.weight.data_ptr()
    assert any(lo <= ptr < hi for lo, hi in spans), "bf16 load should map the file lazily"
