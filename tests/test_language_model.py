"""Tickets in language models: text data by position, a causal GPT, loss-based selection, and the
engines on it."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from supermask.cli import main
from supermask.data import fingerprint, load_dataset, make_loader
from supermask.data.text import TokenSplit, corpus, split_by_position
from supermask.errors import SupermaskError
from supermask.models import DENSE, InputSpec, create_model, masked_layer_types
from supermask.configs import SearchConfig
from supermask.resolved import resolve

SPEC = InputSpec(0, 0, 11, task="language-model", context=12)
SMALL = ["--arch", "gpt_tiny", "--dataset", "tinyshakespeare", "--width", "0.25", "--depth", "1",
         "--iterations", "3", "--batch-size", "16", "--device", "cpu", "-q"]


def test_the_bundled_corpus_splits_by_position_into_shifted_windows():
    data = load_dataset("tinyshakespeare")
    info = data.info
    assert info.task == "language-model" and info.num_classes == len(info.vocabulary) == 65
    assert info.vocabulary == "".join(sorted(set(info.vocabulary)))
    lengths = [len(s.tokens) for s in (data.train, data.val, data.test)]
    assert sum(lengths) == 1_115_394 and lengths[0] == int(1_115_394 * 0.9)
    text = "".join(info.vocabulary[i] for i in torch.cat([data.train.tokens, data.val.tokens, data.test.tokens]))
    assert text.startswith("First Citizen:\nBefore we proceed any further")  # the corpus, in order, unshuffled
    for split in (data.train, data.val, data.test):
        x, y = split[3]
        assert x.shape == y.shape == (64,)
        assert torch.equal(y[:-1], x[1:])  # targets are the inputs shifted by one
        assert torch.equal(x, split.tokens[3 * 64:4 * 64]) and y[-1] == split.tokens[4 * 64]


def test_splits_never_share_a_position_and_the_loader_batches_windows():
    tokens = torch.arange(1000)
    train, val, test = split_by_position(tokens)
    assert torch.equal(torch.cat([train, val, test]), tokens)  # disjoint, in order, complete
    split = TokenSplit(train, 10)
    assert len(split) == (900 - 1) // 10
    batches = list(make_loader(split, None, 7, train=True, seed=3))
    seen = torch.cat([x[:, 0] for x, _ in batches])
    assert sorted(seen.tolist()) == list(range(0, 890, 10))  # every window once an epoch
    assert all(torch.equal(y[:, :-1], x[:, 1:]) for x, y in batches)
    again = list(make_loader(split, None, 7, train=True, seed=3))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, again))  # the order is (seed, epoch)'s


def test_the_vocabulary_context_and_text_enter_the_fingerprint(tmp_path):
    base = corpus("abcabcabdabcabcabcaaabbbccc" * 20, "t", context=4)
    assert fingerprint(base) != fingerprint(corpus("abcabcabdabcabcabcaaabbbccc" * 20, "t", context=5))
    assert fingerprint(base) != fingerprint(corpus("abcabcabdabcabcabcaaabbbccd" * 20, "t", context=4))
    path = tmp_path / "corpus.txt"
    path.write_text("hello world, a small corpus of text\n" * 50, encoding="utf-8")
    data = load_dataset(f"text:{path}", context=8)
    assert data.info.context == 8 and len(data.train[0][0]) == 8
    path.write_bytes(b"\xff\xfe not utf-8")
    with pytest.raises(SupermaskError, match="not UTF-8 text"):
        load_dataset(f"text:{path}")


def test_a_future_character_changes_no_earlier_output():
    torch.manual_seed(0)
    model = create_model("gpt_tiny", SPEC, DENSE, width=0.25, depth=2).eval()
    x = torch.randint(0, 11, (2, 12))
    changed = x.clone()
    changed[:, 7] = (changed[:, 7] + 1) % 11
    with torch.no_grad():
        a, b = model(x), model(changed)
    assert torch.equal(a[:, :7], b[:, :7])  # positions before 7 never see it
    assert not torch.allclose(a[:, 7:], b[:, 7:])


def _plain_gpt(model, masks, x):
    """The masked GPT's forward written out in plain torch with the masked weights."""
    state = model.state_dict()
    w = lambda name: state[name + ".weight"] * masks.get(name + ".weight", 1.0)  # noqa: E731
    b = lambda name: state[name + ".bias"]  # noqa: E731
    h = state["token_embed.weight"][x] + state["pos_embed"][:, :x.shape[1]]
    heads, dim = 4, h.shape[-1]
    for i in range(len(model.blocks)):
        p = f"blocks.{i}."
        n = F.layer_norm(h, (dim,), state[p + "norm1.weight"], state[p + "norm1.bias"])
        q, k, v = (F.linear(n, w(p + f"attn.{t}_proj"), b(p + f"attn.{t}_proj")) for t in "qkv")
        q, k, v = (t.view(*t.shape[:2], heads, -1).transpose(1, 2) for t in (q, k, v))
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        causal = torch.ones(x.shape[1], x.shape[1], dtype=torch.bool).tril()
        att = scores.masked_fill(~causal, float("-inf")).softmax(-1) @ v
        att = att.transpose(1, 2).reshape(*h.shape)
        h = h + F.linear(att, w(p + "attn.out_proj"), b(p + "attn.out_proj"))
        n = F.layer_norm(h, (dim,), state[p + "norm2.weight"], state[p + "norm2.bias"])
        h = h + F.linear(F.gelu(F.linear(n, w(p + "mlp.0"), b(p + "mlp.0"))), w(p + "mlp.2"), b(p + "mlp.2"))
    h = F.layer_norm(h, (dim,), state["norm.weight"], state["norm.bias"])
    return h @ state["token_embed.weight"].t()


