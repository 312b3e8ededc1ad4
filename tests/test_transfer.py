"""Ticket transfer (supermask_imp.transfer): a weak ticket keeps the source's mask and starting weights
in every layer but the output, a strong one the source's hidden masks and random weights; the
controls; provenance and the hash; mismatches answered in one line; the report."""

import dataclasses
import json

import pytest
import torch

from supermask.cli import main
from supermask.configs import SearchConfig
from supermask.errors import SupermaskError
from supermask.io import read_json, read_tensors
from supermask.runs import RunDir
from supermask.search import search
from supermask.ticket_files import read_ticket, ticket_state
from supermask_imp import IMPConfig, run_imp
from supermask_imp.transfer import TransferConfig, run_transfer, source_config

TINY = dict(iterations=4, batch_size=256)


def _train(config, **kw):
    return dataclasses.replace(config, train=dataclasses.replace(config.train, **TINY, **kw))


@pytest.fixture(scope="module")
def imp_source(tmp_path_factory):
    out = tmp_path_factory.mktemp("imp")
    config = _train(IMPConfig.for_arch("lenet_300_100", levels=2, classes="0-4", out=str(out), device="cpu"))
    return run_imp(config), out


@pytest.fixture(scope="module")
def search_source(tmp_path_factory):
    out = tmp_path_factory.mktemp("search")
    config = _train(SearchConfig(arch="lenet_300_100", classes="0-4", out=str(out), device="cpu"))
    return search(config), out


def _transfer(source_dir, out, **kw):
    return TransferConfig(source=str(source_dir), arch="lenet_300_100", classes="5-9", out=str(out), device="cpu",
                          **kw)


def test_a_weak_ticket_keeps_the_source_mask_and_weights_in_every_layer_but_the_output(imp_source, tmp_path):
    imp, _ = imp_source
    result = run_transfer(_transfer(imp.run_dir, tmp_path))
    source_level = RunDir(imp.run_dir / "level-2")
    moved = RunDir(result.run_dir / "level-2" / "transferred")
    masks_a, meta_a = read_ticket(source_level.ticket_dir)
    masks_b, meta_b = read_ticket(moved.ticket_dir)
    start_a = read_tensors(source_level.ticket_dir / "weights.safetensors")
    start_b = read_tensors(moved.ticket_dir / "weights.safetensors")
    output = [k for k in masks_a if masks_a[k].shape[0] == 5]
    assert len(output) == 1 and len(masks_a) == 3  # 5 classes on each side: the output layer has 5 rows
    output = output[0]
    for name in masks_a:
        if name == output:
            assert bool(masks_b[name].all())  # a new, dense output layer (the default)
            assert not torch.equal(start_a[name], start_b[name])  # drawn afresh
            continue
        assert torch.equal(masks_a[name], masks_b[name])
        assert torch.equal(start_a[name], start_b[name])  # bit for bit
        bias = name.replace("weight", "bias")
        assert torch.equal(start_a[bias], start_b[bias])
    assert (masks_a[output] == 0).any()  # the source pruned its output layer; the transfer does not
    # what the ticket says of itself and where it came from
    assert meta_b["source"] == str(imp.run_dir) and meta_b["source_engine"] == "imp"
    assert meta_b["classes"] == "5-9" and meta_b["num_classes"] == 5 and meta_b["source_dataset"] == "mnist-5k[0-4]"
    from supermask.runs import config_hash

    config = read_json(result.run_dir / "config.json")
    assert config["source_config_hash"] == config_hash(source_config(str(imp.run_dir)))
    assert config["source_config_hash"] == meta_b["source_config_hash"]
    branches = {(r["level"], r["branch"]) for r in result.rows}
    assert branches == {(0, "transferred"), (0, "target"), (1, "transferred"), (1, "random-mask"), (1, "target"),
                        (2, "transferred"), (2, "random-mask"), (2, "target")}
    target = next(r for r in result.rows if r["branch"] == "target" and r["level"] == 2)
    assert "imp/" in target["run"] and read_json(RunDir(target["run"]).config_path)["classes"] == "5-9"


