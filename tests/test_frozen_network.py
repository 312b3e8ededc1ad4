"""A strong ticket is a mask over a frozen random network: in a search, the loop trains the
scores only (and, with --learned-bn, the normalisation layers' affine parameters), for every
architecture of the zoo and every method; dense and IMP networks train every weight."""

import pytest
from torch import nn

from supermask import SearchConfig, resolve
from supermask.methods import METHODS
from supermask.models import DENSE, MODELS, InputSpec, create_model, masked_layer_types

SPEC = InputSpec(1, 28, 10)


def _trainable(model: nn.Module) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


def _norm_affine(model: nn.Module) -> set[str]:
    norms = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)
    return {f"{m_name}.{p_name}" if m_name else p_name for m_name, m in model.named_modules() if isinstance(m, norms)
            for p_name, _ in m.named_parameters(recurse=False)}


@pytest.mark.parametrize("arch", MODELS.names())
@pytest.mark.parametrize("method", METHODS.names())
def test_a_search_trains_scores_only(arch, method):
    config = resolve(SearchConfig(arch=arch, method=method, width=0.125))
    model = METHODS.get(method).build(config, SPEC)
    trainable = _trainable(model)
    assert trainable and all(name.endswith("scores") for name in trainable), sorted(
        n for n in trainable if not n.endswith("scores"))


@pytest.mark.parametrize("arch", ["vit_tiny", "resnet20"])
def test_learned_norms_add_only_the_norms_affine_parameters(arch):
    config = resolve(SearchConfig(arch=arch, learned_bn=True, width=0.125))
    model = METHODS.get("edge-popup").build(config, SPEC)
    extra = {n for n in _trainable(model) if not n.endswith("scores")}
    assert extra and extra == _norm_affine(model)


@pytest.mark.parametrize("layers", [DENSE, masked_layer_types()], ids=["dense", "imp"])
def test_dense_and_imp_networks_train_every_parameter(layers):
    model = create_model("vit_tiny", SPEC, layers, width=0.125)
    assert _trainable(model) == {name for name, _ in model.named_parameters()}
    assert {"cls_token", "pos_embed"} <= _trainable(model)
