"""LoRA and DoRA linear layers as one autograd node each: PEFT's values, less kept for backward.

    n = use_fused_lora(peft_model)   # after use_fast_lora_dropout; returns the layers swapped

Why (BENCHMARKS.md "Where the memory goes in bf16"): PEFT builds each adapted layer from small
modules, and autograd keeps what each of them needs on its own. Per Qwen2 layer and token:

- LoRA with dropout: every adapted module keeps its own dropped copy of the input (q, k and v
  each keep one of the same normed hidden state) plus the bool mask: 3 bytes per input element.
  Here one node keeps the undropped input (shared by q, k and v: one reference, no copy) and the
  mask, and rebuilds ``x * mask * scale`` in backward (one multiply, no new draw).
- down_proj: its input ``silu(gate) * up`` is kept for lora_A's gradient although the MLP keeps
  gate and up anyway. The layer's ``airoad_swiglu(gate, up)`` (called by core.lean_layers' MLP)
  takes gate and up and recomputes the product in backward.
- DoRA: PEFT's ``(m/n - 1) * base + m/n * s * lora`` is evaluated in fp32 with the base and LoRA
  outputs kept (two [T, out] tensors per module). Here the node keeps its own output (already kept
  by the SiLU for gate/up) and recovers the magnitude's input from it; with dropout, where PEFT
  re-runs the base GEMM on the dropped input, it keeps that one [T, out] sum in the compute dtype.

Only the arithmetic's packaging changes: the same GEMMs in the same dtype (the autocast dtype, or
all-fp32), the same dropout masks (drawn by :func:`airoad.core.kernels.fast_dropout.keep_mask` in the same
order as FastDropout would), the DoRA norm PEFT's forward asks for (which
:mod:`airoad.core.kernels.dora_cache` computes once per update). In fp32 the values equal PEFT's; in bf16
the forward does, and the gradients are as close to fp32 ones as PEFT's (bf16 sums in another order).
Every call that is not plain training of one adapter on an ``nn.Linear`` (merged, disabled,
several or mixed adapters, another dropout, no grad, mixed dtypes without autocast) runs PEFT's own
forward. Tested against PEFT for values and gradients (tests/test_fused_lora.py).
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from airoad.core.kernels.fast_dropout import FastDropout, keep_mask
from airoad.core.kernels.lean_layers import silu_and_grad


@dataclass
class _Spec:
    """What one fused call needs besides the input: weights, scaling, compute dtype, DoRA parts."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    a: torch.Tensor
    b: torch.Tensor
    scaling: float
    cdt: torch.dtype  # compute dtype of every GEMM
    mag: torch.Tensor | None = None  # DoRA magnitude [out]
    norm: torch.Tensor | None = None  # DoRA ||W + s B A|| per row [out], detached


