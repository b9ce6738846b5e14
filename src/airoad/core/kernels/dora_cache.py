"""DoRA weight norms computed once per adapter update, not on every forward.

PEFT's DoRA layer computes ``||W + s B A||`` (row-wise, detached from the graph: DoRA paper
section 4.3) on every forward of every adapted module: the product B A (via an identity matrix,
[in, in] x [in, r] x [r, out]), a weight-sized sum and a norm. That work depends only on W, A, B and
s, which change only when the optimizer steps, yet it runs for each of a step's micro-batches and,
when generating, for every new token. Here the norm is kept per module and reused while the key
is unchanged: the identity and version counters of A, B and W (``Tensor._version`` is bumped by
in-place updates such as ``load_state_dict`` and ``copy_``) and a count of optimizer steps taken in
this process (a global torch optimizer step hook: the fused AdamW, the HF Trainer's default, updates
parameters without bumping their version counters, measured). On a miss the norm is recomputed by
:func:`dora_row_norm` (below), not by PEFT's code.

The cached value is a [out] vector per module, so memory does not grow. Conv DoRA layers keep
PEFT's behaviour. Not seen: writes through ``param.data`` (a separate version counter) outside an
optimizer step; replace adapter weights with ``load_state_dict``/``copy_`` (what PEFT does).

A miss does not form ``W + s B A`` either. PEFT does, through an identity matrix (for FSDP): a
[in, in] ``eye`` (95 MB for Qwen2.5-0.5B's down_proj), a weight-sized product, sum and norm per
module, every optimizer step: ~2.3 s of a 12.9 s DoRA step on the real model (profile_step.py,
``aten::fill_`` + ``aten::add``). :func:`dora_row_norm` expands the square instead,
``||W_i||^2 + 2 s <W_i, (B A)_i> + s^2 ||(B A)_i||^2`` = ``w2 + 2 s (B * (W A^T)).sum(1) +
s^2 ((B (A A^T)) * B).sum(1)``: one [out, in] x [in, r] product per update, ``w2`` kept while W is
unchanged, the rest in fp32, the result rounded to W's dtype as PEFT's is. It differs from PEFT's
only by rounding (PEFT also rounds the sum to W's dtype before the norm), and where it would lose
digits (the cross term nearly cancels ``||W_i||^2``) it computes that row's norm directly.
"""

from __future__ import annotations

import types
from typing import Any

import torch
from torch import nn

_EMPTY = torch.empty(0)
_STEPS = [0]  # optimizer steps taken by any torch optimizer in this process


def _count_step(_opt: Any, _args: Any, _kwargs: Any) -> None:
    _STEPS[0] += 1


_HOOK: Any = None


def _version(t: torch.Tensor) -> tuple[int, int]:
    return (t.data_ptr(), t._version)


def _cached_lora_weight(self: Any, lora_A: nn.Module, lora_B: nn.Module, adapter_name: str | None = None):
    # Called first in PEFT's DoraLinearLayer.forward; its result only feeds get_weight_norm.
    self._airoad_key = (adapter_name, _version(lora_A.weight), _version(lora_B.weight), _STEPS[0])
    self._airoad_ab = (lora_A, lora_B)
    if adapter_name is not None:
        return _EMPTY  # get_weight_norm below works from A and B (dora_row_norm), not from B A
    with torch.no_grad():  # the norm is detached anyway: no graph for B A
        return type(self).get_lora_weight(self, lora_A=lora_A, lora_B=lora_B)


def _cached_weight_norm(
    self: Any,
    weight: torch.Tensor,
    lora_weight: torch.Tensor,
    scaling: float,
    adapter_name: str | None = None,
):
    key = getattr(self, "_airoad_key", None)
    if adapter_name is None or key is None or key[0] != adapter_name:
        # update_layer (adapter creation) or a caller we do not know: no caching.
        return type(self).get_weight_norm(self, weight, lora_weight, scaling)
    full = (key, _version(weight), weight.dtype, float(scaling))
    hit = self._airoad_norm.get(adapter_name)
    if hit is not None and hit[0] == key and hit[1] == full:
        return hit[2]
    lora_A, lora_B = self._airoad_ab
    norm = dora_row_norm(self, weight, lora_A.weight, lora_B.weight, float(scaling))
    self._airoad_norm[adapter_name] = (key, full, norm)
    return norm


CANCEL = 1e-3  # below this share of ||W_i||^2 the expanded square loses digits: direct row norm


def dora_row_norm(
    owner: Any, weight: torch.Tensor, a: torch.Tensor, b: torch.Tensor, s: float
) -> torch.Tensor:
    """``||W + s B A||`` per row ([out] in W's dtype; W [out, in], A [r, in], B [out, r]), detached,
    without forming the [out, in] sum. ``owner`` keeps ``||W_i||^2`` while W is unchanged."""
    with torch.no_grad():
        wkey = (_version(weight), weight.dtype)
        cached = getattr(owner, "_airoad_w2", None)
        if cached is None or cached[0] != wkey:
            # ||W_i|| by PEFT's own call, rounded as PEFT rounds it: PEFT's magnitude starts as
            # exactly this. Squared and rooted in float64 ([out] only), where sqrt(x * x) == x
            # holds (torch's vectorised fp32 sqrt is not correctly rounded), so m / n is 1 at B = 0
            cached = (wkey, torch.linalg.norm(weight, dim=1).double().pow(2))
            owner._airoad_w2 = cached
        w2 = cached[1]
        a32, b32 = a.float(), b.float()
        wa = (weight @ a.to(weight.dtype).t()).float()  # [out, r], each entry rounded to W's dtype
        cross = b32 * wa
        ba2 = ((b32 @ (a32 @ a32.t())) * b32).sum(1)
        n2 = w2 + (2 * s) * cross.sum(1).double() + (s * s) * ba2.double()
        # that rounding bounds n2's error by s * eps * sum |cross|: where this is not below 1/256 of
        # n2 (the cross term nearly cancels ||W_i||^2), or n2 < CANCEL ||W_i||^2, go direct
        err = (abs(s) * torch.finfo(weight.dtype).eps) * cross.abs().sum(1)
        bad = (n2 < CANCEL * w2) | (n2 < 256 * err)
        if bool(bad.any()):
            rows = weight[bad].float() + s * (b32[bad] @ a32)
            n2[bad] = rows.pow(2).sum(1).double()
        # rounded to W's dtype as PEFT's norm is: PEFT's magnitude starts as that rounded norm, so
        # m / n is 1 at init and the adapted model is the base model
        return n2.clamp_min_(0).sqrt_().to(weight.dtype)


def cache_dora_norms(model: nn.Module) -> int:
    """Give every linear DoRA layer in ``model`` a per-update weight-norm cache; returns how many."""
    from peft.tuners.lora.dora import DoraLinearLayer
    from torch.optim.optimizer import register_optimizer_step_post_hook

    global _HOOK
    n = 0
    for mod in model.modules():
        if type(mod) is not DoraLinearLayer or getattr(mod, "_airoad_norm", None) is not None:
            continue
        mod._airoad_norm = {}
        mod.get_lora_weight = types.MethodType(_cached_lora_weight, mod)
        mod.get_weight_norm = types.MethodType(_cached_weight_norm, mod)
        n += 1
    if n and _HOOK is None:
        _HOOK = register_optimizer_step_post_hook(_count_step)
    return n
