import pytest
import torch
from torch import nn

from supermask.errors import UnknownNameError
from supermask.models import DENSE, MODELS, InputSpec, create_model, supermask_layer_types
from supermask.nn import SupermaskMixin
from supermask.registry import Registry

SPECS = [InputSpec(1, 28, 10), InputSpec(3, 32, 100)]


@pytest.mark.parametrize("name", MODELS.names())
@pytest.mark.parametrize("spec", SPECS, ids=["mnist", "cifar100"])
def test_every_arch_builds_dense_and_supermask_from_one_definition(name, spec):
    x = torch.randn(2, spec.in_channels, spec.image_size, spec.image_size)
    dense = create_model(name, spec, DENSE)
    sm = create_model(name, spec, supermask_layer_types(0.5))
    assert dense(x).shape == sm(x).shape == (2, spec.num_classes)
    assert not any(isinstance(m, SupermaskMixin) for m in dense.modules())
    prunable = [m for m in sm.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert prunable and all(isinstance(m, SupermaskMixin) for m in prunable)
    # one definition: the same modules under the same names, so the state-dict keys of the weights match
    def prunable_names(model):
        return [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]

    assert prunable_names(dense) == prunable_names(sm)


def test_conv6_matches_the_paper_widths():
    model = create_model("conv6", InputSpec(3, 32, 10))
    convs = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m.out_features for m in model.modules() if isinstance(m, nn.Linear)]
    assert convs == [64, 64, 128, 128, 256, 256]
    assert linears == [256, 256, 10]
    assert model.classifier[1].in_features == 256 * 4 * 4
    half = create_model("conv6", InputSpec(3, 32, 10), width=0.5)
    assert [m.out_channels for m in half.modules() if isinstance(m, nn.Conv2d)] == [32, 32, 64, 64, 128, 128]


def test_torchvision_models_by_name():
    model = create_model("torchvision/resnet18", InputSpec(1, 32, 7), supermask_layer_types(0.2))
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 7)
    assert isinstance(model.conv1, SupermaskMixin) and model.conv1.in_channels == 1
    with pytest.raises(UnknownNameError):
        create_model("torchvision/not_a_model")


def test_registry_refuses_duplicates_and_unknown_names():
    with pytest.raises(ValueError, match="already registered"):
        MODELS.register("conv6")(lambda spec, layers: None)
    reg = Registry("thing")
    reg.add("a", 1)
    with pytest.raises(UnknownNameError, match="unknown thing 'b'; choose from: a"):
        reg.get("b")
