"""Each method's defining computation against a reference computation written here in plain torch
(never by calling the code under test), following the reference repositories named in each test."""

import json
import math

import pytest
import torch
from torch import nn

from supermask import SearchConfig, TrainConfig, search
from supermask.cli import main
from supermask.models import InputSpec, create_model, masked_layer_types
from supermask.seeding import derived_seed
from supermask.resolved import resolve

SPEC = InputSpec(1, 28, 10)


def _keep_count(n: int, density: float) -> int:
    """The documented kept-count rule: max(1, floor(d * n + 0.5))."""
    return max(1, math.floor(density * n + 0.5))


# -- edge-popup (allenai/hidden-networks utils/conv_type.py: GetSubnet, SubnetConv.forward) -----------

def test_edge_popup_forward_and_score_gradient_are_the_references():
    """GetSubnet sorts the scores, zeroes the lowest ``int((1 - k) * n)`` and keeps the rest
    (``k``: hidden-networks' ``prune_rate``, the kept fraction there), is called on
    ``scores.abs()`` and passes the gradient straight through; the layer computes with
    ``weight * subnet``."""
    from supermask.nn.layers import SupermaskLinear

    torch.manual_seed(3)
    layer = SupermaskLinear(6, 4, bias=False, density=0.5)
    with torch.no_grad():
        layer.scores.copy_(torch.randn(4, 6))  # distinct magnitudes: no ties
    x = torch.randn(5, 6)
    layer(x).pow(2).sum().backward()
    scores, weight = layer.scores.detach(), layer.weight.detach()
    subnet = torch.ones(24)
    subnet[scores.abs().flatten().sort().indices[: int((1 - 0.5) * 24)]] = 0  # the reference's selection
    subnet = subnet.view(4, 6).requires_grad_()
    torch.nn.functional.linear(x, weight * subnet).pow(2).sum().backward()
    assert torch.equal(layer.mask(), subnet.detach())
    assert torch.allclose(layer.scores.grad, subnet.grad * scores.sign(), atol=1e-6)  # straight through |s|


@pytest.mark.parametrize("method,expected", [
    # hidden-networks simple_initialization configs: signed constant, kaiming-uniform scores (a=sqrt(5)),
    # SGD 0.1, momentum 0.9, wd 1e-4, cosine, batch 128; FC nets without biases
    ("edge-popup", {"init": "signed-constant", "score_init": "kaiming-uniform", "scaled_fan": False, "lr": 0.1,
                    "momentum": 0.9, "weight_decay": 1e-4, "schedule": "cosine", "batch_size": 128}),
    # train_supermask.py's README command: SGD lr 100 (momentum 0.9), l2 on the (frozen) weights only
    ("bernoulli", {"init": "xavier-normal", "lr": 100.0, "momentum": 0.9, "weight_decay": 0.0}),
    # biprop smallscale configs: kaiming_normal, scale_fan (builder.py's rule), SGD 0.1, 0.9, 1e-4, cosine
    ("biprop", {"init": "kaiming-normal", "scaled_fan": "reference-code", "lr": 0.1, "momentum": 0.9,
                "weight_decay": 1e-4, "schedule": "cosine"}),
    # pruning_is_enough hc_iter configs: L2 lmbda 1e-4, iter_period 5, wd 0, momentum 0.9, cosine, global
    ("gem-miner", {"score_l2": 1e-4, "freeze_every": 5, "weight_decay": 0.0, "momentum": 0.9, "schedule": "cosine",
                   "scope": "global"}),
    # iterand config.yaml: kaiming_uniform weights and scores, rerand_freq 300, rerand_lambda 0.1
    ("iterand", {"init": "kaiming-uniform", "score_init": "kaiming-uniform-relu", "rerandomize_every": 300,
                 "rerandomize_rate": 0.1}),
])
def test_each_methods_defaults_are_the_values_its_reference_runs_with(method, expected):
    config = resolve(SearchConfig(arch="lenet_300_100", method=method))
    got = {k: getattr(config.train, k) if hasattr(config.train, k) else getattr(config, k) for k in expected}
    assert got == expected and config.bias is False


def test_the_global_tie_rule_keeps_the_first_tied_entries_in_the_concatenated_order():
    """One threshold over all layers; among entries tied at it, those earliest in the layers'
    concatenated flat order are kept: an independent selection by (value descending, index)."""
    from supermask.nn.layers import SupermaskLinear, attach_global_scope

    torch.manual_seed(4)
    model = nn.Sequential(SupermaskLinear(5, 4, bias=False), SupermaskLinear(4, 3, bias=False))
    with torch.no_grad():  # three distinct values: many ties at the threshold
        for layer in model:
            layer.scores.copy_(torch.randint(1, 4, layer.scores.shape).float() * torch.sign(torch.randn(layer.scores.shape)))
    attach_global_scope(model, 0.4)
    values = torch.cat([layer.scores.detach().abs().flatten() for layer in model]).tolist()
    k = _keep_count(len(values), 0.4)
    chosen = sorted(range(len(values)), key=lambda i: (-values[i], i))[:k]
    expected = torch.zeros(len(values))
    expected[chosen] = 1
    got = torch.cat([layer.mask().flatten() for layer in model.eval()])
    assert torch.equal(got, expected) and int(got.sum()) == k


# -- Bernoulli supermasks (uber-research/deconstructing-lottery-tickets: masked layers) ----------------

