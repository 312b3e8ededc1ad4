"""Channel masks in both engines, against computations written here in plain torch: the
edge-popup channel mask (top channels of each layer, the next layer's inputs with them) and its
straight-through gradient; IMP's L1-norm channel level and N:M level; pruning at init by summed
channel scores; the compact-dense export (fewer parameters by the kept fraction, the same
outputs) and the compact ticket's channel and N:M codings."""

import json
import math
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from supermask import SearchConfig
from supermask.cli import main
from supermask.errors import SupermaskError
from supermask.methods import METHODS
from supermask.models import DENSE, InputSpec, create_model
from supermask.nn import model_masks
from supermask.nn.channels import channel_chain, compact_dense
from supermask.resolved import resolve

MNIST = InputSpec(1, 28, 10)


def _top(values: torch.Tensor, k: int) -> torch.Tensor:
    """{0, 1} over ``values`` keeping the k largest (plain sort; random floats have no ties)."""
    keep = torch.zeros(values.numel())
    keep[values.reshape(-1).argsort(descending=True)[:k]] = 1
    return keep


def _build(arch: str, density: float = 0.5, **kwargs) -> nn.Module:
    config = resolve(SearchConfig(arch=arch, structure="channel", density=density, **kwargs))
    return METHODS.get(config.method).build(config, MNIST)


def test_an_edge_popup_channel_mask_keeps_the_top_channels_and_their_inputs_downstream():
    model = _build("lenet_300_100", density=0.3, width=0.2)
    layers = [m for m in model.modules() if hasattr(m, "scores")]
    masks = list(model_masks(model).values())
    rows = [_top(l.scores.detach().abs(), max(1, math.floor(0.3 * l.out_features + 0.5))) for l in layers[:-1]]
    rows.append(torch.ones(layers[-1].out_features))  # the classes are all kept
    columns = [torch.ones(layers[0].in_features)] + rows[:-1]
    for mask, r, c in zip(masks, rows, columns):
        assert torch.equal(mask, r[:, None] * c[None, :])


def test_a_global_channel_mask_keeps_the_top_channels_over_all_layers_but_the_last():
    model = _build("lenet_300_100", density=0.3, width=0.2, scope="global")
    layers = [m for m in model.modules() if hasattr(m, "scores")]
    scores = torch.cat([l.scores.detach().abs().reshape(-1) for l in layers[:-1]])  # 60 + 20 channels
    kept = _top(scores, math.floor(0.3 * 80 + 0.5))
    masks = list(model_masks(model).values())
    assert torch.equal(masks[0].any(1).float(), kept[:60]) and torch.equal(masks[1].any(1).float(), kept[60:])
    assert masks[2].any(1).all()


def test_the_channel_mask_passes_a_straight_through_gradient_to_every_channel_score():
    model = _build("lenet_300_100", width=0.1, bias=True)  # a removed channel still outputs its bias
    model.train()
    layers = [m for m in model.modules() if hasattr(m, "scores")]
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    nn.functional.cross_entropy(model(x), y).backward()
    # by hand: masks as leaves, W_i * (r_i c_i^T), ReLU between layers; d loss / d s = d loss / d r * sign(s)
    rows = [_top(l.scores.detach().abs(), max(1, math.floor(0.5 * l.out_features + 0.5))).requires_grad_()
            for l in layers[:-1]]
    h = x.flatten(1)
    for i, layer in enumerate(layers):
        r = rows[i] if i < len(rows) else torch.ones(layer.out_features)
        c = rows[i - 1] if i > 0 else torch.ones(layer.in_features)
        h = nn.functional.linear(h, layer.weight * r[:, None] * c[None, :], layer.bias)
        h = torch.relu(h) if i < len(layers) - 1 else h
    nn.functional.cross_entropy(h, y).backward()
    for layer, r in zip(layers, rows):
        expected = r.grad * layer.scores.detach().reshape(-1).sign()
        assert torch.allclose(layer.scores.grad.reshape(-1), expected, atol=1e-6)
        pruned = r.detach() == 0  # straight through: removed channels learn too (a plain mask would give 0)
        assert (layer.scores.grad.reshape(-1)[pruned] != 0).any() and (layer.scores.grad.reshape(-1)[~pruned] != 0).any()
    assert layers[-1].scores.grad is None and not layers[-1].scores.requires_grad


@pytest.mark.parametrize("arch,kwargs", [("conv4", {"width": 0.25}), ("vgg11", {"width": 0.125, "learned_bn": True})])
def test_compact_dense_has_the_kept_weights_only_and_the_masked_networks_outputs(arch, kwargs):
    from supermask.ticket_files import folded_state_dict

    masked = _build(arch, density=0.5, **kwargs)
    with torch.no_grad():  # BatchNorm statistics and affine parameters that are not the identity
        for m in masked.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1), m.running_var.uniform_(0.5, 2)
                if m.affine:
                    m.weight.uniform_(0.5, 1.5), m.bias.uniform_(-1, 1)
    masked.eval()
    masks = model_masks(masked)
    plain = create_model(arch, MNIST, DENSE, width=kwargs["width"])
    plain.load_state_dict(folded_state_dict(masked.state_dict(), masks))
    small = compact_dense(plain.eval(), (1, 28, 28))
    weights = lambda m: [x.weight for x in m.modules() if isinstance(x, (nn.Conv2d, nn.Linear))]  # noqa: E731
    kept = sum(int(m.sum()) for m in masks.values())
    assert sum(w.numel() for w in weights(small)) == kept  # exactly the kept weights
    assert (torch.cat([w.reshape(-1) for w in weights(small)]) != 0).all()
    fraction = kept / sum(w.numel() for w in weights(plain))
    others = sum(p.numel() for p in plain.parameters()) - sum(w.numel() for w in weights(plain))
    small_params = sum(p.numel() for p in small.parameters())
    assert small_params <= fraction * sum(w.numel() for w in weights(plain)) + others  # biases/BN shrink too
    assert fraction < 0.3  # inner layers keep half their inputs and half their outputs
    x = torch.randn(16, 1, 28, 28)
    with torch.no_grad():
        assert (small(x) - masked(x)).abs().max() < 1e-5


def test_a_network_that_is_no_chain_is_refused_before_any_file(tmp_path, capsys):
    with pytest.raises(SupermaskError, match="residual"):
        _build("resnet20")
    assert main(["search", "--arch", "resnet20", "--structure", "channel", "--iterations", "1",
                 "--out", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--structure channel needs a chain" in err and len(err.strip().splitlines()) == 1
    assert not any(tmp_path.rglob("config.json"))


def test_the_chain_records_how_many_inputs_each_channel_feeds():
    links = channel_chain(create_model("conv4", MNIST, DENSE), (1, 28, 28))
    assert [l.repeat for l in links] == [1, 1, 1, 7 * 7, 1, 1, 1]  # 28 -> 14 -> 7: 128 maps of 7x7 feed the first FC


def _test_images(count: int) -> torch.Tensor:
    """Test images of the bundled MNIST subset, normalised as the loader feeds them."""
    from supermask.data import load_dataset

    data = load_dataset("mnist-5k")
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) * 255 for v in (data.info.mean, data.info.std))
    return (data.test.images[:count].float() - mean) / std


def _search(tmp_path, capsys, *extra) -> Path:
    args = ["search", "--arch", "lenet_300_100", "--iterations", "20", "--batch-size", "250",
            "--out", str(tmp_path), "--quiet", "--device", "cpu", *extra]
    assert main(args) == 0
    return Path(capsys.readouterr().out.splitlines()[0].split(": ", 1)[1])


