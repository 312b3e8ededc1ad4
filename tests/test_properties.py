"""Property-based checks of the mask rule over densities, shapes and scopes."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from supermask.nn import SupermaskLinear, attach_global_scope, kept_count, model_masks, topk_mask

densities = st.floats(min_value=1e-4, max_value=1.0, allow_nan=False, exclude_min=False)
shapes = st.lists(st.integers(min_value=1, max_value=40), min_size=2, max_size=2)


@settings(max_examples=60, deadline=None)
@given(density=densities, n=st.integers(min_value=1, max_value=5000), seed=st.integers(0, 2**31 - 1),
       ties=st.booleans())
def test_topk_keeps_exactly_k_and_is_binary(density, n, seed, ties):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=gen).abs()
    if ties:
        x = (x * 3).round()  # many equal values
    k = kept_count(n, density)
    mask = topk_mask(x, k)
    assert int(mask.sum()) == k
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    if k < n:
        assert x[mask.bool()].min() >= x[~mask.bool()].max()


@settings(max_examples=30, deadline=None)
@given(density=densities, layer_shapes=st.lists(shapes, min_size=1, max_size=3), scope=st.sampled_from(
    ["layerwise", "global"]), seed=st.integers(0, 2**31 - 1))
def test_layers_keep_exact_counts_and_pass_gradients(density, layer_shapes, scope, seed):
    torch.manual_seed(seed)
    layers = [SupermaskLinear(i, o, bias=False, density=density) for i, o in layer_shapes]
    model = torch.nn.ModuleList(layers)
    if scope == "global":
        attach_global_scope(model, density)
    total = 0
    for layer in layers:
        x = torch.randn(2, layer.in_features)
        layer(x).pow(2).sum().backward()
        assert layer.scores.grad is not None and layer.scores.grad.shape == layer.scores.shape
        total += layer.weight.numel()
    masks = model_masks(model)
    kept = {name: int(m.sum()) for name, m in masks.items()}
    if scope == "global":
        assert sum(kept.values()) == kept_count(total, density)
    else:
        for layer, (name, count) in zip(layers, kept.items()):
            assert count == kept_count(layer.weight.numel(), density)
    assert all(set(m.unique().tolist()) <= {0.0, 1.0} for m in masks.values())


@settings(max_examples=25, deadline=None)
@given(density=densities, convs=st.lists(st.tuples(st.integers(1, 8), st.integers(1, 8), st.sampled_from([1, 3, 5])),
                                         min_size=1, max_size=3),
       scope=st.sampled_from(["layerwise", "global"]), seed=st.integers(0, 2**31 - 1))
def test_conv_layers_keep_exact_counts_and_pass_gradients(density, convs, scope, seed):
    from supermask.nn import SupermaskConv2d

    torch.manual_seed(seed)
    layers = [SupermaskConv2d(c_in, c_out, k, padding=k // 2, bias=False, density=density)
              for c_in, c_out, k in convs]
    model = torch.nn.ModuleList(layers)
    if scope == "global":
        attach_global_scope(model, density)
    loss = sum(layer(torch.randn(2, layer.in_channels, 6, 6)).sum() for layer in layers)  # linear: no zero grads
    loss.backward()
    assert all(layer.scores.grad is not None and layer.scores.grad.abs().sum() > 0 for layer in layers)
    assert all(layer.weight.grad is None for layer in layers)
    masks = model_masks(model)
    counts = [int(m.sum()) for m in masks.values()]
    sizes = [layer.weight.numel() for layer in layers]
    if scope == "global":
        assert sum(counts) == kept_count(sum(sizes), density)
    else:
        assert counts == [kept_count(n, density) for n in sizes]
    assert all(bool(((m == 0) | (m == 1)).all()) for m in masks.values())
