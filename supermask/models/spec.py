"""What a model is built for: the input the data gives it."""

from __future__ import annotations

from dataclasses import dataclass


IMAGE_CLASSIFICATION, LANGUAGE_MODEL = "image-classification", "language-model"


@dataclass(frozen=True)
class InputSpec:
    """What the data tells the model: channels, square image size, classes; for a language model
    (``task`` "language-model") ``num_classes`` is the vocabulary's size and ``context`` the
    characters of a window (the model predicts the next character at each of them)."""

    in_channels: int = 3
    image_size: int = 32
    num_classes: int = 10
    task: str = IMAGE_CLASSIFICATION
    context: int = 0

    @property
    def is_language_model(self) -> bool:
        return self.task == LANGUAGE_MODEL

    def example(self):
        """One input of this shape, all zeros (the probe's): an image, or a window of characters."""
        import torch

        if self.is_language_model:
            return torch.zeros(1, self.context, dtype=torch.int64)
        return torch.zeros(1, self.in_channels, self.image_size, self.image_size)

    def output_shape(self) -> tuple[int, ...]:
        """What a model gives for :meth:`example`: a score per class (per character and vocabulary entry)."""
        return (1, self.context, self.num_classes) if self.is_language_model else (1, self.num_classes)

    def describe(self) -> str:
        if self.is_language_model:
            return f"windows of {self.context} characters over a {self.num_classes}-character vocabulary"
        return f"{self.in_channels}x{self.image_size}x{self.image_size} inputs with {self.num_classes} classes"


def spec_record(spec: InputSpec) -> dict:
    """What a ticket records of the input its network was built for (task and context for text)."""
    record = {"in_channels": spec.in_channels, "image_size": spec.image_size, "num_classes": spec.num_classes}
    if spec.is_language_model:
        record.update(task=spec.task, context=spec.context)
    return record


def spec_from_record(record: dict) -> InputSpec:
    """The :class:`InputSpec` a ticket's :func:`spec_record` (or provenance ``input_shape``) names."""
    if "input_shape" in record and "in_channels" not in record:
        channels, size, _ = record["input_shape"]
    else:
        channels, size = record["in_channels"], record["image_size"]
    task = record.get("task", IMAGE_CLASSIFICATION)
    return InputSpec(int(channels), int(size), int(record["num_classes"]), task=task,
                     context=int(record.get("context", 0)) if task == LANGUAGE_MODEL else 0)


def model_kwargs_record(record: dict) -> dict:
    """The builder's options a ticket records: ``width`` (when not 1), ``depth`` and ``bias`` (when given)."""
    width = record.get("width", 1.0)
    return {**({"width": width} if width != 1.0 else {}),
            **({"depth": record["depth"]} if record.get("depth") is not None else {}),
            **({"bias": record["bias"]} if record.get("bias") is not None else {})}
