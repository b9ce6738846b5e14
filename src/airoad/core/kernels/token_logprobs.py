"""Per-token log-probabilities of given targets through the output head, in chunks, with the
gradient w.r.t. the hidden states taken in the same pass.

Preference losses need ``log p(target_t)`` at every completion position, summed per sequence; the
loss's gradient w.r.t. each is a per-token scalar only known after the whole batch is scored. But
``d log p_t / d h_t = W[target_t] - softmax_t @ W`` does not depend on it, so each chunk computes
its logits once, its log-probs, and that ``[n, H]`` gradient; backward scales the stored rows by
the incoming per-token scalars. One head product for the logits and one for the gradient per
chunk, no ``[N, V]`` tensor outliving its chunk, and no recomputation in backward (TRL's
``ChunkedLogProbFunction`` projects again in backward, and on CPU scores every position; see
``trl/trainer/utils.py::add_fused_lm_head``). Frozen heads only: a trainable head falls back to
plain autograd, the reference this path is tested against.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class _TokenLogProbs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk):  # noqa: D401
        n = hidden.shape[0]
        want_grad = ctx.needs_input_grad[0]
        out = hidden.new_empty(n, dtype=torch.float32)
        g_hidden = torch.empty_like(hidden) if want_grad else None
        for s in range(0, n, chunk):
            e = min(s + chunk, n)
            logits = F.linear(hidden[s:e], weight, bias).float()
            lse = torch.logsumexp(logits, dim=-1)
            tgt = targets[s:e]
            out[s:e] = logits.gather(1, tgt[:, None]).squeeze(1) - lse
            if want_grad:
                p = logits.sub_(lse[:, None]).exp_()  # softmax, in the logits' memory
                p[torch.arange(e - s, device=p.device), tgt] -= 1.0
                g_hidden[s:e] = -(p.to(weight.dtype) @ weight)  # d log p / d h = W[t] - p @ W
            del logits
        ctx.save_for_backward(g_hidden)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        (g_hidden,) = ctx.saved_tensors
        grad = g_hidden * grad_out[:, None].to(g_hidden.dtype) if ctx.needs_input_grad[0] else None
        return grad, None, None, None, None


def token_logprobs(
    hidden: torch.Tensor, head: torch.nn.Linear, targets: torch.Tensor, chunk: int = 256
) -> torch.Tensor:
    """``log softmax(head(hidden))[i, targets[i]]`` as fp32 ``[N]``, differentiable w.r.t. ``hidden``.

    hidden: ``[N, H]`` final hidden states (after the last norm) at the scored positions;
    targets: ``[N]`` token ids; chunk: rows per head product (bounds memory to chunk x vocab floats).
    """
    if head.weight.requires_grad or (head.bias is not None and head.bias.requires_grad):
        return token_logprobs_reference(hidden, head, targets)
    if hidden.shape[0] == 0:
        return (hidden.sum(-1) * 0.0).float()
    return _TokenLogProbs.apply(hidden, head.weight, head.bias, targets, int(chunk))


def token_logprobs_reference(
    hidden: torch.Tensor, head: torch.nn.Linear, targets: torch.Tensor
) -> torch.Tensor:
    """Unchunked autograd version (``[N, V]`` in memory)."""
    logp = torch.log_softmax(head(hidden).float(), dim=-1)
    return logp.gather(1, targets[:, None]).squeeze(1)
