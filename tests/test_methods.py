"""The other ticket finders: each method's defining property, and each end to end on the run format."""

import math

import pytest
import torch
from torch import nn

from supermask import SearchConfig, TrainConfig, resolve, search
from supermask.cli import main
from supermask.methods import METHODS
from supermask.methods.bernoulli import BernoulliLinear
from supermask.methods.biprop import BinarisedLinear
from supermask.methods.iterand import rerandomize_pruned
from supermask.models import InputSpec, create_model, masked_layer_types
from supermask.nn import SupermaskLinear, init_model, kept_count, model_masks
from supermask_imp import PRUNERS
from supermask_imp.pai import keep_top

SPEC = InputSpec(1, 28, 10)


def _net(cls, density=0.3):
    model = nn.Sequential(nn.Flatten(), cls(784, 50, density=density), nn.ReLU(), cls(50, 10, density=density))
    init_model(model, "kaiming-normal", 0)
    return model


def test_bernoulli_threshold_evaluation_keeps_sigmoid_above_half():
    from supermask.methods.bernoulli import build_bernoulli

    config = resolve(SearchConfig(arch="lenet_300_100", method="bernoulli", bernoulli_eval="threshold"))
    model = build_bernoulli(config, SPEC)
    layer = next(m for m in model.modules() if isinstance(m, BernoulliLinear))
    with torch.no_grad():
        layer.scores.copy_(torch.randn_like(layer.scores))
    model.eval()
    with torch.no_grad():
        assert torch.equal(layer.forward_mask(), (layer.scores > 0).float())


def test_biprop_weights_take_exactly_two_magnitudes_per_layer():
    model = _net(BinarisedLinear)
    for layer in (model[1], model[3]):
        mask = layer.mask()
        w = layer.effective_weight(mask)
        magnitudes = w.abs().unique()
        alpha = (layer.weight.abs() * mask).sum() / mask.sum()
        assert len(magnitudes) == 2 and magnitudes[0] == 0 and magnitudes[1].item() == pytest.approx(alpha.item())
        assert torch.equal(torch.sign(w)[mask.bool()], torch.sign(layer.weight)[mask.bool()])


def test_iterand_redraws_only_pruned_weights():
    model = _net(SupermaskLinear)
    before = {n: m.weight.clone() for n, m in model.named_modules() if isinstance(m, SupermaskLinear)}
    masks = {n: m.mask() for n, m in model.named_modules() if isinstance(m, SupermaskLinear)}
    changed = rerandomize_pruned(model, "kaiming-normal", seed=0, step=7, rate=0.5, scaled_fan=False)
    assert changed > 0
    for name, m in model.named_modules():
        if isinstance(m, SupermaskLinear):
            moved = m.weight != before[name]
            assert not (moved & masks[name].bool()).any()  # kept weights never change
            pruned = (~masks[name].bool()).sum().item()
            assert 0.35 * pruned < moved.sum().item() < 0.65 * pruned  # about rate r of the pruned ones
    again = _net(SupermaskLinear)
    rerandomize_pruned(again, "kaiming-normal", seed=0, step=7, rate=0.5, scaled_fan=False)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def _masked_lenet(seed=0):
    model = create_model("lenet_300_100", SPEC, masked_layer_types())
    return init_model(model, "kaiming-normal", seed)


@pytest.mark.parametrize("method", ["random", "magnitude", "snip", "grasp", "synflow"])
@pytest.mark.parametrize("scope", ["global", "layerwise"])
def test_pruners_keep_exactly_the_density(method, scope):
    model = _masked_lenet()
    batches = [(torch.randn(20, 1, 28, 28), torch.arange(20) % 10)]
    masks = PRUNERS.get(method)(model, batches, 0, 0.1, scope, SPEC)
    total = sum(m.numel() for m in masks.values())
    if scope == "global":
        assert sum(int(m.sum()) for m in masks.values()) == kept_count(total, 0.1)
    else:
        assert all(int(m.sum()) == kept_count(m.numel(), 0.1) for m in masks.values())
    assert all(bool(((m == 0) | (m == 1)).all()) for m in masks.values())


