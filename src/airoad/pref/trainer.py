"""Preference trainers: TRL's ``DPOTrainer`` and ``KTOTrainer`` (TRL 1.16), with airoad's data,
output head, reference cache, logs and saving.

TRL keeps the losses (every DPO ``loss_type``, KTO's), the reference through PEFT (adapters
disabled, or the init adapter's frozen copy "ref"), the metrics and the HF Trainer loop. What we
change, and why:

- **Data**: rows arrive tokenised by :mod:`airoad.pref.data` (the split at the assistant header
  tested on the real template); ``_prepare_dataset`` passes them through.
- **Head**: TRL's fused LM head scores only completion positions on Triton devices; elsewhere (CPU)
  it projects every position, prompt and padding included, computes entropy, mean logits and
  top-1 flags on the full vocabulary, and projects again in backward. Ours
  (:func:`airoad.core.kernels.token_logprobs.token_logprobs`) scores completion positions only, once, and
  returns zeros for the metric-only fields, whose log keys are dropped.
- **Reference cache**: TRL's ``precompute_ref_log_probs`` hashes every weight of the model
  (``hash_module``: seconds and a float32 copy per tensor) to key an on-disk cache; ours computes
  the reference log-probs once into the in-memory dataset, with our head.
- **ORPO** (no stable TRL trainer: ``trl.experimental`` builds full-vocabulary logits for every
  position) is computed here from the same head's per-token log-probs.
- **Saving**: only the trained adapter ("default"); TRL's "ref" copy and model card stay out.
"""

from __future__ import annotations

import os
import types
from typing import Any

import torch
import torch.nn.functional as F
from transformers import Trainer
from trl import DPOTrainer, KTOTrainer
from trl.trainer.utils import FusedCausalLMOutput

from airoad.core.kernels.token_logprobs import token_logprobs
from airoad.core.model.model_parts import causal_lm, unwrap
from airoad.core.run.token_counts import TokenCounts

# TRL's metric keys -> our log columns; keys not here are dropped (our head leaves them zero).
LOG_KEYS = {
    "rewards/chosen": "reward_chosen",
    "rewards/rejected": "reward_rejected",
    "rewards/margins": "margin",
    "rewards/accuracies": "accuracy",
    "logps/chosen": "logp_chosen",
    "logps/rejected": "logp_rejected",
    "kl": "kl",
    "nll_loss": "nll",
    "log_odds_ratio": "log_odds",
}


def packed_hidden(base: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, **kw: Any):
    """Final hidden states of a padded batch computed padding-free: ``(hidden [N, H], index [B, T])``
    where ``hidden[index[b, t]]`` is position t of row b (``index`` is -1 on padding).

    The rows' real tokens are laid end to end in one ``[1, N]`` row with position_ids restarting
    at 0 per row, which transformers' mask builder turns into a block-diagonal causal mask (the SFT
    lane's packing relies on the same). A DPO batch is chosen and rejected answers padded to the
    longest, so this drops the padding's activations and arithmetic (22-40 % of the positions on the
    bundled and GSM8K pairs). Each row's padding must be contiguous (left or right), as TRL pads."""
    if attention_mask is None or bool(attention_mask.all()):
        hidden = base(input_ids=input_ids, attention_mask=attention_mask, **kw).last_hidden_state
        b, t = input_ids.shape
        return hidden.reshape(b * t, -1), torch.arange(b * t, device=input_ids.device).view(b, t)
    valid = attention_mask.bool()
    position_ids = (valid.long().cumsum(1) - 1)[valid][None]
    hidden = base(input_ids=input_ids[valid][None], position_ids=position_ids, **kw).last_hidden_state
    index = (valid.flatten().long().cumsum(0) - 1).view(valid.shape).masked_fill(~valid, -1)
    return hidden[0], index


