"""Attention-head masks (--structure head): whole heads in both engines, the exact count, the
straight-through gradient of a head score, the L1-norm ranking of IMP's levels, converted
nn.MultiheadAttention, and the compact ticket's one bit per head."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from supermask.cli import main
from supermask.configs import SearchConfig
from supermask.methods import METHODS
from supermask.models import InputSpec, create_model, masked_layer_types
from supermask.nn import convert, model_masks
from supermask.nn.heads import attention_heads
from supermask.nn.layers import head_selections
from supermask.resolved import resolve
from supermask_imp.structured import head_prune, heads_removed, head_keep

SPEC = InputSpec(0, 0, 11, task="language-model", context=12)
SMALL = ["--arch", "gpt_tiny", "--dataset", "tinyshakespeare", "--width", "0.25", "--depth", "1",
         "--iterations", "3", "--batch-size", "16", "--device", "cpu", "-q"]
QKV = ("q_proj", "k_proj", "v_proj")


def head_search_model(density: float, seed: int = 0, scope: str = "layerwise", depth: int = 2):
    config = resolve(SearchConfig(arch="gpt_tiny", dataset="tinyshakespeare", structure="head", density=density,
                                  scope=scope, width=0.25, depth=depth, seed=seed))
    return METHODS.get("edge-popup").build(config, SPEC)


def heads_of(masks: dict, prefix: str, heads: int) -> torch.Tensor:
    """Which heads a block's masks keep, asserting that every head is kept or removed whole."""
    out = masks[f"{prefix}.out_proj.weight"]
    dim = out.shape[1] // heads
    kept = []
    for h in range(heads):
        rows = [masks[f"{prefix}.{p}.weight"][h * dim:(h + 1) * dim] for p in QKV]
        parts = torch.cat([r.reshape(-1) for r in rows] + [out[:, h * dim:(h + 1) * dim].reshape(-1)])
        assert bool((parts == parts[0]).all()), f"{prefix}: head {h} is partly kept"
        kept.append(int(parts[0]))
    return torch.tensor(kept)


@pytest.mark.parametrize("density,count", [(0.25, 1), (0.5, 2), (0.75, 3), (1.0, 4)])
def test_a_head_search_keeps_whole_heads_exactly_the_asked_count_those_of_largest_score(density, count):
    model = head_search_model(density, seed=3)
    masks = model_masks(model)
    for i in range(2):
        prefix = f"blocks.{i}.attn"
        kept = heads_of(masks, prefix, 4)
        assert int(kept.sum()) == count
        scores = model.get_submodule(f"{prefix}.q_proj").scores.detach().abs().reshape(-1)
        assert set(kept.nonzero().flatten().tolist()) == set(scores.topk(count).indices.tolist())
        for name in (f"blocks.{i}.mlp.0.weight", f"blocks.{i}.mlp.2.weight"):  # kept whole
            assert bool(masks[name].all())
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trained == ["blocks.0.attn.q_proj.scores", "blocks.1.attn.q_proj.scores"]  # one score per head


def test_a_global_head_search_keeps_the_asked_fraction_of_all_heads():
    model = head_search_model(0.25, seed=1, scope="global", depth=4)
    kept = torch.cat([k.float() for k in head_selections(model).values()])
    assert kept.numel() == 16 and int(kept.sum()) == 4  # floor(0.25 * 16 + 0.5)
    scores = torch.cat([model.get_submodule(f"blocks.{i}.attn.q_proj").scores.detach().abs().reshape(-1)
                        for i in range(4)])
    assert set(kept.nonzero().flatten().tolist()) == set(scores.topk(4).indices.tolist())


def _plain_forward(state: dict, x: torch.Tensor, gates: dict, depth: int, heads: int = 4) -> torch.Tensor:
    """A search GPT (non-affine LayerNorms, tied output) in plain torch, each head of block i
    multiplied by ``gates[i][h]`` in its q/k/v rows and output columns."""
    h = state["token_embed.weight"][x] + state["pos_embed"][:, :x.shape[1]]
    dim = h.shape[-1]
    hd = dim // heads
    for i in range(depth):
        p = f"blocks.{i}."
        per = gates[i].repeat_interleave(hd)
        n = F.layer_norm(h, (dim,))
        q, k, v = (F.linear(n, state[p + f"attn.{t}.weight"] * per[:, None], state[p + f"attn.{t}.bias"]) for t in QKV)
        q, k, v = (t.view(*t.shape[:2], heads, hd).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-1, -2) / math.sqrt(hd))
        causal = torch.ones(x.shape[1], x.shape[1], dtype=torch.bool).tril()
        att = att.masked_fill(~causal, float("-inf")).softmax(-1) @ v
        att = att.transpose(1, 2).reshape(*h.shape)
        h = h + F.linear(att, state[p + "attn.out_proj.weight"] * per[None, :], state[p + "attn.out_proj.bias"])
        n = F.layer_norm(h, (dim,))
        h = h + F.linear(F.gelu(F.linear(n, state[p + "mlp.0.weight"], state[p + "mlp.0.bias"])),
                         state[p + "mlp.2.weight"], state[p + "mlp.2.bias"])
    return F.layer_norm(h, (dim,)) @ state["token_embed.weight"].t()


