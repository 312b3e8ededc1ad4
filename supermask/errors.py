"""Exceptions the library raises for problems a user can fix.

Every exception here is a ``ValueError`` subclass whose message is one line meant
for a human; the CLI turns them into a single line on stderr and exit status 2.
"""


class SupermaskError(ValueError):
    """Bad input or state that the user can correct (unknown name, bad value, missing data)."""


class UnknownNameError(SupermaskError, KeyError):
    """A name that is not in a registry."""

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0] if self.args else ""


class DataError(SupermaskError):
    """Data that is missing or not in the expected format."""


class RunError(SupermaskError):
    """A run directory that cannot be used (wrong config, unreadable files, not writable)."""


class TrainingDiverged(RunError):
    """The loss became NaN or infinite: the run is marked failed, its last good checkpoint kept.

    ``status`` holds what the run's ``status.json`` records of the failure (reason, step, checkpoint)."""

    def __init__(self, message: str, **status):
        super().__init__(message)
        self.status = status


class RunLocked(RunError):
    """Another live process holds the run directory's lock."""
