"""A strong ticket is a mask over a frozen random network: in a search, the loop trains the
scores only (and, with --learned-bn, the normalisation layers' affine parameters), for every
architecture of the zoo and every method; dense and IMP networks train every weight."""

import pytest
from torch import nn

from supermask import SearchConfig, resolve
from supermask.methods import METHODS
from supermask.models import DENSE, MODELS, InputSpec, create_model, masked_layer_types

SPEC = InputSpec(1, 28, 10)
TEXT = InputSpec(0, 0, 20, task="language-model", context=16)


def _spec(arch: str) -> InputSpec:
    from supermask.models.registry import model_task

    return TEXT if model_task(arch) == "language-model" else SPEC


def _trainable(model: nn.Module) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


def _norm_affine(model: nn.Module) -> set[str]:
    norms = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)
    return {f"{m_name}.{p_name}" if m_name else p_name for m_name, m in model.named_modules() if isinstance(m, norms)
            for p_name, _ in m.named_parameters(recurse=False)}


@pytest.mark.parametrize("arch", MODELS.names())
@pytest.mark.parametrize("method", METHODS.names())
def test_a_search_trains_scores_only(arch, method):
    dataset = "tinyshakespeare" if _spec(arch) is TEXT else "mnist-5k"
    config = resolve(SearchConfig(arch=arch, method=method, width=0.125, dataset=dataset))
    model = METHODS.get(method).build(config, _spec(arch))
    trainable = _trainable(model)
    assert trainable and all(name.endswith("scores") for name in trainable), sorted(
        n for n in trainable if not n.endswith("scores"))


@pytest.mark.parametrize("arch", ["vit_tiny", "resnet20", "gpt_tiny"])
def test_learned_norms_add_only_the_norms_affine_parameters(arch):
    dataset = "tinyshakespeare" if _spec(arch) is TEXT else "mnist-5k"
    config = resolve(SearchConfig(arch=arch, learned_bn=True, width=0.125, dataset=dataset))
    model = METHODS.get("edge-popup").build(config, _spec(arch))
    extra = {n for n in _trainable(model) if not n.endswith("scores")}
    assert extra and extra == _norm_affine(model)


@pytest.mark.parametrize("layers", [DENSE, masked_layer_types()], ids=["dense", "imp"])
def test_dense_and_imp_networks_train_every_parameter(layers):
    model = create_model("vit_tiny", SPEC, layers, width=0.125)
    assert _trainable(model) == {name for name, _ in model.named_parameters()}
    assert {"cls_token", "pos_embed"} <= _trainable(model)
    gpt = create_model("gpt_tiny", TEXT, layers, width=0.125)
    assert {"token_embed.weight", "pos_embed"} <= _trainable(gpt) == {name for name, _ in gpt.named_parameters()}
