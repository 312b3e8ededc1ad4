"""Configs resolved once, then frozen.

A config is a dataclass of what the user asked: fields left None take their defaults when it
is *resolved*. :func:`resolve` returns a resolved copy (every default written, every check
made, every warning emitted, once) and freezes it: setting a field of a resolved config is an
error, and ``dataclasses.replace`` of one gives an unresolved config again (its fields may now
contradict each other), which the engines resolve before running it. Resolving a resolved
config returns it unchanged, so a config handed from the command line to an engine is resolved
exactly once.

A config class takes part by subclassing :class:`Resolvable` and writing ``_resolve_fields``,
which checks and fills the fields of the private copy it is called on.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import TypeVar

from .errors import SupermaskError

C = TypeVar("C", bound="Resolvable")
_RESOLVED = "_resolved"


class FrozenConfigError(SupermaskError, AttributeError):
    """A field of a resolved config was set."""


class Resolvable:
    """A config that :func:`resolve` fills in and freezes."""

    def __setattr__(self, name, value):
        if self.__dict__.get(_RESOLVED, False):
            raise FrozenConfigError(f"{type(self).__name__} is resolved and frozen: use dataclasses.replace(config, "
                                    f"{name}=...) and resolve the result")
        object.__setattr__(self, name, value)

    def _resolve_fields(self) -> None:
        """Check the fields and write every default into them (on a private copy: see resolve)."""

    def validate(self):
        """Deprecated (0.2): ``supermask.resolve(config)``, which returns the resolved copy."""
        import warnings

        warnings.warn("config.validate() is deprecated: use supermask.resolve(config), which returns the resolved "
                      "config (resolution no longer fills the config in place)", DeprecationWarning, stacklevel=2)
        return resolve(self)


def is_resolved(config) -> bool:
    return bool(getattr(config, "__dict__", {}).get(_RESOLVED, False))


def resolve(config: C) -> C:
    """``config`` resolved and frozen (itself if it already is)."""
    if is_resolved(config):
        return config
    if not isinstance(config, Resolvable):
        raise TypeError(f"{type(config).__name__} is not a supermask config")
    own = copy.deepcopy(config)
    own._resolve_fields()
    _freeze(own)
    return own


def _freeze(config) -> None:
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if isinstance(value, Resolvable) and not is_resolved(value):
            raise TypeError(f"{type(config).__name__}.{f.name} was not resolved with it")
    object.__setattr__(config, _RESOLVED, True)


def with_identity(config: C, **fields) -> C:
    """A resolved config with fields that identify its inputs set (the data's fingerprint, once the
    data is read): nothing that resolution decides depends on them, so the copy stays resolved."""
    if not is_resolved(config):
        raise TypeError("with_identity takes a resolved config")
    out = copy.copy(config)
    for name, value in fields.items():
        object.__setattr__(out, name, value)
    return out
