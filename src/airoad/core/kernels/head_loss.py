"""CE and KL(teacher || student) on trained positions only, through the output head in chunks.

Full-vocabulary logits are the memory hog (Qwen2.5: 151,936 x 512 x 4 bytes = 311 MB per
sequence per copy), and most positions carry no label. So the caller gathers the final hidden
states of trained positions, ``hidden [N, H]``, and :func:`head_loss` projects them through the
output head ``chunk`` rows at a time. The loss is CE + w * KL with w known
up front (the trainer's kl_lambda * tau^2), so each chunk's gradient w.r.t. the logits is summed
(softmax minus one-hot for CE; (softmax_tau(student) - q(teacher)) / tau for KL) and goes through
the head once: one [n, V] x [V, H] product per chunk serves both terms. It is computed in the
forward pass and kept as ``[N, H]``; no ``[N, V]`` tensor outlives its chunk and nothing is
recomputed in backward. The frozen head needs no weight gradient; a trainable head falls back to
:func:`head_losses_reference`, the plain autograd version the fused path is tested against.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

EPS = 1e-8


class DenseTeacher:
    """Exact teacher: full log-probs at temperature tau from its hidden states [N, H], chunk by chunk."""

    def __init__(self, hidden: torch.Tensor, head: torch.nn.Linear, tau: float):
        self.hidden, self.head, self.tau = hidden, head, tau

    def rows(self, sel: torch.Tensor) -> DenseTeacher:
        """The teacher of the positions ``sel`` picks ([N] bool or index), in their order."""
        return DenseTeacher(self.hidden[sel], self.head, self.tau)

    def logprobs(self, s: int, e: int) -> torch.Tensor:
        """Teacher log-probs [e - s, V] at tau for rows s:e (one output-head product)."""
        with torch.no_grad():
            logits = _chunk_logits(self.hidden[s:e], self.head.weight, self.head.bias)
            return log_softmax_(logits.div_(self.tau) if self.tau != 1.0 else logits)

    def kl(self, s_logp: torch.Tensor, s: int, e: int) -> torch.Tensor:
        """Summed KL(teacher || student) for rows s:e; differentiable in s_logp [n, V] (student at tau)."""
        t_logp = self.logprobs(s, e)
        return (t_logp.exp() * (t_logp - s_logp)).sum()

    def kl_and_target(self, s_logp: torch.Tensor, s: int, e: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(summed KL for rows s:e, q [n, V]) with dKL/d(student logits / tau) = softmax - q.
        No autograd; one teacher head product and three [n, V] passes."""
        t_logp = self.logprobs(s, e)
        kl = sum_p_log_ratio(t_logp, s_logp)
        return kl, t_logp.exp_()  # teacher probabilities, in t_logp's memory


class TopKTeacher:
    """Cached teacher: per position the top-k token ids and log-probs at tau; the rest is one tail bucket.

    KL is taken between the (k+1)-bucket coarsenings of teacher and student (top-k tokens + "any
    other token"), a lower bound of the exact KL that reaches it as the tail mass goes to 0.
    idx: [N, k] token ids; logp: [N, k] teacher log-probs at tau.
    """

    def __init__(self, idx: torch.Tensor, logp: torch.Tensor):
        self.idx, self.logp = idx.long(), logp.float()
        self.tail = (1.0 - self.logp.exp().sum(-1)).clamp_min(EPS)  # [N]

    def rows(self, sel: torch.Tensor) -> TopKTeacher:
        """The teacher of the positions ``sel`` picks ([N] bool or index), in their order."""
        return TopKTeacher(self.idx[sel], self.logp[sel])

    def _parts(self, s_logp: torch.Tensor, s: int, e: int):
        idx, t_logp, t_tail = self.idx[s:e], self.logp[s:e], self.tail[s:e]
        s_logp_k = s_logp.gather(1, idx)
        s_tail = (1.0 - s_logp_k.exp().sum(-1)).clamp_min(EPS)
        return idx, t_logp, t_tail, s_logp_k, s_tail

    @staticmethod
    def _kl(t_logp, t_tail, s_logp_k, s_tail) -> torch.Tensor:
        top = (t_logp.exp() * (t_logp - s_logp_k)).sum()
        return top + (t_tail * (t_tail.log() - s_tail.log())).sum()

    def kl(self, s_logp: torch.Tensor, s: int, e: int) -> torch.Tensor:
        _, t_logp, t_tail, s_logp_k, s_tail = self._parts(s_logp, s, e)
        return self._kl(t_logp, t_tail, s_logp_k, s_tail)

    def kl_and_target(self, s_logp: torch.Tensor, s: int, e: int) -> tuple[torch.Tensor, torch.Tensor]:
        # Tail mass is spread like the student's own distribution outside the top-k.
        idx, t_logp, t_tail, s_logp_k, s_tail = self._parts(s_logp, s, e)
        q = s_logp.exp().mul_((t_tail / s_tail)[:, None])
        return self._kl(t_logp, t_tail, s_logp_k, s_tail), q.scatter_(1, idx, t_logp.exp())