def test_synflow_needs_no_data_and_keeps_positive_flow_through_every_layer():
    model = _masked_lenet()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    masks = PRUNERS.get("synflow")(model, None, 0, 0.002, "global", SPEC)  # 532 of 266,200 weights
    assert all(torch.equal(start[k], v) for k, v in model.state_dict().items() if not k.endswith("weight_mask"))
    assert all(int(m.sum()) > 0 for m in masks.values())  # no layer collapse
    # positive synaptic saliency in every layer: a path of kept weights carries flow from input to output
    flow = torch.ones(1, 784, dtype=torch.float64)
    for name in ("1.weight", "3.weight", "5.weight"):
        layer_flow = flow @ (start[name].abs().double() * masks[name].double()).t()
        assert (layer_flow > 0).any(), name
        flow = layer_flow
    snip = PRUNERS.get("snip")
    with pytest.raises(TypeError):
        snip(model, None, 0, 0.1, "global", SPEC)  # SNIP needs data


def test_keep_top_global_ranks_over_all_tensors():
    masks = keep_top({"a": torch.tensor([5.0, -1.0, 3.0]), "b": torch.tensor([4.0, 0.0])}, 0.4, "global")
    assert masks["a"].tolist() == [1.0, 0.0, 0.0] and masks["b"].tolist() == [1.0, 0.0]


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_search_method_runs_end_to_end_with_a_ticket(method, tmp_path):
    config = SearchConfig(arch="lenet_300_100", method=method, density=0.2, out=str(tmp_path), device="cpu",
                          train=TrainConfig(epochs=1, batch_size=500, **METHODS.get(method).train_defaults))
    result = search(config)
    r = result.result
    assert r["method"] == method and 0 <= r["density"] <= 1
    if not METHODS.get(method).density_is_outcome and method != "gem-miner":
        assert r["density"] == pytest.approx(0.2, abs=1e-3)
    if method == "gem-miner":
        assert r["density"] <= 0.2 + 1e-6
    assert (result.run_dir / "ticket" / "mask.safetensors").exists()