def test_a_masked_gpt_computes_what_plain_torch_computes_with_the_masked_weights():
    from supermask.nn.masked import get_masks, set_masks

    torch.manual_seed(1)
    model = create_model("gpt_tiny", SPEC, masked_layer_types(), width=0.25, depth=2).eval()
    masks = {name: (torch.rand_like(m) < 0.3).float() for name, m in get_masks(model).items()}
    assert len(masks) == 2 * 6  # q, k, v, out and the MLP's two layers per block; embeddings unpruned
    set_masks(model, masks)
    x = torch.randint(0, 11, (3, 12))
    with torch.no_grad():
        assert torch.allclose(model(x), _plain_gpt(model, masks, x), atol=1e-5)


def test_selection_takes_the_lowest_validation_loss():
    from supermask.training.loop import best_evaluation

    history = [{"epoch": 0, "step": 0, "initial": True, "val_loss": 9.0, "val_accuracy": 0.0, "density": 1.0},
               {"epoch": 1, "step": 5, "val_loss": 2.0, "val_accuracy": 0.30, "density": 1.0},
               {"epoch": 2, "step": 10, "val_loss": 1.5, "val_accuracy": 0.28, "density": 1.0},
               {"epoch": 3, "step": 15, "val_loss": 1.5, "val_accuracy": 0.29, "density": 1.0}]
    lowest = min((h for h in history[1:]), key=lambda h: (h["val_loss"], h["epoch"]))  # ties: the earliest
    assert best_evaluation(history, by_loss=True) is lowest and lowest["epoch"] == 2
    assert best_evaluation(history)["epoch"] == 1  # image classification: the best accuracy