def install_compact_head(model: Any, chunk: int) -> None:
    """Give the CausalLM inside ``model`` TRL's ``fused_lm_head=True`` protocol (a
    :class:`FusedCausalLMOutput` of per-token log-probs, shape ``[B, T-1]``, zero where the label
    is -100) computed padding-free (:func:`packed_hidden`) on labelled positions only. Without the
    flag the forward is the class's own."""
    lm = causal_lm(model)
    original = type(lm).forward

    def forward(
        self, *args, fused_lm_head=False, labels=None, shift_labels=None, num_items_in_batch=None, **kw
    ):
        if not fused_lm_head:
            extra = {"labels": labels, "shift_labels": shift_labels, "num_items_in_batch": num_items_in_batch}
            return original(self, *args, **kw, **{k: v for k, v in extra.items() if v is not None})
        kw["use_cache"] = False
        input_ids = kw.pop("input_ids", args[0] if args else None)
        hidden, index = packed_hidden(self.base_model, input_ids, kw.pop("attention_mask", None), **kw)
        if shift_labels is None:
            index, shift_labels = index[:, :-1], labels[:, 1:]
        mask = shift_labels != -100
        head = self.get_output_embeddings()
        lp = token_logprobs(hidden[index[mask]], head, shift_labels[mask], chunk)
        log_probs = lp.new_zeros(mask.shape).masked_scatter(mask, lp)
        zeros = torch.zeros(mask.shape, device=mask.device)
        n = num_items_in_batch if num_items_in_batch is not None else mask.sum().clamp(min=1)
        return FusedCausalLMOutput(
            loss=-lp.sum() / n,
            log_probs=log_probs,
            entropy=zeros,
            mean_logits=zeros,
            is_top1=zeros.bool(),
            label_mask=mask,
        )

    lm.forward = types.MethodType(forward, lm)  # wraps the class's forward: installing twice is harmless


class PrefMixin:
    """What both trainers share (before TRL's class and after TokenCounts in the bases)."""

    loss_chunk: int = 256
    ref_columns: tuple[str, str] = ("", "")

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        return dataset  # tokenised by airoad.pref.data

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if model.training:
            self.tokens_seen += int(inputs["attention_mask"].sum())
            self.trained_seen += int(inputs["completion_mask"].sum())
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    def cache_reference(self) -> None:
        """Reference log-probs of every train (and dev) row, once, into the datasets; TRL's loss then
        reads them from the batch instead of running the reference each step."""
        install_compact_head(self.model, self.loss_chunk)
        self.train_dataset = self._with_ref(self.train_dataset)
        if self.eval_dataset is not None:
            self.eval_dataset = self._with_ref(self.eval_dataset)
        self.precompute_ref_logps = True

    def _with_ref(self, dataset):
        from torch.utils.data import DataLoader

        model, bs = self.model, self.args.per_device_train_batch_size
        loader = DataLoader(dataset, batch_size=bs, collate_fn=self.data_collator, shuffle=False)
        was_training = model.training
        model.eval()  # dropout off: the reference is the network itself
        firsts, seconds = [], []
        try:
            with self.accelerator.autocast():  # the precision training runs in
                for batch in loader:
                    batch = {k: v.to(self.accelerator.device) for k, v in batch.items()}
                    a, b = self.compute_ref_log_probs(model, batch)
                    firsts.append(a.float().cpu())
                    seconds.append(b.float().cpu() if b is not None else torch.zeros_like(a).cpu())
        finally:
            model.train(was_training)
        first, second = self.ref_columns
        return dataset.add_column(first, torch.cat(firsts).tolist()).add_column(
            second, torch.cat(seconds).tolist()
        )

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        """The trained adapter only (PEFT files + weights), as `airoad train` saves it."""
        from transformers.trainer import TRAINING_ARGS_NAME

        output_dir = output_dir or self.args.output_dir
        os.makedirs(output_dir, exist_ok=True)
        unwrap(self.model).save_pretrained(output_dir, selected_adapters=["default"], safe_serialization=True)
        torch.save(self.args, os.path.join(output_dir, TRAINING_ARGS_NAME))

    def _save_checkpoint(self, model, trial):
        return Trainer._save_checkpoint(self, model, trial)  # without TRL's model card beside it

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """TRL's averaged metrics under our column names, plus the whole-job token count."""
        mode = "train" if self.model.training else "eval"
        prefix = "" if mode == "train" else "eval_"
        for key, values in self._metrics[mode].items():
            if key in LOG_KEYS and values:
                logs[prefix + LOG_KEYS[key]] = sum(values) / len(values)
        self._metrics[mode].clear()
        if mode == "train" and "loss" in logs:
            logs["tokens"] = self.run_totals()[0]
        Trainer.log(self, logs, start_time)