def test_the_random_mask_control_keeps_each_layers_count_and_the_weights(imp_source, tmp_path):
    imp, _ = imp_source
    result = run_transfer(_transfer(imp.run_dir, tmp_path, controls=("random-mask",)))
    moved = RunDir(result.run_dir / "level-2" / "transferred")
    control = RunDir(result.run_dir / "level-2" / "random-mask")
    masks_t, _ = read_ticket(moved.ticket_dir)
    masks_r, _ = read_ticket(control.ticket_dir)
    start_r = read_tensors(control.ticket_dir / "weights.safetensors")
    rewound = read_tensors(imp.run_dir / "rewind.safetensors")  # the source's θ0, every weight of it
    for name in masks_t:
        assert int(masks_t[name].sum()) == int(masks_r[name].sum())
        kept = masks_r[name].bool()
        if masks_t[name].shape[0] != 5:  # the output layer (5 classes) is the target's own
            assert torch.equal(start_r[name][kept], rewound[name][kept])
            assert bool((rewound[name][kept] != 0).all())  # not the source level's zeros
        assert bool((start_r[name][~kept] == 0).all())
    first = next(n for n in masks_t if masks_t[n].shape[0] != 5)
    assert not torch.equal(masks_t[first], masks_r[first])
    assert not any(r["branch"] == "target" for r in result.rows)


def test_a_pruned_output_layer_keeps_the_levels_output_density(imp_source, tmp_path):
    imp, _ = imp_source
    result = run_transfer(_transfer(imp.run_dir, tmp_path, levels=(2,), output_layer="pruned", controls=()))
    masks_a, _ = read_ticket(RunDir(imp.run_dir / "level-2").ticket_dir)
    masks_b, _ = read_ticket(RunDir(result.run_dir / "level-2" / "transferred").ticket_dir)
    output = next(k for k in masks_a if masks_a[k].shape[0] == 5)
    assert int(masks_b[output].sum()) == int(masks_a[output].sum())
    assert [r["branch"] for r in result.rows] == ["transferred"]


def test_a_strong_ticket_keeps_the_source_hidden_masks_and_random_weights(search_source, tmp_path):
    found, _ = search_source
    result = run_transfer(_transfer(found.run_dir, tmp_path))
    masks_a, _ = read_ticket(RunDir(found.run_dir).ticket_dir)
    state_a = ticket_state(found.run_dir)
    for branch in ("transferred", "random-mask"):
        run = result.run_dir / branch
        masks_b, meta = read_ticket(RunDir(run).ticket_dir)
        state_b = ticket_state(run)
        assert meta["kind"] == "strong" and meta["source_checksum"]
        hidden = [n for n in masks_a if masks_a[n].shape[0] != 5]
        assert len(hidden) == 2
        for name in hidden:  # the source's random weights and (transferred) masks
            assert torch.equal(state_a[name], state_b[name])
            assert name.replace("weight", "bias") not in state_b  # a strong ticket's LeNet: no biases
            same = torch.equal(masks_a[name], masks_b[name])
            assert same if branch == "transferred" else not same
            assert int(masks_b[name].sum()) == int(masks_a[name].sum())
    assert {r["branch"] for r in result.rows} == {"transferred", "random-mask", "target"}


def test_provenance_is_in_the_hash_and_the_cli_resolves_the_same_run(imp_source, tmp_path, capsys):
    imp, _ = imp_source
    config = _transfer(imp.run_dir, tmp_path, levels=(1,), controls=())
    from supermask.resolved import resolve
    from supermask.runs import config_hash

    resolved = resolve(config)
    assert resolved.source_engine == "imp" and len(resolved.source_checksum) == 64
    other = resolve(dataclasses.replace(config, output_layer="pruned"))
    assert config_hash(other) != config_hash(resolved)
    code = main(["transfer", "--source", str(imp.run_dir), "--classes", "5-9", "--levels", "1", "--controls", "none",
                 "--out", str(tmp_path), "--device", "cpu", "--dry-run"])
    assert code == 0
    assert str(resolved.run_dir().path) in capsys.readouterr().out


def test_a_changed_source_is_refused(imp_source, tmp_path):
    imp, _ = imp_source
    resolved_checksum = run_transfer(_transfer(imp.run_dir, tmp_path, levels=(1,), controls=())).rows
    assert resolved_checksum
    config = _transfer(imp.run_dir, tmp_path, levels=(1,), controls=(), source_checksum="0" * 64)
    with pytest.raises(SupermaskError, match="checksum differs"):
        run_transfer(config)


