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

from airoad.core.data.chat_data import IGNORE
from airoad.core.kernels.head_loss import DenseTeacher, head_loss
from airoad.core.model.model_parts import causal_lm, final_hidden, unwrap
from airoad.core.run.token_counts import TokenCounts
from airoad.sft.data import Example


class ExampleDataset(Dataset):
    def __init__(self, examples: list[Example]):
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        ex = self.examples[i]
        row = {"input_ids": ex.input_ids, "labels": ex.labels, "ex_idx": i}
        if ex.kl_only:
            row["kl_only"] = True
        return row


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
    Anchor rows (``kl_only``) keep their shifted labels in ``anchor_labels`` (same shape) and are IGNORE
    in shift_labels, so the Trainer's token count, and thus CE's normalisation, is the task's alone;
    ``anchor_labels`` is present only when the batch holds an anchor.
    """

    pad_id: int
    packing: bool = False

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        ex_idx = torch.tensor([r.get("ex_idx", -1) for r in rows], dtype=torch.long)
        batch = self._packed(rows) if self.packing and len(rows) > 1 else self._padded(rows)
        anchor = torch.tensor([bool(r.get("kl_only")) for r in rows])
        if anchor.any():
            batch = {**batch, **split_anchor_labels(batch["shift_labels"], anchor, rows)}
        return {**batch, "ex_idx": ex_idx}

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


@dataclass
class Losses:
    """One micro-batch's loss parts. ``task`` = CE + kl_lambda * tau^2 * KL summed over its trained
    positions, ``anchor`` = kl_anchor_lambda * tau^2 * KL summed over its anchor positions (both
    differentiable); ce, kl, anchor_kl: the detached sums, for logs; n, n_anchor: position counts."""

    task: torch.Tensor
    ce: torch.Tensor
    kl: torch.Tensor
    n: int
    anchor: torch.Tensor
    anchor_kl: torch.Tensor
    n_anchor: int


def split_anchor_labels(
    shift: torch.Tensor, anchor: torch.Tensor, rows: list[dict[str, Any]]
) -> dict[str, torch.Tensor]:
    """{shift_labels, anchor_labels}: ``shift`` [B, T] (or [1, sum T_i] packed) split by ``anchor`` [B]
    (row i is an anchor): each position's label goes to exactly one of the two, IGNORE in the other."""
    if shift.shape[0] == len(rows):  # padded: one row per example
        is_anchor = anchor[:, None].expand_as(shift)
    else:  # packed: one row, examples end to end
        lengths = torch.tensor([len(r["input_ids"]) for r in rows])
        is_anchor = anchor.repeat_interleave(lengths)[None]
    ignore = torch.full_like(shift, IGNORE)
    return {
        "shift_labels": torch.where(is_anchor, ignore, shift),
        "anchor_labels": torch.where(is_anchor, shift, ignore),
    }


