import math

import pytest
import torch
import torchvision
from torch import nn

from supermask.errors import SupermaskError, UnknownNameError
from supermask.nn import SupermaskConv2d, SupermaskLinear, SupermaskMixin, convert, init_model, model_masks


def _layer(density=0.5):
    return SupermaskConv2d(16, 32, 3, density=density, bias=False)


def test_signed_constant_takes_two_values():
    layer = init_model(nn.Sequential(_layer()), "signed-constant", 0)[0]
    std = math.sqrt(2) / math.sqrt(16 * 9)
    values = layer.weight.unique()
    assert torch.allclose(values, torch.tensor([-std, std]))
    assert 0.4 < (layer.weight > 0).float().mean() < 0.6


def test_scaled_fan_divides_fan_by_density():
    layer = init_model(nn.Sequential(_layer(0.25)), "unsigned-constant", 0, scaled_fan=True)[0]
    assert torch.allclose(layer.weight, torch.full_like(layer.weight, math.sqrt(2) / math.sqrt(16 * 9 * 0.25)))


@pytest.mark.parametrize("name,expected_std", [
    ("kaiming-normal", math.sqrt(2 / 144)), ("kaiming-uniform", math.sqrt(2 / 144)),
    ("xavier-normal", math.sqrt(2 / (144 + 288))),
])
def test_random_inits_have_their_standard_deviation(name, expected_std):
    big = SupermaskConv2d(16, 512, 3, density=0.5, bias=False)  # fan_in 144, fan_out 512*9
    layer = init_model(nn.Sequential(big), name, 0)[0]
    fan_out = 512 * 9
    if name == "xavier-normal":
        expected_std = math.sqrt(2 / (144 + fan_out))
    assert layer.weight.std().item() == pytest.approx(expected_std, rel=0.03)


def test_score_init_does_not_change_weights_and_underscores_are_accepted():
    a = init_model(nn.Sequential(_layer()), "signed_constant", 7, score_init="kaiming-uniform")[0]
    b = init_model(nn.Sequential(_layer()), "signed-constant", 7, score_init="uniform")[0]
    assert torch.equal(a.weight, b.weight)
    assert not torch.equal(a.scores, b.scores)
    assert (b.scores >= 0).all()


def test_unknown_init_is_refused():
    with pytest.raises(UnknownNameError, match="unknown init"):
        init_model(nn.Sequential(_layer()), "nope", 0)


def test_convert_torchvision_resnet18_trains_scores_only():
    model = convert(torchvision.models.resnet18(num_classes=10), density=0.3, seed=1)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(isinstance(m, SupermaskConv2d) for m in convs)
    assert isinstance(model.fc, SupermaskLinear)
    assert all(not m.affine for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(n.endswith("scores") for n in trainable)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    model.train()
    loss = nn.functional.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    opt.step()
    after = model.state_dict()
    for name, value in before.items():
        if name.endswith("scores"):
            continue
        if "running" in name or "num_batches" in name:
            continue  # BatchNorm statistics follow the data, as in the reference
        assert torch.equal(value, after[name]), name
    assert any(not torch.equal(before[n], after[n]) for n in after if n.endswith("scores"))
    assert model_masks(model)["conv1.weight"].mean().item() == pytest.approx(0.3, abs=1e-3)


def test_convert_keep_dense_learned_bn_and_global_scope():
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 4))
    out = convert(net, density=0.5, keep_dense=("first",), learned_bn=True, scope="global")
    assert type(out[0]) is nn.Conv2d and not out[0].weight.requires_grad
    assert isinstance(out[4], SupermaskLinear) and out[4].global_scope is not None
    assert out[1].affine and out[1].weight.requires_grad
    assert isinstance(net[4], nn.Linear) and not isinstance(net[4], SupermaskMixin)  # the original is untouched
    out(torch.randn(2, 3, 8, 8))
    with pytest.raises(SupermaskError, match="keep_dense"):
        convert(net, keep_dense=("features.99",))


def test_convert_keeps_given_weights_with_init_none():
    lin = nn.Linear(6, 3)
    out = convert(nn.Sequential(lin), density=1.0, init=None)
    assert torch.equal(out[0].weight, lin.weight)
    x = torch.randn(2, 6)
    assert torch.equal(out(x), lin(x))


def _trained_like_resnet18():
    """A torchvision ResNet-18 with non-trivial BatchNorm γ/β and statistics, as a trained one has."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def test_converting_a_pretrained_model_keeps_its_weights_and_batchnorm():
    plain = _trained_like_resnet18()
    converted = convert(plain, density=1.0, init=None).eval()  # bn: frozen by default with init=None
    plain_state = plain.state_dict()
    for name, value in converted.state_dict().items():
        if not name.endswith("scores"):
            assert torch.equal(value, plain_state[name]), name
    bn = [m for m in converted.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(m.affine and not m.weight.requires_grad and not m.bias.requires_grad for m in bn)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(converted(x), plain(x), atol=1e-5)  # density 1: the same function
    learned = convert(plain, density=0.5, init=None, learned_bn=True)
    assert all(m.weight.requires_grad and torch.equal(m.weight, p.weight) for m, p in
               zip((m for m in learned.modules() if isinstance(m, nn.BatchNorm2d)),
                   (m for m in plain.modules() if isinstance(m, nn.BatchNorm2d))))
    with pytest.raises(SupermaskError, match="contradicts"):
        convert(plain, init=None, learned_bn=True, bn="frozen")
    with pytest.raises(SupermaskError, match="bn must be one of"):
        convert(plain, bn="affine")


@pytest.mark.parametrize("bn", ["frozen", "learned"])
def test_state_dicts_load_both_ways_with_affine_batchnorm(bn):
    plain = _trained_like_resnet18()
    converted = convert(plain, density=0.3, init=None, bn=bn)
    fresh = torchvision.models.resnet18(num_classes=10)
    fresh.load_state_dict({k: v for k, v in converted.state_dict().items() if not k.endswith(".scores")})  # strict
    other = convert(torchvision.models.resnet18(num_classes=10), density=0.3, init="signed-constant", bn=bn)
    result = other.load_state_dict(plain.state_dict(), strict=False)
    masked = [n for n, m in other.named_modules() if isinstance(m, SupermaskMixin)]
    assert sorted(result.missing_keys) == sorted(f"{n}.scores" for n in masked) and not result.unexpected_keys
    assert torch.equal(other.conv1.weight, plain.conv1.weight)


def test_non_affine_conversion_drops_exactly_the_batchnorm_affine_parameters():
    plain = _trained_like_resnet18()
    converted = convert(plain, density=0.3)  # re-drawn weights: non-affine BatchNorm (edge-popup)
    result = converted.load_state_dict(plain.state_dict(), strict=False)
    bn = [n for n, m in plain.named_modules() if isinstance(m, nn.BatchNorm2d)]
    assert sorted(result.unexpected_keys) == sorted([f"{n}.weight" for n in bn] + [f"{n}.bias" for n in bn])
    assert all(k.endswith(".scores") for k in result.missing_keys)
