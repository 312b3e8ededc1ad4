import dataclasses

import pytest
import torch

from supermask.errors import SupermaskError
from supermask.models import InputSpec, create_model, masked_layer_types
from supermask.nn import init_model
from supermask.nn.masked import MaskedLinear, get_masks
from supermask.runs import RunDir
from supermask.ticket_files import read_ticket
from supermask_imp import IMPConfig, MaskAfterStep, RewindPoint, magnitude_prune, random_masks_like, rewind, run_imp
from supermask.io import read_tensors as load_state
from supermask_imp.pruning import frankle_carbin_rates
from supermask.resolved import resolve


def _weights_and_masks(seed=0):
    gen = torch.Generator().manual_seed(seed)
    weights = {"a.weight": torch.randn(40, 30, generator=gen), "b.weight": torch.randn(10, 40, generator=gen) * 3}
    masks = {n: torch.ones_like(w) for n, w in weights.items()}
    masks["a.weight"].view(-1)[:200] = 0  # some already pruned
    return weights, masks


def test_global_level_removes_exactly_the_fraction_of_survivors():
    weights, masks = _weights_and_masks()
    survivors = sum(int(m.sum()) for m in masks.values())  # 1000 + 400
    new = magnitude_prune(weights, masks, 0.2, scope="global")
    assert sum(int(m.sum()) for m in new.values()) == survivors - round(0.2 * survivors)
    for name in new:  # only survivors can be removed, and the smallest go first
        assert not (new[name].bool() & ~masks[name].bool()).any()
    kept = torch.cat([weights[n].abs()[new[n].bool()] for n in new])
    removed = torch.cat([weights[n].abs()[masks[n].bool() & ~new[n].bool()] for n in new])
    assert kept.min() >= removed.max()


def test_layerwise_and_per_layer_rates_remove_their_fraction_of_each_layer():
    weights, masks = _weights_and_masks()
    new = magnitude_prune(weights, masks, 0.2, scope="layerwise")
    assert int(new["a.weight"].sum()) == 1000 - 200 and int(new["b.weight"].sum()) == 400 - 80
    rates = frankle_carbin_rates(["a.weight", "b.weight"], conv=0.15, fc=0.2, output=0.1)
    assert rates == {"a.weight": 0.2, "b.weight": 0.1}
    new = magnitude_prune(weights, masks, rates, scope="layerwise", keep=["a.weight"])
    assert torch.equal(new["a.weight"], masks["a.weight"]) and int(new["b.weight"].sum()) == 360
    with pytest.raises(SupermaskError):
        magnitude_prune(weights, masks, 1.0)


def test_random_prune_keeps_per_layer_counts():
    _, masks = _weights_and_masks()
    rand = random_masks_like(masks, 1)
    assert {n: int(m.sum()) for n, m in rand.items()} == {n: int(m.sum()) for n, m in masks.items()}
    assert not torch.equal(rand["a.weight"], masks["a.weight"])
    reordered = random_masks_like(dict(reversed(list(masks.items()))), 1)  # the dict's order does not matter
    assert all(torch.equal(rand[n], reordered[n]) for n in masks)


def test_pruned_weights_stay_zero_through_momentum_and_weight_decay():
    layer = MaskedLinear(20, 20)
    mask = (torch.rand(20, 20) > 0.5).float()
    layer.set_mask(mask)
    opt = torch.optim.SGD(layer.parameters(), lr=0.5, momentum=0.9, weight_decay=0.1)
    cb, state = MaskAfterStep(), type("S", (), {"model": layer})()
    for _ in range(5):
        opt.zero_grad()
        layer(torch.randn(8, 20)).pow(2).sum().backward()
        opt.step()
        cb.after_step(state, 0.0, 0, 1)
    assert torch.equal(layer.weight[mask == 0], torch.zeros(int((mask == 0).sum())))
    assert "weight_mask" in layer.state_dict() and "weight_mask" not in dict(layer.named_parameters())


