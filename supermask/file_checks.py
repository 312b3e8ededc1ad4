"""Checks on what is read from a file someone else wrote (an export, a compact ticket): its JSON
metadata must be an object whose fields have the types and ranges a model description has, before
anything is built from it. Tensors are checked where they are used (:func:`supermask.sparse.checked_csr`,
the ``meta``-device loading of :mod:`supermask.exports`); this module knows no tensors.
"""

from __future__ import annotations

import json
import math
from typing import Any

from .errors import RunError

#: The largest input side and class count a description may claim (a 94 TB network is refused by
#: the memory check before allocation; these catch nonsense early with a clearer message).
MAX_SIDE = 1 << 16
MAX_CLASSES = 1 << 20


def json_object(text: Any, path, what: str) -> dict:
    """``text`` (a JSON string from ``path``'s metadata) as a dict; anything else one ``RunError``."""
    if not isinstance(text, str):
        raise RunError(f"{path}: its {what} is not text")
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise RunError(f"{path}: its {what} is not valid JSON ({exc.__class__.__name__})") from None
    if not isinstance(value, dict):
        raise RunError(f"{path}: its {what} is a JSON {type(value).__name__}, not an object (damaged?)")
    return value


def _number(value, lo: float, hi: float, integer: bool = False) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    if integer and not float(value).is_integer():
        return False
    return lo <= value <= hi


def check_model_description(desc: dict, path) -> None:
    """The fields a model is built from (``arch``, ``input_shape``, ``num_classes``, ``width``,
    ``dropout``, ``model_kwargs``) have their types and ranges; else one ``RunError`` naming the field."""
    def bad(field: str, want: str):
        raise RunError(f"{path}: its {field} is {desc.get(field)!r}, not {want} (damaged?)")

    if not isinstance(desc.get("arch"), str) or not desc["arch"]:
        bad("arch", "an architecture name")
    if desc.get("task", "image-classification") == "language-model":
        _check_text_input(desc, bad)
    else:
        if desc.get("task", "image-classification") != "image-classification":
            bad("task", "image-classification or language-model")
        shape = desc.get("input_shape")
        if not (isinstance(shape, list) and len(shape) == 3 and all(_number(x, 1, MAX_SIDE, True) for x in shape)):
            bad("input_shape", f"[channels, height, width] of integers in 1..{MAX_SIDE}")
        for field, value in (("in_channels", shape[0]), ("image_size", shape[1])):  # what the model is built from
            if field in desc and desc[field] != value:
                bad(field, f"{value} (its input_shape's)")
    if desc.get("depth") is not None and not _number(desc.get("depth"), 1, 1000, True):
        bad("depth", "a number of blocks in 1..1000")
    if desc.get("bias") is not None and not isinstance(desc.get("bias"), bool):
        bad("bias", "true or false")
    if not _number(desc.get("num_classes"), 1, MAX_CLASSES, True):
        bad("num_classes", f"an integer in 1..{MAX_CLASSES}")
    if not _number(desc.get("width", 1.0), 1e-6, 1e12):
        bad("width", "a positive number")
    if not _number(desc.get("dropout", 0.0), 0.0, 1.0) or desc.get("dropout", 0.0) == 1.0:
        bad("dropout", "a rate in [0, 1)")
    if not isinstance(desc.get("model_kwargs", {}), dict):
        bad("model_kwargs", "an object")


def _check_text_input(desc: dict, bad) -> None:
    """A language model's input: windows of ``context`` characters (no image shape)."""
    if not _number(desc.get("context"), 1, MAX_SIDE, True):
        bad("context", f"a window length in 1..{MAX_SIDE}")
    if desc.get("input_shape", [0, 0, 0]) != [0, 0, 0]:
        bad("input_shape", "[0, 0, 0] (a language model takes no images)")


def check_ticket_recipe(recipe: dict, path) -> None:
    """A compact ticket's recipe: a model description plus what regenerates its weights."""
    check_model_description({**recipe, "input_shape": [recipe.get("in_channels"), recipe.get("image_size"),
                                                       recipe.get("image_size")]}, path)

    def bad(field: str, want: str):
        raise RunError(f"{path}: its {field} is {recipe.get(field)!r}, not {want} (damaged?)")

    if not _number(recipe.get("seed"), 0, 2**64 - 1, True):
        bad("seed", "a non-negative integer")
    if not _number(recipe.get("density"), 1e-12, 1.0):
        bad("density", "a number in (0, 1]")
    for field in ("init", "scope"):
        if not isinstance(recipe.get(field), str):
            bad(field, "a name")
    shapes = recipe.get("shapes")
    if not (isinstance(shapes, dict) and shapes and all(
            isinstance(s, list) and s and all(_number(x, 1, 2**40, True) for x in s) for s in shapes.values())):
        bad("shapes", "an object of weight shapes")
    if not isinstance(recipe.get("mask_codings", {}), dict):
        bad("mask_codings", "an object")


def check_data_description(desc: dict, path) -> None:
    """The fields an export is re-evaluated with (``dataset``, ``eval_batch_size``, ``classes``,
    ``converted_to``, ``data_fingerprint``) have their types; else one ``RunError`` naming the field."""
    def bad(field: str, want: str):
        raise RunError(f"{path}: its {field} is {desc.get(field)!r}, not {want} (damaged?)")

    if not isinstance(desc.get("dataset"), str) or not desc["dataset"]:
        bad("dataset", "a data set name")
    if not _number(desc.get("eval_batch_size", 256), 1, 1 << 20, True):
        bad("eval_batch_size", "a positive integer")
    for field in ("classes", "data_fingerprint"):
        if not isinstance(desc.get(field), (str, type(None))):
            bad(field, "text")
    subset = desc.get("train_subset")
    if subset is not None and not (_number(subset, 1e-12, 1 - 1e-12) or (_number(subset, 1, 1e12, True))):
        bad("train_subset", "a fraction in (0, 1) or a count")
    if desc.get("task") == "language-model":
        _check_text_input(desc, bad)
    for field in ("input_shape", "converted_to") if desc.get("task") != "language-model" else ():
        shape = desc.get(field, [1, 224, 224] if field == "input_shape" else None)
        if (shape is not None or field == "input_shape") and not (isinstance(shape, list) and len(shape) == 3 and all(
                _number(x, 1, MAX_SIDE, True) for x in shape)):
            bad(field, "[channels, height, width]")
