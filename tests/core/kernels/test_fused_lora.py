"""The fused LoRA/DoRA layers (core.fused_lora) equal PEFT's for values and gradients, keep less for
backward, and hand every call they do not cover back to PEFT."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import needs_bf16

from airoad.core.kernels.dora_cache import cache_dora_norms
from airoad.core.kernels.fast_dropout import FastDropout, _MaskedScale, keep_mask, use_fast_lora_dropout
from airoad.core.kernels.fused_lora import use_fused_lora
from airoad.core.kernels.lean_layers import use_lean_layers
from airoad.core.model.adapters import lora_in_autocast

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture
def same_masks(device, monkeypatch):
    """On CUDA, FastDropout hands over to F.dropout (fast_dropout.py), whose random stream is not the
    fused layer's keep_mask: there, draw FastDropout's masks as on CPU, so PEFT's chain of modules and
    the fused layer drop the same entries and their arithmetic can be compared."""
    if device == "cpu":
        return

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        mask, p = keep_mask(x.numel(), self.p, x.device)
        return _MaskedScale.apply(x, mask.view(x.shape), 1.0 / (1.0 - p))

    monkeypatch.setattr(FastDropout, "forward", forward)


def _pair(dora: bool, p: float, bf16: bool, device: str = "cpu", seed: int = 0):
    """(plain, fused): the same tiny Qwen2 + adapter on ``device``, with and without the fused layers."""
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen2Config(
        vocab_size=97,
        hidden_size=32,
        intermediate_size=80,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    model = Qwen2ForCausalLM(cfg).to(device)
    if bf16:
        model = model.to(torch.bfloat16)  # PEFT keeps the adapter weights in fp32, as in training
    lcfg = LoraConfig(r=4, lora_alpha=8, lora_dropout=p, target_modules=TARGETS, use_dora=dora)
    pm = get_peft_model(model, lcfg)
    with torch.no_grad():  # B = 0 at init would zero A's gradient: give both a value
        for name, prm in pm.named_parameters():
            if "lora_B" in name or "lora_A" in name:
                prm.normal_(0, 0.2)
    use_fast_lora_dropout(pm)
    cache_dora_norms(pm)
    use_lean_layers(pm)
    pm.train()
    fused = copy.deepcopy(pm)
    assert use_fused_lora(fused) == 2 * len(TARGETS)
    return pm, fused


def _run(model, ids, bf16: bool, seed: int = 1):
    """Loss and the gradient of every trainable parameter after one forward/backward."""
    torch.manual_seed(seed)  # same dropout masks in both models: they are drawn in the same order
    model.zero_grad(set_to_none=True)
    with torch.autocast(ids.device.type, dtype=torch.bfloat16, enabled=bf16), lora_in_autocast(model, bf16):
        out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    return out.loss.detach(), out.logits.detach().float(), grads


@pytest.mark.parametrize("dora", [False, True])
@pytest.mark.parametrize("p", [0.0, 0.1])
def test_fused_equals_peft_fp32(dora, p, device, same_masks):
    plain, fused = _pair(dora, p, bf16=False, device=device)
    ids = torch.randint(0, 97, (2, 24), device=device)
    loss_p, logits_p, g_p = _run(plain, ids, False)
    loss_f, logits_f, g_f = _run(fused, ids, False)
    torch.testing.assert_close(logits_f, logits_p, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loss_f, loss_p, rtol=1e-6, atol=1e-6)
    assert g_f.keys() == g_p.keys() and len(g_p) == 2 * len(TARGETS) * (3 if dora else 2)
    for name in g_p:
        assert g_p[name].abs().sum() > 0, name
        torch.testing.assert_close(g_f[name], g_p[name], rtol=1e-4, atol=1e-6, msg=name)


@needs_bf16
@pytest.mark.parametrize("dora", [False, True])
@pytest.mark.parametrize("p", [0.0, 0.1])
def test_fused_bf16_is_as_close_to_fp32_as_peft(dora, p, device, same_masks):
    """In bf16 the fused node rounds in other places than PEFT's chain of modules (one bf16 sum of
    the base and LoRA input gradients, DoRA's sums in fp32), so bit equality is not the contract:
    its forward equals PEFT's, and its gradients are as close to the fp32 gradients as PEFT's."""
    plain, fused = _pair(dora, p, bf16=True, device=device)
    ref = copy.deepcopy(plain).float()  # the same weights, every op in fp32, the same masks
    ids = torch.randint(0, 97, (2, 24), device=device)
    loss_p, logits_p, g_p = _run(plain, ids, True)
    loss_f, logits_f, g_f = _run(fused, ids, True)
    _, _, g_r = _run(ref, ids, False)
    torch.testing.assert_close(logits_f, logits_p, rtol=0, atol=1e-2)
    torch.testing.assert_close(loss_f, loss_p, rtol=0, atol=1e-3)
    for name in g_r:
        err_p = ((g_p[name].float() - g_r[name]).norm() / g_r[name].norm()).item()
        err_f = ((g_f[name].float() - g_r[name]).norm() / g_r[name].norm()).item()
        assert err_f <= 1.25 * err_p + 5e-3, (name, err_f, err_p)


def _saved_bytes(model, ids, bf16: bool) -> int:
    """Bytes autograd keeps for backward (storages counted once, parameters excluded)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        st = t.untyped_storage()
        if st.data_ptr() not in params:
            seen[st.data_ptr()] = st.nbytes()
        return t

    torch.manual_seed(1)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with torch.autocast(ids.device.type, dtype=torch.bfloat16, enabled=bf16):
            with lora_in_autocast(model, bf16):
                model(input_ids=ids, labels=ids).loss.backward()
    return sum(seen.values())


