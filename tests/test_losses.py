"""Chunked head losses equal the unchunked autograd reference (values and gradients); KL(p||p) = 0."""

from __future__ import annotations

import pytest
import torch

from airoad.core.kernels.head_loss import DenseTeacher, TopKTeacher, head_loss, head_losses_reference


def setup(n=37, h=16, v=101, seed=0, bias=False):
    g = torch.Generator().manual_seed(seed)
    head = torch.nn.Linear(h, v, bias=bias).double()
    with torch.no_grad():
        head.weight.copy_(torch.randn(v, h, generator=g, dtype=torch.float64))
        if bias:
            head.bias.copy_(torch.randn(v, generator=g, dtype=torch.float64))
    head.requires_grad_(False)
    hidden = torch.randn(n, h, generator=g, dtype=torch.float64, requires_grad=True)
    teacher_h = torch.randn(n, h, generator=g, dtype=torch.float64)
    targets = torch.randint(0, v, (n,), generator=g)
    return head, hidden, teacher_h, targets


@pytest.mark.parametrize("chunk", [1, 5, 37, 1000])
@pytest.mark.parametrize("tau", [1.0, 2.0])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("w", [0.0, 0.4, 3.0])
def test_chunked_equals_reference_values_and_grads(chunk, tau, bias, w):
    head, hidden, th, tgt = setup(bias=bias)
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


def test_ce_matches_torch_cross_entropy_and_grad_only_ce():
    head, hidden, _, tgt = setup()
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


def test_kl_of_identical_distributions_is_zero_with_zero_grad():
    head, hidden, _, tgt = setup()
    teacher = DenseTeacher(hidden.detach(), head, 1.5)
    total, ce, kl = head_loss(hidden, head, tgt, teacher, 1.5, 7, kl_weight=2.0)
    assert abs(float(kl)) < 1e-5
    total.backward()
    g = hidden.grad.clone()
    hidden.grad = None
    head_loss(hidden, head, tgt, None, 1.5, 7)[0].backward()
    torch.testing.assert_close(g, hidden.grad, rtol=1e-5, atol=1e-6)  # the KL term adds no gradient


def test_kl_positive_for_different_distributions():
    head, hidden, th, tgt = setup()
    _, _, kl = head_loss(hidden, head, tgt, DenseTeacher(th, head, 1.0), 1.0, 4)
    assert float(kl) > 0.1


def test_trainable_head_falls_back_to_autograd():
    head, hidden, th, tgt = setup()
    head.requires_grad_(True)
    total, _, _ = head_loss(hidden, head, tgt, DenseTeacher(th, head, 1.0), 1.0, 4)
    total.backward()
    assert head.weight.grad is not None


def test_empty_selection_is_zero_and_differentiable():
    head, hidden, _, _ = setup(n=0)
    total, ce, kl = head_loss(hidden, head, torch.zeros(0, dtype=torch.long))
    total.backward()
    assert float(total.detach()) == 0.0 and float(ce) == 0.0 and float(kl) == 0.0


def topk_from(head, th, tau, k):
    logp = torch.log_softmax(head(th).float() / tau, dim=-1)
    vals, idx = logp.topk(k, dim=-1)
    return TopKTeacher(idx, vals), DenseTeacher(th, head, tau)


@pytest.mark.parametrize("chunk", [3, 64])
@pytest.mark.parametrize("tau", [1.0, 1.3])
def test_topk_teacher_fused_equals_reference(chunk, tau):
    head, hidden, th, tgt = setup()
    topk, _ = topk_from(head, th, tau, 10)
    _, _, kl = head_loss(hidden, head, tgt, topk, tau, chunk, kl_weight=2.0)
    head_loss(hidden, head, tgt, topk, tau, chunk, kl_weight=2.0)[0].backward()
    g = hidden.grad.clone()
    hidden.grad = None
    ce_r, kl_r = head_losses_reference(hidden, head, tgt, topk, tau)
    (ce_r + 2.0 * kl_r).backward()
    torch.testing.assert_close(kl, kl_r.float(), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(g, hidden.grad, rtol=1e-4, atol=1e-5)


def test_topk_kl_is_a_lower_bound_that_reaches_exact_at_full_vocab():
    head, hidden, th, tgt = setup()
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
def test_kl_only_positions_equal_reference_kl_and_ignore_targets(tau, chunk):
    """ce_weight 0 (anchor positions): the loss and its gradient are w * KL alone, whatever the targets."""
    head, hidden, th, tgt = setup()
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


def test_kl_only_with_the_teacher_itself_has_zero_loss_and_gradient():
    head, hidden, _, tgt = setup()
    teacher = DenseTeacher(hidden.detach().clone(), head, 1.0)
    total, _, kl = head_loss(hidden, head, tgt, teacher, 1.0, 8, kl_weight=2.0, ce_weight=0.0)
    total.backward()
    assert abs(float(kl)) < 1e-6
    assert float(hidden.grad.abs().max()) < 1e-6


def test_teacher_rows_pick_the_same_positions():
    head, hidden, th, tgt = setup()
    sel = torch.arange(37) % 3 == 0
    for teacher in (
        DenseTeacher(th, head, 1.0),
        TopKTeacher(torch.randint(0, 101, (37, 4)), -torch.rand(37, 4) - 2),
    ):
        full = head_loss(hidden.detach(), head, tgt, teacher, 1.0, 5)[2]
        part = head_loss(hidden.detach()[sel], head, tgt[sel], teacher.rows(sel), 1.0, 5)[2]
        rest = head_loss(hidden.detach()[~sel], head, tgt[~sel], teacher.rows(~sel), 1.0, 5)[2]
        torch.testing.assert_close(part + rest, full, rtol=1e-5, atol=1e-4)


def test_ce_weight_other_than_0_or_1_is_refused():
    head, hidden, _, tgt = setup()
    with pytest.raises(ValueError):
        head_loss(hidden, head, tgt, None, 1.0, 8, ce_weight=0.5)
