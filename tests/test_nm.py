"""N:M masks: exactly N kept in every group of M along the input dimension, the N largest
|scores| (checked against a plain-Python selection), a straight-through gradient to every score,
and the search engine's config rules for them."""

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from supermask import SearchConfig
from supermask.cli import main
from supermask.errors import SupermaskError
from supermask.nn import SupermaskConv2d, SupermaskLinear
from supermask.resolved import resolve


def _reference_nm(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Per group of m consecutive entries along the last dimension (rows of the 2-D view): the n
    largest |s|, ties to the lower index."""
    flat = scores.abs().reshape(-1, scores.shape[-1]).tolist()
    mask = []
    for row in flat:
        kept = []
        for start in range(0, len(row), m):
            group = row[start:start + m]
            order = sorted(range(len(group)), key=lambda i: (-group[i], i))[:n]
            kept += [1.0 if i in order else 0.0 for i in range(len(group))]
        mask.append(kept)
    return torch.tensor(mask).view_as(scores)


nm_pairs = st.integers(2, 8).flatmap(lambda m: st.tuples(st.integers(1, m - 1), st.just(m)))


@settings(max_examples=60, deadline=None)
@given(nm=nm_pairs, rows=st.integers(1, 12), groups=st.integers(1, 10), seed=st.integers(0, 2**31 - 1),
       ties=st.booleans())
def test_nm_mask_keeps_exactly_n_of_every_m_and_the_largest(nm, rows, groups, seed, ties):
    n, m = nm
    layer = SupermaskLinear(groups * m, rows, bias=False, structure=f"nm:{n}:{m}")
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        scores = torch.randn(layer.scores.shape, generator=gen)
        layer.scores.copy_((scores * 2).round() if ties else scores)  # ties: many equal magnitudes
    mask = layer.mask()
    assert torch.equal(mask.view(rows, groups, m).sum(-1), torch.full((rows, groups), float(n)))
    assert torch.equal(mask, _reference_nm(layer.scores.detach(), n, m))
    assert layer.density == n / m


@settings(max_examples=20, deadline=None)
@given(nm=nm_pairs, out=st.integers(1, 6), kernel=st.sampled_from([1, 3]), seed=st.integers(0, 2**31 - 1))
def test_conv_groups_run_along_the_input_channels_at_each_kernel_position(nm, out, kernel, seed):
    """As NVIDIA's ASP: the weight seen as (out, kh, kw, in), groups of m input channels."""
    n, m = nm
    torch.manual_seed(seed)
    layer = SupermaskConv2d(2 * m, out, kernel, bias=False, structure=f"nm:{n}:{m}")
    mask = layer.mask()
    per_position = mask.permute(0, 2, 3, 1)  # (out, kh, kw, in)
    assert torch.equal(per_position.reshape(out, kernel, kernel, 2, m).sum(-1),
                       torch.full((out, kernel, kernel, 2), float(n)))
    expected = _reference_nm(layer.scores.detach().permute(0, 2, 3, 1), n, m).permute(0, 3, 1, 2)
    assert torch.equal(mask, expected)


def test_the_straight_through_gradient_reaches_every_score():
    torch.manual_seed(0)
    layer = SupermaskLinear(16, 8, bias=False, structure="nm:2:4")
    with torch.no_grad():
        layer.weight.copy_(torch.randn_like(layer.weight).sign())  # every weight non-zero
    x = torch.randn(32, 16)
    layer(x).pow(2).sum().backward()
    grad = layer.scores.grad
    # d loss / d mask, passed straight through the mask, then through |scores| (sign)
    expected = (2 * layer(x).detach()).T @ x * layer.weight * layer.scores.detach().sign()
    assert torch.allclose(grad, expected, atol=1e-4)
    assert (grad != 0).all()


def test_rows_that_do_not_split_into_groups_fall_back_to_unstructured_at_n_over_m(caplog):
    layer = SupermaskConv2d(1, 8, 3, bias=False, structure="nm:2:4")  # 1 input channel
    assert layer.nm is None and layer.density == 0.5 and "masked unstructured" in caplog.text
    assert int(layer.mask().sum()) == 36  # floor(0.5 * 72 + 0.5)


def _asp_skips(weight_shape) -> bool:
    """NVIDIA apex ``contrib/sparsity/asp.py`` ``init_model_for_pruning``: a whitelisted layer's weight
    ``p`` is auto-skipped when ``p.size()[0] % 8 != 0 or p.size()[1] % 16 != 0``."""
    return weight_shape[0] % 8 != 0 or weight_shape[1] % 16 != 0


def test_the_asp_rule_leaves_dense_the_weights_asp_skips_and_masks_the_others(tmp_path, capsys):
    from supermask.methods import METHODS
    from supermask.models import InputSpec

    config = resolve(SearchConfig(arch="conv4", width=0.5, structure="nm:2:4:asp"))
    assert config.structure == "nm:2:4:asp" and config.density == 0.5
    model = METHODS.get("edge-popup").build(config, InputSpec(1, 28, 10))
    layers = [m for m in model.modules() if hasattr(m, "scores")]
    skipped = [_asp_skips(m.weight.shape) for m in layers]
    assert any(skipped) and not all(skipped)  # conv4 x0.5 on MNIST: the first conv (1 input) and the classifier
    for layer, skip in zip(layers, skipped):
        mask = layer.mask()
        if skip:
            assert torch.equal(mask, torch.ones_like(mask)), layer
        else:
            groups = (mask.permute(0, 2, 3, 1) if mask.dim() == 4 else mask).reshape(-1, 4)
            assert torch.equal(groups.sum(1), torch.full((groups.shape[0],), 2.0)), layer
    plain = resolve(SearchConfig(arch="conv4", width=0.5, structure="nm:2:4"))  # every groupable layer masked
    plain_model = METHODS.get("edge-popup").build(plain, InputSpec(1, 28, 10))
    assert all(m.mask().mean() < 1 for m in plain_model.modules() if hasattr(m, "scores"))
    # IMP: LeNet's three layers (300, 100, 10 outputs) are all skipped by ASP: one level keeps them dense
    assert main(["imp", "--arch", "lenet_300_100", "--structure", "nm:2:4:asp", "--iterations", "2", "--batch-size",
                 "500", "-q", "--device", "cpu", "--out", str(tmp_path)]) == 0
    from supermask.runs import find_runs

    results = [r.read_result() for r in find_runs(tmp_path) if "levels" in r.read_result()]
    assert results and [round(level["density"], 6) for level in results[0]["levels"]] == [1.0, 1.0]


@pytest.mark.parametrize("kwargs,message", [
    ({"structure": "nm:2:4", "density": 0.3}, "contradicts it"),
    ({"structure": "nm:2:4", "scope": "global"}, "--scope global does not apply"),
    ({"structure": "nm:2:4", "method": "gem-miner"}, "applies to biprop, edge-popup, iterand"),
    ({"structure": "nm:4:4"}, "need 0 < N < M"),
    ({"structure": "channels"}, "structure must be unstructured, nm:N:M .*, channel or head"),
    ({"structure": "channel", "method": "biprop"}, "applies to edge-popup, not biprop"),
])
def test_structure_config_rules(kwargs, message):
    with pytest.raises(SupermaskError, match=message):
        resolve(SearchConfig(arch="lenet_300_100", **kwargs))


def test_an_unstructured_config_keeps_its_hash_and_nm_resolves_its_density():
    from supermask.runs import config_hash

    plain = resolve(SearchConfig(arch="lenet_300_100"))
    assert plain.density == 0.5 and plain.structure == "unstructured"
    assert "structure" not in json.dumps(__import__("supermask.runs", fromlist=["result_fields"]).result_fields(
        __import__("supermask.runs", fromlist=["config_dict"]).config_dict(plain)))
    nm = resolve(SearchConfig(arch="lenet_300_100", structure="nm:1:4"))
    assert nm.density == 0.25 and config_hash(nm) != config_hash(plain)
    assert resolve(SearchConfig(arch="lenet_300_100", structure="nm:1:4", density=0.25)).density == 0.25


def test_an_nm_search_ticket_and_its_compact_export(tmp_path, capsys):
    from safetensors.torch import load_file

    from supermask.exports import load_export

    args = ["search", "--arch", "lenet_300_100", "--structure", "nm:2:4", "--iterations", "3", "--batch-size", "500",
            "--out", str(tmp_path), "--quiet", "--device", "cpu"]
    assert main(args) == 0
    run = tmp_path / capsys.readouterr().out.splitlines()[0].split(": ", 1)[1].split(str(tmp_path) + "/", 1)[1]
    run = tmp_path / run
    masks = load_file(run / "ticket" / "mask.safetensors")
    for name, mask in masks.items():
        assert torch.equal(mask.float().reshape(mask.shape[0], -1, 4).sum(-1),
                           torch.full((mask.shape[0], mask[0].numel() // 4), 2.0)), name
    result = json.loads((run / "result.json").read_text())
    assert result["density"] == 0.5 and result["structure"] == "nm:2:4"
    assert main(["export", str(run), "--format", "ticket"]) == 0
    model, _ = load_export(run / "export" / "ticket.safetensors")
    rebuilt = {name + ".weight": m.mask() for name, m in model.named_modules() if hasattr(m, "scores")}
    assert all(torch.equal(rebuilt[name], masks[name].float()) for name in masks)


def test_semi_structured_export_recognises_2_4_weights_and_needs_a_gpu():
    from supermask.nn.nm import nm_mask
    from supermask.sparse import is_two_four, to_semi_structured

    w = torch.randn(64, 128)
    assert is_two_four(w * nm_mask(w.abs(), 2, 4)) and not is_two_four(w) and not is_two_four(torch.zeros(4, 6))
    model = torch.nn.Sequential(torch.nn.Linear(128, 64))
    if torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 0):
        pytest.skip("a GPU with sparse tensor cores: the CUDA test below runs instead")
    with pytest.raises(SupermaskError, match="compute capability 8.0"):
        to_semi_structured(model)


@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 0),
                    reason="semi-structured 2:4 tensors need a CUDA GPU of compute capability 8.0+")
def test_a_2_4_network_as_semi_structured_tensors_computes_what_the_masked_one_does():  # pragma: no cover
    from supermask.nn.nm import nm_mask
    from supermask.sparse import to_semi_structured

    model = torch.nn.Sequential(torch.nn.Linear(256, 128), torch.nn.ReLU(), torch.nn.Linear(128, 64))
    with torch.no_grad():
        for layer in (model[0], model[2]):
            layer.weight.mul_(nm_mask(layer.weight.abs(), 2, 4))
    x = torch.randn(64, 256)
    expected = model(x)
    fast, converted = to_semi_structured(model)
    assert converted == ["0", "2"]
    got = fast(x.to("cuda", torch.float16)).float().cpu()
    assert (got - expected).abs().max() < 2e-2 * expected.abs().max()
