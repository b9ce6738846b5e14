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

from collections.abc import Callable

import torch
import torch.nn.functional as F

# teacher_logprobs(start, end) -> [end - start, V] log-probabilities at temperature tau, no grad.
TeacherFn = Callable[[int, int], torch.Tensor]


def _chunk_logits(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return F.linear(h, weight, bias).float()


class _FusedHeadLosses(torch.autograd.Function):
    """(ce_sum, kl_sum) over N positions; gradients computed chunk by chunk in forward."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, teacher_fn, tau, chunk):  # noqa: D401
        n = hidden.shape[0]
        want_grad = ctx.needs_input_grad[0]
        ce_sum = hidden.new_zeros((), dtype=torch.float32)
        kl_sum = hidden.new_zeros((), dtype=torch.float32)
        g_ce = torch.empty_like(hidden) if want_grad else None
        g_kl = torch.empty_like(hidden) if (want_grad and teacher_fn is not None) else None
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
            if teacher_fn is not None:
                t_logp = teacher_fn(s, e).float()
                s_logp = torch.log_softmax(logits / tau, dim=-1)
                t_p = t_logp.exp()
                kl_sum += (t_p * (t_logp - s_logp)).sum()
                if want_grad:
                    grad = s_logp.exp_().sub_(t_p).div_(tau)
                    g_kl[s:e] = grad.to(weight.dtype) @ weight
                    del grad
                del t_logp, s_logp, t_p
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
    teacher_fn: TeacherFn | None = None,
    tau: float = 1.0,
    chunk: int = 256,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed CE and summed KL(teacher || student at tau) over N trained positions.

    hidden: [N, H] final hidden states (after the model's last norm) at trained positions.
    targets: [N] token ids. teacher_fn: see :data:`TeacherFn`; None skips KL (returns 0).
    Returns (ce_sum, kl_sum), fp32 scalars, differentiable w.r.t. ``hidden``.
    """
    if hidden.shape[0] == 0:
        zero = hidden.sum() * 0.0
        return zero.float(), zero.float()
    if head.weight.requires_grad or (head.bias is not None and head.bias.requires_grad):
        return head_losses_reference(hidden, head, targets, teacher_fn, tau)
    return _FusedHeadLosses.apply(hidden, head.weight, head.bias, targets, teacher_fn, float(tau), int(chunk))


def head_losses_reference(
    hidden: torch.Tensor,
    head: torch.nn.Linear,
    targets: torch.Tensor,
    teacher_fn: TeacherFn | None = None,
    tau: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unchunked autograd version of :func:`head_losses` (same contract; [N, V] in memory)."""
    logits = head(hidden).float()
    ce = F.cross_entropy(logits, targets, reduction="sum")
    if teacher_fn is None:
        return ce, logits.new_zeros(())
    t_logp = teacher_fn(0, hidden.shape[0]).float()
    s_logp = torch.log_softmax(logits / tau, dim=-1)
    kl = (t_logp.exp() * (t_logp - s_logp)).sum()
    return ce, kl


def teacher_from_hidden(teacher_hidden: torch.Tensor, head: torch.nn.Linear, tau: float) -> TeacherFn:
    """Teacher log-probs at ``tau`` computed chunk by chunk from its hidden states [N, H]."""

    def fn(s: int, e: int) -> torch.Tensor:
        with torch.no_grad():
            return torch.log_softmax(_chunk_logits(teacher_hidden[s:e], head.weight, head.bias) / tau, dim=-1)

    return fn
