import pytest
import torch
from torch import nn

from supermask.errors import UnknownNameError
from supermask.models import DENSE, MODELS, InputSpec, create_model, supermask_layer_types
from supermask.models.registry import model_task
from supermask.nn import SupermaskMixin
from supermask.registry import Registry

SPECS = [InputSpec(1, 28, 10), InputSpec(3, 32, 100)]


IMAGE_ARCHS = [name for name in MODELS.names() if model_task(name) == "image-classification"]  # gpt: test_language_model


@pytest.mark.parametrize("name", IMAGE_ARCHS)
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


def test_vit_b_16_converts_every_attention_and_mlp_linear_and_trains_only_scores():
    import torchvision

    from supermask.nn import SupermaskConv2d, SupermaskLinear, convert

    model = convert(torchvision.models.vit_b_16(image_size=32, num_classes=10), 0.3, seed=0)
    assert not any(isinstance(m, torch.nn.MultiheadAttention) for m in model.modules())
    for block in model.encoder.layers:
        attn = block.self_attention
        for proj in (attn.q_proj, attn.k_proj, attn.v_proj, attn.out_proj, block.mlp[0], block.mlp[3]):
            assert isinstance(proj, SupermaskLinear)
    assert isinstance(model.conv_proj, SupermaskConv2d) and isinstance(model.heads.head, SupermaskLinear)
    assert not any(isinstance(m, torch.nn.Linear) and not isinstance(m, SupermaskLinear) for m in model.modules())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert {n.rsplit(".", 1)[-1] for n, p in model.named_parameters() if p.requires_grad} == {"scores"}
    opt = torch.optim.SGD(trainable, lr=1.0)
    torch.nn.functional.cross_entropy(model(torch.randn(2, 3, 32, 32)), torch.tensor([1, 2])).backward()
    opt.step()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.endswith("scores") for k in changed)


def test_vit_tiny_attention_is_made_of_the_zoos_linear_layers():
    from supermask.models import DENSE, masked_layer_types, supermask_layer_types
    from supermask.nn import SupermaskLinear
    from supermask.nn.masked import MaskedLinear

    spec = InputSpec(1, 28, 10)
    x = torch.randn(3, 1, 28, 28)
    for layers, cls in ((DENSE, torch.nn.Linear), (supermask_layer_types(0.5), SupermaskLinear),
                        (masked_layer_types(), MaskedLinear)):
        model = create_model("vit_tiny", spec, layers)
        assert model(x).shape == (3, 10)
        attn = model.blocks[0].attn
        assert all(type(p) is cls for p in (attn.q_proj, attn.k_proj, attn.v_proj, attn.out_proj))
    norms = [m for m in create_model("vit_tiny", spec, supermask_layer_types(0.5)).modules()
             if isinstance(m, torch.nn.LayerNorm)]
    assert norms and not any(m.elementwise_affine for m in norms)  # frozen, non-affine, like BN in a search


@pytest.mark.parametrize("method", ["edge-popup", "iterand", "biprop", "bernoulli", "gem-miner"])
def test_a_strong_ticket_lenet_has_no_bias_unless_asked_for(method):
    from supermask import SearchConfig
    from supermask.methods import METHODS
    from supermask.resolved import resolve

    spec = InputSpec(1, 28, 10)

    def biases(**kw):
        config = resolve(SearchConfig(arch="lenet_300_100", method=method, **kw))
        model = METHODS.get(method).build(config, spec)
        return [(n, p.requires_grad) for n, p in model.named_parameters() if n.endswith("bias")], config

    found, config = biases()
    assert found == [] and config.bias is False  # resolved, so in config.json and the hash
    asked, config = biases(bias=True)
    assert len(asked) == 3 and not any(trained for _, trained in asked) and config.bias is True  # frozen
    assert resolve(SearchConfig(arch="conv4", method=method)).bias is None  # no biases in its builder anyway


def test_imp_and_dense_lenet_keep_open_lths_trained_biases():
    from supermask.dense import DenseConfig
    from supermask.models.registry import masked_layer_types
    from supermask.resolved import resolve
    from supermask_imp import IMPConfig

    assert resolve(IMPConfig.for_arch("lenet_300_100")).bias is None
    assert resolve(DenseConfig(arch="lenet_300_100")).bias is None
    model = create_model("lenet_300_100", InputSpec(1, 28, 10), masked_layer_types())
    assert sum(n.endswith("bias") and p.requires_grad for n, p in model.named_parameters()) == 3


def test_lenet_without_biases_as_the_strong_ticket_references_build_it(tmp_path, capsys):
    import json

    from supermask.cli import main

    small = ["--arch", "lenet_300_100", "--iterations", "2", "--batch-size", "500", "-q", "--device", "cpu",
             "--out", str(tmp_path)]
    assert main(["search", *small]) == 0  # the search default: no biases
    run = next(tmp_path.rglob("result.json")).parent
    state_keys = json.loads((run / "ticket" / "ticket.json").read_text())
    assert state_keys["bias"] is False
    from supermask.search import load_search_model

    model = load_search_model(run)
    assert not [n for n, _ in model.named_parameters() if n.endswith("bias")]  # no bias, frozen or not
    for fmt in ("ticket", "state-dict"):
        assert main(["export", str(run), "--format", fmt]) == 0
        capsys.readouterr()
        assert main(["evaluate", str(run / "export" / f"{fmt}.safetensors")]) == 0
        assert "(the same)" in capsys.readouterr().out
    assert main(["train", "--ticket", str(run), "--iterations", "1", "-q", "--out", str(tmp_path / "ft")]) == 0
    default = create_model("lenet_300_100", InputSpec(1, 28, 10))
    assert sum(n.endswith("bias") for n, _ in default.named_parameters()) == 3  # open_lth's LeNet keeps them
