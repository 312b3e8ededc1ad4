"""The run directories (config hashes) and the config.json of one default config per engine and
method, pinned: written before the run-stage refactor (supermask 0.2.0 at 0a7db55), so that no
restructuring moves a run directory or changes a file a run writes. A change here is a change of
results: it belongs in its own commit that says so.

Changed on purpose since: the IMP configs' config.json gained ``stop_when_unmatched`` (null), the
option of the stability issue; their run directories (the hash omits it at null) did not move.

Each case runs ``--dry-run`` (the resolver every run uses; nothing is written) and compares the
run directory it names and a digest of the resolved config.json it prints.
"""

import contextlib
import hashlib
import io

import pytest

from supermask.cli import main

PINS = [
    ('--arch conv6',
     'runs/search/conv6-mnist-5k/8228bd68f7fe/seed-0', '95cad7d4be653110'),
    ('--arch conv4 --structure nm:2:4',
     'runs/search/conv4-mnist-5k/bb74cccdaee6/seed-0', '64138bd7fc83fe52'),
    ('--arch lenet_300_100 --structure channel --density 0.5',
     'runs/search/lenet_300_100-mnist-5k/8e336210b7ef/seed-0', 'eddcc1d6489ba00c'),
    ('--arch lenet_300_100 --method bernoulli',
     'runs/search/lenet_300_100-mnist-5k/9a7486ebb21b/seed-0', '0277141c5cd19fe9'),
    ('--arch lenet_300_100 --method biprop',
     'runs/search/lenet_300_100-mnist-5k/f5308ef7c775/seed-0', '58c31c7e8660dfe8'),
    ('--arch lenet_300_100 --method gem-miner',
     'runs/search/lenet_300_100-mnist-5k/3e5830851bd2/seed-0', '579250f05c4481c4'),
    ('--arch lenet_300_100 --method iterand',
     'runs/search/lenet_300_100-mnist-5k/4eeb3af4c690/seed-0', 'f1ab55470422f8af'),
    ('--arch conv2 --scope global --density 0.1',
     'runs/search/conv2-mnist-5k/07dc234e73d5/seed-0', '2efa7a151c6cd5c8'),
    ('--arch conv6',
     'runs/train/conv6-mnist-5k/62f3a0bc6702/seed-0', '5592f79226d82de5'),
    ('--arch lenet_300_100 --levels 3',
     'runs/imp/lenet_300_100-mnist-5k/97778ef33b95/seed-0', '4a2d5d4d281dd916'),
    ('--arch conv4 --rewind 100it --levels 2',
     'runs/imp/conv4-mnist-5k/461264978c8b/seed-0', 'bc790ffb1292b4b0'),
    ('--arch lenet_300_100 --levels 2 --control reinit',
     'runs/imp/lenet_300_100-mnist-5k/0b4c6641607a/seed-0', 'b39bd37cc9dcfbcb'),
    ('--arch lenet_300_100 --levels 2 --control random-prune',
     'runs/imp/lenet_300_100-mnist-5k/cc39f8216390/seed-0', '0c6dd24ed3d24756'),
    ('--arch lenet_300_100 --levels 2 --early-bird magnitude',
     'runs/imp/lenet_300_100-mnist-5k/9e4f9a17aee7/seed-0', '0cf8917dcb9a8872'),
    ('--arch vgg11 --early-bird channel',
     'runs/imp/vgg11-mnist-5k/02d82fa8db0a/seed-0', '17999f4a9ba02960'),
    ('--arch conv4 --structure channel --levels 2',
     'runs/imp/conv4-mnist-5k/6920eeb890ae/seed-0', '62dd815a5e00ec10'),
    ('--arch lenet_300_100 --structure nm:2:4',
     'runs/imp/lenet_300_100-mnist-5k/fe5c98ac75bf/seed-0', 'eccd17e99210113c'),
    ('--arch lenet_300_100 --method random',
     'runs/prune/lenet_300_100-mnist-5k/3f8b9e647144/seed-0', 'd4427463c78b8f36'),
    ('--arch lenet_300_100 --method magnitude',
     'runs/prune/lenet_300_100-mnist-5k/5d771f7af88b/seed-0', 'b36f30c71cc87dec'),
    ('--arch lenet_300_100 --method snip',
     'runs/prune/lenet_300_100-mnist-5k/f72e9a59cb53/seed-0', 'd5b16ea2033e2569'),
    ('--arch conv2 --method grasp',
     'runs/prune/conv2-mnist-5k/ba2e40e48e09/seed-0', '61cd56f4e8ea295b'),
    ('--arch lenet_300_100 --method synflow --density 0.05',
     'runs/prune/lenet_300_100-mnist-5k/b41ffff974ba/seed-0', '313d023fa78f307a'),
]
COMMANDS = {"search", "train", "imp", "prune"}


def dry_run(command: str, args: list[str]) -> tuple[str, str]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main([command, *args, "--dry-run", "--out", "runs"])
    assert code == 0
    header, body = buf.getvalue().split("\n", 1)
    return header.split("run directory ", 1)[1].split(" (hash")[0], hashlib.sha256(body.encode()).hexdigest()[:16]


@pytest.mark.parametrize("args,run_dir,config_digest", PINS, ids=[p[1].split("/", 1)[1] for p in PINS])
def test_default_configs_keep_their_run_directory_and_config(args, run_dir, config_digest):
    command = run_dir.split("/")[1]
    assert command in COMMANDS
    assert dry_run(command, args.split()) == (run_dir, config_digest)


def test_tiny_runs_of_every_engine_write_the_pinned_files_and_numbers(tmp_path):
    """Four steps of search, Bernoulli, dense training, IMP with a control, channel early-bird and
    SNIP: the same files, accuracies, ticket checksums and result keys as before the refactor."""
    import json
    from pathlib import Path

    from pinned_runs import CASES, outputs

    pins = json.loads((Path(__file__).parent / "pins" / "run_outputs.json").read_text())
    assert set(pins) == set(CASES)
    for name, args in CASES.items():
        root = tmp_path / name
        assert outputs(args, root) == pins[name], name
