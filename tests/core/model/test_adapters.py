"""Adapter target detection across architectures."""

from __future__ import annotations

import pytest
from transformers import GPT2Config, GPT2LMHeadModel, Qwen2Config, Qwen2ForCausalLM

from airoad.core.base.errors import UserError
from airoad.core.model.adapters import target_modules


def tiny_qwen():
    return Qwen2ForCausalLM(
        Qwen2Config(
            vocab_size=64,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
        )
    )


def tiny_gpt2():
    return GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=16, n_layer=1, n_head=2, n_positions=32))


def test_qwen_modes():
    m = tiny_qwen()
    assert target_modules(m, "attn") == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert target_modules(m, "attn_mlp") == [
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    ]
    assert target_modules(m, "auto") == target_modules(m, "attn_mlp")


def test_gpt2_auto_detects_its_projections_and_attn_mode_explains():
    m = tiny_gpt2()
    assert target_modules(m, "auto") == ["c_attn", "c_proj", "c_fc"]
    with pytest.raises(UserError, match="use lora_target_mode: auto"):
        target_modules(m, "attn")
    assert "lm_head" not in target_modules(m, "auto")