def test_rewind_restores_survivors_bit_for_bit():
    model = init_model(create_model("lenet_300_100", InputSpec(1, 28, 10), masked_layer_types()), "kaiming-normal", 0)
    theta0 = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    masks = {n: (torch.rand_like(m) > 0.3).float() for n, m in get_masks(model).items()}
    rewind(model, theta0, masks)
    for name, mask in masks.items():
        w = model.state_dict()[name]
        assert torch.equal(w[mask.bool()], theta0[name][mask.bool()])
        assert (w[~mask.bool()] == 0).all()


def test_rewind_point_parsing():
    assert RewindPoint.parse("0").step(10) == 0
    assert RewindPoint.parse("500it").step(10) == 500
    assert RewindPoint.parse("2ep").step(10) == 20
    with pytest.raises(SupermaskError):
        RewindPoint.parse("2 epochs")


def _config(tmp_path, **kw):
    if "target_density" not in kw:  # a target density sets the number of levels itself
        kw.setdefault("levels", 2)
    cfg = IMPConfig.for_arch("lenet_300_100", out=str(tmp_path), device="cpu", **kw)
    cfg.train = dataclasses.replace(cfg.train, epochs=1, batch_size=500)
    return cfg


def test_imp_levels_prune_rewind_and_skip(tmp_path, monkeypatch):
    result = run_imp(_config(tmp_path))
    densities = [row["density"] for row in result.levels]
    assert densities[0] == 1.0 and densities[1] < densities[0] and densities[2] < densities[1]
    # layerwise Frankle & Carbin rates for LeNet: fc 20%, output 10%
    level1 = result.levels[1]["density_per_layer"]
    assert level1["1.weight"] == pytest.approx(0.8, abs=1e-4) and level1["5.weight"] == pytest.approx(0.9, abs=1e-3)
    # the level-2 ticket: its mask, and starting weights that equal θ0 on the survivors
    masks, meta = read_ticket(result.run_dir / "level-2" / "ticket")
    start = load_state(result.run_dir / "level-2" / "ticket" / "weights.safetensors")
    theta0 = load_state(result.run_dir / "rewind.safetensors")
    for name, mask in masks.items():
        assert torch.equal(start[name][mask.bool()], theta0[name][mask.bool()])
    # the trained weights of every level are exactly zero where pruned
    final = torch.load(result.run_dir / "level-2" / "checkpoint.pt", weights_only=True)["model"]
    assert all((final[n][~m.bool()] == 0).all() for n, m in masks.items())
    # nothing is trained on a rerun
    import supermask.stage as stage
    monkeypatch.setattr(stage, "train", lambda *a, **k: pytest.fail("a finished run trained again"))
    again = run_imp(_config(tmp_path))
    assert again.skipped and again.levels == result.levels


def test_controls_reuse_imp_masks(tmp_path):
    main = run_imp(_config(tmp_path))
    reinit = run_imp(_config(tmp_path, control="reinit"))
    rand = run_imp(_config(tmp_path, control="random-prune"))
    for level in (1, 2):
        imp_masks, _ = read_ticket(main.run_dir / f"level-{level}" / "ticket")
        re_masks, _ = read_ticket(reinit.run_dir / f"level-{level}" / "ticket")
        rp_masks, _ = read_ticket(rand.run_dir / f"level-{level}" / "ticket")
        assert all(torch.equal(imp_masks[n], re_masks[n]) for n in imp_masks)  # reinit: same mask
        assert all(int(imp_masks[n].sum()) == int(rp_masks[n].sum()) for n in imp_masks)  # same counts
        assert any(not torch.equal(imp_masks[n], rp_masks[n]) for n in imp_masks)  # different edges
        imp_w = load_state(main.run_dir / f"level-{level}" / "ticket" / "weights.safetensors")
        re_w = load_state(reinit.run_dir / f"level-{level}" / "ticket" / "weights.safetensors")
        assert not torch.equal(imp_w["1.weight"], re_w["1.weight"])  # reinit: new weights
    assert reinit.levels[0] == main.levels[0]  # a control's level 0 is IMP's dense run
    assert not (reinit.run_dir / "level-0").exists()


