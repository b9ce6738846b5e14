"""Whole-job token counters for a lane's HF Trainer subclass: the live line's tok/s, the logs'
``tokens`` column, time_metrics and checkpoints all read them through :meth:`run_totals`."""

from __future__ import annotations

import torch


class TokenCounts:
    """Mixin (before ``Trainer`` in the bases). The lane's ``compute_loss`` adds each training
    micro-batch's non-pad tokens to ``tokens_seen`` and its trained (labelled) ones to
    ``trained_seen``; the counts are per rank, summed on demand."""

    tokens_seen: int = 0
    trained_seen: int = 0

    def run_totals(self) -> tuple[int, int]:
        """(non-pad tokens processed, trained tokens) summed over all ranks. Collective: call on every rank."""
        if self.accelerator.num_processes == 1:
            return self.tokens_seen, self.trained_seen
        t = torch.tensor(
            [float(self.tokens_seen), float(self.trained_seen)], device=self.args.device, dtype=torch.float64
        )
        t = self.accelerator.reduce(t, reduction="sum")
        return int(t[0]), int(t[1])

    def restore_totals(self, tokens: int, trained: int) -> None:
        """A resumed run's whole-job counts, given to rank 0 only (run_totals sums the ranks)."""
        self.tokens_seen, self.trained_seen = tokens, trained
