"""Conv-2/4/6/8 (Frankle & Carbin 2019; Ramanujan et al. 2020).

3×3 convolutions with 64-64-128-128-256-256-512-512 channels (the first 2, 4, 6 or 8),
a 2×2 max-pool after each pair, then fully connected 256-256-classes. ``width`` scales
every hidden layer (Ramanujan et al.'s width multiplier). Pools round down as usual
(a 28×28 MNIST image ends as a 3×3 map); a pool is skipped once the map is 1×1. No biases and no
normalisation by default, as in the edge-popup reference.
"""

from torch import nn

from .registry import InputSpec, Layers, register_model

CHANNELS = (64, 64, 128, 128, 256, 256, 512, 512)


class ConvNet(nn.Module):
    def __init__(self, depth: int, spec: InputSpec, layers: Layers, width: float = 1.0, bias: bool = False):
        super().__init__()
        blocks: list[nn.Module] = []
        in_ch, size = spec.in_channels, spec.image_size
        for i, channels in enumerate(CHANNELS[:depth]):
            out_ch = max(1, round(channels * width))
            blocks += [layers.conv(in_ch, out_ch, 3, padding=1, bias=bias), nn.ReLU(inplace=True)]
            in_ch = out_ch
            if i % 2 == 1 and size >= 2:
                blocks.append(nn.MaxPool2d(2))
                size //= 2
        hidden = max(1, round(256 * width))
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Sequential(  # dropout (if any) before each fully connected layer
            layers.then_dropout(nn.Flatten()),
            layers.linear(in_ch * size * size, hidden, bias=bias),
            layers.then_dropout(nn.ReLU(inplace=True)),
            layers.linear(hidden, hidden, bias=bias),
            layers.then_dropout(nn.ReLU(inplace=True)),
            layers.linear(hidden, spec.num_classes, bias=bias),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


def _register(depth: int) -> None:
    def build(spec: InputSpec, layers: Layers, width: float = 1.0, bias: bool = False) -> nn.Module:
        return ConvNet(depth, spec, layers, width=width, bias=bias)

    build.__name__ = f"conv{depth}"
    register_model(f"conv{depth}")(build)


for _depth in (2, 4, 6, 8):
    _register(_depth)
