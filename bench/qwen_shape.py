"""Shared by the benchmarks that run without real weights (bench/gpu_check.py, bench/fsdp_memory.py):
Qwen2.5-0.5B(-Instruct)'s exact config with random weights built in the process (weights do not
change speed or memory), the real Qwen2.5 tokenizer, and chat data from the repository's own
examples (data/sft, written by this project)."""

from __future__ import annotations

import json
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Qwen/Qwen2.5-0.5B-Instruct's config.json (494M parameters, tied embeddings, 24 layers, GQA 14/2)
QWEN25_05B = dict(
    vocab_size=151936,
    hidden_size=896,
    intermediate_size=4864,
    num_hidden_layers=24,
    num_attention_heads=14,
    num_key_value_heads=2,
    max_position_embeddings=32768,
    max_window_layers=21,
    rms_norm_eps=1e-6,
    rope_theta=1000000.0,
    tie_word_embeddings=True,
    hidden_act="silu",
    attention_dropout=0.0,
    use_sliding_window=False,
    bos_token_id=151643,
    eos_token_id=151645,
)
# where the tokenizer is looked for, in order: $AIROAD_TEST_TOKENIZER, the GPU run's carried copy
# (bench/gpu_check.py --prepare puts it there), ../shared's fixture
TOKENIZER_PLACES = (REPO / ".gpu" / "tokenizer", REPO.parent / "shared" / "fixtures" / "qwen2.5-tokenizer")


def tokenizer_dir() -> Path:
    env = os.environ.get("AIROAD_TEST_TOKENIZER")
    for place in ([Path(env)] if env else []) + list(TOKENIZER_PLACES):
        if (place / "tokenizer.json").is_file():
            return place
    raise SystemExit(
        "error: no Qwen2.5 tokenizer: set AIROAD_TEST_TOKENIZER, or run bench/gpu_check.py --prepare"
    )


def build_random_model(out: Path, shape: dict, tok_dir: Path, device: str = "cpu", seed: int = 0) -> Path:
    """A Qwen2ForCausalLM of ``shape`` with random weights, saved in bf16 (the real checkpoint's
    dtype) with the tokenizer to ``out``."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tok = AutoTokenizer.from_pretrained(tok_dir)
    torch.manual_seed(seed)
    cfg = Qwen2Config(**{**shape, "pad_token_id": tok.pad_token_id})
    with torch.device(device):
        model = Qwen2ForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    del model
    return out


def write_chat_data(path: Path, n: int, turns: int = 1) -> Path:
    """``n`` ChatML conversations of ``turns`` user/assistant pairs each, from data/sft's examples
    (in order, wrapping around)."""
    rows = [json.loads(x) for x in (REPO / "data/sft/example_train.jsonl").read_text().splitlines() if x]
    pairs = [r["messages"][-2:] for r in rows if len(r.get("messages", [])) >= 2]
    out = []
    for i in range(n):
        msgs = [m for k in range(turns) for m in pairs[(i * turns + k) % len(pairs)]]
        out.append(json.dumps({"messages": msgs}))
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    return path