@pytest.mark.parametrize("command", ["search", "imp", "train"])
def test_every_engine_runs_on_the_bundled_text_and_reports_loss_per_character(command, tmp_path, capsys):
    extra = ["--levels", "1"] if command == "imp" else []
    assert main([command, *SMALL, *extra, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    results = [json.loads(p.read_text()) for p in tmp_path.rglob("result.json")]
    rows = [r for r in results if "levels" not in r]
    assert rows and all(r["task"] == "language-model" for r in rows)
    for r in rows:
        assert 0 < r["test_loss"] < 5 and r["test_perplexity"] == pytest.approx(math.exp(r["test_loss"]))
        assert r["selection"] == "best-val"
    assert ("test loss" in out) and ("nats/char" in out or "next-char acc" in out)


def test_text_options_are_checked(capsys, tmp_path):
    for args, message in ((["--dataset", "mnist-5k", "--context", "8"], "--context applies to text data sets"),
                          (["--dataset", "tinyshakespeare", "--classes", "0-4"], "--classes applies to image data"),
                          (["--dataset", "tinyshakespeare", "--context", "0"], "context must be a positive number"),
                          (["--arch", "conv6", "--dataset", "tinyshakespeare"], "conv6 classifies images; tinyshakespeare is text"),
                          (["--arch", "gpt_tiny"], "gpt_tiny is a language model; mnist-5k holds images")):
        code = main(["search", *args, "--out", str(tmp_path), "--iterations", "1"])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_dense_training_beats_the_unigram_entropy_of_the_corpus(tmp_path, capsys):
    """The test split's cross-entropy under the training split's character frequencies (add-one
    smoothed), computed here: 3.36 nats per character. A small GPT trained 150 steps goes below it."""
    data = load_dataset("tinyshakespeare")
    counts = torch.bincount(data.train.tokens, minlength=data.info.num_classes).double() + 1
    unigram = -(counts / counts.sum())[data.test.tokens].log().mean().item()
    assert 3.3 < unigram < 3.4
    args = ["train", "--arch", "gpt_tiny", "--dataset", "tinyshakespeare", "--width", "0.5", "--depth", "2",
            "--iterations", "150", "--batch-size", "32", "--device", "cpu", "-q", "--out", str(tmp_path)]
    assert main(args) == 0
    result = json.loads(next(tmp_path.rglob("result.json")).read_text())
    assert result["test_loss"] < unigram, (result["test_loss"], unigram)


def test_compare_reports_language_models_by_loss_and_never_mixes_tasks(tmp_path, capsys):
    runs = tmp_path / "runs"
    assert main(["search", *SMALL, "--density", "0.5,0.2", "--out", str(runs)]) == 0
    assert main(["train", *SMALL, "--out", str(runs)]) == 0
    assert main(["search", "--arch", "lenet_300_100", "--iterations", "2", "--batch-size", "500", "--device", "cpu",
                 "-q", "--out", str(runs)]) == 0  # an image classifier beside them
    assert main(["compare", str(runs), "--out", str(tmp_path / "report")]) == 0
    report = tmp_path / "report"
    md = (report / "comparison.md").read_text()
    text_part = md.split("### gpt_tiny on tinyshakespeare", 1)[1].split("###", 1)[0]
    image_part = md.split("### lenet_300_100 on mnist-5k", 1)[1].split("###", 1)[0]
    assert "test loss, nats/char" in text_part and "test acc %" not in text_part
    assert "test acc %" in image_part and "nats" not in image_part
    losses = [json.loads(p.read_text())["test_loss"] for p in runs.rglob("result.json") if "gpt_tiny" in str(p)]
    assert any(f"{loss:.3f}" in text_part for loss in losses)  # the loss itself, not an accuracy
    text_csv = (report / "comparison_text.csv").read_text().splitlines()
    image_csv = (report / "comparison.csv").read_text().splitlines()
    assert text_csv[0].startswith("arch,dataset,method,density,density_reached,test_loss_mean")
    assert all("gpt_tiny" in line for line in text_csv[1:]) and all("lenet" in line for line in image_csv[1:])
    assert (report / "loss_vs_density.png").exists() and (report / "accuracy_vs_density.png").exists()


def test_a_gpt_tickets_exports_load_back_and_evaluate_to_the_reported_network(tmp_path, capsys):
    assert main(["search", *SMALL, "--out", str(tmp_path / "runs")]) == 0
    run = next((tmp_path / "runs").rglob("result.json")).parent
    reported = json.loads((run / "result.json").read_text())["test_accuracy"]
    for fmt in ("ticket", "state-dict", "sparse", "torch-prune"):
        out = tmp_path / f"gpt.{fmt}"
        assert main(["export", str(run), "--format", fmt, "--out", str(out)]) == 0
        capsys.readouterr()
        assert main(["evaluate", str(out)]) == 0
        line = capsys.readouterr().out
        assert "nats/char" in line and "windows of 64 characters" in line and "(the same)" in line, line
        assert f"next-character accuracy {reported:.4f}" in line


def test_the_dense_baseline_and_imp_of_a_language_model_train_as_nanogpt(tmp_path):
    """Both weak-ticket engines train a GPT with nanoGPT's optimiser, from the library (not the CLI)."""
    from supermask import resolve
    from supermask.dense import DenseConfig
    from supermask_imp import IMPConfig

    for config in (DenseConfig(arch="gpt_tiny", dataset="tinyshakespeare"),
                   IMPConfig.for_arch("gpt_tiny", dataset="tinyshakespeare")):
        train = resolve(config).train
        assert (train.optimizer, train.lr, train.weight_decay, train.batch_size, train.schedule) == (
            "adamw", 1e-3, 0.1, 64, "cosine")
    image = resolve(DenseConfig(arch="conv6")).train  # the image baselines keep theirs
    assert (image.optimizer, image.lr, image.batch_size) == ("sgd", 0.01, 128)


def test_the_untied_gpt_searches_its_own_output_layer():
    from supermask.methods import METHODS
    from supermask.nn import model_masks

    config = resolve(SearchConfig(arch="gpt_tiny_untied", dataset="tinyshakespeare", width=0.25, depth=1,
                                  density=0.3))
    model = METHODS.get("edge-popup").build(config, SPEC).eval()
    masks = model_masks(model)
    assert "head.weight" in masks and masks["head.weight"].mean().item() == pytest.approx(0.3, abs=0.01)
    assert model.get_submodule("head").scores.requires_grad
    x = torch.randint(0, 11, (2, 12))
    with torch.no_grad():
        hidden = model.norm(model.blocks(model.token_embed(x) + model.pos_embed[:, :12]))
        expected = hidden @ (model.head.weight * masks["head.weight"]).t()  # no bias, not the embedding
        assert torch.allclose(model(x), expected, atol=1e-6)
    tied = create_model("gpt_tiny", SPEC, DENSE, width=0.25, depth=1)
    assert "head.weight" not in tied.state_dict()  # gpt_tiny keeps GPT-2's tied output


def test_generate_writes_the_same_text_for_the_same_seed_and_refuses_what_it_cannot(tmp_path, capsys):
    assert main(["search", *SMALL, "--out", str(tmp_path / "runs")]) == 0
    run = next((tmp_path / "runs").rglob("result.json")).parent
    out = tmp_path / "s.safetensors"
    assert main(["export", str(run), "--format", "state-dict", "--out", str(out)]) == 0
    capsys.readouterr()
    texts = []
    for seed in (1, 1, 2):
        assert main(["generate", str(out), "--prompt", "ROMEO:", "--chars", "30", "--seed", str(seed)]) == 0
        texts.append(capsys.readouterr().out)
    assert texts[0] == texts[1] != texts[2] and all(t.startswith("ROMEO:") and len(t) == 37 for t in texts)
    for args, message in ((["--prompt", "€"], "characters outside the vocabulary"),
                          (["--chars", "0"], "--chars must be"), (["--temperature", "-1"], "--temperature must be")):
        assert main(["generate", str(out), *args]) == 2
        assert message in capsys.readouterr().err


def test_greedy_generation_takes_the_most_likely_character_each_step():
    from supermask.generation import sample_text

    torch.manual_seed(2)
    model = create_model("gpt_tiny", SPEC, DENSE, width=0.25, depth=1).eval()
    vocabulary = "abcdefghijk"
    text = sample_text(model, vocabulary, "abc", 5, context=4, temperature=0)
    tokens = [vocabulary.index(c) for c in "abc"]
    with torch.no_grad():
        for _ in range(5):
            tokens.append(int(model(torch.tensor([tokens[-4:]]))[0, -1].argmax()))
    assert text == "".join(vocabulary[i] for i in tokens)
