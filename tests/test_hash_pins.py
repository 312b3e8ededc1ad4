"""The run directories (config hashes) and the config.json of one default config per engine and
method, pinned: written before the run-stage refactor (supermask 0.2.0 at 0a7db55), so that no
restructuring moves a run directory or changes a file a run writes. A change here is a change of
results: it belongs in its own commit that says so.

Changed on purpose since: the IMP configs' config.json gained ``stop_when_unmatched`` (null), the
option of the stability issue; their run directories (the hash omits it at null) did not move. Every
config.json gained ``classes`` (null: every class) and ``input_shape`` (null: the data's own), of
the transfer issue; no run directory moved (the hash omits both at null). Every config.json gained
``context`` (null: image data) and ``depth`` (null: the architecture's), of the language-model
issue, and the IMP and dense configs ``init_from`` and ``init_from_checksum`` (null: the random init);
no run directory moved (the hash omits them at null; a path is never hashed). Every config.json
gained ``train_subset`` (null: the whole training split), ``wandb_project`` (null: no W&B
logging) and ``keep_checkpoints`` (false), of the usability issue, and ``bias`` (null: the
architecture's own), of the fidelity issue; no run directory moved (the hash omits train_subset
and bias at null and never covers the other two). A finished run no longer keeps
``checkpoint.prev.pt``, nor the optimiser and RNG states in ``checkpoint.pt``. Every config.json's
``train`` gained ``test_every_epoch`` (false: the test split evaluated at the end), of the
usability issue; no run directory moved (the hash omits it at false; the results are the same).
The LeNet searches moved (issue 23, fidelity): a search resolves the builder's ``bias`` (True for
lenet_300_100) to False, as the strong-ticket references build their networks, so their config
records ``bias: false`` and their results change. In the same issue the Bernoulli, biprop and
IteRand defaults moved to their references' code (Glorot-normal weights and the count's gradient;
the builder's scaled-fan rule; kaiming-uniform weights and ReLU-gain scores, the re-draw step),
recorded as ``init``, ``scaled_fan``, ``score_init`` and ``method_revision`` (omitted at 1), and the
channel early-bird ticket's BatchNorm γ starts at 0.5 (``bn_init: half``): those run directories
moved too; no other one did. The IMP configs' config.json then gained ``eb_retrain`` (null: ours,
the early-bird weights), no run directory moved (the hash omits it at null).

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
     'runs/search/conv6-mnist-5k/8228bd68f7fe/seed-0', '2e3c46d946e44185'),
    ('--arch conv4 --structure nm:2:4',
     'runs/search/conv4-mnist-5k/bb74cccdaee6/seed-0', '0584813037a1192d'),
    ('--arch lenet_300_100 --structure channel --density 0.5',
     'runs/search/lenet_300_100-mnist-5k/b3d5b6f768cb/seed-0', '5a508817bb96affd'),
    ('--arch lenet_300_100 --method bernoulli',
     'runs/search/lenet_300_100-mnist-5k/a39702a611bb/seed-0', '0f58a4b89341d196'),
    ('--arch lenet_300_100 --method biprop',
     'runs/search/lenet_300_100-mnist-5k/f5b25ffaef30/seed-0', 'ab8b47ae92bc8dc5'),
    ('--arch lenet_300_100 --method gem-miner',
     'runs/search/lenet_300_100-mnist-5k/0b9045eefef7/seed-0', '85861121dd230cf2'),
    ('--arch lenet_300_100 --method iterand',
     'runs/search/lenet_300_100-mnist-5k/0d16b3bbfbf2/seed-0', 'c5fd5e02efc5d314'),
    ('--arch conv2 --scope global --density 0.1',
     'runs/search/conv2-mnist-5k/07dc234e73d5/seed-0', '25685cc2edb5f118'),
    ('--arch conv6',
     'runs/train/conv6-mnist-5k/62f3a0bc6702/seed-0', '65fab4627792153d'),
    ('--arch lenet_300_100 --levels 3',
     'runs/imp/lenet_300_100-mnist-5k/97778ef33b95/seed-0', 'a9a80eeba624f051'),
    ('--arch conv4 --rewind 100it --levels 2',
     'runs/imp/conv4-mnist-5k/461264978c8b/seed-0', '4d010f3c08d3d59a'),
    ('--arch lenet_300_100 --levels 2 --control reinit',
     'runs/imp/lenet_300_100-mnist-5k/0b4c6641607a/seed-0', '0123164a2cf18c6d'),
    ('--arch lenet_300_100 --levels 2 --control random-prune',
     'runs/imp/lenet_300_100-mnist-5k/cc39f8216390/seed-0', '2a7642a424813730'),
    ('--arch lenet_300_100 --levels 2 --early-bird magnitude',
     'runs/imp/lenet_300_100-mnist-5k/9e4f9a17aee7/seed-0', '75cc2d8f590a248a'),
    ('--arch vgg11 --early-bird channel',
     'runs/imp/vgg11-mnist-5k/2ad9058b139d/seed-0', '76180024e56dc462'),
    ('--arch conv4 --structure channel --levels 2',
     'runs/imp/conv4-mnist-5k/6920eeb890ae/seed-0', 'f431da9378750fbb'),
    ('--arch lenet_300_100 --structure nm:2:4',
     'runs/imp/lenet_300_100-mnist-5k/fe5c98ac75bf/seed-0', '66295b3053cd968d'),
    ('--arch lenet_300_100 --method random',
     'runs/prune/lenet_300_100-mnist-5k/3f8b9e647144/seed-0', 'ed4d853965aa2703'),
    ('--arch lenet_300_100 --method magnitude',
     'runs/prune/lenet_300_100-mnist-5k/5d771f7af88b/seed-0', '48bbc0d8c9f49fe4'),
    ('--arch lenet_300_100 --method snip',
     'runs/prune/lenet_300_100-mnist-5k/f72e9a59cb53/seed-0', '16b3b062043ce62e'),
    ('--arch conv2 --method grasp',
     'runs/prune/conv2-mnist-5k/ba2e40e48e09/seed-0', '6052b5aed8f884c4'),
    ('--arch lenet_300_100 --method synflow --density 0.05',
     'runs/prune/lenet_300_100-mnist-5k/b41ffff974ba/seed-0', 'f86d8accb83f9d7c'),
]
COMMANDS = {"search", "train", "imp", "prune"}


def dry_run(command: str, args: list[str]) -> tuple[str, str]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main([command, *args, "--dry-run", "--verbose", "--out", "runs"])
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

    from pinned_runs import CASES, float_environment, outputs

    pins = json.loads((Path(__file__).parent / "pins" / "run_outputs.json").read_text())
    same_floats = pins.pop("float_environment") == float_environment()
    assert set(pins) == set(CASES)
    for name, args in CASES.items():
        got, pinned = outputs(args, tmp_path / name), pins[name]
        if not same_floats:  # another machine's kernels: its last bits, not a changed result
            for runs in (got["runs"], pinned["runs"]):
                for run in runs.values():
                    run.pop("state_checksum", None)
        assert got == pinned, name