def test_mismatches_are_one_line(imp_source, search_source, tmp_path, capsys):
    from tests.test_data import fake_cifar

    imp, _ = imp_source
    found, _ = search_source
    fake_cifar(tmp_path / "data")
    cases = [
        (["--source", str(imp.run_dir), "--dataset", "cifar10", "--data-root", str(tmp_path / "data")],
         "takes 1x28x28 inputs, the target data 3x32x32: convert the target's images with --input-shape 1x28x28"),
        (["--source", str(imp.run_dir), "--classes", "5-12"], "no class 10"),
        (["--source", str(imp.run_dir), "--levels", "7"], "the source ran levels 0,1,2, not 7"),
        (["--source", str(found.run_dir), "--levels", "1"], "--levels applies to a weak ticket"),
        (["--source", str(imp.run_dir), "--seed", "3"], "No such option '--seed'"),
        (["--source", str(tmp_path)], "not a finished run"),
        (["--classes", "5-9"], "give --source"),
    ]
    for args, message in cases:
        code = main(["transfer", *args, "--out", str(tmp_path / "runs"), "--device", "cpu", "-q"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and message in err and len(err.splitlines()) == 1, (args, err)


def test_rescore_output_is_refused_where_it_cannot_keep_the_masks(tmp_path):
    out = tmp_path / "g"
    found = search(_train(SearchConfig(arch="lenet_300_100", classes="0-4", scope="global", out=str(out),
                                       device="cpu")))
    with pytest.raises(SupermaskError, match="global top-k"):
        run_transfer(_transfer(found.run_dir, tmp_path))


def test_compare_draws_the_transfer_table(imp_source, tmp_path):
    from supermask.report import compare

    imp, _ = imp_source
    result = run_transfer(_transfer(imp.run_dir, tmp_path / "runs", levels=(0, 1)))
    text, problems, written = compare([tmp_path / "runs" / "transfer"], tmp_path / "report")
    names = {p.name for p in written}
    assert {"transfer.md", "transfer.csv", "transfer_accuracy_vs_density.png", "transfer_accuracy_vs_density.pdf"} <= names
    lines = (tmp_path / "report" / "transfer.csv").read_text().splitlines()
    assert len(lines) == 1 + 2 + 3  # header; level 0: transferred, target; level 1: and the random mask
    ticket = [line for line in lines if ",1,transferred," in line][0]
    row = next(r for r in result.rows if r["level"] == 1 and r["branch"] == "transferred")
    assert f"{100 * row['test_accuracy']:.4f}" in ticket
    assert "mnist-5k[0-4] → mnist-5k[5-9]" in text


def test_transferred_tickets_export_and_evaluate_to_their_reported_accuracy(imp_source, search_source, tmp_path):
    from supermask.exports import evaluate_export, export_run

    imp, _ = imp_source
    found, _ = search_source
    weak = run_transfer(_transfer(imp.run_dir, tmp_path, levels=(1,), controls=()))
    strong = run_transfer(_transfer(found.run_dir, tmp_path, controls=()))
    for stage, fmt in ((weak.run_dir / "level-1" / "transferred", "state-dict"),
                       (strong.run_dir / "transferred", "ticket"), (strong.run_dir / "transferred", "sparse")):
        path = tmp_path / f"{stage.name}-{fmt}.safetensors"
        export_run(stage, fmt, path)
        again = evaluate_export(path)
        assert again["test_accuracy"] == RunDir(stage).read_result()["test_accuracy"]
        assert again["examples"] == 250 and again["dataset"] == "mnist-5k classes 5-9"


def test_a_target_of_another_shape_is_converted_to_the_sources(imp_source, tmp_path):
    from tests.test_data import fake_cifar

    imp, _ = imp_source
    fake_cifar(tmp_path / "data", n_per_batch=60)
    config = _transfer(imp.run_dir, tmp_path, dataset="cifar10", data_root=str(tmp_path / "data"),
                       input_shape="1x28x28", levels=(1,), controls=())
    config = dataclasses.replace(config, classes=None)
    result = run_transfer(config)
    _, meta = read_ticket(RunDir(result.run_dir / "level-1" / "transferred").ticket_dir)
    assert meta["input_shape"] == [1, 28, 28] and meta["converted_to"] == "1x28x28" and meta["num_classes"] == 10


def test_strong_transfers_of_several_densities_are_one_curve_never_pooled(tmp_path):
    from supermask.report import compare

    for density in (0.3, 0.5):
        found = search(_train(SearchConfig(arch="lenet_300_100", classes="0-4", density=density, out=str(tmp_path),
                                           device="cpu")))
        run_transfer(_transfer(found.run_dir, tmp_path / "runs", controls=("random-mask",)))
    compare([tmp_path / "runs" / "transfer"], tmp_path / "report")
    import csv

    rows = list(csv.DictReader((tmp_path / "report" / "transfer.csv").open()))
    assert len(rows) == 4 and len({row["config"] for row in rows}) == 1  # one configuration
    assert sorted({row["density"] for row in rows}) == ["0.300000", "0.500000"]
    assert all(row["n"] == "1" for row in rows)