class AiroadDPOTrainer(PrefMixin, TokenCounts, DPOTrainer):
    """DPO (any TRL loss_type), or ORPO with ``orpo=True`` (no reference)."""

    ref_columns = ("ref_chosen_logps", "ref_rejected_logps")

    def __init__(self, *args: Any, loss_chunk: int = 256, orpo: bool = False, **kw: Any):
        self.loss_chunk, self.orpo = loss_chunk, orpo
        super().__init__(*args, **kw)
        install_compact_head(self.model, loss_chunk)  # over TRL's own

    def _compute_loss(self, model, inputs, return_outputs):
        if not self.orpo:
            return super()._compute_loss(model, inputs, return_outputs)
        return self._orpo_loss(model, inputs)

    def _orpo_loss(self, model, inputs):
        """ORPO (Hong et al. 2024, eq. 6-7): NLL of the chosen answers + beta * -log sigmoid(log odds
        ratio), the odds from each answer's mean per-token log-prob."""
        mask = inputs["completion_mask"]
        labels = inputs["input_ids"].masked_fill(mask == 0, -100)
        out = model(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            labels=labels,
            fused_lm_head=True,
        )
        m = mask[:, 1:].to(out.log_probs.dtype)
        sums = out.log_probs.sum(1)
        mean = sums / m.sum(1).clamp(min=1)
        c, r = mean.chunk(2)
        # log(p / (1 - p)) with log(1 - p) = log(-expm1(log p)); clamp keeps p = 1 finite
        log1m = lambda x: torch.log(-torch.expm1(x.clamp(max=-1e-6)))  # noqa: E731
        log_odds = (c - r) - (log1m(c) - log1m(r))
        ratio = F.logsigmoid(log_odds)
        mc = m.chunk(2)[0]
        nll = -(out.log_probs.chunk(2)[0] * mc).sum() / mc.sum().clamp(min=1)
        loss = nll - self.beta * ratio.mean()
        mode = "train" if model.training else "eval"
        rc, rr = self.beta * c.detach(), self.beta * r.detach()
        for key, value in (
            ("rewards/chosen", rc.mean()),
            ("rewards/rejected", rr.mean()),
            ("rewards/margins", (rc - rr).mean()),
            ("rewards/accuracies", (rc > rr).float().mean()),
            ("logps/chosen", sums.chunk(2)[0].detach().mean()),
            ("logps/rejected", sums.chunk(2)[1].detach().mean()),
            ("nll_loss", nll.detach()),
            ("log_odds_ratio", ratio.detach().mean()),
        ):
            self._metrics[mode][key].append(self.accelerator.gather_for_metrics(value).mean().item())
        return loss


class AiroadKTOTrainer(PrefMixin, TokenCounts, KTOTrainer):
    """KTO (loss kto or apo_zero_unpaired); rows come ordered with their KL completions
    (:func:`airoad.pref.data.kto_order`) and TRL reads them sequentially."""

    ref_columns = ("ref_logps", "ref_KL_logps")

    def __init__(self, *args: Any, loss_chunk: int = 256, **kw: Any):
        self.loss_chunk = loss_chunk
        super().__init__(*args, **kw)
        install_compact_head(self.model, loss_chunk)
