"""FastDropout has nn.Dropout's contract; cached DoRA norms equal PEFT's and follow every update."""

from __future__ import annotations

import pytest
import torch
from conftest import needs_bf16
from torch import nn

from airoad.core.kernels.dora_cache import cache_dora_norms
from airoad.core.kernels.fast_dropout import FastDropout, keep_mask, use_fast_lora_dropout


@pytest.mark.parametrize("p", [0.05, 0.1, 0.5])
def test_keep_mask_drops_p_of_the_elements(p):
    torch.manual_seed(0)
    n = 3_000_001  # not a multiple of the 3 lanes per word
    mask, p_eff = keep_mask(n, p)
    assert mask.shape == (n,) and mask.dtype == torch.bool
    assert abs(p_eff - p) <= 0.5 / 65536
    # binomial std is <= 2.9e-4 here; 5 sigma
    assert abs(1.0 - mask.float().mean().item() - p_eff) < 1.5e-3
    # each lane of a word is its own draw: the 3 lanes drop at the same rate, uncorrelated
    lanes = (~mask[: n - n % 3]).view(-1, 3).float()
    rates = lanes.mean(0)
    assert torch.all((rates - p_eff).abs() < 3e-3), rates
    both = (lanes[:, 0] * lanes[:, 1]).mean().item()
    assert abs(both - p_eff**2) < 3e-3


def test_fast_dropout_contract():
    torch.manual_seed(0)
    x = torch.randn(64, 896, requires_grad=True)
    d = FastDropout(0.1).train()
    y = d(x)
    kept = y != 0
    p_eff = round(0.1 * 65536) / 65536
    torch.testing.assert_close(y[kept], x[kept] / (1 - p_eff))
    assert 0.05 < 1 - kept.float().mean().item() < 0.15
    y.sum().backward()
    torch.testing.assert_close(x.grad, kept.float() / (1 - p_eff))  # d(sum)/dx = mask * scale
    assert d.eval()(x) is x and FastDropout(0.0).train()(x) is x
    # seeded like torch's own dropout: same seed, same mask
    torch.manual_seed(3)
    a = d.train()(x)
    torch.manual_seed(3)
    b = d(x)
    assert torch.equal(a, b)
    with pytest.raises(ValueError):
        FastDropout(1.0)


def test_every_lora_dropout_is_swapped(tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    cfg = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.1, target_modules=["q_proj", "v_proj", "down_proj"])
    pm = get_peft_model(model, cfg)
    before = sum(type(m) is nn.Dropout for m in pm.modules())
    assert before > 0 and use_fast_lora_dropout(pm) == before
    assert sum(type(m) is nn.Dropout for m in pm.modules()) == 0
    assert all(m.p == 0.1 for m in pm.modules() if isinstance(m, FastDropout))


def _dora_model(tiny_model_dir, device="cpu"):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).to(device)
    cfg = LoraConfig(
        r=4, lora_alpha=8, lora_dropout=0.0, use_dora=True, target_modules=["q_proj", "down_proj"]
    )
    pm = get_peft_model(model, cfg)
    for n, p in pm.named_parameters():  # B = 0 at init would make every norm ||W||
        if "lora_B" in n:
            nn.init.normal_(p, std=0.05)
    return pm