class AiroadTrainer(TokenCounts, Trainer):
    """HF Trainer whose loss is [sum(CE) + kl_lambda * tau^2 * sum(KL)] over trained tokens divided by
    the trained tokens in the whole optimizer step (``num_items_in_batch``), plus, with anchors,
    kl_anchor_lambda * tau^2 * sum(KL) over anchor tokens divided by the step's anchor tokens: each
    part a per-token mean, so the anchors' pull does not depend on how long their answers are."""

    loss_is_scaled_for_ga = True

    def __init__(
        self,
        *args: Any,
        kl_lambda: float = 0.0,
        kl_tau: float = 1.0,
        loss_chunk: int = 256,
        kl_anchor_lambda: float = 0.0,
        **kw: Any,
    ):
        super().__init__(*args, **kw)
        self.kl_lambda, self.kl_tau, self.loss_chunk = kl_lambda, kl_tau, loss_chunk
        self.kl_anchor_lambda = kl_anchor_lambda
        self.step_anchor_tokens = 0  # anchor positions in the current optimizer step (get_batch_samples)
        self.teacher_cache = None  # a TeacherCache replaces the online teacher forward when set
        # Makes the HF Trainer count trained tokens over the whole accumulated step for us.
        self.model_accepts_loss_kwargs = True
        self.reset_meters()
        self.tokens_seen = 0  # non-pad tokens processed in training by this rank
        self.trained_seen = 0  # trained (labelled) tokens by this rank

    def reset_meters(self) -> None:
        self._ce = self._kl = self._kl_anchor = 0.0
        self._n = self._n_anchor = 0

    def _teacher(self, model, inputs, mask: torch.Tensor, device: torch.device):
        """The base's distribution at the ``mask`` positions, in their order: cached or online."""
        if self.teacher_cache is not None:
            return self.teacher_cache.teacher_for(inputs["ex_idx"].tolist(), device)
        peft_model = unwrap(model)
        with peft_model.disable_adapter(), torch.no_grad():
            t_hidden = final_hidden(peft_model, inputs)[mask]
        return DenseTeacher(t_hidden, causal_lm(model).get_output_embeddings(), self.kl_tau)

    def _losses(self, model, inputs, with_kl: bool) -> Losses:
        """One micro-batch's :class:`Losses`. Anchor positions (``anchor_labels``) get KL only."""
        task = inputs["shift_labels"] != IGNORE
        anchor = inputs.get("anchor_labels")
        # The teacher (cache or online) is ordered like all labelled positions, task and anchor.
        mask = task if anchor is None else task | (anchor != IGNORE)
        labels = (
            inputs["shift_labels"] if anchor is None else torch.where(task, inputs["shift_labels"], anchor)
        )
        targets = labels[mask]
        head = causal_lm(model).get_output_embeddings()
        hidden = final_hidden(model, inputs)[mask]
        is_task = task[mask]  # [N] bool
        n_task = int(is_task.sum())
        n_anchor = hidden.shape[0] - n_task
        need_teacher = with_kl and (
            (self.kl_lambda > 0 and n_task > 0) or (self.kl_anchor_lambda > 0 and n_anchor > 0)
        )
        teacher = self._teacher(model, inputs, mask, hidden.device) if need_teacher else None
        tau, tau2, chunk = self.kl_tau, self.kl_tau**2, self.loss_chunk
        task_teacher = teacher if self.kl_lambda > 0 else None
        if n_anchor == 0:
            total, ce, kl = head_loss(hidden, head, targets, task_teacher, tau, chunk, self.kl_lambda * tau2)
            zero = total.new_zeros(())
            return Losses(total, ce, kl, n_task, zero, zero, 0)
        if task_teacher is not None:
            task_teacher = task_teacher.rows(is_task)
        total, ce, kl = head_loss(
            hidden[is_task], head, targets[is_task], task_teacher, tau, chunk, self.kl_lambda * tau2
        )
        a_teacher = teacher.rows(~is_task) if teacher is not None else None
        a_total, _, a_kl = head_loss(
            hidden[~is_task],
            head,
            targets[~is_task],
            a_teacher,
            tau,
            chunk,
            self.kl_anchor_lambda * tau2,
            ce_weight=0.0,
        )
        return Losses(total, ce, kl, n_task, a_total, a_kl, n_anchor)

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """The HF Trainer's step batches and trained-token count, plus the step's anchor-token count
        (``self.step_anchor_tokens``): the anchors' KL is a mean over the step like CE is."""
        batch_samples, num_items = super().get_batch_samples(epoch_iterator, num_batches, device)
        n = sum(int((b["anchor_labels"] != IGNORE).sum()) for b in batch_samples if "anchor_labels" in b)
        if self.args.average_tokens_across_devices and self.accelerator.num_processes > 1:
            n = int(self.accelerator.gather(torch.tensor([n], device=device)).sum())
        self.step_anchor_tokens = n
        return batch_samples, num_items

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """(task sum / the step's trained tokens) + (anchor sum / the step's anchor tokens)."""
        lo = self._losses(model, inputs, with_kl=self.kl_lambda > 0 or self.kl_anchor_lambda > 0)
        step_counts = num_items_in_batch is not None
        n_task = num_items_in_batch if step_counts else lo.n
        n_anchor = self.step_anchor_tokens if step_counts else lo.n_anchor
        loss = lo.task / (n_task.clamp_min(1) if torch.is_tensor(n_task) else max(n_task, 1))
        if lo.n_anchor:
            loss = loss + lo.anchor / max(n_anchor, 1)
        if self.args.average_tokens_across_devices and step_counts:
            # DDP averages gradients over ranks, but the counts are every rank's tokens.
            loss = loss * self.accelerator.num_processes
        if model.training:
            self._ce += float(lo.ce)
            self._kl += float(lo.kl)
            self._n += lo.n
            self._kl_anchor += float(lo.anchor_kl)
            self._n_anchor += lo.n_anchor
            am = inputs.get("attention_mask")
            self.tokens_seen += int(am.sum()) if am is not None else inputs["input_ids"].numel()
            self.trained_seen += lo.n
        return (loss, None) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Replace the Trainer's running loss with exact token-weighted CE/KL for the interval
        (the anchors' KL per anchor token in ``kl_anchor``)."""
        if "loss" in logs and (self._n or self._n_anchor):
            ce, kl, n, a_kl, n_anchor = self._gather_meters()
            tau2 = self.kl_tau**2
            logs["ce"] = ce / n if n else None
            logs["kl"] = kl / n if n and self.kl_lambda > 0 else None
            logs["loss"] = (ce + tau2 * self.kl_lambda * kl) / max(n, 1)
            if self.kl_anchor_lambda > 0:
                logs["kl_anchor"] = a_kl / n_anchor if n_anchor else None
                logs["loss"] += tau2 * self.kl_anchor_lambda * a_kl / max(n_anchor, 1)
            logs["tokens"] = self.run_totals()[0]
            self.reset_meters()
        super().log(logs, start_time)

    def _gather_meters(self) -> tuple[float, float, int, float, int]:
        """(ce_sum, kl_sum, n_trained, anchor_kl_sum, n_anchor) since the last log, over all ranks."""
        m = [self._ce, self._kl, float(self._n), self._kl_anchor, float(self._n_anchor)]
        if self.accelerator.num_processes > 1:
            t = self.accelerator.reduce(torch.tensor(m, device=self.args.device, dtype=torch.float64), "sum")
            m = t.tolist()
        return m[0], m[1], int(m[2]), m[3], int(m[4])

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
                lo = self._losses(model, batch, with_kl=False)
                ce_total += float(lo.ce)
                n_total += lo.n
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