def test_one_shot_and_target_density(tmp_path):
    one = run_imp(_config(tmp_path, one_shot=True, target_density=0.3, scope="global"))
    assert len(one.levels) == 2 and one.levels[1]["density"] == pytest.approx(0.3, abs=1e-3)
    cfg = _config(tmp_path, target_density=0.5, scope="global", prune_fraction=0.2)
    assert cfg.pruning_levels() == 4  # 0.8**3 = 0.512 > 0.5 >= 0.8**4
    with pytest.raises(SupermaskError, match="--levels 2 does nothing here: --target-density sets the number"):
        resolve(dataclasses.replace(_config(tmp_path), target_density=0.5))  # levels=2 would be ignored


def test_late_rewinding_snapshot_and_bad_rewind(tmp_path):
    cfg = dataclasses.replace(_config(tmp_path), rewind="3it", levels=1)
    result = run_imp(cfg)
    theta_k = load_state(result.run_dir / "rewind.safetensors")
    start = load_state(result.run_dir / "level-1" / "ticket" / "weights.safetensors")
    masks, _ = read_ticket(result.run_dir / "level-1" / "ticket")
    assert all(torch.equal(start[n][m.bool()], theta_k[n][m.bool()]) for n, m in masks.items())
    level0 = load_state(result.run_dir / "level-0" / "ticket" / "weights.safetensors")
    assert not torch.equal(level0["1.weight"], theta_k["1.weight"])  # θk is not θ0
    with pytest.raises(SupermaskError, match="is not before the end of training"):
        run_imp(dataclasses.replace(cfg, rewind="50ep", out=str(tmp_path / "other")))
    assert not (tmp_path / "other").exists()


def test_imp_level_exports_load_into_plain_models(tmp_path):
    from safetensors.torch import load_file

    from supermask.models import DENSE
    from supermask.exports import export_run, load_torch_prune

    result = run_imp(dataclasses.replace(_config(tmp_path), levels=1))
    level = result.run_dir / "level-1"
    masked = create_model("lenet_300_100", InputSpec(1, 28, 10), masked_layer_types())
    masked.load_state_dict(torch.load(level / "checkpoint.pt", weights_only=True)["model"])
    masked.eval()
    x = torch.randn(4, 1, 28, 28)
    for fmt in ("state-dict", "torch-prune"):
        export_run(level, fmt, tmp_path / f"{fmt}.safetensors")
        plain = create_model("lenet_300_100", InputSpec(1, 28, 10), DENSE)
        state = load_file(tmp_path / f"{fmt}.safetensors")
        if fmt == "torch-prune":
            load_torch_prune(plain, state)
        else:
            plain.load_state_dict(state)
        with torch.no_grad():
            assert torch.equal(plain.eval()(x), masked(x))
    with pytest.raises(SupermaskError, match="strong tickets only"):
        export_run(level, "ticket", tmp_path / "t")


def test_interrupted_level_resumes_to_the_uninterrupted_result(tmp_path):
    from supermask.training import Callback

    class Stop(Exception):
        pass

    class KillInLevelTwo(Callback):
        def __init__(self):
            self.level_starts = 0

        def on_train_start(self, state):
            self.level_starts += 1

        def after_step(self, state, loss, correct, count):
            if self.level_starts == 3 and state.step == state.steps_per_epoch + 1:  # level 2, after its first checkpoint
                raise Stop

    cfg = dataclasses.replace(_config(tmp_path / "b"), levels=2)
    cfg.train = dataclasses.replace(cfg.train, epochs=2)
    full = run_imp(dataclasses.replace(cfg, out=str(tmp_path / "a")))
    with pytest.raises(Stop):
        run_imp(cfg, callbacks=[KillInLevelTwo()])
    level2 = RunDir(cfg.run_dir().path / "level-2")
    assert level2.has_checkpoint() and not level2.is_finished() and not cfg.run_dir().is_finished()
    resumed = run_imp(cfg)
    for a, b in zip(full.levels, resumed.levels):
        for key in ("density", "test_accuracy", "best_val_accuracy", "min_val_loss_step", "density_per_layer"):
            assert a[key] == b[key], (a["level"], key)