@pytest.mark.parametrize("dora,p", [(False, 0.0), (False, 0.1), (True, 0.0), (True, 0.1)])
def test_fused_keeps_less_for_backward(dora, p, device):
    plain, fused = _pair(dora, p, bf16=False, device=device)
    tokens, layers, hidden, inter, f32 = 64, 2, 32, 80, 4
    ids = torch.randint(0, 97, (1, tokens), device=device)
    saved = (_saved_bytes(plain, ids, False) - _saved_bytes(fused, ids, False)) / (tokens * layers)
    # per token and layer, at least: down_proj's input silu(g) * u (g and u are kept anyway);
    # with dropout, the dropped copies (7 of them) less the one undropped input each node keeps;
    # with DoRA, one of PEFT's two kept [T, out] outputs per module (out: 32+16+16+32+80+80+32)
    want = inter * f32 + (hidden * f32 if p else 0) + (288 * f32 if dora else 0)
    assert saved >= want, (saved, want)


def test_fused_hands_other_calls_to_peft(device):
    plain, fused = _pair(dora=False, p=0.1, bf16=False, device=device)
    ids = torch.randint(0, 97, (1, 16), device=device)
    with torch.no_grad():  # no grad: PEFT's forward (no mask drawn either way)
        plain.eval(), fused.eval()
        torch.testing.assert_close(fused(input_ids=ids).logits, plain(input_ids=ids).logits)
        with fused.disable_adapter(), plain.disable_adapter():
            torch.testing.assert_close(fused(input_ids=ids).logits, plain(input_ids=ids).logits)
    fused.train()
    with fused.disable_adapter():  # grad on, adapters off: the base model's output
        base = fused(input_ids=ids).logits
    with torch.no_grad(), fused.disable_adapter():
        torch.testing.assert_close(base, fused(input_ids=ids).logits)
    fused.eval()
    merged_ref = fused(input_ids=ids).logits.detach()
    fused.merge_adapter()
    torch.testing.assert_close(fused(input_ids=ids).logits.detach(), merged_ref, rtol=1e-4, atol=1e-5)


def test_fused_under_checkpointing_equals_peft(device, same_masks):
    plain, fused = _pair(dora=True, p=0.1, bf16=False, device=device)
    for m in (plain, fused):
        m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        m.enable_input_require_grads()
    ids = torch.randint(0, 97, (2, 16), device=device)
    _, logits_p, g_p = _run(plain, ids, False)
    _, logits_f, g_f = _run(fused, ids, False)
    torch.testing.assert_close(logits_f, logits_p, rtol=1e-5, atol=1e-5)
    for name in g_p:
        torch.testing.assert_close(g_f[name], g_p[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("bf16", [False, pytest.param(True, marks=needs_bf16)])
def test_fused_dora_at_init_is_the_base_model(bf16, device):
    """B = 0 and m = ||W||: the adapted model is the base model to the last bit, as PEFT keeps it
    (m / n is exactly 1, and the base output is never rebuilt from a rounded base - bias)."""
    _, fused = _pair(dora=True, p=0.0, bf16=bf16, device=device)
    with torch.no_grad():
        for name, prm in fused.named_parameters():
            if "lora_B" in name:
                prm.zero_()
    ids = torch.randint(0, 97, (2, 24), device=device)
    with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16), lora_in_autocast(fused, bf16):
        adapted = fused(input_ids=ids).logits
        with fused.disable_adapter():
            base = fused(input_ids=ids).logits
    assert torch.equal(adapted, base)
