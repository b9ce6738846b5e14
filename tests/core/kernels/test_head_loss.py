"""Chunked head losses equal the unchunked autograd reference (values and gradients); KL(p||p) = 0."""

from __future__ import annotations

import copy

import pytest
import torch

from airoad.core.kernels.head_loss import DenseTeacher, TopKTeacher, head_loss, head_losses_reference


def setup(n=37, h=16, v=101, seed=0, bias=False, device="cpu"):
    """(head, hidden, teacher hidden, targets) in float64 on ``device`` (drawn on the CPU: the same
    numbers on every device)."""
    g = torch.Generator().manual_seed(seed)
    head = torch.nn.Linear(h, v, bias=bias).double()
    with torch.no_grad():
        head.weight.copy_(torch.randn(v, h, generator=g, dtype=torch.float64))
        if bias:
            head.bias.copy_(torch.randn(v, generator=g, dtype=torch.float64))
    head.requires_grad_(False)
    hidden = torch.randn(n, h, generator=g, dtype=torch.float64).to(device).requires_grad_()
    teacher_h = torch.randn(n, h, generator=g, dtype=torch.float64).to(device)
    targets = torch.randint(0, v, (n,), generator=g).to(device)
    return head.to(device), hidden, teacher_h, targets


@pytest.mark.parametrize("chunk", [1, 5, 37, 1000])
@pytest.mark.parametrize("tau", [1.0, 2.0])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("w", [0.0, 0.4, 3.0])
def test_chunked_equals_reference_values_and_grads(chunk, tau, bias, w, device):
    head, hidden, th, tgt = setup(bias=bias, device=device)
    teacher = DenseTeacher(th, head, tau)
    total, ce, kl = head_loss(hidden, head, tgt, teacher, tau, chunk, kl_weight=w)
    assert not ce.requires_grad and not kl.requires_grad
    (0.7 * total).backward()
    g_fused = hidden.grad.clone()
    hidden.grad = None
    ce_r, kl_r = head_losses_reference(hidden, head, tgt, teacher, tau)
    (0.7 * (ce_r + w * kl_r)).backward()
    # losses are computed in fp32 inside both paths: fp32 tolerance
    torch.testing.assert_close(ce, ce_r.float(), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(kl, kl_r.float(), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(total, (ce_r + w * kl_r).float(), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(g_fused, hidden.grad, rtol=1e-4, atol=1e-5)


def test_ce_matches_torch_cross_entropy_and_grad_only_ce(device):
    head, hidden, _, tgt = setup(device=device)
    total, ce, kl = head_loss(hidden, head, tgt, None, 1.0, 8, kl_weight=5.0)
    logits = head(hidden).float()
    ref = torch.nn.functional.cross_entropy(logits, tgt, reduction="sum")
    torch.testing.assert_close(ce, ref, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(total, ref, rtol=1e-5, atol=1e-4)
    assert float(kl) == 0.0
    total.backward()
    # d CE / d hidden = (softmax - onehot) @ W
    p = torch.softmax(logits.double(), -1)
    p[torch.arange(len(tgt)), tgt] -= 1.0
    torch.testing.assert_close(hidden.grad, p @ head.weight, rtol=1e-4, atol=1e-5)


def test_kl_of_identical_distributions_is_zero_with_zero_grad(device):
    head, hidden, _, tgt = setup(device=device)
    teacher = DenseTeacher(hidden.detach(), head, 1.5)
    total, ce, kl = head_loss(hidden, head, tgt, teacher, 1.5, 7, kl_weight=2.0)
    assert abs(float(kl)) < 1e-5
    total.backward()
    g = hidden.grad.clone()
    hidden.grad = None
    head_loss(hidden, head, tgt, None, 1.5, 7)[0].backward()
    torch.testing.assert_close(g, hidden.grad, rtol=1e-5, atol=1e-6)  # the KL term adds no gradient


def test_kl_positive_for_different_distributions(device):
    head, hidden, th, tgt = setup(device=device)
    _, _, kl = head_loss(hidden, head, tgt, DenseTeacher(th, head, 1.0), 1.0, 4)
    assert float(kl) > 0.1


def test_trainable_head_falls_back_to_autograd(device):
    head, hidden, th, tgt = setup(device=device)
    head.requires_grad_(True)
    total, _, _ = head_loss(hidden, head, tgt, DenseTeacher(th, head, 1.0), 1.0, 4)
    total.backward()
    assert head.weight.grad is not None


def test_empty_selection_is_zero_and_differentiable(device):
    head, hidden, _, _ = setup(n=0, device=device)
    total, ce, kl = head_loss(hidden, head, torch.zeros(0, dtype=torch.long, device=device))
    total.backward()
    assert float(total.detach()) == 0.0 and float(ce) == 0.0 and float(kl) == 0.0


def topk_from(head, th, tau, k):
    logp = torch.log_softmax(head(th).float() / tau, dim=-1)
    vals, idx = logp.topk(k, dim=-1)
    return TopKTeacher(idx, vals), DenseTeacher(th, head, tau)


@pytest.mark.parametrize("chunk", [3, 64])
@pytest.mark.parametrize("tau", [1.0, 1.3])
def test_topk_teacher_fused_equals_reference(chunk, tau, device):
    head, hidden, th, tgt = setup(device=device)
    topk, _ = topk_from(head, th, tau, 10)
    _, _, kl = head_loss(hidden, head, tgt, topk, tau, chunk, kl_weight=2.0)
    head_loss(hidden, head, tgt, topk, tau, chunk, kl_weight=2.0)[0].backward()
    g = hidden.grad.clone()
    hidden.grad = None
    ce_r, kl_r = head_losses_reference(hidden, head, tgt, topk, tau)
    (ce_r + 2.0 * kl_r).backward()
    torch.testing.assert_close(kl, kl_r.float(), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(g, hidden.grad, rtol=1e-4, atol=1e-5)


def test_topk_kl_is_a_lower_bound_that_reaches_exact_at_full_vocab(device):
    head, hidden, th, tgt = setup(device=device)
    with torch.no_grad():
        exact = head_losses_reference(hidden, head, tgt, DenseTeacher(th, head, 1.0), 1.0)[1]
        errors = []
        for k in (1, 5, 20, 60, 101):
            topk, _ = topk_from(head, th, 1.0, k)
            approx = head_losses_reference(hidden, head, tgt, topk, 1.0)[1]
            # relative: the KL is ~300 here, where one fp32 ulp is already ~3e-5
            assert approx <= exact * (1 + 1e-6)
            errors.append(float(exact - approx))
    assert errors[:-1] == sorted(errors[:-1], reverse=True)  # more buckets, closer to exact
    assert abs(errors[-1]) <= 1e-6 * float(exact)  # k = V: exact, to fp32 rounding


@pytest.mark.parametrize("tau", [1.0, 2.0])
@pytest.mark.parametrize("chunk", [3, 1000])
def test_kl_only_positions_equal_reference_kl_and_ignore_targets(tau, chunk, device):
    """ce_weight 0 (anchor positions): the loss and its gradient are w * KL alone, whatever the targets."""
    head, hidden, th, tgt = setup(device=device)
    teacher = DenseTeacher(th, head, tau)
    total, ce, kl = head_loss(hidden, head, tgt, teacher, tau, chunk, kl_weight=0.6, ce_weight=0.0)
    total.backward()
    g_fused = hidden.grad.clone()
    hidden.grad = None
    ce_r, kl_r = head_losses_reference(hidden, head, tgt, teacher, tau)
    (0.6 * kl_r).backward()
    torch.testing.assert_close(total, (0.6 * kl_r).float(), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(ce, ce_r.float(), rtol=1e-5, atol=1e-4)  # still reported, for logs
    torch.testing.assert_close(g_fused, hidden.grad, rtol=1e-4, atol=1e-5)
    other = head_loss(hidden.detach(), head, (tgt + 1) % 101, teacher, tau, chunk, 0.6, ce_weight=0.0)
    torch.testing.assert_close(other[0], total.detach())


def test_kl_only_with_the_teacher_itself_has_zero_loss_and_gradient(device):
    head, hidden, _, tgt = setup(device=device)
    teacher = DenseTeacher(hidden.detach().clone(), head, 1.0)
    total, _, kl = head_loss(hidden, head, tgt, teacher, 1.0, 8, kl_weight=2.0, ce_weight=0.0)
    total.backward()
    assert abs(float(kl)) < 1e-6
    assert float(hidden.grad.abs().max()) < 1e-6


def test_teacher_rows_pick_the_same_positions(device):
    head, hidden, th, tgt = setup(device=device)
    sel = torch.arange(37, device=device) % 3 == 0
    for teacher in (
        DenseTeacher(th, head, 1.0),
        TopKTeacher(torch.randint(0, 101, (37, 4), device=device), -torch.rand(37, 4, device=device) - 2),
    ):
        full = head_loss(hidden.detach(), head, tgt, teacher, 1.0, 5)[2]
        part = head_loss(hidden.detach()[sel], head, tgt[sel], teacher.rows(sel), 1.0, 5)[2]
        rest = head_loss(hidden.detach()[~sel], head, tgt[~sel], teacher.rows(~sel), 1.0, 5)[2]
        torch.testing.assert_close(part + rest, full, rtol=1e-5, atol=1e-4)


def test_ce_weight_other_than_0_or_1_is_refused(device):
    head, hidden, _, tgt = setup(device=device)
    with pytest.raises(ValueError):
        head_loss(hidden, head, tgt, None, 1.0, 8, ce_weight=0.5)


@pytest.mark.parametrize("tau,w", [(1.0, 0.0), (2.0, 0.5)])
def test_chunked_bf16_is_as_close_to_exact_as_the_plain_bf16_loss(tau, w, device):
    """bf16 head and hidden states (training on a GPU): the chunked loss rounds in other places than
    the plain autograd loss (other GEMM shapes; its gradient through the head as one bf16 product per
    chunk), so bit equality is not the contract: held against the float64 truth, its value and its
    gradient are as close as the plain path's."""
    head64, hidden64, th64, tgt = setup(n=300, h=64, v=1000, device=device)
    head16 = copy.deepcopy(head64).to(torch.bfloat16)
    hidden16, th16 = hidden64.detach().bfloat16(), th64.bfloat16()

    def run(head, hidden, th, fused):
        hidden = hidden.detach().clone().requires_grad_()
        teacher = DenseTeacher(th, head, tau) if w else None
        if fused:
            total = head_loss(hidden, head, tgt, teacher, tau, 64, kl_weight=w)[0]
        else:
            ce, kl = head_losses_reference(hidden, head, tgt, teacher, tau)
            total = ce + w * kl
        total.backward()
        return float(total.detach()), hidden.grad.double()

    # the truth: float64 arithmetic on the same bf16 numbers
    exact, g_exact = run(copy.deepcopy(head16).double(), hidden16.double(), th16.double(), fused=False)
    fused, g_fused = run(head16, hidden16, th16, fused=True)
    plain, g_plain = run(head16, hidden16, th16, fused=False)
    assert abs(fused - exact) <= 1.25 * abs(plain - exact) + 1e-4 * abs(exact), (fused, plain, exact)
    err_f, err_p = (float((g - g_exact).norm() / g_exact.norm()) for g in (g_fused, g_plain))
    assert err_f <= 1.25 * err_p + 1e-3, (err_f, err_p)