def test_bernoulli_training_gradient_reaches_the_scores_through_the_sigmoid():
    """A training forward pass samples the mask m ~ Bernoulli(sigmoid(s)) and computes with w * m;
    the gradient reaches the scores straight through the sample: dL/ds = dL/dm * sigmoid'(s)."""
    from supermask.methods.bernoulli import BernoulliLinear

    torch.manual_seed(5)
    layer = BernoulliLinear(6, 4, bias=False, density=0.5).train()
    with torch.no_grad():
        layer.scores.copy_(torch.randn(4, 6))
    x = torch.randn(5, 6)
    torch.manual_seed(11)
    layer(x).pow(2).sum().backward()
    scores, weight = layer.scores.detach(), layer.weight.detach()
    p = torch.sigmoid(scores)
    torch.manual_seed(11)
    sample = torch.bernoulli(p).requires_grad_()  # the same draw
    torch.nn.functional.linear(x, weight * sample).pow(2).sum().backward()
    assert torch.allclose(layer.scores.grad, sample.grad * p * (1 - p), atol=1e-6)


# -- biprop (chrundle/biprop utils/conv_type.py: GetQuantnet_binary, SubnetConv.forward) -----------

def test_biprop_forward_and_score_gradient_on_a_3x3_layer():
    from supermask.methods.biprop import BinarisedLinear
    layer = BinarisedLinear(3, 3, density=5 / 9, bias=False)
    w = torch.tensor([[0.5, -1.0, 2.0], [-0.25, 1.5, -3.0], [0.75, -0.5, 1.0]])
    s = torch.tensor([[0.9, -0.1, 0.3], [-0.8, 0.05, 0.6], [-0.2, 0.7, -0.4]])
    with torch.no_grad():
        layer.weight.copy_(w)
        layer.scores.copy_(s)
    x = torch.tensor([[1.0, 2.0, -1.0], [0.5, -1.5, 2.0]])
    out = layer(x)
    out.sum().backward()

    # reference: keep the top 5 of |s|; alpha = sum |w| over kept / kept; w_eff = sign(w) * alpha * mask
    k = 5
    mask = torch.zeros(9)
    mask[s.abs().flatten().argsort(descending=True)[:k]] = 1
    mask = mask.view(3, 3)
    alpha = (w.abs() * mask).sum() / k
    w_eff = torch.sign(w) * alpha * mask
    assert torch.allclose(out, x @ w_eff.T)
    # backward: d sum(out) / d w_eff = column sums of x, broadcast per row; quantnet passes g * |w|, and
    # w = sign(w) * quantnet multiplies by sign(w): g * w; the scores enter as |s|: times sign(s)
    g_eff = x.sum(0).expand(3, 3)
    assert torch.allclose(layer.scores.grad, g_eff * w * torch.sign(s))


def test_biprop_defaults_are_the_references():
    config = resolve(SearchConfig(method="biprop"))
    assert (config.init, config.scaled_fan, config.train.lr, config.train.weight_decay) == \
        ("kaiming-normal", "reference-code", 0.1, 1e-4)
    assert config.density_ramp_epochs is None  # layerwise: the reference ramps global pruning only
    assert resolve(SearchConfig(method="biprop", scope="global", density=0.2)).density_ramp_epochs == 10
    assert resolve(SearchConfig(method="biprop", scope="global", density=0.7)).density_ramp_epochs is None


def test_biprop_weights_scale_the_fan_as_its_builder_does():
    """chrundle/biprop utils/builder.py: ``fan = fan * (1 - args.prune_rate)`` with ``prune_rate`` the
    kept fraction, then ``std = gain / sqrt(fan)`` for kaiming_normal (fan_in, ReLU)."""
    from supermask.methods.biprop import build_biprop

    config = resolve(SearchConfig(arch="lenet_300_100", method="biprop", density=0.05))
    model = build_biprop(config, SPEC)
    for m in model.modules():
        if hasattr(m, "scores"):
            fan_in = m.weight.shape[1]
            expected = math.sqrt(2.0) / math.sqrt(fan_in * (1 - 0.05))
            assert m.weight.std().item() == pytest.approx(expected, rel=0.08)


def test_biprops_global_ramp_is_its_main_py():
    """chrundle/biprop main.py: for epoch < prune_rate_epoch (10) with prune_rate (kept) <= 0.5,
    ``prune_decay = (1 - epoch / 10) ** 3``, pruned = (1 - k) + (0.5 - (1 - k)) * prune_decay."""
    from supermask.methods.biprop import ramped_density

    for k in (0.5, 0.2, 0.05):
        for epoch in range(13):
            if epoch < 10:
                pruned = (1 - k) + (0.5 - (1 - k)) * (1 - epoch / 10) ** 3
                expected = 1 - pruned
            else:
                expected = k
            assert ramped_density(k, epoch, 10) == pytest.approx(expected)


def test_a_global_biprop_search_trains_each_epoch_at_its_ramped_density(tmp_path):
    from supermask.runs import RunDir

    r = search(SearchConfig(arch="lenet_300_100", method="biprop", scope="global", density=0.1,
                            density_ramp_epochs=2, out=str(tmp_path), device="cpu",
                            train=TrainConfig(epochs=3, batch_size=500)))
    metrics = RunDir(r.run_dir).read_metrics()
    by_epoch = {m["epoch"]: m["density"] for m in metrics if m["split"] == "val"}
    # evaluated after each epoch at the density it trained with: 0.5 (epoch 0 of the ramp), then
    # 0.1 + 0.4 * (1/2)^3, then the target
    assert by_epoch == {0: pytest.approx(0.5, abs=1e-4), 1: pytest.approx(0.5, abs=1e-4),
                        2: pytest.approx(0.15, abs=1e-4), 3: pytest.approx(0.1, abs=1e-4)}
    assert r.result["density"] == pytest.approx(0.1, abs=1e-4) and r.result["selected_epoch"] == 3
    from supermask.errors import SupermaskError

    with pytest.raises(SupermaskError, match="applies with --scope global"):
        resolve(SearchConfig(method="biprop", density_ramp_epochs=5))


# -- Bernoulli (uber-research/deconstructing-lottery-tickets masked_networks.py) --------------------

