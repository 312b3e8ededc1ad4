"""Class subsets of a data set (``--classes 0-4``): which labels a run keeps, as text.

A subset is a set of class indices of the full data set, written as comma-separated indices and
ranges (``0-4``, ``5-9``, ``0,2,4-6``). The kept classes are relabelled ``0..n-1`` in increasing
order of their index (``--classes 5-9``: 5 becomes 0, 9 becomes 4), so a subset is a data set of
its own: ``n`` classes, its own content fingerprint, its own config hash. The canonical text (the
sorted indices with runs of consecutive ones as ranges) is what a config records.

Torch-free: configs resolve it before any data is read.
"""

from __future__ import annotations

from typing import Optional

from .errors import SupermaskError


def parse_classes(text) -> tuple[int, ...]:
    """The sorted, distinct class indices ``text`` names (``"0-4"``, ``"0,2,4-6"``, or a sequence
    of integers); at least two (one class is no classification task)."""
    if isinstance(text, (list, tuple)):
        parts = [str(x) for x in text]
    elif isinstance(text, str):
        parts = [p.strip() for p in text.split(",")]
    else:
        raise SupermaskError(f"--classes must be indices and ranges such as 0-4 or 0,2,5-9, got {text!r}")
    found: set[int] = set()
    for part in parts:
        low, sep, high = part.partition("-")
        try:
            first, last = (int(low), int(high)) if sep else (int(part), int(part))
        except ValueError:
            raise SupermaskError(f"--classes {text}: {part!r} is not a class index or a range a-b") from None
        if first < 0 or last < first:
            raise SupermaskError(f"--classes {text}: {part!r} is not a range of class indices (a-b with 0 <= a <= b)")
        if last - first > 1_000_000:
            raise SupermaskError(f"--classes {text}: {part!r} names more classes than any data set has")
        found.update(range(first, last + 1))
    if len(found) < 2:
        raise SupermaskError(f"--classes {text}: a classification task needs at least two classes")
    return tuple(sorted(found))


def classes_text(classes) -> str:
    """The canonical text of a subset: ``(0, 1, 2, 3, 4)`` is ``"0-4"``, ``(0, 2, 3)`` is ``"0,2-3"``."""
    indices = parse_classes(classes) if not isinstance(classes, tuple) else classes
    runs, start, prev = [], indices[0], indices[0]
    for index in (*indices[1:], None):
        if index is not None and index == prev + 1:
            prev = index
            continue
        runs.append(str(start) if start == prev else f"{start}-{prev}")
        if index is not None:
            start = prev = index
    return ",".join(runs)


def canonical_classes(text) -> Optional[str]:
    """``text`` (None: every class) as a config records it."""
    return None if text is None else classes_text(parse_classes(text))