Teacher = DenseTeacher | TopKTeacher


def _chunk_logits(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return F.linear(h, weight, bias).float()


# Rows per block for the [n, V] passes below: their temporaries are ROWS x V floats (32 x 151,936 x 4 B
# = 19 MB for Qwen2.5) instead of a second chunk-sized tensor (156 MB at chunk 256). The head's
# transients sit on top of every saved activation at the end of forward, i.e. at the run's peak.
ROWS = 32


def log_softmax_(x: torch.Tensor) -> torch.Tensor:
    """``log_softmax(x, -1)`` of a 2-D tensor, written into ``x`` row block by row block; returns ``x``."""
    for i in range(0, x.shape[0], ROWS):
        blk = x[i : i + ROWS]
        blk.copy_(torch.log_softmax(blk, -1))  # bit-equal to the whole-tensor op; 3.6x faster on 1 core
    return x


def sum_p_log_ratio(t_logp: torch.Tensor, s_logp: torch.Tensor) -> torch.Tensor:
    """sum(exp(t_logp) * (t_logp - s_logp)) over [n, V] log-probs, by row blocks (fp32 scalar)."""
    total = t_logp.new_zeros(())
    for i in range(0, t_logp.shape[0], ROWS):
        t, s_ = t_logp[i : i + ROWS], s_logp[i : i + ROWS]
        total += torch.dot(t.exp().view(-1), (t - s_).view(-1))
    return total


@dataclass
class _HeadCall:
    """What stays fixed over one head_loss call's chunks."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    teacher: Any
    tau: float
    w: float  # the KL weight
    want_grad: bool
    ce_weight: float = 1.0  # 0: KL only (anchor positions: no target to learn, only the base to stay near)


def _chunk(call: _HeadCall, h: torch.Tensor, tgt: torch.Tensor, s: int, e: int):
    """(ce_sum, kl_sum, dLoss/dlogits [n, V] or None) of rows s:e for Loss = c * CE + w * KL.

    dCE/dlogits = softmax - onehot; dKL/dlogits = (softmax_tau - q) / tau (q from the teacher).
    Summed here so one [n, V] x [V, H] product carries both gradients. c (``ce_weight``) is 1 or 0."""
    teacher, tau, w, want_grad, c = call.teacher, call.tau, call.w, call.want_grad, call.ce_weight
    logits = _chunk_logits(h, call.weight, call.bias)
    s_logp = None
    if teacher is not None and tau != 1.0:  # the student at tau needs the logits; logp a copy
        logp = torch.log_softmax(logits, dim=-1)
        s_logp = log_softmax_(logits.div_(tau))
    else:  # in place: no second [n, V] tensor
        logp = log_softmax_(logits)
        s_logp = logp if teacher is not None else None
    ce = -logp.gather(1, tgt[:, None]).sum()
    del logits
    kl, grad, q, p_tau = logp.new_zeros(()), None, None, None
    if s_logp is not None:
        kl, q = teacher.kl_and_target(s_logp, s, e) if want_grad else (teacher.kl(s_logp, s, e), None)
        p_tau = None if (tau == 1.0 or not want_grad) else s_logp.exp_()
        del s_logp
    if want_grad:
        grad = logp.exp_()  # softmax, in logp's memory
        if q is not None and p_tau is None:  # tau = 1: (c + w) p - w q
            grad.mul_(c + w).sub_(q, alpha=w)
        else:
            if c != 1.0:
                grad.mul_(c)
            if q is not None:
                grad.add_(p_tau.sub_(q), alpha=w / tau)
        if c:
            grad[torch.arange(e - s, device=grad.device), tgt] -= c
    return ce, kl, grad


class _FusedHeadLoss(torch.autograd.Function):
    """(CE + w * KL, CE, KL) summed over N positions; the gradient of the first is computed chunk by
    chunk in forward (one head product per chunk); CE and KL are returned for logging only."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, teacher, tau, chunk, w, ce_weight):  # noqa: D401
        n = hidden.shape[0]
        want_grad = ctx.needs_input_grad[0]
        ce_sum = hidden.new_zeros((), dtype=torch.float32)
        kl_sum = hidden.new_zeros((), dtype=torch.float32)
        g_hidden = torch.empty_like(hidden) if want_grad else None
        call = _HeadCall(weight, bias, teacher, tau, w, want_grad, ce_weight)
        for s in range(0, n, chunk):
            e = min(s + chunk, n)
            ce, kl, grad = _chunk(call, hidden[s:e], targets[s:e], s, e)
            ce_sum += ce
            kl_sum += kl
            if want_grad:
                g_hidden[s:e] = grad.to(weight.dtype) @ weight
            del grad
        ctx.save_for_backward(g_hidden)
        ctx.mark_non_differentiable(ce_sum, kl_sum)
        return ce_weight * ce_sum + w * kl_sum, ce_sum, kl_sum

    @staticmethod
    def backward(ctx, grad_total, _grad_ce, _grad_kl):
        (g_hidden,) = ctx.saved_tensors
        grad_hidden = g_hidden * grad_total.to(g_hidden.dtype) if ctx.needs_input_grad[0] else None
        return grad_hidden, None, None, None, None, None, None, None, None


def head_loss(
    hidden: torch.Tensor,
    head: torch.nn.Linear,
    targets: torch.Tensor,
    teacher: Teacher | None = None,
    tau: float = 1.0,
    chunk: int = 256,
    kl_weight: float = 1.0,
    *,
    ce_weight: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ce_weight * CE + kl_weight * KL, CE, KL), sums over N positions, KL(teacher || student at tau).

    hidden: [N, H] final hidden states (after the model's last norm) at trained positions.
    targets: [N] token ids. teacher: DenseTeacher (exact) or TopKTeacher (cached); None: KL = 0.
    ce_weight: 1 (trained positions) or 0 (anchor positions: KL only; CE is still returned, for logs).
    The first value is differentiable w.r.t. ``hidden``; CE and KL are detached (for logs).
    fp32 scalars.
    """
    if ce_weight not in (0.0, 1.0):
        raise ValueError(f"ce_weight must be 0 or 1, got {ce_weight}")
    if hidden.shape[0] == 0:
        zero = (hidden.sum() * 0.0).float()
        return zero, zero.detach(), zero.detach()
    if head.weight.requires_grad or (head.bias is not None and head.bias.requires_grad):
        ce, kl = head_losses_reference(hidden, head, targets, teacher, tau)
        return ce_weight * ce + kl_weight * kl, ce.detach(), kl.detach()
    return _FusedHeadLoss.apply(
        hidden,
        head.weight,
        head.bias,
        targets,
        teacher,
        float(tau),
        int(chunk),
        float(kl_weight),
        float(ce_weight),
    )


def head_losses_reference(
    hidden: torch.Tensor,
    head: torch.nn.Linear,
    targets: torch.Tensor,
    teacher: Teacher | None = None,
    tau: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unchunked autograd (CE, KL) sums, both differentiable: the reference :func:`head_loss` is tested
    against ([N, V] in memory)."""
    logits = head(hidden).float()
    ce = F.cross_entropy(logits, targets, reduction="sum")
    if teacher is None:
        return ce, logits.new_zeros(())
    return ce, teacher.kl(torch.log_softmax(logits / tau, dim=-1), 0, hidden.shape[0])
