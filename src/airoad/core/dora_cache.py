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
PEFT's own code, so the values are bit-identical to PEFT's.

The cached value is a [out] vector per module, so memory does not grow. Conv DoRA layers keep
PEFT's behaviour. Not seen: writes through ``param.data`` (a separate version counter) outside an
optimizer step; replace adapter weights with ``load_state_dict``/``copy_`` (what PEFT does).
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
    hit = self._airoad_norm.get(adapter_name)
    if adapter_name is not None and hit is not None and hit[0] == self._airoad_key:
        return _EMPTY  # get_weight_norm below returns the cached norm without reading it
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
    with torch.no_grad():
        if lora_weight.numel() == 0:  # A, B unchanged but W, dtype or scaling did: need B A after all
            lora_A, lora_B = self._airoad_ab
            lora_weight = type(self).get_lora_weight(self, lora_A=lora_A, lora_B=lora_B).to(weight.dtype)
        norm = type(self).get_weight_norm(self, weight, lora_weight, scaling)
    self._airoad_norm[adapter_name] = (key, full, norm)
    return norm


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
