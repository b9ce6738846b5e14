"""Leaner activations for the two layer types that dominate what backward keeps: the SwiGLU MLP and
RMSNorm. Same values, less saved.

    n_mlp, n_norm = use_lean_layers(peft_model)

Why (measured with ``torch.autograd.graph.saved_tensors_hooks`` on Qwen2.5-0.5B in bf16, LoRA on
attention and MLP, BENCHMARKS.md "Memory"): per token and layer autograd keeps four
``[intermediate]`` tensors in the MLP (the gate output for SiLU's backward, SiLU's output and the up
output for the product's, and the product for down_proj's LoRA) and, in each of the two RMSNorms,
the input widened to fp32. Here:

- ``down(silu(gate(x)) * up(x))``: :class:`_SiluMul` keeps the gate and up outputs and recomputes
  SiLU in backward (one sigmoid over the block, cheaper than storing it): 3 blocks instead of 4.
- RMSNorm: :class:`_RMSNorm` keeps the input in its own dtype and the per-row ``rsqrt`` (one fp32
  per token) instead of a widened copy: for bf16, half the bytes.

Both replace the module's ``forward`` only where it is the known formula (an MLP with gate/up/down
projections and a SiLU; the Llama/Qwen2/Mistral RMSNorm class, ``weight * normed`` without Gemma's
``1 + weight``), so any other architecture keeps its own. Tested against the plain modules for
values and gradients (tests/test_fast_layers.py).
"""

from __future__ import annotations

import types

import torch
from torch import nn

# RMSNorm classes whose forward is exactly: w * (x32 * rsqrt(mean(x32^2) + eps)).to(x.dtype)
PLAIN_RMSNORMS = {"Qwen2RMSNorm", "Qwen3RMSNorm", "LlamaRMSNorm", "MistralRMSNorm", "Phi3RMSNorm"}


class _SiluMul(torch.autograd.Function):
    """silu(g) * u, saving g and u only."""

    @staticmethod
    def forward(ctx, g, u):  # noqa: D401
        ctx.save_for_backward(g, u)
        return torch.nn.functional.silu(g) * u

    @staticmethod
    def backward(ctx, grad):
        g, u = ctx.saved_tensors
        s, ds = silu_and_grad(g)
        dg = grad * u * ds if ctx.needs_input_grad[0] else None
        du = grad * s if ctx.needs_input_grad[1] else None
        return dg, du


def silu_and_grad(g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(silu(g), d silu(g) / dg), same shape as ``g``, from one sigmoid: what a backward that did not
    keep SiLU's output recomputes. d silu / dg = sig * (1 + g * (1 - sig)) = sig + silu * (1 - sig)."""
    sig = torch.sigmoid(g)
    s = g * sig
    return s, sig + s * (1 - sig)


def silu_mul(g: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """``silu(g) * u`` (same shape), keeping only ``g`` and ``u`` for backward."""
    return _SiluMul.apply(g, u)


class _RMSNorm(torch.autograd.Function):
    """weight * (x * rsqrt(mean(x^2) + eps)) in fp32, cast back to x's dtype before the weight."""

    @staticmethod
    def forward(ctx, x, weight, eps):  # noqa: D401
        x32 = x.float()
        r = torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
        ctx.save_for_backward(x, r, weight)
        return weight * (x32 * r).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        x, r, weight = ctx.saved_tensors
        xhat = x.float() * r
        gx = gw = None
        if ctx.needs_input_grad[0]:
            g = (grad * weight).float()
            gx = (r * (g - xhat * (g * xhat).mean(-1, keepdim=True))).to(x.dtype)
        if ctx.needs_input_grad[1]:
            gw = (grad * xhat.to(x.dtype)).reshape(-1, weight.shape[-1]).sum(0).to(weight.dtype)
        return gx, gw, None


def _lean_mlp_forward(self, x):
    gate, up = self.gate_proj(x), self.up_proj(x)
    # A fused LoRA down_proj (core.fused_lora) takes gate and up and keeps no product for backward.
    fused = getattr(self.down_proj, "airoad_swiglu", None)
    out = None if fused is None else fused(gate, up)
    return self.down_proj(silu_mul(gate, up)) if out is None else out


def _lean_norm_forward(self, hidden_states):
    return _RMSNorm.apply(hidden_states, self.weight, self.variance_epsilon)


def _is_silu(act: object) -> bool:
    return isinstance(act, nn.SiLU) or type(act).__name__ == "SiLUActivation"


def use_lean_layers(model: nn.Module) -> tuple[int, int]:
    """Swap the forward of every SwiGLU MLP and plain RMSNorm in ``model`` (in place, no parameter
    touched: saving, merging and loading are unaffected). Returns (MLPs, norms) swapped."""
    mlps = norms = 0
    for mod in model.modules():
        if all(hasattr(mod, a) for a in ("gate_proj", "up_proj", "down_proj")) and _is_silu(
            getattr(mod, "act_fn", None)
        ):
            mod.forward = types.MethodType(_lean_mlp_forward, mod)
            mlps += 1
        elif type(mod).__name__ in PLAIN_RMSNORMS and hasattr(mod, "variance_epsilon"):
            mod.forward = types.MethodType(_lean_norm_forward, mod)
            norms += 1
    return mlps, norms
