"""CE and KL(teacher || student) on trained positions only, through the output head in chunks.

Full-vocabulary logits are the memory hog (Qwen2.5: 151,936 x 512 x 4 bytes = 311 MB per
sequence per copy), and most positions carry no label. So the caller gathers the final hidden
states of trained positions, ``hidden [N, H]``, and :func:`head_losses` projects them through the
output head ``chunk`` rows at a time. Each chunk's gradient w.r.t. its hidden rows is computed in
the forward pass (softmax minus one-hot for CE; (softmax_tau(student) - p_tau(teacher)) / tau for
KL) and kept as ``[N, H]``; no ``[N, V]`` tensor outlives its chunk and nothing is recomputed in
backward. The frozen head needs no weight gradient; a trainable head falls back to
:func:`head_losses_reference`, the plain autograd version the fused path is tested against.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

EPS = 1e-8


class DenseTeacher:
    """Exact teacher: full log-probs at temperature tau from its hidden states [N, H], chunk by chunk."""

    def __init__(self, hidden: torch.Tensor, head: torch.nn.Linear, tau: float):
        self.hidden, self.head, self.tau = hidden, head, tau
        self._last: tuple[int, int, torch.Tensor] | None = None

    def logprobs(self, s: int, e: int) -> torch.Tensor:
        """Teacher log-probs [e - s, V] for rows s:e. The last chunk is kept: kl() and target() ask
        for the same rows in turn, and recomputing them is a full output-head product."""
        if self._last is not None and self._last[:2] == (s, e):
            return self._last[2]
        self._last = None  # free the previous chunk before building the next
        with torch.no_grad():
            logp = torch.log_softmax(
                _chunk_logits(self.hidden[s:e], self.head.weight, self.head.bias) / self.tau, -1
            )
        self._last = (s, e, logp)
        return logp

    def kl(self, s_logp: torch.Tensor, s: int, e: int) -> torch.Tensor:
        """Summed KL(teacher || student) for rows s:e; differentiable in s_logp [n, V] (student at tau)."""
        t_logp = self.logprobs(s, e)
        return (t_logp.exp() * (t_logp - s_logp)).sum()

    def target(self, s_logp: torch.Tensor, s: int, e: int) -> torch.Tensor:
        """The distribution q with dKL/d(logits/tau) = softmax(student/tau) - q, [n, V]."""
        q = self.logprobs(s, e).exp_()  # in place: the cached chunk is not needed after this
        self._last = None
        return q


class TopKTeacher:
    """Cached teacher: per position the top-k token ids and log-probs at tau; the rest is one tail bucket.

    KL is taken between the (k+1)-bucket coarsenings of teacher and student (top-k tokens + "any
    other token"), a lower bound of the exact KL that reaches it as the tail mass goes to 0.
    idx: [N, k] token ids; logp: [N, k] teacher log-probs at tau.
    """

    def __init__(self, idx: torch.Tensor, logp: torch.Tensor):
        self.idx, self.logp = idx.long(), logp.float()
        self.tail = (1.0 - self.logp.exp().sum(-1)).clamp_min(EPS)  # [N]

    def _parts(self, s_logp: torch.Tensor, s: int, e: int):
        idx, t_logp, t_tail = self.idx[s:e], self.logp[s:e], self.tail[s:e]
        s_logp_k = s_logp.gather(1, idx)
        s_tail = (1.0 - s_logp_k.exp().sum(-1)).clamp_min(EPS)
        return idx, t_logp, t_tail, s_logp_k, s_tail

    def kl(self, s_logp: torch.Tensor, s: int, e: int) -> torch.Tensor:
        _, t_logp, t_tail, s_logp_k, s_tail = self._parts(s_logp, s, e)
        top = (t_logp.exp() * (t_logp - s_logp_k)).sum()
        return top + (t_tail * (t_tail.log() - s_tail.log())).sum()

    def target(self, s_logp: torch.Tensor, s: int, e: int) -> torch.Tensor:
        # Tail mass is spread like the student's own distribution outside the top-k.
        idx, t_logp, t_tail, _, s_tail = self._parts(s_logp, s, e)
        q = s_logp.exp() * (t_tail / s_tail)[:, None]
        return q.scatter_(1, idx, t_logp.exp())


Teacher = DenseTeacher | TopKTeacher


def teacher_from_hidden(hidden: torch.Tensor, head: torch.nn.Linear, tau: float) -> DenseTeacher:
    """Exact teacher from its hidden states at the selected positions [N, H]."""
    return DenseTeacher(hidden, head, tau)


def _chunk_logits(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return F.linear(h, weight, bias).float()


class _FusedHeadLosses(torch.autograd.Function):
    """(ce_sum, kl_sum) over N positions; gradients computed chunk by chunk in forward."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, teacher, tau, chunk):  # noqa: D401
        n = hidden.shape[0]
        want_grad = ctx.needs_input_grad[0]
        ce_sum = hidden.new_zeros((), dtype=torch.float32)
        kl_sum = hidden.new_zeros((), dtype=torch.float32)
        g_ce = torch.empty_like(hidden) if want_grad else None
        g_kl = torch.empty_like(hidden) if (want_grad and teacher is not None) else None
        for s in range(0, n, chunk):
            e = min(s + chunk, n)
            logits = _chunk_logits(hidden[s:e], weight, bias)
            tgt = targets[s:e]
            logp = torch.log_softmax(logits, dim=-1)
            ce_sum += -logp.gather(1, tgt[:, None]).sum()
            if want_grad:
                grad = logp.exp_()  # softmax, reusing logp's memory
                grad[torch.arange(e - s, device=grad.device), tgt] -= 1.0
                g_ce[s:e] = grad.to(weight.dtype) @ weight
                del grad
            del logp
            if teacher is not None:
                s_logp = torch.log_softmax(logits / tau, dim=-1)
                kl_sum += teacher.kl(s_logp, s, e)
                if want_grad:
                    grad = teacher.target(s_logp, s, e).neg_().add_(s_logp.exp_()).div_(tau)
                    g_kl[s:e] = grad.to(weight.dtype) @ weight
                    del grad
                del s_logp
            del logits
        ctx.save_for_backward(g_ce, g_kl)
        return ce_sum, kl_sum

    @staticmethod
    def backward(ctx, grad_ce, grad_kl):
        g_ce, g_kl = ctx.saved_tensors
        grad_hidden = None
        if ctx.needs_input_grad[0]:
            grad_hidden = g_ce * grad_ce.to(g_ce.dtype)
            if g_kl is not None:
                grad_hidden = grad_hidden + g_kl * grad_kl.to(g_kl.dtype)
        return grad_hidden, None, None, None, None, None, None


def head_losses(
    hidden: torch.Tensor,
    head: torch.nn.Linear,
    targets: torch.Tensor,
    teacher: Teacher | None = None,
    tau: float = 1.0,
    chunk: int = 256,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed CE and summed KL(teacher || student at tau) over N trained positions.

    hidden: [N, H] final hidden states (after the model's last norm) at trained positions.
    targets: [N] token ids. teacher: DenseTeacher (exact) or TopKTeacher (cached); None skips KL.
    Returns (ce_sum, kl_sum), fp32 scalars, differentiable w.r.t. ``hidden``.
    """
    if hidden.shape[0] == 0:
        zero = hidden.sum() * 0.0
        return zero.float(), zero.float()
    if head.weight.requires_grad or (head.bias is not None and head.bias.requires_grad):
        return head_losses_reference(hidden, head, targets, teacher, tau)
    return _FusedHeadLosses.apply(hidden, head.weight, head.bias, targets, teacher, float(tau), int(chunk))


def head_losses_reference(
    hidden: torch.Tensor,
    head: torch.nn.Linear,
    targets: torch.Tensor,
    teacher: Teacher | None = None,
    tau: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unchunked autograd version of :func:`head_losses` (same contract; [N, V] in memory)."""
    logits = head(hidden).float()
    ce = F.cross_entropy(logits, targets, reduction="sum")
    if teacher is None:
        return ce, logits.new_zeros(())
    return ce, teacher.kl(torch.log_softmax(logits / tau, dim=-1), 0, hidden.shape[0])
