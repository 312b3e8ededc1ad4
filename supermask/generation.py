"""Text from a language-model ticket: characters sampled one at a time from an export's network.

``sample_text(model, vocabulary, prompt, chars)`` continues ``prompt`` by ``chars`` characters:
at each step the network sees the last ``context`` characters and the next one is drawn from
``softmax(logits / temperature)`` at the last position, from a generator seeded by ``seed``
(the same export, prompt and seed give the same text on any machine), or taken greedily (the
most likely character) at temperature 0. :func:`generate_from_export` reads an export (a
ticket, state-dict, torch-prune or sparse file) and its data set's vocabulary, checked against
the data's fingerprint, and is what ``supermask generate`` runs.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from .data.text import decode, encode
from .errors import SupermaskError

#: The longest continuation one call writes (a typo, not an illustration, beyond it).
MAX_CHARS = 100_000


def check_generation(chars: int, temperature: float) -> None:
    if not isinstance(chars, int) or isinstance(chars, bool) or not 1 <= chars <= MAX_CHARS:
        raise SupermaskError(f"--chars must be a number of characters in 1..{MAX_CHARS:,}, got {chars!r}")
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature >= 0):
        raise SupermaskError(f"--temperature must be >= 0 (0: the most likely character), got {temperature!r}")


@torch.no_grad()
def sample_text(model: nn.Module, vocabulary: str, prompt: str, chars: int, context: int,
                temperature: float = 1.0, seed: int = 0) -> str:
    """``prompt`` continued by ``chars`` characters of ``model`` (windows of at most ``context``)."""
    check_generation(chars, temperature)
    if not prompt:
        raise SupermaskError("--prompt must hold at least one character")
    device = next(model.parameters()).device
    tokens = encode(vocabulary, prompt).to(device)
    generator = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    try:
        for _ in range(chars):
            logits = model(tokens[-context:].unsqueeze(0))[0, -1].double().cpu()
            if temperature == 0:
                following = int(logits.argmax())
            else:
                following = int(torch.multinomial(torch.softmax(logits / temperature, dim=0), 1, generator=generator))
            tokens = torch.cat([tokens, torch.tensor([following], device=device)])
    finally:
        model.train(was_training)
    return decode(vocabulary, tokens.tolist())


def generate_from_export(path: Path, prompt: str, chars: int, temperature: float = 1.0, seed: int = 0,
                         data_root: Optional[Path] = None, device: str = "cpu") -> dict:
    """The text an export's network writes after ``prompt``, with what it is: ``{"text",
    "dataset", "context", "test_loss"}`` (the loss the export's provenance reports, if any)."""
    from .data import fingerprint, load_dataset
    from .exports import load_export
    from .file_checks import check_data_description
    from .training.device import local_device

    check_generation(chars, temperature)
    device = str(local_device(device))
    model, provenance = load_export(Path(path))
    check_data_description(provenance, path)
    if not provenance.get("context"):
        raise SupermaskError(f"{path}: not a language model's export (it models {provenance.get('dataset')}); "
                             f"generate writes text from a text data set's ticket")
    data = load_dataset(provenance["dataset"], data_root, False, context=provenance["context"])
    expected = provenance.get("data_fingerprint")
    if expected is not None and fingerprint(data) != expected:
        raise SupermaskError(f"{provenance['dataset']}: not the text the ticket was found on (fingerprint "
                             f"{fingerprint(data)}, the ticket's {expected}): its vocabulary may differ")
    text = sample_text(model.to(device), data.info.vocabulary, prompt, chars, int(provenance["context"]),
                       temperature, seed)
    return {"text": text, "dataset": provenance["dataset"], "context": provenance["context"],
            "test_loss": provenance.get("test_loss")}
