"""What a model is built for: the input the data gives it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class InputSpec:
    """What the data tells the model: channels, square image size, classes."""

    in_channels: int = 3
    image_size: int = 32
    num_classes: int = 10