def _bernoulli_model(density=0.5, seed=0, **kw):
    from supermask.methods.bernoulli import build_bernoulli

    config = resolve(SearchConfig(arch="lenet_300_100", method="bernoulli", density=density, seed=seed, **kw))
    return build_bernoulli(config, SPEC), config


def test_bernoulli_evaluates_a_seeded_sample_of_sigmoid_scores():
    model, config = _bernoulli_model()
    torch.manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if hasattr(m, "scores"):
                m.scores.copy_(torch.randn_like(m.scores))
    model.eval()
    x = torch.randn(5, 1, 28, 28)
    # reference forward of the evaluated network: u ~ U(0, 1) per weight, fixed by (seed, layer); m = u < sigmoid(s)
    h = x.flatten(1)
    layers = [(n, m) for n, m in model.named_modules() if hasattr(m, "scores")]
    for i, (name, m) in enumerate(layers):
        u = torch.rand(m.scores.shape, generator=torch.Generator().manual_seed(derived_seed(0, f"bernoulli-eval-{name}")))
        mask = (u < torch.sigmoid(m.scores.detach())).float()
        assert torch.equal(m.mask(), mask) and m.bias is None  # no biases: the reference's are zero and frozen
        h = h @ (m.weight * mask).T
        h = torch.relu(h) if i < len(layers) - 1 else h
        # a sample of Bernoulli(sigmoid(s)): its density is the expectation within sampling noise
        p = torch.sigmoid(m.scores).mean().item()
        assert abs(mask.mean().item() - p) < 4 * math.sqrt(p * (1 - p) / mask.numel()) + 1e-9
    with torch.no_grad():
        assert torch.allclose(model(x), h.detach(), atol=1e-5)
        assert torch.equal(model(x), model(x))  # the same network every time
    model.train()
    first, second = layers[0][1].forward_mask().detach(), layers[0][1].forward_mask().detach()
    assert not torch.equal(first, second)  # training samples afresh


def test_bernoulli_weights_are_glorot_normal_by_default_as_the_reference_builds_them():
    """masked_networks.py: ``MaskedDense(..., kernel_initializer=glorot_normal)``; signed constants
    only with ``--signed_constant``."""
    model, config = _bernoulli_model()
    assert config.init == "xavier-normal" and config.train.weight_decay == 0.0 and config.train.lr == 100.0
    for m in model.modules():
        if hasattr(m, "scores"):
            fan_out, fan_in = m.weight.shape
            assert m.weight.std().item() == pytest.approx(math.sqrt(2 / (fan_in + fan_out)), rel=0.08)
            assert len(m.weight.unique()) > 100  # not constants


def test_bernoulli_weights_are_signed_glorot_constants_and_scores_start_at_the_logit():
    model, config = _bernoulli_model(density=0.2, init="signed-constant-glorot")
    assert config.train.weight_decay == 0.0
    for m in model.modules():
        if hasattr(m, "scores"):
            fan_out, fan_in = m.weight.shape
            assert torch.allclose(m.weight.abs(), torch.full_like(m.weight, math.sqrt(2 / (fan_in + fan_out))))
            assert torch.allclose(m.scores, torch.full_like(m.scores, math.log(0.2 / 0.8)))


def test_bernoulli_dynamic_weight_rescaling_is_an_option():
    model, _ = _bernoulli_model(rescale_weights=True)
    layer = next(m for m in model.modules() if hasattr(m, "scores"))
    mask = layer.mask()
    assert torch.allclose(layer.effective_weight(mask), layer.weight * mask * mask.numel() / mask.sum())


def test_bernoulli_rescaling_takes_the_gradient_through_the_masks_sum():
    """masked_networks.py ``MaskedDense.call``: ``multiplier = size / reduce_sum(effective_mask)`` on
    the straight-through mask (sample + p - stop_gradient(p)), so the count carries a gradient."""
    model, _ = _bernoulli_model(rescale_weights=True)
    layer = next(m for m in model.modules() if hasattr(m, "scores"))
    layer.train()
    with torch.no_grad():
        layer.scores.copy_(torch.randn(layer.scores.shape, generator=torch.Generator().manual_seed(1)))
    x = torch.randn(4, layer.in_features, generator=torch.Generator().manual_seed(2))
    torch.manual_seed(5)
    layer(x).square().sum().backward()
    ours = layer.scores.grad.clone()
    s = layer.scores.detach().clone().requires_grad_()
    torch.manual_seed(5)
    p = torch.sigmoid(s)
    m = torch.bernoulli(p.detach()) + p - p.detach()
    w = layer.weight.detach() * m * (m.numel() / m.sum())
    (x @ w.T).square().sum().backward()
    assert (ours - s.grad).abs().max() <= 1e-4 * s.grad.abs().max()
    # and it differs from a detached count (the version before)
    s2 = s.detach().clone().requires_grad_()
    p2 = torch.sigmoid(s2)
    m2 = m.detach() + p2 - p2.detach()
    (x @ (layer.weight.detach() * m2 * (m2.numel() / m2.detach().sum())).T).square().sum().backward()
    assert not torch.allclose(s.grad, s2.grad)


def test_bernoulli_end_to_end_reports_its_learned_density_and_its_ticket(tmp_path):
    from safetensors.torch import load_file

    from supermask.data import load_dataset, make_loader
    from supermask.models import DENSE
    from supermask.ticket_files import ticket_state
    from supermask.exports import export_run
    from supermask.training import evaluate

    result = search(SearchConfig(arch="lenet_300_100", method="bernoulli", out=str(tmp_path), device="cpu",
                                 train=TrainConfig(epochs=3)))
    r = result.result
    state = ticket_state(result.run_dir)
    expected = torch.cat([torch.sigmoid(v).flatten() for k, v in state.items() if k.endswith(".scores")]).mean()
    assert abs(r["density"] - expected.item()) < 0.01
    export_run(result.run_dir, "state-dict", tmp_path / "sd.safetensors")
    plain = create_model("lenet_300_100", SPEC, DENSE, bias=False)  # a strong ticket's LeNet: no biases
    plain.load_state_dict(load_file(tmp_path / "sd.safetensors"))
    data = load_dataset("mnist-5k")
    assert evaluate(plain, make_loader(data.test, data.info, 256, train=False))[1] == r["test_accuracy"]
    assert r["test_accuracy"] > 0.8


# -- Gem-Miner (ksreenivasan/pruning_is_enough: net_utils.get_regularization_loss, prune, GetSubnet) ---

def test_gem_miner_penalty_rounding_and_global_freezing():
    from supermask.methods.gem_miner import GemMiner, build_gem_miner

    config = resolve(SearchConfig(arch="lenet_300_100", method="gem-miner", density=0.2))
    assert (config.scope, config.score_l2, config.freeze_every, config.train.weight_decay) == ("global", 1e-4, 5, 0.0)
    model = build_gem_miner(config, SPEC)
    layers = [m for m in model.modules() if hasattr(m, "scores")]
    with torch.no_grad():
        layers[0].scores[0, 0] = 0.5  # exactly at the threshold: not kept (the reference keeps s > 0.5)
    for m in layers:
        assert torch.equal(m.mask(), (m.scores.detach() > 0.5).float())
    callback = GemMiner(config)

    class State:
        pass

    state = State()
    state.model = model
    penalty = callback.loss_penalty(state)
    assert torch.allclose(penalty, 1e-4 * sum((m.scores.detach() ** 2).sum() for m in layers))
    # one freezing round of fraction f: the lowest |s| of all layers together are frozen out
    scores = torch.cat([m.scores.detach().abs().flatten() for m in layers])
    f = 0.5
    kept = _keep_count(scores.numel(), 1 - f)
    threshold = scores.sort(descending=True).values[kept - 1]
    callback.freeze(layers, f)
    active = torch.cat([(~m.frozen).flatten() for m in layers])
    assert active.sum().item() == kept
    assert torch.equal(active, scores >= threshold)
    assert all((m.scores[m.frozen] == 0).all() for m in layers)


def test_gem_miner_freezes_every_fifth_epoch_and_trains_on():
    from supermask.methods.gem_miner import freeze_schedule, round_fraction

    # the reference prunes after epoch indices 5, 10, 15 (counted from 0) of 20: floor(19 / 5) rounds
    assert freeze_schedule(20, 5) == [6, 11, 16] and freeze_schedule(10, 5) == [6] and freeze_schedule(5, 5) == []
    assert (1 - round_fraction(0.2, 3)) ** 3 == pytest.approx(0.2)


@pytest.mark.parametrize("epochs", [10, 20])
def test_gem_miner_reaches_its_target_density_with_its_defaults(tmp_path, epochs):
    r = search(SearchConfig(arch="lenet_300_100", method="gem-miner", density=0.2, out=str(tmp_path),
                            device="cpu", train=TrainConfig(epochs=epochs))).result
    assert abs(r["density"] - 0.2) <= 0.01 and r["test_accuracy"] >= 0.85, r


def test_gem_miners_lr_default_holds_lr_times_epochs_beyond_ten():
    def lr(**train):
        return resolve(SearchConfig(method="gem-miner", train=TrainConfig(**train))).train.lr

    assert lr(epochs=5) == lr(epochs=10) == 1.0 and lr(epochs=20) == 0.5 and lr(epochs=40) == 0.25
    assert lr(epochs=40, iterations=100) == 1.0  # an epoch's length is not known when it resolves
    assert lr(epochs=40, lr=0.7) == 0.7  # a given lr wins


# -- SynFlow, SNIP, GraSP (ganguli-lab/Synaptic-Flow Pruners/pruners.py, prune.py) -------------------

def _masked_lenet(seed=0):
    from supermask.nn import init_model

    return init_model(create_model("lenet_300_100", SPEC, masked_layer_types()), "kaiming-normal", seed)


def test_synflow_mask_on_lenet_at_density_001_equals_a_reference_synflow_with_biases():
    from supermask_imp import PRUNERS

    model = _masked_lenet()
    got = PRUNERS.get("synflow")(model, None, 0, 0.01, "global", SPEC)
    # reference: |.| of every parameter (biases included), all-ones input, R = sum f(1), score |dR/dw * w|,
    # 100 rounds to density**(r/100), global top-k; here on plain tensors in float64
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    ws = [m.weight.detach().double().abs() for m in linears]
    bs = [m.bias.detach().double().abs() for m in linears]
    masks = [torch.ones_like(w) for w in ws]
    n = sum(w.numel() for w in ws)
    for r in range(1, 101):
        params = [(w * m).requires_grad_() for w, m in zip(ws, masks)]
        h = torch.ones(1, 784, dtype=torch.float64)
        for i, (w, b) in enumerate(zip(params, bs)):
            h = h @ w.T + b
            h = torch.relu(h) if i < len(params) - 1 else h
        grads = torch.autograd.grad(h.sum(), params)
        scores = torch.cat([(g * w).abs().flatten() for g, w in zip(grads, params)])
        keep = _keep_count(n, 0.01 ** (r / 100))
        flat = torch.zeros(n)
        flat[scores.argsort(descending=True, stable=True)[:keep]] = 1
        masks = list(flat.split([w.numel() for w in ws]))
        masks = [m.view_as(w).double() for m, w in zip(masks, ws)]
    for (name, mask), ref in zip(got.items(), masks):
        assert torch.equal(mask.bool(), ref.bool()), name


def _tiny_masked(seed=0):
    torch.manual_seed(seed)
    layers = masked_layer_types()
    model = nn.Sequential(nn.Flatten(), layers.linear(4, 3), nn.ReLU(), layers.linear(3, 2))
    return model


def _batch():
    g = torch.Generator().manual_seed(3)
    return [(torch.randn(6, 1, 2, 2, generator=g), torch.tensor([0, 1, 0, 1, 1, 0]))]


def _plain_loss(params, images, temperature=1.0):
    w1, b1, w2, b2 = params
    h = torch.relu(images.flatten(1) @ w1.T + b1)
    return nn.functional.cross_entropy((h @ w2.T + b2) / temperature, torch.tensor([0, 1, 0, 1, 1, 0]))


def test_snip_scores_are_abs_gradient_times_weight():
    from supermask_imp import PRUNERS

    model = _tiny_masked()
    batches = _batch()
    got = PRUNERS.get("snip")(model, batches, 0, 0.5, "global", SPEC)
    params = [p.detach().clone().requires_grad_() for p in (model[1].weight, model[1].bias, model[3].weight, model[3].bias)]
    g1, _, g2, _ = torch.autograd.grad(_plain_loss(params, batches[0][0]), params)
    scores = torch.cat([(g1 * params[0]).abs().flatten(), (g2 * params[2]).abs().flatten()]).detach()
    keep = torch.zeros(18)
    keep[scores.argsort(descending=True)[:_keep_count(18, 0.5)]] = 1
    assert torch.equal(torch.cat([m.flatten() for m in got.values()]).bool(), keep.bool())


def test_grasp_keeps_the_highest_weight_times_hessian_gradient():
    from supermask_imp import PRUNERS

    model = _tiny_masked()
    batches = _batch()
    got = PRUNERS.get("grasp")(model, batches, 0, 0.5, "global", SPEC)
    params = [p.detach().clone() for p in (model[1].weight, model[1].bias, model[3].weight, model[3].bias)]
    flat = torch.cat([params[0].flatten(), params[2].flatten()])

    def loss_of_weights(v):
        w1, w2 = v[:12].view(3, 4), v[12:].view(2, 3)
        return _plain_loss([w1, params[1], w2, params[3]], batches[0][0], temperature=200.0)

    g = torch.autograd.functional.jacobian(loss_of_weights, flat)
    hessian = torch.autograd.functional.hessian(loss_of_weights, flat)
    scores = flat * (hessian @ g)  # GraSP removes the highest -w*Hg: it keeps the highest w*Hg
    keep = torch.zeros(18)
    keep[scores.argsort(descending=True)[:_keep_count(18, 0.5)]] = 1
    assert torch.equal(torch.cat([m.flatten() for m in got.values()]).bool(), keep.bool())


# -- IteRand (dchiji-ntt/iterand: rerandomize every rerand_freq iterations, pruned weights only) -----

def test_iterand_redraws_only_pruned_weights_at_its_period():
    from supermask.methods.edge_popup import build_edge_popup
    from supermask.methods.iterand import Rerandomize

    config = resolve(SearchConfig(arch="lenet_300_100", method="iterand", rerandomize_every=3))
    assert config.rerandomize_rate == 0.1
    assert (config.init, config.score_init) == ("kaiming-uniform", "kaiming-uniform-relu")  # config.yaml
    assert resolve(SearchConfig(method="iterand")).rerandomize_every == 300  # the reference's rerand_freq
    model = build_edge_popup(config, SPEC)
    callback = Rerandomize(config)
    layers = [m for m in model.modules() if hasattr(m, "scores")]

    class State:
        pass

    for step in range(1, 7):
        before = [m.weight.detach().clone() for m in layers]
        masks = [m.mask().bool() for m in layers]
        state = State()
        state.model, state.step = model, step
        callback.after_step(state, 0.0, 0, 0)
        moved = [(m.weight != b) for m, b in zip(layers, before)]
        # the reference's before_callback(it = steps done): re-draws when (it + 1) % K == 0, i.e.
        # once K - 1, 2K - 1, ... steps are done
        if (step + 1) % 3:
            assert not any(x.any() for x in moved), step
        else:
            assert any(x.any() for x in moved) and not any((x & k).any() for x, k in zip(moved, masks))


def test_iterands_scores_start_kaiming_uniform_with_the_relu_gain():
    """dchiji-ntt/iterand sparse_modules.py ``init_param_(weight_score, 'kaiming_uniform')``:
    ``nn.init.kaiming_uniform_(mode='fan_in', nonlinearity='relu')``, U(±sqrt(6 / fan_in))."""
    from supermask.methods.edge_popup import build_edge_popup

    model = build_edge_popup(resolve(SearchConfig(arch="lenet_300_100", method="iterand")), SPEC)
    for m in model.modules():
        if hasattr(m, "scores"):
            bound = math.sqrt(6.0 / m.weight.shape[1])
            assert m.scores.abs().max().item() <= bound and m.scores.abs().max().item() > 0.99 * bound
            reference = torch.empty_like(m.scores)
            nn.init.kaiming_uniform_(reference, mode="fan_in", nonlinearity="relu")
            assert m.scores.std().item() == pytest.approx(reference.std().item(), rel=0.05)


# -- late rewinding (facebookresearch/open_lth training/train.py: start_step) ----------------------

def test_late_rewinding_continues_the_schedule_from_the_rewind_step(tmp_path):
    args = ["imp", "--arch", "lenet_300_100", "--levels", "1", "--rewind", "100it", "--epochs", "4",
            "--batch-size", "100", "--optimizer", "sgd", "--lr", "0.1", "--schedule", "cosine",
            "--warmup-epochs", "1", "--device", "cpu", "-q", "--out", str(tmp_path)]
    assert main(args) == 0
    (level1,) = tmp_path.rglob("level-1")
    records = [json.loads(line) for line in (level1 / "metrics.jsonl").read_text().splitlines()]
    # 4,000 training images / 100 = 40 steps an epoch, T = 160; warmup 40 steps, then cosine
    total, warmup, k = 160, 40, 100
    expected = 0.1 * 0.5 * (1 + math.cos(math.pi * (k - warmup) / (total - warmup)))
    assert records[0]["step"] == k and records[0]["lr"] == pytest.approx(expected)
    result = json.loads((level1 / "result.json").read_text())
    assert result["start_step"] == k and result["trained_steps"] == total - k and result["steps"] == total
    level0 = json.loads(next(tmp_path.rglob("level-0/result.json")).read_text())
    assert level0["start_step"] == 0 and level0["trained_steps"] == total


# -- attention masks (torch.nn.MultiheadAttention's convention) ------------------------------------

def test_boolean_and_float_attention_masks_match_multihead_attention():
    import warnings

    from supermask.nn.attention import from_multihead

    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, 4, batch_first=True).eval()
    converted = from_multihead(mha).eval()
    x = torch.randn(2, 5, 16)
    causal = torch.triu(torch.ones(5, 5, dtype=torch.bool), 1)  # True: may not attend
    pad = torch.tensor([[False] * 4 + [True], [False] * 5])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for attn_mask, padding in ((causal, None), (None, pad), (causal, pad), (torch.randn(5, 5), None),
                                   (torch.randn(8, 5, 5), pad)):
            want = mha(x, x, x, attn_mask=attn_mask, key_padding_mask=padding, need_weights=False)[0]
            got = converted(x, x, x, attn_mask=attn_mask, key_padding_mask=padding)[0]
            assert torch.allclose(got, want, atol=1e-6)


# -- defaults live in the library ------------------------------------------------------------------

@pytest.mark.parametrize("method", ["bernoulli", "gem-miner", "biprop", "iterand", "edge-popup"])
def test_the_library_and_the_cli_resolve_the_same_config(method, tmp_path):
    common = ["--arch", "lenet_300_100", "--iterations", "1", "--batch-size", "500", "--device", "cpu", "-q"]
    assert main(["search", "--method", method, *common, "--out", str(tmp_path / "cli")]) == 0
    search(SearchConfig(arch="lenet_300_100", method=method, device="cpu", out=str(tmp_path / "lib"),
                        train=TrainConfig(iterations=1, batch_size=500)))
    (cli,) = (tmp_path / "cli").rglob("config.json")
    (lib,) = (tmp_path / "lib").rglob("config.json")
    strip = lambda c: {k: v for k, v in json.loads(c.read_text()).items() if k != "out"}  # noqa: E731
    assert strip(cli) == strip(lib)
    assert cli.parent.relative_to(tmp_path / "cli") == lib.parent.relative_to(tmp_path / "lib")  # same hash


def test_an_option_of_another_method_is_refused():
    from supermask.errors import SupermaskError

    with pytest.raises(SupermaskError, match="--score-l2 applies to gem-miner only"):
        resolve(SearchConfig(method="edge-popup", score_l2=0.1))


# -- deep-net IMP defaults (open_lth models/cifar_resnet.py, cifar_vgg.py, bn_initializers.py) -------

def test_deep_net_imp_defaults_follow_open_lth(tmp_path):
    from supermask_imp import IMPConfig
    from supermask_imp.levels import build_masked

    for arch in ("resnet20", "vgg16"):
        config = resolve(IMPConfig.for_arch(arch, epochs=160))
        t = config.train
        assert (t.optimizer, t.lr, t.momentum, t.weight_decay, t.batch_size, t.warmup_epochs) == ("sgd", 0.1, 0.9, 1e-4, 128, 0.0)
        assert t.schedule == "step" and t.milestones == (80.0, 120.0) and config.bn_init == "uniform"
        model = build_masked(config, InputSpec(3, 32, 10), 0)
        gammas = torch.cat([m.weight.detach() for m in model.modules() if isinstance(m, nn.BatchNorm2d)])
        assert 0 <= gammas.min() and gammas.max() <= 1 and gammas.std() > 0.2  # U(0, 1), not ones
    assert IMPConfig.for_arch("vgg16").keep_unpruned == ("classifier.weight",)  # pruning_layers_to_ignore
    assert IMPConfig.for_arch("resnet20").keep_unpruned == ()