def test_prune_command_and_method_listing(tmp_path, capsys):
    args = ["prune", "--arch", "lenet_300_100", "--method", "synflow,snip", "--density", "0.1", "--iterations",
            "3", "--batch-size", "500", "--device", "cpu", "--out", str(tmp_path), "-q"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.count("density 0.1000") == 2
    assert main(["list", "methods"]) == 0
    listed = capsys.readouterr().out
    for name in [*METHODS, *PRUNERS, "imp", "dense"]:
        assert f"\n{name} (" in "\n" + listed, name
    assert main(["search", "--method", "snip", "--out", str(tmp_path)]) == 2
    assert "use `supermask prune --method snip`" in capsys.readouterr().err


def test_model_masks_of_a_method_model_are_its_seeded_sample_in_train_mode_too():
    from supermask.methods.bernoulli import build_bernoulli
    from supermask.seeding import derived_seed

    config = resolve(SearchConfig(arch="lenet_300_100", method="bernoulli", density=0.3))
    model = build_bernoulli(config, SPEC).train()
    masks = model_masks(model)
    for name, layer in model.named_modules():
        if hasattr(layer, "eval_noise"):  # the reported mask is the seeded sample, whatever the mode
            u = torch.rand(layer.scores.shape, generator=torch.Generator().manual_seed(
                derived_seed(0, f"bernoulli-eval-{name}")))
            expected = (u < torch.sigmoid(torch.full_like(u, math.log(0.3 / 0.7)))).float()
            assert torch.equal(masks[f"{name}.weight"], expected)


def test_a_method_whose_density_moves_reports_accuracy_at_its_final_density(tmp_path):
    config = SearchConfig(arch="lenet_300_100", method="gem-miner", density=0.1, out=str(tmp_path), device="cpu",
                          train=TrainConfig(epochs=3, batch_size=500, lr=3.0))
    r = search(config).result
    from supermask.runs import RunDir

    densities = [m["density"] for m in RunDir(config.run_dir().path).read_metrics() if m["split"] == "val"]
    assert densities[1] > densities[-1] and r["density"] == pytest.approx(densities[-1])
    assert r["best_epoch"] == 3  # the only epoch evaluated at the final density


def test_a_strong_ticket_fine_tuned_trains_its_kept_weights_only(tmp_path, capsys):
    from supermask.runs import find_runs
    from supermask.ticket_files import load_masks

    common = ["--iterations", "4", "--batch-size", "500", "--device", "cpu", "--out", str(tmp_path), "-q"]
    assert main(["search", "--arch", "lenet_300_100", "--method", "gem-miner", "--density", "0.2", *common]) == 0
    (strong,) = find_runs(tmp_path / "search")
    assert main(["train", "--ticket", str(strong.path), *common]) == 0
    (tuned,) = find_runs(tmp_path / "train")
    r = tuned.read_result()
    assert r["method"] == "gem-miner fine-tuned" and r["arch"] == "lenet_300_100"
    assert r["density"] == pytest.approx(strong.read_result()["density"])
    masks = load_masks(strong.ticket_dir / "mask.safetensors")
    final = torch.load(tuned.checkpoint_path, weights_only=True)["model"]
    start = torch.load(strong.checkpoint_path, weights_only=True)["model"]
    for name, mask in masks.items():
        assert torch.equal(final[f"{name.rsplit('.', 1)[0]}.weight_mask"], mask.float())
        assert (final[name][mask == 0] == 0).all()  # pruned weights stay zero
        assert not torch.equal(final[name][mask == 1], start[name][mask == 1])  # kept weights trained
    capsys.readouterr()
    assert main(["train", "--ticket", str(tmp_path / "nothing"), *common]) == 2
    assert "not a finished search run with a ticket" in capsys.readouterr().err
    moved = tmp_path / "elsewhere" / "strong"
    moved.parent.mkdir()
    strong.path.rename(moved)  # the ticket's content, not its path, identifies the fine-tuning run
    assert main(["train", "--ticket", str(moved), *common]) == 0
    assert f"already finished: {tuned.path}" in capsys.readouterr().out
    import json

    from supermask.runs import RunDir

    recorded = json.loads(tuned.config_path.read_text())
    assert recorded["init"] == "signed-constant" == RunDir(moved).read_result()["init"]  # what drew its weights
    for option, message in ((["--dataset", "fashion-mnist"], "--dataset fashion-mnist: --ticket fine-tunes"),
                            (["--arch", "conv2"], "--arch conv2: --ticket fine-tunes"),
                            (["--init", "kaiming-normal"], "leave --init out")):
        assert main(["train", "--ticket", str(moved), *option, *common]) == 2  # never silently ignored
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


@pytest.mark.parametrize("method,extra", [("biprop", []), ("bernoulli", ["--rescale-weights"]),
                                          ("edge-popup", [])])
def test_a_fine_tuning_starts_from_the_network_the_ticket_computes_with(tmp_path, method, extra):
    """biprop computes with sign(w)*alpha, Bernoulli --rescale-weights with w*n/kept: the fine-tuned
    network at step 0 is that network (its test accuracy is the ticket's), not the raw w x mask."""
    from supermask.runs import find_runs

    common = ["--arch", "lenet_300_100", "--batch-size", "500", "--device", "cpu", "--out", str(tmp_path), "-q"]
    assert main(["search", "--method", method, *extra, "--iterations", "16", *common]) == 0
    (strong,) = find_runs(tmp_path / "search")
    assert main(["train", "--ticket", str(strong.path), "--iterations", "1", *common]) == 0
    (tuned,) = find_runs(tmp_path / "train")
    start = tuned.read_result()["initial_test_accuracy"]
    assert start == pytest.approx(strong.read_result()["test_accuracy"], abs=0.005)
    assert method == "bernoulli" or start > 0.2  # a trained ticket, not chance (16 steps of Bernoulli are)


def test_exports_compute_what_the_method_computes(tmp_path):
    from safetensors.torch import load_file

    from supermask.runs import find_runs
    from supermask.search import load_search_model
    from supermask.exports import export_run

    common = ["--arch", "lenet_300_100", "--iterations", "2", "--batch-size", "500", "--device", "cpu", "-q",
              "--density", "0.3", "--init", "kaiming-normal"]
    assert main(["search", "--method", "biprop", *common, "--out", str(tmp_path)]) == 0
    (run,) = find_runs(tmp_path)
    export_run(run.path, "state-dict", tmp_path / "sd.safetensors")
    plain = create_model("lenet_300_100", SPEC, bias=False)  # a strong ticket's LeNet: no biases
    plain.load_state_dict(load_file(tmp_path / "sd.safetensors"))
    x = torch.randn(5, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(plain.eval()(x), load_search_model(run.path)(x), atol=1e-5)
    with pytest.raises(Exception, match="export it as state-dict"):
        export_run(run.path, "ticket", tmp_path / "t.safetensors")


def test_a_search_from_a_network_that_passes_no_signal_is_warned_about_with_the_remedy(caplog):
    import logging

    import torch

    from supermask import SearchConfig, resolve
    from supermask.data import load_dataset
    from supermask.methods import METHODS
    from supermask.models import InputSpec
    from supermask.search import NO_SIGNAL_STD, warn_if_no_signal

    data = load_dataset("mnist-5k")
    images = (data.train.images[:64].float() / 255 - torch.tensor(data.info.mean).view(1, -1, 1, 1)) / \
        torch.tensor(data.info.std).view(1, -1, 1, 1)
    for density, scaled_fan, warned in ((0.2, False, True), (0.2, True, False), (0.5, False, False)):
        config = resolve(SearchConfig(arch="conv4", density=density, scaled_fan=scaled_fan))
        model = METHODS.get("edge-popup").build(config, InputSpec(1, 28, 10))
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="supermask.search"):
            spread = warn_if_no_signal(model, data, config)
        text = " ".join(r.getMessage() for r in caplog.records)
        assert ("--scaled-fan" in text) == warned, (density, scaled_fan, text)
        if scaled_fan:
            assert spread is None  # the remedy taken: not probed
            continue
        with torch.no_grad():
            expected = model.eval()(images).std(dim=0).mean().item()  # the spread, computed here
        assert spread == pytest.approx(expected, rel=1e-5) and (spread < NO_SIGNAL_STD) == warned


def test_gem_miner_says_when_it_ends_away_from_its_target_density(caplog):
    import logging

    import torch

    from supermask import SearchConfig, resolve
    from supermask.methods import METHODS
    from supermask.methods.gem_miner import GemMiner
    from supermask.models import InputSpec
    from supermask.nn.layers import supermask_layers

    config = resolve(SearchConfig(arch="lenet_300_100", method="gem-miner", density=0.2))
    model = METHODS.get("gem-miner").build(config, InputSpec(1, 28, 10))
    state = type("State", (), {"model": model})()
    layers = [layer for _, layer in supermask_layers(model)]
    for kept, warned in ((0.2, False), (0.086, True)):
        with torch.no_grad():
            for layer in layers:  # exactly `kept` of every layer's scores above 0.5
                flat = torch.zeros(layer.scores.numel())
                flat[: round(kept * flat.numel())] = 0.9
                layer.scores.copy_(flat.view_as(layer.scores))
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="supermask.methods.gem_miner"):
            GemMiner(config).on_train_end(state)
        said = " ".join(r.getMessage() for r in caplog.records)
        assert ("not its target 0.2" in said) == warned, said
        assert ("ended at density 0.086" in said) == warned