def test_cached_dora_norms_equal_peft_and_follow_optimizer_steps(tiny_model_dir, monkeypatch, device):
    from peft.tuners.lora.dora import DoraLinearLayer

    from airoad.core.kernels import dora_cache

    ids = torch.randint(0, 100, (2, 12), device=device)
    plain, cached = _dora_model(tiny_model_dir, device), _dora_model(tiny_model_dir, device)
    assert cache_dora_norms(cached) == sum(type(m) is DoraLinearLayer for m in cached.modules()) > 0
    calls = {"n": 0}
    original = dora_cache.dora_row_norm

    def counting(*a, **kw):
        calls["n"] += 1
        return original(*a, **kw)

    monkeypatch.setattr(dora_cache, "dora_row_norm", counting)
    # fused: the HF Trainer's default, and it does not bump parameters' version counters
    opts = [
        torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2, fused=True)
        for m in (plain, cached)
    ]
    n_layers = sum(type(m) is DoraLinearLayer for m in cached.modules())
    for step in range(3):
        for model, opt in zip((plain, cached), opts, strict=True):
            calls["n"] = 0
            for _ in range(2):  # two micro-batches per optimizer step
                model(input_ids=ids, labels=ids).loss.backward()
            # the cached model computes each norm once per step (PEFT: every forward, its own way)
            assert calls["n"] == (n_layers if model is cached else 0), (step, calls)
            opt.step()
            opt.zero_grad()
        for a, b in zip(plain.parameters(), cached.parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=str(step))  # the same training
    with torch.no_grad():  # a direct load (copy_) invalidates too
        for n, p in cached.named_parameters():
            if "lora_A" in n:
                p.copy_(torch.randn_like(p))
        plain.load_state_dict(cached.state_dict())
        torch.testing.assert_close(
            cached(input_ids=ids).logits, plain(input_ids=ids).logits, rtol=1e-5, atol=1e-6
        )


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dora_row_norm_equals_the_norm_of_the_sum(dtype, device):
    from airoad.core.kernels.dora_cache import dora_row_norm

    torch.manual_seed(0)
    w = torch.randn(48, 40).to(device, dtype)
    a, b = (torch.randn(4, 40) * 0.3).to(device), (torch.randn(48, 4) * 0.3).to(device)
    owner = torch.nn.Module()
    exact = torch.linalg.norm(w.double() + 1.5 * (b.double() @ a.double()), dim=1)
    got = dora_row_norm(owner, w, a, b, 1.5)
    assert got.dtype == dtype and got.shape == (48,)
    # bf16: two roundings to bf16 (2^-9 relative each): ||W_i|| as PEFT's (so that m / n = 1 at
    # init, below) and the result, as PEFT's
    tol = 1e-6 if dtype == torch.float32 else 2**-7
    torch.testing.assert_close(got.double(), exact, rtol=tol, atol=0)
    # B = 0: exactly PEFT's norm (its magnitude's initial value), row for row; summing the squares in
    # another order than torch.linalg.norm rounds a few of 200,000 rows to the neighbouring bf16
    big = (torch.randn(200_000, 64) * 0.05).to(device, dtype)
    zero_b = torch.zeros(200_000, 4, device=device)
    assert torch.equal(
        dora_row_norm(torch.nn.Module(), big, torch.randn(4, 64, device=device), zero_b, 1.5),
        torch.linalg.norm(big, dim=1),
    )
    # rows where s B A nearly cancels W: computed directly, not from the expanded square
    b2 = b.clone()
    b2[3] = 0
    a2 = a.clone()
    a2[0] = w[3].float()
    b2[3, 0] = -1 / 1.5 + 1e-4
    exact2 = torch.linalg.norm(w.double() + 1.5 * (b2.double() @ a2.double()), dim=1)
    got2 = dora_row_norm(owner, w, a2, b2, 1.5)
    assert exact2[3] < 1e-2 * torch.linalg.norm(w[3].double())
    torch.testing.assert_close(got2.double(), exact2, rtol=tol if dtype == torch.float32 else 2e-2, atol=1e-6)


def _lora_step(model_dir, uncast: bool, dropout: float, device: str = "cpu"):
    """(loss, {name: grad}, saved-for-backward bytes) of one bf16-autocast forward/backward."""
    from transformers import AutoModelForCausalLM

    from airoad.core.base.runkeys import RunKeys
    from airoad.core.model.adapters import lora_in_autocast, wrap_with_adapters

    torch.manual_seed(0)
    cfg = RunKeys(lora_r=8, lora_dropout=dropout, lora_target_mode="attn_mlp")
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).to(device)
    model = wrap_with_adapters(base, cfg).train()
    for mod in model.modules():  # PEFT's own forward: the path lora_in_autocast is for
        if mod.__dict__.pop("airoad_swiglu", None) is not None:
            del mod.forward
    for name, p in model.named_parameters():  # non-zero B: every LoRA path carries a gradient
        if "lora_B" in name:
            p.data.normal_(0, 0.02)
    ids = torch.arange(3, 40, device=device).view(1, -1)
    saved = {}

    def pack(t):
        saved[(t.untyped_storage().data_ptr(), t.dtype)] = t.untyped_storage().nbytes()
        return t

    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    torch.manual_seed(1)  # the same dropout masks on both sides
    with lora_in_autocast(model, uncast), torch.autocast(device, dtype=torch.bfloat16):
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            # the decoder only: the vocabulary-wide logits would dwarf the layers' activations
            hidden = model.base_model.model.model(input_ids=ids).last_hidden_state
    loss = hidden.float().pow(2).mean()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    assert all(p.dtype == torch.float32 for n, p in model.named_parameters() if p.requires_grad)
    activations = sum(b for (ptr, _), b in saved.items() if ptr not in params)
    return loss.detach(), grads, activations


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_lora_inputs_kept_in_autocast_dtype_give_the_same_loss_and_grads_with_less_saved(
    tiny_model_dir, dropout, device
):
    # PEFT casts each bf16 input to the fp32 adapter weights and autocast casts it back: lossless,
    # so skipping both casts must change no value, only what backward keeps.
    loss_cast, grads_cast, saved_cast = _lora_step(tiny_model_dir, False, dropout, device)
    loss, grads, saved = _lora_step(tiny_model_dir, True, dropout, device)
    assert torch.equal(loss, loss_cast)
    assert grads.keys() == grads_cast.keys() and len(grads) > 0
    for name in grads:
        torch.testing.assert_close(grads[name], grads_cast[name], rtol=0, atol=0, msg=name)
    # without dropout q/k/v (and gate/up) now save one shared input instead of a copy each;
    # with dropout each module saves its own dropped input either way
    assert saved < 0.9 * saved_cast if dropout == 0 else saved <= saved_cast, (saved, saved_cast)


