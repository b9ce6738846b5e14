"""The SFT trainer: HF ``Trainer`` with airoad's loss (trained positions only, chunked head, KL).

The HF Trainer keeps the loop, optimizer, scheduler, gradient accumulation, clipping and
distributed plumbing. We own ``compute_loss`` (so no full-vocabulary logits are built for
positions without labels) and the logged numbers (CE and KL apart, token counts).

The teacher for KL is the same PEFT model with its adapters disabled, under ``no_grad``: no second
copy of the weights (peft ``PeftModel.disable_adapter``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset
from transformers import Trainer

from airoad.core.chat_data import IGNORE
from airoad.core.head_loss import DenseTeacher, head_loss
from airoad.core.model_parts import causal_lm, final_hidden, unwrap
from airoad.core.token_counts import TokenCounts
from airoad.sft.data import Example


class ExampleDataset(Dataset):
    def __init__(self, examples: list[Example]):
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        ex = self.examples[i]
        return {"input_ids": ex.input_ids, "labels": ex.labels, "ex_idx": i}


@dataclass
class Collator:
    """Batches examples, padded or packed.

    Padded (default for one example, or packing off): input_ids, attention_mask, labels [B, T],
    right-padded; padded positions have attention 0 and label IGNORE.
    Packed (packing on and B > 1): one row [1, sum T_i] with position_ids restarting at 0 for each
    example and no attention_mask, so transformers builds a block-diagonal causal mask and no
    example attends to another; no padding at all.
    Both: shift_labels (the label each position predicts; IGNORE at every sequence end, so no
    example predicts the next one's first token), which the HF Trainer counts for loss
    normalisation, and ex_idx [B] (dataset indices, for the teacher cache).
    """

    pad_id: int
    packing: bool = False

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        ex_idx = torch.tensor([r.get("ex_idx", -1) for r in rows], dtype=torch.long)
        if self.packing and len(rows) > 1:
            return {**self._packed(rows), "ex_idx": ex_idx}
        return {**self._padded(rows), "ex_idx": ex_idx}

    @staticmethod
    def _packed(rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        ids = torch.cat([torch.tensor(r["input_ids"]) for r in rows])[None]
        labels = torch.cat([torch.tensor(r["labels"]) for r in rows])[None]
        pos = torch.cat([torch.arange(len(r["input_ids"])) for r in rows])[None]
        shift = torch.cat([torch.tensor(r["labels"][1:] + [IGNORE]) for r in rows])[None]
        return {"input_ids": ids, "labels": labels, "position_ids": pos, "shift_labels": shift}

    def _padded(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
        attn = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            ids[i, :n] = torch.tensor(r["input_ids"])
            labels[i, :n] = torch.tensor(r["labels"])
            attn[i, :n] = 1
        shift = torch.full_like(labels, IGNORE)
        shift[:, :-1] = labels[:, 1:]
        return {"input_ids": ids, "attention_mask": attn, "labels": labels, "shift_labels": shift}


class AiroadTrainer(TokenCounts, Trainer):
    """HF Trainer whose loss is sum(CE) + kl_lambda * tau^2 * sum(KL), over trained tokens,
    divided by the number of trained tokens in the whole optimizer step (``num_items_in_batch``)."""

    loss_is_scaled_for_ga = True

    def __init__(
        self, *args: Any, kl_lambda: float = 0.0, kl_tau: float = 1.0, loss_chunk: int = 256, **kw: Any
    ):
        super().__init__(*args, **kw)
        self.kl_lambda, self.kl_tau, self.loss_chunk = kl_lambda, kl_tau, loss_chunk
        self.teacher_cache = None  # a TeacherCache replaces the online teacher forward when set
        # Makes the HF Trainer count trained tokens over the whole accumulated step for us.
        self.model_accepts_loss_kwargs = True
        self.reset_meters()
        self.tokens_seen = 0  # non-pad tokens processed in training by this rank
        self.trained_seen = 0  # trained (labelled) tokens by this rank

    def reset_meters(self) -> None:
        self._ce = self._kl = 0.0
        self._n = 0

    def _losses(self, model, inputs, with_kl: bool):
        """(ce_sum + kl_lambda * tau^2 * kl_sum [differentiable], ce_sum, kl_sum, n_trained) for one
        micro-batch; CE and KL are detached."""
        mask = inputs["shift_labels"] != IGNORE
        targets = inputs["shift_labels"][mask]
        head = causal_lm(model).get_output_embeddings()
        hidden = final_hidden(model, inputs)[mask]
        teacher = None
        if with_kl and self.teacher_cache is not None:
            teacher = self.teacher_cache.teacher_for(inputs["ex_idx"].tolist(), hidden.device)
        elif with_kl:
            peft_model = unwrap(model)
            with peft_model.disable_adapter(), torch.no_grad():
                t_hidden = final_hidden(peft_model, inputs)[mask]
            teacher = DenseTeacher(t_hidden, head, self.kl_tau)
        w = self.kl_lambda * self.kl_tau**2
        total, ce, kl = head_loss(hidden, head, targets, teacher, self.kl_tau, self.loss_chunk, w)
        return total, ce, kl, int(mask.sum())

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        total, ce, kl, n = self._losses(model, inputs, with_kl=self.kl_lambda > 0)
        denom = num_items_in_batch if num_items_in_batch is not None else max(n, 1)
        loss = total / denom
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            # DDP averages gradients over ranks, but denom already counts every rank's tokens.
            loss = loss * self.accelerator.num_processes
        if model.training:
            self._ce += float(ce.detach())
            self._kl += float(kl.detach())
            self._n += n
            am = inputs.get("attention_mask")
            self.tokens_seen += int(am.sum()) if am is not None else inputs["input_ids"].numel()
            self.trained_seen += n
        return (loss, None) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Replace the Trainer's running loss with exact token-weighted CE/KL for the interval."""
        if "loss" in logs and self._n:
            ce, kl, n = self._gather_meters()
            logs["ce"] = ce / n
            logs["kl"] = kl / n if self.kl_lambda > 0 else None
            logs["loss"] = logs["ce"] + (
                self.kl_lambda * self.kl_tau**2 * logs["kl"] if self.kl_lambda > 0 else 0.0
            )
            logs["tokens"] = self.run_totals()[0]
            self.reset_meters()
        super().log(logs, start_time)

    def _gather_meters(self) -> tuple[float, float, int]:
        if self.accelerator.num_processes == 1:
            return self._ce, self._kl, self._n
        t = torch.tensor([self._ce, self._kl, float(self._n)], device=self.args.device, dtype=torch.float64)
        t = self.accelerator.reduce(t, reduction="sum")
        return float(t[0]), float(t[1]), int(t[2])

    def evaluate(
        self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"
    ) -> dict[str, float]:
        """Token-weighted dev CE (no KL), logged as ``eval_loss`` with ``eval_runtime`` (seconds);
        triggers on_evaluate callbacks."""
        t0 = time.perf_counter()
        loader = self.get_eval_dataloader(eval_dataset)
        model = self.model
        was_training = model.training
        model.eval()
        ce_total, n_total = 0.0, 0
        with torch.no_grad():
            for batch in loader:
                batch = self._prepare_inputs(batch)
                _, ce, _, n = self._losses(model, batch, with_kl=False)
                ce_total += float(ce)
                n_total += n
        if was_training:
            model.train()
        if self.accelerator.num_processes > 1:
            t = torch.tensor([ce_total, float(n_total)], device=self.args.device, dtype=torch.float64)
            t = self.accelerator.reduce(t, reduction="sum")
            ce_total, n_total = float(t[0]), int(t[1])
        metrics = {
            f"{metric_key_prefix}_loss": ce_total / max(n_total, 1),
            f"{metric_key_prefix}_runtime": round(time.perf_counter() - t0, 4),
        }
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics
