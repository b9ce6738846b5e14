"""Batched chat generation: left padding, exact stop tokens, explicit decoding, throughput per sample.

Contract of :func:`generate`:

- Each prompt (a list of chat messages) is rendered with the tokenizer's chat template and
  ``add_generation_prompt=True`` and tokenized without extra special tokens (the template has them).
- Prompts run ``batch_size`` at a time, longest first (less padding), and come back in input
  order. Rows are left-padded (pad id, attention 0), so every row's last prompt token sits in the
  last column and its new tokens line up; transformers derives position ids from the attention
  mask, so greedy answers equal unbatched ones (tested).
- Decoding is exactly what the arguments say. ``temperature`` 0 is greedy; > 0 samples from the
  full softmax at that temperature, seeded with ``torch.manual_seed(seed)`` once per call (same
  seed, prompts, batch size and device: same answers). The model's own sampling defaults (Qwen2.5
  Instruct ships temperature 0.7, top_p 0.8, top_k 20, repetition_penalty 1.05) are overridden so
  base and tuned sides decode alike.
- Generation stops at any of :func:`stop_ids` (the tokenizer's eos, e.g. ``<|im_end|>``, its pad
  token, the template's end-of-turn token, the model's generation_config eos) or after
  ``max_new_tokens``.
- Timing: a batch's tokens are produced together, so a sample's own time is not observable. Each
  sample gets ``seconds`` = batch wall time x (its answer tokens / the batch's answer tokens) and
  ``tokens_per_s`` = the batch's answer tokens / batch wall time (the same for every sample of a
  batch). Summed ``seconds`` is the wall time of generation.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from airoad.core.data.chat_data import assistant_char_spans
from airoad.core.model.model_parts import causal_lm

Messages = list[dict[str, str]]


@dataclass
class Generation:
    """One answer. ``new_ids``: generated ids, ending with the stop token when ``stopped``."""

    text: str  # decoded answer without the stop token; special tokens kept (leaks are visible)
    prompt_ids: list[int]
    new_ids: list[int]
    stopped: bool  # False: cut at max_new_tokens
    seconds: float
    tokens_per_s: float

    @property
    def n_tokens(self) -> int:
        """Answer tokens, the stop token not counted."""
        return len(self.new_ids) - int(self.stopped)


def encode_prompt(tokenizer: Any, messages: Messages) -> list[int]:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def end_of_turn_id(tokenizer: Any) -> int | None:
    """The single token the chat template puts after an assistant turn (Qwen: ``<|im_end|>``), or None."""
    probe = "ok"
    try:
        text, spans = assistant_char_spans(
            tokenizer, [{"role": "user", "content": "hi"}, {"role": "assistant", "content": probe}]
        )
    except Exception:  # a template we cannot probe: fall back to the other stop ids
        return None
    start, end = spans[-1]
    turn = text[start:end]
    marker = turn[turn.find(probe) + len(probe) :].strip()
    ids = tokenizer(marker, add_special_tokens=False)["input_ids"] if marker else []
    return ids[0] if len(ids) == 1 else None


def stop_ids(tokenizer: Any, model: Any) -> list[int]:
    """Token ids that end an answer (deduplicated, in a stable order)."""
    gen_eos = getattr(getattr(causal_lm(model), "generation_config", None), "eos_token_id", None)
    gen_eos = gen_eos if isinstance(gen_eos, list) else [gen_eos]
    found = [tokenizer.eos_token_id, end_of_turn_id(tokenizer), tokenizer.pad_token_id, *gen_eos]
    return list(dict.fromkeys(i for i in found if isinstance(i, int)))


def decoding_config(max_new_tokens: int, temperature: float, stop: list[int], pad_id: int) -> Any:
    """A GenerationConfig that sets every knob the model's own config could otherwise slip in."""
    from transformers import GenerationConfig

    kw: dict[str, Any] = {
        "max_new_tokens": max_new_tokens,
        "num_beams": 1,
        "eos_token_id": stop,
        "pad_token_id": pad_id,
        "repetition_penalty": 1.0,
        "top_p": 1.0,
    }
    if temperature > 0:
        kw.update(do_sample=True, temperature=float(temperature), top_k=0)
    else:
        kw.update(do_sample=False, temperature=1.0)
    return GenerationConfig(**kw)


def left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) [B, T], rows right-aligned; pad positions have attention 0."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
        attn[i, width - len(r) :] = 1
    return ids, attn


def _generate_batch(model: Any, tokenizer: Any, rows: list[list[int]], gcfg: Any) -> list[Generation]:
    device = next(model.parameters()).device
    ids, attn = left_pad(rows, gcfg.pad_token_id)
    t0 = time.perf_counter()
    with torch.no_grad():
        out = model.generate(input_ids=ids.to(device), attention_mask=attn.to(device), generation_config=gcfg)
    new_rows = out[:, ids.shape[1] :].tolist()  # .tolist() waits for the device: timing is complete
    wall = time.perf_counter() - t0
    stop = set(gcfg.eos_token_id)
    parsed = []
    for new in new_rows:
        cut = next((k for k, t in enumerate(new) if t in stop), None)
        parsed.append((new, False) if cut is None else (new[: cut + 1], True))
    total = sum(len(new) - int(stopped) for new, stopped in parsed)
    gens = []
    for prompt, (new, stopped) in zip(rows, parsed, strict=True):
        n = len(new) - int(stopped)
        answer = new[:n]
        gens.append(
            Generation(
                text=tokenizer.decode(answer, skip_special_tokens=False),
                prompt_ids=list(prompt),
                new_ids=new,
                stopped=stopped,
                seconds=wall * n / total if total else wall / len(rows),
                tokens_per_s=total / wall if wall > 0 else 0.0,
            )
        )
    return gens


def generate(
    model: Any,
    tokenizer: Any,
    prompts: list[Messages],
    max_new_tokens: int = 256,
    *,
    temperature: float = 0.0,
    batch_size: int = 8,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> list[Generation]:
    """One :class:`Generation` per prompt, in input order (see the module docstring for the contract).

    ``model``: a causal LM or PeftModel in eval mode (answers as whatever side is active).
    ``progress(done, total)`` is called after each batch.
    """
    rows = [encode_prompt(tokenizer, m) for m in prompts]
    stop = stop_ids(tokenizer, model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop[0]
    gcfg = decoding_config(max_new_tokens, temperature, stop, pad)
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
    results: list[Generation | None] = [None] * len(rows)
    torch.manual_seed(seed)
    for b in range(0, len(order), batch_size):
        idx = order[b : b + batch_size]
        for i, g in zip(idx, _generate_batch(model, tokenizer, [rows[i] for i in idx], gcfg), strict=True):
            results[i] = g
        if progress:
            progress(min(b + batch_size, len(order)), len(order))
    return results  # type: ignore[return-value]  # every slot is filled