def test_the_channel_early_bird_ticket_starts_its_batchnorm_gamma_at_one_half():
    """GATECH-EIC/Early-Bird-Tickets models/vgg.py ``_initialize_weights``: ``m.weight.data.fill_(0.5)``
    and ``m.bias.data.zero_()`` for every BatchNorm2d."""
    from supermask_imp import IMPConfig
    from supermask_imp.levels import build_masked

    config = resolve(IMPConfig.for_arch("vgg11", early_bird="channel", width=0.125))
    assert config.bn_init == "half"
    bns = [m for m in build_masked(config, InputSpec(3, 32, 10), 0).modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(torch.equal(m.weight, torch.full_like(m.weight, 0.5)) and not m.bias.any() for m in bns)
    assert resolve(IMPConfig.for_arch("vgg11", early_bird="channel", bn_init="uniform")).bn_init == "uniform"
    assert resolve(IMPConfig.for_arch("vgg11")).bn_init == "uniform"  # plain IMP: open_lth's


def test_keep_unpruned_names_that_match_nothing_are_refused(tmp_path, capsys):
    code = main(["imp", "--arch", "lenet_300_100", "--keep-unpruned", "fc9.weight", "--out", str(tmp_path), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "names no prunable weight of lenet_300_100: fc9.weight" in err and err.count("\n") == 1
    assert not list(tmp_path.rglob("config.json"))


# -- dropout through the injected layer types (Frankle & Carbin 2019 Sec. 4) -----------------------

@pytest.mark.parametrize("arch", ["lenet_300_100", "conv4", "vgg11"])
def test_dropout_goes_before_the_fully_connected_layers_and_keeps_the_state_dict_names(arch):
    from supermask.models import DENSE

    spec = InputSpec(3 if arch == "vgg11" else 1, 32 if arch == "vgg11" else 28, 10)
    plain = create_model(arch, spec, DENSE)
    dropped = create_model(arch, spec, DENSE.with_dropout(0.5))
    assert list(plain.state_dict()) == list(dropped.state_dict())
    rates = [m.p for m in dropped.modules() if isinstance(m, nn.Dropout)]
    linears = [m for m in dropped.modules() if isinstance(m, nn.Linear)]
    assert rates == [0.5] * {"lenet_300_100": 2, "conv4": 3, "vgg11": 1}[arch] and linears
    dropped.load_state_dict(plain.state_dict())
    x = torch.randn(4, spec.in_channels, spec.image_size, spec.image_size)
    dropped.eval(), plain.eval()
    with torch.no_grad():
        assert torch.equal(dropped(x), plain(x))  # dropout is the identity in evaluation
    dropped.train()
    with torch.no_grad():
        assert not torch.equal(dropped(x), dropped(x))


def test_every_engine_takes_dropout_and_refuses_it_where_there_is_no_fc_layer(tmp_path):
    from supermask.errors import SupermaskError
    from supermask_imp import IMPConfig, run_imp

    r = search(SearchConfig(arch="lenet_300_100", dropout=0.5, out=str(tmp_path), device="cpu",
                            train=TrainConfig(iterations=2, batch_size=500))).result
    assert json.loads(next(tmp_path.rglob("ticket.json")).read_text())["dropout"] == 0.5 and r["steps"] == 2
    imp = IMPConfig.for_arch("conv2", out=str(tmp_path), device="cpu", levels=1, dropout=0.5)
    imp.train = TrainConfig(iterations=2, batch_size=500, optimizer="adam", lr=3e-4)
    assert len(run_imp(imp).levels) == 2
    with pytest.raises(SupermaskError, match="--dropout applies to"):
        resolve(SearchConfig(arch="resnet20", dropout=0.5))


# -- early-bird channel tickets (GATECH-EIC/Early-Bird-Tickets main.py: updateBN, EarlyBird; vggprune.py) --

def _vgg(width=0.125, seed=0):
    from supermask.models import DENSE

    torch.manual_seed(seed)
    model = create_model("vgg11", InputSpec(1, 28, 10), DENSE, width=width)
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.weight.copy_(torch.rand_like(bn.weight) * 2 - 1)
            bn.bias.copy_(torch.randn_like(bn.bias) * 0.1)
            bn.running_mean.copy_(torch.randn_like(bn.running_mean) * 0.1)
            bn.running_var.copy_(torch.rand_like(bn.running_var) + 0.5)
    return model


def test_channel_masks_are_the_global_gamma_threshold_and_the_penalty_is_l1():
    from supermask_imp.channel_early_bird import ChannelEarlyBird, channel_masks, mask_distance

    model = _vgg()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    gammas = torch.cat([bn.weight.detach().abs() for bn in bns])
    threshold = gammas.sort().values[int(gammas.numel() * 0.5)]  # the reference: y[int(total * percent)]
    assert torch.equal(torch.cat(channel_masks(model, 0.5)), gammas > threshold)
    bird = ChannelEarlyBird(0.5, 0.1, 5, 1e-4)

    class State:
        pass

    state = State()
    state.model = model
    assert torch.allclose(bird.loss_penalty(state), 1e-4 * gammas.sum())
    assert mask_distance(torch.tensor([True, False, True, True]), torch.tensor([True, True, True, False])) == 0.5


def test_the_channel_ticket_is_physically_smaller_and_computes_the_masked_network():
    from supermask.models import DENSE
    from supermask.models.cost import count_macs, count_parameters
    from supermask_imp.channel_early_bird import channel_masks, shrink_vgg

    model = _vgg().eval()
    masks = channel_masks(model, 0.5)
    with torch.no_grad():  # the masked network: pruned channels output exactly zero (γ = β = 0 before the ReLU)
        for bn, mask in zip((m for m in model.modules() if isinstance(m, nn.BatchNorm2d)), masks):
            bn.weight[~mask] = 0
            bn.bias[~mask] = 0
    channels = [int(m.sum()) for m in masks]
    small = shrink_vgg(model, masks, create_model("vgg11", InputSpec(1, 28, 10), DENSE, channels=channels)).eval()
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        assert (small(x) - model(x)).abs().max() < 1e-5
    # parameters by hand: convs 3x3 (no bias), BN 2 per channel, classifier with bias
    ins = [1] + channels[:-1]
    expected = sum(9 * i * o + 2 * o for i, o in zip(ins, channels)) + channels[-1] * 10 + 10
    assert count_parameters(small) == expected < count_parameters(model)
    assert count_macs(small, (1, 28, 28)) < count_macs(model, (1, 28, 28))


def test_channel_early_bird_end_to_end_draws_trains_and_exports_the_small_network(tmp_path):
    from supermask.exports import evaluate_export, export_run
    from supermask_imp import IMPConfig, run_imp

    config = IMPConfig.for_arch("vgg11", out=str(tmp_path), device="cpu", early_bird="channel", eb_window=2,
                                eb_epsilon=0.3, width=0.125)
    config.train = TrainConfig(epochs=3, batch_size=500, optimizer="sgd", lr=0.05, schedule="cosine")
    level0, level1 = run_imp(config).levels
    assert level0["early_bird_epoch"] is not None and level0["epochs"] == level0["early_bird_epoch"] <= 3
    assert level1["parameters"] < level1["dense_parameters"] and level1["macs"] < level1["dense_macs"]
    assert level1["density"] < 1.0 and abs(level1["channel_density"] - 0.5) < 0.05
    records = [json.loads(x) for x in next(tmp_path.rglob("level-0/metrics.jsonl")).read_text().splitlines()]
    assert any(r["split"] == "early-bird" for r in records)
    level_dir = next(tmp_path.rglob("level-1"))
    export_run(level_dir, "state-dict", tmp_path / "small.safetensors")
    assert evaluate_export(tmp_path / "small.safetensors")["test_accuracy"] == level1["test_accuracy"]


def test_the_reference_retraining_of_a_channel_ticket_starts_fresh_from_the_drawing_epoch_with_l1(tmp_path):
    """GATECH-EIC/Early-Bird-Tickets main_c.py (retrain_continue.sh): the pruned ``cfg`` built anew (its
    weights drawn again; only channel selections copied from the pruned model), trained ``for epoch in
    range(args.start_epoch, args.epochs)`` with ``updateBN`` (``s * sign(γ)``) while ``--sr``."""
    import copy

    from supermask_imp import IMPConfig, run_imp
    from supermask_imp.channel_early_bird import GammaL1, fresh_weights

    config = resolve(IMPConfig.for_arch("vgg11", out=str(tmp_path), device="cpu", early_bird="channel", eb_window=2,
                                        eb_epsilon=0.3, width=0.125, eb_retrain="reference",
                                        train=TrainConfig(epochs=3, batch_size=500, optimizer="sgd", lr=0.05)))
    level0, level1 = run_imp(config).levels
    steps = -(-4000 // 500)
    assert level1["eb_retrain"] == "reference" and level1["start_step"] == level0["early_bird_epoch"] * steps
    assert level1["trained_steps"] == 3 * steps - level1["start_step"]
    # fresh weights: not the copied early-bird ones; γ at 0.5 as the reference's models
    small = create_model("vgg11", InputSpec(3, 32, 10), width=0.125)
    for m in small.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.fill_(3.0)  # as if copied from the early-bird network
    copied = copy.deepcopy(small)
    fresh_weights(small, config)
    assert all(not m.running_mean.any() for m in small.modules() if isinstance(m, nn.BatchNorm2d))
    conv, before = (next(m for m in net.modules() if isinstance(m, nn.Conv2d)) for net in (small, copied))
    assert not torch.equal(conv.weight, before.weight)
    bns = [m for m in small.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(torch.equal(b.weight, torch.full_like(b.weight, 0.5)) for b in bns)
    penalty = GammaL1(1e-4).loss_penalty(type("State", (), {"model": small})())
    assert torch.allclose(penalty, 1e-4 * sum(b.weight.abs().sum() for b in bns))
    from supermask.errors import SupermaskError

    with pytest.raises(SupermaskError, match="--eb-retrain applies to --early-bird channel only"):
        resolve(IMPConfig.for_arch("vgg11", eb_retrain="reference"))


def test_a_resnet_channel_ticket_removes_block_inner_channels_and_computes_the_masked_network():
    from supermask.models import DENSE
    from supermask.models.cost import count_parameters
    from supermask_imp.channel_early_bird import batchnorms, channel_masks, shrink

    torch.manual_seed(0)
    model = create_model("resnet20", InputSpec(1, 28, 10), masked_layer_types(), width=0.5)
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.weight.copy_(torch.rand_like(bn.weight) * 2 - 1)
            bn.running_var.copy_(torch.rand_like(bn.running_var) + 0.5)
    masks = channel_masks(model, 0.5)
    blocks = [m for m in model.modules() if hasattr(m, "shortcut")]
    assert len(masks) == len(blocks) == 9  # one mask per block: its inner channels
    with torch.no_grad():
        for bn, mask in zip(batchnorms(model), masks):
            bn.weight[~mask] = 0
            bn.bias[~mask] = 0
    channels = [int(m.sum()) for m in masks]
    small = shrink("resnet20", model, masks, create_model("resnet20", InputSpec(1, 28, 10), DENSE, width=0.5,
                                                          channels=channels))
    model.eval(), small.eval()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert (small(x) - model(x)).abs().max() < 1e-5
    assert count_parameters(small) < count_parameters(model)


def test_bernoulli_warns_when_it_starts_too_sparse_to_learn(caplog):
    import logging

    with caplog.at_level(logging.WARNING):
        resolve(SearchConfig(method="bernoulli", density=0.05))
    assert "may never learn" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        resolve(SearchConfig(method="bernoulli", density=0.5))
    assert "may never learn" not in caplog.text


@pytest.mark.parametrize("rule,scale", [(None, 1.0), ("paper", 0.05), ("reference-code", 0.95)])
def test_the_scaled_fan_rules_of_the_paper_and_of_the_reference_code(rule, scale, tmp_path, capsys):
    """Ramanujan et al. Sec. 4 scale the fan by the density k; hidden-networks' and biprop's
    builder.py by ``1 - prune_rate`` with their prune_rate the kept fraction: at density 0.05 the
    signed constant of LeNet's first layer is sqrt(2 / (784 * s)), s = 0.05 or 0.95."""
    from supermask.methods import METHODS

    config = resolve(SearchConfig(arch="lenet_300_100", density=0.05, scaled_fan=rule or False))
    model = METHODS.get("edge-popup").build(config, SPEC)
    first = next(m for m in model.modules() if isinstance(m, nn.Linear))
    expected = math.sqrt(2.0) / math.sqrt(784 * scale)
    assert torch.allclose(first.weight.abs(), torch.full_like(first.weight, expected))
    args = ["search", "--arch", "lenet_300_100", "--density", "0.05", "--dry-run", "--verbose", "--out", str(tmp_path)]
    assert main([*args, *(["--scaled-fan-rule", rule] if rule else [])]) == 0
    shown = json.loads(capsys.readouterr().out.split("\n", 1)[1])["scaled_fan"]
    assert shown == {None: False, "paper": True, "reference-code": "reference-code"}[rule]  # CLI = library