def test_the_head_score_gradient_is_the_loss_gradient_of_a_gate_on_the_whole_head():
    torch.manual_seed(0)
    model = head_search_model(0.5, seed=2)
    x, y = torch.randint(0, 11, (3, 12)), torch.randint(0, 11, (3, 12))
    model.train()
    F.cross_entropy(model(x).reshape(-1, 11), y.reshape(-1)).backward()
    state = {k: v.detach() for k, v in model.state_dict().items()}
    kept = {i: heads_of(model_masks(model), f"blocks.{i}.attn", 4).float().requires_grad_() for i in range(2)}
    logits = _plain_forward(state, x, kept, depth=2)
    assert torch.allclose(logits, model.eval()(x), atol=1e-5)  # the same network
    F.cross_entropy(logits.reshape(-1, 11), y.reshape(-1)).backward()
    for i in range(2):
        scores = model.get_submodule(f"blocks.{i}.attn.q_proj").scores
        # straight through the top-k of |s|: dL/ds = dL/dgate * sign(s)
        assert torch.allclose(scores.grad.reshape(-1), kept[i].grad * scores.detach().sign().reshape(-1), atol=1e-5)


def _l1_per_head(weights: dict, prefix: str, heads: int) -> list[float]:
    dim = weights[f"{prefix}.out_proj.weight"].shape[1] // heads
    return [sum(float(weights[f"{prefix}.{p}.weight"][h * dim:(h + 1) * dim].abs().sum()) for p in QKV)
            + float(weights[f"{prefix}.out_proj.weight"][:, h * dim:(h + 1) * dim].abs().sum()) for h in range(heads)]


def test_an_imp_head_level_removes_the_surviving_heads_of_smallest_l1_norm():
    torch.manual_seed(4)
    model = create_model("gpt_tiny", SPEC, masked_layer_types(), width=0.5, depth=2)
    blocks = tuple(attention_heads(model))
    assert [(b.name, b.heads, b.head_dim) for b in blocks] == [("blocks.0.attn", 4, 16), ("blocks.1.attn", 4, 16)]
    weights = {n: torch.randn_like(p) for n, p in model.state_dict().items() if n.endswith("weight")}
    names = [n for n in weights if ".attn." in n or ".mlp." in n]
    masks = {n: torch.ones_like(weights[n]) for n in names}
    dim = 16
    masks["blocks.0.attn.out_proj.weight"][:, 2 * dim:3 * dim] = 0  # head 2 of block 0 is gone already
    for p in QKV:
        masks[f"blocks.0.attn.{p}.weight"][2 * dim:3 * dim] = 0
    new = head_prune(weights, masks, blocks, {b.weight("q_proj"): 0.5 for b in blocks})
    assert set(new) == {n for n in names if ".attn." in n}  # the MLPs are not the strategy's
    for block, alive in (("blocks.0.attn", [0, 1, 3]), ("blocks.1.attn", [0, 1, 2, 3])):
        norms = _l1_per_head({k: weights[k] * masks[k] for k in masks}, block, 4)
        removed = heads_removed(len(alive), 0.5)  # 3 -> round(1.5) = 2, 4 -> 2
        expected = sorted(alive, key=lambda h: norms[h])[removed:]
        assert heads_of(new, block, 4).nonzero().flatten().tolist() == sorted(expected)


def test_heads_removed_takes_at_least_one_head_and_never_the_last():
    assert [heads_removed(n, 0.2) for n in (4, 3, 2, 1)] == [1, 1, 1, 0]
    assert [heads_removed(n, 0.5) for n in (12, 6, 3, 2, 1)] == [6, 3, 2, 1, 0]


def test_a_pruner_keeps_the_heads_of_largest_summed_score():
    torch.manual_seed(5)
    model = create_model("gpt_tiny", SPEC, masked_layer_types(), width=0.25, depth=1)
    blocks = tuple(attention_heads(model))
    scores = {n: torch.rand_like(p) for n, p in model.state_dict().items() if n.endswith("weight")
              and (".attn." in n or ".mlp." in n)}
    masks = head_keep(scores, blocks, 0.5)
    sums = _l1_per_head(scores, "blocks.0.attn", 4)  # scores are positive: L1 = sum
    assert heads_of(masks, "blocks.0.attn", 4).nonzero().flatten().tolist() == \
        sorted(sorted(range(4), key=lambda h: -sums[h])[:2])
    assert bool(masks["blocks.0.mlp.0.weight"].all()) and bool(masks["blocks.0.mlp.2.weight"].all())


