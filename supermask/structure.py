"""The structure of a mask, as one value parsed once: unstructured, N:M, whole channels or whole
attention heads.

``Structure.parse("nm:2:4")`` is the only reading of a ``--structure`` string; the rules a
structure imposes on a config live here and hold for every engine (strong tickets, IMP and
pruning at initialisation):

- N:M keeps N of every group of M weights: the density is N/M, and a density that contradicts
  it is refused (:meth:`Structure.density`); a weight whose inputs do not split into groups of M
  keeps the unstructured top N/M; ``nm:N:M:asp`` follows NVIDIA ASP's layer rule instead: a weight
  ASP would skip (outputs not a multiple of 8, inputs not of 16) stays dense (:meth:`NM.skips`);
- N:M selects inside groups of M weights: ``--scope global`` does not apply to it in any engine;
- channels are chosen by channel scores: a strong-ticket search learns them, comparable across
  layers, so it may choose them under one global threshold; the weak-ticket engines score a
  channel by the L1 norm of its weights (other fan-ins, other scales), so they choose layer by
  layer and refuse ``--scope global``;
- heads are chosen as channels are: by learned head scores in a search (global allowed), by the L1
  norm of each head's weights in the weak-ticket engines (layer by layer); every layer that is no
  attention projection is kept whole;
- a structured selection's scope is layerwise unless given (:meth:`Structure.scope`).

Torch-free: configs resolve with it before anything is built. How a structure selects (the N:M
groups, the channel chains, the heads) is in :mod:`supermask.nn.nm`, :mod:`supermask.nn.channels`
and :mod:`supermask.nn.heads`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from .errors import SupermaskError

UNSTRUCTURED = "unstructured"
CHANNEL = "channel"
HEAD = "head"
NM_KIND = "nm"
_NM = re.compile(r"^nm:(\d+):(\d+)(:asp)?$")
#: NVIDIA ASP's ``init_model_for_pruning`` leaves dense every weight whose outputs are not a
#: multiple of 8 or whose inputs (a convolution's input channels) are not a multiple of 16.
ASP_OUTPUTS, ASP_INPUTS = 8, 16


@dataclass(frozen=True)
class NM:
    n: int
    m: int
    # ``nm:N:M:asp``: ASP's layer rule (a weight ASP would skip stays dense) instead of masking every
    # weight the structure can group (and the unstructured N/M where it cannot)
    asp: bool = False

    @property
    def density(self) -> float:
        return self.n / self.m

    def skips(self, shape) -> bool:
        """Whether this structure leaves a weight of ``shape`` (``(out, in, ...)``) dense: with ASP's
        rule, outputs not a multiple of 8 or inputs not a multiple of 16."""
        return self.asp and (shape[0] % ASP_OUTPUTS != 0 or shape[1] % ASP_INPUTS != 0)

    def __str__(self) -> str:
        return f"nm:{self.n}:{self.m}" + (":asp" if self.asp else "")


@dataclass(frozen=True)
class Structure:
    kind: str = UNSTRUCTURED  # "unstructured", "nm", "channel" or "head"
    nm: Optional[NM] = None  # N and M of an N:M structure

    @classmethod
    def parse(cls, text: Optional[str]) -> "Structure":
        if text is None or text == UNSTRUCTURED:
            return cls()
        if text in (CHANNEL, HEAD):
            return cls(text)
        match = _NM.match(str(text))
        if match is None:
            raise SupermaskError(f"structure must be unstructured, nm:N:M (e.g. nm:2:4; nm:N:M:asp for ASP's layer "
                                 f"rule), channel or head, got {text!r}")
        n, m = int(match.group(1)), int(match.group(2))
        if not 0 < n < m <= 64:
            raise SupermaskError(f"structure nm:{n}:{m}: need 0 < N < M <= 64")
        return cls(NM_KIND, NM(n, m, asp=match.group(3) is not None))

    def __str__(self) -> str:
        return str(self.nm) if self.nm is not None else self.kind

    @property
    def structured(self) -> bool:
        return self.kind != UNSTRUCTURED

    @property
    def channel(self) -> bool:
        return self.kind == CHANNEL

    @property
    def head(self) -> bool:
        return self.kind == HEAD

    def density(self, density: Optional[float], default: Optional[float], option: str = "--density") -> Optional[float]:
        """The density a config with this structure runs at: N/M for N:M (``density``, if given, must
        be it), else ``density``, or ``default`` when it is None."""
        if self.nm is None:
            return default if density is None else density
        if density is not None and density != self.nm.density:
            raise SupermaskError(f"--structure {self.nm} keeps {self.nm.n} of every {self.nm.m} weights (density "
                                 f"{self.nm.density:g}): {option} {density:g} contradicts it; leave {option} out")
        return self.nm.density

    def scope(self, scope: Optional[str], default: Optional[str] = None, comparable_scores: bool = False) -> Optional[str]:
        """The scope a config with this structure runs at: unstructured, ``scope`` or ``default``;
        structured, ``layerwise`` unless given. ``global`` is refused for N:M always, and for
        channels and heads unless the engine's scores are comparable across layers
        (``comparable_scores``: learned scores)."""
        if not self.structured:
            return default if scope is None else scope
        if scope == "global" and (self.nm is not None or not comparable_scores):
            if self.nm is not None:
                raise SupermaskError(f"--structure {self.nm} is per group of {self.nm.m} weights: --scope global "
                                     f"does not apply")
            what = "channel scores of other fan-ins" if self.channel else "head norms of layers of other scales"
            raise SupermaskError(f"--structure {self} selects layer by layer ({what}): "
                                 f"--scope global does not apply; use --scope layerwise (or leave --scope out)")
        return scope or "layerwise"

    def label(self) -> str:
        """What a run's label adds for this structure: nothing when unstructured."""
        return "" if not self.structured else f" {self}"


def parse_structure(text: Optional[str]) -> Optional[NM]:
    """The N:M of a structure string (None for unstructured and channel)."""
    return Structure.parse(text).nm


def check_structure(text: Optional[str]) -> str:
    """The canonical name of a structure string: ``unstructured``, ``nm:N:M`` (``nm:N:M:asp``), ``channel``
    or ``head``."""
    return str(Structure.parse(text))
