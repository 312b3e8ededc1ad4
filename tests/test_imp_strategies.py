"""supermask_imp.strategies and .branches: a level's mask from trained weights, chosen by the
structure, and the controls as branches of the one level loop."""

import pytest
import torch

from supermask import resolve
from supermask.nn.nm import nm_mask
from supermask_imp import IMPConfig
from supermask_imp.branches import BRANCHES, Branch, RandomPrune, Reinit
from supermask_imp.strategies import STRATEGIES, Context, random_like, strategy_for
from supermask_imp.structured import Selection


def _level():
    gen = torch.Generator().manual_seed(5)
    weights = {"0.weight": torch.randn(12, 16, generator=gen), "2.weight": torch.randn(4, 12, generator=gen)}
    current = {n: torch.ones_like(w) for n, w in weights.items()}
    current["0.weight"].view(-1)[::7] = 0  # some already pruned
    return weights, current


def test_the_magnitude_strategy_removes_the_smallest_survivors_over_all_layers():
    """Against a plain computation: sort the surviving |w| of every layer together, remove the
    level's fraction (rounded half up) of the smallest."""
    config = resolve(IMPConfig(arch="lenet_300_100", scope="global", prune_fraction=0.3))
    weights, current = _level()
    context = Context(tuple(weights), frozenset(), "global")
    new = strategy_for("global")(config, weights, current, context)
    survivors = torch.cat([weights[n].abs()[current[n].bool()] for n in weights])
    removed = int(0.3 * survivors.numel() + 0.5)
    threshold = survivors.sort().values[removed - 1]
    for name in weights:
        expected = current[name].bool() & (weights[name].abs() > threshold)
        assert torch.equal(new[name].bool(), expected)


def test_the_nm_strategy_keeps_the_n_largest_surviving_weights_of_each_group():
    config = resolve(IMPConfig.for_arch("lenet_300_100", structure="nm:2:4"))
    weights, current = _level()
    selection = Selection("layerwise", "nm:2:4")
    new = strategy_for(selection)(config, weights, current, Context(tuple(weights), frozenset(), selection))
    for name in weights:
        groups = (weights[name].abs() * current[name]).reshape(-1, 4)
        top = groups.argsort(dim=1, descending=True, stable=True)[:, :2]
        expected = torch.zeros_like(groups).scatter_(1, top, 1.0).reshape(weights[name].shape)
        assert torch.equal(new[name], expected) and torch.equal(expected, nm_mask(groups.reshape(weights[name].shape), 2, 4))


def test_one_strategy_per_structure_and_one_branch_per_control():
    assert set(STRATEGIES.names()) == {"unstructured", "nm", "channel", "head"}
    with pytest.raises(ValueError, match="already registered"):
        STRATEGIES.add("nm", STRATEGIES.get("nm"))
    assert (BRANCHES.get("none"), BRANCHES.get("reinit"), BRANCHES.get("random-prune")) == (Branch, Reinit, RandomPrune)
    assert Branch.first_level == 0 and Reinit.first_level == RandomPrune.first_level == 1  # controls reuse IMP's level 0
    from supermask_imp.engine import CONTROLS

    assert set(CONTROLS) == set(BRANCHES.names())


def test_the_random_control_keeps_each_layers_count_of_the_mask_it_copies():
    _, current = _level()
    drawn = random_like(current, "global", 3)
    assert {n: int(m.sum()) for n, m in drawn.items()} == {n: int(m.sum()) for n, m in current.items()}
    assert not torch.equal(drawn["0.weight"], current["0.weight"])
