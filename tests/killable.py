"""Run the supermask CLI and SIGKILL it at a chosen point: ``python killable.py POINT:N -- ARGS``.

Points (each counts calls in this process and kills itself at the N-th):

- ``step``: as a training step starts (before its forward pass): mid-epoch;
- ``metrics``: right after a metrics record is appended (between an epoch's evaluation and its checkpoint);
- ``replace``: inside an atomic write, after the temporary file is complete and before it is renamed
  into place (a checkpoint, result, ticket or config half-way to disk).
"""

import os
import signal
import sys


def kill():
    os.kill(os.getpid(), signal.SIGKILL)


def install(point: str, n: int) -> None:
    import supermask.io
    import supermask.runs
    import supermask.training.loop as loop

    calls = [0]

    def counting(original, before=True):
        def wrapper(*args, **kwargs):
            calls[0] += 1
            if before and calls[0] == n:
                kill()
            result = original(*args, **kwargs)
            if not before and calls[0] == n:
                kill()
            return result
        return wrapper

    if point == "none":
        return
    if point == "step":  # set_lr runs at the start of every step (and once before a fresh run's first)
        loop.set_lr = counting(loop.set_lr)
    elif point == "metrics":
        supermask.runs.RunDir.append_metrics = counting(supermask.runs.RunDir.append_metrics, before=False)
    elif point == "replace":
        supermask.io.os = _OsWithKillingReplace(n)
    else:
        raise SystemExit(f"unknown kill point {point}")


class _OsWithKillingReplace:
    def __init__(self, n):
        self.n, self.calls = n, 0

    def replace(self, src, dst):
        self.calls += 1
        if self.calls == self.n:
            kill()
        return os.replace(src, dst)

    def __getattr__(self, name):
        return getattr(os, name)


if __name__ == "__main__":
    spec, sep, *args = sys.argv[1:]
    assert sep == "--"
    point, n = spec.split(":")
    install(point, int(n))
    from supermask.cli import main

    sys.exit(main(args))