def test_a_channel_search_exports_as_the_smaller_network_and_as_a_ticket_of_channel_bits(tmp_path, capsys):
    from supermask.search import load_search_model
    from supermask.exports import load_export

    run = _search(tmp_path, capsys, "--structure", "channel", "--density", "0.25")
    result = json.loads((run / "result.json").read_text())
    assert result["channel_density"] == 0.25 and "requested_density" not in result
    # 784x75 + 75x25 + 25x10 of 784x300 + 300x100 + 100x10
    assert result["density"] == pytest.approx((784 * 75 + 75 * 25 + 25 * 10) / (784 * 300 + 300 * 100 + 100 * 10))
    masked = load_search_model(run)
    x = _test_images(256)
    assert main(["export", str(run), "--format", "compact-dense"]) == 0
    small, provenance = load_export(run / "export" / "compact-dense.safetensors")
    assert provenance["channels"] == {"1": [75, 784], "3": [25, 75], "5": [10, 25]}
    assert provenance["weights"] == round(result["density"] * provenance["dense_weights"])
    assert provenance["parameters"] == 784 * 75 + 75 * 25 + 25 * 10  # a strong ticket's LeNet: no biases
    assert provenance["macs"] == provenance["weights"] and provenance["dense_macs"] == provenance["dense_weights"]
    assert all(isinstance(m, nn.Linear) and type(m) is nn.Linear for m in small.modules() if isinstance(m, nn.Linear))
    with torch.no_grad():
        assert (small(x) - masked(x)).abs().max() < 1e-5
    assert main(["export", str(run), "--format", "ticket"]) == 0
    ticket = run / "export" / "ticket.safetensors"
    assert main(["evaluate", str(ticket)]) == 0 and "(the same)" in capsys.readouterr().out
    from safetensors import safe_open

    with safe_open(str(ticket), framework="pt") as f:
        recipe = json.loads(f.metadata()["supermask_ticket"])
        sizes = {k: f.get_tensor(k).numel() for k in f.keys()}
    assert set(recipe["mask_codings"].values()) == {"channel"}
    assert sizes == {"1.weight.mask_channels": 38, "3.weight.mask_channels": 13, "5.weight.mask_channels": 2}
    assert recipe["mask_bits_per_weight"] == pytest.approx(410 / 266200)
    rebuilt, _ = load_export(ticket)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), masked(x))


