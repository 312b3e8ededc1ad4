"""CIFAR ResNets: ResNet-18 (He et al. 2016's ImageNet widths, 3×3 stem, no stem pool)
and ResNet-20/56 (the 16-32-64 CIFAR family). Projection shortcuts (1×1 conv + norm)."""

from typing import Optional, Sequence

from torch import nn

from .registry import InputSpec, Layers, register_model


class BasicBlock(nn.Module):
    def __init__(self, layers: Layers, in_ch: int, out_ch: int, stride: int, mid_ch: Optional[int] = None):
        super().__init__()
        norm = layers.norm or (lambda c: nn.Identity())
        mid_ch = out_ch if mid_ch is None else mid_ch  # the block's inner channels (a channel ticket has fewer)
        self.conv1 = layers.conv(in_ch, mid_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = norm(mid_ch)
        self.conv2 = layers.conv(mid_ch, out_ch, 3, stride=1, padding=1, bias=False)
        self.bn2 = norm(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(layers.conv(in_ch, out_ch, 1, stride=stride, bias=False), norm(out_ch))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, spec: InputSpec, layers: Layers, widths, blocks_per_stage, width: float = 1.0,
                 channels: Optional[Sequence[int]] = None):
        """``channels``: each block's inner channel count, in order (a channel ticket's smaller network)."""
        super().__init__()
        if channels is not None and len(channels) != sum(blocks_per_stage):
            raise ValueError(f"this ResNet has {sum(blocks_per_stage)} blocks, got {len(channels)} channel counts")
        inner = iter(channels) if channels is not None else None
        widths = [max(1, round(w * width)) for w in widths]
        norm = layers.norm or (lambda c: nn.Identity())
        self.conv1 = layers.conv(spec.in_channels, widths[0], 3, padding=1, bias=False)
        self.bn1 = norm(widths[0])
        self.relu = nn.ReLU(inplace=True)
        stages, in_ch = [], widths[0]
        for i, (w, n) in enumerate(zip(widths, blocks_per_stage)):
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(layers, in_ch, w, stride=2 if (i > 0 and j == 0) else 1,
                                         mid_ch=next(inner) if inner is not None else None))
                in_ch = w
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = layers.linear(in_ch, spec.num_classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        return self.fc(self.pool(self.stages(x)).flatten(1))


@register_model("resnet18")
def resnet18(spec: InputSpec, layers: Layers, width: float = 1.0, channels=None) -> nn.Module:
    return ResNet(spec, layers, (64, 128, 256, 512), (2, 2, 2, 2), width, channels=channels)


@register_model("resnet20")
def resnet20(spec: InputSpec, layers: Layers, width: float = 1.0, channels=None) -> nn.Module:
    return ResNet(spec, layers, (16, 32, 64), (3, 3, 3), width, channels=channels)


@register_model("resnet56")
def resnet56(spec: InputSpec, layers: Layers, width: float = 1.0, channels=None) -> nn.Module:
    return ResNet(spec, layers, (16, 32, 64), (9, 9, 9), width, channels=channels)