def test_early_bird_stops_dense_training_once_the_mask_settles(tmp_path):
    from supermask_imp import IMPConfig, run_imp
    from supermask_imp.early_bird import mask_distance

    config = IMPConfig.for_arch("lenet_300_100", epochs=12, out=str(tmp_path), device="cpu", levels=2,
                                early_bird="magnitude", eb_epsilon=0.05, eb_window=2)
    config.train.batch_size = 500
    result = run_imp(config)
    level0 = result.levels[0]
    assert level0["method"] == "imp-early-bird-magnitude"
    assert level0["early_bird_epoch"] is not None and level0["epochs"] == level0["early_bird_epoch"] < 12
    assert level0["steps_saved"] == 12 * 8 - level0["steps"] > 0
    records = RunDir(result.run_dir / "level-0").read_metrics()
    distances = [r["mask_distance"] for r in records if r["split"] == "early-bird"]
    assert len(distances) == level0["epochs"] - 1 and max(distances[-2:]) < 0.05
    assert distances[0] > distances[-1]  # the mask settles
    assert result.levels[1]["epochs"] == 12  # later levels train the configured length
    assert mask_distance({"a": torch.tensor([1, 0, 1, 1])}, {"a": torch.tensor([1, 1, 1, 0])}) == 0.5


def test_options_that_would_do_nothing_are_refused_or_dropped_not_hashed(caplog):
    from supermask.runs import config_hash
    from supermask_imp import IMPConfig

    with pytest.raises(SupermaskError, match="apply to --early-bird only"):
        resolve(IMPConfig.for_arch("lenet_300_100", eb_window=3))
    plain = resolve(IMPConfig.for_arch("lenet_300_100", scope="global"))
    assert plain.conv_prune_fraction is None and plain.output_prune_fraction is None
    given = resolve(IMPConfig.for_arch("lenet_300_100", scope="global", conv_prune_fraction=0.1,
                               output_prune_fraction=0.3))
    assert config_hash(given) == config_hash(plain)
    assert "applies to --scope layerwise only; ignored" in caplog.text


def test_nesterov_is_refused_for_adam():
    from supermask.training import TrainConfig

    with pytest.raises(SupermaskError, match="applies to SGD only"):
        resolve(TrainConfig(optimizer="adam", nesterov=True))


def test_stop_when_unmatched_ends_imp_after_the_first_level_below_the_margin(tmp_path):
    import json

    cfg = IMPConfig.for_arch("lenet_300_100", levels=4, prune_fraction=0.9, output_prune_fraction=0.9,
                             stop_when_unmatched=1.0, out=str(tmp_path), device="cpu")
    cfg.train = dataclasses.replace(cfg.train, iterations=20, batch_size=500)
    result = run_imp(cfg)
    stopped = result.levels[-1]
    assert stopped["level"] < 4 and stopped["test_accuracy"] < result.levels[0]["test_accuracy"] - 0.01
    assert all(r["test_accuracy"] >= result.levels[0]["test_accuracy"] - 0.01 for r in result.levels[1:-1])
    summary = json.loads((result.run_dir / "result.json").read_text())
    assert summary["stopped_at_level"] == stopped["level"]
    matching = [r for r in result.levels[1:] if r["test_accuracy"] >= result.levels[0]["test_accuracy"] - 0.002]
    assert summary["sparsest_matching_level"] == (min(matching, key=lambda r: r["density"])["level"] if matching else None)
    control = run_imp(dataclasses.replace(cfg, control="random-prune"))  # follows the levels IMP ran
    assert [r["level"] for r in control.levels] == [r["level"] for r in result.levels]
    assert "stop_when_unmatched" not in json.dumps(config_dict_without_default(cfg))


def config_dict_without_default(cfg):
    from supermask.runs import result_fields, config_dict

    return result_fields(config_dict(dataclasses.replace(cfg, stop_when_unmatched=None)))
