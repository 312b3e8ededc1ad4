import pytest
import torch
from torch import nn

import supermask.nn.layers as layers_mod
from supermask.nn import (SupermaskConv2d, SupermaskLinear, attach_global_scope, density_report, init_model,
                          kept_count, model_masks)


def test_density_one_equals_plain_layers_exactly():
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=True)
    sm = SupermaskConv2d.from_dense(conv, density=1.0)
    x = torch.randn(4, 3, 10, 10)
    assert torch.equal(sm(x), conv(x))
    lin = nn.Linear(20, 7)
    sl = SupermaskLinear.from_dense(lin, density=1.0)
    y = torch.randn(5, 20)
    assert torch.equal(sl(y), lin(y))


def test_forward_uses_weight_times_topk_mask():
    layer = SupermaskLinear(50, 40, bias=False, density=0.3)
    mask = layer.mask()
    assert mask.sum().item() == kept_count(2000, 0.3)
    x = torch.randn(3, 50)
    assert torch.allclose(layer(x), x @ (layer.weight * mask).t())


def test_gradient_reaches_scores_and_not_weights():
    layer = SupermaskConv2d(3, 4, 3, density=0.5)
    layer(torch.randn(2, 3, 8, 8)).pow(2).sum().backward()
    assert layer.weight.grad is None and not layer.weight.requires_grad
    assert layer.scores.grad is not None and layer.scores.grad.abs().sum() > 0
    # pruned edges get gradient too: the straight-through estimator lets them come back
    pruned = ~layer.mask().bool()
    assert layer.scores.grad[pruned].abs().sum() > 0


def test_eval_mask_computed_once_until_scores_change(monkeypatch):
    calls = []
    real = layers_mod.topk_mask
    monkeypatch.setattr(layers_mod, "topk_mask", lambda *a: calls.append(1) or real(*a))
    layer = SupermaskLinear(10, 10, density=0.5).eval()
    x = torch.randn(2, 10)
    with torch.no_grad():
        first = layer(x)
        layer(x)
        layer(x)
    assert len(calls) == 1
    with torch.no_grad():
        layer.scores.mul_(-1).add_(torch.randn_like(layer.scores))
        second = layer(x)
    assert len(calls) == 2
    assert not torch.equal(first, second)


def _mlp(density=0.5):
    return nn.Sequential(SupermaskLinear(30, 200, density=density), nn.ReLU(),
                         SupermaskLinear(200, 50, density=density), nn.ReLU(), SupermaskLinear(50, 10, density=density))


def test_global_scope_keeps_exact_total_and_layers_differ():
    model = _mlp()
    with torch.no_grad():
        model[0].scores.mul_(10)  # the first layer's scores dominate
    attach_global_scope(model, 0.2)
    model(torch.randn(2, 30))
    masks = model_masks(model)
    total = sum(m.numel() for m in masks.values())
    assert sum(int(m.sum()) for m in masks.values()) == kept_count(total, 0.2)
    overall, per_layer = density_report(masks)
    assert per_layer["0.weight"] > 0.2 > per_layer["2.weight"]


def test_global_threshold_computed_once_per_step(monkeypatch):
    calls = []
    real = layers_mod.global_threshold
    monkeypatch.setattr(layers_mod, "global_threshold", lambda *a: calls.append(1) or real(*a))
    model = _mlp()
    attach_global_scope(model, 0.3)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.train()
    x = torch.randn(4, 30)
    model(x).sum().backward()
    assert len(calls) == 1  # three layers, one threshold
    opt.step()
    model(x).sum().backward()  # the scores changed: one new threshold
    assert len(calls) == 2
    model.eval()
    with torch.no_grad():
        first = model(x)
        assert torch.equal(model(x), first)
    assert len(calls) == 2  # eval: nothing changed, nothing recomputed


def test_global_scope_layers_can_run_and_backpropagate_one_at_a_time():
    layers = nn.ModuleList([SupermaskLinear(5, 5, density=0.4), SupermaskLinear(5, 5, density=0.4)])
    attach_global_scope(layers, 0.4)
    for layer in layers:
        layer(torch.randn(2, 5)).sum().backward()
        assert layer.scores.grad is not None


def test_global_scope_trains_scores_of_all_layers():
    model = _mlp()
    attach_global_scope(model, 0.3)
    model(torch.randn(4, 30)).pow(2).sum().backward()
    for layer in (model[0], model[2], model[4]):
        assert layer.scores.grad is not None and layer.scores.grad.abs().sum() > 0


def test_same_seed_gives_bit_identical_masks_and_weights():
    def build(seed):
        return init_model(_mlp(0.4), "signed-constant", seed)

    a, b, c = build(3), build(3), build(4)
    for (ka, ma), (kb, mb) in zip(model_masks(a).items(), model_masks(b).items()):
        assert ka == kb and torch.equal(ma, mb)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a[0].weight, c[0].weight)


def test_density_is_validated():
    from supermask.errors import SupermaskError

    with pytest.raises(SupermaskError):
        SupermaskLinear(3, 3, density=0.0)


@pytest.mark.parametrize("scope", ["layerwise", "global"])
def test_eval_reuses_the_masked_weight_until_scores_or_weights_change(scope):
    model = nn.Sequential(SupermaskLinear(20, 30, density=0.4), nn.ReLU(), SupermaskLinear(30, 5, density=0.4))
    if scope == "global":
        attach_global_scope(model, 0.4)
    x = torch.randn(8, 20)
    model.eval()
    with torch.no_grad():  # as in evaluation
        first = model[0].masked_weight()
        assert model[0].masked_weight() is first  # cached
        out = model(x)
        model[0].scores.mul_(-3).add_(torch.randn_like(model[0].scores))  # a new mask
        changed = model[0].masked_weight()
        assert changed is not first and torch.equal(changed, model[0].weight * model[0].mask())
        model.load_state_dict({k: v * 2 if k == "2.weight" else v for k, v in model.state_dict().items()})
        assert torch.equal(model[2].masked_weight(), model[2].weight * model[2].mask())
        assert not torch.allclose(model(x), out)
    assert model[0].masked_weight().requires_grad  # with grad enabled: built fresh on the straight-through graph
    model.train()
    assert model[0].masked_weight() is not model[0].masked_weight()
