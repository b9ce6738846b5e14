"""Drift: how far the tuned model has moved from its base, measured on the tuned model's own answers.

For an answer ``y = (y_1 .. y_G)`` the tuned model generated for prompt ``x`` (its stop token
included as ``y_G`` when it stopped), both sides are teacher-forced on ``x + y``. At each answer
position ``t`` (the position that predicts ``y_t``), with P = tuned (adapters on) and Q = base
(adapters disabled, same weights otherwise), both at temperature 1::

    KL_t = KL(P || Q) = sum_v P(v | x, y_<t) * (log P(v | x, y_<t) - log Q(v | x, y_<t))

``drift`` is the mean of ``KL_t`` over every answer token of every sample (token-weighted), in
nats; a sample's drift is its own mean. It is 0 exactly when the adapters change nothing (a fresh
LoRA adapter, B = 0) and grows as the tuned distribution leaves the base on text the tuned model
actually writes. Direction: tuned is the reference distribution, so tokens the tuned model is sure
of but the base finds unlikely weigh most.

Only answer positions go through the output head, chunk by chunk
(:func:`airoad.core.kernels.head_loss.head_loss` with the tuned side as the teacher): no ``[T, V]`` logits
are built for prompt tokens, and no chunk holds more than ``chunk x V`` floats.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from airoad.core.kernels.head_loss import DenseTeacher, head_loss
from airoad.core.model.generate import Generation
from airoad.core.model.model_parts import causal_lm, final_hidden


@dataclass
class Drift:
    mean: float  # token-weighted mean KL(tuned || base) per answer token, nats
    per_sample: list[float]  # each sample's mean over its own answer tokens
    tokens: int  # answer tokens scored


def right_pad(rows: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        attn[i, : len(r)] = 1
    return {"input_ids": ids, "attention_mask": attn}


def _batch_kl(peft_model: Any, gens: list[Generation], pad_id: int, chunk: int) -> list[tuple[float, int]]:
    """[(KL sum, answer tokens)] per generation of one batch."""
    device = next(peft_model.parameters()).device
    batch = {k: v.to(device) for k, v in right_pad([g.prompt_ids + g.new_ids for g in gens], pad_id).items()}
    head = causal_lm(peft_model).get_output_embeddings()
    with torch.no_grad():
        tuned = final_hidden(peft_model, batch)
        with peft_model.disable_adapter():
            base = final_hidden(peft_model, batch)
        out = []
        for i, g in enumerate(gens):
            p, n = len(g.prompt_ids), len(g.new_ids)
            pos = slice(p - 1, p + n - 1)  # position t predicts token t + 1
            targets = batch["input_ids"][i, p : p + n]
            teacher = DenseTeacher(tuned[i, pos], head, 1.0)  # exact, from the tuned side's hidden states
            _, _, kl = head_loss(base[i, pos], head, targets, teacher, 1.0, chunk)
            out.append((float(kl), n))
    return out


def answer_drift(
    peft_model: Any, gens: list[Generation], pad_id: int, batch_size: int = 8, chunk: int = 256
) -> Drift:
    """Drift (module docstring) of ``peft_model`` (a PeftModel in eval mode) over the tuned ``gens``."""
    sums: list[tuple[float, int]] = []
    for b in range(0, len(gens), batch_size):
        sums += _batch_kl(peft_model, gens[b : b + batch_size], pad_id, chunk)
    tokens = sum(n for _, n in sums)
    return Drift(
        mean=sum(kl for kl, _ in sums) / tokens if tokens else 0.0,
        per_sample=[kl / n if n else 0.0 for kl, n in sums],
        tokens=tokens,
    )