class UserModel(nn.Module):
    """A model of the user's own with torch's MultiheadAttention."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(6, 16)
        self.attn = nn.MultiheadAttention(16, 4, batch_first=True)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        h = self.inp(x)
        return self.head(self.attn(h, h, h)[0].mean(1))


def test_a_converted_multihead_attention_gets_whole_heads_and_computes_the_masked_attention():
    torch.manual_seed(6)
    user = UserModel().eval()
    model = convert(user, density=0.5, structure="head", seed=0, init=None).eval()
    masks = model_masks(model)
    kept = heads_of(masks, "attn", 4)
    assert int(kept.sum()) == 2
    assert bool(masks["inp.weight"].all()) and bool(masks["head.weight"].all())
    per = kept.float().repeat_interleave(4)
    mha = user.attn
    x = torch.randn(2, 5, 6)
    with torch.no_grad():
        h = user.inp(x)
        w_in = mha.in_proj_weight * per.repeat(3)[:, None]
        out, _ = F.multi_head_attention_forward(
            h.transpose(0, 1), h.transpose(0, 1), h.transpose(0, 1), 16, 4, w_in, mha.in_proj_bias, None, None,
            False, 0.0, mha.out_proj.weight * per[None, :], mha.out_proj.bias, training=False, need_weights=False)
        expected = user.head(out.transpose(0, 1).mean(1))
        assert torch.allclose(model(x), expected, atol=1e-5)


def test_a_model_without_attention_is_refused_in_one_line(tmp_path, capsys):
    assert main(["search", "--arch", "lenet_300_100", "--structure", "head", "--iterations", "1", "-q",
                 "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "--structure head needs attention blocks" in err and len(err.splitlines()) == 1
    assert not list(tmp_path.rglob("result.json"))


@pytest.mark.parametrize("args,message", [
    ([], "every block is down to one head after 3 levels: give --levels 3 or fewer"),
    (["--target-density", "0.5"], "give --levels, not --target-density"),
    (["--scope", "global"], "--scope global does not apply"),
])
def test_imp_head_plans_it_cannot_run_are_refused(args, message, tmp_path, capsys):
    assert main(["imp", *SMALL, "--structure", "head", *args, "--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.rglob("result.json"))


def test_imp_head_levels_and_the_random_control_remove_whole_heads(tmp_path, capsys):
    from supermask.ticket_files import ticket_state

    out = tmp_path / "runs"
    assert main(["imp", *SMALL, "--structure", "head", "--levels", "2", "--control", "none,random-prune",
                 "--out", str(out)]) == 0
    assert "2/4" in capsys.readouterr().out
    results = [json.loads(p.read_text()) for p in out.rglob("result.json")]
    composites = [r for r in results if "levels" in r]
    assert {r["control"] for r in composites} == {"none", "random-prune"}
    for r in composites:
        assert [row["heads_kept"] for row in r["levels"]] == [4, 3, 2]
    for level_dir in out.rglob("level-*"):
        if not (level_dir / "result.json").exists():
            continue
        state = ticket_state(level_dir)
        masks = {k[: -len("_mask")]: v for k, v in state.items() if k.endswith("weight_mask")}
        row = json.loads((level_dir / "result.json").read_text())
        assert int(heads_of(masks, "blocks.0.attn", 4).sum()) == row["heads_kept"]
        assert bool(masks["blocks.0.mlp.0.weight"].all())


def test_the_compact_ticket_stores_one_bit_per_head_and_rebuilds_the_network(tmp_path, capsys):
    from safetensors import safe_open

    from supermask.exports import load_ticket

    assert main(["search", *SMALL, "--structure", "head", "--out", str(tmp_path / "runs")]) == 0
    assert "(2 of 4 heads)" in capsys.readouterr().out
    run = next((tmp_path / "runs").rglob("result.json")).parent
    ticket = tmp_path / "t.safetensors"
    assert main(["export", str(run), "--format", "ticket", "--out", str(ticket)]) == 0
    with safe_open(str(ticket), "pt") as f:
        keys = list(f.keys())
        recipe = json.loads(f.metadata()["supermask_ticket"])
    assert [k for k in keys if ".mask" in k] == ["blocks.0.attn.q_proj.weight.mask_heads"]
    assert recipe["mask_codings"]["blocks.0.attn.q_proj.weight"] == "head"
    assert set(recipe["mask_codings"].values()) == {"head", "follows"}
    total = sum(math.prod(s) for s in recipe["shapes"].values())
    assert recipe["mask_bits_per_weight"] == pytest.approx(4 / total)
    rebuilt = model_masks(load_ticket(ticket))
    from supermask.search import load_search_model

    reported = model_masks(load_search_model(run))
    assert rebuilt.keys() == reported.keys() and all(torch.equal(rebuilt[k], reported[k]) for k in rebuilt)
    capsys.readouterr()
    assert main(["evaluate", str(ticket)]) == 0
    assert "(the same)" in capsys.readouterr().out


def test_the_zoo_vit_gets_whole_head_masks_in_a_search():
    config = resolve(SearchConfig(arch="vit_tiny", structure="head", density=0.25, width=0.5, depth=2))
    model = METHODS.get("edge-popup").build(config, InputSpec(1, 28, 10))
    masks = model_masks(model)
    for i in range(2):
        assert int(heads_of(masks, f"blocks.{i}.attn", 4).sum()) == 1
    assert bool(masks["head.weight"].all()) and bool(masks["patch_embed.weight"].all())  # kept whole
