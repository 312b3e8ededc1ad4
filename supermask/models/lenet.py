"""LeNet-300-100 (LeCun et al. 1998; the MNIST network of Frankle & Carbin 2019)."""

from torch import nn

from .registry import InputSpec, Layers, register_model


@register_model("lenet_300_100")
def lenet_300_100(spec: InputSpec, layers: Layers, width: float = 1.0, bias: bool = True) -> nn.Module:
    h1, h2 = max(1, round(300 * width)), max(1, round(100 * width))
    return nn.Sequential(
        nn.Flatten(),
        layers.linear(spec.in_channels * spec.image_size**2, h1, bias=bias),
        layers.then_dropout(nn.ReLU(inplace=True)),
        layers.linear(h1, h2, bias=bias),
        layers.then_dropout(nn.ReLU(inplace=True)),
        layers.linear(h2, spec.num_classes, bias=bias),
    )
