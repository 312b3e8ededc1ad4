
import pytest
import torch

from supermask.errors import SupermaskError
from supermask.nn import global_topk_masks, kept_count, straight_through_topk, topk_mask


@pytest.mark.parametrize("n,density,expected", [(10, 0.5, 5), (5, 0.5, 3), (3, 0.5, 2), (1000, 0.001, 1),
                                                 (1000, 0.0001, 1), (7, 1.0, 7), (9, 0.25, 2), (10, 0.25, 3)])
def test_kept_count_rounds_half_up_and_never_zero(n, density, expected):
    assert kept_count(n, density) == expected


@pytest.mark.parametrize("density", [0.0, -0.1, 1.5, float("nan"), "x"])
def test_density_outside_unit_interval_is_refused(density):
    with pytest.raises(SupermaskError):
        kept_count(10, density)


@pytest.mark.parametrize("density", [0.01, 0.1, 0.33, 0.5, 0.9, 1.0])
def test_mask_keeps_exactly_k_largest(density):
    x = torch.randn(64, 32, 3, 3)
    k = kept_count(x.numel(), density)
    mask = topk_mask(x.abs(), k)
    assert mask.sum().item() == k
    kept, dropped = x.abs()[mask.bool()], x.abs()[~mask.bool()]
    if dropped.numel():
        assert kept.min() >= dropped.max()


def test_ties_go_to_lowest_flat_indices():
    x = torch.tensor([3.0, 1.0, 2.0, 2.0, 2.0, 0.5, 2.0])
    mask = topk_mask(x, 3)  # 3.0, then two of the four 2.0s: the first two
    assert mask.tolist() == [1, 0, 1, 1, 0, 0, 0]
    assert topk_mask(torch.zeros(5), 2).tolist() == [1, 1, 0, 0, 0]


def test_straight_through_gradient_is_identity():
    scores = torch.randn(100, requires_grad=True)
    mask = straight_through_topk(scores.abs(), 30)
    weights = torch.arange(100.0)
    (mask * weights).sum().backward()
    # d/dscores of sum(mask * w) under STE through abs = w * sign(scores)
    assert torch.equal(scores.grad, weights * scores.detach().sign())


def test_global_masks_keep_exact_total_with_uneven_layers():
    a = torch.randn(1000) * 10  # large magnitudes: this tensor keeps most
    b = torch.randn(3000)
    masks = global_topk_masks([a, b], 0.25)
    assert sum(m.sum().item() for m in masks) == kept_count(4000, 0.25)
    assert masks[0].mean() > 0.25 > masks[1].mean()


def test_global_masks_pass_gradients_to_every_input():
    a = torch.randn(20, requires_grad=True)
    b = torch.randn(30, requires_grad=True)
    masks = global_topk_masks([a.abs(), b.abs()], 0.5)
    (masks[0].sum() + 2 * masks[1].sum()).backward()
    assert torch.equal(a.grad, a.detach().sign())
    assert torch.equal(b.grad, 2 * b.detach().sign())


def test_selection_does_not_sort(monkeypatch):
    def no_sort(*args, **kwargs):
        raise AssertionError("topk_mask must not sort")

    monkeypatch.setattr(torch, "sort", no_sort)
    monkeypatch.setattr(torch.Tensor, "sort", no_sort)
    monkeypatch.setattr(torch, "argsort", no_sort)
    assert topk_mask(torch.randn(1000), 100).sum() == 100


def test_global_scope_ties_follow_an_independent_stable_argsort():
    """One threshold over several tensors: the kept entries are the first ``k`` of a stable
    descending sort of the concatenated magnitudes (ties: the lowest index in that order)."""
    from supermask.nn.topk import global_topk_masks, kept_count

    gen = torch.Generator().manual_seed(3)
    for _ in range(20):
        tensors = [torch.randint(0, 4, shape, generator=gen).float() for shape in ((5, 7), (11,), (2, 3, 4))]
        density = float(torch.rand(1, generator=gen)) * 0.9 + 0.05
        flat = torch.cat([t.reshape(-1) for t in tensors])
        k = kept_count(flat.numel(), density)
        order = torch.sort(flat, descending=True, stable=True).indices[:k]
        expected = torch.zeros_like(flat)
        expected[order] = 1
        got = torch.cat([m.reshape(-1) for m in global_topk_masks(tensors, density)])
        assert torch.equal(got, expected)