def _decoder_step(model_dir, lean: bool, dtype: torch.dtype, device: str = "cpu"):
    """(hidden, {name: grad}, saved-for-backward bytes) of one LoRA forward/backward of the decoder."""
    from transformers import AutoModelForCausalLM

    from airoad.core.kernels.lean_layers import use_lean_layers

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device).train()
    for name, p in model.named_parameters():  # frozen embeddings; the layers (norms included) train
        p.requires_grad_("layers" in name or name.endswith("model.norm.weight"))
    if lean:
        n_mlp, n_norm = use_lean_layers(model)
        layers = model.config.num_hidden_layers
        assert (n_mlp, n_norm) == (layers, 2 * layers + 1)
    ids = torch.arange(3, 40, device=device).view(1, -1)
    saved = {}
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}

    def pack(t):
        if t.untyped_storage().data_ptr() not in params:
            saved[(t.untyped_storage().data_ptr(), t.dtype)] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        hidden = model.model(input_ids=ids).last_hidden_state
    (hidden.float() * torch.linspace(-1, 1, hidden.shape[-1], device=device)).sum().backward()
    grads = {n: p.grad.float() for n, p in model.named_parameters() if p.grad is not None}
    return hidden.detach().float(), grads, sum(saved.values())


@pytest.mark.parametrize(
    "dtype", [torch.float32, pytest.param(torch.bfloat16, marks=needs_bf16)], ids=["fp32", "bf16"]
)
def test_lean_mlp_and_norm_equal_the_plain_modules_in_values_and_gradients(tiny_model_dir, dtype, device):
    hidden_plain, grads_plain, saved_plain = _decoder_step(tiny_model_dir, False, dtype, device)
    hidden, grads, saved = _decoder_step(tiny_model_dir, True, dtype, device)
    assert torch.equal(hidden, hidden_plain)  # the forward is the same arithmetic
    assert grads.keys() == grads_plain.keys() and any("norm" in n for n in grads)
    if dtype == torch.float32:
        for name, g in grads_plain.items():
            torch.testing.assert_close(
                grads[name], g, rtol=1e-4, atol=1e-5, msg=lambda m, n=name: f"{n}: {m}"
            )
    else:  # bf16 rounds differently in each order: both must be as close to the fp32 gradient
        _, exact, _ = _decoder_step(tiny_model_dir, False, torch.float32, device)
        for name, ref in exact.items():
            err, err_plain = ((g[name] - ref).norm() / ref.norm() for g in (grads, grads_plain))
            assert err <= 1.5 * err_plain + 2e-3, (name, err, err_plain)
    assert saved < 0.85 * saved_plain, (saved, saved_plain)


def test_onednn_cache_is_bounded_unless_the_user_set_it(monkeypatch, tiny_model_dir):
    import os

    from airoad.core.model import onednn
    from airoad.core.model.loading import load_causal_lm

    monkeypatch.delenv(onednn.ENV, raising=False)
    load_causal_lm(str(tiny_model_dir), torch.float32)  # every command loads its model here
    assert os.environ[onednn.ENV] == str(onednn.CAPACITY)
    monkeypatch.setenv(onednn.ENV, "512")
    load_causal_lm(str(tiny_model_dir), torch.float32)
    assert os.environ[onednn.ENV] == "512"