class _LoraLinear(torch.autograd.Function):
    """y = W x + bias + s B A drop(x) (LoRA), or PEFT's DoRA form; x = inp, or silu(gate) * inp.

    Shapes: inp/gate [..., in], keep (bool dropout mask, or None) like inp, weight [out, in],
    a [r, in], b [out, r], mag/norm [out] or None; returns [..., out] in the compute dtype."""

    @staticmethod
    def forward(ctx, inp, gate, keep, weight, bias, a, b, mag, norm, s: float, c: float, cdt):  # noqa: D401
        with torch.autocast(inp.device.type, enabled=False):  # explicit casts, as autocast would
            x = (inp if gate is None else F.silu(gate) * inp).to(cdt)
            w = weight.to(cdt)
            base = F.linear(x, w, None if bias is None else bias.to(cdt))
            xd = x if keep is None else x.mul(keep).mul_(c)
            h = F.linear(xd, a.to(cdt))
            lora = F.linear(h, b.to(cdt))
            saved_out = saved_z = None
            if mag is None:
                out = base + lora * s
            else:
                # PEFT: base + (m/n - 1) * bd + m/n * s * lora, where bd is the base output less its
                # bias (dropout 0) or the base weight applied to the dropped input. Here
                # base + (m/n * z - bd) with z = bd + s * lora, in one fp32 buffer (PEFT: four);
                # like PEFT's, it is exactly the base output where m/n = 1 and B = 0 (at init)
                mns = (mag / norm).view(1, -1)
                if keep is not None:
                    bd = F.linear(xd, w)
                else:  # in fp32: base - bias rounded to bf16 would move the output off the base
                    bd = base if bias is None else base.float() - bias
                z = lora.float().mul_(s).add_(bd)
                # without dropout z is (out - bias) / (m / n): keep the output, not z
                z_from_out = keep is None and not bool((mag == 0).any())
                if not z_from_out:
                    saved_z = z.to(cdt, copy=True)  # z is overwritten next
                out = z.mul_(mns).sub_(bd).add_(base).to(cdt)
                if z_from_out:
                    saved_out = out
        ctx.s, ctx.c, ctx.cdt, ctx.in_dtype = s, c, cdt, inp.dtype
        ctx.save_for_backward(inp, gate, keep, h, saved_out, saved_z, weight, bias, a, b, mag, norm)
        return out

    @staticmethod
    def backward(ctx, go):
        inp, gate, keep, h, saved_out, saved_z, weight, bias, a, b, mag, norm = ctx.saved_tensors
        cdt, s, need = ctx.cdt, ctx.s, ctx.needs_input_grad
        w, a_c, b_c = weight.to(cdt), a.to(cdt), b.to(cdt)
        g_bd = d_mag = None
        if mag is None:
            g_base = go.to(cdt)
            g_lora = g_base * s
        else:
            go32 = go.float()
            mns = (mag / norm).view(1, -1)
            if need[7]:  # dL/dm = sum_t g * z / n, and z = (out - bias) / (m / n) when not kept
                rows = go32.reshape(-1, go32.shape[-1])
                if saved_z is not None:
                    d_mag = (rows * saved_z.reshape(rows.shape)).sum(0) / norm
                else:
                    d_mag = (rows * saved_out.reshape(rows.shape)).sum(0)
                    if bias is not None:
                        d_mag -= bias * rows.sum(0)
                    d_mag /= mag
            g_lora = (go32 * (mns * s)).to(cdt)
            if keep is None:
                g_base = (go32 * mns).to(cdt)
            else:
                g_base, g_bd = go.to(cdt), (go32 * (mns - 1)).to(cdt)
        silu = d_silu = None
        if gate is not None:
            silu, d_silu = silu_and_grad(gate)
        # dB = g_l^T h, dA = (g_l B)^T drop(x): the dropped input is rebuilt here, not kept
        d_h = g_lora @ b_c
        d_a = d_b = None
        if need[6]:
            d_b = (g_lora.reshape(-1, g_lora.shape[-1]).t() @ h.reshape(-1, h.shape[-1])).to(b.dtype)
        if need[5]:
            x = (inp if gate is None else silu * inp).to(cdt)
            xd = x if keep is None else x.mul(keep).mul_(ctx.c)
            d_a = (d_h.reshape(-1, d_h.shape[-1]).t() @ xd.reshape(-1, xd.shape[-1])).to(a.dtype)
        d_xd = d_h @ a_c
        if g_bd is not None:
            d_xd = d_xd + g_bd @ w
        if keep is not None:
            d_xd = d_xd.mul(keep).mul_(ctx.c)
        d_x = (g_base @ w + d_xd).to(ctx.in_dtype)
        d_inp = d_gate = None
        if gate is None:
            d_inp = d_x
        else:
            d_inp = d_x * silu if need[0] else None
            d_gate = d_x * inp * d_silu if need[1] else None
        return d_inp, d_gate, None, None, None, d_a, d_b, d_mag, None, None, None, None


def _compute_dtype(x: torch.Tensor, spec_dtypes: tuple[torch.dtype, ...]) -> torch.dtype | None:
    """The dtype PEFT's forward would run the GEMMs in, or None where we do not replicate it."""
    dev = x.device.type
    if torch.is_autocast_enabled(dev):
        return torch.get_autocast_dtype(dev)
    if all(d == x.dtype for d in spec_dtypes):
        return x.dtype
    return None


