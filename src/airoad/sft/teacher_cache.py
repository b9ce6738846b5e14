"""Teacher cache: the base model's top-k log-probs on every trained position, computed once.

For a fixed data set the teacher (the base model, adapters disabled) never changes, so a KL run
that sees its examples several times need not run the teacher forward every step. We store, per
trained position, the top-``k`` token ids and log-probs at temperature tau (the remaining mass is
one tail bucket, see :class:`airoad.core.kernels.head_loss.TopKTeacher`) in one safetensors file named by a
hash of everything that determines it: base weights (fingerprint), token ids and labels of every
example (so data, template, system prompt and max_seq_len), tau and k. Runs that share these reuse
the file; any change gives a new key.

Layout: idx [P, k] int32, logp [P, k] float32, offsets [E + 1] int64 (example e owns rows
offsets[e]:offsets[e+1], in the order its trained positions appear in the shifted labels).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from airoad.core.data.chat_data import IGNORE
from airoad.core.kernels.head_loss import TopKTeacher
from airoad.sft.data import Example

DEFAULT_DIR = Path.home() / ".cache" / "airoad" / "teacher_cache"


def weights_fingerprint(model: torch.nn.Module) -> str:
    """Cheap identity of the base weights: shapes of all parameters + bytes of a few of them."""
    h = hashlib.sha256()
    params = [(n, p) for n, p in model.named_parameters() if "lora_" not in n]
    for n, p in params:
        # Names without PEFT's wrapping, so runs with other adapter targets share the key.
        name = n.replace("base_model.model.", "").replace(".base_layer", "")
        h.update(f"{name}:{tuple(p.shape)}:{p.dtype}".encode())
    for _, p in params[:: max(1, len(params) // 8)]:
        flat = p.detach().reshape(-1)
        h.update(flat[:4096].float().cpu().numpy().tobytes())
    return h.hexdigest()


def cache_key(model: torch.nn.Module, examples: list[Example], tau: float, k: int) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"tau": tau, "k": k, "weights": weights_fingerprint(model)}).encode())
    for ex in examples:
        h.update(torch.tensor(ex.input_ids, dtype=torch.int64).numpy().tobytes())
        h.update(torch.tensor(ex.labels, dtype=torch.int64).numpy().tobytes())
    return h.hexdigest()[:24]


class TeacherCache:
    """Per-example top-k teacher log-probs; ``teacher_for(ex_idx)`` serves a micro-batch."""

    def __init__(self, idx: torch.Tensor, logp: torch.Tensor, offsets: torch.Tensor):
        self.idx, self.logp, self.offsets = idx, logp, offsets

    def teacher_for(self, ex_idx: list[int], device: torch.device | str = "cpu") -> TopKTeacher:
        rows = [torch.arange(int(self.offsets[e]), int(self.offsets[e + 1])) for e in ex_idx]
        sel = torch.cat(rows)
        return TopKTeacher(self.idx[sel].to(device), self.logp[sel].to(device))

    def save(self, path: Path) -> None:
        from safetensors.torch import save_file

        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({"idx": self.idx, "logp": self.logp, "offsets": self.offsets}, str(tmp))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> TeacherCache:
        from safetensors.torch import load_file

        t = load_file(str(path))
        return cls(t["idx"], t["logp"], t["offsets"])


@torch.inference_mode()
def build(
    peft_model: Any, examples: list[Example], tau: float, k: int, chunk: int, device: str
) -> TeacherCache:
    """Run the base model (adapters disabled) once over every example; keep top-k log-probs at tau."""
    from airoad.core.model.model_parts import causal_lm, final_hidden

    head = causal_lm(peft_model).get_output_embeddings()
    idx_parts, logp_parts, offsets = [], [], [0]
    was_training = peft_model.training
    peft_model.eval()
    with peft_model.disable_adapter():
        for ex in examples:
            ids = torch.tensor([ex.input_ids], device=device)
            labels = torch.tensor(ex.labels[1:] + [IGNORE], device=device)
            hidden = final_hidden(peft_model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)})[0]
            hidden = hidden[labels != IGNORE]
            for s in range(0, hidden.shape[0], chunk):
                logits = torch.nn.functional.linear(hidden[s : s + chunk], head.weight, head.bias).float()
                vals, ids_k = torch.log_softmax(logits / tau, dim=-1).topk(k, dim=-1)
                idx_parts.append(ids_k.to(torch.int32).cpu())
                logp_parts.append(vals.cpu())
            offsets.append(offsets[-1] + hidden.shape[0])
    peft_model.train(was_training)
    return TeacherCache(torch.cat(idx_parts), torch.cat(logp_parts), torch.tensor(offsets, dtype=torch.int64))


def get_or_build(
    peft_model: Any, examples: list[Example], tau: float, k: int, *, chunk: int, device: str, cache_dir: Path
) -> tuple[TeacherCache, Path, bool]:
    """(cache, its file, reused?) — loads the file for this key if present, else builds and saves it."""
    path = cache_dir / f"teacher-{cache_key(peft_model, examples, tau, k)}.safetensors"
    if path.is_file():
        return TeacherCache.load(path), path, True
    cache = build(peft_model, examples, tau, k, chunk, device)
    cache.save(path)
    return cache, path, False
