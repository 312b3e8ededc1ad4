"""Option files: a command's options kept in a TOML file.

``supermask search --config run.toml --lr 0.05`` takes every option the file sets (keys are the
option names, ``batch-size`` or ``batch_size``) and lets the command line win. Options that take a
list on the command line (``--seed 0,1,2``) take a TOML list too: that is a sweep.
``--save-config FILE`` writes the options a command resolved to, so that ``--config FILE`` gives
the same runs (the same config hashes). Read with the standard library's ``tomllib``.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any, Iterable, Optional

import click

from .errors import SupermaskError
from .io import atomic_write_bytes

#: Options about this invocation, not about the runs: never read from or written to a file.
INVOCATION_OPTIONS = ("config", "save_config", "dry_run", "quiet", "verbose", "help")


def _options(command: click.Command) -> dict[str, click.Option]:
    """The file keys of ``command``'s options: each option's long flag without its dashes."""
    return {_key(p): p for p in command.params if isinstance(p, click.Option) and p.name not in INVOCATION_OPTIONS}


def _key(option: click.Option) -> str:
    return next(o for o in option.opts if o.startswith("--"))[2:]


#: What a run's config.json holds that is no option: the identity it was resolved to, and the
#: method's revision (a rerun computes the current one; its hash says which).
RUN_RECORD_ONLY = ("data_fingerprint", "init_from_checksum", "method_revision")


def _run_config_options(path: str, command: click.Command) -> Optional[dict[str, Any]]:
    """The options a run's ``config.json`` sets (its fields and training fields; nulls are left to
    the defaults), or None if ``path`` is no JSON object with a ``train`` object."""
    import json

    try:
        data = json.loads(Path(path).read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("train"), dict):
        return None
    fields = {**{k: v for k, v in data.items() if k != "train"}, **data["train"]}
    options = {option.name: option for option in _options(command).values()}
    values = {}
    for name, value in fields.items():
        if value is None or name in RUN_RECORD_ONLY:
            continue
        option = options.get(name)
        if option is None:
            raise SupermaskError(f"--config {path}: a run's config with {name!r}, which is no option of "
                                 f"`supermask {command.name}` (a config.json of another command's run?)")
        if isinstance(value, list) and not option.multiple:
            value = ",".join(str(v) for v in value) if value else ""
            values[option.name] = value
            continue
        values[option.name] = _command_line_form(value, option, f"--config {path}: {name}")
    return values


def read_option_file(path: str, command: click.Command) -> dict[str, Any]:
    """The options ``path`` sets for ``command``, as click's ``default_map`` takes them (each value
    in its command-line form, so that click converts and checks it as if it had been typed). A
    run's own ``config.json`` is read too ("rerun this run"): its fields are the options."""
    from_run = _run_config_options(path, command)
    if from_run is not None:
        return from_run
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise SupermaskError(f"--config {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise SupermaskError(f"--config {path}: not UTF-8 text (byte {exc.start}), as TOML must be") from None
    except tomllib.TOMLDecodeError as exc:
        raise SupermaskError(f"--config {path}: not a TOML file: {exc}") from None
    options = _options(command)
    values = {}
    for key, value in data.items():
        option = options.get(key.replace("_", "-"))
        if option is None:
            raise SupermaskError(f"--config {path}: {key!r} is not an option of `supermask {command.name}` "
                                 f"(see `supermask {command.name} -h`)")
        values[option.name] = _command_line_form(value, option, f"--config {path}: {key}")
    return values


def _command_line_form(value: Any, option: click.Option, where: str) -> Any:
    if option.is_flag and not option.multiple:
        if not isinstance(value, bool):
            raise SupermaskError(f"{where} must be true or false, got {value!r}")
        return value
    items = value if isinstance(value, list) else [value]
    for item in items:
        if isinstance(item, (dict, list, bool)) or not isinstance(item, (str, int, float)):
            raise SupermaskError(f"{where}: {item!r} is not a number or a string")
        if isinstance(item, float) and not math.isfinite(item):
            raise SupermaskError(f"{where} must be finite, got {item!r}")
    if option.multiple:
        return [str(item) for item in items]
    if isinstance(value, list) and option.type is not click.STRING:
        raise SupermaskError(f"{where} takes one value, not a list")
    return ",".join(str(item) for item in items)


def resolved_options(command: click.Command, params: dict[str, Any], configs: list) -> tuple[dict, list[str]]:
    """``params`` with each option left None (a default the library resolves) given the value the
    resolved ``configs`` hold for it (a config field, or a training field, of the option's name),
    where every config holds the same one; and the options whose resolved values differ across
    the configs (a sweep over methods with their own defaults), left None."""
    from .runs import config_dict

    records = [config_dict(c) for c in configs]
    filled, varying = dict(params), []
    for key, option in _options(command).items():
        if params.get(option.name) is not None or option.multiple:
            continue
        values = []
        for record in records:
            if option.name in record:
                values.append(record[option.name])
            elif option.name in record.get("train", {}):
                values.append(record["train"][option.name])
        if not values or len(values) != len(records) or all(v is None for v in values):
            continue
        if any(v != values[0] for v in values):
            varying.append(key)
            continue
        value = values[0]
        if option.is_flag and not isinstance(value, bool):
            continue  # a flag whose field took another form (scaled_fan "reference-code": its own option says it)
        filled[option.name] = ",".join(str(v) for v in value) if isinstance(value, list) else value
    return filled, varying


def write_option_file(path: str, command: click.Command, params: dict[str, Any], header: Iterable[str] = (),
                      force: bool = False) -> None:
    """Write ``params`` (click's parsed values of ``command``) as a TOML option file; None (not
    given: a default the library resolves) is left out. An existing file is replaced only if it is
    one (its header says ``--save-config`` wrote it) or with ``force``."""
    from .writing import check_replaceable

    target = Path(path)
    check_replaceable(target, force, lambda p: _is_option_file(p, command), "--save-config",
                      remedy="remove it first, or choose another path")
    lines = [f"# {line}" for line in header]
    for key, option in _options(command).items():
        value = params.get(option.name)
        if value is None or (option.multiple and not value):
            continue
        lines.append(f"{key} = {_toml_value(value, option)}")
    atomic_write_bytes(target, ("\n".join(lines) + "\n").encode())


def _is_option_file(path: Path, command: click.Command) -> bool:
    """Whether ``path`` begins as an option file that ``--save-config`` of ``command`` wrote."""
    try:
        with open(path, "rb") as f:
            first = f.readline(200)
    except OSError:
        return False
    return first.startswith(f"# supermask {command.name} options: ".encode())


def _toml_value(value: Any, option: click.Option) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if option.multiple:
        return "[" + ", ".join(_toml_string(str(v)) for v in value) + "]"
    if option.type is click.STRING and "," in str(value):  # a list: write it as one
        return "[" + ", ".join(_scalar(x.strip()) for x in str(value).split(",") if x.strip()) + "]"
    return _scalar(str(value))


def _scalar(text: str) -> str:
    """A command-line word as TOML: a number stays a number (it reads back as the same word)."""
    for convert in (int, float):
        try:
            number = convert(text)
        except ValueError:
            continue
        if str(number) == text and math.isfinite(number):
            return text
    return _toml_string(text)


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _toml_string(text: str) -> str:
    """``text`` as a TOML basic string: every character itself (a path with an emoji reads back as
    written) except the quote, the backslash and the control characters, which are escaped. A
    word holding bytes that are not UTF-8 (an undecodable file name) cannot be written: refused."""
    out = []
    for ch in text:
        code = ord(ch)
        if 0xD800 <= code <= 0xDFFF:
            raise SupermaskError(f"--save-config: {text!r} is not UTF-8 text (a file name's undecodable bytes?): "
                                 f"TOML cannot hold it")
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'