def _spec(layer: Any, x: torch.Tensor) -> tuple[_Spec, float] | None:
    """The fused call's parameters for ``layer`` (a PEFT lora.Linear) on ``x``, or None to fall back
    to PEFT. Second item: the dropout probability to draw a mask with (0: none)."""
    if not torch.is_grad_enabled() or layer.disable_adapters or layer.merged:
        return None
    active = [n for n in layer.active_adapters if n in layer.lora_A]
    base = layer.base_layer
    if len(active) != 1 or type(base) is not nn.Linear or getattr(layer, "fan_in_fan_out", False):
        return None
    name = active[0]
    if getattr(layer, "lora_bias", {}).get(name, False) or base.weight.requires_grad:
        return None
    if base.bias is not None and base.bias.requires_grad:
        return None
    drop = layer.lora_dropout[name]
    if isinstance(drop, nn.Identity) or not drop.training:
        p = 0.0
    elif type(drop) in (FastDropout, nn.Dropout) and drop.p == 0.0:
        p = 0.0
    elif type(drop) is FastDropout:
        p = drop.p
    else:
        return None
    a, b = layer.lora_A[name].weight, layer.lora_B[name].weight
    cdt = _compute_dtype(x, (base.weight.dtype, a.dtype, b.dtype))
    if cdt is None:
        return None
    spec = _Spec(base.weight, base.bias, a, b, float(layer.scaling[name]), cdt)
    variant = getattr(layer, "lora_variant", {}).get(name)
    if variant is not None:
        if type(variant).__name__ != "DoraLinearVariant":
            return None
        dora = layer.lora_magnitude_vector[name]
        # the norm through the same calls as PEFT's DoraLinearLayer.forward, and so through
        # airoad.core.kernels.dora_cache's per-update cache
        lw = dora.get_lora_weight(lora_A=layer.lora_A[name], lora_B=layer.lora_B[name], adapter_name=name)
        # the cached norm is taken in fp32 whatever the weight's dtype (dora_cache.dora_row_norm):
        # the frozen weight itself, uncast, keeps its cache key from call to call
        norm = dora.get_weight_norm(
            weight=base.weight, lora_weight=lw.detach(), scaling=spec.scaling, adapter_name=name
        )
        spec.mag, spec.norm = dora.weight, norm.detach()
    return spec, p


def _apply(layer: Any, inp: torch.Tensor, gate: torch.Tensor | None) -> torch.Tensor | None:
    x_like = inp if gate is None else gate
    got = _spec(layer, x_like)
    if got is None:
        return None
    spec, p = got
    keep, c = None, 1.0
    if p > 0:
        mask, p_eff = keep_mask(inp.numel(), p, inp.device)
        keep, c = mask.view(inp.shape), 1.0 / (1.0 - p_eff)
    return _LoraLinear.apply(
        inp,
        gate,
        keep,
        spec.weight,
        spec.bias,
        spec.a,
        spec.b,
        spec.mag,
        spec.norm,
        spec.scaling,
        c,
        spec.cdt,
    )


def _fused_forward(self: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    out = None if args or kwargs else _apply(self, x, None)
    return type(self).forward(self, x, *args, **kwargs) if out is None else out


def _swiglu_forward(self: Any, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor | None:
    """``self(silu(gate) * up)`` without keeping the product for backward, or None (not fusable)."""
    return _apply(self, up, gate)


def use_fused_lora(model: nn.Module) -> int:
    """Give every PEFT ``lora.Linear`` in ``model`` the fused training forward (in place; no
    parameter touched, so saving, merging and loading are unaffected). Returns how many."""
    from peft.tuners.lora.layer import Linear as LoraLinear

    n = 0
    for mod in model.modules():
        if type(mod) is LoraLinear and "airoad_swiglu" not in mod.__dict__:
            mod.forward = types.MethodType(_fused_forward, mod)
            mod.airoad_swiglu = types.MethodType(_swiglu_forward, mod)
            n += 1
    return n
