"""VGG-11/16/19 in their CIFAR form: 3×3 conv + BatchNorm + ReLU stages, one linear classifier.

A max-pool is skipped once the feature map is 1×1, so small inputs (28×28) work; the
features are average-pooled to 1×1 before the classifier.
"""

from torch import nn

from .registry import InputSpec, Layers, register_model

CONFIGS = {
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    "vgg19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"),
}


class VGG(nn.Module):
    def __init__(self, config, spec: InputSpec, layers: Layers, width: float = 1.0):
        super().__init__()
        blocks: list[nn.Module] = []
        in_ch, size = spec.in_channels, spec.image_size
        for item in config:
            if item == "M":
                if size >= 2:
                    blocks.append(nn.MaxPool2d(2))
                    size //= 2
                continue
            out_ch = max(1, round(item * width))
            blocks.append(layers.conv(in_ch, out_ch, 3, padding=1, bias=False))
            if layers.norm is not None:
                blocks.append(layers.norm(out_ch))
            blocks.append(nn.ReLU(inplace=True))
            in_ch = out_ch
        self.features = nn.Sequential(*blocks)
        self.pool = layers.then_dropout(nn.AdaptiveAvgPool2d(1))  # dropout (if any) before the classifier
        self.classifier = layers.linear(in_ch, spec.num_classes)

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)).flatten(1))


def _register(name: str) -> None:
    def build(spec: InputSpec, layers: Layers, width: float = 1.0, channels=None) -> nn.Module:
        """``channels``: the convolutions' output channels, one per conv of the plan (a channel
        ticket's physically smaller network); default: the plan's, times ``width``."""
        plan = CONFIGS[name]
        if channels is not None:
            convs = [i for i, item in enumerate(plan) if item != "M"]
            if len(channels) != len(convs):
                raise ValueError(f"{name} has {len(convs)} convolutions, got {len(channels)} channel counts")
            plan = list(plan)
            for i, count in zip(convs, channels):
                plan[i] = int(count)
            width = 1.0
        return VGG(plan, spec, layers, width=width)

    build.__name__ = name
    register_model(name)(build)


for _name in CONFIGS:
    _register(_name)