def test_an_nm_ticket_stores_a_pattern_index_per_group(tmp_path, capsys):
    from safetensors import safe_open

    from supermask.search import load_search_model
    from supermask.exports import load_export

    run = _search(tmp_path, capsys, "--structure", "nm:2:4")
    assert main(["export", str(run), "--format", "ticket"]) == 0
    ticket = run / "export" / "ticket.safetensors"
    with safe_open(str(ticket), framework="pt") as f:
        recipe = json.loads(f.metadata()["supermask_ticket"])
        sizes = {k: f.get_tensor(k).numel() for k in f.keys()}
    assert recipe["mask_bits_per_weight"] == 0.75  # ceil(log2 C(4, 2)) = 3 bits per group of 4
    assert sizes["1.weight.mask_nm"] == math.ceil(300 * 784 // 4 * 3 / 8)
    x = _test_images(64)
    with torch.no_grad():
        assert torch.equal(load_export(ticket)[0](x), load_search_model(run)(x))


nm_pairs = st.integers(2, 8).flatmap(lambda m: st.tuples(st.integers(1, m - 1), st.just(m)))


@settings(max_examples=40, deadline=None)
@given(nm=nm_pairs, out=st.integers(1, 6), groups=st.integers(1, 5), conv=st.booleans(), seed=st.integers(0, 999))
def test_nm_pattern_indices_decode_to_the_mask_they_code(nm, out, groups, conv, seed):
    from supermask.mask_codes import decode, encode, stored_bits
    from supermask.nn.nm import nm_mask

    n, m = nm
    shape = (out, groups * m, 3, 2) if conv else (out, groups * m)
    mask = nm_mask(torch.rand(shape, generator=torch.Generator().manual_seed(seed)), n, m)
    coding, tensors = encode("w", mask, f"nm:{n}:{m}")
    assert coding == "nm-index"
    bits = math.ceil(math.log2(math.comb(m, n))) if math.comb(m, n) > 1 else 1
    assert stored_bits(coding, list(shape), f"nm:{n}:{m}") == mask.numel() // m * bits
    assert tensors["w.mask_nm"].numel() == math.ceil(mask.numel() // m * bits / 8)
    assert torch.equal(decode("w", coding, tensors, list(shape), f"nm:{n}:{m}"), mask.to(torch.uint8))


def _imp(tmp_path, capsys, *extra) -> Path:
    args = ["imp", "--arch", "lenet_300_100", "--width", "0.2", "--iterations", "10", "--batch-size", "250",
            "--out", str(tmp_path), "--quiet", "--device", "cpu", *extra]
    assert main(args) == 0
    return Path(capsys.readouterr().out.splitlines()[0].split(": ", 1)[1])


def _level(root: Path, level: int):
    from supermask.io import load_checkpoint
    from supermask.ticket_files import read_ticket

    masks, _ = read_ticket(root / f"level-{level}" / "ticket")
    return masks, load_checkpoint(root / f"level-{level}" / "checkpoint.pt", map_location="cpu")["model"]


def test_an_imp_channel_level_removes_the_filters_of_smallest_l1_norm(tmp_path, capsys):
    root = _imp(tmp_path, capsys, "--structure", "channel", "--levels", "2")
    names = ["1.weight", "3.weight", "5.weight"]
    _, final0 = _level(root, 0)
    masks1, final1 = _level(root, 1)
    masks2, _ = _level(root, 2)
    # level 1 from level 0's dense weights: layerwise fc fraction 0.2 of 60 and of 20 channels
    rows = [_top(final0[n].abs().sum(1), k) for n, k in zip(names, (60 - 12, 20 - 4))]
    expected = [rows[0][:, None].expand(60, 784), rows[1][:, None] * rows[0][None, :], rows[1][None, :].expand(10, 20)]
    for n, e in zip(names, expected):
        assert torch.equal(masks1[n].float(), e)
    # level 2: 0.2 of the 48 and 16 survivors go, by the L1 norm of the surviving filters
    survivors = [final1[n].abs().sum(1).where(r.bool(), torch.tensor(-1.0)) for n, r in zip(names, rows)]
    rows2 = [_top(survivors[0], 48 - 10), _top(survivors[1], 16 - 3)]
    assert torch.equal(masks2["3.weight"].float(), rows2[1][:, None] * rows2[0][None, :])
    result = json.loads((root / "level-2" / "result.json").read_text())
    assert result["structure"] == "channel"
    # the level's trained network, physically smaller: 38 and 13 channels, the same outputs
    from supermask.ticket_files import ticket_state
    from supermask.exports import load_export

    assert main(["export", str(root / "level-2"), "--format", "compact-dense"]) == 0
    small, provenance = load_export(root / "level-2" / "export" / "compact-dense.safetensors")
    assert provenance["channels"] == {"1": [38, 784], "3": [13, 38], "5": [10, 13]}
    trained = create_model("lenet_300_100", MNIST, DENSE, width=0.2)
    trained.load_state_dict({k: v for k, v in ticket_state(root / "level-2").items() if not k.endswith("_mask")})
    x = _test_images(64)
    with torch.no_grad():
        assert (small(x) - trained.eval()(x)).abs().max() < 1e-5


def test_an_imp_nm_run_prunes_the_trained_weights_to_n_of_m_in_one_level(tmp_path, capsys):
    from supermask.nn.nm import nm_mask

    root = _imp(tmp_path, capsys, "--structure", "nm:2:4", "--keep-unpruned", "5.weight")
    assert not (root / "level-2").exists()
    _, final0 = _level(root, 0)
    masks1, _ = _level(root, 1)
    for name in ("1.weight", "3.weight"):
        groups = final0[name].abs().reshape(-1, 4)
        expected = torch.zeros_like(groups).scatter_(1, groups.argsort(1, descending=True)[:, :2], 1.0)
        assert torch.equal(masks1[name].float().reshape(-1, 4), expected)
    assert masks1["5.weight"].all()  # kept unpruned
    assert torch.equal(nm_mask(final0["1.weight"].abs(), 2, 4), masks1["1.weight"].float())


def test_pruning_at_init_by_channel_keeps_the_channels_of_largest_summed_score(tmp_path, capsys):
    from supermask.nn import init_model
    from supermask.ticket_files import read_ticket

    assert main(["prune", "--arch", "lenet_300_100", "--width", "0.2", "--method", "magnitude", "--structure",
                 "channel", "--density", "0.5", "--iterations", "2", "--out", str(tmp_path), "--quiet"]) == 0
    run = Path(capsys.readouterr().out.splitlines()[0].split(": ", 1)[1])
    masks, _ = read_ticket(run / "ticket")
    plain = init_model(create_model("lenet_300_100", MNIST, DENSE, width=0.2), "kaiming-normal", 0)
    w = [plain.get_submodule(n).weight.detach() for n in ("1", "3")]
    rows = [_top(x.abs().sum(1), k) for x, k in zip(w, (30, 10))]
    assert torch.equal(masks["3.weight"].float(), rows[1][:, None] * rows[0][None, :])
    assert json.loads((run / "result.json").read_text())["scope"] == "layerwise"


@pytest.mark.parametrize("args,message", [
    (["imp", "--structure", "channel", "--scope", "global"], "selects layer by layer"),
    (["imp", "--structure", "nm:2:4", "--target-density", "0.3"], "contradicts it"),
    (["imp", "--structure", "channel", "--early-bird", "magnitude"], "not with --structure"),
    (["prune", "--structure", "nm:2:4", "--density", "0.3"], "contradicts it"),
    (["prune", "--structure", "chanel"], "structure must be unstructured"),
])
def test_structured_weak_tickets_refuse_what_contradicts_them(tmp_path, capsys, args, message):
    assert main([*args, "--arch", "lenet_300_100", "--iterations", "1", "--out", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_compare_labels_the_structure_and_places_channel_tickets_at_their_weight_density():
    from supermask.report import method_label, method_parts

    assert method_label({"engine": "search", "method": "edge-popup", "init": "signed-constant",
                         "structure": "channel"}) == "edge-popup channel signed-constant"
    assert method_label({"engine": "imp", "method": "imp", "structure": "nm:2:4", "control": "reinit"}) == \
        "imp nm:2:4 reinit"
    assert method_parts({"engine": "imp", "method": "imp", "structure": "channel", "control": "random-prune"}) == \
        ("imp channel", "random-prune")
    assert method_parts({"engine": "imp", "method": "imp", "structure": "channel", "control": "none"}) == \
        ("imp channel", "")


def test_convert_ties_a_users_chain_and_needs_its_input_shape():
    from supermask.nn import convert

    plain = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 5))
    with pytest.raises(SupermaskError, match="needs input_shape"):
        convert(plain, 0.5, structure="channel")
    model = convert(plain, 0.25, structure="channel", input_shape=(3, 8, 8))
    conv = model[0]
    rows = _top(conv.scores.detach().abs(), 2)
    masks = model_masks(model)
    assert torch.equal(masks["0.weight"], rows.view(8, 1, 1, 1).expand(8, 3, 3, 3))
    assert torch.equal(masks["4.weight"], rows.repeat_interleave(36)[None, :].expand(5, 288))  # 6x6 maps flattened


def test_a_control_is_drawn_in_its_methods_colour_family():
    """Rows carry their method's family and their control as fields (never parsed from labels):
    a control shares the family, config suffix included, of the method it belongs to."""
    from supermask.report import Point, comparison_rows

    common = dict(arch="conv4", dataset="mnist-5k", density=0.5, seed=0, value=0.9)
    points = []
    for epochs in (1, 2):
        config = f'{{"epochs":{epochs}}}'
        points += [Point(method="edge-popup signed-constant", family="edge-popup signed-constant", config=config,
                         **common),
                   Point(method="edge-popup signed-constant random mask", family="edge-popup signed-constant",
                         control="random mask", config=config, **{**common, "value": 0.1})]
    rows = {row["method"]: row for row in comparison_rows(points)}
    control = rows["edge-popup signed-constant random mask (epochs=2)"]
    assert control["family"] == "edge-popup signed-constant (epochs=2)" == rows["edge-popup signed-constant (epochs=2)"]["family"]
    assert control["control"] == "random mask" and control["controls"] == []
    method = rows["edge-popup signed-constant (epochs=2)"]
    assert [c["control"] for c in method["controls"]] == ["edge-popup signed-constant random mask"]
    assert method["controls"][0]["delta"] == pytest.approx(0.8)

@pytest.mark.parametrize("n,m", [(1, 64), (2, 64), (63, 64), (2, 63)])
def test_nm_groups_of_64_code_their_last_weight(n, m):
    """A group of 64 keeps its 64th weight in bit 63 of its pattern: coded and decoded exactly (a
    signed 64-bit pattern overflowed there)."""
    from supermask.mask_codes import MAX_PATTERNS, decode, encode
    from supermask.nn.nm import nm_mask

    scores = torch.rand(4, 2 * m, generator=torch.Generator().manual_seed(n))
    scores[:, m - 1::m] = 2.0  # every group's last weight is among its n largest
    mask = nm_mask(scores, n, m)
    assert bool(mask[:, m - 1::m].all())
    coding, tensors = encode("w", mask, f"nm:{n}:{m}")
    assert coding == ("nm-index" if math.comb(m, n) <= MAX_PATTERNS else "bitmap")
    assert torch.equal(decode("w", coding, tensors, [4, 2 * m], f"nm:{n}:{m}"), mask.to(torch.uint8))
